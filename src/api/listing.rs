//! `drover jobs list`: a filtered page of jobs, its candidates from the
//! index of the state asked for (see [`crate::machine::find`]), loaded and
//! filtered here, off the raft loop.

use crate::api::auth::Caller;
use crate::api::{owns, App};
use crate::error::Error;
use crate::job::{Job, JobState};
use crate::machine::find::{FinishedCursor, JobQuery, SCAN_BUDGET};

/// A page of jobs and where the next one starts.
#[derive(Debug)]
pub struct JobsPage {
    /// The jobs that matched, at most the limit asked for.
    pub jobs: Vec<Job>,
    /// Absent on the last page.
    pub next: Option<String>,
}

/// Most jobs on a page.
pub const MAX_PAGE: usize = 1000;

impl App {
    /// Jobs matching `query`, from the cursor `after` (the `next` of the page
    /// before): live states and no state in id order (newest first with
    /// `query.newest`), finished states newest first. A producer sees only
    /// its own jobs.
    pub async fn list_jobs(
        &self,
        caller: &Caller,
        mut query: JobQuery,
        after: Option<&str>,
        limit: usize,
    ) -> Result<JobsPage, Error> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("{limit} is not 1 to {MAX_PAGE}"),
            ));
        }
        let bad_cursor = |c: &str| {
            Error::invalid(
                "after",
                format!("{c:?} is not a cursor this API gave out (the `next` of a page of the same state)"),
            )
        };
        let id_cursor = |c: Option<&str>| match c {
            None => Ok(0),
            Some(c) => c.parse::<u64>().map_err(|_| bad_cursor(c)),
        };
        self.router.read_barrier().await?;
        query.now_ms = self.driver.log_now_ms();
        let reader = self.driver.reader();
        // (cursor after it, id, the time its index record says it finished)
        let candidates: Vec<(String, u64, Option<u64>)> = match query.state {
            Some(JobState::Ready | JobState::Scheduled | JobState::Leased) => {
                let after = id_cursor(after)?;
                let ids = self.driver.live_job_ids(query.clone(), after).await?;
                ids.into_iter()
                    .map(|id| (id.to_string(), id, None))
                    .collect()
            }
            Some(state) if state.is_finished() => {
                let from = match after {
                    None => None,
                    Some(c) => Some(FinishedCursor::parse(c).ok_or_else(|| bad_cursor(c))?),
                };
                reader
                    .finished_job_ids(state == JobState::Dead, from)?
                    .into_iter()
                    .map(|(c, id)| (c.to_string(), id, Some(c.at_ms)))
                    .collect()
            }
            // Waiting jobs have no index of their own: the records by id.
            _ => reader
                .job_ids_from(id_cursor(after)?, query.newest)?
                .into_iter()
                .map(|id| (id.to_string(), id, None))
                .collect(),
        };
        let exhausted = candidates.len() < SCAN_BUDGET;
        let mut jobs = Vec::new();
        let mut last = None;
        for (cursor, id, finished_at) in candidates {
            last = Some(cursor);
            // Gone (purged) or changed state since the index named it.
            let Some(job) = reader.job(id)? else {
                continue;
            };
            // A replayed job that finished again is in a newer record too.
            let current = finished_at.is_none_or(|at| at == job.finished_at_ms);
            if current && query.matches(&job) && owns(caller, &job) {
                let mut job = job;
                self.open_job(&mut job)?;
                jobs.push(job);
                if jobs.len() == limit {
                    return Ok(JobsPage { jobs, next: last });
                }
            }
        }
        Ok(JobsPage {
            jobs,
            next: if exhausted { None } else { last },
        })
    }
}
