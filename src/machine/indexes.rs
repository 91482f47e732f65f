//! The in-memory indexes scheduling reads (ready jobs by queue and
//! priority, delayed jobs and leases by due time, leases by worker) and the
//! counts by queue and state; rebuilt from the tree on open.

use super::*;

/// Jobs of one queue by state. `ready` is split by priority (index 0 is priority 1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Ready jobs by priority: index 0 is priority 1.
    pub ready: [u64; 5],
    /// Waiting for their time: delayed, or backing off before a retry.
    pub scheduled: u64,
    /// Held by a worker now.
    pub leased: u64,
    /// Succeeded, and not yet removed by retention.
    pub succeeded: u64,
    /// Dead-lettered, and not yet removed by retention.
    pub dead: u64,
    /// Cancelled, and not yet removed by retention.
    pub cancelled: u64,
    /// Waiting for the jobs they run after.
    #[serde(default)]
    pub waiting: u64,
}

impl QueueCounts {
    /// Ready jobs of every priority.
    pub fn ready_total(&self) -> u64 {
        self.ready.iter().sum()
    }

    /// Jobs not yet finished.
    pub fn pending(&self) -> u64 {
        self.ready_total() + self.scheduled + self.leased + self.waiting
    }

    pub(super) fn slot(&mut self, state: JobState, priority: u8) -> &mut u64 {
        match state {
            JobState::Ready => &mut self.ready[usize::from(priority.clamp(1, PRIORITY_LOWEST) - 1)],
            JobState::Scheduled => &mut self.scheduled,
            JobState::Leased => &mut self.leased,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Dead => &mut self.dead,
            JobState::Cancelled => &mut self.cancelled,
            JobState::Waiting => &mut self.waiting,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct QueueIndex {
    /// Ready jobs by priority, tenant, age, and the tenants' fair-share
    /// clocks (`S`+queue).
    pub(super) ready: scheduler::ReadySet,
    /// The clock changes kept since the clocks' record (layout 4).
    pub(super) clock_log: fair_clocks::ClockLog,
    pub(super) counts: QueueCounts,
    /// Jobs in `ready` by run key (`tenant\0run`), for the blocked counts
    /// of held runs.
    pub(super) run_ready: HashMap<String, u64>,
}

impl QueueIndex {
    /// Counts a job of run `run` (none if empty) into or out of `ready`.
    pub(super) fn count_run_ready(&mut self, tenant: &str, run: &str, add: bool) {
        if run.is_empty() {
            return;
        }
        let key = runs::run_key(tenant, run);
        if add {
            *self.run_ready.entry(key).or_default() += 1;
        } else if let Some(n) = self.run_ready.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.run_ready.remove(&key);
            }
        }
    }
}

impl Machine {
    /// The earliest time at which a [`Command::Tick`] would change something.
    pub fn next_due_ms(&self) -> Option<u64> {
        let s = self.scheduled.first().map(|(at, _)| *at);
        let l = self.leases.first().map(|(at, _)| *at);
        let e = self.exec_deadlines.first().map(|(at, _)| *at);
        [s, l, e, self.next_release_ms(), self.next_breaker_ms()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Works out every leased job's execution deadline again (new
    /// policies may set other timeouts).
    pub(super) fn reindex_timeouts(&mut self) -> Result<(), MachineError> {
        self.exec_deadlines.clear();
        self.exec_of.clear();
        let leased: Vec<JobId> = self.leases.iter().map(|(_, id)| *id).collect();
        for id in leased {
            let (job, _) = self.must_load(id)?;
            if let Some(t) = self.policies.timeout_ms(&job) {
                let at = find::state_since(&job).saturating_add(t);
                self.exec_deadlines.insert((at, id));
                self.exec_of.insert(id, at);
            }
        }
        Ok(())
    }

    /// Ready jobs by tenant, over all queues.
    pub fn ready_by_tenant(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for qi in self.queues.values() {
            for (t, n) in qi.ready.by_tenant() {
                *out.entry(t.to_string()).or_default() += n;
            }
        }
        out
    }

    /// Adds a job to the indexes and counts of its state.
    pub(super) fn place(&mut self, job: &Job) {
        let qi = self.queues.entry(job.queue.clone()).or_default();
        *qi.counts.slot(job.state, job.priority) += 1;
        match job.state {
            JobState::Ready => self.place_ready(job),
            JobState::Dead => {
                let key = (job.queue.clone(), job.last_error_class.clone());
                *self.dead_classes.entry(key).or_default() += 1;
            }
            JobState::Scheduled => {
                self.scheduled.insert((job.run_at_ms, job.id));
            }
            JobState::Leased => {
                self.count_lease(job);
                if let Some(t) = self.policies.timeout_ms(job) {
                    let at = find::state_since(job).saturating_add(t);
                    self.exec_deadlines.insert((at, job.id));
                    self.exec_of.insert(job.id, at);
                }
                if let Some(l) = &job.lease {
                    self.leases.insert((l.deadline_ms, job.id));
                    match self.held_by.get_mut(&l.worker) {
                        Some(held) => {
                            held.insert(job.id);
                        }
                        None => {
                            self.held_by
                                .insert(l.worker.clone(), BTreeSet::from([job.id]));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Removes a job from the indexes of its state; the inverse of `place`.
    pub(super) fn unplace(&mut self, job: &Job) {
        if let Some(qi) = self.queues.get_mut(&job.queue) {
            let slot = qi.counts.slot(job.state, job.priority);
            *slot = slot.saturating_sub(1);
        }
        match job.state {
            JobState::Ready => self.unplace_ready(job),
            JobState::Dead => {
                let key = (job.queue.clone(), job.last_error_class.clone());
                if let Some(n) = self.dead_classes.get_mut(&key) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.dead_classes.remove(&key);
                    }
                }
            }
            JobState::Scheduled => {
                self.scheduled.remove(&(job.run_at_ms, job.id));
            }
            JobState::Leased => {
                self.uncount_lease(job);
                if let Some(at) = self.exec_of.remove(&job.id) {
                    self.exec_deadlines.remove(&(at, job.id));
                }
                if let Some(l) = &job.lease {
                    self.leases.remove(&(l.deadline_ms, job.id));
                    if let Some(held) = self.held_by.get_mut(&l.worker) {
                        held.remove(&job.id);
                        if held.is_empty() {
                            self.held_by.remove(&l.worker);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}
