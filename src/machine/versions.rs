//! Worker versions switched off: a lease for a worker of a switched-off
//! version skips the jobs the switch covers (a queue, a tenant, or all),
//! which go to workers of other versions or wait. The switches are one
//! small record (`v`), replicated and audited like every operator change.

use super::*;
use crate::command::VersionSwitch;

impl Machine {
    pub(super) fn load_version_switches(&mut self) -> Result<(), MachineError> {
        if let Some(bytes) = self.tree.get(VERSIONS_KEY)? {
            self.switches = decode(VERSIONS_KEY, &bytes)?;
        }
        Ok(())
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
}
