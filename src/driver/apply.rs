//! Applying committed entries to the machine, answering their proposers,
//! and publishing what changed (status, stats, revoked leases).

use super::*;

impl Driver {
    pub(super) fn apply(&mut self, entries: Vec<Entry>) -> Result<(), DriverError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut replies = Vec::with_capacity(entries.len());
        for entry in entries {
            let (index, term) = (entry.index, entry.term);
            // Set for conf change entries: whether raft took the change.
            let mut membership = None;
            let outcomes = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    self.machine.apply_noop(index, term);
                    vec![Outcome::Noop]
                }
                EntryType::EntryNormal => {
                    // An entry this build cannot read stops the node: skipping
                    // it would leave this node's state behind the others'.
                    let found = crate::command::entry_version(&entry.context);
                    if found > self.entry_version {
                        return Err(DriverError::EntryTooNew {
                            index,
                            found,
                            reads: self.entry_version,
                        });
                    }
                    self.machine.entry_format(found);
                    if found > self.format_floor {
                        self.format_floor = found;
                        self.raw.mut_store().set_format_floor(found)?;
                    }
                    // Every byte must be read: a shorter parse is an entry
                    // of another format that only looks like one of ours.
                    let decoded = bincode::serde::decode_from_slice::<LogEntry, _>(
                        &entry.data,
                        bincode::config::standard(),
                    )
                    .map_err(|e| e.to_string())
                    .and_then(|(log_entry, read)| {
                        if read == entry.data.len() {
                            Ok(log_entry)
                        } else {
                            Err(format!(
                                "{} trailing bytes after the entry: written by another drover version?",
                                entry.data.len() - read
                            ))
                        }
                    });
                    match decoded {
                        Ok(log_entry) => self.machine.apply(index, term, &log_entry)?,
                        Err(e) => {
                            // Every node decodes the same bytes the same way,
                            // so skipping keeps them equal.
                            tracing::error!(event = "entry_undecodable", index, error = %e, "skipping a log entry that does not decode");
                            self.machine.apply_noop(index, term);
                            vec![Outcome::Rejected(Refusal::Undecodable { index, reason: e })]
                        }
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    membership = Some(self.apply_conf_change(&entry)?);
                    self.machine.apply_noop(index, term);
                    vec![Outcome::Noop]
                }
            };
            if self.tick_in_flight.is_some_and(|i| i <= index) {
                self.tick_in_flight = None;
            }
            if self.fire_in_flight.is_some_and(|i| i <= index) {
                self.fire_in_flight = None;
            }
            if self.upkeep_in_flight.is_some_and(|i| i <= index) {
                self.upkeep_in_flight = None;
            }
            replies.push((index, term, outcomes, membership));
            // Commits at entry boundaries, so each batch is still atomic with
            // the applied index it carries.
            if self.machine.wants_commit() {
                self.machine.commit()?;
            }
        }
        self.machine.commit()?;
        // Publish before replying, so whoever is answered sees the new state.
        let observations = self.machine.take_observations();
        if !observations.is_empty() {
            self.history_times(&observations);
        }
        self.job_times.record(observations);
        for (job_id, error) in self.machine.take_unreadable_payloads() {
            tracing::error!(event = "payload_unreadable", job_id, %error, "cannot read a leased job's payload on this node: the job is not handed out and its lease expires");
        }
        let revoked = self.machine.take_lease_events();
        for e in &revoked {
            tracing::warn!(event = e.event, what = e.what, job_id = e.job_id, queue = %e.queue, worker = %e.worker, attempt = e.attempt, "a lease ended without a result");
        }
        for e in self.machine.take_run_events() {
            match e {
                crate::machine::runs::RunEvent::BudgetExceeded { tenant, run, over } => {
                    tracing::warn!(event = "budget_exceeded", %tenant, %run, budget = over.budget, usage = %over.describe(), "a budget is used up: its jobs are held until an override (drover runs override) or a higher limit");
                }
                crate::machine::runs::RunEvent::Finished { uses, .. } => {
                    for u in uses {
                        metrics::histogram!(crate::metrics::RUN_BUDGET_RATIO, "budget" => u.budget)
                            .record(u.ratio());
                    }
                }
            }
        }
        if !revoked.is_empty() && self.revoked_tx.receiver_count() > 0 {
            let _ = self.revoked_tx.send(revoked.into());
        }
        let stats = Arc::new(self.machine.stats());
        log_breaker_changes(&self.stats_tx.borrow().breakers, &stats.breakers);
        self.stats_tx.send_replace(stats);
        for (index, term, outcomes, membership) in replies {
            let membership = membership.map(|m| match m {
                Ok(()) => MemberOutcome::Applied,
                Err(reason) => MemberOutcome::Refused(reason),
            });
            self.pending.applied(index, term, outcomes, membership);
        }
        self.compact_log()?;
        Ok(())
    }

    /// Adds the wait and run times of an applied range to the history (at
    /// this node's clock: the charts are of when it applied them).
    fn history_times(&self, observations: &[crate::machine::tally::Observation]) {
        use crate::machine::tally::Timing;
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let now = history.now_ms();
        for o in observations {
            let timing = match o.timing {
                Timing::Waited => crate::history::Timing::Wait,
                Timing::Ran => crate::history::Timing::Run,
            };
            history.time(now, &o.queue, timing, o.ms);
        }
    }

    pub(super) fn publish_status(&mut self) {
        let mut status = NodeStatus::of(
            &self.raw.raft,
            self.node_id,
            &self.addrs,
            self.machine.meta().applied_index,
            &self.pressure,
        );
        status.removed_members = self.removed_members.clone();
        status.removed = self.removed.clone();
        status.incarnation = self.incarnation.get();
        status.clock_skew = self.skew.map(|s| s.to_string());
        self.status_tx.send_if_modified(|s| {
            if s.leader_id != status.leader_id {
                metrics::counter!(crate::metrics::LEADER_CHANGES).increment(1);
            }
            if *s != status {
                *s = status;
                true
            } else {
                false
            }
        });
    }
}

/// `breaker_opened` and `breaker_closed` events, from the breakers before
/// and after an applied range (every node logs them as it applies).
pub(super) fn log_breaker_changes(
    before: &std::collections::BTreeMap<
        crate::machine::breaker::Scope,
        crate::machine::breaker::Breaker,
    >,
    after: &std::collections::BTreeMap<
        crate::machine::breaker::Scope,
        crate::machine::breaker::Breaker,
    >,
) {
    use crate::machine::breaker::BreakerState;
    if before.is_empty() && after.is_empty() {
        return;
    }
    let state = |m: &std::collections::BTreeMap<_, crate::machine::breaker::Breaker>, s| {
        m.get(s).map_or(BreakerState::Closed, |b| b.state)
    };
    for scope in before.keys().chain(after.keys()) {
        let (was, is) = (state(before, scope), state(after, scope));
        if was == is {
            continue;
        }
        let (queue, tenant, class) = scope;
        match is {
            BreakerState::Open => {
                tracing::warn!(event = "breaker_opened", %queue, %tenant, %class, "circuit breaker opened: this tenant's jobs in this queue are held")
            }
            BreakerState::HalfOpen => {
                tracing::info!(event = "breaker_half_open", %queue, %tenant, %class, "circuit breaker half-open: one job goes through")
            }
            BreakerState::Closed => {
                tracing::info!(event = "breaker_closed", %queue, %tenant, %class, was = was.as_str(), "circuit breaker closed")
            }
        }
    }
}
