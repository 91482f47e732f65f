//! Prometheus metrics. Values are read from what the driver publishes at
//! scrape time, so the hot path does no metrics work at all. The caller
//! passes them in: this module knows the values, not where they live.

use std::path::Path;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::driver::NodeStatus;
use crate::machine::MachineStats;

/// The histogram of what each finished run used of each budget.
pub const RUN_BUDGET_RATIO: &str = "drover_run_budget_used_ratio";

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Whose value a metric is: `Cluster` (every node reports the cluster's
/// value, from the replicated state: do not sum across nodes) or `Node`
/// (this node's own: sum them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Node,
}

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
        "drover_jobs_enqueued_total",
        Kind::Counter,
        Scope::Cluster,
        "Jobs enqueued, as this node applied them since it started.",
    ),
    (
        "drover_jobs_dispatched_total",
        Kind::Counter,
        Scope::Cluster,
        "Leases granted, as this node applied them since it started.",
    ),
    (
        "drover_jobs_completed_total",
        Kind::Counter,
        Scope::Cluster,
        "Jobs completed, as this node applied them since it started.",
    ),
    (
        "drover_jobs_failed_total",
        Kind::Counter,
        Scope::Cluster,
        "Failed attempts, as this node applied them since it started.",
    ),
    (
        "drover_jobs_retried_total",
        Kind::Counter,
        Scope::Cluster,
        "Failed attempts scheduled for a retry.",
    ),
    (
        "drover_jobs_dead_total",
        Kind::Counter,
        Scope::Cluster,
        "Jobs dead-lettered.",
    ),
    (
        "drover_jobs_cancelled_total",
        Kind::Counter,
        Scope::Cluster,
        "Jobs cancelled.",
    ),
    (
        "drover_jobs_escalated_total",
        Kind::Counter,
        Scope::Cluster,
        "Exhausted jobs moved to their on_exhausted queue.",
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
        "drover_active_workers",
        Kind::Gauge,
        Scope::Node,
        "Workers connected to this node.",
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
    pub stats: &'a MachineStats,
    pub status: &'a NodeStatus,
    pub active_workers: usize,
    /// The node's data dir, whose size on disk is reported.
    pub data_dir: &'a Path,
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
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

impl Metrics {
    pub fn install() -> Metrics {
        let handle = HANDLE
            .get_or_init(|| {
                let builder = PrometheusBuilder::new();
                // Used over budget per finished run: buckets around 1 (all
                // of it), so alerts can see runs that came close.
                let builder = builder
                    .set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(RUN_BUDGET_RATIO.to_string()),
                        &[0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 2.0],
                    )
                    .unwrap_or_else(|_| PrometheusBuilder::new());
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                // Fails only if another recorder is installed already; ours
                // still renders what we set through it then.
                let _ = metrics::set_global_recorder(recorder);
                describe();
                handle
            })
            .clone();
        Metrics {
            handle,
            breakers: Default::default(),
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
        }
        for (queue, missed) in &stats.sla_missed {
            for (i, n) in missed.iter().enumerate() {
                if *n > 0 {
                    metrics::counter!("drover_sla_missed_total", "queue" => queue.clone(), "priority" => (i + 1).to_string())
                        .absolute(*n);
                }
            }
        }
        let t = stats.totals;
        for (name, v) in [
            ("drover_jobs_enqueued_total", t.enqueued),
            ("drover_jobs_dispatched_total", t.dispatched),
            ("drover_jobs_completed_total", t.completed),
            ("drover_jobs_failed_total", t.failed),
            ("drover_jobs_retried_total", t.retried),
            ("drover_jobs_dead_total", t.dead),
            ("drover_jobs_cancelled_total", t.cancelled),
            ("drover_jobs_escalated_total", t.escalated),
        ] {
            metrics::counter!(name).absolute(v);
        }
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
        if let Some(free) = free_space(scrape.data_dir) {
            metrics::gauge!("drover_data_dir_free_bytes").set(free as f64);
        }
        metrics::gauge!("drover_active_workers").set(scrape.active_workers as f64);
        metrics::gauge!("drover_workers_quarantined").set(stats.quarantined.len() as f64);
        let b = &stats.budgets;
        metrics::gauge!("drover_runs_over_budget").set(b.runs_over_budget as f64);
        metrics::gauge!("drover_tenants_over_daily_cap").set(b.capped_tenants.len() as f64);
        for (budget, tenants) in &b.totals.exceeded {
            for (tenant, n) in tenants {
                metrics::counter!("drover_budget_exceeded_total", "budget" => budget.clone(), "tenant" => tenant.clone())
                    .absolute(*n);
            }
        }
        // Counters hold integers: cost in millionths of a USD.
        for (tenant, micros) in &b.totals.cost_micros {
            metrics::counter!("drover_tenant_cost_microusd_total", "tenant" => tenant.clone())
                .absolute(*micros);
        }
        for (tenant, ms) in &b.totals.lease_ms {
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

/// Bytes free for an unprivileged writer on the filesystem holding `dir`;
/// None if it cannot be read.
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs writes the struct it is given and reads a
    // NUL-terminated path; both outlive the call.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
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

    /// Every metric an alert uses is one drover exports (or Prometheus'
    /// own `up`).
    #[test]
    fn alerts_use_only_exported_metrics() {
        let alerts = include_str!("../config/prometheus/alerts.yml");
        let mut used = 0;
        for word in alerts.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("drover_") {
                used += 1;
                assert!(
                    METRICS.iter().any(|(name, ..)| *name == word),
                    "alerts.yml uses {word}, which drover does not export"
                );
            }
        }
        assert!(used > 10);
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
}
