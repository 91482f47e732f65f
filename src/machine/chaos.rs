//! Chaos rules (`drover chaos`): which faults the nodes that allow chaos
//! inject into each queue's worker streams. The rules are replicated state;
//! the injecting is the worker sessions' (`api::worker`), and never touches
//! the log.

use super::*;

impl Machine {
    pub(super) fn load_chaos(&mut self) -> Result<(), MachineError> {
        if let Some(bytes) = self.tree.get(CHAOS_KEY)? {
            self.chaos = decode(CHAOS_KEY, &bytes)?;
        }
        Ok(())
    }

    /// Applies a [`Command::SetChaos`].
    pub(super) fn set_chaos(
        &mut self,
        queue: Option<&str>,
        rule: Option<&crate::command::ChaosRule>,
    ) -> Outcome {
        match (queue, rule) {
            (Some(q), Some(r)) => {
                self.chaos.insert(q.to_string(), r.clone());
            }
            (Some(q), None) => {
                self.chaos.remove(q);
            }
            (None, _) => self.chaos.clear(),
        }
        self.put(CHAOS_KEY.to_vec(), encode(&self.chaos));
        Outcome::Noop
    }
}
