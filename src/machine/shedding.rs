//! `[queues.NAME] shed_when`: what an enqueue is judged on besides depth.
//! The oldest ready job's wait comes from the ready index; the failure
//! rate from each such queue's results over its window, kept under
//! `O`+queue and written with the entry that changed it, so a node that
//! restarts, or installs a snapshot, judges exactly as the others. Only
//! queues whose policy sets a failure rate are counted: the others cost
//! nothing.

use super::*;
use crate::policies::{QueueHealth, ShedWhen};
use crate::window::Sliding;

/// A queue's results (succeeded, failed) over its window.
pub(super) type Results = Sliding<2>;

/// How [`Results`] are stored: the window and its buckets.
#[derive(Serialize, Deserialize)]
struct Stored {
    window_ms: u64,
    buckets: Vec<(u64, [u64; 2])>,
}

fn results_key(queue: &str) -> Vec<u8> {
    named_key(SHED_RESULTS, queue)
}

impl Machine {
    pub(super) fn load_shed_results(&mut self) -> Result<(), MachineError> {
        for (queue, stored) in load_named::<Stored>(&self.tree, SHED_RESULTS)? {
            self.shed_results.insert(
                queue,
                Results::from_buckets(stored.window_ms, stored.buckets),
            );
        }
        Ok(())
    }

    /// Counts a result of a job of `queue` when its `shed_when` looks at
    /// failures.
    pub(super) fn shed_observe(&mut self, now: u64, queue: &str, ok: bool) {
        // As `Policies::queue` merges it, without cloning the policy on
        // every result.
        let of = |name: &str| {
            self.policies
                .queues
                .get(name)
                .and_then(|q| q.shed_when.as_ref())
        };
        let when = of(queue).or_else(|| of(crate::policies::DEFAULTS));
        let Some(window_ms) = when
            .filter(|w| w.failure_rate.is_some())
            .map(|w| w.window_ms)
        else {
            return;
        };
        let results = self.shed_results.entry(queue.to_string()).or_default();
        results.add(now, window_ms.max(1), [u64::from(ok), u64::from(!ok)]);
        let stored = Stored {
            window_ms: results.window_ms(),
            buckets: results.buckets(),
        };
        self.put(results_key(queue), encode(&stored));
    }

    /// What `when` needs to judge `queue` at `now`.
    pub(super) fn queue_health(&self, now: u64, queue: &str, when: &ShedWhen) -> QueueHealth {
        let oldest_wait_ms = when
            .oldest_ready_ms
            .and_then(|_| self.queues.get(queue)?.ready.oldest_since())
            .map(|since| now.saturating_sub(since));
        let [succeeded, failed] = match when.failure_rate {
            Some(_) => self
                .shed_results
                .get(queue)
                .map_or([0, 0], |r| r.counts(now)),
            None => [0, 0],
        };
        QueueHealth {
            oldest_wait_ms,
            succeeded,
            failed,
        }
    }
}
