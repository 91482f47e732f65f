//! Taking up leadership and keeping it honest: the log's time (see
//! [`super::log_time`]), the lease renewal of a new leader, and the clock
//! check that keeps a skewed node from leading.

use super::*;

impl Driver {
    /// The log's time now, as this node (leading) advances it toward the
    /// majority's wall clock.
    pub(super) fn log_now(&mut self) -> u64 {
        self.notice_role();
        let target = now_ms().saturating_add_signed(self.wall_offset_ms);
        self.log_time.advance(target, std::time::Instant::now())
    }

    pub(super) fn voters(&self) -> Vec<u64> {
        self.raw.raft.prs().conf().voters().ids().iter().collect()
    }

    /// Takes up leadership when raft gave it: the log's time continues
    /// from where it stands, and the first entry of each term renews every
    /// lease (again next turn if raft refused it, say during a transfer).
    pub(super) fn notice_role(&mut self) {
        let leader = self.raw.raft.state == StateRole::Leader;
        if leader != self.leading {
            self.leading = leader;
            if !leader {
                self.log_time.follow();
                return;
            }
            let now = std::time::Instant::now();
            self.wall_offset_ms = self.clocks.majority_offset_ms(&self.voters(), now);
            let wall = now_ms().saturating_add_signed(self.wall_offset_ms);
            let last = self.machine.meta().last_at_ms;
            let (start, anchor) = self.log_time.lead(last, wall, now);
            let wall_offset_ms = i128::from(start) - i128::from(now_ms());
            tracing::info!(event = "log_time_taken", log_ms = start, from = ?anchor, wall_offset_ms = wall_offset_ms as i64, term = self.raw.raft.term, "leading: the log's time goes on from here by this node's monotonic clock");
        }
        let term = self.raw.raft.term;
        if !leader || self.renewed_term == term {
            return;
        }
        // Set first: proposing asks the log's time, which comes back here.
        self.renewed_term = term;
        if self.write_version() < Command::RenewLeases.min_format() {
            // Voters that cannot apply it yet: nothing to renew with.
            return;
        }
        let before = self.raw.raft.raft_log.last_index();
        self.propose(vec![Command::RenewLeases], vec![None]);
        if self.raw.raft.raft_log.last_index() == before {
            self.renewed_term = 0;
        }
    }

    /// Whether this node, following, must not campaign: its clock is off
    /// from a majority's, or it has heard no leader's time since it started
    /// and not yet the clocks of a majority (a node an hour ahead would
    /// otherwise start the log's time from its own clock).
    pub(super) fn holds_campaign(&self) -> bool {
        if self.leading {
            return false;
        }
        if self.skew.is_some() {
            return true;
        }
        if self.log_time.anchored() {
            return false;
        }
        let voters = self.voters();
        let now = std::time::Instant::now();
        let heard = voters
            .iter()
            .filter(|&&v| self.clocks.offset_of(v, now).is_some())
            .count();
        heard <= voters.len() / 2
    }

    /// A raft tick for a node that must not campaign: its election timer
    /// runs up to the timeout and stops there, so it still votes for
    /// others (raft's check_quorum ignores votes while a follower's timer
    /// says its leader was heard lately) but never starts an election.
    pub(super) fn tick_without_campaign(&mut self) {
        let raft = &mut self.raw.raft;
        if raft.election_elapsed < raft.election_timeout() {
            raft.election_elapsed += 1;
        }
    }

    /// Judges this node's clock against the voters' (once a tick): while
    /// it is further than `max_clock_offset` from a majority's, the node
    /// does not campaign, and hands leadership to a peer if it leads.
    pub(super) fn check_clock(&mut self) {
        let now = std::time::Instant::now();
        let voters = self.voters();
        self.wall_offset_ms = self.clocks.majority_offset_ms(&voters, now);
        let skew = self.clocks.skew(&voters, now);
        match (&self.skew, &skew) {
            (None, Some(s)) => {
                tracing::error!(
                    event = "clock_skewed",
                    offset_ms = s.offset_ms,
                    max_offset_ms = s.max_offset_ms,
                    "{s}"
                );
            }
            (Some(_), None) => {
                tracing::info!(event = "clock_skew_cleared", "this node's clock is back within max_clock_offset of the majority's: it may lead again");
            }
            _ => {}
        }
        self.skew = skew;
        if self.skew.is_none() || self.raw.raft.state != StateRole::Leader {
            return;
        }
        if self
            .skew_transfer_at
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(2))
        {
            return;
        }
        // The voter most up to date whose clock agrees with the majority.
        let me = self.node_id;
        let target = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(&id, _)| id != me && self.raw.raft.prs().conf().voters().contains(id))
            .filter(|(&id, _)| {
                self.clocks.offset_of(id, now).is_some_and(|o| {
                    self.skew
                        .is_some_and(|s| (o - s.offset_ms).unsigned_abs() <= s.max_offset_ms)
                })
            })
            .max_by_key(|(_, p)| p.matched)
            .map(|(&id, _)| id);
        if let Some(id) = target {
            tracing::warn!(event = "clock_skew_transfer", to = id, "this node's clock is off: handing leadership to a node whose clock agrees with the majority");
            self.skew_transfer_at = Some(now);
            self.raw.transfer_leader(id);
        }
    }
}
