//! Jobs that run after others. A new job naming jobs in `after` (ids, or
//! earlier jobs of its own request) is `waiting` until each has succeeded,
//! kept out of the ready set so it costs the pick nothing. `E`+job+waiter
//! records who waits for whom (and an in-memory map of them, rebuilt on
//! open). When a job finishes, its waiters are weighed after the command:
//! one whose last dependency succeeded becomes ready; one whose dependency
//! ended dead or cancelled is cancelled too (or, with
//! `on_dependency_failure = "run"`, counts it as done), and its own waiters
//! follow, from a work list rather than by recursion.

use super::*;
use crate::job::{Dependency, AFTER_LABEL, ON_DEPENDENCY_FAILURE_LABEL};

fn dependent_key(dependency: JobId, waiter: JobId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = DEPENDENT;
    k[1..9].copy_from_slice(&dependency.to_be_bytes());
    k[9..].copy_from_slice(&waiter.to_be_bytes());
    k
}

fn runs_anyway(labels: &BTreeMap<String, String>) -> bool {
    labels
        .get(ON_DEPENDENCY_FAILURE_LABEL)
        .is_some_and(|v| v == "run")
}

impl Machine {
    pub(super) fn load_dependents(&mut self) -> Result<(), MachineError> {
        for item in self.tree.scan_prefix([DEPENDENT]) {
            let (k, _) = item?;
            let id = |r: std::ops::Range<usize>| {
                k.get(r)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| MachineError::Corrupt {
                        key: describe_key(&k),
                        reason: "a dependency record is not E, a job id and a job id".into(),
                    })
            };
            let (dependency, waiter) = (id(1..9)?, id(9..17)?);
            self.dependents
                .entry(dependency)
                .or_default()
                .insert(waiter);
        }
        Ok(())
    }

    /// Checks the `index`th job of an enqueue batch's dependencies before
    /// anything of the batch is applied: `@N` names an earlier job of the
    /// batch, an id a job that exists; both of the same tenant, and, unless
    /// the job runs anyway, not dead or cancelled already.
    pub(super) fn admit_dependencies(&self, index: usize, batch: &[NewJob]) -> Result<(), Refusal> {
        let job = &batch[index];
        if !job.labels.contains_key(AFTER_LABEL) {
            return Ok(());
        }
        let refuse = |reason: String| Refusal::BadDependency {
            position: index,
            reason,
        };
        for dep in Dependency::of(&job.labels) {
            match dep {
                Dependency::Earlier(p) => {
                    let Some(earlier) = batch.get(p).filter(|_| p < index) else {
                        return Err(refuse(format!(
                            "@{p} must name an earlier job of the same request (this is job {index})"
                        )));
                    };
                    if earlier.tenant != job.tenant {
                        return Err(refuse(format!("@{p} is a job of another tenant")));
                    }
                }
                Dependency::Job(id) => {
                    let dep = self
                        .load(id)
                        .ok()
                        .flatten()
                        .map(|(j, _)| j)
                        .filter(|j| j.tenant == job.tenant)
                        .ok_or_else(|| {
                            refuse(format!("job {id} does not exist (or is another tenant's)"))
                        })?;
                    let failed = matches!(dep.state, JobState::Dead | JobState::Cancelled);
                    if failed && !runs_anyway(&job.labels) {
                        return Err(refuse(format!(
                            "job {id} it would wait for is {} already; enqueue it with on_dependency_failure = \"run\" to run anyway",
                            dep.state
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Wires a new job (not placed yet) to the jobs it runs after;
    /// `batch` is what its batch enqueued so far. It is waiting if any is
    /// unfinished.
    pub(super) fn wire_dependencies(
        &mut self,
        job: &mut Job,
        batch: &[Enqueued],
    ) -> Result<(), MachineError> {
        if !job.labels.contains_key(AFTER_LABEL) {
            return Ok(());
        }
        let deps = Dependency::of(&job.labels);
        job.labels.remove(AFTER_LABEL);
        for dep in deps {
            let id = match dep {
                Dependency::Job(id) => id,
                // Admitted: an earlier job of the batch.
                Dependency::Earlier(p) => match batch.get(p) {
                    Some(e) => e.id,
                    None => continue,
                },
            };
            if job.after.contains(&id) {
                continue;
            }
            job.after.push(id);
            let state = self.load(id)?.map(|(j, _)| j.state);
            let failed = matches!(state, Some(JobState::Dead | JobState::Cancelled));
            let unfinished = state.is_some_and(|s| !s.is_finished());
            // An `@N` that named an idempotent duplicate may name a job
            // that failed before: the waiter is cancelled after the
            // command, as if it had failed now (unless it runs anyway).
            let failed_already = failed && !runs_anyway(&job.labels);
            if unfinished || failed_already {
                job.waiting_for += 1;
                self.put(dependent_key(id, job.id).to_vec(), Vec::new());
                self.dependents.entry(id).or_default().insert(job.id);
            }
            if let (true, Some(state)) = (failed_already, state) {
                self.dependencies_due.push((id, state));
            }
        }
        if job.waiting_for > 0 {
            job.state = JobState::Waiting;
        }
        Ok(())
    }

    /// After each command: the waiters of jobs that finished in it move on.
    pub(super) fn release_dependents(&mut self, now: u64) -> Result<(), MachineError> {
        while let Some((id, state)) = self.dependencies_due.pop() {
            let Some(waiters) = self.dependents.remove(&id) else {
                continue;
            };
            for waiter in waiters {
                self.delete(dependent_key(id, waiter).to_vec());
                let Some((mut job, payload)) = self.load(waiter)? else {
                    continue;
                };
                if job.state != JobState::Waiting {
                    continue;
                }
                if state == JobState::Succeeded || runs_anyway(&job.labels) {
                    self.unplace(&job);
                    job.waiting_for = job.waiting_for.saturating_sub(1);
                    if job.waiting_for == 0 {
                        job.record(now, EventKind::DependenciesMet);
                        job.run_at_ms = job.run_at_ms.max(now);
                        job.state = if job.run_at_ms > now {
                            JobState::Scheduled
                        } else {
                            JobState::Ready
                        };
                    }
                    self.place(&job);
                    self.put_job(&job, &payload);
                } else {
                    job.record(now, EventKind::DependencyFailed { job: id, state });
                    self.put_job(&job, &payload);
                    // Its own waiters follow through the work list.
                    self.cancel(now, waiter)?.ok();
                }
            }
        }
        Ok(())
    }
}
