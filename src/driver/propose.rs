//! Proposals into the log: one entry per turn of the loop, in the
//! newest format every voter applies.

use super::*;

impl Driver {
    /// Whether to take new proposals now: a leader with
    /// `max_inflight_entries` uncommitted entries holds them back, so they
    /// pile up in the channel and go into one entry once one commits. That
    /// batches by how long replication takes, not by how fast requests come.
    /// Other nodes refuse them at once, so they need no limit.
    pub(super) fn takes_proposals(&self) -> bool {
        // A leader whose config asks for other policies holds requests
        // until the cluster applies them, so nothing is admitted or leased
        // under the old ones after a start or a reload.
        if self.wants_own_policies() {
            return false;
        }
        if self.max_inflight == 0 || self.raw.raft.state != StateRole::Leader {
            return true;
        }
        let log = &self.raw.raft.raft_log;
        log.last_index().saturating_sub(log.committed) < self.max_inflight
    }

    /// Proposes what one turn of the loop took in: the commands in as few
    /// entries as [`MAX_ENTRY_BYTES`] allows, membership changes each alone.
    pub(super) fn propose_all(&mut self, turn: Vec<Proposal>) {
        let mut commands = Vec::new();
        let mut replies = Vec::new();
        let mut bytes = 0;
        // Judged once a turn, and only when the turn holds new work.
        let mut refusal = None;
        for p in turn {
            match p.what {
                Proposed::Member(m) => self.propose_member(m, p.reply),
                Proposed::Command(Command::Enqueue { .. })
                    if refusal.get_or_insert_with(|| self.refusal()).is_some() =>
                {
                    if let Some(Some(r)) = &refusal {
                        let _ = p.reply.send(Err(Error::Pressure(r.clone())));
                    }
                }
                Proposed::Command(c) => {
                    let size = c.approx_bytes();
                    if !commands.is_empty() && bytes + size > MAX_ENTRY_BYTES {
                        self.propose(std::mem::take(&mut commands), std::mem::take(&mut replies));
                        bytes = 0;
                    }
                    bytes += size;
                    commands.push(c);
                    replies.push(Some(p.reply));
                }
            }
        }
        if !commands.is_empty() {
            self.propose(commands, replies);
        }
    }

    /// Proposes `commands` as one entry; `replies` holds one waiter (or
    /// None) per command.
    pub(super) fn propose(&mut self, commands: Vec<Command>, replies: Vec<Option<Reply>>) {
        let retry_after_ms = self.tick_interval.as_millis() as u64 * 5;
        let refuse = |replies| fail_all(replies, || Error::NoLeader { retry_after_ms });
        if self.raw.raft.state != StateRole::Leader {
            // A follower would forward it to the leader inside raft, where
            // its outcome could never come back to us.
            return refuse(replies);
        }
        let format = self.write_version();
        let (commands, replies) = for_format(commands, replies, format);
        if commands.is_empty() {
            return;
        }
        let ticks = commands.iter().any(|c| matches!(c, Command::Tick));
        let fires = commands.iter().any(|c| matches!(c, Command::Fire { .. }));
        let purges = commands.iter().any(|c| {
            matches!(
                c,
                Command::Purge { .. }
                    | Command::PurgeAudit { .. }
                    | Command::SetPolicies { .. }
                    | Command::SetPoliciesFrom(_)
            )
        });
        metrics::histogram!(crate::metrics::COMMANDS_PER_ENTRY).record(commands.len() as f64);
        let entry = LogEntry {
            at_ms: self.log_now(),
            commands,
        };
        // Sized up front: grown by doubling, an entry of large payloads was
        // copied several times over (a tenth of a node's CPU under them).
        let mut data = Vec::with_capacity(
            64 + entry
                .commands
                .iter()
                .map(Command::approx_bytes)
                .sum::<usize>(),
        );
        bincode::serde::encode_into_std_write(&entry, &mut data, bincode::config::standard())
            .expect("bincode encoding of in-memory values cannot fail");
        match self.raw.propose(vec![format], data) {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                self.pending.insert(index, term, replies, false);
                if ticks {
                    self.tick_in_flight = Some(index);
                }
                if fires {
                    self.fire_in_flight = Some(index);
                }
                if purges {
                    self.upkeep_in_flight = Some(index);
                }
            }
            Err(_) => refuse(replies),
        }
    }

    /// The entry format to write: the newest every member (voters and
    /// learners) applies. A member not heard from yet counts as format 1,
    /// which every build applies, unless the log already holds a newer
    /// format: every voter applied that, so it is never written below.
    pub(super) fn write_version(&mut self) -> u8 {
        let me = self.raw.raft.id;
        let heard = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(&id, _)| match id {
                id if id == me => self.entry_version,
                id => self.peer_formats.of(id),
            })
            .min()
            .unwrap_or(1);
        let version = heard.max(self.format_floor).clamp(1, self.entry_version);
        if version != self.writing_version {
            tracing::info!(
                event = "entry_version_changed",
                from = self.writing_version,
                to = version,
                "log entries are now written in another format: the oldest every voter applies"
            );
            self.writing_version = version;
            // Keys the old format could not carry go to the cluster now:
            // look again as if asked.
            self.policies = self.policies_whole.for_format(version);
            self.policies_asked = Some(self.raw.raft.raft_log.last_index());
            self.policies_checked = None;
        }
        version
    }
}

/// The commands as an entry of `format` carries them (see
/// [`Command::for_format`]); one that cannot be written yet is answered
/// with [`Error::Upgrading`] and left out.
pub(super) fn for_format(
    commands: Vec<Command>,
    replies: Vec<Option<Reply>>,
    format: u8,
) -> (Vec<Command>, Vec<Option<Reply>>) {
    if format >= crate::command::ENTRY_VERSION {
        return (commands, replies);
    }
    let mut kept = (
        Vec::with_capacity(commands.len()),
        Vec::with_capacity(replies.len()),
    );
    for (command, reply) in commands.into_iter().zip(replies) {
        let needs = command.min_format();
        match command.for_format(format) {
            Some(c) => {
                kept.0.push(c);
                kept.1.push(reply);
            }
            None => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(Error::Upgrading {
                        needs,
                        writing: format,
                    }));
                }
            }
        }
    }
    kept
}
