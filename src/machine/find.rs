//! Finding jobs for operators (`drover jobs list`): a filter, and the
//! candidate ids each state's index gives, so a filtered page never scans
//! the whole store. Live states (ready, scheduled, leased) come from the
//! in-memory indexes, in id order; finished ones from their time indexes
//! (`F`, `D`) on disk, newest first; with no state, the job records by id.

use super::*;

/// Candidates one page examines at most; a page that finds fewer matches
/// still answers, with a cursor to go on from.
pub const SCAN_BUDGET: usize = 5_000;

/// What `drover jobs list` filters on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobQuery {
    /// Only jobs of this queue.
    pub queue: Option<String>,
    /// Only jobs in this state; it picks the index the candidates come from.
    pub state: Option<JobState>,
    /// Only jobs of this tenant.
    pub tenant: Option<String>,
    /// Only jobs of this run id.
    pub run: Option<String>,
    /// Only jobs of this type.
    pub job_type: Option<String>,
    /// The last error's class.
    pub class: Option<String>,
    /// In its state for longer than this, at `now_ms`.
    pub older_than_ms: Option<u64>,
    /// Finished at or after this time (ms since the epoch).
    pub finished_since_ms: Option<u64>,
    /// The time `older_than_ms` is measured at, in ms since the epoch.
    pub now_ms: u64,
    /// Live states and the unindexed list newest first (by id, from the
    /// cursor down); finished states are newest first anyway.
    pub newest: bool,
}

impl JobQuery {
    /// Whether `job` passes every filter that is set.
    pub fn matches(&self, job: &Job) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&self.queue, &job.queue)
            && self.state.is_none_or(|s| s == job.state)
            && is(&self.tenant, &job.tenant)
            && is(&self.run, &job.run_id)
            && is(&self.job_type, &job.job_type)
            && is(&self.class, &job.last_error_class)
            && self
                .older_than_ms
                .is_none_or(|d| self.now_ms.saturating_sub(state_since(job)) > d)
            && self
                .finished_since_ms
                .is_none_or(|t| job.state.is_finished() && job.finished_at_ms >= t)
    }
}

/// When the job entered its state: its lease for a leased job, when it
/// became ready, when it was enqueued (scheduled), when it finished.
pub fn state_since(job: &Job) -> u64 {
    match job.state {
        JobState::Ready => job.run_at_ms,
        JobState::Scheduled | JobState::Waiting => job.enqueued_at_ms,
        JobState::Leased => job
            .events
            .iter()
            .rev()
            .find(|e| matches!(e.kind, EventKind::Leased { .. }))
            .map_or(job.run_at_ms, |e| e.at_ms),
        _ => job.finished_at_ms,
    }
}

/// Where a page of finished jobs goes on: a time-index record and how many
/// of its jobs (newest first) came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishedCursor {
    /// The finish time of the time-index record, in ms since the epoch.
    pub at_ms: u64,
    /// The first job id of that record, which with `at_ms` names it.
    pub record: JobId,
    /// Jobs of the record (newest first) already handed out.
    pub skip: usize,
}

impl FinishedCursor {
    /// `AT.RECORD.SKIP`, as the API hands it out.
    pub fn parse(s: &str) -> Option<FinishedCursor> {
        let mut parts = s.split('.');
        let c = FinishedCursor {
            at_ms: parts.next()?.parse().ok()?,
            record: parts.next()?.parse().ok()?,
            skip: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(c)
    }
}

impl std::fmt::Display for FinishedCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.at_ms, self.record, self.skip)
    }
}

/// The first `n` ids from the cursor on: the smallest above it, or with
/// `newest` the largest below it (0: from the top), in that order.
fn page_of(ids: impl Iterator<Item = JobId>, cursor: JobId, n: usize, newest: bool) -> Vec<JobId> {
    if !newest {
        return smallest(ids, cursor, n);
    }
    let below = if cursor == 0 { JobId::MAX } else { cursor };
    let mut heap = std::collections::BinaryHeap::with_capacity(n + 1);
    for id in ids.filter(|id| *id < below) {
        let id = std::cmp::Reverse(id);
        if heap.len() < n {
            heap.push(id);
        } else if heap.peek().is_some_and(|top| id < *top) {
            heap.pop();
            heap.push(id);
        }
    }
    heap.into_sorted_vec().into_iter().map(|r| r.0).collect()
}

/// The smallest `n` ids above `after`, in order.
fn smallest(ids: impl Iterator<Item = JobId>, after: JobId, n: usize) -> Vec<JobId> {
    let mut heap = std::collections::BinaryHeap::with_capacity(n + 1);
    for id in ids.filter(|id| *id > after) {
        if heap.len() < n {
            heap.push(id);
        } else if heap.peek().is_some_and(|top| id < *top) {
            heap.pop();
            heap.push(id);
        }
    }
    heap.into_sorted_vec()
}

impl Machine {
    /// Ids of jobs in a live state (ready, scheduled, leased) above `after`,
    /// in id order, at most [`SCAN_BUDGET`]: the indexes narrow them by
    /// queue and tenant where they can; the caller loads and filters the
    /// rest. Reads memory only.
    pub fn live_job_ids(&self, q: &JobQuery, after: JobId) -> Vec<JobId> {
        let queues: Vec<&QueueIndex> = match &q.queue {
            Some(name) => self.queues.get(name).into_iter().collect(),
            None => self.queues.values().collect(),
        };
        let tenant_ok = |t: &str| q.tenant.as_deref().is_none_or(|w| w == t);
        match q.state {
            Some(JobState::Ready) => {
                let ready = queues.iter().flat_map(|qi| {
                    qi.ready
                        .iter()
                        .filter(|(_, t, _, _)| tenant_ok(t))
                        .map(|(_, _, id, _)| id)
                });
                let parked = self.limits.parked_ids(|queue, tenant| {
                    q.queue.as_deref().is_none_or(|w| w == queue) && tenant_ok(tenant)
                });
                page_of(ready.chain(parked), after, SCAN_BUDGET, q.newest)
            }
            Some(JobState::Scheduled) => page_of(
                self.scheduled.iter().map(|(_, id)| *id),
                after,
                SCAN_BUDGET,
                q.newest,
            ),
            Some(JobState::Leased) => page_of(
                self.leases.iter().map(|(_, id)| *id),
                after,
                SCAN_BUDGET,
                q.newest,
            ),
            _ => Vec::new(),
        }
    }
}

impl JobReader {
    /// Finished jobs (succeeded and cancelled, or dead) from their time
    /// index, newest first, from the cursor on; at most about
    /// [`SCAN_BUDGET`] ids, each with the cursor that follows it.
    pub fn finished_job_ids(
        &self,
        dead: bool,
        from: Option<FinishedCursor>,
    ) -> Result<Vec<(FinishedCursor, JobId)>, MachineError> {
        let tree = self.tree();
        let prefix = if dead { DEAD_AT } else { FINISHED_AT };
        let start = retention::time_key(prefix, 0, 0);
        let end = match from {
            Some(c) => retention::time_key(prefix, c.at_ms, c.record),
            None => retention::time_key(prefix, u64::MAX, u64::MAX),
        };
        let mut out = Vec::new();
        for item in tree.range(start..=end).rev() {
            let (k, v) = item?;
            let (at_ms, record) = retention::parse_time_key(&k)?;
            let jobs: Vec<(JobId, u64)> = decode(&k, &v)?;
            // Records never change once written (a purge removes them
            // whole), so a position within one is a stable cursor.
            let skip = match from {
                Some(c) if c.at_ms == at_ms && c.record == record => c.skip,
                _ => 0,
            };
            for (i, (id, _)) in jobs.iter().enumerate().rev().skip(skip) {
                let next = FinishedCursor {
                    at_ms,
                    record,
                    skip: jobs.len() - i,
                };
                out.push((next, *id));
            }
            if out.len() >= SCAN_BUDGET {
                break;
            }
        }
        Ok(out)
    }

    /// Job ids from the job records from the cursor on, at most
    /// [`SCAN_BUDGET`]: above it in id order, or with `newest` below it (0:
    /// from the newest) newest first.
    pub fn job_ids_from(&self, cursor: JobId, newest: bool) -> Result<Vec<JobId>, MachineError> {
        let tree = self.tree();
        let mut out = Vec::new();
        let ids: Box<dyn Iterator<Item = sled::Result<sled::IVec>>> = if newest {
            let below = if cursor == 0 { u64::MAX } else { cursor };
            Box::new(tree.range(key(JOB, 0)..key(JOB, below)).keys().rev())
        } else {
            let start = key(JOB, cursor.saturating_add(1));
            Box::new(tree.range(start..=key(JOB, u64::MAX)).keys())
        };
        for item in ids.take(SCAN_BUDGET) {
            out.push(job_key_id(&item?)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_keeps_the_first_ids_above_the_cursor_in_order() {
        assert_eq!(smallest([9, 3, 7, 1, 5].into_iter(), 1, 2), vec![3, 5]);
        assert_eq!(smallest([2, 4].into_iter(), 4, 10), Vec::<JobId>::new());
    }

    #[test]
    fn newest_pages_go_down_from_the_cursor() {
        let ids = [9, 3, 7, 1, 5];
        assert_eq!(page_of(ids.into_iter(), 0, 2, true), vec![9, 7]);
        assert_eq!(page_of(ids.into_iter(), 7, 2, true), vec![5, 3]);
        assert_eq!(page_of(ids.into_iter(), 1, 2, true), Vec::<JobId>::new());
        assert_eq!(page_of(ids.into_iter(), 0, 2, false), vec![1, 3]);
    }
}
