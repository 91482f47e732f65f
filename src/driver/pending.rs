//! Proposals waiting for their log entry to apply, keyed by the entry's
//! (index, term) as TiKV's raftstore keys them. Every waiter is answered
//! exactly once: with its own command's outcome when its entry applies in
//! the term it was proposed in, and otherwise with an error that says
//! whether it may be sent again (replaced by a new leader: yes; jumped over
//! by a snapshot or left behind at shutdown: not known). Never with
//! another's outcome, which is what answering by position would do.

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::command::Outcome;
use crate::error::Error;

/// Where a proposer waits: the outcome and the index it applied at.
pub type Reply = oneshot::Sender<Result<(Outcome, u64), Error>>;

/// The proposers waiting on one log entry.
struct Waiting {
    term: u64,
    /// One per command of the entry, in order; None where nobody waits (a
    /// Tick). A membership change has exactly one.
    replies: Vec<Option<Reply>>,
    /// A membership change: answered by how its conf change applied.
    member: bool,
}

/// Answers every waiter with the same error.
pub fn fail_all(replies: Vec<Option<Reply>>, error: impl Fn() -> Error) {
    for reply in replies.into_iter().flatten() {
        let _ = reply.send(Err(error()));
    }
}

/// How an applied membership change ended, for its waiter (none at all:
/// raft replaced the change with an empty entry).
pub enum MemberOutcome {
    Applied,
    Refused(String),
}

#[derive(Default)]
pub struct Pending {
    by_index: HashMap<u64, Waiting>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    /// Waits on the entry proposed at (`index`, `term`) with one reply per
    /// command (or the one reply of a membership change).
    pub fn insert(&mut self, index: u64, term: u64, replies: Vec<Option<Reply>>, member: bool) {
        self.by_index.insert(
            index,
            Waiting {
                term,
                replies,
                member,
            },
        );
    }

    /// Answers the waiters of the entry that applied at (`index`, `term`)
    /// with `outcomes` (one per command, or one for all when the entry did
    /// not decode), or `membership` for a conf change.
    pub fn applied(
        &mut self,
        index: u64,
        term: u64,
        outcomes: Vec<Outcome>,
        membership: Option<MemberOutcome>,
    ) {
        let Some(w) = self.by_index.remove(&index) else {
            return;
        };
        if w.term != term {
            // Another leader's entry took this index: ours never applied.
            return fail_all(w.replies, || Error::Superseded);
        }
        if w.member {
            match membership {
                Some(MemberOutcome::Applied) => {}
                Some(MemberOutcome::Refused(reason)) => {
                    return fail_all(w.replies, || Error::MembershipRefused(reason.clone()))
                }
                None => return fail_all(w.replies, || Error::MembershipBusy),
            }
        }
        let shared = if outcomes.len() == w.replies.len() {
            None
        } else {
            outcomes.first().cloned()
        };
        let mut outcomes = outcomes.into_iter();
        for reply in w.replies {
            let outcome = shared.clone().or_else(|| outcomes.next());
            if let (Some(reply), Some(outcome)) = (reply, outcome) {
                let _ = reply.send(Ok((outcome, index)));
            }
        }
    }

    /// Answers proposals whose entries a new leader's entries replace (they
    /// will never apply): those at or after `first` whose term differs from
    /// what `term_at` says the new entry at their index has (or that have
    /// no new entry).
    pub fn supersede(&mut self, first: u64, term_at: impl Fn(u64) -> Option<u64>) {
        let replaced: Vec<u64> = self
            .by_index
            .iter()
            .filter(|(idx, w)| **idx >= first && term_at(**idx).is_none_or(|t| t != w.term))
            .map(|(idx, _)| *idx)
            .collect();
        for idx in replaced {
            if let Some(w) = self.by_index.remove(&idx) {
                fail_all(w.replies, || Error::Superseded);
            }
        }
    }

    /// Answers proposals at or below `index`, which a snapshot jumped over:
    /// whether they committed is not known here.
    pub fn covered_by_snapshot(&mut self, index: u64) {
        let covered: Vec<u64> = self
            .by_index
            .keys()
            .filter(|i| **i <= index)
            .copied()
            .collect();
        for idx in covered {
            if let Some(w) = self.by_index.remove(&idx) {
                fail_all(w.replies, || Error::OutcomeUnknown);
            }
        }
    }

    /// Answers everything left at shutdown: the entries are in the log and
    /// another node may still commit them.
    pub fn stopping(&mut self) {
        for (_, w) in self.by_index.drain() {
            fail_all(w.replies, || Error::OutcomeUnknown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rx = oneshot::Receiver<Result<(Outcome, u64), Error>>;

    fn waiter() -> (Option<Reply>, Rx) {
        let (tx, rx) = oneshot::channel();
        (Some(tx), rx)
    }

    fn noop() -> Outcome {
        Outcome::Noop
    }

    fn answer(rx: &mut Rx) -> Result<(Outcome, u64), String> {
        rx.try_recv()
            .expect("answered")
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn each_waiter_gets_its_own_commands_outcome() {
        let mut p = Pending::default();
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        p.insert(5, 2, vec![a, None, b], false);
        let outcomes = vec![
            Outcome::Cancelled(Ok(crate::job::JobState::Ready)),
            noop(),
            Outcome::Enqueued(vec![]),
        ];
        p.applied(5, 2, outcomes, None);
        assert!(matches!(answer(&mut ra), Ok((Outcome::Cancelled(_), 5))));
        assert!(matches!(answer(&mut rb), Ok((Outcome::Enqueued(_), 5))));
        assert!(p.is_empty());
    }

    #[test]
    fn an_entry_of_another_term_at_the_index_supersedes() {
        let mut p = Pending::default();
        let (a, mut ra) = waiter();
        p.insert(5, 2, vec![a], false);
        p.applied(5, 3, vec![noop()], None);
        assert!(answer(&mut ra).unwrap_err().contains("Superseded"));
    }

    #[test]
    fn an_undecodable_entry_answers_everyone_with_its_one_outcome() {
        let mut p = Pending::default();
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        p.insert(7, 1, vec![a, b], false);
        let refused = Outcome::Rejected(crate::command::Refusal::Undecodable {
            index: 7,
            reason: "x".into(),
        });
        p.applied(7, 1, vec![refused.clone()], None);
        assert_eq!(answer(&mut ra).unwrap().0, refused);
        assert_eq!(answer(&mut rb).unwrap().0, refused);
    }

    #[test]
    fn membership_changes_are_answered_by_how_they_applied() {
        let mut p = Pending::default();
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        let (c, mut rc) = waiter();
        p.insert(1, 1, vec![a], true);
        p.insert(2, 1, vec![b], true);
        p.insert(3, 1, vec![c], true);
        p.applied(1, 1, vec![noop()], Some(MemberOutcome::Applied));
        p.applied(
            2,
            1,
            vec![noop()],
            Some(MemberOutcome::Refused("no".into())),
        );
        p.applied(3, 1, vec![noop()], None);
        assert!(answer(&mut ra).is_ok());
        assert!(answer(&mut rb).unwrap_err().contains("MembershipRefused"));
        assert!(answer(&mut rc).unwrap_err().contains("MembershipBusy"));
    }

    #[test]
    fn replaced_snapshotted_and_leftover_proposals_get_errors() {
        let mut p = Pending::default();
        let mut rxs = Vec::new();
        for (index, term) in [(3, 1), (4, 1), (5, 1), (6, 2)] {
            let (r, rx) = waiter();
            p.insert(index, term, vec![r], false);
            rxs.push(rx);
        }
        // A new leader's entries from 4 on: 4 keeps term 1, 5 gets term 2,
        // 6 has none.
        p.supersede(4, |i| match i {
            4 => Some(1),
            5 => Some(2),
            _ => None,
        });
        assert!(answer(&mut rxs[2]).unwrap_err().contains("Superseded"));
        assert!(answer(&mut rxs[3]).unwrap_err().contains("Superseded"));
        assert!(rxs[1].try_recv().is_err(), "4 still waits");
        p.covered_by_snapshot(3);
        assert!(answer(&mut rxs[0]).unwrap_err().contains("OutcomeUnknown"));
        p.stopping();
        assert!(answer(&mut rxs[1]).unwrap_err().contains("OutcomeUnknown"));
        assert!(p.is_empty());
    }
}
