//! What the leader proposes by itself: ticks when a lease or a delay is
//! due, purges past retention, schedule slots, and this node's policies;
//! and whether an alarm holds new work back.

use super::*;

impl Driver {
    /// The leader proposes the slots of schedules that are due (by its
    /// clock), one entry at a time; the machine fires each slot once.
    pub(super) fn propose_due_slots(&mut self) {
        if self.raw.raft.state != StateRole::Leader
            || self.fire_in_flight.is_some()
            || !self.raw.raft.commit_to_current_term()
            || self.machine.policies().schedules.is_empty()
        {
            return;
        }
        // A fire is new work: held while an alarm stands, and fired (as
        // each schedule's misfire rule says) once it clears.
        match self.refusal() {
            Some(r) => {
                if !self.fires_held {
                    tracing::warn!(event = "schedules_held", reason = %r, "schedule fires wait until the alarm clears");
                    self.fires_held = true;
                }
                return;
            }
            None if self.fires_held => {
                tracing::info!(event = "schedules_resumed", "schedule fires go on");
                self.fires_held = false;
            }
            None => {}
        }
        let now = self.log_now();
        let mut commands = Vec::new();
        for (name, policy) in &self.machine.policies().schedules {
            let key = (policy.cron.clone(), policy.timezone.clone());
            let parsed = self.crons.entry(key).or_insert_with(|| {
                crate::schedules::parse(&policy.cron, &policy.timezone)
                    .map_err(|e| {
                        // Once per expression, not per turn.
                        tracing::error!(event = "schedule_invalid", schedule = %name, error = %e, "cannot work out this schedule's slots");
                    })
                    .ok()
            });
            let Some(parsed) = parsed.as_ref() else {
                continue;
            };
            let last = self
                .machine
                .schedules()
                .get(name)
                .map_or(0, |s| s.last_slot_ms);
            if let Some((slot_ms, enqueue)) =
                crate::schedules::due(parsed, last, policy.run_once, now)
            {
                commands.push(Command::Fire {
                    schedule: name.clone(),
                    slot_ms,
                    enqueue,
                });
            }
        }
        if !commands.is_empty() {
            let replies = commands.iter().map(|_| None).collect();
            self.propose(commands, replies);
        }
    }

    /// Brings the machine's policies to what this node's config says: the
    /// leader proposes them; a follower never applies its own, and says once
    /// which keys its file has otherwise.
    pub(super) fn reconcile_policies(&mut self) {
        // Runs every turn: compare the (possibly large) policies only when
        // this node was asked for its own or the cluster's changed since the
        // last look.
        let index = self.machine.policies_index();
        if self.policies_asked.is_none() && self.policies_checked == Some(index) {
            return;
        }
        self.policies_checked = Some(index);
        let current = self.machine.policies();
        if *current == self.policies {
            self.policies_asked = None;
            return;
        }
        // Another leader set the cluster's policies after this node was
        // asked for its own: theirs stand (a node that merely differs does
        // not override the cluster at each election).
        if self
            .policies_asked
            .is_some_and(|asked| self.machine.policies_index() > asked)
        {
            self.policies_asked = None;
        }
        if self.wants_own_policies() {
            if self.upkeep_in_flight.is_none() && self.raw.raft.commit_to_current_term() {
                tracing::info!(event = "policies_proposed", keys = ?current.differences(&self.policies), "proposing this node's config policies to the cluster");
                self.propose(
                    vec![Command::SetPoliciesFrom(Box::new(
                        crate::command::PoliciesFrom {
                            policies: self.policies.clone(),
                            node: self.node_id,
                            file_sha256: self.policies_source.clone(),
                        },
                    ))],
                    vec![None],
                );
            }
        } else if self.machine.policies_set() && self.policies_warned.as_ref() != Some(current) {
            tracing::warn!(event = "policies_differ", keys = ?current.differences(&self.policies), "this node's config file has other policies than the cluster applies; the cluster's stand (send SIGHUP to the leader after changing its file)");
            self.policies_warned = Some(current.clone());
        }
    }

    /// A leader asked (at start or by SIGHUP) to bring its config's
    /// policies to the cluster, and they are not applied yet.
    pub(super) fn wants_own_policies(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
            && self.policies_asked.is_some()
            && *self.machine.policies() != self.policies
    }

    /// The leader proposes a Tick when a lease or a delayed job is due, so an
    /// idle cluster writes nothing to its log.
    pub(super) fn propose_tick_if_due(&mut self) {
        if self.raw.raft.state != StateRole::Leader || self.tick_in_flight.is_some() {
            return;
        }
        let Some(due) = self.machine.next_due_ms() else {
            return self.propose_purge_if_due();
        };
        if due <= self.log_now() {
            self.propose(vec![Command::Tick], vec![None]);
        }
        self.propose_purge_if_due();
    }

    /// The leader proposes a purge when finished jobs or idempotency records
    /// are past their retention: one bounded slice at a time, the next as
    /// soon as the last applied, and a look once a second when none was due.
    pub(super) fn propose_purge_if_due(&mut self) {
        // New policies go first: requests wait for them, purges can wait.
        if self.wants_own_policies()
            || self.raw.raft.state != StateRole::Leader
            || self.upkeep_in_flight.is_some()
            || std::time::Instant::now() < self.purge_check_at
        {
            return;
        }
        let now = self.log_now();
        let due = self
            .machine
            .purge_due(now, &self.retention)
            .and_then(|jobs| Ok((jobs, self.machine.audit_purge_due(now, self.audit_keep_ms)?)));
        match due {
            Ok((false, false)) => {
                self.purge_check_at = std::time::Instant::now() + PURGE_CHECK_EVERY;
            }
            Ok((jobs, audit)) => {
                let mut commands = Vec::new();
                if jobs {
                    commands.push(Command::Purge {
                        retention: self.retention,
                        limit: PURGE_SLICE,
                    });
                }
                if audit {
                    commands.push(Command::PurgeAudit {
                        keep_ms: self.audit_keep_ms,
                        limit: PURGE_SLICE,
                    });
                }
                let replies = commands.iter().map(|_| None).collect();
                self.propose(commands, replies);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whether a purge is due");
                self.purge_check_at = std::time::Instant::now() + PURGE_CHECK_EVERY;
            }
        }
    }

    /// Why this node, leading, refuses new work now: an alarm on its
    /// voters (see [`crate::resources::judge`]). None on a follower: its
    /// leader judges.
    pub(super) fn refusal(&self) -> Option<crate::resources::Refusal> {
        if !self.pressure.any() || self.raw.raft.state != StateRole::Leader {
            return None;
        }
        self.pressure.refusal(&self.voters())
    }
}
