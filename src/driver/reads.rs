//! Linearizable reads waiting for raft's read index: each request gets a
//! context raft echoes back in a read state with the commit index the read
//! must see. A new leader's raft drops reads until it has committed an entry
//! in its term, so those wait here and are handed to raft once it has.

use std::collections::HashMap;

use tokio::sync::oneshot;

/// Where a read waits for its index.
pub type ReadReply = oneshot::Sender<u64>;

#[derive(Default)]
pub struct ReadWaiters {
    waiting: HashMap<Vec<u8>, ReadReply>,
    /// Contexts of reads that came before this new leader committed in its
    /// term.
    deferred: Vec<Vec<u8>>,
    seq: u64,
}

impl ReadWaiters {
    /// Takes a read; returns the context to hand raft now, or None when it
    /// must wait (`defer`: a leader that has not committed in its term).
    pub fn add(&mut self, reply: ReadReply, defer: bool) -> Option<Vec<u8>> {
        self.seq += 1;
        let ctx = self.seq.to_be_bytes().to_vec();
        self.waiting.insert(ctx.clone(), reply);
        if defer {
            self.deferred.push(ctx);
            None
        } else {
            Some(ctx)
        }
    }

    /// Answers the read of `ctx` with the index it must wait for.
    pub fn answer(&mut self, ctx: &[u8], index: u64) {
        if let Some(reply) = self.waiting.remove(ctx) {
            let _ = reply.send(index);
        }
    }

    /// Forgets reads whose waiters gave up (raft dropped them: no leader).
    pub fn drop_abandoned(&mut self) {
        self.waiting.retain(|_, r| !r.is_closed());
    }

    /// After a Ready: a node that lost leadership drops its deferred reads
    /// (their waiters time out and retry elsewhere); a leader that has now
    /// committed in its term gets their contexts back, to hand raft.
    pub fn release(&mut self, leader: bool, committed_in_term: bool) -> Vec<Vec<u8>> {
        if self.deferred.is_empty() {
            return Vec::new();
        }
        if !leader {
            for ctx in self.deferred.drain(..) {
                self.waiting.remove(&ctx);
            }
            Vec::new()
        } else if committed_in_term {
            std::mem::take(&mut self.deferred)
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_answered_by_their_context() {
        let mut r = ReadWaiters::default();
        let (a, mut ra) = oneshot::channel();
        let (b, mut rb) = oneshot::channel();
        let ca = r.add(a, false).unwrap();
        let cb = r.add(b, false).unwrap();
        assert_ne!(ca, cb);
        r.answer(&cb, 9);
        r.answer(&ca, 7);
        assert_eq!(ra.try_recv(), Ok(7));
        assert_eq!(rb.try_recv(), Ok(9));
    }

    #[test]
    fn deferred_reads_go_to_raft_once_the_leader_committed_or_are_dropped() {
        let mut r = ReadWaiters::default();
        let (a, mut ra) = oneshot::channel();
        assert_eq!(r.add(a, true), None);
        assert!(
            r.release(true, false).is_empty(),
            "still waiting for a commit"
        );
        let ctx = r.release(true, true);
        assert_eq!(ctx.len(), 1);
        r.answer(&ctx[0], 3);
        assert_eq!(ra.try_recv(), Ok(3));

        let (b, mut rb) = oneshot::channel();
        assert_eq!(r.add(b, true), None);
        assert!(r.release(false, false).is_empty());
        assert!(
            rb.try_recv().is_err(),
            "dropped: the waiter sees its sender gone"
        );
    }

    #[test]
    fn abandoned_reads_are_forgotten() {
        let mut r = ReadWaiters::default();
        let (a, ra) = oneshot::channel();
        r.add(a, false);
        drop(ra);
        r.drop_abandoned();
        assert!(r.waiting.is_empty());
    }
}
