//! Canary rules: a share of a queue's jobs, chosen from the job id (the
//! same on every node), is leased only to workers of the canary version,
//! and the rest only to others. A canary job no canary worker took within
//! `max_wait_ms` of becoming ready goes to the others too. Rules are
//! records `N`+queue, set at run time (audited).

use super::*;
use crate::command::CanaryRule;

const CANARY: u8 = b'N';

/// Which of 10,000 parts of the jobs `id` falls in: a fixed mix of the id,
/// so every node, and every lease, decides the same.
pub fn canary_part(id: JobId) -> u64 {
    // splitmix64's finalizer: ids that follow each other spread evenly.
    let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % 10_000
}

impl CanaryRule {
    /// Whether job `id` is one of the canary's share.
    pub fn covers(&self, id: JobId) -> bool {
        canary_part(id) < u64::from(self.percent.min(100)) * 100
    }

    /// Whether a worker of `version` (None: it gave none) may lease job
    /// `id`, ready since `since`, at `now`.
    pub fn admits(&self, version: Option<&str>, id: JobId, since: u64, now: u64) -> bool {
        let canary_worker = version == Some(self.version.as_str());
        if self.covers(id) {
            canary_worker || now.saturating_sub(since) >= self.max_wait_ms
        } else {
            !canary_worker
        }
    }
}

fn canary_key(queue: &str) -> Vec<u8> {
    let mut k = vec![CANARY];
    k.extend_from_slice(queue.as_bytes());
    k
}

impl Machine {
    pub(super) fn load_canaries(&mut self) -> Result<(), MachineError> {
        for item in self.tree.scan_prefix([CANARY]) {
            let (k, v) = item?;
            let queue = String::from_utf8_lossy(&k[1..]).into_owned();
            self.canaries.insert(queue, decode(&k, &v)?);
        }
        Ok(())
    }

    /// Applies a [`Command::SetCanary`]: a rule for the queue, or none.
    pub(super) fn set_canary(&mut self, queue: &str, rule: Option<&CanaryRule>) -> Outcome {
        match rule {
            Some(r) => {
                self.canaries.insert(queue.to_string(), r.clone());
                self.put(canary_key(queue), encode(r));
            }
            None => {
                if self.canaries.remove(queue).is_none() {
                    return Outcome::Rejected(Refusal::NoCanary {
                        queue: queue.to_string(),
                    });
                }
                self.delete(canary_key(queue));
            }
        }
        Outcome::Noop
    }
}
