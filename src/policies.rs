//! Policies: the settings apply depends on (leases, retries, queue limits,
//! shedding, tenant weights). They are replicated state: the leader proposes
//! a `SetPolicies` command when its config file says
//! otherwise, and the machine reads only what the log gave it, so every node
//! applies the same rules whatever its own file says.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Name of the queue and tenant entries that hold defaults.
pub const DEFAULTS: &str = "*";

/// Serialized as JSON inside the log and the `P` record, so a later
/// drover can add policies (with defaults) and still read the earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policies {
    /// `[jobs]`: the lease timeout and the retry defaults of every queue.
    pub jobs: JobPolicies,
    /// By queue name; `*` holds the defaults of queues not named.
    pub queues: BTreeMap<String, QueuePolicy>,
    /// By tenant name.
    pub tenants: BTreeMap<String, TenantPolicy>,
    /// Most jobs not finished (ready, scheduled, leased) in the whole
    /// cluster; enqueues past it are refused. 0: no limit.
    pub max_pending: u64,
    /// Recurring jobs by name.
    pub schedules: BTreeMap<String, SchedulePolicy>,
    /// `[limits."PREFIX"]`: limits of jobs whose concurrency or rate key
    /// starts with the prefix (the longest prefix wins).
    pub keys: BTreeMap<String, KeyLimit>,
    /// `[retry.JOB_TYPE]`; `*` holds the defaults of types not named (and
    /// `jobs` the defaults of those).
    pub retry: BTreeMap<String, RetryPolicy>,
    /// `[budgets]`: every run's limits unless its tenant sets its own.
    pub budgets: Budgets,
}

/// A run's limits (and a tenant's daily cap). Money is kept in millionths
/// of a USD so sums are exact and equal on every node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Budgets {
    /// What the run's jobs may cost, summed, in millionths of a USD
    /// (None: no limit).
    pub cost_micros: Option<u64>,
    /// Lease time, summed over the run's jobs.
    pub time_ms: Option<u64>,
    /// Leases granted.
    pub attempts: Option<u64>,
    /// A tenant's cost per UTC day.
    pub daily_cost_cap_micros: Option<u64>,
}

impl Budgets {
    /// `self`'s limits where set, else `fallback`'s.
    pub fn or(self, fallback: Budgets) -> Budgets {
        Budgets {
            cost_micros: self.cost_micros.or(fallback.cost_micros),
            time_ms: self.time_ms.or(fallback.time_ms),
            attempts: self.attempts.or(fallback.attempts),
            daily_cost_cap_micros: self
                .daily_cost_cap_micros
                .or(fallback.daily_cost_cap_micros),
        }
    }
}

/// Most USD one report or budget may name: far above any real bill, far
/// below what millionths in a u64 hold.
pub const MAX_USD: f64 = 1e9;

/// Whether `usd` is a sum of money drover keeps.
pub fn check_usd(usd: f64) -> Result<(), String> {
    if usd.is_finite() && (0.0..=MAX_USD).contains(&usd) {
        Ok(())
    } else {
        Err(format!("must be a number of USD from 0 to {MAX_USD}"))
    }
}

/// USD to millionths, rounded; call with a value [`check_usd`] accepted.
pub fn usd_to_micros(usd: f64) -> u64 {
    (usd.clamp(0.0, MAX_USD) * 1e6).round() as u64
}

/// Millionths to USD, for people.
pub fn micros_to_usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// How failed jobs of one type run again. Unset fields take the `*`
/// entry's, then `[jobs]`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Retries after the first attempt before the job is exhausted.
    pub max_retries: Option<u32>,
    /// How the delay grows from one retry to the next.
    pub backoff: Option<Backoff>,
    /// Delay before the first retry (ms).
    pub base_delay_ms: Option<u64>,
    /// Longest delay before a retry (ms).
    pub max_delay_ms: Option<u64>,
    /// If not empty, only these error classes are retried.
    pub retry_on: Vec<String>,
    /// These error classes end the job at once.
    pub no_retry: Vec<String>,
    /// Where an exhausted job goes: a queue to escalate to, or (None) dead.
    pub escalate_to: Option<String>,
    /// How long a lease of a job of this type may run.
    pub timeout_ms: Option<u64>,
}

/// How the delay before a retry grows (`base` is the base delay).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// base, 2 base, 4 base...
    #[default]
    Exponential,
    /// base, 2 base, 3 base...
    Linear,
    /// base every time.
    Fixed,
    /// At once.
    Immediate,
}

impl Backoff {
    /// Reads a config's `backoff` value.
    pub fn parse(s: &str) -> Result<Backoff, String> {
        match s {
            "exponential" => Ok(Backoff::Exponential),
            "linear" => Ok(Backoff::Linear),
            "fixed" => Ok(Backoff::Fixed),
            "immediate" => Ok(Backoff::Immediate),
            other => Err(format!(
                "{other:?} is not exponential, linear, fixed or immediate"
            )),
        }
    }

    /// The name the config gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backoff::Exponential => "exponential",
            Backoff::Linear => "linear",
            Backoff::Fixed => "fixed",
            Backoff::Immediate => "immediate",
        }
    }
}

/// A job type's retry policy with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt before the job is exhausted.
    pub max_retries: u32,
    /// How the delay grows from one retry to the next.
    pub backoff: Backoff,
    /// Delay before the first retry (ms), before jitter.
    pub base_delay_ms: u64,
    /// Longest delay before a retry (ms), before jitter.
    pub max_delay_ms: u64,
    /// If not empty, only these error classes are retried.
    pub retry_on: Vec<String>,
    /// These error classes end the job at once.
    pub no_retry: Vec<String>,
    /// Where an exhausted job goes: a queue to escalate to, or (None) dead.
    pub escalate_to: Option<String>,
}

/// What happens to a job that just failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Run again after this delay.
    Retry {
        /// Ms from now, jitter included (0: ready at once).
        delay_ms: u64,
    },
    /// No more attempts; `why` says which rule ended it.
    Exhausted {
        /// The rule that ended it.
        why: crate::job::Exhausted,
    },
}

impl Retry {
    /// Delay before retry number `retry` (1-based), capped, plus up to a
    /// quarter of jitter derived from the job id so jobs that failed
    /// together do not all come back in the same millisecond.
    pub fn backoff_ms(&self, job_id: u64, retry: u32) -> u64 {
        let n = u64::from(retry.max(1));
        let delay = match self.backoff {
            Backoff::Immediate => return 0,
            Backoff::Fixed => self.base_delay_ms,
            Backoff::Linear => self.base_delay_ms.saturating_mul(n),
            Backoff::Exponential => self.base_delay_ms.saturating_mul(1u64 << (n - 1).min(32)),
        }
        .min(self.max_delay_ms);
        let jitter_range = delay / 4 + 1;
        delay + crate::mix::jitter(job_id, retry) % jitter_range
    }

    /// After a failure of `class` that used up `retries_done` retries
    /// (0 on the first attempt's failure).
    pub fn after_failure(&self, job_id: u64, class: &str, retries_done: u32) -> AfterFailure {
        if self.no_retry.iter().any(|c| c == class) {
            return AfterFailure::Exhausted {
                why: crate::job::Exhausted::NoRetryClass,
            };
        }
        if !self.retry_on.is_empty() && !self.retry_on.iter().any(|c| c == class) {
            return AfterFailure::Exhausted {
                why: crate::job::Exhausted::NotInRetryOn,
            };
        }
        if retries_done >= self.max_retries {
            return AfterFailure::Exhausted {
                why: crate::job::Exhausted::OutOfRetries {
                    max_retries: self.max_retries,
                },
            };
        }
        AfterFailure::Retry {
            delay_ms: self.backoff_ms(job_id, retries_done + 1),
        }
    }
}

/// The limits of one key prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyLimit {
    /// Jobs of one concurrency key leased at once.
    pub concurrency: Option<u32>,
    /// Leases of one rate key per period.
    pub rate: Option<Rate>,
}

pub use crate::job::Rate;

/// A queue's canary: `percent` of its jobs (chosen from the job id) go
/// only to workers of `version`, the rest only to others; a canary job
/// that waited `max_wait_ms` goes to the others too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryRule {
    /// The worker version the canary jobs go to.
    pub version: String,
    /// 0 to 100.
    pub percent: u8,
    /// How long (ms) a canary job waits for a worker of `version` before
    /// the others may take it too.
    pub max_wait_ms: u64,
}

impl CanaryRule {
    /// Whether the rule is how an ended canary of the config file stands,
    /// not a canary being tried: at 0% after an abort (the version takes
    /// none of the queue's jobs), at 100% with no wait after a promotion
    /// (every worker takes every job). See `api::canary`.
    pub fn is_end_of_config(&self) -> bool {
        self.percent == 0 || (self.percent == 100 && self.max_wait_ms == 0)
    }
}

/// A measure a canary is judged on (`abort_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryMetric {
    /// Successes over results, against the control's.
    SuccessRate,
    /// Run time, against the control's.
    Duration,
    /// Reported cost, against the control's.
    Cost,
}

impl CanaryMetric {
    /// The name its comparison carries (`Judged::metric`).
    pub fn judged_name(self) -> &'static str {
        match self {
            CanaryMetric::SuccessRate => "success_rate_delta",
            CanaryMetric::Duration => "duration_ratio",
            CanaryMetric::Cost => "cost_ratio",
        }
    }
}

/// How a queue's canary is judged, and what the leader does on a verdict
/// (`[queues.NAME.canary]`'s `abort_on`, thresholds, `hold`,
/// `promote_after`). Kept apart from [`CanaryRule`], which log entries carry
/// in a fixed encoding: policies travel as JSON, so fields can be added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanaryJudge {
    /// Measures whose "worse" verdict, held for `hold_ms`, makes the
    /// leader abort the canary. Empty: it only reports.
    pub abort_on: Vec<CanaryMetric>,
    /// Worse when the canary's success rate is more than this below the
    /// control's (0.05: five points).
    pub max_success_drop: f64,
    /// Worse when the canary's mean run time is more than this times the
    /// control's.
    pub max_duration_ratio: f64,
    /// Worse when the canary's mean cost is more than this times the
    /// control's.
    pub max_cost_ratio: f64,
    /// Results each side needs before any verdict.
    pub min_samples: u64,
    /// How long (ms) a verdict must stand before the leader acts on it.
    pub hold_ms: u64,
    /// Promote (end the rule, the version takes jobs like any other) once
    /// every measure has been "ok" this long (ms). None: never by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promote_after_ms: Option<u64>,
}

impl Default for CanaryJudge {
    fn default() -> Self {
        CanaryJudge {
            abort_on: Vec::new(),
            max_success_drop: 0.05,
            max_duration_ratio: 1.10,
            max_cost_ratio: 1.20,
            min_samples: 30,
            hold_ms: 60_000,
            promote_after_ms: None,
        }
    }
}

/// `[schedules.NAME]`: a cron expression and the job each slot enqueues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulePolicy {
    /// `sec min hour day month weekday` (seconds optional).
    pub cron: String,
    /// The time zone the expression is read in (`UTC` unless set).
    pub timezone: String,
    /// A slot missed by more than the grace (the cluster was down) runs
    /// once when the cluster is back; otherwise it is skipped.
    pub run_once: bool,
    /// The job each slot enqueues.
    pub job: JobTemplate,
}

/// The job a schedule enqueues (validated when the config was read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTemplate {
    /// The queue it joins.
    pub queue: String,
    /// Its job type.
    pub job_type: String,
    /// Its tenant.
    pub tenant: String,
    /// 1 (highest) to 5 (lowest).
    pub priority: u8,
    /// What the worker runs it on.
    pub payload: bytes::Bytes,
    /// Its labels, the limit keys' `drover.` ones among them; each job
    /// also gets `drover.schedule` (and `drover.slot` when a slot fired it).
    pub labels: BTreeMap<String, String>,
}

/// How jobs of every queue are leased and retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobPolicies {
    /// A lease not extended by a heartbeat within this long (ms) expires
    /// and its job is ready again; a queue may set its own.
    pub heartbeat_timeout_ms: u64,
    /// Retries after the first attempt, for job types that set none.
    pub max_retries: u32,
    /// Delay before the first retry (ms), for job types that set none.
    pub retry_base_delay_ms: u64,
    /// Longest delay before a retry (ms), for job types that set none.
    pub retry_max_delay_ms: u64,
}

impl Default for JobPolicies {
    fn default() -> Self {
        JobPolicies {
            heartbeat_timeout_ms: 30_000,
            max_retries: 3,
            retry_base_delay_ms: 1_000,
            retry_max_delay_ms: 300_000,
        }
    }
}

/// A queue's limits. Unset fields take the `*` entry's, then no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueuePolicy {
    /// Most jobs waiting (ready and scheduled) in the queue; enqueues past
    /// it are refused.
    pub max_depth: Option<u64>,
    /// Most jobs of the queue leased at once, cluster-wide.
    pub concurrency_limit: Option<u64>,
    /// This queue's lease timeout, instead of `jobs.heartbeat_timeout`.
    pub heartbeat_timeout_ms: Option<u64>,
    /// Priority -> fraction of `max_depth` above which enqueues of that
    /// priority are refused, so lower priorities are shed first.
    pub shed: BTreeMap<u8, f64>,
    /// A job that waited longer than this before its lease counts in
    /// `drover_sla_missed_total` and says so in its timeline.
    pub sla_ms: Option<u64>,
    /// A ready job counts one priority level higher per this much waiting.
    pub aging_after_ms: Option<u64>,
    /// `[queues.NAME.breaker]`: fields not set take the `*` entry's.
    pub breaker: Option<QueueBreaker>,
    /// How long a lease of a job of this queue may run.
    pub timeout_ms: Option<u64>,
    /// A worker whose failures are at least this fraction of its results
    /// in `quarantine_window_ms` gets no new leases (off unless set).
    pub quarantine_failure_rate: Option<f64>,
    /// The window (ms) a worker's results are counted over
    /// ([`QUARANTINE_WINDOW_MS`] unless set).
    pub quarantine_window_ms: Option<u64>,
    /// Results in the window before the rate counts.
    pub quarantine_min_jobs: Option<u64>,
    /// How long a quarantined worker must stay away: reconnecting after it
    /// lifts the quarantine.
    pub quarantine_for_ms: Option<u64>,
    /// What else happens to a quarantined worker: `restart` asks it to
    /// finish what it holds and exit, for its supervisor to start a fresh
    /// one, which leases again. Unset: it stays connected, idle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_action: Option<QuarantineAction>,
    /// The workers the queue wants (see [`crate::pools`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<crate::pools::WorkerPool>,
    /// `[queues.NAME.canary]`; a rule set at run time goes first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryRule>,
    /// Shed on the queue's health, not only its depth: new jobs are
    /// refused while its oldest ready job waited longer, or its recent
    /// failure rate is higher, than this says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shed_when: Option<ShedWhen>,
    /// Job types shed first: refused at half of each limit (`max_depth`,
    /// `shed_when`'s wait and failure rate) while others are still taken.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shed_types: Vec<String>,
    /// How the queue's canary (of the config or set at run time) is judged
    /// and ended; defaults when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_judge: Option<CanaryJudge>,
}

/// `[queues.NAME] shed_when = { oldest_ready = "60s", failure_rate = 0.2 }`,
/// judged by the machine from replicated state, so every node refuses
/// alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShedWhen {
    /// Refuse while the queue's oldest ready job has waited at least this
    /// long (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_ready_ms: Option<u64>,
    /// Refuse while at least this share of the queue's results in
    /// `window_ms` failed (with `min_results` of them at least).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// The window results count over (ms).
    pub window_ms: u64,
    /// Results in the window before the failure rate counts.
    pub min_results: u64,
}

/// The window `shed_when`'s failure rate counts over, unless set.
pub const SHED_WINDOW_MS: u64 = 5 * 60_000;

impl Default for ShedWhen {
    fn default() -> Self {
        ShedWhen {
            oldest_ready_ms: None,
            failure_rate: None,
            window_ms: SHED_WINDOW_MS,
            min_results: 20,
        }
    }
}

/// How long a canary job waits for a canary worker when no rule says.
pub const CANARY_MAX_WAIT_MS: u64 = 5 * 60_000;

/// What a quarantine does besides keeping leases from the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineAction {
    /// It stays connected, idle, until released or reconnected after
    /// `quarantine_for`.
    Keep,
    /// It is asked to finish what it holds and exit (Shutdown); the fresh
    /// process its supervisor starts leases again.
    Restart,
}

/// When a worker is quarantined, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuarantinePolicy {
    /// Share of its results (0 to 1) that must have failed.
    pub failure_rate: f64,
    /// The window (ms) its results are counted over.
    pub window_ms: u64,
    /// Results in the window before the rate counts.
    pub min_jobs: u64,
    /// How long (ms) a quarantined worker must stay away: reconnecting
    /// after it lifts the quarantine.
    pub for_ms: u64,
    /// Whether the worker is asked to exit, to be replaced.
    pub restart: bool,
}

/// The window a worker's recent results are counted over when no queue of
/// its sets `quarantine_window`.
pub const QUARANTINE_WINDOW_MS: u64 = 5 * 60_000;
const QUARANTINE_MIN_JOBS: u64 = 10;
const QUARANTINE_FOR_MS: u64 = 10 * 60_000;

/// A queue's circuit-breaker settings as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueBreaker {
    /// false turns the queue's breakers off.
    pub enabled: Option<bool>,
    /// Failures of one class within the window that open a breaker.
    pub threshold: Option<u32>,
    /// The window (ms) failures are counted over.
    pub window_ms: Option<u64>,
    /// How long (ms) an open breaker stays open before letting one job
    /// through.
    pub cooldown_ms: Option<u64>,
}

/// A queue's breakers, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Failures of one class within the window that open it.
    pub threshold: u32,
    /// The window (ms) failures are counted over.
    pub window_ms: u64,
    /// How long it stays open before letting one job through.
    pub cooldown_ms: u64,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            threshold: 5,
            window_ms: 60_000,
            cooldown_ms: 30_000,
        }
    }
}

/// `[tenants.NAME]`: a tenant's share of dispatches and its budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantPolicy {
    /// Share of dispatches against other tenants of the same priority.
    pub weight: u32,
    /// Its runs' limits, and its daily cost cap.
    pub budgets: Budgets,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        TenantPolicy {
            weight: 1,
            budgets: Budgets::default(),
        }
    }
}

/// The job an enqueue asks [`Policies::admit`] about.
#[derive(Debug, Clone, Copy)]
pub struct Admitted<'a> {
    /// Its queue.
    pub queue: &'a str,
    /// Its job type.
    pub job_type: &'a str,
    /// Its priority, 1 to 5.
    pub priority: u8,
}

/// What `shed_when` looks at, as the machine knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueHealth {
    /// How long (ms) the queue's oldest ready job has waited; None with
    /// none ready.
    pub oldest_wait_ms: Option<u64>,
    /// Results that succeeded in the window.
    pub succeeded: u64,
    /// Results that failed in the window.
    pub failed: u64,
}

/// Why an enqueue was refused by a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shed {
    /// The queue the job was for.
    pub queue: String,
    /// The job's priority.
    pub priority: u8,
    /// What the depth was measured against, for the message.
    pub depth: u64,
    /// The limit reached.
    pub limit: u64,
    /// Which limit: `max_depth`, `shed`, `shed_when.oldest_ready` (depth
    /// and limit in seconds), `shed_when.failure_rate` (in percent) or
    /// `limits.max_pending`.
    pub what: &'static str,
}

/// How policies are written into a log entry or the `P` record.
pub mod as_json {
    use super::Policies;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes policies as one JSON string.
    pub fn serialize<S: Serializer>(p: &Policies, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::Policies::to_record_string(p))
    }

    /// Reads policies from a JSON string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Policies, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// One value a change of policies changes: its key as the policies' JSON
/// names it (`queues."q".sla_ms`), and its value before and after (None:
/// not set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyChange {
    /// The key, dotted, map keys quoted.
    pub key: String,
    /// Its value before, as JSON; None where it was not set.
    pub old: Option<String>,
    /// Its value after, as JSON; None where it is no longer set.
    pub new: Option<String>,
}

impl std::fmt::Display for PolicyChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(not set)".into());
        write!(
            f,
            "{}: {} -> {}",
            self.key,
            show(&self.old),
            show(&self.new)
        )
    }
}

/// The leaves of `old` and `new` that differ, under `key`. A null is not
/// set; a table only one side has is named leaf by leaf, so a new queue
/// reads as the values it sets.
fn leaf_changes(key: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<PolicyChange>) {
    let old = old.filter(|v| !v.is_null());
    let new = new.filter(|v| !v.is_null());
    let table = |v: Option<&Value>| v.is_none_or(Value::is_object);
    if old.is_none() && new.is_none() {
        return;
    }
    if table(old) && table(new) {
        let none = serde_json::Map::new();
        let a = old.and_then(Value::as_object).unwrap_or(&none);
        let b = new.and_then(Value::as_object).unwrap_or(&none);
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            // Names a TOML bare key could not be (`*`, dotted) are quoted.
            let bare = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            let part = if bare { k.clone() } else { format!("{k:?}") };
            let sub = if key.is_empty() {
                part
            } else {
                format!("{key}.{part}")
            };
            leaf_changes(&sub, a.get(k), b.get(k), out);
        }
        return;
    }
    if old != new {
        out.push(PolicyChange {
            key: key.to_string(),
            old: old.map(Value::to_string),
            new: new.map(Value::to_string),
        });
    }
}

impl Policies {
    /// What `new` changes of these policies, value by value, in key order.
    /// The machine's audit record of a change and `drover policies diff`
    /// both say it this way.
    pub fn changes(&self, new: &Policies) -> Vec<PolicyChange> {
        let as_value = |p: &Policies| serde_json::to_value(p).unwrap_or(Value::Null);
        let mut out = Vec::new();
        leaf_changes("", Some(&as_value(self)), Some(&as_value(new)), &mut out);
        out
    }

    fn to_record_string(&self) -> String {
        serde_json::to_string(self).expect("policies serialize to JSON")
    }

    /// The `P` record.
    pub fn to_record(&self) -> Vec<u8> {
        self.to_record_string().into_bytes()
    }

    /// Reads a `P` record.
    pub fn from_record(bytes: &[u8]) -> Result<Policies, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// The limits of a concurrency or rate key: the entry of the longest
    /// prefix of `key` in `[limits."PREFIX"]`.
    pub fn key_limit(&self, key: &str) -> Option<&KeyLimit> {
        self.keys
            .range::<str, _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(key)))
            .rev()
            .find(|(prefix, _)| key.starts_with(prefix.as_str()))
            .map(|(_, l)| l)
    }

    /// The breakers of a queue: None unless `[queues.NAME.breaker]` or
    /// `[queues."*".breaker]` turns them on (and `enabled = false` turns them
    /// off for one queue).
    pub fn breaker(&self, queue: &str) -> Option<BreakerPolicy> {
        let named = self.queues.get(queue).and_then(|q| q.breaker.as_ref());
        let defaults = self.queues.get(DEFAULTS).and_then(|q| q.breaker.as_ref());
        if named.is_none() && defaults.is_none() {
            return None;
        }
        fn pick<T>(
            named: Option<&QueueBreaker>,
            defaults: Option<&QueueBreaker>,
            f: fn(&QueueBreaker) -> Option<T>,
        ) -> Option<T> {
            named.and_then(f).or_else(|| defaults.and_then(f))
        }
        if pick(named, defaults, |b| b.enabled) == Some(false) {
            return None;
        }
        let d = BreakerPolicy::default();
        Some(BreakerPolicy {
            threshold: pick(named, defaults, |b| b.threshold)
                .unwrap_or(d.threshold)
                .max(1),
            window_ms: pick(named, defaults, |b| b.window_ms).unwrap_or(d.window_ms),
            cooldown_ms: pick(named, defaults, |b| b.cooldown_ms).unwrap_or(d.cooldown_ms),
        })
    }

    /// How long a lease of a job may run: its own timeout, else its type's
    /// (`[retry.TYPE]`, then `[retry."*"]`), else its queue's.
    pub fn timeout_ms(&self, job: &crate::job::Job) -> Option<u64> {
        if let Some(t) = job
            .labels
            .get(crate::job::TIMEOUT_LABEL)
            .and_then(|t| t.parse().ok())
        {
            return Some(t);
        }
        // Read on every lease and result: no copies of whole policies.
        let of_type = |t: &str| self.retry.get(t).and_then(|r| r.timeout_ms);
        let of_queue = |q: &str| self.queues.get(q).and_then(|p| p.timeout_ms);
        of_type(&job.job_type)
            .or_else(|| of_type(DEFAULTS))
            .or_else(|| of_queue(&job.queue))
            .or_else(|| of_queue(DEFAULTS))
    }

    /// The retry policy of a job type, defaults filled in.
    pub fn retry_for(&self, job_type: &str) -> Retry {
        let named = self.retry.get(job_type);
        let defaults = self.retry.get(DEFAULTS);
        fn pick<T: Clone>(
            named: Option<&RetryPolicy>,
            defaults: Option<&RetryPolicy>,
            f: impl Fn(&RetryPolicy) -> Option<T>,
        ) -> Option<T> {
            named.and_then(&f).or_else(|| defaults.and_then(&f))
        }
        let list = |f: fn(&RetryPolicy) -> &Vec<String>| {
            named
                .map(f)
                .filter(|l| !l.is_empty())
                .or_else(|| defaults.map(f))
                .cloned()
                .unwrap_or_default()
        };
        Retry {
            max_retries: pick(named, defaults, |r| r.max_retries).unwrap_or(self.jobs.max_retries),
            backoff: pick(named, defaults, |r| r.backoff).unwrap_or_default(),
            base_delay_ms: pick(named, defaults, |r| r.base_delay_ms)
                .unwrap_or(self.jobs.retry_base_delay_ms),
            max_delay_ms: pick(named, defaults, |r| r.max_delay_ms)
                .unwrap_or(self.jobs.retry_max_delay_ms),
            retry_on: list(|r| &r.retry_on),
            no_retry: list(|r| &r.no_retry),
            escalate_to: pick(named, defaults, |r| r.escalate_to.clone()),
        }
    }

    /// The policies as a log entry of `format` may carry them. Before
    /// format 5 an older build applies them too, and it would refuse
    /// `workers.scale_down_after` (an unknown key) and ignore `shed_when`
    /// and `shed_types` (admitting what newer nodes shed): those wait until
    /// every voter writes format 5, when the leader proposes them again.
    pub fn for_format(&self, format: u8) -> Policies {
        let mut p = self.clone();
        if format < 5 {
            for q in p.queues.values_mut() {
                q.shed_when = None;
                q.shed_types.clear();
                if let Some(w) = q.workers.as_mut() {
                    w.scale_down_after = None;
                }
            }
        }
        p
    }

    /// How the queue's canary is judged (its `[queues.NAME.canary]`, or
    /// the defaults).
    pub fn canary_judge(&self, queue: &str) -> CanaryJudge {
        self.queues
            .get(queue)
            .and_then(|q| q.canary_judge.clone())
            .unwrap_or_default()
    }

    /// The queue's concurrency limit alone (its own, else `*`'s): what
    /// [`Policies::queue`] says, without building the rest.
    pub fn concurrency_limit(&self, queue: &str) -> Option<u64> {
        self.queues
            .get(queue)
            .and_then(|q| q.concurrency_limit)
            .or_else(|| self.queues.get(DEFAULTS).and_then(|q| q.concurrency_limit))
    }

    /// The queue's policy with the defaults' fields filled in.
    pub fn queue(&self, queue: &str) -> QueuePolicy {
        let named = self.queues.get(queue);
        let defaults = self.queues.get(DEFAULTS);
        let pick =
            |f: fn(&QueuePolicy) -> Option<u64>| named.and_then(f).or_else(|| defaults.and_then(f));
        QueuePolicy {
            max_depth: pick(|q| q.max_depth),
            concurrency_limit: pick(|q| q.concurrency_limit),
            heartbeat_timeout_ms: pick(|q| q.heartbeat_timeout_ms),
            sla_ms: pick(|q| q.sla_ms),
            aging_after_ms: pick(|q| q.aging_after_ms),
            timeout_ms: pick(|q| q.timeout_ms),
            quarantine_failure_rate: named
                .and_then(|q| q.quarantine_failure_rate)
                .or_else(|| defaults.and_then(|q| q.quarantine_failure_rate)),
            quarantine_window_ms: pick(|q| q.quarantine_window_ms),
            quarantine_min_jobs: pick(|q| q.quarantine_min_jobs),
            quarantine_for_ms: pick(|q| q.quarantine_for_ms),
            quarantine_action: named
                .and_then(|q| q.quarantine_action)
                .or_else(|| defaults.and_then(|q| q.quarantine_action)),
            workers: named
                .and_then(|q| q.workers)
                .or_else(|| defaults.and_then(|q| q.workers)),
            // Per queue only: a canary of every queue is not a canary.
            canary: named.and_then(|q| q.canary.clone()),
            canary_judge: named.and_then(|q| q.canary_judge.clone()),
            shed_when: named
                .and_then(|q| q.shed_when.clone())
                .or_else(|| defaults.and_then(|q| q.shed_when.clone())),
            shed_types: named
                .filter(|q| !q.shed_types.is_empty())
                .or(defaults)
                .map(|q| q.shed_types.clone())
                .unwrap_or_default(),
            breaker: named
                .and_then(|q| q.breaker.clone())
                .or_else(|| defaults.and_then(|q| q.breaker.clone())),
            shed: named
                .filter(|q| !q.shed.is_empty())
                .or(defaults)
                .map(|q| q.shed.clone())
                .unwrap_or_default(),
        }
    }

    /// The quarantine of a worker serving `queues`: the strictest (lowest
    /// failure rate) among those that set one; None when none does.
    pub fn quarantine(&self, queues: &[String]) -> Option<QuarantinePolicy> {
        // Asked on every round of a worker's results: off, it costs a scan
        // of the few queue entries.
        if self
            .queues
            .values()
            .all(|q| q.quarantine_failure_rate.is_none())
        {
            return None;
        }
        queues
            .iter()
            .filter_map(|name| {
                let q = self.queue(name);
                Some(QuarantinePolicy {
                    failure_rate: q.quarantine_failure_rate?,
                    window_ms: q.quarantine_window_ms.unwrap_or(QUARANTINE_WINDOW_MS),
                    min_jobs: q.quarantine_min_jobs.unwrap_or(QUARANTINE_MIN_JOBS),
                    for_ms: q.quarantine_for_ms.unwrap_or(QUARANTINE_FOR_MS),
                    restart: q.quarantine_action == Some(QuarantineAction::Restart),
                })
            })
            .min_by(|a, b| a.failure_rate.total_cmp(&b.failure_rate))
    }

    /// The lease timeout of jobs of `queue`.
    pub fn heartbeat_timeout_ms(&self, queue: &str) -> u64 {
        self.queue(queue)
            .heartbeat_timeout_ms
            .unwrap_or(self.jobs.heartbeat_timeout_ms)
    }

    /// A tenant's weight (1 unless set).
    pub fn weight(&self, tenant: &str) -> u32 {
        self.tenants
            .get(tenant)
            .or_else(|| self.tenants.get(DEFAULTS))
            .map_or(1, |t| t.weight.max(1))
    }

    /// Whether a job of `job_type` and `priority` may join `queue` holding
    /// `depth` waiting jobs, with `pending` unfinished jobs in the cluster;
    /// `health` tells the queue's oldest wait and recent results when its
    /// `shed_when` asks. `Err` names the limit it would pass. A type of
    /// `shed_types` meets each of the queue's limits at half of it.
    pub fn admit(
        &self,
        job: Admitted<'_>,
        depth: u64,
        pending: u64,
        health: impl Fn(&ShedWhen) -> QueueHealth,
    ) -> Result<(), Shed> {
        let shed = |depth, limit, what| Shed {
            queue: job.queue.to_string(),
            priority: job.priority,
            depth,
            limit,
            what,
        };
        if self.max_pending > 0 && pending >= self.max_pending {
            return Err(shed(pending, self.max_pending, "limits.max_pending"));
        }
        // Most queues have no policy at all: spare them the merge.
        if !self.queues.contains_key(job.queue) && !self.queues.contains_key(DEFAULTS) {
            return Ok(());
        }
        let q = self.queue(job.queue);
        let first = q.shed_types.iter().any(|t| t == job.job_type);
        let scale = if first { 0.5 } else { 1.0 };
        // Rounded up: half of a limit of 1 still admits one.
        let scaled = |limit: u64| (limit as f64 * scale).ceil() as u64;
        if let Some(max) = q.max_depth {
            let max_limit = scaled(max);
            if depth >= max_limit {
                return Err(shed(
                    depth,
                    max_limit,
                    if first {
                        "max_depth (shed_types)"
                    } else {
                        "max_depth"
                    },
                ));
            }
            if let Some(fraction) = q.shed.get(&job.priority) {
                let limit = scaled((max as f64 * fraction).floor() as u64);
                if depth >= limit {
                    return Err(shed(depth, limit, "shed"));
                }
            }
        }
        if let Some(when) = &q.shed_when {
            let h = health(when);
            if let (Some(limit), Some(waited)) = (when.oldest_ready_ms, h.oldest_wait_ms) {
                let limit = scaled(limit);
                if waited >= limit {
                    return Err(shed(waited / 1000, limit / 1000, "shed_when.oldest_ready"));
                }
            }
            if let Some(rate) = when.failure_rate {
                let total = h.succeeded + h.failed;
                if total >= when.min_results && total > 0 {
                    let limit = rate * scale;
                    let failing = h.failed as f64 / total as f64;
                    if failing >= limit {
                        let pct = |f: f64| (f * 100.0).round() as u64;
                        return Err(shed(pct(failing), pct(limit), "shed_when.failure_rate"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The keys whose values differ between two sets of policies, for a
    /// warning that names them.
    pub fn differences(&self, other: &Policies) -> Vec<String> {
        let mut out = Vec::new();
        if self.jobs != other.jobs {
            out.push("jobs".to_string());
        }
        if self.max_pending != other.max_pending {
            out.push("limits.max_pending".to_string());
        }
        out.extend(
            changed(&self.queues)
                .against(&other.queues)
                .map(|q| format!("queues.{q:?}")),
        );
        out.extend(
            changed(&self.tenants)
                .against(&other.tenants)
                .map(|t| format!("tenants.{t:?}")),
        );
        out.extend(
            changed(&self.retry)
                .against(&other.retry)
                .map(|k| format!("retry.{k:?}")),
        );
        out.extend(
            changed(&self.keys)
                .against(&other.keys)
                .map(|k| format!("limits.{k:?}")),
        );
        out.extend(
            changed(&self.schedules)
                .against(&other.schedules)
                .map(|t| format!("schedules.{t:?}")),
        );
        out
    }
}

/// The names whose entries differ between two maps.
struct Changed<'a, V>(&'a BTreeMap<String, V>);

fn changed<V>(map: &BTreeMap<String, V>) -> Changed<'_, V> {
    Changed(map)
}

impl<'a, V: PartialEq> Changed<'a, V> {
    fn against(self, other: &'a BTreeMap<String, V>) -> impl Iterator<Item = &'a String> + 'a {
        let mine = self.0;
        let names: std::collections::BTreeSet<&String> = mine.keys().chain(other.keys()).collect();
        names
            .into_iter()
            .filter(move |n| mine.get(*n) != other.get(*n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> Policies {
        let mut p = Policies::default();
        p.queues.insert(
            DEFAULTS.into(),
            QueuePolicy {
                max_depth: Some(100),
                shed: [(5, 0.6), (4, 0.8)].into_iter().collect(),
                ..Default::default()
            },
        );
        p.queues.insert(
            "emails".into(),
            QueuePolicy {
                concurrency_limit: Some(5),
                ..Default::default()
            },
        );
        p
    }

    #[test]
    fn a_named_queue_takes_the_defaults_it_does_not_set() {
        let q = policies().queue("emails");
        assert_eq!(q.max_depth, Some(100));
        assert_eq!(q.concurrency_limit, Some(5));
        assert_eq!(q.shed.get(&5), Some(&0.6));
        assert_eq!(policies().queue("other").concurrency_limit, None);
    }

    #[test]
    fn a_worker_is_quarantined_by_the_strictest_of_its_queues() {
        let mut p = policies();
        let names = |q: &[&str]| q.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            p.quarantine(&names(&["emails", "other"])),
            None,
            "off by default"
        );
        p.queues.get_mut("emails").unwrap().quarantine_failure_rate = Some(0.8);
        p.queues.insert(
            "render".into(),
            QueuePolicy {
                quarantine_failure_rate: Some(0.3),
                quarantine_for_ms: Some(1_000),
                ..Default::default()
            },
        );
        let q = p.quarantine(&names(&["emails", "render"])).unwrap();
        assert_eq!(
            (q.failure_rate, q.for_ms, q.window_ms, q.min_jobs),
            (0.3, 1_000, QUARANTINE_WINDOW_MS, QUARANTINE_MIN_JOBS)
        );
        assert_eq!(p.quarantine(&names(&["emails"])).unwrap().failure_rate, 0.8);
    }

    fn admit(p: &Policies, priority: u8, depth: u64, pending: u64) -> Result<(), Shed> {
        admit_as(p, "t", priority, depth, pending, QueueHealth::default())
    }

    fn admit_as(
        p: &Policies,
        job_type: &str,
        priority: u8,
        depth: u64,
        pending: u64,
        health: QueueHealth,
    ) -> Result<(), Shed> {
        let job = Admitted {
            queue: "q",
            job_type,
            priority,
        };
        p.admit(job, depth, pending, |_| health)
    }

    #[test]
    fn lower_priorities_are_shed_first() {
        let p = policies();
        assert!(admit(&p, 5, 59, 0).is_ok());
        assert_eq!(admit(&p, 5, 60, 0).unwrap_err().what, "shed");
        assert!(admit(&p, 4, 60, 0).is_ok());
        assert_eq!(admit(&p, 4, 80, 0).unwrap_err().what, "shed");
        assert!(admit(&p, 1, 99, 0).is_ok());
        assert_eq!(admit(&p, 1, 100, 0).unwrap_err().what, "max_depth");
        let mut p = p;
        p.max_pending = 10;
        assert_eq!(admit(&p, 1, 0, 10).unwrap_err().what, "limits.max_pending");
    }

    #[test]
    fn keys_an_older_build_would_misread_wait_for_format_5() {
        let mut p = Policies::default();
        p.queues.insert(
            "q".into(),
            QueuePolicy {
                shed_when: Some(ShedWhen::default()),
                shed_types: vec!["a".into()],
                workers: Some(crate::pools::WorkerPool {
                    scale_down_after: Some(std::time::Duration::from_secs(60)),
                    ..Default::default()
                }),
                max_depth: Some(7),
                ..Default::default()
            },
        );
        assert_eq!(p.for_format(5), p);
        let old = p.for_format(4);
        let q = &old.queues["q"];
        assert_eq!(q.shed_when, None);
        assert!(q.shed_types.is_empty());
        assert_eq!(q.workers.and_then(|w| w.scale_down_after), None);
        assert_eq!(q.max_depth, Some(7), "the rest stays");
        // What an older build reads: no key its structs refuse.
        let json = old.to_record_string();
        assert!(
            !json.contains("scale_down_after") && !json.contains("shed_when"),
            "{json}"
        );
    }

    #[test]
    fn shed_when_judges_the_oldest_wait_and_the_failure_rate_and_shed_types_go_first() {
        let mut p = Policies::default();
        p.queues.insert(
            "q".into(),
            QueuePolicy {
                shed_when: Some(ShedWhen {
                    oldest_ready_ms: Some(60_000),
                    failure_rate: Some(0.2),
                    ..ShedWhen::default()
                }),
                shed_types: vec!["analytics".into()],
                ..Default::default()
            },
        );
        let health = |wait: Option<u64>, ok: u64, failed: u64| QueueHealth {
            oldest_wait_ms: wait,
            succeeded: ok,
            failed,
        };
        let admit = |t: &str, h: QueueHealth| admit_as(&p, t, 3, 0, 0, h).map_err(|s| s.what);
        assert_eq!(admit("report", health(Some(59_999), 100, 0)), Ok(()));
        assert_eq!(
            admit("report", health(Some(60_000), 100, 0)),
            Err("shed_when.oldest_ready")
        );
        // The named type at half: 30 s.
        assert_eq!(
            admit("analytics", health(Some(30_000), 100, 0)),
            Err("shed_when.oldest_ready")
        );
        assert_eq!(
            admit("report", health(None, 80, 20)),
            Err("shed_when.failure_rate")
        );
        assert_eq!(admit("report", health(None, 81, 19)), Ok(()));
        assert_eq!(
            admit("analytics", health(None, 90, 10)),
            Err("shed_when.failure_rate")
        );
        // Too few results say nothing.
        assert_eq!(admit("report", health(None, 0, 19)), Ok(()));
    }

    #[test]
    fn retry_policies_by_type_fall_back_to_the_defaults() {
        let mut p = Policies::default();
        p.retry.insert(
            DEFAULTS.into(),
            RetryPolicy {
                max_retries: Some(2),
                base_delay_ms: Some(100),
                ..Default::default()
            },
        );
        p.retry.insert(
            "render".into(),
            RetryPolicy {
                backoff: Some(Backoff::Linear),
                no_retry: vec!["fatal_input".into()],
                escalate_to: Some("manual-review".into()),
                ..Default::default()
            },
        );
        let r = p.retry_for("render");
        assert_eq!((r.max_retries, r.base_delay_ms), (2, 100));
        assert_eq!(r.escalate_to.as_deref(), Some("manual-review"));
        let plain = |b| Retry {
            backoff: b,
            base_delay_ms: 100,
            max_delay_ms: 250,
            ..r.clone()
        };
        let delays = |b| {
            (1..=4)
                .map(|n| plain(b).backoff_ms(7, n))
                .map(|d| d - d % 10)
                .collect::<Vec<_>>()
        };
        // Jitter adds at most a quarter: compare the bases.
        let within = |got: Vec<u64>, want: [u64; 4]| {
            got.iter()
                .zip(want)
                .all(|(g, w)| *g >= w && *g <= w + w / 4)
        };
        assert!(within(delays(Backoff::Exponential), [100, 200, 250, 250]));
        assert!(within(delays(Backoff::Linear), [100, 200, 250, 250]));
        assert!(within(delays(Backoff::Fixed), [100, 100, 100, 100]));
        assert_eq!(delays(Backoff::Immediate), [0, 0, 0, 0]);
        assert_eq!(
            plain(Backoff::Fixed).backoff_ms(7, 1),
            plain(Backoff::Fixed).backoff_ms(7, 1),
            "jitter is a function of the job"
        );
        assert!(matches!(
            r.after_failure(1, "fatal_input", 0),
            AfterFailure::Exhausted { .. }
        ));
        assert!(matches!(
            r.after_failure(1, "timeout", 1),
            AfterFailure::Retry { .. }
        ));
        assert!(matches!(
            r.after_failure(1, "timeout", 2),
            AfterFailure::Exhausted { .. }
        ));
        let only = Retry {
            retry_on: vec!["timeout".into()],
            ..r.clone()
        };
        assert!(matches!(
            only.after_failure(1, "boom", 0),
            AfterFailure::Exhausted { .. }
        ));
        // A type with no entry and no defaults uses [jobs].
        let q = Policies::default().retry_for("x");
        assert_eq!(q.max_retries, JobPolicies::default().max_retries);
    }

    #[test]
    fn changes_name_each_value_with_its_old_and_new() {
        let a = policies();
        let mut b = policies();
        b.jobs.max_retries = a.jobs.max_retries + 3;
        b.tenants.insert(
            "acme.eu".into(),
            TenantPolicy {
                weight: 4,
                ..Default::default()
            },
        );
        let changes = a.changes(&b);
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert!(keys.contains(&"jobs.max_retries"), "{keys:?}");
        assert!(
            keys.iter().any(|k| k.starts_with("tenants.\"acme.eu\"")),
            "a dotted name is quoted: {keys:?}"
        );
        let retries = changes
            .iter()
            .find(|c| c.key == "jobs.max_retries")
            .unwrap();
        assert_eq!(
            retries.to_string(),
            format!(
                "jobs.max_retries: {} -> {}",
                a.jobs.max_retries, b.jobs.max_retries
            )
        );
        let tenant: Vec<String> = changes
            .iter()
            .filter(|c| c.key.starts_with("tenants."))
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            tenant,
            ["tenants.\"acme.eu\".weight: (not set) -> 4"],
            "{changes:?}"
        );
        assert!(a.changes(&a).is_empty());
    }

    #[test]
    fn differences_name_the_keys() {
        let a = policies();
        let mut b = policies();
        b.jobs.max_retries = 9;
        b.tenants.insert(
            "acme".into(),
            TenantPolicy {
                weight: 4,
                ..Default::default()
            },
        );
        assert_eq!(a.differences(&b), ["jobs", "tenants.\"acme\""]);
        assert!(a.differences(&a).is_empty());
    }
}
