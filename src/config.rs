//! The node's one config file: a typed struct read from TOML, every key with
//! its default next to it, validated once at start. `config/drover.toml`
//! documents every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::job::JobLimits;
use crate::policies::{JobPolicies, Policies, QueuePolicy, TenantPolicy};

/// Why a config could not be used; each names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file's path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape: a syntax error, an unknown key
    /// or a value of the wrong type.
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file, or `<inline>` for text parsed with [`Config::from_toml`].
        path: PathBuf,
        /// The TOML parser's error, naming the key or line at fault.
        message: String,
    },
    /// A value serde accepted but is out of range or contradicts another key.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The key at fault, such as `jobs.heartbeat_timeout` or `queues`.
        key: &'static str,
        /// What is wrong with it, and what would be right.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// A node's whole configuration: the top level of its TOML file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's raft id; unique in the cluster, never 0.
    pub node_id: u64,
    /// Where the sled database lives. Created on first start.
    pub data_dir: PathBuf,
    /// gRPC listen address (producers, workers). Port 0 picks a free port.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address (admin API, /metrics, /health, /ready).
    pub http_addr: SocketAddr,
    /// On shutdown, how long connected workers get to finish and report the
    /// jobs they hold before the node stops anyway (their leases then expire
    /// and the jobs run again elsewhere).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Peers refuse traffic that names another cluster.
    pub cluster_id: String,
    /// The initial members, this node included; empty for a one-voter cluster.
    pub peers: Vec<Peer>,
    /// Join an existing cluster instead of bootstrapping one: the node waits
    /// until a member adds it (`drover cluster add`). `peers` then lists the
    /// members it may hear from.
    pub join: bool,
    /// A node removed from its cluster (`drover cluster remove`) stops, with
    /// an error saying so; true keeps it running, idle, instead.
    pub wait_when_removed: bool,
    /// `[limits]`: payload, request, worker and pending-job limits, the memory
    /// alarm, and per-key limits.
    pub limits: Limits,
    /// `[jobs]`: lease timeout, default retries, and how long finished jobs,
    /// idempotency keys and audit records are kept.
    pub jobs: Jobs,
    /// `[cluster]`: what members ask of each other.
    pub cluster: ClusterConfig,
    /// `[raft]`: ticks, log compaction, snapshots and pipelining.
    pub raft: Raft,
    /// `[storage]`: sled's cache and the free-disk alarm.
    pub storage: Storage,
    /// `[log]`: format and level of the node's own log.
    pub log: Log,
    /// Bearer tokens, each with a name and a role. None: the node answers
    /// anyone who can reach it, so it may bind loopback addresses only.
    pub tokens: Vec<TokenConfig>,
    /// The token this node presents to its peers; their config lists its
    /// hash with role `peer`. Needed in a cluster that has tokens.
    pub peer_token: String,
    /// `/metrics` needs a token of role read, operate or admin when true;
    /// open otherwise, for scrapers.
    pub protect_metrics: bool,
    /// TLS for every port, and mutual TLS between peers. None: plain TCP.
    pub tls: Option<Tls>,
    /// Per-queue policies; `"*"` holds the defaults of queues not named.
    pub queues: BTreeMap<String, QueueConfig>,
    /// Per-tenant policies.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Recurring jobs.
    pub schedules: BTreeMap<String, ScheduleConfig>,
    /// Retry policies by job type; `[retry."*"]` holds the defaults.
    pub retry: BTreeMap<String, RetryConfig>,
    /// `[budgets]`: what every run may use unless its tenant says otherwise.
    pub budgets: BudgetsConfig,
    /// `[backup]`: scheduled backups.
    pub backup: Backup,
    /// `[chaos]`: fault injection, off unless `allowed = true`.
    pub chaos: ChaosConfig,
    /// `[metrics]`: which job types get series of their own.
    pub metrics: MetricsConfig,
    /// `[tracing]`: where node spans go over OTLP (nowhere by default).
    pub tracing: TracingConfig,
    /// The newest log entry format this node applies and writes: this
    /// build's [`crate::command::ENTRY_VERSION`]. Not a config key:
    /// `drover serve --entry-version` sets it, to simulate a newer build in
    /// upgrade tests.
    #[serde(skip)]
    pub entry_version: u8,
    /// The SHA-256 (hex) of the file this config was read from; empty for
    /// the embedded defaults. Not a config key: the audit record of a
    /// policies change names it.
    #[serde(skip)]
    pub source_sha256: String,
}

/// `[chaos]`: whether this node injects the faults `drover chaos set` asks
/// for. Off by default; a node without it neither accepts chaos rules nor
/// applies them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosConfig {
    /// Accept and apply chaos rules on this node (default false). Set it on
    /// every node of a test cluster only.
    pub allowed: bool,
}

/// `[metrics]`: what the metrics break down by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Job types whose wait and run times get series of their own in
    /// `drover_job_wait_seconds` and `drover_job_run_seconds`
    /// (`job_type` label); every other type counts as `other`, so the
    /// series stay bounded however many types producers use.
    pub job_types: Vec<String>,
    /// How many worker ids get series of their own in
    /// `drover_worker_results_total` and `drover_worker_quarantined` (the
    /// first this node sees; the rest count as `other`). Default 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_series: Option<usize>,
}

/// `[backup]`: every `every`, the leader writes a backup into `dir` and
/// keeps the newest `keep`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backup {
    /// Off unless set: "6h".
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub every: Option<Duration>,
    /// Default: `backups` in the data dir. Another disk is better.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// How many of the newest backups stay in `dir`; older ones are removed
    /// after each backup (default 14, at least 1).
    pub keep: usize,
}

impl Default for Backup {
    fn default() -> Self {
        Backup {
            every: None,
            dir: None,
            keep: 14,
        }
    }
}

/// `[budgets]` and `[tenants.NAME.budgets]`: a run's limits; each optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    /// USD the run's jobs may report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Lease time the run's jobs may hold, summed.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub time: Option<Duration>,
    /// Leases the run's jobs may be granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    /// USD the tenant may spend per UTC day (tenants only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cost_cap_usd: Option<f64>,
}

impl BudgetsConfig {
    /// The replicated form: USD as millionths, durations in ms.
    pub fn policy(&self) -> crate::policies::Budgets {
        crate::policies::Budgets {
            cost_micros: self.cost_usd.map(crate::policies::usd_to_micros),
            time_ms: self
                .time
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            attempts: self.attempts,
            daily_cost_cap_micros: self.daily_cost_cap_usd.map(crate::policies::usd_to_micros),
        }
    }

    fn validate(&self, at: &str) -> Result<(), String> {
        for (name, usd) in [
            ("cost_usd", self.cost_usd),
            ("daily_cost_cap_usd", self.daily_cost_cap_usd),
        ] {
            if let Some(usd) = usd {
                crate::policies::check_usd(usd)
                    .map_err(|e| format!("[{at}] {name} = {usd}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// `[retry.JOB_TYPE]`: how failed jobs of a type run again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt before the job goes where `on_exhausted`
    /// says. Unset: `[retry."*"]`'s, else `jobs.max_retries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// exponential | linear | fixed | immediate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// First retry delay, grown by `backoff` up to `max_delay`. Unset:
    /// `[retry."*"]`'s, else `jobs.retry_base_delay`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub base_delay: Option<Duration>,
    /// Longest delay before a retry. Unset: `[retry."*"]`'s, else
    /// `jobs.retry_max_delay`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_delay: Option<Duration>,
    /// If set, only these error classes are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
    /// These error classes end the job at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_retry: Vec<String>,
    /// `dead` (the default) or `queue:NAME`: where an exhausted job goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exhausted: Option<String>,
    /// How long a lease of a job of this type may run.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

impl RetryConfig {
    /// The replicated form; `Err` names what is wrong.
    pub fn policy(&self) -> Result<crate::policies::RetryPolicy, String> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let escalate_to = match self.on_exhausted.as_deref() {
            None | Some("dead") => None,
            Some(other) => match other.strip_prefix("queue:") {
                Some(q) => {
                    crate::job::validate_queue(q).map_err(|e| format!("on_exhausted: {e}"))?;
                    Some(q.to_string())
                }
                None => {
                    return Err(format!(
                        "on_exhausted = {other:?} is not \"dead\" or \"queue:NAME\""
                    ))
                }
            },
        };
        let backoff = self
            .backoff
            .as_deref()
            .map(crate::policies::Backoff::parse)
            .transpose()
            .map_err(|e| format!("backoff: {e}"))?;
        if let (Some(b), Some(m)) = (self.base_delay, self.max_delay) {
            if b > m {
                return Err("base_delay is longer than max_delay".into());
            }
        }
        Ok(crate::policies::RetryPolicy {
            max_retries: self.max_retries,
            backoff,
            base_delay_ms: self.base_delay.map(ms),
            max_delay_ms: self.max_delay.map(ms),
            retry_on: self.retry_on.clone(),
            no_retry: self.no_retry.clone(),
            escalate_to,
            timeout_ms: self.timeout.map(ms),
        })
    }
}

/// `[schedules.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// `sec min hour day month weekday` (seconds optional).
    pub cron: String,
    /// IANA time zone the cron expression is read in, such as "Europe/Berlin"
    /// (default "UTC").
    #[serde(default = "utc")]
    pub timezone: String,
    /// `skip` (default) or `run_once`: what a slot missed by more than a
    /// minute (the cluster was down) does when the cluster is back.
    #[serde(default = "skip")]
    pub misfire: String,
    /// The job each slot enqueues.
    pub job: JobTemplateConfig,
}

fn utc() -> String {
    "UTC".into()
}

fn skip() -> String {
    "skip".into()
}

/// The job a schedule enqueues: `job = { queue = "reports", ... }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTemplateConfig {
    /// Queue the job goes into.
    pub queue: String,
    /// Its job type, which picks its `[retry.JOB_TYPE]` policy; empty: "default".
    #[serde(default)]
    pub job_type: String,
    /// Tenant it runs for; empty: "default".
    #[serde(default)]
    pub tenant: String,
    /// 1 (highest) to 5 (lowest); 0 or absent: 3.
    #[serde(default)]
    pub priority: u32,
    /// Payload, as text; at most 64 KiB.
    #[serde(default)]
    pub payload: String,
    /// Labels, as an enqueue takes them; each slot's job also gets
    /// `drover.schedule` and `drover.slot`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Concurrency key, limited by the `[limits."PREFIX"]` it starts with;
    /// empty: none.
    #[serde(default)]
    pub concurrency_key: String,
    /// Rate key, limited by the `[limits."PREFIX"]` it starts with; empty: none.
    #[serde(default)]
    pub rate_key: String,
}

/// `[queues.NAME]`: a queue's limits (see config/drover.toml).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Most jobs waiting (ready and scheduled); enqueues past it are
    /// refused (429 / RESOURCE_EXHAUSTED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u64>,
    /// Most jobs of the queue leased at once, cluster-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u64>,
    /// This queue's lease timeout, instead of `jobs.heartbeat_timeout`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub heartbeat_timeout: Option<Duration>,
    /// Priority -> fraction of `max_depth` above which that priority is
    /// refused: `{ 5 = 0.6, 4 = 0.8 }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shed: BTreeMap<String, f64>,
    /// `{ oldest_ready = "60s", failure_rate = 0.2 }`: refuse new jobs
    /// (429 / RESOURCE_EXHAUSTED, code shed) while the oldest ready job
    /// waited that long, or that share of the queue's recent results
    /// failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shed_when: Option<ShedWhenConfig>,
    /// Job types shed first: refused at half of each of the queue's limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shed_types: Vec<String>,
    /// A wait beyond it counts in `drover_sla_missed_total{queue,priority}`
    /// and is noted in the job's timeline.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub sla: Option<Duration>,
    /// A ready job counts one priority level higher per this much waiting,
    /// so priority 5 is never starved forever.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub aging_after: Option<Duration>,
    /// Leases a worker of this queue is sent at once at first; the node
    /// grows it toward `max_batch_size` while the worker's jobs finish well
    /// inside their leases and halves it when one expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_batch_size: Option<u32>,
    /// Most leases a worker of this queue is sent at once, however fast it
    /// finishes them (default 200; `initial_batch_size` defaults to 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<u32>,
    /// `[queues.NAME.breaker]`: circuit breakers per (queue, tenant, error
    /// class); on for every queue once `[queues."*".breaker]` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerConfig>,
    /// How long a lease of a job of this queue may run, however well its
    /// worker heartbeats.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// A worker whose failures reach this fraction of its results within
    /// `quarantine_window` (and at least `quarantine_min_jobs` results) gets
    /// no new leases until `drover workers release ID`, or until it
    /// reconnects after `quarantine_for`. Off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_failure_rate: Option<f64>,
    /// Default 5m.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub quarantine_window: Option<Duration>,
    /// Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_min_jobs: Option<u64>,
    /// Default 10m.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub quarantine_for: Option<Duration>,
    /// `"restart"`: a quarantined worker is asked to finish what it holds
    /// and exit, so its supervisor starts a fresh process (which leases
    /// again); `"keep"` (default): it stays connected, idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_action: Option<crate::policies::QuarantineAction>,
    /// `{ min = 2, max = 10, expected = 4, per_worker = 1 }`: the bounds of
    /// `drover_queue_desired_workers`, and the count under half of which
    /// the DroverWorkersBelowExpected alert fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<crate::pools::WorkerPool>,
    /// `[queues.NAME.canary] version = "v4", percent = 10, max_wait = "5m"`:
    /// that share of the queue's jobs only to workers of the version
    /// (`drover canary set` changes it at run time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryConfig>,
}

/// `[queues.NAME] shed_when`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShedWhenConfig {
    /// Refuse while the oldest ready job has waited this long.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub oldest_ready: Option<Duration>,
    /// Refuse while at least this share (0 to 1) of the recent results
    /// failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// How far back results count (default 5m).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
    /// Results in the window before the failure rate counts (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_results: Option<u64>,
}

impl ShedWhenConfig {
    fn policy(&self) -> crate::policies::ShedWhen {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let d = crate::policies::ShedWhen::default();
        crate::policies::ShedWhen {
            oldest_ready_ms: self.oldest_ready.map(ms),
            failure_rate: self.failure_rate,
            window_ms: self.window.map_or(d.window_ms, ms),
            min_results: self.min_results.unwrap_or(d.min_results),
        }
    }

    fn problem(&self) -> Option<&'static str> {
        if self.oldest_ready.is_none() && self.failure_rate.is_none() {
            return Some("shed_when names oldest_ready, failure_rate or both, such as shed_when = { oldest_ready = \"60s\", failure_rate = 0.2 }");
        }
        if !self
            .failure_rate
            .is_none_or(|r| r.is_finite() && r > 0.0 && r <= 1.0)
        {
            return Some("shed_when failure_rate must be more than 0 and at most 1, such as 0.2");
        }
        if self.oldest_ready.is_some_and(|d| d.is_zero())
            || self.window.is_some_and(|d| d.is_zero())
            || self.min_results == Some(0)
        {
            return Some("shed_when oldest_ready, window and min_results must be more than 0");
        }
        if self
            .window
            .is_some_and(|d| d > Duration::from_secs(7 * 24 * 3600))
        {
            return Some("shed_when window must be at most 7d, such as window = \"10m\"");
        }
        None
    }
}

/// `[queues.NAME.canary]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The worker version (as workers register it) that gets the canary share.
    pub version: String,
    /// Share of the queue's jobs, 0 to 100, sent only to that version's workers;
    /// the rest go only to workers of other versions.
    pub percent: u8,
    /// Default 5m.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_wait: Option<Duration>,
    /// `["success_rate", "duration", "cost"]`: a "worse" verdict on any of
    /// these, standing for `hold`, makes the leader abort the canary (its
    /// version switched off for the queue, audited). Empty: only reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abort_on: Vec<crate::policies::CanaryMetric>,
    /// Success rate worse when more than this below the control's
    /// (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_success_drop: Option<f64>,
    /// Run time worse when its mean is more than this times the control's
    /// (default 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_ratio: Option<f64>,
    /// Cost worse when its mean is more than this times the control's
    /// (default 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_ratio: Option<f64>,
    /// Results each side needs before a verdict (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
    /// How long a verdict must stand before the leader acts (default 1m).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub hold: Option<Duration>,
    /// Promote by itself once every measure has been "ok" this long.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub promote_after: Option<Duration>,
}

impl CanaryConfig {
    /// The judge these settings make, defaults filled in.
    pub fn judge(&self) -> crate::policies::CanaryJudge {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let d = crate::policies::CanaryJudge::default();
        crate::policies::CanaryJudge {
            abort_on: self.abort_on.clone(),
            max_success_drop: self.max_success_drop.unwrap_or(d.max_success_drop),
            max_duration_ratio: self.max_duration_ratio.unwrap_or(d.max_duration_ratio),
            max_cost_ratio: self.max_cost_ratio.unwrap_or(d.max_cost_ratio),
            min_samples: self.min_samples.unwrap_or(d.min_samples),
            hold_ms: self.hold.map_or(d.hold_ms, ms),
            promote_after_ms: self.promote_after.map(ms),
        }
    }

    /// What is wrong with the judge's settings, if anything.
    fn judge_problem(&self) -> Option<&'static str> {
        let ratio_ok = |r: Option<f64>| r.is_none_or(|r| r.is_finite() && r >= 1.0);
        if !self
            .max_success_drop
            .is_none_or(|d| d.is_finite() && (0.0..=1.0).contains(&d))
        {
            return Some("max_success_drop must be 0 to 1, such as 0.05");
        }
        if !ratio_ok(self.max_duration_ratio) || !ratio_ok(self.max_cost_ratio) {
            return Some("max_duration_ratio and max_cost_ratio must be 1 or more, such as 1.1");
        }
        if self.min_samples == Some(0) {
            return Some("min_samples must be 1 or more");
        }
        if self.promote_after.is_some_and(|d| d.is_zero()) {
            return Some("promote_after must be more than 0");
        }
        None
    }
}

/// `[queues.NAME.breaker]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// false turns this queue's breakers off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Failures of one class within `window` that open it (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// Default 60s.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
    /// How long it stays open before letting one job through (default 30s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub cooldown: Option<Duration>,
}

/// `[tenants.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Share of dispatches against other tenants of the same priority.
    #[serde(default = "one")]
    pub weight: u32,
    /// `[tenants.NAME.budgets]`: its runs' limits (instead of `[budgets]`)
    /// and its daily cost cap.
    #[serde(default)]
    pub budgets: BudgetsConfig,
}

fn one() -> u32 {
    1
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            data_dir: PathBuf::from("./drover-data"),
            grpc_addr: "127.0.0.1:7070".parse().expect("literal address"),
            http_addr: "127.0.0.1:7080".parse().expect("literal address"),
            shutdown_grace: Duration::from_secs(10),
            cluster_id: "drover".into(),
            peers: Vec::new(),
            join: false,
            wait_when_removed: false,
            limits: Limits::default(),
            jobs: Jobs::default(),
            cluster: ClusterConfig::default(),
            raft: Raft::default(),
            storage: Storage::default(),
            log: Log::default(),
            tokens: Vec::new(),
            peer_token: String::new(),
            protect_metrics: false,
            tls: None,
            queues: BTreeMap::new(),
            tenants: BTreeMap::new(),
            schedules: BTreeMap::new(),
            retry: BTreeMap::new(),
            budgets: BudgetsConfig::default(),
            backup: Backup::default(),
            chaos: ChaosConfig::default(),
            metrics: MetricsConfig::default(),
            tracing: TracingConfig::default(),
            entry_version: crate::command::ENTRY_VERSION,
            source_sha256: String::new(),
        }
    }
}

/// A member of the cluster and the gRPC address its peers reach it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The member's raft id: the `node_id` in its own config.
    pub id: u64,
    /// Its gRPC address as `host:port`, such as "127.0.0.1:7071".
    pub addr: String,
}

/// What a token may do. `read` < `operate` < `admin` for the admin API;
/// `producer`, `worker` and `peer` are for the gRPC services of their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads: stats, jobs, members, workers, audit, policies.
    Read,
    /// Read, and day-to-day changes: cancel, drain, replay, reset, shut
    /// workers down.
    Operate,
    /// Operate, and what reshapes the cluster: membership, snapshots,
    /// budgets, policies; may also produce.
    Admin,
    /// Enqueue; read and cancel the jobs it enqueued.
    Producer,
    /// The worker stream.
    Worker,
    /// Raft traffic and forwarding between the nodes of a cluster.
    Peer,
}

impl Role {
    /// Every role, in the order `read`, `operate`, `admin`, `producer`, `worker`,
    /// `peer`.
    pub const ALL: [Role; 6] = [
        Role::Read,
        Role::Operate,
        Role::Admin,
        Role::Producer,
        Role::Worker,
        Role::Peer,
    ];

    /// The role's name in config files, the CLI and responses: "read", "admin"...
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
            Role::Producer => "producer",
            Role::Worker => "worker",
            Role::Peer => "peer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?} is not a role: read, operate, admin, producer, worker or peer")
            })
    }
}

/// A `[[tokens]]` entry: who holds it, what it may do, and the hash of the
/// secret (`drover token new` prints both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token, unique among `[[tokens]]`; audit records and
    /// refusals name the caller by it.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// `sha256:` and the hex SHA-256 of the token.
    pub hash: String,
    /// Requests per second this token may make, on average; 0 or absent
    /// means no limit.
    #[serde(default)]
    pub rate_limit: u32,
    /// Requests it may make at once above the rate (default: one second's
    /// worth).
    #[serde(default)]
    pub burst: u32,
    /// For a producer: enqueue requests per second for any one tenant, so
    /// one tenant's flood does not use up the token's whole rate; 0 or
    /// absent means no limit.
    #[serde(default)]
    pub tenant_rate_limit: u32,
    /// Above `tenant_rate_limit`, at once (default: one second's worth).
    #[serde(default)]
    pub tenant_burst: u32,
    /// Tenants this token acts for (names, or a prefix and `*`); empty:
    /// any. A producer enqueues only for them; every role reads, lists
    /// and cancels only their jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// Queues a producer enqueues into and a worker serves (names, or a
    /// prefix and `*`); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    /// What the ids of a worker token's workers start with. A scoped
    /// token's workers' ids start with this, or else with its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_prefix: Option<String>,
}

/// Whether `name` matches a scope pattern: the name itself, or a prefix
/// ending in `*`.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Config {
    /// This node's disk and memory limits, resolved for its filesystem
    /// and memory, with nothing sampled yet.
    pub fn pressure(&self) -> std::sync::Arc<crate::resources::Pressure> {
        let fs_bytes = crate::resources::space(&self.data_dir).map_or(0, |(_, total)| total);
        let memory = crate::resources::memory_limit().unwrap_or(0);
        crate::resources::Pressure::new(
            self.node_id,
            self.data_dir.clone(),
            self.storage.min_free_for(fs_bytes),
            self.limits.watermark_for(memory),
        )
    }
}

impl TokenConfig {
    /// Why this token's scope (`tenants`, `queues`, `worker_prefix`) is
    /// wrong, if it is.
    pub fn check_scope(&self) -> Result<(), String> {
        for (key, patterns) in [("tenants", &self.tenants), ("queues", &self.queues)] {
            for p in patterns {
                let name = p.strip_suffix('*').unwrap_or(p);
                let ok = !p.is_empty()
                    && !name.contains('*')
                    && (name.is_empty() || crate::job::validate_name(key, name).is_ok());
                if !ok {
                    return Err(format!(
                        "{key} = {p:?}: give names, or a prefix ending in * (\"render-*\")"
                    ));
                }
            }
        }
        let role = self.role.as_str();
        if !self.tenants.is_empty()
            && !matches!(
                self.role,
                Role::Producer | Role::Read | Role::Operate | Role::Admin
            )
        {
            return Err(format!("tenants scopes producers and the read, operate and admin roles, not a {role} token; a worker is scoped by queues"));
        }
        if !self.queues.is_empty() && !matches!(self.role, Role::Producer | Role::Worker) {
            return Err(format!(
                "queues scopes producers and workers, not a {role} token"
            ));
        }
        match self.worker_prefix.as_deref() {
            Some(_) if self.role != Role::Worker => Err(format!(
                "worker_prefix is for worker tokens, not a {role} token"
            )),
            Some("") => {
                Err("worker_prefix is empty: give the prefix its workers' ids start with".into())
            }
            _ => Ok(()),
        }
    }
}

/// `[tls]`: PEM files. The certificate serves gRPC, HTTP and peer traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The cluster CA: peers' (and clients') certificates are checked
    /// against it, and this node trusts it when it calls its peers.
    pub ca: PathBuf,
    /// Peers must present a certificate signed by `ca`, and this node
    /// presents its own when it calls them.
    #[serde(default)]
    pub peer_mtls: bool,
}

/// Most jobs in one enqueue request by default; clients split larger sets.
/// All of a request's jobs are written in one atomic sled batch, and sled's
/// memory use grows sharply with batches over about a thousand writes (two per
/// job), so this also bounds the node's memory.
pub const DEFAULT_MAX_JOBS_PER_REQUEST: usize = 500;

/// `[limits]`: the node's limits, and `[limits."PREFIX"]` tables of per-key
/// limits (which is why unknown keys are caught by [`KeyLimitConfig`]'s
/// type rather than `deny_unknown_fields`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Most jobs in one enqueue request.
    pub max_jobs_per_request: usize,
    /// Most jobs a worker may hold at once (its registered capacity).
    pub max_worker_capacity: u32,
    /// Most unfinished jobs (ready, scheduled, leased) in the cluster;
    /// enqueues past it are refused, which protects memory and disk. 0: no
    /// limit. Unset: one job per [`PENDING_JOB_BUDGET`] bytes of
    /// `memory_high_watermark`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u64>,
    /// Above this much RSS the node raises its memory alarm, and the
    /// cluster refuses new jobs (`memory_high`) while it stands: a share
    /// of the memory the node may use (its cgroup limit, else physical
    /// memory) such as 0.5 or "50%", or a size such as "4 GiB"; 0: off.
    pub memory_high_watermark: Amount,
    /// `[limits."PREFIX"]`: limits of jobs whose concurrency_key or
    /// rate_key starts with PREFIX (the longest prefix wins).
    #[serde(flatten)]
    pub keys: BTreeMap<String, KeyLimitConfig>,
}

/// `[limits."PREFIX"]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "one of max_payload_bytes, max_jobs_per_request, max_worker_capacity, max_pending, or a [limits.\"PREFIX\"] table of per-key limits (concurrency = N, rate = \"N/s\")"
)]
pub struct KeyLimitConfig {
    /// Jobs of one concurrency key leased at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Leases of one rate key per period: "10/s", "100/m", "5/30s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 1024 * 1024,
            max_jobs_per_request: DEFAULT_MAX_JOBS_PER_REQUEST,
            max_worker_capacity: 1024,
            max_pending: None,
            memory_high_watermark: Amount::Share(0.5),
            keys: BTreeMap::new(),
        }
    }
}

/// `[jobs]`: lease timeout, default retries, and how long finished jobs,
/// idempotency keys and audit records are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jobs {
    /// A lease not extended by a heartbeat within this time expires and the
    /// job goes back to ready.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// Retries after the first attempt before a failing job is dead-lettered.
    pub max_retries: u32,
    /// First retry delay; doubles each retry up to `retry_max_delay`.
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    /// Longest delay before a retry; the doubling stops there (default 5m).
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Succeeded and cancelled jobs are removed this long after they
    /// finished (a replicated purge, oldest first); their ids then answer
    /// 404.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Most bytes finished jobs may keep on disk (records, payloads,
    /// results); past it the oldest are removed whatever their age.
    /// A number of bytes or a size like "10 GiB".
    pub retention_max_bytes: bytesize::ByteSize,
    /// Dead jobs are kept this long, for inspection and replay.
    #[serde(with = "humantime_serde")]
    pub dead_retention: Duration,
    /// An idempotency key names its job for this long after the enqueue
    /// (or until the job is removed, if sooner); then the key may be used
    /// again for a new job.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// Audit records (who changed what through the admin API) are kept
    /// this long.
    #[serde(with = "humantime_serde")]
    pub audit_retention: Duration,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            heartbeat_timeout: Duration::from_secs(30),
            max_retries: 3,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
            retention: Duration::from_secs(7 * 24 * 3600),
            retention_max_bytes: bytesize::ByteSize::gib(10),
            dead_retention: Duration::from_secs(30 * 24 * 3600),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            audit_retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

impl Jobs {
    /// The bounds the leader puts in a purge.
    pub fn retention(&self) -> crate::command::Retention {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        crate::command::Retention {
            finished_ms: ms(self.retention),
            dead_ms: ms(self.dead_retention),
            idempotency_ms: ms(self.idempotency_ttl),
            max_finished_bytes: self.retention_max_bytes.as_u64(),
        }
    }
}

/// `[raft]`: timing of elections and heartbeats, log compaction, snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Raft {
    /// One raft tick.
    #[serde(with = "humantime_serde")]
    pub tick_interval: Duration,
    /// Ticks without a leader's word before a follower campaigns.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Applied entries kept in the log behind the applied index before older
    /// ones are compacted away.
    pub log_keep_entries: u64,
    /// Most bytes of applied entries kept in the log: past it the oldest
    /// are compacted away even within `log_keep_entries` (entries range from
    /// bytes to 256 KiB, so a count alone does not bound the disk).
    pub log_keep_bytes: bytesize::ByteSize,
    /// A snapshot of the machine is written every this many applied entries;
    /// followers too far behind the compacted log are sent the newest one.
    pub snapshot_every: u64,
    /// Entries the leader may have proposed and not yet committed; past it
    /// new requests wait and go into one entry once one commits. 1 (stop
    /// and wait) batches the most and costs the least CPU per request; more
    /// pipelines replication round trips. 0 means no limit.
    pub max_inflight_entries: u64,
}

impl Default for Raft {
    fn default() -> Self {
        Raft {
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            log_keep_entries: 20_000,
            log_keep_bytes: bytesize::ByteSize::mib(256),
            snapshot_every: 100_000,
            max_inflight_entries: 1,
        }
    }
}

/// `[storage]`: sled's page cache and the free-disk alarm.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// sled's page cache, in bytes. The main lever on a node's memory.
    pub cache_capacity_bytes: u64,
    /// Below this much free space on the data dir's filesystem the node
    /// raises its disk alarm, and the cluster refuses new jobs
    /// (`disk_full`) while the leader or a majority is short: a size such
    /// as "2 GiB", a share of the filesystem such as "5%", or 0 (off).
    /// Unset: 5% of the filesystem, at most 2 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_free_bytes: Option<Amount>,
    /// A key file (`drover key new FILE`): payloads, results and error
    /// messages are sealed with it at rest, in the log, the store,
    /// snapshots and backups. Every node of a cluster takes the same key.
    /// Unset: stored in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_file: Option<PathBuf>,
    /// Keys that were `encryption_key_file` before a rotation: what was
    /// sealed with them stays readable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_old_keys: Vec<PathBuf>,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            cache_capacity_bytes: 8 * 1024 * 1024,
            min_free_bytes: None,
            encryption_key_file: None,
            encryption_old_keys: Vec::new(),
        }
    }
}

/// `storage.min_free_bytes` when unset: this share of the filesystem...
const DEFAULT_MIN_FREE_SHARE: f64 = 0.05;
/// ...and at most this much.
const DEFAULT_MIN_FREE_CAP: u64 = 2 << 30;

/// Bytes of `limits.memory_high_watermark` each pending job is allowed
/// when `limits.max_pending` is unset. A pending job of 256 bytes costs
/// about 130 bytes of RSS (1,000,000 pending: 188 MB, 60 MB of it the idle
/// node); the rest is room for larger payloads.
pub const PENDING_JOB_BUDGET: u64 = 1024;

impl Storage {
    /// `min_free_bytes` in bytes for a filesystem of `fs_bytes`.
    pub fn min_free_for(&self, fs_bytes: u64) -> u64 {
        match self.min_free_bytes {
            None => ((fs_bytes as f64 * DEFAULT_MIN_FREE_SHARE) as u64).min(DEFAULT_MIN_FREE_CAP),
            Some(a) => a.of(fs_bytes),
        }
    }
}

impl Limits {
    /// `memory_high_watermark` in bytes, for a node that may use
    /// `memory_bytes`.
    pub fn watermark_for(&self, memory_bytes: u64) -> u64 {
        self.memory_high_watermark.of(memory_bytes)
    }

    /// `max_pending` as set, or derived from the watermark of a node that
    /// may use `memory_bytes`.
    pub fn max_pending_for(&self, memory_bytes: u64) -> u64 {
        self.max_pending
            .unwrap_or_else(|| self.watermark_for(memory_bytes) / PENDING_JOB_BUDGET)
    }
}

/// An amount given as a share of a whole (`0.5`, `"50%"`) or as bytes
/// (`1073741824`, `"1 GiB"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// A fraction of the whole, 0 to 1.
    Share(f64),
    /// A number of bytes, whatever the whole.
    Bytes(u64),
}

impl Amount {
    /// The amount of a whole of `whole` bytes.
    pub fn of(self, whole: u64) -> u64 {
        match self {
            Amount::Share(f) => (whole as f64 * f) as u64,
            Amount::Bytes(b) => b,
        }
    }
}

impl std::str::FromStr for Amount {
    type Err = String;
    fn from_str(s: &str) -> Result<Amount, String> {
        let t = s.trim();
        if let Some(pct) = t.strip_suffix('%') {
            let f: f64 = pct
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a percentage like \"50%\""))?;
            return Amount::share(f / 100.0);
        }
        t.parse::<bytesize::ByteSize>()
            .map(|b| Amount::Bytes(b.as_u64()))
            .map_err(|_| format!("{s:?} is not a size like \"2 GiB\" or a share like \"50%\""))
    }
}

impl Amount {
    fn share(f: f64) -> Result<Amount, String> {
        if (0.0..=1.0).contains(&f) {
            Ok(Amount::Share(f))
        } else {
            Err(format!("a share must be from 0 to 1 (0% to 100%), not {f}"))
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Amount::Share(f) => s.serialize_str(&format!("{}%", f * 100.0)),
            Amount::Bytes(b) => s.serialize_u64(*b),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a share (0.5 or \"50%\") or a size (bytes, or \"2 GiB\")")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Amount, E> {
                Amount::share(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Amount, E> {
                u64::try_from(v)
                    .map(Amount::Bytes)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount::Bytes(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Amount, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[cluster]`: what members ask of each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// A node whose wall clock is further than this from a majority of the
    /// voters' does not campaign or lead (CockroachDB's max-offset); 0
    /// turns the check off. Durations never depend on it: log time runs on
    /// the leader's monotonic clock.
    #[serde(with = "humantime_serde")]
    pub max_clock_offset: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            max_clock_offset: Duration::from_millis(500),
        }
    }
}

/// `[tracing]`: node spans (a job's enqueue, lease and completion, each a
/// child of the job's `traceparent`) exported over OTLP/gRPC. Off unless
/// `otlp_endpoint` is set; off, it costs nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// An OTLP/gRPC collector: `http://127.0.0.1:4317`. Empty: no spans.
    pub otlp_endpoint: String,
}

/// `[log]`: how the node writes its own log (to stderr).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `json` (one JSON object a line) or `text`.
    pub format: String,
    /// A tracing filter such as `info` or `drover=debug,info`.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: "json".into(),
            level: "info".into(),
        }
    }
}

impl ScheduleConfig {
    /// The replicated form, with the job checked as an enqueue would be.
    pub fn policy(&self) -> Result<crate::policies::SchedulePolicy, String> {
        let run_once = match self.misfire.as_str() {
            "skip" => false,
            "run_once" => true,
            other => return Err(format!("misfire {other:?} is not `skip` or `run_once`")),
        };
        let j = &self.job;
        let request = crate::job::JobRequest {
            queue: j.queue.clone(),
            job_type: j.job_type.clone(),
            tenant: j.tenant.clone(),
            run_id: String::new(),
            priority: j.priority,
            payload: j.payload.clone().into(),
            idempotency_key: String::new(),
            delay_ms: 0,
            labels: j.labels.clone(),
            concurrency_key: j.concurrency_key.clone(),
            concurrency_limit: 0,
            rate_key: j.rate_key.clone(),
            rate_limit: String::new(),
            ..Default::default()
        };
        let job = request
            .validate(crate::job::JobLimits {
                max_payload_bytes: 64 * 1024,
            })
            .map_err(|e| format!("job: {e}"))?;
        Ok(crate::policies::SchedulePolicy {
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            run_once,
            job: crate::policies::JobTemplate {
                queue: job.queue,
                job_type: job.job_type,
                tenant: job.tenant,
                priority: job.priority,
                payload: job.payload,
                labels: job.labels,
            },
        })
    }
}

impl Config {
    /// Reads and validates a TOML file. Unknown keys are errors so a typo is
    /// not silently ignored.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        config.source_sha256 = sha256_hex(text.as_bytes());
        Ok(config)
    }

    /// Relative paths in a file are relative to the file's directory, not
    /// to wherever the node happens to be started from: `data_dir`,
    /// `[backup] dir`, the `[tls]` files and the encryption keys.
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.data_dir);
        if let Some(d) = self.backup.dir.as_mut() {
            resolve(d);
        }
        if let Some(t) = self.tls.as_mut() {
            resolve(&mut t.cert);
            resolve(&mut t.key);
            resolve(&mut t.ca);
        }
        if let Some(k) = self.storage.encryption_key_file.as_mut() {
            resolve(k);
        }
        for k in &mut self.storage.encryption_old_keys {
            resolve(k);
        }
    }

    /// The keys of `[storage] encryption_key_file` and `encryption_old_keys`.
    pub fn sealing_keys(&self) -> Result<crate::sealing::Keys, crate::sealing::SealingError> {
        crate::sealing::Keys::load(
            self.storage.encryption_key_file.as_deref(),
            &self.storage.encryption_old_keys,
        )
    }

    /// Parses TOML text, unknown keys refused; does not validate (see
    /// [`Config::validate`]) nor resolve relative paths.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(invalid("node_id", "must be 1 or more"));
        }
        if self.cluster_id.is_empty() {
            return Err(invalid("cluster_id", "must not be empty"));
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in &self.peers {
            if p.id == 0 || !ids.insert(p.id) {
                return Err(invalid(
                    "peers",
                    format!(
                        "peer id {} is 0 or listed twice; ids must be unique and 1 or more",
                        p.id
                    ),
                ));
            }
            if p.addr.is_empty() {
                return Err(invalid("peers", format!("peer {} has no addr", p.id)));
            }
        }
        if self.join && self.peers.is_empty() {
            return Err(invalid(
                "join",
                "a joining node needs [[peers]] listing the members it will hear from",
            ));
        }
        if !self.join && !self.peers.is_empty() && !ids.contains(&self.node_id) {
            return Err(invalid(
                "peers",
                format!("this node (node_id {}) is not in the list; list every member, this node included", self.node_id),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        for (key, d) in [
            ("jobs.retention", self.jobs.retention),
            ("jobs.dead_retention", self.jobs.dead_retention),
            ("jobs.idempotency_ttl", self.jobs.idempotency_ttl),
            ("jobs.audit_retention", self.jobs.audit_retention),
        ] {
            if d < Duration::from_secs(1) {
                return Err(invalid(key, "must be at least 1s"));
            }
        }
        if self.limits.max_payload_bytes == 0 || self.limits.max_payload_bytes > 64 * 1024 * 1024 {
            return Err(invalid(
                "limits.max_payload_bytes",
                "must be 1 to 67108864 (64 MiB)",
            ));
        }
        if self.limits.max_jobs_per_request == 0 {
            return Err(invalid("limits.max_jobs_per_request", "must be 1 or more"));
        }
        if self.limits.max_worker_capacity == 0 {
            return Err(invalid("limits.max_worker_capacity", "must be 1 or more"));
        }
        if self.jobs.heartbeat_timeout < Duration::from_millis(100) {
            return Err(invalid("jobs.heartbeat_timeout", "must be at least 100ms"));
        }
        if self.jobs.retry_max_delay < self.jobs.retry_base_delay {
            return Err(invalid(
                "jobs.retry_max_delay",
                "must not be less than jobs.retry_base_delay",
            ));
        }
        if self.raft.tick_interval.is_zero() {
            return Err(invalid("raft.tick_interval", "must be more than 0"));
        }
        if self.raft.heartbeat_ticks == 0 || self.raft.election_ticks <= self.raft.heartbeat_ticks {
            return Err(invalid(
                "raft.election_ticks",
                "must be more than raft.heartbeat_ticks, which must be 1 or more",
            ));
        }
        if self.raft.snapshot_every == 0 {
            return Err(invalid("raft.snapshot_every", "must be 1 or more"));
        }
        self.validate_tokens()?;
        self.validate_policies()?;
        let otlp = &self.tracing.otlp_endpoint;
        if !otlp.is_empty()
            && !((otlp.starts_with("http://") || otlp.starts_with("https://"))
                && otlp.parse::<http::Uri>().is_ok_and(|u| u.host().is_some()))
        {
            return Err(invalid(
                "tracing.otlp_endpoint",
                format!("{otlp:?} is not a collector's URL: give http://HOST:4317 (OTLP over gRPC), or leave it empty for no spans"),
            ));
        }
        if !matches!(self.log.format.as_str(), "json" | "text") {
            return Err(invalid(
                "log.format",
                format!("{:?} is not `json` or `text`", self.log.format),
            ));
        }
        Ok(())
    }

    fn validate_tokens(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        for t in &self.tokens {
            if t.name.is_empty() || !names.insert(t.name.as_str()) {
                return Err(invalid(
                    "tokens",
                    format!(
                        "token name {:?} is empty or listed twice; names must be unique",
                        t.name
                    ),
                ));
            }
            crate::token::parse_hash(&t.hash).map_err(|reason| {
                invalid("tokens", format!("token {:?}: `hash` {reason}", t.name))
            })?;
            t.check_scope()
                .map_err(|reason| invalid("tokens", format!("token {:?}: {reason}", t.name)))?;
        }
        if self.tokens.is_empty() {
            for (key, addr) in [("grpc_addr", self.grpc_addr), ("http_addr", self.http_addr)] {
                if !addr.ip().is_loopback() {
                    return Err(invalid(
                        key,
                        format!("{addr} is not a loopback address and no [[tokens]] are configured, so anyone who can reach it could change the cluster; add tokens (`drover token new --name NAME --role admin` prints one) or bind 127.0.0.1"),
                    ));
                }
            }
        } else if self.peers.len() > 1 || self.join {
            let peer = crate::token::hash(&self.peer_token);
            let listed = self.tokens.iter().any(|t| {
                t.role == Role::Peer && crate::token::parse_hash(&t.hash).ok() == Some(peer)
            });
            if self.peer_token.is_empty() || !listed {
                return Err(invalid(
                    "peer_token",
                    "a cluster with [[tokens]] needs `peer_token`, whose hash is listed in [[tokens]] with role \"peer\" (`drover token new --name cluster --role peer` prints both); every node uses the same",
                ));
            }
        }
        Ok(())
    }

    /// What this node shows its peers: the peer token when the cluster has
    /// tokens, and with TLS the cluster CA (and its own certificate, for
    /// mutual TLS). Errors name the key whose file cannot be read.
    pub fn peer_credentials(&self) -> Result<crate::wire::Credentials, ConfigError> {
        let read = |key: &'static str, path: &Path| {
            std::fs::read(path)
                .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
        };
        let tls = match &self.tls {
            None => None,
            Some(t) => Some(crate::wire::ClientTls {
                ca: read("tls.ca", &t.ca)?,
                identity: if t.peer_mtls {
                    Some((read("tls.cert", &t.cert)?, read("tls.key", &t.key)?))
                } else {
                    None
                },
            }),
        };
        let token = (!self.tokens.is_empty()).then_some(self.peer_token.as_str());
        crate::wire::Credentials::new(token, tls).map_err(|reason| invalid("peer_token", reason))
    }

    /// The ids of the initial voters: the peers, or this node alone.
    pub fn initial_voters(&self) -> Vec<u64> {
        if self.peers.is_empty() {
            vec![self.node_id]
        } else {
            self.peers.iter().map(|p| p.id).collect()
        }
    }

    /// The limits every new job is checked against (`limits.max_payload_bytes`).
    pub fn job_limits(&self) -> JobLimits {
        JobLimits {
            max_payload_bytes: self.limits.max_payload_bytes,
        }
    }

    /// The policies this config asks for. The leader proposes them when the
    /// machine's differ; apply never reads them from here.
    pub fn policies(&self) -> Policies {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Policies {
            jobs: JobPolicies {
                heartbeat_timeout_ms: ms(self.jobs.heartbeat_timeout),
                max_retries: self.jobs.max_retries,
                retry_base_delay_ms: ms(self.jobs.retry_base_delay),
                retry_max_delay_ms: ms(self.jobs.retry_max_delay),
            },
            queues: self
                .queues
                .iter()
                .map(|(name, q)| {
                    let policy = QueuePolicy {
                        max_depth: q.max_depth,
                        concurrency_limit: q.concurrency_limit,
                        heartbeat_timeout_ms: q.heartbeat_timeout.map(ms),
                        sla_ms: q.sla.map(ms),
                        aging_after_ms: q.aging_after.map(ms),
                        timeout_ms: q.timeout.map(ms),
                        quarantine_failure_rate: q.quarantine_failure_rate,
                        quarantine_window_ms: q.quarantine_window.map(ms),
                        quarantine_min_jobs: q.quarantine_min_jobs,
                        quarantine_for_ms: q.quarantine_for.map(ms),
                        quarantine_action: q.quarantine_action,
                        workers: q.workers,
                        canary: q.canary.as_ref().map(|c| crate::command::CanaryRule {
                            version: c.version.clone(),
                            percent: c.percent.min(100),
                            max_wait_ms: c.max_wait.map_or(crate::policies::CANARY_MAX_WAIT_MS, ms),
                        }),
                        canary_judge: q.canary.as_ref().map(CanaryConfig::judge),
                        shed_when: q.shed_when.as_ref().map(ShedWhenConfig::policy),
                        shed_types: q.shed_types.clone(),
                        breaker: q.breaker.as_ref().map(|b| crate::policies::QueueBreaker {
                            enabled: b.enabled,
                            threshold: b.threshold,
                            window_ms: b.window.map(ms),
                            cooldown_ms: b.cooldown.map(ms),
                        }),
                        // Validated: keys are priorities 1 to 5.
                        shed: q
                            .shed
                            .iter()
                            .filter_map(|(p, f)| Some((p.parse().ok()?, *f)))
                            .collect(),
                    };
                    (name.clone(), policy)
                })
                .collect(),
            tenants: self
                .tenants
                .iter()
                .map(|(name, t)| {
                    let policy = TenantPolicy {
                        weight: t.weight,
                        budgets: t.budgets.policy(),
                    };
                    (name.clone(), policy)
                })
                .collect(),
            budgets: self.budgets.policy(),
            max_pending: self
                .limits
                .max_pending_for(crate::resources::memory_limit().unwrap_or(0)),
            schedules: self
                .schedules
                .iter()
                .filter_map(|(name, sc)| Some((name.clone(), sc.policy().ok()?)))
                .collect(),
            retry: self
                .retry
                .iter()
                .filter_map(|(t, r)| Some((t.clone(), r.policy().ok()?)))
                .collect(),
            keys: self
                .limits
                .keys
                .iter()
                .map(|(prefix, l)| {
                    let limit = crate::policies::KeyLimit {
                        concurrency: l.concurrency,
                        // Validated.
                        rate: l
                            .rate
                            .as_deref()
                            .and_then(|r| crate::policies::Rate::parse(r).ok()),
                    };
                    (prefix.clone(), limit)
                })
                .collect(),
        }
    }

    fn validate_policies(&self) -> Result<(), ConfigError> {
        for (job_type, r) in &self.retry {
            if job_type != crate::policies::DEFAULTS {
                crate::job::validate_name("job_type", job_type)
                    .map_err(|e| invalid("retry", format!("[retry.{job_type:?}]: {e}")))?;
            }
            r.policy()
                .map_err(|e| invalid("retry", format!("[retry.{job_type:?}] {e}")))?;
        }
        for (prefix, l) in &self.limits.keys {
            if l.concurrency == Some(0) {
                return Err(invalid(
                    "limits",
                    format!("[limits.{prefix:?}] concurrency must be 1 or more (leave it out for no limit)"),
                ));
            }
            if let Some(rate) = &l.rate {
                crate::policies::Rate::parse(rate)
                    .map_err(|e| invalid("limits", format!("[limits.{prefix:?}] rate: {e}")))?;
            }
            if l.concurrency.is_none() && l.rate.is_none() {
                return Err(invalid(
                    "limits",
                    format!("[limits.{prefix:?}] sets neither concurrency nor rate"),
                ));
            }
        }
        for (name, q) in &self.queues {
            if name != crate::policies::DEFAULTS {
                crate::job::validate_queue(name)
                    .map_err(|e| invalid("queues", format!("[queues.{name:?}]: {e}")))?;
            }
            if q.max_depth == Some(0) || q.concurrency_limit == Some(0) {
                return Err(invalid(
                    "queues",
                    format!("[queues.{name:?}]: max_depth and concurrency_limit must be 1 or more (leave them out for no limit)"),
                ));
            }
            if q.heartbeat_timeout
                .is_some_and(|d| d < Duration::from_millis(100))
            {
                return Err(invalid(
                    "queues",
                    format!("[queues.{name:?}] heartbeat_timeout must be at least 100ms"),
                ));
            }
            if q.initial_batch_size == Some(0)
                || q.max_batch_size == Some(0)
                || q.initial_batch_size
                    .zip(q.max_batch_size)
                    .is_some_and(|(i, m)| i > m)
            {
                return Err(invalid(
                    "queues",
                    format!("[queues.{name:?}] initial_batch_size and max_batch_size must be 1 or more, initial at most max"),
                ));
            }
            if let Some(b) = &q.breaker {
                if b.threshold == Some(0)
                    || b.window.is_some_and(|d| d.is_zero())
                    || b.cooldown.is_some_and(|d| d.is_zero())
                {
                    return Err(invalid(
                        "queues",
                        format!("[queues.{name:?}.breaker] threshold, window and cooldown must be more than 0"),
                    ));
                }
            }
            if q.quarantine_failure_rate
                .is_some_and(|r| !(r > 0.0 && r <= 1.0))
            {
                return Err(invalid(
                    "queues",
                    format!("[queues.{name:?}] quarantine_failure_rate must be a fraction of a worker's results in (0, 1], such as 0.5"),
                ));
            }
            if q.quarantine_window.is_some_and(|d| d.is_zero())
                || q.quarantine_for.is_some_and(|d| d.is_zero())
                || q.quarantine_min_jobs == Some(0)
            {
                return Err(invalid(
                    "queues",
                    format!("[queues.{name:?}] quarantine_window, quarantine_for and quarantine_min_jobs must be more than 0"),
                ));
            }
            if let Some(c) = &q.canary {
                if c.percent > 100 || c.version.is_empty() || c.version.len() > 128 {
                    return Err(invalid(
                        "queues",
                        format!("[queues.{name:?}.canary] needs a version of 1 to 128 bytes and a percent of 0 to 100, such as version = \"v4\", percent = 10"),
                    ));
                }
                let judged = !c.abort_on.is_empty() || c.promote_after.is_some();
                let ended_shape =
                    c.percent == 0 || (c.percent == 100 && c.max_wait.is_some_and(|d| d.is_zero()));
                if judged && ended_shape {
                    return Err(invalid(
                        "queues",
                        format!("[queues.{name:?}.canary] at 0% (or 100% with max_wait 0) sends no share to compare, so abort_on and promote_after cannot judge it: give a percent of 1 to 99"),
                    ));
                }
                if let Some(problem) = c.judge_problem() {
                    return Err(invalid(
                        "queues",
                        format!("[queues.{name:?}.canary] {problem}"),
                    ));
                }
            }
            if let Some(problem) = q.workers.and_then(|w| w.problem()) {
                return Err(invalid(
                    "queues",
                    format!("[queues.{name:?}] workers {problem}, such as workers = {{ min = 2, max = 10, expected = 4 }}"),
                ));
            }
            if let Some(problem) = q.shed_when.as_ref().and_then(ShedWhenConfig::problem) {
                return Err(invalid("queues", format!("[queues.{name:?}] {problem}")));
            }
            for t in &q.shed_types {
                crate::job::validate_name("job type", t)
                    .map_err(|e| invalid("queues", format!("[queues.{name:?}] shed_types: {e}")))?;
            }
            for (p, f) in &q.shed {
                let priority_ok = matches!(p.parse::<u8>(), Ok(1..=5));
                if !(priority_ok && *f > 0.0 && *f <= 1.0) {
                    return Err(invalid(
                        "queues",
                        format!("[queues.{name:?}] shed: {p} = {f} must be a priority 1 to 5 and a fraction of max_depth in (0, 1]"),
                    ));
                }
            }
            if !q.shed.is_empty()
                && q.max_depth.is_none()
                && self
                    .queues
                    .get(crate::policies::DEFAULTS)
                    .and_then(|d| d.max_depth)
                    .is_none()
            {
                return Err(invalid(
                    "queues",
                    format!("[queues.{name:?}] shed needs a max_depth (here or in [queues.\"*\"])"),
                ));
            }
        }
        for (name, sc) in &self.schedules {
            crate::job::validate_name("schedule", name)
                .map_err(|e| invalid("schedules", format!("[schedules.{name:?}]: {e}")))?;
            crate::schedules::parse(&sc.cron, &sc.timezone)
                .map_err(|e| invalid("schedules", format!("[schedules.{name:?}] {e}")))?;
            sc.policy()
                .map_err(|e| invalid("schedules", format!("[schedules.{name:?}] {e}")))?;
        }
        self.budgets
            .validate("budgets")
            .map_err(|e| invalid("budgets", e))?;
        if self
            .backup
            .every
            .is_some_and(|d| d < Duration::from_secs(1))
            || self.backup.keep == 0
        {
            return Err(invalid(
                "backup",
                "[backup] every must be at least 1s, and keep at least 1",
            ));
        }
        if self.budgets.daily_cost_cap_usd.is_some() {
            return Err(invalid(
                "budgets",
                "[budgets] daily_cost_cap_usd is per tenant: set it in [tenants.NAME.budgets]",
            ));
        }
        for (name, t) in &self.tenants {
            t.budgets
                .validate(&format!("tenants.{name:?}.budgets"))
                .map_err(|e| invalid("tenants", e))?;
            if t.weight == 0 || t.weight > 1000 {
                return Err(invalid(
                    "tenants",
                    format!("[tenants.{name:?}] weight must be 1 to 1000"),
                ));
            }
        }
        Ok(())
    }
}

/// A file's SHA-256, as hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_the_defaults() {
        let text = include_str!("../config/drover.toml");
        let parsed = Config::from_toml(text).unwrap();
        parsed.validate().unwrap();
        assert_eq!(
            toml::to_string(&parsed).unwrap(),
            toml::to_string(&Config::default()).unwrap(),
            "config/drover.toml must document the defaults"
        );
    }

    #[test]
    fn relative_paths_in_a_file_resolve_against_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "data_dir = \"data\"\n[backup]\ndir = \"../b\"\n[tls]\ncert = \"c.pem\"\nkey = \"/abs/k.pem\"\nca = \"ca.pem\"\n",
        )
        .unwrap();
        let c = Config::from_file(&file).unwrap();
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.backup.dir, Some(dir.path().join("../b")));
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, dir.path().join("c.pem"));
        assert_eq!(tls.key, PathBuf::from("/abs/k.pem"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = Config::from_toml("nod_id = 3").unwrap_err().to_string();
        assert!(err.contains("nod_id"), "{err}");
        let err = Config::from_toml("[jobs]\nheartbeat_timeout = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("heartbeat_timeout"), "{err}");
        let c = Config::from_toml("node_id = 0").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("node_id"));
    }

    #[test]
    fn key_limits_are_read_by_prefix_and_bad_ones_named() {
        let c = Config::from_toml(
            "[limits]\nmax_pending = 10\n[limits.\"api:\"]\nconcurrency = 2\nrate = \"10/s\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        let p = c.policies();
        assert_eq!(p.max_pending, 10);
        let l = p.key_limit("api:acme").unwrap();
        assert_eq!(l.concurrency, Some(2));
        assert_eq!(
            l.rate,
            Some(crate::policies::Rate {
                count: 10,
                period_ms: 1000
            })
        );
        assert!(p.key_limit("web:x").is_none());
        // A misspelt setting is not taken for a prefix.
        let err = Config::from_toml("[limits]\nmax_pendin = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_pending") && err.contains("PREFIX"),
            "{err}"
        );
        let err = Config::from_toml("[limits.\"a\"]\nconcurency = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("concurency"), "{err}");
        for bad in ["concurrency = 0", "rate = \"ten/s\"", "rate = \"0/s\""] {
            let c = Config::from_toml(&format!("[limits.\"a\"]\n{bad}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("[limits.\"a\"]"), "{bad}: {err}");
        }
    }
}
