//! Quarantined workers: a worker failing too often (the node it is
//! connected to counts its results, `[queues.NAME] quarantine_failure_rate`)
//! gets no new leases, on any node, until an operator releases it or it
//! reconnects after `quarantine_for`. Kept under `Q`+worker so every node
//! refuses it alike.

use super::*;

/// Whether a worker whose results in its policy's window were `completed`
/// and `failed` is quarantined: it sent at least `min_jobs`, and at least
/// `failure_rate` of them failed. The node the worker is connected to
/// counts and asks; the log decides nothing else.
pub fn judge(policy: &crate::policies::QuarantinePolicy, completed: u64, failed: u64) -> bool {
    let total = completed.saturating_add(failed);
    total >= policy.min_jobs && failed as f64 >= policy.failure_rate * total as f64
}

/// Why and until when a worker is kept from new leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Quarantined {
    /// When it was quarantined: log time, ms since the epoch.
    pub since_ms: u64,
    /// Reconnecting after this lifts it.
    pub until_ms: u64,
    /// Its results in the window that decided it.
    pub completed: u64,
    /// Its failed results in that window (`completed` counts the others).
    pub failed: u64,
}

fn quarantine_key(worker: &str) -> Vec<u8> {
    named_key(QUARANTINE, worker)
}

impl Machine {
    pub(super) fn load_quarantined(&mut self) -> Result<(), MachineError> {
        self.quarantined.extend(load_named(&self.tree, QUARANTINE)?);
        Ok(())
    }

    /// Applies a [`Command::Quarantine`]. A worker already quarantined
    /// keeps its first record.
    pub(super) fn quarantine(
        &mut self,
        now: u64,
        worker: &str,
        for_ms: u64,
        completed: u64,
        failed: u64,
    ) -> Outcome {
        if self.quarantined.contains_key(worker) {
            return Outcome::Removed(0);
        }
        let q = Quarantined {
            since_ms: now,
            until_ms: now.saturating_add(for_ms),
            completed,
            failed,
        };
        self.put(quarantine_key(worker), encode(&q));
        self.quarantined.insert(worker.to_string(), q);
        Outcome::Removed(1)
    }

    /// Applies a [`Command::ReleaseWorker`]; refuses a worker that is
    /// not quarantined, so an operator's typo changes nothing.
    pub(super) fn release_worker(&mut self, worker: &str) -> Outcome {
        if self.quarantined.remove(worker).is_none() {
            return Outcome::Rejected(Refusal::NotQuarantined {
                worker: worker.to_string(),
            });
        }
        self.delete(quarantine_key(worker));
        Outcome::Removed(1)
    }

    pub(super) fn is_quarantined(&self, worker: &str) -> bool {
        !self.quarantined.is_empty() && self.quarantined.contains_key(worker)
    }
}
