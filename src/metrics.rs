//! Prometheus metrics. Values are read from what the driver publishes at
//! scrape time, so the hot path does no metrics work at all. The caller
//! passes them in: this module knows the values, not where they live.

use std::path::Path;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::machine::MachineStats;
use crate::status::NodeStatus;

/// The histogram of what each finished run used of each budget.
pub const RUN_BUDGET_RATIO: &str = "drover_run_budget_used_ratio";
/// Histogram of how long jobs waited from ready to their lease, by queue.
pub const JOB_WAIT: &str = "drover_job_wait_seconds";
/// Histogram of how long leases ran until their result, a cancel or a
/// take-back, by queue.
pub const JOB_RUN: &str = "drover_job_run_seconds";
/// Histogram of this node's enqueue requests, gRPC and HTTP, from receipt to
/// answer, by outcome.
pub const ENQUEUE_LATENCY: &str = "drover_enqueue_duration_seconds";
/// Histogram of worker reports this node put through the log, from receipt
/// to acknowledgement, by kind.
pub const WORKER_RPC_LATENCY: &str = "drover_worker_rpc_duration_seconds";
/// Counter of the leader changes this node saw, to another node or to none.
pub const LEADER_CHANGES: &str = "drover_raft_leader_changes_total";
/// Histogram of commands per log entry this node proposed as leader.
pub const COMMANDS_PER_ENTRY: &str = "drover_raft_commands_per_entry";
/// Histogram of how long this node took to write each snapshot.
pub const SNAPSHOT_DURATION: &str = "drover_snapshot_duration_seconds";

/// When this node last wrote a scheduled backup (s since the epoch; 0:
/// never). Kept here and set at every scrape, so the gauge never idles
/// out between backups hours apart.
pub static LAST_BACKUP_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Histogram buckets of times in seconds: a millisecond to an hour.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; starts again at 0 when the node restarts.
    Counter,
    /// A value as it is now.
    Gauge,
    /// Observations counted in buckets.
    Histogram,
}

/// Whose value a metric is: `Cluster` (every node reports the cluster's
/// value, from the replicated state: do not sum across nodes) or `Node`
/// (this node's own: sum them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The cluster's value, the same on every node: do not sum across nodes.
    Cluster,
    /// This node's own value: sum across nodes.
    Node,
}

/// HTTP requests by route template and status code (api::request_metrics).
pub const HTTP_REQUESTS: &str = "drover_http_requests_total";
/// How long HTTP requests took until their answer's head, by route.
pub const HTTP_DURATION: &str = "drover_http_request_duration_seconds";
/// gRPC calls by method and status code.
pub const GRPC_REQUESTS: &str = "drover_grpc_requests_total";
/// How long gRPC calls took until their status, by method (a stream: its
/// whole life).
pub const GRPC_DURATION: &str = "drover_grpc_request_duration_seconds";
/// When a certificate stops being valid (notAfter), by cert: `node` (this
/// node's), `ca` (the earliest of `tls.ca`), `peer-N` (what member N serves).
pub const TLS_CERT_EXPIRY: &str = "drover_tls_cert_expiry_timestamp_seconds";

/// Every metric drover exports, with its HELP text; docs/metrics.md lists
/// the same (a test checks it).
pub const METRICS: &[(&str, Kind, Scope, &str)] = &[
    (
        "drover_jobs",
        Kind::Gauge,
        Scope::Cluster,
        "Jobs by queue and state (scheduled, ready, leased, succeeded, dead, cancelled, waiting).",
    ),
    (
        "drover_pending_jobs",
        Kind::Gauge,
        Scope::Cluster,
        "Ready jobs by queue and priority (1 highest to 5).",
    ),
    (
        "drover_queue_blocked_jobs",
        Kind::Gauge,
        Scope::Cluster,
        "Ready jobs held back, by queue and reason (paused, tenant_paused, breaker, daily_cap, budget, key_limit, concurrency_limit), each counted under the first reason that holds it; `drover queues why QUEUE` says what holds them. What the connected workers add (version, no_workers) is in the API, not here: see drover_queue_workers.",
    ),
    (
        "drover_jobs_enqueued_total",
        Kind::Counter,
        Scope::Cluster,
        "Jobs enqueued, by queue and job_type, as this node applied them since it started.",
    ),
    (
        "drover_jobs_dispatched_total",
        Kind::Counter,
        Scope::Cluster,
        "Leases granted, by queue and job_type, as this node applied them since it started.",
    ),
    (
        "drover_jobs_completed_total",
        Kind::Counter,
        Scope::Cluster,
        "Jobs completed, by queue and job_type, as this node applied them since it started.",
    ),
    (
        "drover_jobs_failed_total",
        Kind::Counter,
        Scope::Cluster,
        "Failed attempts, by queue, job_type and error_class, as this node applied them since it started.",
    ),
    (
        "drover_jobs_retried_total",
        Kind::Counter,
        Scope::Cluster,
        "Failed attempts scheduled for a retry, by queue and job_type.",
    ),
    (
        "drover_jobs_dead_total",
        Kind::Counter,
        Scope::Cluster,
        "Jobs dead-lettered, by queue and job_type.",
    ),
    (
        "drover_jobs_cancelled_total",
        Kind::Counter,
        Scope::Cluster,
        "Jobs cancelled, by queue and job_type.",
    ),
    (
        "drover_jobs_escalated_total",
        Kind::Counter,
        Scope::Cluster,
        "Exhausted jobs moved to their on_exhausted queue, by the queue and job_type they failed in.",
    ),
    (
        "drover_jobs_requeued_total",
        Kind::Counter,
        Scope::Cluster,
        "Leases taken back without a result, by queue and reason (expired, stuck, timeout).",
    ),
    (
        "drover_jobs_shed_total",
        Kind::Counter,
        Scope::Node,
        "Enqueues this node refused by load shedding, by queue and priority.",
    ),
    (
        "drover_sla_missed_total",
        Kind::Counter,
        Scope::Cluster,
        "Leases of jobs that waited past their queue's sla, by queue and priority.",
    ),
    (
        "drover_dead_jobs",
        Kind::Gauge,
        Scope::Cluster,
        "Dead jobs kept, by queue and last error class.",
    ),
    (
        "drover_finished_jobs",
        Kind::Gauge,
        Scope::Cluster,
        "Finished jobs kept until retention removes them.",
    ),
    (
        "drover_breaker_state",
        Kind::Gauge,
        Scope::Cluster,
        "Circuit breaker by queue, tenant and error class: 0 closed, 1 half-open, 2 open.",
    ),
    (
        "drover_workers_quarantined",
        Kind::Gauge,
        Scope::Cluster,
        "Workers kept from new leases for failing too often.",
    ),
    (
        "drover_worker_quarantined",
        Kind::Gauge,
        Scope::Cluster,
        "1 while the worker is quarantined, 0 after, by worker (the first [metrics] worker_series ids; the rest as other, counted).",
    ),
    (
        "drover_worker_results_total",
        Kind::Counter,
        Scope::Node,
        "Results the workers connected to this node reported, by worker (the first [metrics] worker_series ids; the rest as other) and result (succeeded, failed).",
    ),
    (
        "drover_active_workers",
        Kind::Gauge,
        Scope::Node,
        "Workers connected to this node.",
    ),
    (
        "drover_queue_workers",
        Kind::Gauge,
        Scope::Node,
        "Workers connected to this node that serve the queue, by queue (a worker of two queues counts in both).",
    ),
    (
        "drover_queue_worker_capacity",
        Kind::Gauge,
        Scope::Node,
        "Jobs those workers may hold at once, by queue.",
    ),
    (
        "drover_queue_worker_held",
        Kind::Gauge,
        Scope::Node,
        "Leases those workers hold, by queue.",
    ),
    (
        "drover_worker_heartbeat_age_seconds",
        Kind::Gauge,
        Scope::Node,
        "Time since each worker connected to this node was last heard from, by worker (the first [metrics] worker_series ids; other: the longest of the rest).",
    ),
    (
        "drover_queue_desired_workers",
        Kind::Gauge,
        Scope::Cluster,
        "Workers the queue wants by Little's law (arrival rate x run time, plus its backlog drained in 5 minutes), clamped to [queues.NAME] workers min and max, by queue.",
    ),
    (
        "drover_queue_expected_workers",
        Kind::Gauge,
        Scope::Cluster,
        "[queues.NAME] workers.expected, by queue (queues that set it).",
    ),
    (
        "drover_chaos_injected_total",
        Kind::Counter,
        Scope::Node,
        "Faults this node injected into worker streams (drover chaos), by queue and kind (drop, delay, revoke, fail).",
    ),
    (
        "drover_canary_comparison",
        Kind::Gauge,
        Scope::Cluster,
        "A canary against its control, by queue and metric: success_rate_delta (canary minus control), duration_ratio and cost_ratio (canary over control).",
    ),
    (
        "drover_canary_verdict",
        Kind::Gauge,
        Scope::Cluster,
        "The verdict of each canary metric, by queue and metric: 1 worse (significantly, past its threshold), 0 ok, -1 not enough data.",
    ),
    (
        "drover_queue_oldest_ready_seconds",
        Kind::Gauge,
        Scope::Cluster,
        "How long the longest-waiting ready job of each queue has waited (0 when none is ready), by queue.",
    ),
    (
        JOB_WAIT,
        Kind::Histogram,
        Scope::Cluster,
        "Time jobs waited from ready to their lease, by queue and job type (the types [metrics] job_types names; the rest as other).",
    ),
    (
        JOB_RUN,
        Kind::Histogram,
        Scope::Cluster,
        "Time leases ran until their result, cancel or take-back, by queue and job type (the types [metrics] job_types names; the rest as other).",
    ),
    (
        ENQUEUE_LATENCY,
        Kind::Histogram,
        Scope::Node,
        "Enqueue requests (gRPC and HTTP) this node answered, from receipt to answer, by outcome (ok, refused).",
    ),
    (
        WORKER_RPC_LATENCY,
        Kind::Histogram,
        Scope::Node,
        "Worker reports this node put through the log, from receipt to acknowledgement, by kind (complete, fail, heartbeat).",
    ),
    (
        "drover_budget_exceeded_total",
        Kind::Counter,
        Scope::Cluster,
        "Times a run went over a budget (or a tenant over its daily cap), by budget and tenant.",
    ),
    (
        "drover_runs_over_budget",
        Kind::Gauge,
        Scope::Cluster,
        "Runs held by a budget.",
    ),
    (
        "drover_tenants_over_daily_cap",
        Kind::Gauge,
        Scope::Cluster,
        "Tenants held by their daily cost cap.",
    ),
    (
        "drover_tenant_cost_microusd_total",
        Kind::Counter,
        Scope::Cluster,
        "Cost workers reported, by tenant, in millionths of a USD.",
    ),
    (
        "drover_tenant_lease_seconds_total",
        Kind::Counter,
        Scope::Cluster,
        "Lease time jobs held, by tenant.",
    ),
    (
        RUN_BUDGET_RATIO,
        Kind::Histogram,
        Scope::Cluster,
        "What each finished run used of each budget (1 = all of it), by budget.",
    ),
    (
        "drover_requests_refused_total",
        Kind::Counter,
        Scope::Node,
        "Requests this node refused before handling them (auth, rate limits), by code.",
    ),
    (
        HTTP_REQUESTS,
        Kind::Counter,
        Scope::Node,
        "HTTP requests this node answered, by route template (unmatched: no route) and status code.",
    ),
    (
        HTTP_DURATION,
        Kind::Histogram,
        Scope::Node,
        "How long HTTP requests took until their answer's head, by route template.",
    ),
    (
        GRPC_REQUESTS,
        Kind::Counter,
        Scope::Node,
        "gRPC calls this node answered, by method (unknown: not one drover serves) and status code (OK, NotFound, Canceled, ...).",
    ),
    (
        GRPC_DURATION,
        Kind::Histogram,
        Scope::Node,
        "How long gRPC calls took until their status, by method (a stream: its whole life).",
    ),
    (
        TLS_CERT_EXPIRY,
        Kind::Gauge,
        Scope::Node,
        "When a certificate stops being valid, as Unix seconds, by cert: node (this node's tls.cert), ca (the earliest in tls.ca), peer-N (what member N serves, checked every 10 minutes).",
    ),
    (
        "drover_data_dir_bytes",
        Kind::Gauge,
        Scope::Node,
        "Bytes this node's data dir takes on disk.",
    ),
    (
        "drover_backup_last_success_timestamp_seconds",
        Kind::Gauge,
        Scope::Node,
        "When this node last wrote a scheduled backup (it does while it leads).",
    ),
    (
        "drover_backup_failures_total",
        Kind::Counter,
        Scope::Node,
        "Scheduled backups this node failed to write.",
    ),
    (
        "drover_data_dir_free_bytes",
        Kind::Gauge,
        Scope::Node,
        "Bytes free on the filesystem of this node's data dir.",
    ),
    (
        "drover_data_dir_min_free_bytes",
        Kind::Gauge,
        Scope::Node,
        "storage.min_free_bytes as this node resolved it: under it, drover_disk_full is 1 (0: not checked).",
    ),
    (
        "drover_disk_full",
        Kind::Gauge,
        Scope::Node,
        "1 while this node's free space is under storage.min_free_bytes (the cluster then refuses new jobs if this node leads or a majority is short).",
    ),
    (
        "drover_memory_rss_bytes",
        Kind::Gauge,
        Scope::Node,
        "This node's resident memory (RSS).",
    ),
    (
        "drover_memory_limit_bytes",
        Kind::Gauge,
        Scope::Node,
        "The memory this node may use: its cgroup's limit, else physical memory.",
    ),
    (
        "drover_memory_high_watermark_bytes",
        Kind::Gauge,
        Scope::Node,
        "limits.memory_high_watermark in bytes: over it, drover_memory_high is 1 (0: not checked).",
    ),
    (
        "drover_memory_high",
        Kind::Gauge,
        Scope::Node,
        "1 while this node's RSS is over limits.memory_high_watermark (the cluster then refuses new jobs).",
    ),
    (
        "drover_clock_offset_seconds",
        Kind::Gauge,
        Scope::Node,
        "Each peer's wall clock minus this node's, by peer, as its raft batches say (peers heard within 15 s; this node's own is 0).",
    ),
    (
        "drover_clock_skewed",
        Kind::Gauge,
        Scope::Node,
        "1 while this node's clock is further than cluster.max_clock_offset from a majority of the voters' (it then does not campaign or lead).",
    ),
    (
        "drover_raft_term",
        Kind::Gauge,
        Scope::Node,
        "This node's raft term.",
    ),
    (
        "drover_raft_commit_index",
        Kind::Gauge,
        Scope::Node,
        "This node's raft commit index.",
    ),
    (
        "drover_raft_applied_index",
        Kind::Gauge,
        Scope::Node,
        "The last log index this node applied.",
    ),
    (
        "drover_raft_is_leader",
        Kind::Gauge,
        Scope::Node,
        "1 if this node leads its raft group.",
    ),
    (
        LEADER_CHANGES,
        Kind::Counter,
        Scope::Node,
        "Times this node saw the leader change (to another node or to none).",
    ),
    (
        COMMANDS_PER_ENTRY,
        Kind::Histogram,
        Scope::Node,
        "Commands in each log entry this node proposed as leader (how well proposals batch).",
    ),
    (
        SNAPSHOT_DURATION,
        Kind::Histogram,
        Scope::Node,
        "Time this node took to write each snapshot.",
    ),
];

/// Gives every metric its HELP text and type (once, at install).
fn describe() {
    for &(name, kind, _, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// What one scrape renders.
pub struct Scrape<'a> {
    /// The state this node's machine last published.
    pub stats: &'a MachineStats,
    /// This node's raft status: role, term, leader, log indexes, members.
    pub status: &'a NodeStatus,
    /// The workers connected to this node.
    pub workers: &'a [crate::workers::WorkerInfo],
    /// Wall-clock time of the scrape (ms), for ages.
    pub now_ms: u64,
    /// The node's data dir, whose size on disk is reported.
    pub data_dir: &'a Path,
    /// This node's disk and memory, as last sampled.
    pub resources: crate::resources::Reading,
    /// Each peer's clock minus this node's (ms), of peers heard lately.
    pub clock_offsets: std::collections::BTreeMap<u64, i64>,
    /// Budget counters by tenant.
    pub run_totals: &'a crate::machine::runs::RunTotals,
}

/// The process-wide recorder; installed once even when tests start several
/// nodes in one process.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    /// Breakers shown last time, so one that closed (and was forgotten)
    /// reads 0 instead of its last state.
    breakers: std::sync::Arc<
        std::sync::Mutex<std::collections::BTreeSet<crate::machine::breaker::Scope>>,
    >,
    /// Quarantined workers shown last time, so a released one reads 0.
    quarantined: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Which worker ids get series of their own.
    worker_labels: WorkerLabels,
    /// Each queue's desired workers as published, for the cooldown.
    holds: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, crate::pools::Hold>>>,
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds histogram samples into their buckets every [`UPKEEP_EVERY`], for
/// the life of the process. The recorder keeps every sample recorded until
/// an upkeep or a scrape drains it: without this a node nobody scrapes grew
/// by about 70 bytes per job (each job records several histograms) and
/// never gave the memory back. A thread, not a task: the recorder is
/// process-wide and outlives any one runtime.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(event = "metrics_upkeep_failed", error = %e, "cannot start the metrics upkeep thread: histograms grow until /metrics is scraped");
    }
}

impl Metrics {
    /// Installs the process-wide Prometheus recorder, or reuses the one a node
    /// of this process already installed.
    pub fn install() -> Metrics {
        let handle = HANDLE
            .get_or_init(|| {
                let builder = PrometheusBuilder::new();
                // Used over budget per finished run: buckets around 1 (all
                // of it), so alerts can see runs that came close.
                use metrics_exporter_prometheus::Matcher;
                let builder = builder
                    .set_buckets_for_metric(
                        Matcher::Full(RUN_BUDGET_RATIO.to_string()),
                        &[0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 2.0],
                    )
                    .and_then(|b| {
                        b.set_buckets_for_metric(
                            Matcher::Suffix("_seconds".to_string()),
                            SECONDS_BUCKETS,
                        )
                    })
                    .and_then(|b| {
                        b.set_buckets_for_metric(
                            Matcher::Full(COMMANDS_PER_ENTRY.to_string()),
                            &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
                        )
                    })
                    // Series no scrape set for a while (a worker gone, a
                    // queue purged) leave the page instead of freezing.
                    .map(|b| {
                        b.idle_timeout(
                            metrics_util::MetricKindMask::GAUGE,
                            Some(std::time::Duration::from_secs(120)),
                        )
                    })
                    .unwrap_or_else(|_| PrometheusBuilder::new());
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                spawn_upkeep(handle.clone());
                // Fails only if another recorder is installed already; ours
                // still renders what we set through it then.
                let _ = metrics::set_global_recorder(recorder);
                describe();
                // Counters of rare events read 0 from the start, so rate()
                // and increase() have a series before the first one.
                metrics::counter!(LEADER_CHANGES).absolute(0);
                metrics::counter!("drover_backup_failures_total").absolute(0);
                for code in ["unauthenticated", "permission_denied", "rate_limited"] {
                    metrics::counter!("drover_requests_refused_total", "code" => code).absolute(0);
                }
                handle
            })
            .clone();
        Metrics {
            handle,
            breakers: Default::default(),
            quarantined: Default::default(),
            worker_labels: WorkerLabels::new(DEFAULT_WORKER_SERIES),
            holds: Default::default(),
        }
    }

    /// Sets every gauge and counter from the node's current state and renders.
    pub fn render(&self, scrape: Scrape<'_>) -> String {
        let stats = scrape.stats;
        let mut finished = 0;
        for (queue, c) in &stats.queues {
            finished += c.succeeded + c.dead + c.cancelled;
            for (i, n) in c.ready.iter().enumerate() {
                let priority = (i + 1).to_string();
                metrics::gauge!("drover_pending_jobs", "queue" => queue.clone(), "priority" => priority)
                    .set(*n as f64);
            }
            for (state, n) in [
                ("scheduled", c.scheduled),
                ("ready", c.ready_total()),
                ("leased", c.leased),
                ("succeeded", c.succeeded),
                ("dead", c.dead),
                ("cancelled", c.cancelled),
                ("waiting", c.waiting),
            ] {
                metrics::gauge!("drover_jobs", "queue" => queue.clone(), "state" => state)
                    .set(n as f64);
            }
            // Every reason, zeros too: a released hold reads 0, not stale.
            let held = stats.blocked_jobs.get(queue);
            for &reason in crate::machine::blocked::BlockReason::REPLICATED {
                let n: u64 = held
                    .into_iter()
                    .flatten()
                    .filter(|b| b.reason == reason)
                    .map(|b| b.jobs)
                    .sum();
                metrics::gauge!("drover_queue_blocked_jobs", "queue" => queue.clone(), "reason" => reason.as_str())
                    .set(n as f64);
            }
        }
        for (queue, missed) in &stats.sla_missed {
            for (i, n) in missed.iter().enumerate() {
                if *n > 0 {
                    metrics::counter!("drover_sla_missed_total", "queue" => queue.clone(), "priority" => (i + 1).to_string())
                        .absolute(*n);
                }
            }
        }
        for (queue, types) in &stats.by_type {
            for (job_type, c) in types {
                for (name, v) in [
                    ("drover_jobs_enqueued_total", c.enqueued),
                    ("drover_jobs_dispatched_total", c.dispatched),
                    ("drover_jobs_completed_total", c.completed),
                    ("drover_jobs_retried_total", c.retried),
                    ("drover_jobs_dead_total", c.dead),
                    ("drover_jobs_cancelled_total", c.cancelled),
                    ("drover_jobs_escalated_total", c.escalated),
                ] {
                    metrics::counter!(name, "queue" => queue.clone(), "job_type" => job_type.clone())
                        .absolute(v);
                }
                for (class, n) in &c.failed {
                    metrics::counter!("drover_jobs_failed_total", "queue" => queue.clone(), "job_type" => job_type.clone(), "error_class" => class.clone())
                        .absolute(*n);
                }
            }
        }
        self.render_queues(&scrape);
        self.render_canaries(stats, scrape.now_ms);
        self.render_workers(&scrape);
        // Why leases were taken back, per queue: every queue shows each
        // reason, 0 until it happens, so alerts have a series to watch.
        for queue in stats.queues.keys() {
            let counts = stats.requeued.get(queue).copied().unwrap_or_default();
            for (reason, n) in crate::machine::REQUEUE_REASONS.iter().zip(counts) {
                metrics::counter!("drover_jobs_requeued_total", "queue" => queue.clone(), "reason" => *reason)
                    .absolute(n);
            }
        }
        {
            let mut shown = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
            for scope in shown.iter() {
                if !stats.breakers.contains_key(scope) {
                    let (q, t, c) = scope.clone();
                    metrics::gauge!("drover_breaker_state", "queue" => q, "tenant" => t, "class" => c)
                        .set(0.0);
                }
            }
            *shown = stats.breakers.keys().cloned().collect();
            for ((q, t, c), b) in &stats.breakers {
                metrics::gauge!("drover_breaker_state", "queue" => q.clone(), "tenant" => t.clone(), "class" => c.clone())
                    .set(f64::from(b.state.gauge()));
            }
        }
        for (queue, classes) in &stats.dead_by_class {
            for (class, n) in classes {
                metrics::gauge!("drover_dead_jobs", "queue" => queue.clone(), "class" => class.clone())
                    .set(*n as f64);
            }
        }
        metrics::gauge!("drover_finished_jobs").set(finished as f64);
        metrics::gauge!("drover_data_dir_bytes").set(disk_usage(scrape.data_dir) as f64);
        let r = &scrape.resources;
        metrics::gauge!("drover_data_dir_free_bytes").set(r.free_bytes as f64);
        metrics::gauge!("drover_data_dir_min_free_bytes").set(r.min_free_bytes as f64);
        metrics::gauge!("drover_disk_full").set(f64::from(u8::from(r.disk_full)));
        metrics::gauge!("drover_memory_rss_bytes").set(r.rss_bytes as f64);
        metrics::gauge!("drover_memory_high_watermark_bytes").set(r.watermark_bytes as f64);
        metrics::gauge!("drover_memory_high").set(f64::from(u8::from(r.memory_high)));
        for (peer, ms) in &scrape.clock_offsets {
            metrics::gauge!("drover_clock_offset_seconds", "peer" => peer.to_string())
                .set(*ms as f64 / 1000.0);
        }
        metrics::gauge!("drover_clock_skewed")
            .set(f64::from(u8::from(scrape.status.clock_skew.is_some())));
        if let Some(limit) = crate::resources::memory_limit() {
            metrics::gauge!("drover_memory_limit_bytes").set(limit as f64);
        }
        metrics::gauge!("drover_active_workers").set(scrape.workers.len() as f64);
        let backup = LAST_BACKUP_SECS.load(std::sync::atomic::Ordering::Relaxed);
        if backup > 0 {
            metrics::gauge!("drover_backup_last_success_timestamp_seconds").set(backup as f64);
        }
        metrics::gauge!("drover_workers_quarantined").set(stats.quarantined.len() as f64);
        self.render_quarantined(stats);
        let b = &stats.budgets;
        metrics::gauge!("drover_runs_over_budget").set(b.runs_over_budget as f64);
        metrics::gauge!("drover_tenants_over_daily_cap").set(b.capped_tenants.len() as f64);
        let totals = scrape.run_totals;
        for (budget, tenants) in &totals.exceeded {
            for (tenant, n) in tenants {
                metrics::counter!("drover_budget_exceeded_total", "budget" => budget.clone(), "tenant" => tenant.clone())
                    .absolute(*n);
            }
        }
        // Counters hold integers: cost in millionths of a USD.
        for (tenant, micros) in &totals.cost_micros {
            metrics::counter!("drover_tenant_cost_microusd_total", "tenant" => tenant.clone())
                .absolute(*micros);
        }
        for (tenant, ms) in &totals.lease_ms {
            metrics::counter!("drover_tenant_lease_seconds_total", "tenant" => tenant.clone())
                .absolute(ms / 1000);
        }
        let st = scrape.status;
        metrics::gauge!("drover_raft_term").set(st.term as f64);
        metrics::gauge!("drover_raft_commit_index").set(st.commit_index as f64);
        metrics::gauge!("drover_raft_applied_index").set(st.applied_index as f64);
        metrics::gauge!("drover_raft_is_leader").set(if st.is_leader() { 1.0 } else { 0.0 });
        self.handle.render()
    }
}

/// How many worker ids get series of their own unless `[metrics]
/// worker_series` says.
pub const DEFAULT_WORKER_SERIES: usize = 100;

/// Which worker ids get series of their own in the per-worker metrics: the
/// first `cap` this node saw; every other counts as `other`, so the series
/// stay bounded however many ids come and go. Shared by the worker
/// sessions and the scrape.
#[derive(Debug, Clone)]
pub struct WorkerLabels {
    cap: usize,
    named: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl WorkerLabels {
    /// Labels for at most `cap` ids.
    pub fn new(cap: usize) -> WorkerLabels {
        WorkerLabels {
            cap,
            named: Default::default(),
        }
    }

    /// The `worker` label of `id`.
    pub fn label(&self, id: &str) -> String {
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        if named.contains(id) {
            return id.to_string();
        }
        if named.len() < self.cap {
            named.insert(id.to_string());
            return id.to_string();
        }
        "other".to_string()
    }
}

/// A worker's result counters, registered once per session so counting a
/// round of results is two atomic adds.
#[derive(Clone)]
pub struct WorkerResults {
    succeeded: metrics::Counter,
    failed: metrics::Counter,
}

impl WorkerResults {
    /// The counters of the worker labelled `label`.
    pub fn new(label: &str) -> WorkerResults {
        let counter = |result: &'static str| metrics::counter!("drover_worker_results_total", "worker" => label.to_string(), "result" => result);
        WorkerResults {
            succeeded: counter("succeeded"),
            failed: counter("failed"),
        }
    }

    /// Counts a round of results.
    pub fn count(&self, succeeded: u64, failed: u64) {
        self.succeeded.increment(succeeded);
        self.failed.increment(failed);
    }
}

impl Metrics {
    /// The per-worker labels this node's metrics use.
    pub fn with_worker_labels(mut self, labels: WorkerLabels) -> Metrics {
        self.worker_labels = labels;
        self
    }

    /// `drover_worker_quarantined`: 1 for each quarantined worker (its
    /// bounded label; `other` counts the rest), 0 for one released since
    /// the last scrape.
    fn render_quarantined(&self, stats: &MachineStats) {
        let mut now: std::collections::BTreeMap<String, f64> = Default::default();
        for worker in stats.quarantined.keys() {
            *now.entry(self.worker_labels.label(worker)).or_default() += 1.0;
        }
        let mut shown = self.quarantined.lock().unwrap_or_else(|e| e.into_inner());
        for label in shown.iter().filter(|l| !now.contains_key(*l)) {
            metrics::gauge!("drover_worker_quarantined", "worker" => label.clone()).set(0.0);
        }
        for (label, n) in &now {
            metrics::gauge!("drover_worker_quarantined", "worker" => label.clone()).set(*n);
        }
        *shown = now.into_keys().collect();
    }

    /// Per queue: the oldest ready job's age and the workers it wants.
    fn render_queues(&self, scrape: &Scrape<'_>) {
        let stats = scrape.stats;
        for (queue, c) in &stats.queues {
            let age_ms = stats
                .oldest_ready
                .get(queue)
                .map_or(0, |since| scrape.now_ms.saturating_sub(*since));
            metrics::gauge!("drover_queue_oldest_ready_seconds", "queue" => queue.clone())
                .set(age_ms as f64 / 1000.0);
            let policy = stats.policies.queue(queue).workers;
            let pool = policy.unwrap_or_default();
            let flow = stats
                .flow
                .get(queue)
                .map(|w| crate::machine::tally::flow_at(w, scrape.now_ms))
                .unwrap_or_default();
            let wanted = pool.desired(&flow, c.ready_total(), c.leased);
            let cooldown_ms = pool
                .scale_down_after
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let desired = self
                .holds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(queue.clone())
                .or_default()
                .show(wanted, scrape.now_ms, cooldown_ms);
            metrics::gauge!("drover_queue_desired_workers", "queue" => queue.clone())
                .set(f64::from(desired));
            if let Some(p) = policy {
                metrics::gauge!("drover_queue_expected_workers", "queue" => queue.clone())
                    .set(f64::from(p.expected));
            }
        }
    }

    /// Each canary queue's comparison and verdicts.
    fn render_canaries(&self, stats: &MachineStats, now_ms: u64) {
        for queue in stats.canaries.keys() {
            let (canary, control) = stats
                .canary_arms
                .get(queue)
                .map(|a| a.at(now_ms))
                .unwrap_or_default();
            let judge = stats.policies.canary_judge(queue);
            for j in crate::machine::canary::compare(&canary, &control, &judge) {
                let value = if j.value.is_finite() {
                    j.value
                } else {
                    f64::MAX
                };
                metrics::gauge!("drover_canary_comparison", "queue" => queue.clone(), "metric" => j.metric)
                    .set(value);
                let verdict = match j.verdict {
                    "worse" => 1.0,
                    "ok" => 0.0,
                    _ => -1.0,
                };
                metrics::gauge!("drover_canary_verdict", "queue" => queue.clone(), "metric" => j.metric)
                    .set(verdict);
            }
        }
    }

    /// This node's workers: by queue, and each one's heartbeat age.
    fn render_workers(&self, scrape: &Scrape<'_>) {
        let mut by_queue: std::collections::BTreeMap<&str, [u64; 3]> = Default::default();
        // Queues with jobs read 0 workers rather than nothing, so an alert
        // on "no workers" has a series to see.
        for queue in scrape.stats.queues.keys() {
            by_queue.insert(queue, [0; 3]);
        }
        let mut ages: std::collections::BTreeMap<String, u64> = Default::default();
        for w in scrape.workers {
            for queue in &w.queues {
                let sums = by_queue.entry(queue).or_default();
                sums[0] += 1;
                sums[1] += u64::from(w.capacity);
                sums[2] += u64::from(w.in_flight);
            }
            // Bounded like the other per-worker series: `other` shows the
            // oldest of the workers past the labelled ones.
            let age_ms = scrape.now_ms.saturating_sub(w.last_seen_ms);
            let oldest = ages
                .entry(self.worker_labels.label(&w.worker_id))
                .or_default();
            *oldest = (*oldest).max(age_ms);
        }
        for (label, age_ms) in ages {
            metrics::gauge!("drover_worker_heartbeat_age_seconds", "worker" => label)
                .set(age_ms as f64 / 1000.0);
        }
        for (queue, [workers, capacity, held]) in by_queue {
            for (name, v) in [
                ("drover_queue_workers", workers),
                ("drover_queue_worker_capacity", capacity),
                ("drover_queue_worker_held", held),
            ] {
                metrics::gauge!(name, "queue" => queue.to_string()).set(v as f64);
            }
        }
    }
}

/// The `job_type` label of the job-time histograms for types that
/// `[metrics] job_types` does not name: the series stay as many as the
/// named types, however many types producers invent.
pub const OTHER_JOB_TYPE: &str = "other";

/// Records how long jobs waited and ran into the histograms by queue and
/// job type (the types `[metrics] job_types` names; the rest as
/// [`OTHER_JOB_TYPE`]). It keeps each series' handles, so the raft loop
/// builds no metric key per job.
#[derive(Default)]
pub struct JobTimes {
    /// The job types with series of their own.
    named: std::collections::HashSet<String>,
    /// Handles by queue, then type label: looked up by `&str`, so no key
    /// is built per observation.
    handles: std::collections::HashMap<
        String,
        std::collections::HashMap<String, [metrics::Histogram; 2]>,
    >,
}

impl JobTimes {
    /// Times with series of their own for `job_types`.
    pub fn new(job_types: &[String]) -> JobTimes {
        JobTimes {
            named: job_types.iter().cloned().collect(),
            handles: Default::default(),
        }
    }

    /// Adds each wait and run time to its queue and type's histogram.
    pub fn record(&mut self, observations: Vec<crate::machine::tally::Observation>) {
        use crate::machine::tally::Timing;
        for o in observations {
            let job_type = match self.named.contains(&o.job_type) {
                true => o.job_type.as_str(),
                false => OTHER_JOB_TYPE,
            };
            if !self.handles.contains_key(&o.queue) {
                self.handles.insert(o.queue.clone(), Default::default());
            }
            let by_type = self.handles.get_mut(&o.queue).expect("inserted above");
            if !by_type.contains_key(job_type) {
                let labels = [
                    ("queue", o.queue.clone()),
                    ("job_type", job_type.to_string()),
                ];
                let h = [
                    metrics::histogram!(JOB_WAIT, &labels),
                    metrics::histogram!(JOB_RUN, &labels),
                ];
                by_type.insert(job_type.to_string(), h);
            }
            let handles = &by_type[job_type];
            let i = match o.timing {
                Timing::Waited => 0,
                Timing::Ran => 1,
            };
            handles[i].record(o.ms as f64 / 1000.0);
        }
    }
}

/// Bytes a directory tree takes on disk (allocated blocks, as `du` counts
/// them); what cannot be read counts as nothing.
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => dirs.push(entry.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric an alert or the Grafana board uses is one drover
    /// exports (or Prometheus' own `up`), of the type the query assumes.
    #[test]
    fn alerts_and_board_use_only_exported_metrics() {
        for (file, text) in [
            (
                "alerts.yml",
                include_str!("../config/prometheus/alerts.yml"),
            ),
            ("drover.json", include_str!("../config/grafana/drover.json")),
        ] {
            let mut used = 0;
            for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.starts_with("drover_") {
                    continue;
                }
                used += 1;
                let bucket = word.strip_suffix("_bucket");
                let found = METRICS
                    .iter()
                    .find(|(name, ..)| Some(*name) == bucket.or(Some(word)));
                let Some((_, kind, ..)) = found else {
                    panic!("{file} uses {word}, which drover does not export");
                };
                assert_eq!(bucket.is_some(), *kind == Kind::Histogram, "{file}: {word}");
            }
            assert!(used > 10, "{file}");
        }
    }

    #[test]
    fn docs_list_every_metric() {
        let docs = include_str!("../docs/metrics.md");
        for (name, ..) in METRICS {
            assert!(
                docs.contains(&format!("`{name}`")),
                "docs/metrics.md does not list {name}"
            );
        }
    }

    /// Every `event` name a tracing call under src/ logs (a literal after
    /// the event field) is documented in docs/metrics.md, in backquotes.
    #[test]
    fn every_log_event_is_in_the_doc() {
        fn walk(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
            let entries = std::fs::read_dir(dir)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    walk(&path, files);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    files.push(path);
                }
            }
        }
        let docs = include_str!("../docs/metrics.md");
        let mut files = Vec::new();
        walk(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
            &mut files,
        );
        let needle = "event = \"";
        let mut names = std::collections::BTreeSet::new();
        for file in &files {
            let text = std::fs::read_to_string(file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            let mut from = 0;
            while let Some(at) = text[from..].find(needle) {
                let start = from + at;
                let name_start = start + needle.len();
                from = name_start;
                // `prevent = "..."` and the like are not the event field.
                let in_word = text[..start]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                let Some(len) = text[name_start..].find('"') else {
                    break;
                };
                let name = &text[name_start..name_start + len];
                let is_name = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !in_word && is_name {
                    names.insert(name.to_string());
                }
            }
        }
        assert!(
            names.len() > 50,
            "found only {} log events under src/: is the walk broken?",
            names.len()
        );
        let missing: Vec<&String> = names
            .iter()
            .filter(|name| !docs.contains(&format!("`{name}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/metrics.md does not list these log events: {missing:?}"
        );
    }

    #[test]
    fn job_times_get_a_series_per_named_type_and_one_for_the_rest() {
        use crate::machine::tally::{Observation, Timing};
        let mut times = JobTimes::new(&["render".to_string()]);
        let observations = (0..1000)
            .map(|i| Observation {
                queue: "q".into(),
                job_type: format!("invented-{i}"),
                timing: Timing::Ran,
                ms: 5,
            })
            .chain(std::iter::once(Observation {
                queue: "q".into(),
                job_type: "render".into(),
                timing: Timing::Waited,
                ms: 5,
            }))
            .collect();
        times.record(observations);
        let mut keys: Vec<_> = times
            .handles
            .iter()
            .flat_map(|(q, types)| types.keys().map(move |t| (q.clone(), t.clone())))
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                ("q".to_string(), "other".to_string()),
                ("q".to_string(), "render".to_string())
            ]
        );
    }
}
