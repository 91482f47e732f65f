//! What the metrics count by queue and job type, how much work each queue
//! saw lately, and how long jobs waited and ran. Like [`super::Totals`],
//! these count since this node opened its machine; every node applies the
//! same entries with the same times, so every node counts the same.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::window::Sliding;

/// The window arrivals and lease times are summed over for
/// `drover_queue_desired_workers`.
pub const FLOW_WINDOW_MS: u64 = 5 * 60_000;

/// Observations kept for the driver at most, should it not take them.
const MAX_OBSERVATIONS: usize = 100_000;

/// Events of one job type in one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeCounts {
    /// New jobs (an idempotent duplicate is not one).
    pub enqueued: u64,
    /// Leases granted.
    pub dispatched: u64,
    /// Jobs that succeeded.
    pub completed: u64,
    /// Failures after which the job runs again.
    pub retried: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Exhausted jobs moved to their type's `on_exhausted` queue, counted in the
    /// queue they failed in.
    pub escalated: u64,
    /// Failures by error class.
    pub failed: BTreeMap<String, u64>,
}

/// What happened to a job, for [`Tally::count`].
#[derive(Debug, Clone, Copy)]
pub enum Counted<'a> {
    /// A new job was enqueued.
    Enqueued,
    /// A lease was granted.
    Dispatched,
    /// It succeeded.
    Completed,
    /// An attempt failed.
    Failed {
        /// The failure's error class.
        class: &'a str,
    },
    /// After a failure it will run again.
    Retried,
    /// It was dead-lettered.
    Dead,
    /// It was cancelled.
    Cancelled,
    /// It was moved to its type's `on_exhausted` queue.
    Escalated,
}

pub use crate::pools::Flow;

/// A time a job took, for the histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// From ready (or its retry's time) to its lease.
    Waited,
    /// From its lease to the lease's end.
    Ran,
}

/// One wait or run time, for the driver's histograms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The job's queue.
    pub queue: String,
    /// The job's type.
    pub job_type: String,
    /// Which time it is.
    pub timing: Timing,
    /// How long, in ms.
    pub ms: u64,
}

/// The machine's counts by queue and job type, each queue's window of
/// recent work, and the times the driver has yet to take.
#[derive(Debug, Default)]
pub struct Tally {
    /// Queue -> job type -> counts.
    counts: BTreeMap<String, BTreeMap<String, TypeCounts>>,
    /// Queue -> [arrived, leases ended, lease ms] in the window.
    flow: BTreeMap<String, Sliding<3>>,
    observations: Vec<Observation>,
}

impl Tally {
    /// Counts one event of a job of `job_type` in `queue`.
    pub fn count(&mut self, queue: &str, job_type: &str, what: Counted<'_>) {
        // Looked up by reference: a String is made only for a new key.
        if !self.counts.contains_key(queue) {
            self.counts.insert(queue.to_string(), BTreeMap::new());
        }
        let types = self.counts.get_mut(queue).expect("inserted above");
        if !types.contains_key(job_type) {
            types.insert(job_type.to_string(), TypeCounts::default());
        }
        let c = types.get_mut(job_type).expect("inserted above");
        match what {
            Counted::Enqueued => c.enqueued += 1,
            Counted::Dispatched => c.dispatched += 1,
            Counted::Completed => c.completed += 1,
            Counted::Retried => c.retried += 1,
            Counted::Dead => c.dead += 1,
            Counted::Cancelled => c.cancelled += 1,
            Counted::Escalated => c.escalated += 1,
            Counted::Failed { class } => match c.failed.get_mut(class) {
                Some(n) => *n += 1,
                None => {
                    c.failed.insert(class.to_string(), 1);
                }
            },
        }
    }

    /// A job of `queue` arrived at `now`.
    pub fn arrived(&mut self, now: u64, queue: &str) {
        self.flow_of(queue).add(now, FLOW_WINDOW_MS, [1, 0, 0]);
    }

    /// A job of `queue` and `job_type` waited `waited_ms` for its lease.
    pub fn waited(&mut self, queue: &str, job_type: &str, waited_ms: u64) {
        self.observe(queue, job_type, Timing::Waited, waited_ms);
    }

    /// A lease of a job of `queue` and `job_type` ended at `now` after
    /// `ran_ms`.
    pub fn lease_ended(&mut self, now: u64, queue: &str, job_type: &str, ran_ms: u64) {
        self.flow_of(queue).add(now, FLOW_WINDOW_MS, [0, 1, ran_ms]);
        self.observe(queue, job_type, Timing::Ran, ran_ms);
    }

    fn flow_of(&mut self, queue: &str) -> &mut Sliding<3> {
        if !self.flow.contains_key(queue) {
            self.flow.insert(queue.to_string(), Sliding::default());
        }
        self.flow.get_mut(queue).expect("inserted above")
    }

    fn observe(&mut self, queue: &str, job_type: &str, timing: Timing, ms: u64) {
        if self.observations.len() < MAX_OBSERVATIONS {
            self.observations.push(Observation {
                queue: queue.to_string(),
                job_type: job_type.to_string(),
                timing,
                ms,
            });
        }
    }

    /// The times observed since the last call.
    pub fn take_observations(&mut self) -> Vec<Observation> {
        std::mem::take(&mut self.observations)
    }

    /// Event counts by queue, then job type.
    pub fn counts(&self) -> &BTreeMap<String, BTreeMap<String, TypeCounts>> {
        &self.counts
    }

    /// Each queue's window of work, to be read at the reader's time (an
    /// idle cluster applies no entries, and its windows must still empty).
    pub fn flows(&self) -> BTreeMap<String, Sliding<3>> {
        self.flow.clone()
    }
}

/// A queue's work in its window ending at `now`.
pub fn flow_at(window: &Sliding<3>, now: u64) -> Flow {
    let [arrived, leases_ended, lease_ms] = window.counts(now);
    Flow {
        arrived,
        leases_ended,
        lease_ms,
        window_ms: FLOW_WINDOW_MS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_queue_type_and_class() {
        let mut t = Tally::default();
        t.count("q", "email", Counted::Enqueued);
        t.count("q", "email", Counted::Failed { class: "smtp" });
        t.count("q", "email", Counted::Failed { class: "smtp" });
        t.count("q", "", Counted::Dispatched);
        let q = &t.counts()["q"];
        assert_eq!(q["email"].enqueued, 1);
        assert_eq!(q["email"].failed["smtp"], 2);
        assert_eq!(q[""].dispatched, 1);
    }

    #[test]
    fn flow_and_observations() {
        let mut t = Tally::default();
        t.arrived(1_000, "q");
        t.arrived(2_000, "q");
        t.waited("q", "t", 5);
        t.lease_ended(3_000, "q", "t", 400);
        let w = &t.flows()["q"];
        let f = flow_at(w, 3_000);
        assert_eq!((f.arrived, f.leases_ended, f.lease_ms), (2, 1, 400));
        assert_eq!(flow_at(w, 3_000 + FLOW_WINDOW_MS + 60_000).arrived, 0);
        let obs = t.take_observations();
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[1].timing, Timing::Ran);
        assert!(t.take_observations().is_empty());
    }
}
