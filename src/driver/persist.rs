//! The hand-off of written Readies to the flusher thread, which makes them
//! durable, and of the messages raft may send only once they are (votes,
//! append responses). The loop writes a Ready to sled and goes on; the
//! flusher folds every Ready written meanwhile into its next flush (group
//! commit); Readies count as persisted in order.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use crate::store::Database;

/// (ready number, needs a sync) for the flusher thread.
type FlushRequests = std::sync::mpsc::Sender<(u64, bool)>;
/// Ready numbers the flusher has made durable, or the error that stopped it.
type FlushResults = mpsc::UnboundedReceiver<Result<u64, sled::Error>>;

pub struct Persistence {
    requests: FlushRequests,
    results: FlushResults,
    /// Messages raft may send only once their ready is durable, by ready
    /// number.
    after: VecDeque<(u64, Vec<raft::eraftpb::Message>)>,
    /// The newest ready number handed to the flusher and not yet durable.
    awaiting: Option<u64>,
}

/// The flusher is gone (it failed, and said why through `next`).
#[derive(Debug)]
pub struct FlusherGone;

impl Persistence {
    /// Starts the flusher thread on `db`.
    pub fn start(db: Database) -> std::io::Result<Persistence> {
        let (requests, results) = spawn_flusher(db)?;
        Ok(Persistence {
            requests,
            results,
            after: VecDeque::new(),
            awaiting: None,
        })
    }

    /// Ready `number` is written to sled, with `messages` to send once it is
    /// durable. Returns the number if it counts as persisted at once
    /// (nothing to sync and no flush in flight ahead of it); otherwise the
    /// flusher has it and [`Persistence::next`] will say.
    pub fn written(
        &mut self,
        number: u64,
        must_sync: bool,
        messages: Vec<raft::eraftpb::Message>,
    ) -> Result<Option<u64>, FlusherGone> {
        if !messages.is_empty() {
            self.after.push_back((number, messages));
        }
        if must_sync || self.awaiting.is_some() {
            // Readies count as persisted in order, so one that needs no sync
            // still waits behind a flush in flight.
            self.requests
                .send((number, must_sync))
                .map_err(|_| FlusherGone)?;
            self.awaiting = Some(number);
            Ok(None)
        } else {
            Ok(Some(number))
        }
    }

    /// The ready number in the flusher's hands, if any.
    pub fn awaiting(&self) -> Option<u64> {
        self.awaiting
    }

    /// Waits for the flusher's next report: a ready number now durable, its
    /// error, or None if it stopped.
    pub async fn next(&mut self) -> Option<Result<u64, sled::Error>> {
        self.results.recv().await
    }

    /// Everything through ready `number` is durable: returns the messages
    /// that waited for it, in order.
    pub fn persisted(&mut self, number: u64) -> Vec<raft::eraftpb::Message> {
        if self.awaiting.is_some_and(|n| n <= number) {
            self.awaiting = None;
        }
        let mut out = Vec::new();
        while self.after.front().is_some_and(|(n, _)| *n <= number) {
            if let Some((_, msgs)) = self.after.pop_front() {
                out.extend(msgs);
            }
        }
        out
    }
}

/// The flusher thread: makes sled durable for the newest ready number it was
/// given, folding every number that queued up meanwhile into one flush. It
/// keeps the fsync off the driver, which goes on taking proposals.
fn spawn_flusher(db: Database) -> std::io::Result<(FlushRequests, FlushResults)> {
    let (tx, rx) = std::sync::mpsc::channel::<(u64, bool)>();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("raft-flusher".into())
        .spawn(move || {
            while let Ok((mut number, mut sync)) = rx.recv() {
                while let Ok((n, s)) = rx.try_recv() {
                    number = n;
                    sync |= s;
                }
                let result = if sync {
                    db.flush().map(|_| number)
                } else {
                    Ok(number)
                };
                let failed = result.is_err();
                if done_tx.send(result).is_err() || failed {
                    break;
                }
            }
        })?;
    Ok((tx, done_rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(to: u64) -> raft::eraftpb::Message {
        raft::eraftpb::Message {
            to,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn readies_are_persisted_in_order_and_their_messages_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open_db(dir.path(), 1 << 20).unwrap();
        let mut p = Persistence::start(db).unwrap();
        // Nothing to sync, nothing in flight: persisted at once.
        assert_eq!(p.written(1, false, vec![msg(1)]).unwrap(), Some(1));
        assert_eq!(p.persisted(1).len(), 1);
        // A sync goes to the flusher; a Ready behind it waits too.
        assert_eq!(p.written(2, true, vec![msg(2)]).unwrap(), None);
        assert_eq!(p.written(3, false, vec![msg(3)]).unwrap(), None);
        assert_eq!(p.awaiting(), Some(3));
        let mut done = 0;
        while done < 3 {
            done = p.next().await.unwrap().unwrap();
        }
        let sent: Vec<u64> = p.persisted(done).iter().map(|m| m.to).collect();
        assert_eq!(sent, vec![2, 3]);
        assert_eq!(p.awaiting(), None);
    }
}
