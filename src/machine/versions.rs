//! Worker versions switched off: a lease for a worker of a switched-off
//! version skips the jobs the switch covers (a queue, a tenant, or all),
//! which go to workers of other versions or wait. The switches are one
//! small record (`v`), replicated and audited like every operator change.
//!
//! Also when each version was first and last seen leasing (`y`), so an
//! operator can tell a version that is gone from one that is idle: kept
//! from the workers' lease commands, to the minute of log time (one write
//! a minute per version at most), for [`SEEN_KEPT`] versions at most.

use super::*;
use crate::command::VersionSwitch;

/// Versions whose first and last sight are kept; the one seen longest ago
/// goes first.
pub const SEEN_KEPT: usize = 256;

/// How stale a last sight may be before a lease writes it again.
const SEEN_STEP_MS: u64 = 60_000;

/// When a worker version was first and last seen leasing (log time, ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The first lease command of a worker of this version.
    pub first_ms: u64,
    /// The last one, to within a minute.
    pub last_ms: u64,
}

impl Machine {
    pub(super) fn load_version_switches(&mut self) -> Result<(), MachineError> {
        if let Some(bytes) = self.tree.get(VERSIONS_KEY)? {
            self.switches = decode(VERSIONS_KEY, &bytes)?;
        }
        if let Some(bytes) = self.tree.get(VERSIONS_SEEN_KEY)? {
            self.versions_seen = decode(VERSIONS_SEEN_KEY, &bytes)?;
        }
        Ok(())
    }

    /// A worker of `version` asks for jobs at `now`. Written only on
    /// layout 4: a node of a build before it would not, and nodes must
    /// keep equal trees.
    pub(super) fn version_seen(&mut self, now: u64, version: &str) {
        if !self.clock_log {
            return;
        }
        match self.versions_seen.get_mut(version) {
            Some(seen) if now < seen.last_ms.saturating_add(SEEN_STEP_MS) => return,
            Some(seen) => seen.last_ms = now,
            None => {
                if self.versions_seen.len() >= SEEN_KEPT {
                    let oldest = self
                        .versions_seen
                        .iter()
                        .min_by_key(|(v, s)| (s.last_ms, (*v).clone()))
                        .map(|(v, _)| v.clone());
                    if let Some(v) = oldest {
                        self.versions_seen.remove(&v);
                    }
                }
                let seen = Seen {
                    first_ms: now,
                    last_ms: now,
                };
                self.versions_seen.insert(version.to_string(), seen);
            }
        }
        self.put(VERSIONS_SEEN_KEY.to_vec(), encode(&self.versions_seen));
    }

    /// Applies a [`Command::SwitchVersion`]: switching off twice is one
    /// switch; switching on one that is not off is refused.
    pub(super) fn switch_version(&mut self, switch: &VersionSwitch, enabled: bool) -> Outcome {
        if enabled {
            if !self.switches.remove(switch) {
                return Outcome::Rejected(Refusal::NotSwitchedOff {
                    switch: switch.describe(),
                });
            }
        } else {
            self.switches.insert(switch.clone());
        }
        self.put(VERSIONS_KEY.to_vec(), encode(&self.switches));
        Outcome::Noop
    }

    /// Whether a switch keeps jobs of `queue` and `tenant` from workers of
    /// `version`.
    pub(super) fn switched_off(&self, version: &str, queue: &str, tenant: &str) -> bool {
        !self.switches.is_empty()
            && self
                .switches
                .iter()
                .any(|s| s.version == version && s.covers(queue, tenant))
    }

    /// Whether a switch keeps `version` from every tenant of `queue`.
    pub(super) fn switched_off_queue(&self, version: &str, queue: &str) -> bool {
        !self.switches.is_empty()
            && self.switches.iter().any(|s| {
                s.version == version
                    && s.tenant.is_none()
                    && s.queue.as_deref().is_none_or(|q| q == queue)
            })
    }
}
