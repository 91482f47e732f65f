//! The fair-share clocks on disk, in two layouts. Layout 3 keeps a
//! queue's clocks in one record (`S`+queue), rewritten whole after each
//! lease: with tens of thousands of tenants, hundreds of KB per lease.
//! Layout 4 keeps that record as of the last compaction and after it one
//! small record per lease command with what the command changed
//! (`s`+queue+`\0`+sequence): a lease writes one record whatever the
//! number of tenants it dispatched. Once the changes add up to more
//! entries than the record holds, the record is written again and the
//! changes dropped, so what is on disk stays in proportion to the tenants
//! ahead and the writes cost O(1) per dispatch, one sequential write at a
//! time (a key per tenant measured 13 us more per lease with 20,000
//! tenants: sled pays for scattered small writes).
//!
//! A tree goes to layout 4 when the machine applies the first entry of
//! format 4: a leader writes that format only once every voter runs a
//! drover that reads layout 4, so a snapshot never carries it to a node
//! that would misread it, and every node converts at the same index.

use super::*;
use scheduler::{ClocksDelta, ClocksRecord};

/// The first entry format whose trees keep clock changes apart.
pub(super) const CLOCK_LOG_FORMAT: u8 = 4;

/// Changes kept before a compaction however few tenants are ahead: a
/// queue of a few tenants rewrites its small record now and then, not
/// after every lease.
const MIN_CHANGES: usize = 1024;

/// Where a queue's clock changes since its record are: sequences
/// `0..next`, holding `entries` tenant changes in all. Numbered from 0
/// after each compaction, so a node that reopens its tree numbers them as
/// one that did not.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ClockLog {
    next: u64,
    entries: usize,
}

fn delta_key(queue: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + queue.len());
    k.push(CLOCK_DELTA);
    k.extend_from_slice(queue.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The queue and sequence of a change record's key.
fn parse_delta_key(k: &[u8]) -> Option<(String, u64)> {
    let rest = k.get(1..)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let seq = u64::from_be_bytes(rest.get(nul + 1..)?.try_into().ok()?);
    Some((String::from_utf8_lossy(&rest[..nul]).into_owned(), seq))
}

impl Machine {
    /// Writes what a lease changed of `queue`'s clocks.
    pub(super) fn store_clocks(&mut self, queue: &str) {
        if !self.clock_log {
            return self.rewrite_clocks(queue);
        }
        let Some(qi) = self.queues.get_mut(queue) else {
            return;
        };
        let delta = qi.ready.take_changed();
        if delta.tenants.is_empty() {
            return;
        }
        let log = qi.clock_log;
        if log.entries + delta.tenants.len() > qi.ready.ahead_count().max(MIN_CHANGES) {
            self.rewrite_clocks(queue);
        } else {
            qi.clock_log = ClockLog {
                next: log.next + 1,
                entries: log.entries + delta.tenants.len(),
            };
            self.put(delta_key(queue, log.next), encode(&delta));
        }
    }

    /// Writes `queue`'s clocks as one record and drops its change records:
    /// a compaction, and how an erased tenant leaves no change record
    /// naming it.
    pub(super) fn rewrite_clocks(&mut self, queue: &str) {
        let keep_stale = !self.clock_log;
        let Some(qi) = self.queues.get_mut(queue) else {
            return;
        };
        let record = qi.ready.clocks_record(keep_stale);
        qi.ready.take_changed();
        let log = std::mem::take(&mut qi.clock_log);
        self.put(clocks_key(queue), encode(&record));
        for seq in 0..log.next {
            self.delete(delta_key(queue, seq));
        }
    }

    /// Takes the format of the entry about to be applied: the first of
    /// [`CLOCK_LOG_FORMAT`] moves the tree to layout 4.
    pub fn entry_format(&mut self, format: u8) {
        if format < CLOCK_LOG_FORMAT || self.clock_log {
            return;
        }
        self.clock_log = true;
        let mut writes = Vec::new();
        for (queue, qi) in &mut self.queues {
            qi.ready.forget_stale();
            qi.ready.take_changed();
            let record = qi.ready.clocks_record(false);
            // A queue whose clocks never moved may have no record on some
            // nodes (one that restarted since has no index for it): leave
            // it so, as every node does.
            if record.now == 0 && record.tenants.is_empty() {
                continue;
            }
            writes.push((clocks_key(queue), encode(&record)));
        }
        for (k, v) in writes {
            self.put(k, v);
        }
        self.put(FORMAT_KEY.to_vec(), vec![FORMAT]);
    }

    /// Reads every queue's clocks, in either layout (on open).
    pub(super) fn load_clocks(&mut self) -> Result<(), MachineError> {
        self.clock_log = self.tree.get(FORMAT_KEY)?.as_deref() == Some(&[FORMAT][..]);
        for item in self.tree.scan_prefix([CLOCKS]) {
            let (k, v) = item?;
            let queue = String::from_utf8_lossy(&k[1..]).into_owned();
            let record: ClocksRecord = decode(&k, &v)?;
            let qi = self.queues.entry(queue).or_default();
            qi.ready.restore_clocks(record);
        }
        // In key order: by queue, then sequence.
        for item in self.tree.scan_prefix([CLOCK_DELTA]) {
            let (k, v) = item?;
            let (queue, seq) = parse_delta_key(&k).ok_or_else(|| MachineError::Corrupt {
                key: describe_key(&k),
                reason: "a clock change's key is not s, queue, NUL, 8-byte sequence".into(),
            })?;
            let delta: ClocksDelta = decode(&k, &v)?;
            let qi = self.queues.entry(queue).or_default();
            if seq != qi.clock_log.next {
                return Err(MachineError::Corrupt {
                    key: describe_key(&k),
                    reason: format!(
                        "clock changes must run from 0 without a gap; expected {} next",
                        qi.clock_log.next
                    ),
                });
            }
            qi.clock_log.next += 1;
            qi.clock_log.entries += delta.tenants.len();
            qi.ready.restore_delta(delta);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_key_reads_back_in_sequence_order() {
        let k = delta_key("q.1", 258);
        assert_eq!(&k[..], b"sq.1\0\0\0\0\0\0\0\x01\x02");
        assert_eq!(parse_delta_key(&k), Some(("q.1".into(), 258)));
        assert!(delta_key("q", 9) < delta_key("q", 10));
        assert_eq!(parse_delta_key(b"sq\0short"), None);
        assert_eq!(parse_delta_key(b"sq"), None);
    }
}
