//! What finished jobs cost since a time, summed by tenant, run, queue and
//! job type (`GET /api/v1/costs`, `drover costs`): read from the finished
//! jobs' index, a page at a time, up to a bound.

use crate::api::auth::Caller;
use crate::api::types::{CostSumBody, CostsBody};
use crate::api::App;
use crate::error::Error;
use crate::job::{Job, JobState};
use crate::machine::find::JobQuery;

/// Most finished jobs one costs request sums.
const COSTS_MAX_JOBS: usize = 200_000;

fn add(sum: &mut CostSumBody, job: &Job) {
    sum.jobs += 1;
    sum.cost_usd += crate::policies::micros_to_usd(job.cost_micros);
    sum.lease_ms = sum.lease_ms.saturating_add(job.lease_ms);
    // Workers report what they like: sums saturate rather than wrap.
    for (name, n) in &job.usage {
        let total = sum.usage.entry(name.clone()).or_default();
        *total = total.saturating_add(*n);
    }
}

impl App {
    /// What the jobs of `tenant` (None: every tenant the caller sees) that
    /// finished at or after `since` (log time, ms) cost. At most
    /// [`COSTS_MAX_JOBS`] jobs are summed; past them the answer says it is
    /// truncated.
    pub async fn costs(
        &self,
        caller: &Caller,
        tenant: Option<String>,
        since: u64,
    ) -> Result<CostsBody, Error> {
        let mut out = CostsBody {
            since_ms: since,
            ..CostsBody::default()
        };
        let mut seen = 0;
        for state in [JobState::Succeeded, JobState::Dead, JobState::Cancelled] {
            let filter = JobQuery {
                state: Some(state),
                tenant: tenant.clone(),
                finished_since_ms: Some(since),
                ..JobQuery::default()
            };
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .list_jobs(caller, filter.clone(), after.as_deref(), 1000)
                    .await?;
                for job in &page.jobs {
                    add(&mut out.total, job);
                    add(out.by_tenant.entry(job.tenant.clone()).or_default(), job);
                    if !job.run_id.is_empty() {
                        let run = format!("{}/{}", job.tenant, job.run_id);
                        add(out.by_run.entry(run).or_default(), job);
                    }
                    add(out.by_queue.entry(job.queue.clone()).or_default(), job);
                    add(
                        out.by_job_type.entry(job.job_type.clone()).or_default(),
                        job,
                    );
                }
                seen += page.jobs.len();
                match page.next {
                    Some(next) if seen < COSTS_MAX_JOBS => after = Some(next),
                    Some(_) => {
                        out.truncated = true;
                        break;
                    }
                    None => break,
                }
            }
        }
        Ok(out)
    }
}
