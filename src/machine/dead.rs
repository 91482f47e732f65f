//! Dead letters and stuck leases, as operators act on them: replay dead
//! jobs, remove them, take back leases. Each command names its jobs (the
//! API picks them from a read), and acts only on those still in the state
//! it expects, so a command applied after things moved changes only what
//! it should.

use super::*;

impl Machine {
    /// Applies a [`Command::Replay`].
    pub(super) fn replay(&mut self, now: u64, ids: &[JobId]) -> Result<Outcome, MachineError> {
        let mut replayed = Vec::new();
        for &id in ids {
            let Some((mut job, payload)) = self.load(id)? else {
                continue;
            };
            if job.state != JobState::Dead {
                continue;
            }
            self.unplace(&job);
            job.state = JobState::Ready;
            job.run_at_ms = now;
            job.finished_at_ms = 0;
            // Retries count afresh; the attempt number (the lease fence)
            // goes on.
            job.labels.insert(
                crate::job::RETRY_BASE_LABEL.into(),
                job.attempts.to_string(),
            );
            job.record(now, EventKind::Replayed);
            self.run_finished(now, &job, None)?;
            self.place(&job);
            self.put_job(&job, &payload);
            replayed.push(id);
        }
        Ok(Outcome::Replayed(replayed))
    }

    /// Applies a [`Command::PurgeDead`]. The jobs' time-index records stay
    /// until retention removes them (it skips jobs that are gone).
    pub(super) fn purge_dead(&mut self, ids: &[JobId]) -> Result<Outcome, MachineError> {
        let mut removed = 0;
        for &id in ids {
            let Some((job, payload)) = self.load(id)? else {
                continue;
            };
            if job.state == JobState::Dead {
                self.remove_job(&job, &payload)?;
                removed += 1;
            }
        }
        Ok(Outcome::Removed(removed))
    }

    /// Applies a [`Command::Requeue`]: each lease still held at its
    /// attempt ends, and its job is ready again at once.
    pub(super) fn requeue(
        &mut self,
        now: u64,
        leases: &[(JobId, u32)],
        reason: &str,
    ) -> Result<Outcome, MachineError> {
        let mut requeued = Vec::new();
        for &(id, attempt) in leases {
            let (job, payload) = match self.fenced(id, attempt)? {
                Ok(loaded) => loaded,
                Err(_) => continue,
            };
            self.count_requeue(&job.queue, 1);
            self.lease_events.push(LeaseEvent {
                event: "queue_requeued",
                what: "requeued by an operator",
                job_id: id,
                queue: job.queue.clone(),
                worker: job
                    .lease
                    .as_ref()
                    .map(|l| l.worker.clone())
                    .unwrap_or_default(),
                attempt,
            });
            self.take_back(
                now,
                job,
                &payload,
                RequeuedBy::Operator {
                    reason: reason.to_string(),
                },
            )?;
            self.totals.requeued_stuck += 1;
            requeued.push(id);
        }
        Ok(Outcome::Requeued(requeued))
    }

    /// Ends a job's lease and makes it ready again (an expiry, or an
    /// operator's requeue); it waits from now.
    pub(super) fn take_back(
        &mut self,
        now: u64,
        mut job: Job,
        payload: &Payload,
        by: RequeuedBy,
    ) -> Result<(), MachineError> {
        self.unplace(&job);
        self.lease_ended(now, &mut job, None)?;
        let worker = job.lease.take().map(|l| l.worker).unwrap_or_default();
        job.state = JobState::Ready;
        job.run_at_ms = now;
        job.record(
            now,
            EventKind::Requeued {
                worker,
                attempt: job.attempts,
                by,
            },
        );
        self.place(&job);
        self.put_job(&job, payload);
        Ok(())
    }
}
