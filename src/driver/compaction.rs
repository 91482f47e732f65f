//! Dropping applied entries from the raft log, behind what every
//! follower has and within `raft.log_keep_entries` and `log_keep_bytes`.

use super::*;

impl Driver {
    /// Keeps the log from growing without bound: everything applied more than
    /// `log_keep` entries ago is dropped, once another `log_keep` entries
    /// have been applied, and applied entries past `log_keep_bytes` as soon
    /// as they are; [`COMPACT_STEP`] entries per Ready. A leader keeps what
    /// its slowest follower still needs, so a follower that was down catches
    /// up from the log (or, past the byte bound, from a snapshot).
    pub(super) fn compact_log(&mut self) -> Result<(), DriverError> {
        let applied = self.machine.meta().applied_index;
        let store = self.raw.store();
        let by_bytes = store.index_keeping_bytes(self.log_keep_bytes).min(applied);
        let by_count = applied.saturating_sub(self.log_keep);
        let batch_from = if by_bytes > store.compacted_index() {
            store.compacted_index()
        } else {
            store.compacted_index() + self.log_keep
        };
        let mut upto = by_count.max(by_bytes);
        if self.raw.raft.state == StateRole::Leader {
            // Keep what the slowest follower needs, unless a snapshot covers it.
            let slowest = self
                .raw
                .raft
                .prs()
                .iter()
                .map(|(_, p)| p.matched)
                .min()
                .unwrap_or(applied);
            let on_disk = self
                .raw
                .store()
                .latest_snapshot()
                .map_or(0, |(m, _)| m.index);
            let needed = slowest.max(on_disk);
            if by_bytes > needed && applied > on_disk && self.snapshots.may_start() {
                // A follower lags past the byte bound: a snapshot lets the
                // log go, and is what that follower will need anyway.
                self.take_snapshot(None);
            }
            upto = upto.min(needed);
        }
        let store = self.raw.mut_store();
        if upto > batch_from {
            // A bounded step per Ready, so compaction never stalls the loop.
            store.compact(upto.min(store.compacted_index() + COMPACT_STEP))?;
        }
        Ok(())
    }
}
