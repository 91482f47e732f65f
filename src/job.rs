//! The job: what the cluster stores about one unit of work, its states, and
//! the validation every new job passes before it becomes a command.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Ids are assigned by the state machine from a counter in its own state, so
/// every node assigns the same id to the same job and ids sort by enqueue order.
pub type JobId = u64;

/// Highest priority; served first.
pub const PRIORITY_HIGHEST: u8 = 1;
/// Lowest priority.
pub const PRIORITY_LOWEST: u8 = 5;
/// Priority of a job that names none.
pub const PRIORITY_DEFAULT: u8 = 3;
/// Events kept on a job's timeline; older ones are dropped so a job that is
/// retried many times keeps a bounded record.
pub const TIMELINE_MAX: usize = 32;
/// The name used for job type and tenant when the producer gives none.
pub const DEFAULT_NAME: &str = "default";

/// Labels drover keeps itself, all under `drover.`; producers set the limit
/// ones through the job's `concurrency_key`, `rate_key` and limit fields.
pub const RESERVED_LABEL_PREFIX: &str = "drover.";
/// The job's concurrency key: at most N jobs of one key are leased at once.
pub const CONCURRENCY_KEY_LABEL: &str = "drover.concurrency_key";
/// The job's own limit for its concurrency key (else `[limits."PREFIX"]`).
pub const CONCURRENCY_LIMIT_LABEL: &str = "drover.concurrency_limit";
/// The job's rate key: at most N leases of one key per period.
pub const RATE_KEY_LABEL: &str = "drover.rate_key";
/// The job's own rate for its rate key, as `N/PERIOD`.
pub const RATE_LIMIT_LABEL: &str = "drover.rate";
/// The queue an exhausted job was escalated from (`on_exhausted = "queue:NAME"`).
pub const ESCALATED_FROM_LABEL: &str = "drover.escalated_from";
/// The attempts a job had when it was replayed or escalated: its retries
/// count from there (its attempt number, the lease fence, never goes back).
pub const RETRY_BASE_LABEL: &str = "drover.retry_base";
/// The job's own execution timeout in ms (else its type's, else its queue's).
pub const TIMEOUT_LABEL: &str = "drover.timeout_ms";
/// The name of the token whose producer enqueued the job.
pub const OWNER_LABEL: &str = "drover.token";
/// The jobs a new job runs after, as its request named them: ids, or
/// `@N` for the Nth job of the same request (resolved into `Job::after`).
pub const AFTER_LABEL: &str = "drover.after";
/// `run`: the job runs even if a job it waits for ends dead or cancelled
/// (else it is cancelled).
pub const ON_DEPENDENCY_FAILURE_LABEL: &str = "drover.on_dependency_failure";
/// The W3C trace context the producer enqueued it in (`traceparent`),
/// handed to its workers with each lease.
pub const TRACEPARENT_LABEL: &str = "drover.traceparent";

pub use crate::wire::trace::valid_traceparent;
/// The run (`tenant/run`) a replayed run's jobs came from.
pub const REPLAY_OF_LABEL: &str = "drover.replay_of";
/// Most jobs one job may wait for.
pub const MAX_AFTER: usize = 64;

/// A job a new job waits for, as its request names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// A job enqueued earlier, by id.
    Job(JobId),
    /// The Nth job (from 0) of the same request.
    Earlier(usize),
}

impl Dependency {
    /// Reads one entry of a request's `after`: a job id, or `@N`.
    pub fn parse(s: &str) -> Result<Dependency, String> {
        let bad = || format!("{s:?} is not a job id or @N (the Nth job, from 0, of this request)");
        match s.strip_prefix('@') {
            Some(n) => n.parse().map(Dependency::Earlier).map_err(|_| bad()),
            None => s
                .parse()
                .ok()
                .filter(|id| *id > 0)
                .map(Dependency::Job)
                .ok_or_else(bad),
        }
    }

    /// The dependencies a new job's labels name (validated on enqueue).
    pub fn of(labels: &BTreeMap<String, String>) -> Vec<Dependency> {
        labels
            .get(AFTER_LABEL)
            .map(|a| {
                a.split(',')
                    .filter_map(|d| Dependency::parse(d.trim()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The per-key limits a job is under, as its labels say.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JobKeys<'a> {
    /// The key and the job's own limit, if it set one.
    pub concurrency: Option<(&'a str, Option<u32>)>,
    /// The rate key and the job's own rate, if it set one.
    pub rate: Option<(&'a str, Option<Rate>)>,
}

impl<'a> JobKeys<'a> {
    /// Reads the limit labels (validated on enqueue; a value that does not
    /// parse counts as not set).
    pub fn of(labels: &'a BTreeMap<String, String>) -> JobKeys<'a> {
        if labels.is_empty() {
            return JobKeys::default();
        }
        let get = |k: &str| labels.get(k).map(String::as_str);
        JobKeys {
            concurrency: get(CONCURRENCY_KEY_LABEL)
                .map(|k| (k, get(CONCURRENCY_LIMIT_LABEL).and_then(|l| l.parse().ok()))),
            rate: get(RATE_KEY_LABEL)
                .map(|k| (k, get(RATE_LIMIT_LABEL).and_then(|r| Rate::parse(r).ok()))),
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its run_at or for a retry backoff to pass.
    Scheduled,
    /// Waiting for a worker.
    Ready,
    /// Held by a worker under a lease.
    Leased,
    /// Completed by a worker.
    Succeeded,
    /// Failed more often than its retry policy allows.
    Dead,
    /// Cancelled before it finished (by a request, or because a job it
    /// waited for failed).
    Cancelled,
    /// Waiting for the jobs it runs after (`after`) to succeed.
    Waiting,
}

impl JobState {
    /// The state's name in the APIs and the CLI (`ready`, `dead`...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Ready => "ready",
            JobState::Leased => "leased",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
            JobState::Waiting => "waiting",
        }
    }

    /// A finished job never changes state again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as a producer submits it, after validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The queue it joins.
    pub queue: String,
    /// What kind of job it is: retry policies and metrics go by it.
    pub job_type: String,
    /// Whose job it is: fair shares, budgets and tenant drains go by it.
    pub tenant: String,
    /// The run it belongs to; empty: none.
    pub run_id: String,
    /// 1 (highest) to 5 (lowest).
    pub priority: u8,
    /// What the worker runs it on.
    pub payload: Bytes,
    /// Names the job within its tenant and queue: an enqueue with a key in
    /// use gets that job's id back; empty: none.
    pub idempotency_key: String,
    /// How long (ms) after the enqueue it becomes ready; 0: at once.
    pub delay_ms: u64,
    /// Its labels, drover's own `drover.` ones (limits, dependencies,
    /// timeout) among them.
    pub labels: BTreeMap<String, String>,
}

/// The current lease on a job. `attempt` is the fence: only messages naming
/// this attempt may heartbeat, complete or fail the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker holding it.
    pub worker: String,
    /// Which lease of the job this is (1 for the first).
    pub attempt: u32,
    /// When it expires (log time, ms since the epoch) unless a heartbeat
    /// extends it.
    pub deadline_ms: u64,
}

/// What a worker last said about a long job's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// How far along the job is, 0 to 1.
    pub fraction: f32,
    /// What the worker says it is doing.
    pub message: String,
}

/// One line of a job's timeline: what happened, at the time of the log
/// entry that did it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// Log time of the entry that did it (ms since the epoch).
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to a job. Typed, so the API can filter and render them
/// and tools can read the worker, attempt and error class without parsing
/// English.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// It was enqueued.
    Enqueued,
    /// A worker took it under a lease.
    Leased {
        /// The worker that took it.
        worker: String,
        /// The lease's attempt.
        attempt: u32,
    },
    /// It waited in the ready set longer than its queue's sla.
    WaitedPastSla {
        /// How long it waited (ms).
        waited_ms: u64,
    },
    /// The worker reported a new progress message (a heartbeat that only
    /// moves the fraction updates the job's progress, not its timeline).
    Progress {
        /// The lease's attempt.
        attempt: u32,
        /// How far along, 0 to 1.
        fraction: f32,
        /// What the worker said.
        message: String,
    },
    /// It succeeded.
    Completed {
        /// The worker that completed it.
        worker: String,
        /// The lease's attempt.
        attempt: u32,
    },
    /// An attempt failed: its worker said so, or it ran past its execution
    /// timeout (class `timeout`).
    Failed {
        /// The worker that held it.
        worker: String,
        /// The lease's attempt.
        attempt: u32,
        /// The failure's error class.
        class: String,
        /// What became of the job.
        then: AfterFailed,
    },
    /// Its lease ended without a result and it is ready again.
    Requeued {
        /// The worker whose lease ended.
        worker: String,
        /// The lease's attempt.
        attempt: u32,
        /// Why it was taken back.
        by: RequeuedBy,
    },
    /// It was cancelled.
    Cancelled {
        /// The state it was in.
        was: JobState,
    },
    /// Taken out of the dead letters to run again.
    Replayed,
    /// Every job it waited for succeeded (or ended, with
    /// `on_dependency_failure = "run"`): it is ready.
    DependenciesMet,
    /// A job it waited for ended dead or cancelled: it is cancelled.
    DependencyFailed {
        /// The job it waited for.
        job: JobId,
        /// How that job ended.
        state: JobState,
    },
    /// An event written by a drover whose timeline was text (layout 2).
    Note(String),
}

/// What became of a job after a failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AfterFailed {
    /// It runs again later.
    Retry {
        /// When it is ready again (log time, ms since the epoch).
        at_ms: u64,
    },
    /// Out of retries, it moved to the queue its retry policy escalates to.
    Escalated {
        /// That queue.
        to: String,
        /// The rule that ended its retries.
        why: Exhausted,
    },
    /// Out of retries, it is dead.
    Dead {
        /// The rule that ended its retries.
        why: Exhausted,
    },
}

/// Which retry rule gave a failed job no more attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exhausted {
    /// Its error class is in the policy's `no_retry`.
    NoRetryClass,
    /// The policy has a `retry_on` list without its error class.
    NotInRetryOn,
    /// It used every retry its policy allows.
    OutOfRetries {
        /// The policy's `max_retries`.
        max_retries: u32,
    },
}

/// Why a lease was taken back without a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequeuedBy {
    /// The worker stopped heartbeating.
    LeaseExpired,
    /// An operator (`drover queues clear-stuck`), with their reason.
    Operator {
        /// Why, as the operator said.
        reason: String,
    },
}

impl EventKind {
    /// The event's name in the API (`leased`, `failed`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Enqueued => "enqueued",
            EventKind::Leased { .. } => "leased",
            EventKind::WaitedPastSla { .. } => "waited_past_sla",
            EventKind::Progress { .. } => "progress",
            EventKind::Completed { .. } => "completed",
            EventKind::Failed { .. } => "failed",
            EventKind::Requeued { .. } => "requeued",
            EventKind::Cancelled { .. } => "cancelled",
            EventKind::Replayed => "replayed",
            EventKind::DependenciesMet => "dependencies_met",
            EventKind::DependencyFailed { .. } => "dependency_failed",
            EventKind::Note(_) => "note",
        }
    }

    /// The worker that held the lease the event is about.
    pub fn worker(&self) -> Option<&str> {
        match self {
            EventKind::Leased { worker, .. }
            | EventKind::Completed { worker, .. }
            | EventKind::Failed { worker, .. }
            | EventKind::Requeued { worker, .. } => Some(worker),
            _ => None,
        }
    }

    /// The attempt the event is about.
    pub fn attempt(&self) -> Option<u32> {
        match self {
            EventKind::Leased { attempt, .. }
            | EventKind::Progress { attempt, .. }
            | EventKind::Completed { attempt, .. }
            | EventKind::Failed { attempt, .. }
            | EventKind::Requeued { attempt, .. } => Some(*attempt),
            _ => None,
        }
    }

    /// The error class of a failure.
    pub fn error_class(&self) -> Option<&str> {
        match self {
            EventKind::Failed { class, .. } => Some(class),
            _ => None,
        }
    }
}

impl fmt::Display for Exhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exhausted::NoRetryClass => f.write_str("its class is a no_retry class"),
            Exhausted::NotInRetryOn => f.write_str("its class is not in retry_on"),
            Exhausted::OutOfRetries { max_retries } => write!(f, "after {max_retries} retries"),
        }
    }
}

/// One line of English, as the CLI prints it.
impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::Enqueued => f.write_str("enqueued"),
            EventKind::Leased { worker, attempt } => {
                write!(f, "leased by {worker} (attempt {attempt})")
            }
            EventKind::WaitedPastSla { waited_ms } => {
                write!(f, "waited {waited_ms} ms, past the queue's sla")
            }
            EventKind::Progress {
                fraction, message, ..
            } => write!(f, "progress {:.0}%: {message}", fraction * 100.0),
            EventKind::Completed { worker, attempt } => {
                write!(f, "completed by {worker} (attempt {attempt})")
            }
            EventKind::Failed {
                worker,
                attempt,
                class,
                then,
            } => {
                write!(f, "failed with {class} on {worker} (attempt {attempt}); ")?;
                match then {
                    AfterFailed::Retry { at_ms } => write!(
                        f,
                        "retry scheduled at {}",
                        humantime::format_rfc3339_millis(
                            std::time::UNIX_EPOCH + std::time::Duration::from_millis(*at_ms)
                        )
                    ),
                    AfterFailed::Escalated { to, why } => {
                        write!(f, "escalated to queue {to} ({why})")
                    }
                    AfterFailed::Dead { why } => write!(f, "dead-lettered ({why})"),
                }
            }
            EventKind::Requeued { worker, by, .. } => match by {
                RequeuedBy::LeaseExpired => write!(f, "lease expired (worker {worker}); requeued"),
                RequeuedBy::Operator { reason } => {
                    write!(
                        f,
                        "taken from {worker} and requeued by an operator: {reason}"
                    )
                }
            },
            EventKind::Cancelled { was } => write!(f, "cancelled while {was}"),
            EventKind::Replayed => f.write_str("replayed from the dead letters"),
            EventKind::DependenciesMet => f.write_str("the jobs it waited for are done: ready"),
            EventKind::DependencyFailed { job, state } => {
                write!(f, "dependency {job} failed ({state}): cancelled")
            }
            EventKind::Note(text) => f.write_str(text),
        }
    }
}

/// Everything the cluster stores about a job except its payload and result,
/// which live under their own keys so state changes do not rewrite them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Assigned by the machine, in enqueue order.
    pub id: JobId,
    /// The queue it is in (the one it was escalated to, if it was).
    pub queue: String,
    /// What kind of job it is: retry policies and metrics go by it.
    pub job_type: String,
    /// Whose job it is.
    pub tenant: String,
    /// The run it belongs to; empty: none.
    pub run_id: String,
    /// 1 (highest) to 5 (lowest).
    pub priority: u8,
    /// Where it is in its life.
    pub state: JobState,
    /// How many times the job has been leased.
    pub attempts: u32,
    /// The key it was enqueued with; empty: none.
    pub idempotency_key: String,
    /// Its labels, drover's own `drover.` ones among them.
    pub labels: BTreeMap<String, String>,
    /// When it was enqueued (log time, ms since the epoch).
    pub enqueued_at_ms: u64,
    /// When it became or becomes ready: its enqueue plus its delay, a
    /// retry's time, or when it was made ready again (a requeue, a replay,
    /// an escalation); its wait counts from here.
    pub run_at_ms: u64,
    /// The lease it is under; None unless it is leased.
    pub lease: Option<Lease>,
    /// What a worker last said of its progress (cleared by each new lease).
    pub progress: Option<Progress>,
    /// The error class of its last failure; empty if it never failed.
    pub last_error_class: String,
    /// The message of its last failure; empty if it never failed.
    pub last_error: String,
    /// When it finished (log time, ms since the epoch); 0 until then.
    pub finished_at_ms: u64,
    /// Its timeline, oldest first, at most [`TIMELINE_MAX`] events.
    pub events: Vec<JobEvent>,
    /// What its workers reported it cost, over all its attempts, in
    /// millionths of a USD.
    pub cost_micros: u64,
    /// Named usage its workers reported (`tokens_in`...), summed.
    pub usage: BTreeMap<String, u64>,
    /// Time its leases were held, summed.
    pub lease_ms: u64,
    /// Jobs it waits for: it becomes ready when all of them succeed.
    pub after: Vec<JobId>,
    /// How many of `after` have not finished yet.
    pub waiting_for: u32,
}

impl Job {
    /// Retries used since the job was enqueued, replayed or escalated,
    /// counting the attempt that just failed as the first try.
    pub fn retries_done(&self) -> u32 {
        let base = self
            .labels
            .get(RETRY_BASE_LABEL)
            .and_then(|b| b.parse::<u32>().ok())
            .unwrap_or(0);
        self.attempts.saturating_sub(base).saturating_sub(1)
    }

    /// Appends to the timeline. Past [`TIMELINE_MAX`] events the oldest
    /// progress report goes first, then the oldest event, so a job that
    /// reports often or is retried many times keeps a bounded record with
    /// its failures in it.
    pub fn record(&mut self, at_ms: u64, kind: EventKind) {
        if self.events.len() >= TIMELINE_MAX {
            let drop = self
                .events
                .iter()
                .position(|e| matches!(e.kind, EventKind::Progress { .. }))
                .unwrap_or(0);
            self.events.remove(drop);
        }
        self.events.push(JobEvent { at_ms, kind });
    }
}

/// Why a new job was refused before it reached the log. Each names the field
/// and the rule, so the producer can fix the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidJob {
    /// A field breaks a rule.
    #[error("field `{field}`: {reason}")]
    Field {
        /// The request field.
        field: &'static str,
        /// The rule, and how the value breaks it.
        reason: String,
    },
    /// The payload is larger than `limits.max_payload_bytes`.
    #[error("field `payload`: {size} bytes is over the limit of {limit} bytes (limits.max_payload_bytes)")]
    PayloadTooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

impl InvalidJob {
    /// The request field that was wrong.
    pub fn field(&self) -> &'static str {
        match self {
            InvalidJob::Field { field, .. } => field,
            InvalidJob::PayloadTooLarge { .. } => "payload",
        }
    }
}

fn field(field: &'static str, reason: impl Into<String>) -> InvalidJob {
    InvalidJob::Field {
        field,
        reason: reason.into(),
    }
}

/// Checks a queue name: `[A-Za-z0-9_.-]{1,128}`.
pub fn validate_queue(queue: &str) -> Result<(), InvalidJob> {
    validate_name("queue", queue)
}

/// Names of queues, job types and tenants share one alphabet so they are safe
/// in metrics labels, URLs and file names.
pub fn validate_name(name: &'static str, value: &str) -> Result<(), InvalidJob> {
    if value.is_empty() {
        return Err(field(name, "must not be empty"));
    }
    if value.len() > 128 {
        return Err(field(
            name,
            format!("{} characters is over the limit of 128", value.len()),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(field(
            name,
            format!("{value:?} contains {c:?}; use only A-Z a-z 0-9 _ . -"),
        ));
    }
    Ok(())
}

/// The raw fields of a job as they arrive from gRPC, HTTP or the CLI.
#[derive(Debug, Clone, Default)]
pub struct JobRequest {
    /// The queue it joins; required.
    pub queue: String,
    /// The job type; empty: `default`.
    pub job_type: String,
    /// The tenant; empty: `default`.
    pub tenant: String,
    /// The run it belongs to; empty: none.
    pub run_id: String,
    /// 0 means the default priority.
    pub priority: u32,
    /// What the worker runs it on.
    pub payload: Bytes,
    /// Names the job within its tenant and queue so a repeated enqueue
    /// gets it back; empty: none. At most 256 bytes.
    pub idempotency_key: String,
    /// How long (ms) before it is ready; 0: at once.
    pub delay_ms: u64,
    /// Free-form labels, at most 32; `drover.` ones are drover's own.
    pub labels: BTreeMap<String, String>,
    /// At most N jobs of this key are leased at once (N: the job's
    /// `concurrency_limit`, else the `[limits."PREFIX"]` of the key).
    pub concurrency_key: String,
    /// 0: the config's limit for the key.
    pub concurrency_limit: u32,
    /// At most N leases of this key per period.
    pub rate_key: String,
    /// `N/PERIOD` (`10/s`); empty: the config's rate for the key.
    pub rate_limit: String,
    /// Ms a lease of the job may run, however well its worker heartbeats;
    /// 0: its type's or queue's `timeout`.
    pub timeout_ms: u64,
    /// Jobs it runs after: ids, or `@N` for the Nth job of this request.
    pub after: Vec<String>,
    /// `cancel` (default) or `run`: what happens to it when a job it waits
    /// for ends dead or cancelled.
    pub on_dependency_failure: String,
    /// The W3C trace context it is enqueued in; empty: none.
    pub traceparent: String,
}

/// Limits a node enforces on new jobs.
#[derive(Debug, Clone, Copy)]
pub struct JobLimits {
    /// Largest payload accepted, in bytes (`limits.max_payload_bytes`).
    pub max_payload_bytes: usize,
}

impl JobRequest {
    /// Turns raw fields into a [`NewJob`], filling defaults and refusing what
    /// the cluster would not be able to serve.
    pub fn validate(self, limits: JobLimits) -> Result<NewJob, InvalidJob> {
        validate_queue(&self.queue)?;
        let job_type = or_default(self.job_type);
        validate_name("job_type", &job_type)?;
        let tenant = or_default(self.tenant);
        validate_name("tenant", &tenant)?;
        if !self.run_id.is_empty() {
            validate_name("run_id", &self.run_id)?;
        }
        let priority = match self.priority {
            0 => PRIORITY_DEFAULT,
            p @ 1..=5 => p as u8,
            p => {
                return Err(field(
                    "priority",
                    format!("{p} is outside 1 (highest) to 5 (lowest)"),
                ))
            }
        };
        if self.payload.len() > limits.max_payload_bytes {
            return Err(InvalidJob::PayloadTooLarge {
                size: self.payload.len(),
                limit: limits.max_payload_bytes,
            });
        }
        if self.idempotency_key.len() > 256 {
            return Err(field("idempotency_key", "longer than 256 bytes"));
        }
        if self.labels.len() > 32 {
            return Err(field(
                "labels",
                format!("{} labels is over the limit of 32", self.labels.len()),
            ));
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.len() > 128 || v.len() > 1024 {
                return Err(field(
                    "labels",
                    format!("label {k:?}: keys must be 1-128 bytes, values at most 1024"),
                ));
            }
            if k.starts_with(RESERVED_LABEL_PREFIX) && k != OWNER_LABEL {
                return Err(field(
                    "labels",
                    format!("label {k:?}: labels beginning with `drover.` are drover's own; set limits with the concurrency_key, concurrency_limit, rate_key and rate_limit fields"),
                ));
            }
        }
        let mut labels = self.labels;
        let limit_fields = [
            (
                "concurrency_key",
                CONCURRENCY_KEY_LABEL,
                self.concurrency_key,
            ),
            ("rate_key", RATE_KEY_LABEL, self.rate_key),
        ];
        for (name, label, key) in limit_fields {
            if key.is_empty() {
                continue;
            }
            if key.len() > 256 || key.chars().any(char::is_control) {
                return Err(field(
                    name,
                    "must be at most 256 bytes with no control characters",
                ));
            }
            labels.insert(label.into(), key);
        }
        if self.concurrency_limit > 0 {
            if !labels.contains_key(CONCURRENCY_KEY_LABEL) {
                return Err(field(
                    "concurrency_limit",
                    "needs a concurrency_key: the limit counts jobs of one key",
                ));
            }
            labels.insert(
                CONCURRENCY_LIMIT_LABEL.into(),
                self.concurrency_limit.to_string(),
            );
        }
        if !self.rate_limit.is_empty() {
            if !labels.contains_key(RATE_KEY_LABEL) {
                return Err(field(
                    "rate_limit",
                    "needs a rate_key: the rate counts leases of one key",
                ));
            }
            let rate = Rate::parse(&self.rate_limit).map_err(|e| field("rate_limit", e))?;
            labels.insert(RATE_LIMIT_LABEL.into(), rate.to_string());
        }
        crate::wire::duration_ms(
            std::time::Duration::from_millis(self.delay_ms),
            crate::wire::MAX_DELAY,
        )
        .map_err(|reason| field("delay_ms", format!("{} ms is {reason}", self.delay_ms)))?;
        if self.timeout_ms > 0 {
            crate::wire::duration_ms(
                std::time::Duration::from_millis(self.timeout_ms),
                crate::wire::MAX_DELAY,
            )
            .map_err(|reason| field("timeout_ms", format!("{} ms is {reason}", self.timeout_ms)))?;
            labels.insert(TIMEOUT_LABEL.into(), self.timeout_ms.to_string());
        }
        if self.after.len() > MAX_AFTER {
            return Err(field(
                "after",
                format!("{} jobs is over the limit of {MAX_AFTER}", self.after.len()),
            ));
        }
        if !self.after.is_empty() {
            let deps = self
                .after
                .iter()
                .map(|d| Dependency::parse(d.trim()).map(|_| d.trim().to_string()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| field("after", e))?;
            labels.insert(AFTER_LABEL.into(), deps.join(","));
        }
        if !self.traceparent.is_empty() {
            if !valid_traceparent(&self.traceparent) {
                return Err(field(
                    "traceparent",
                    format!(
                        "{:?} is not a W3C traceparent: give 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lower case",
                        self.traceparent
                    ),
                ));
            }
            labels.insert(TRACEPARENT_LABEL.into(), self.traceparent);
        }
        match self.on_dependency_failure.as_str() {
            "" | "cancel" => {}
            "run" => {
                if self.after.is_empty() {
                    return Err(field(
                        "on_dependency_failure",
                        "needs `after`: it says what happens when a job this one waits for fails",
                    ));
                }
                labels.insert(ON_DEPENDENCY_FAILURE_LABEL.into(), "run".into());
            }
            other => {
                return Err(field(
                    "on_dependency_failure",
                    format!("{other:?} is not cancel or run"),
                ))
            }
        }
        Ok(NewJob {
            queue: self.queue,
            job_type,
            tenant,
            run_id: self.run_id,
            priority,
            payload: self.payload,
            idempotency_key: self.idempotency_key,
            delay_ms: self.delay_ms,
            labels,
        })
    }
}

fn or_default(s: String) -> String {
    if s.is_empty() {
        DEFAULT_NAME.to_string()
    } else {
        s
    }
}

/// At most `count` per `period_ms`: `"10/s"`, `"100/m"`, `"5/30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Most leases in one period.
    pub count: u32,
    /// The period (ms).
    pub period_ms: u64,
}

impl Rate {
    /// Parses `N/UNIT` or `N/DURATION` (`10/s`, `100/m`, `3/h`, `5/30s`).
    pub fn parse(s: &str) -> Result<Rate, String> {
        let bad = || {
            format!("{s:?} is not a rate; write N/PERIOD such as \"10/s\", \"100/m\" or \"5/30s\"")
        };
        let (count, period) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        let period_ms = match period {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                let d = humantime::parse_duration(other).map_err(|_| bad())?;
                u64::try_from(d.as_millis()).map_err(|_| bad())?
            }
        };
        if count == 0 || period_ms == 0 {
            return Err(format!(
                "{s:?}: the count and the period must be more than 0"
            ));
        }
        if period_ms > 366 * 86_400_000 {
            return Err(format!("{s:?}: the period is over a year"));
        }
        Ok(Rate { count, period_ms })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let period = crate::wire::config_duration(std::time::Duration::from_millis(self.period_ms));
        write!(f, "{}/{period}", self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: JobLimits = JobLimits {
        max_payload_bytes: 16,
    };

    fn req(queue: &str) -> JobRequest {
        JobRequest {
            queue: queue.into(),
            ..Default::default()
        }
    }

    #[test]
    fn fills_defaults() {
        let job = req("emails").validate(LIMITS).unwrap();
        assert_eq!(job.priority, PRIORITY_DEFAULT);
        assert_eq!(job.tenant, "default");
        assert_eq!(job.job_type, "default");
    }

    #[test]
    fn refuses_bad_fields_naming_them() {
        let err = req("bad queue").validate(LIMITS).unwrap_err();
        assert!(err.to_string().contains("`queue`"), "{err}");
        let err = req("").validate(LIMITS).unwrap_err();
        assert!(err.to_string().contains("must not be empty"), "{err}");
        let err = req(&"q".repeat(129)).validate(LIMITS).unwrap_err();
        assert!(err.to_string().contains("128"), "{err}");
        let mut r = req("q");
        r.priority = 6;
        assert!(r
            .validate(LIMITS)
            .unwrap_err()
            .to_string()
            .contains("`priority`"));
        let mut r = req("q");
        r.payload = Bytes::from(vec![0; 17]);
        assert_eq!(
            r.validate(LIMITS).unwrap_err(),
            InvalidJob::PayloadTooLarge {
                size: 17,
                limit: 16
            }
        );
    }
}
