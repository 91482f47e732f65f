//! Commands on jobs as producers and operators send them: enqueue and
//! cancel.

use super::*;

impl Machine {
    pub(super) fn enqueue(
        &mut self,
        now: u64,
        jobs: &[NewJob],
    ) -> Result<Vec<Enqueued>, MachineError> {
        let mut out = Vec::with_capacity(jobs.len());
        for new in jobs {
            let idem = (!new.idempotency_key.is_empty())
                .then(|| idempotency_key(&new.tenant, &new.queue, &new.idempotency_key));
            if let Some(k) = &idem {
                if let Some(v) = self.get(k)? {
                    let id = v
                        .as_slice()
                        .try_into()
                        .map(u64::from_be_bytes)
                        .map_err(|_| MachineError::Corrupt {
                            key: describe_key(k),
                            reason: "idempotency record is not a job id".into(),
                        })?;
                    out.push(Enqueued {
                        id,
                        duplicate: true,
                    });
                    continue;
                }
            }
            let id = self.meta.next_id;
            self.meta.next_id += 1;
            let run_at_ms = now.saturating_add(new.delay_ms);
            let mut job = Job {
                id,
                queue: new.queue.clone(),
                job_type: new.job_type.clone(),
                tenant: new.tenant.clone(),
                run_id: new.run_id.clone(),
                priority: new.priority,
                state: if new.delay_ms > 0 {
                    JobState::Scheduled
                } else {
                    JobState::Ready
                },
                attempts: 0,
                idempotency_key: new.idempotency_key.clone(),
                labels: new.labels.clone(),
                enqueued_at_ms: now,
                run_at_ms,
                lease: None,
                progress: None,
                last_error_class: String::new(),
                last_error: String::new(),
                finished_at_ms: 0,
                events: Vec::new(),
                cost_micros: 0,
                usage: BTreeMap::new(),
                lease_ms: 0,
                after: Vec::new(),
                waiting_for: 0,
            };
            job.record(now, EventKind::Enqueued);
            self.wire_dependencies(&mut job, &out)?;
            if let Some(k) = idem {
                self.index_idempotency(now, id, &k);
                self.put(k, id.to_be_bytes().to_vec());
            }
            let payload = if new.payload.len() <= INLINE_PAYLOAD_MAX {
                Payload::Inline(new.payload.clone())
            } else {
                self.put(key(PAYLOAD, id).to_vec(), new.payload.to_vec());
                Payload::Apart
            };
            self.place(&job);
            self.put_job(&job, &payload);
            self.run_enqueued(now, &job)?;
            self.totals.enqueued += 1;
            self.tally
                .count(&job.queue, &job.job_type, tally::Counted::Enqueued);
            self.tally.arrived(now, &job.queue);
            out.push(Enqueued {
                id,
                duplicate: false,
            });
        }
        Ok(out)
    }

    pub(super) fn cancel(
        &mut self,
        now: u64,
        id: JobId,
    ) -> Result<Result<JobState, Refusal>, MachineError> {
        let Some((mut job, payload)) = self.load(id)? else {
            return Ok(Err(Refusal::UnknownJob(id)));
        };
        if job.state.is_finished() {
            return Ok(Err(Refusal::Finished {
                job_id: id,
                state: job.state,
            }));
        }
        let was = job.state;
        self.unplace(&job);
        if was == JobState::Leased {
            // The time it held counts against its run, as any lease's end.
            self.lease_ended(now, &mut job, None)?;
        }
        job.state = JobState::Cancelled;
        job.lease = None;
        job.finished_at_ms = now;
        job.record(now, EventKind::Cancelled { was });
        self.place(&job);
        let record = self.put_job(&job, &payload);
        // Only an unfinished job can be cancelled: it has no result.
        let bytes = self.stored_bytes(record, job.id, &payload, 0)?;
        self.finished(now, &job, bytes)?;
        self.totals.cancelled += 1;
        self.tally
            .count(&job.queue, &job.job_type, tally::Counted::Cancelled);
        Ok(Ok(was))
    }

    /// Applies a [`Command::PurgeJobs`]: cancels each job that still waits
    /// (ready or scheduled) in `queue`; one leased, finished or moved since
    /// the API listed it is left as it is.
    pub(super) fn purge_jobs(
        &mut self,
        now: u64,
        queue: &str,
        ids: &[JobId],
    ) -> Result<Outcome, MachineError> {
        let mut cancelled = 0;
        for &id in ids {
            let waiting = self.load(id)?.is_some_and(|(job, _)| {
                job.queue == queue && matches!(job.state, JobState::Ready | JobState::Scheduled)
            });
            if waiting && self.cancel(now, id)?.is_ok() {
                cancelled += 1;
            }
        }
        Ok(Outcome::Purged {
            jobs: cancelled,
            idempotency_records: 0,
            more: false,
        })
    }

    /// Applies a [`Command::PurgeQueue`]: cancels up to `limit` matching
    /// waiting jobs, ready ones first (their age counted from when they
    /// became ready; scheduled ones from their enqueue). Scheduled jobs are
    /// looked for among the first few hundred delayed jobs of all queues
    /// only, so a slice stays cheap; `more` says a further slice may find
    /// more. Scheduled jobs are found through the
    /// delayed-job index, which spans queues, so at most a bounded number of
    /// them is looked at per slice.
    pub(super) fn purge_queue(
        &mut self,
        now: u64,
        queue: &str,
        filter: &crate::command::PurgeFilter,
        limit: u32,
    ) -> Result<Outcome, MachineError> {
        let limit = limit as usize;
        let old_enough = |enqueued_at: u64| {
            filter
                .older_than_ms
                .is_none_or(|age| now.saturating_sub(enqueued_at) >= age)
        };
        let tenant_ok = |t: &str| filter.tenant.as_deref().is_none_or(|want| want == t);
        let mut ids: Vec<JobId> = Vec::new();
        if filter.state.is_none_or(|s| s == JobState::Ready) {
            if let Some(qi) = self.queues.get(queue) {
                for (_, tenant, id, since) in qi.ready.iter() {
                    if ids.len() > limit {
                        break;
                    }
                    if tenant_ok(tenant) && old_enough(since) {
                        ids.push(id);
                    }
                }
            }
        }
        let has_scheduled = self
            .queues
            .get(queue)
            .is_some_and(|qi| qi.counts.scheduled > 0);
        if filter.state.is_none_or(|s| s == JobState::Scheduled)
            && has_scheduled
            && ids.len() <= limit
        {
            let budget = limit.saturating_mul(4).max(64);
            let candidates: Vec<JobId> = self
                .scheduled
                .iter()
                .map(|(_, id)| *id)
                .take(budget)
                .collect();
            for id in candidates {
                if ids.len() > limit {
                    break;
                }
                let job = self.must_load(id)?.0;
                if job.queue == queue && tenant_ok(&job.tenant) && old_enough(job.enqueued_at_ms) {
                    ids.push(id);
                }
            }
        }
        let more = ids.len() > limit;
        let mut cancelled = 0;
        for id in ids.into_iter().take(limit) {
            if self.cancel(now, id)?.is_ok() {
                cancelled += 1;
            }
        }
        Ok(Outcome::Purged {
            jobs: cancelled,
            idempotency_records: 0,
            more,
        })
    }
}
