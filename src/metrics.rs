//! Prometheus metrics. Values are read from what the driver publishes at
//! scrape time, so the hot path does no metrics work at all.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::api::App;

/// The process-wide recorder; installed once even when tests start several
/// nodes in one process.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

impl Metrics {
    pub fn install() -> Metrics {
        let handle = HANDLE
            .get_or_init(|| {
                let recorder = PrometheusBuilder::new().build_recorder();
                let handle = recorder.handle();
                // Fails only if another recorder is installed already; ours
                // still renders what we set through it then.
                let _ = metrics::set_global_recorder(recorder);
                handle
            })
            .clone();
        Metrics { handle }
    }

    /// Sets every gauge and counter from the node's current state and renders.
    pub fn render(&self, app: &App) -> String {
        let stats = app.driver.stats();
        for (queue, c) in &stats.queues {
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
            ] {
                metrics::gauge!("drover_jobs", "queue" => queue.clone(), "state" => state)
                    .set(n as f64);
            }
        }
        let t = stats.totals;
        for (name, v) in [
            ("drover_jobs_enqueued_total", t.enqueued),
            ("drover_jobs_dispatched_total", t.dispatched),
            ("drover_jobs_completed_total", t.completed),
            ("drover_jobs_failed_total", t.failed),
            ("drover_jobs_retried_total", t.retried),
            ("drover_jobs_requeued_total", t.requeued),
            ("drover_jobs_dead_total", t.dead),
            ("drover_jobs_cancelled_total", t.cancelled),
        ] {
            metrics::counter!(name).absolute(v);
        }
        metrics::gauge!("drover_active_workers").set(app.workers.count() as f64);
        let st = app.driver.status();
        metrics::gauge!("drover_raft_term").set(st.term as f64);
        metrics::gauge!("drover_raft_commit_index").set(st.commit_index as f64);
        metrics::gauge!("drover_raft_applied_index").set(st.applied_index as f64);
        metrics::gauge!("drover_raft_is_leader").set(if st.role == "leader" { 1.0 } else { 0.0 });
        self.handle.render()
    }
}
