//! Recurring jobs in the machine: the last slot each schedule fired and
//! whether it is paused (`Z`), so a failover or a restart neither skips nor
//! doubles a slot. Which slots are due is the leader's to say (it has the
//! clock); the machine fires each slot at most once.

use super::*;
use crate::command::ScheduleAction;
use crate::policies::JobTemplate;

/// What the log knows of one schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The last slot fired (ms since the epoch; 0: none yet).
    pub last_slot_ms: u64,
    /// Paused by an operator: its slots pass without enqueueing.
    pub paused: bool,
    /// Jobs it enqueued (slots and triggers).
    pub fired: u64,
}

pub(super) type Schedules = BTreeMap<String, ScheduleState>;

fn job_of(t: &JobTemplate, name: &str, slot_ms: Option<u64>) -> NewJob {
    let mut labels = t.labels.clone();
    labels.insert("drover.schedule".into(), name.to_string());
    if let Some(slot) = slot_ms {
        labels.insert("drover.slot".into(), slot.to_string());
    }
    NewJob {
        queue: t.queue.clone(),
        job_type: t.job_type.clone(),
        tenant: t.tenant.clone(),
        run_id: String::new(),
        priority: t.priority,
        payload: t.payload.clone(),
        idempotency_key: String::new(),
        delay_ms: 0,
        labels,
    }
}

impl Machine {
    /// The schedules' states, for the leader's look at what is due.
    pub fn schedules(&self) -> &BTreeMap<String, ScheduleState> {
        &self.schedules
    }

    fn save_schedules(&mut self) {
        self.put(SCHEDULES_KEY.to_vec(), encode(&self.schedules));
    }

    /// Enqueues a schedule's job, admitted as any enqueue is.
    fn enqueue_scheduled(
        &mut self,
        now: u64,
        name: &str,
        slot_ms: Option<u64>,
    ) -> Result<Outcome, MachineError> {
        let Some(policy) = self.policies.schedules.get(name) else {
            return Ok(Outcome::Rejected(Refusal::UnknownSchedule {
                schedule: name.to_string(),
            }));
        };
        let jobs = vec![job_of(&policy.job, name, slot_ms)];
        if let Err(refusal) = self.admit(now, &jobs) {
            return Ok(Outcome::Rejected(refusal));
        }
        let ids = self.enqueue(now, &jobs)?;
        self.schedules.entry(name.to_string()).or_default().fired += 1;
        Ok(Outcome::Enqueued(ids))
    }

    /// Applies a [`Command::Fire`].
    pub(super) fn fire(
        &mut self,
        now: u64,
        name: &str,
        slot_ms: u64,
        enqueue: bool,
    ) -> Result<Outcome, MachineError> {
        if !self.policies.schedules.contains_key(name) {
            return Ok(Outcome::Noop);
        }
        // A slot ahead of the log's time (a leader whose clock jumped
        // forward) would silence the schedule until then: ignored.
        if slot_ms > now.saturating_add(crate::schedules::GRACE_MS) {
            return Ok(Outcome::Noop);
        }
        let state = self.schedules.entry(name.to_string()).or_default();
        if slot_ms <= state.last_slot_ms {
            return Ok(Outcome::Noop);
        }
        state.last_slot_ms = slot_ms;
        let paused = state.paused;
        let outcome = if enqueue && !paused {
            self.enqueue_scheduled(now, name, Some(slot_ms))?
        } else {
            Outcome::Noop
        };
        self.save_schedules();
        Ok(outcome)
    }

    /// Applies a [`Command::Schedule`].
    pub(super) fn schedule_action(
        &mut self,
        now: u64,
        name: &str,
        action: ScheduleAction,
    ) -> Result<Outcome, MachineError> {
        if !self.policies.schedules.contains_key(name) {
            return Ok(Outcome::Rejected(Refusal::UnknownSchedule {
                schedule: name.to_string(),
            }));
        }
        let outcome = match action {
            ScheduleAction::Trigger => self.enqueue_scheduled(now, name, None)?,
            ScheduleAction::Pause | ScheduleAction::Resume => {
                let paused = action == ScheduleAction::Pause;
                let state = self.schedules.entry(name.to_string()).or_default();
                let changed = state.paused != paused;
                state.paused = paused;
                Outcome::Controlled(if changed {
                    vec![name.to_string()]
                } else {
                    Vec::new()
                })
            }
        };
        self.save_schedules();
        Ok(outcome)
    }
}
