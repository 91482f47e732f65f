//! Commands on leases, as workers and the leader's clock send them: lease,
//! held, heartbeat, complete, fail, and the tick that expires leases and
//! promotes delayed jobs.

use super::*;
use crate::policies::AfterFailure;

impl Machine {
    /// The jobs leased to `worker` now, as a lease hands them out. Changes
    /// nothing.
    pub(super) fn held(&mut self, worker: &str) -> Result<Vec<LeasedJob>, MachineError> {
        let Some(ids) = self.held_by.get(worker) else {
            return Ok(Vec::new());
        };
        let ids: Vec<JobId> = ids.iter().copied().collect();
        let mut out = Vec::with_capacity(ids.len());
        let mut bytes = 0;
        for id in ids {
            // One answer stays well inside a gRPC message; leases past it
            // are not re-sent and run again after they expire.
            if bytes >= HELD_ANSWER_BYTES {
                break;
            }
            let (job, payload) = self.must_load(id)?;
            let Some(payload) = self.payload_for_lease(job.id, payload)? else {
                continue;
            };
            bytes += payload.len();
            out.push(LeasedJob { job, payload });
        }
        Ok(out)
    }

    /// A leased job's payload to hand out, or None when its file cannot be
    /// read on this node: the job is left out of the answer (its lease
    /// stays and expires, so it runs again, on a node whose copy reads)
    /// rather than stopping the node, which replays the same lease at every
    /// start. The lease itself is state and is the same on every node.
    fn payload_for_lease(
        &mut self,
        id: JobId,
        payload: Payload,
    ) -> Result<Option<bytes::Bytes>, MachineError> {
        match self.payload_bytes(id, payload) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(MachineError::Spill(e)) => {
                self.unreadable.push((id, e.to_string()));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Leases up to `max` ready jobs of `queues` to `worker`; a worker of
    /// a `version` gets none that a switch keeps from that version.
    pub(super) fn lease(
        &mut self,
        now: u64,
        worker: &str,
        version: Option<&str>,
        queues: &[String],
        max: u32,
    ) -> Result<Vec<LeasedJob>, MachineError> {
        let mut out = Vec::new();
        if self.is_quarantined(worker) {
            return Ok(out);
        }
        // A paused queue leases nothing; one at its concurrency limit
        // nothing more.
        let open: Vec<&String> = queues
            .iter()
            .filter(|q| !self.controls.paused.contains(*q))
            .collect();
        let mut touched = BTreeSet::new();
        let policies: Vec<(&String, crate::policies::QueuePolicy)> =
            open.iter().map(|q| (*q, self.policies.queue(q))).collect();
        self.release_rates(now);
        let mut parks = 0;
        while out.len() < max as usize && parks < Machine::max_parks() {
            let paused = &self.controls.paused_tenants;
            // The best of each queue's picks: highest priority after aging,
            // then oldest.
            let best = policies
                .iter()
                .filter(|(q, _)| self.below_concurrency_limit(q))
                .filter_map(|(q, policy)| {
                    let qi = self.queues.get(*q)?;
                    let canary = self.canary_rule(q);
                    let admits = |id: JobId, since: u64| {
                        canary.is_none_or(|rule| rule.admits(version, id, since, now))
                    };
                    // A switch of this worker's version off the whole queue
                    // holds every tenant: no need to walk them.
                    if version.is_some_and(|v| self.switched_off_queue(v, q)) {
                        return None;
                    }
                    let pick = qi.ready.pick_where(
                        |t| {
                            paused.contains(t)
                                || self.tenant_capped(t)
                                || (!self.breakers.is_empty()
                                    && breaker::holds(&self.breakers, q.as_str(), t))
                                || version.is_some_and(|v| self.switched_off(v, q, t))
                        },
                        canary.map(|_| &admits as &dyn Fn(JobId, u64) -> bool),
                        policy.aging_after_ms,
                        now,
                    )?;
                    Some(((pick.effective, pick.id), *q, pick.tenant, policy.sla_ms))
                })
                .min();
            let Some(((_, id), queue, tenant, sla_ms)) = best else {
                break;
            };
            let (mut job, payload) = self.must_load(id)?;
            if let Some(hold) = self.limit_hold(&job, now) {
                self.park(&job, hold);
                parks += 1;
                continue;
            }
            let weight = self.policies.weight(&tenant);
            if let Some(qi) = self.queues.get_mut(queue) {
                qi.ready.dispatched(&tenant, weight);
            }
            touched.insert(queue.clone());
            self.unplace(&job);
            job.attempts += 1;
            job.state = JobState::Leased;
            job.lease = Some(Lease {
                worker: worker.to_string(),
                attempt: job.attempts,
                deadline_ms: now.saturating_add(self.policies.heartbeat_timeout_ms(&job.queue)),
            });
            job.progress = None;
            job.record(
                now,
                EventKind::Leased {
                    worker: worker.to_string(),
                    attempt: job.attempts,
                },
            );
            let waited = now.saturating_sub(job.run_at_ms);
            self.tally.waited(&job.queue, &job.job_type, waited);
            if sla_ms.is_some_and(|sla| waited > sla) {
                job.record(now, EventKind::WaitedPastSla { waited_ms: waited });
                let missed = self.sla_missed.entry(job.queue.clone()).or_default();
                missed[usize::from(job.priority.clamp(1, PRIORITY_LOWEST) - 1)] += 1;
            }
            self.place(&job);
            self.took_lease(&job, now);
            self.run_leased(now, &job)?;
            if !self.breakers.is_empty() {
                self.breaker_leased(&job);
            }
            self.put_job(&job, &payload);
            if let Some(v) = version {
                if self.canary_rule(&job.queue).is_some() {
                    self.lease_versions
                        .insert((job.id, job.attempts), v.to_string());
                }
            }
            self.totals.dispatched += 1;
            self.tally
                .count(&job.queue, &job.job_type, tally::Counted::Dispatched);
            if let Some(payload) = self.payload_for_lease(job.id, payload)? {
                out.push(LeasedJob { job, payload });
            }
        }
        // The clocks are state every node must agree on: written with the
        // leases, once per queue per command.
        for queue in touched {
            self.store_clocks(&queue);
        }
        Ok(out)
    }

    fn below_concurrency_limit(&self, queue: &str) -> bool {
        let leased = self.queues.get(queue).map_or(0, |qi| qi.counts.leased);
        self.policies
            .concurrency_limit(queue)
            .is_none_or(|limit| leased < limit)
    }

    /// Loads a job and checks that `attempt` is its current lease.
    pub(super) fn fenced(
        &self,
        job_id: JobId,
        attempt: u32,
    ) -> Result<Result<(Job, Payload), Refusal>, MachineError> {
        let Some((job, payload)) = self.load(job_id)? else {
            return Ok(Err(Refusal::UnknownJob(job_id)));
        };
        let current = job.lease.as_ref().map_or(0, |l| l.attempt);
        if job.state != JobState::Leased || current != attempt {
            return Ok(Err(Refusal::StaleLease {
                job_id,
                attempt,
                current: job.attempts,
                state: job.state,
            }));
        }
        Ok(Ok((job, payload)))
    }

    pub(super) fn heartbeat(
        &mut self,
        now: u64,
        beat: &LeaseBeat,
    ) -> Result<Result<(), Refusal>, MachineError> {
        let (mut job, payload) = match self.fenced(beat.job_id, beat.attempt)? {
            Ok(loaded) => loaded,
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.unplace(&job);
        if let Some(lease) = job.lease.as_mut() {
            lease.deadline_ms = now.saturating_add(self.policies.heartbeat_timeout_ms(&job.queue));
        }
        if let Some(progress) = &beat.progress {
            // A new message is a step worth keeping; a moving fraction is not.
            if job
                .progress
                .as_ref()
                .is_none_or(|p| p.message != progress.message)
            {
                job.record(
                    now,
                    EventKind::Progress {
                        attempt: beat.attempt,
                        fraction: progress.fraction,
                        message: progress.message.clone(),
                    },
                );
            }
            job.progress = Some(progress.clone());
        }
        self.place(&job);
        self.put_job(&job, &payload);
        Ok(Ok(()))
    }

    pub(super) fn complete(
        &mut self,
        now: u64,
        c: &Completion,
        usage: Option<&crate::command::Usage>,
    ) -> Result<Result<(), Refusal>, MachineError> {
        let (mut job, payload) = match self.fenced(c.job_id, c.attempt)? {
            Ok(loaded) => loaded,
            // A worker sends a result again when it could not learn whether
            // the first reached the log; the repeat changes nothing.
            Err(Refusal::StaleLease {
                state: JobState::Succeeded,
                current,
                ..
            }) if current == c.attempt => return Ok(Ok(())),
            Err(refusal) => return Ok(Err(refusal)),
        };
        if !self.breakers.is_empty() {
            self.breaker_succeeded(&job);
        }
        self.unplace(&job);
        if !self.lease_versions.is_empty() {
            let ran = now.saturating_sub(find::state_since(&job));
            let cost = usage.map_or(0, |u| u.cost_micros);
            self.canary_observe(&job, c.attempt, true, ran, cost);
        }
        self.lease_ended(now, &mut job, usage)?;
        job.state = JobState::Succeeded;
        let worker = job.lease.take().map(|l| l.worker).unwrap_or_default();
        job.finished_at_ms = now;
        job.record(
            now,
            EventKind::Completed {
                worker,
                attempt: c.attempt,
            },
        );
        self.place(&job);
        let record = self.put_job(&job, &payload);
        if !c.result.is_empty() {
            self.put(key(RESULT, job.id).to_vec(), c.result.to_vec());
        }
        let bytes = self.stored_bytes(record, job.id, &payload, c.result.len())?;
        self.finished(now, &job, bytes)?;
        self.totals.completed += 1;
        self.tally
            .count(&job.queue, &job.job_type, tally::Counted::Completed);
        self.shed_observe(now, &job.queue, true);
        Ok(Ok(()))
    }

    pub(super) fn fail(
        &mut self,
        now: u64,
        f: &Failure,
        usage: Option<&crate::command::Usage>,
    ) -> Result<Result<(), Refusal>, MachineError> {
        let (mut job, payload) = match self.fenced(f.job_id, f.attempt)? {
            Ok(loaded) => loaded,
            // A repeated failure report (see `complete`): the job failed at
            // this attempt and waits for its retry, or is dead.
            Err(Refusal::StaleLease {
                state: JobState::Scheduled | JobState::Dead,
                current,
                ..
            }) if current == f.attempt => return Ok(Ok(())),
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.unplace(&job);
        if !self.lease_versions.is_empty() {
            let ran = now.saturating_sub(find::state_since(&job));
            let cost = usage.map_or(0, |u| u.cost_micros);
            self.canary_observe(&job, f.attempt, false, ran, cost);
        }
        self.lease_ended(now, &mut job, usage)?;
        let worker = job.lease.take().map(|l| l.worker).unwrap_or_default();
        job.last_error_class = f.error_class.clone();
        job.last_error = f.message.clone();
        self.totals.failed += 1;
        // Counted where it failed, before an escalation moves it.
        let (queue, job_type) = (job.queue.clone(), job.job_type.clone());
        self.shed_observe(now, &queue, false);
        self.tally.count(
            &queue,
            &job_type,
            tally::Counted::Failed {
                class: &f.error_class,
            },
        );
        self.breaker_failed(now, &job, &f.error_class);
        let retry = self.policies.retry_for(&job.job_type);
        let then = match retry.after_failure(job.id, &f.error_class, job.retries_done()) {
            AfterFailure::Retry { delay_ms } => {
                // An immediate retry is ready now, not at the next tick.
                job.state = if delay_ms == 0 {
                    JobState::Ready
                } else {
                    JobState::Scheduled
                };
                job.run_at_ms = now.saturating_add(delay_ms);
                self.totals.retried += 1;
                AfterFailed::Retry {
                    at_ms: job.run_at_ms,
                }
            }
            AfterFailure::Exhausted { why } => match retry.escalate_to {
                Some(to) if to != job.queue => {
                    job.labels
                        .insert(crate::job::ESCALATED_FROM_LABEL.into(), job.queue.clone());
                    job.labels.insert(
                        crate::job::RETRY_BASE_LABEL.into(),
                        job.attempts.to_string(),
                    );
                    job.queue = to.clone();
                    job.state = JobState::Ready;
                    job.run_at_ms = now;
                    self.totals.escalated += 1;
                    AfterFailed::Escalated { to, why }
                }
                _ => {
                    job.state = JobState::Dead;
                    job.finished_at_ms = now;
                    self.totals.dead += 1;
                    AfterFailed::Dead { why }
                }
            },
        };
        let counted = match &then {
            AfterFailed::Retry { .. } => tally::Counted::Retried,
            AfterFailed::Escalated { .. } => tally::Counted::Escalated,
            AfterFailed::Dead { .. } => tally::Counted::Dead,
        };
        self.tally.count(&queue, &job_type, counted);
        job.record(
            now,
            EventKind::Failed {
                worker,
                attempt: f.attempt,
                class: f.error_class.clone(),
                then,
            },
        );
        self.place(&job);
        let record = self.put_job(&job, &payload);
        if job.state == JobState::Dead {
            let bytes = self.stored_bytes(record, job.id, &payload, 0)?;
            self.finished(now, &job, bytes)?;
        }
        Ok(Ok(()))
    }

    /// Gives every live lease a full heartbeat window from `now` (a new
    /// leader's first entry): while the cluster had no leader its workers
    /// could not heartbeat. Never shortens one.
    pub(super) fn renew_leases(&mut self, now: u64) -> Result<Outcome, MachineError> {
        let ids: Vec<JobId> = self.leases.iter().map(|&(_, id)| id).collect();
        for id in ids {
            let (mut job, payload) = self.must_load(id)?;
            let window = now.saturating_add(self.policies.heartbeat_timeout_ms(&job.queue));
            if job.lease.as_ref().is_none_or(|l| l.deadline_ms >= window) {
                continue;
            }
            self.unplace(&job);
            if let Some(lease) = job.lease.as_mut() {
                lease.deadline_ms = window;
            }
            self.place(&job);
            self.put_job(&job, &payload);
        }
        Ok(Outcome::Noop)
    }

    pub(super) fn tick(&mut self, now: u64) -> Result<Outcome, MachineError> {
        let mut expired = 0;
        // Past their execution timeout, however well they heartbeat: they
        // fail with class `timeout` under their retry policy.
        while let Some(&(at, id)) = self.exec_deadlines.first() {
            if at > now {
                break;
            }
            let (job, _) = self.must_load(id)?;
            let Some(lease) = job.lease.clone() else {
                // Indexed only while leased; a record without a lease is damage.
                self.exec_deadlines.remove(&(at, id));
                continue;
            };
            let ran = now.saturating_sub(find::state_since(&job));
            let failure = Failure {
                job_id: id,
                attempt: lease.attempt,
                error_class: "timeout".into(),
                message: format!("ran {ran} ms, past its timeout; the lease was revoked"),
            };
            self.fail(now, &failure, None)?.ok();
            self.totals.timed_out += 1;
            self.count_requeue(&job.queue, 2);
            self.lease_events.push(LeaseEvent {
                event: "queue_timeout",
                what: "execution timeout",
                job_id: id,
                queue: job.queue.clone(),
                worker: lease.worker.clone(),
                attempt: lease.attempt,
            });
            expired += 1;
        }
        while let Some(&(deadline, id)) = self.leases.first() {
            if deadline > now {
                break;
            }
            let (job, payload) = self.must_load(id)?;
            let worker = job
                .lease
                .as_ref()
                .map(|l| l.worker.clone())
                .unwrap_or_default();
            for event in ["queue_timeout", "queue_requeued"] {
                self.lease_events.push(LeaseEvent {
                    event,
                    what: "lease expired",
                    job_id: id,
                    queue: job.queue.clone(),
                    worker: worker.clone(),
                    attempt: job.attempts,
                });
            }
            self.count_requeue(&job.queue, 0);
            // It waits (for aging and the sla) from now, not from when it
            // first became ready.
            self.take_back(now, job, &payload, RequeuedBy::LeaseExpired)?;
            self.totals.requeued += 1;
            expired += 1;
        }
        let mut promoted = 0;
        while let Some(&(run_at, id)) = self.scheduled.first() {
            if run_at > now {
                break;
            }
            let (mut job, payload) = self.must_load(id)?;
            self.unplace(&job);
            job.state = JobState::Ready;
            self.place(&job);
            self.put_job(&job, &payload);
            promoted += 1;
        }
        self.release_rates(now);
        self.breakers_tick(now)?;
        self.uncap_tenants(now)?;
        Ok(Outcome::Ticked { expired, promoted })
    }
}
