//! Dead letters and stuck jobs for operators: which jobs a bulk replay,
//! purge or requeue takes is decided here from a read, and the command
//! names them, so it acts on exactly those (each still in the state it
//! expects when it applies).

use crate::api::auth::Caller;
use crate::api::listing::MAX_PAGE;
use crate::api::App;
use crate::command::{Audited, Outcome};
use crate::error::Error;
use crate::job::{Job, JobId, JobState};
use crate::machine::find::JobQuery;

/// Pages one bulk action reads at most to find its jobs.
const MAX_PAGES: usize = 50;

fn unexpected(o: Outcome) -> Error {
    Error::Driver(format!("unexpected outcome {o:?}"))
}

impl App {
    /// Up to `limit` jobs matching `query`, reading pages until found or
    /// done.
    pub async fn find_jobs(
        &self,
        caller: &Caller,
        query: JobQuery,
        limit: usize,
    ) -> Result<Vec<Job>, Error> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let want = (limit - out.len()).min(MAX_PAGE);
            let page = self
                .list_jobs(caller, query.clone(), after.as_deref(), want)
                .await?;
            out.extend(page.jobs);
            match page.next {
                Some(next) if out.len() < limit => after = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }

    /// A dead job, or why it is not one.
    pub async fn dead_job(&self, caller: &Caller, id: JobId) -> Result<crate::api::JobView, Error> {
        let view = self.get_job(caller, id).await?;
        if view.job.state != JobState::Dead {
            return Err(Error::NotDead {
                id,
                state: view.job.state,
            });
        }
        Ok(view)
    }

    /// Replays dead jobs; answers those replayed.
    pub async fn replay(
        &self,
        caller: &Caller,
        ids: Vec<JobId>,
        target: String,
    ) -> Result<Vec<JobId>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match self
            .audited(
                caller,
                "replay",
                target,
                Audited::Replay(crate::command::Replay { ids }),
            )
            .await?
        {
            Outcome::Replayed(ids) => Ok(ids),
            other => Err(unexpected(other)),
        }
    }

    /// Removes dead jobs; answers how many went.
    pub async fn purge_dead(
        &self,
        caller: &Caller,
        ids: Vec<JobId>,
        target: String,
    ) -> Result<u32, Error> {
        if ids.is_empty() {
            return Ok(0);
        }
        match self
            .audited(
                caller,
                "purge_dead",
                target,
                Audited::PurgeDead(crate::command::PurgeDead { ids }),
            )
            .await?
        {
            Outcome::Removed(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Takes back the leases of these jobs (at the attempt each is on).
    pub async fn requeue(
        &self,
        caller: &Caller,
        jobs: &[Job],
        reason: String,
        target: String,
    ) -> Result<Vec<JobId>, Error> {
        let leases: Vec<(JobId, u32)> = jobs
            .iter()
            .filter_map(|j| Some((j.id, j.lease.as_ref()?.attempt)))
            .collect();
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        match self
            .audited(
                caller,
                "clear_stuck",
                target,
                Audited::Requeue(crate::command::Requeue { leases, reason }),
            )
            .await?
        {
            Outcome::Requeued(ids) => Ok(ids),
            other => Err(unexpected(other)),
        }
    }
}
