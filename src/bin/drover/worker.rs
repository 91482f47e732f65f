//! `drover worker`: runs a shell command once per job.

use anyhow::Result;
use clap::Args;
use drover::client::worker::{self, WorkerOptions};

use crate::target::Target;

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    target: Target,
    /// A queue to serve; repeat for several.
    #[arg(long, required = true)]
    queue: Vec<String>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Shell command run per job: payload on stdin, DROVER_* variables set.
    #[arg(long)]
    exec: String,
    /// Worker id; defaults to host name and process id.
    #[arg(long)]
    id: Option<String>,
    /// A version label (a build, an image tag): shown by `drover workers
    /// list`, and what `drover versions disable` switches off.
    #[arg(long, visible_alias = "version", default_value = "")]
    worker_version: String,
    /// How long a stopping worker keeps trying to reach a node to report
    /// its results before it exits without them (e.g. 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    stop_timeout: std::time::Duration,
    /// Stop gracefully (finish what it holds, report, exit 0) after this
    /// many jobs, so a supervisor starts a fresh process (for handlers
    /// that leak). 0: never.
    #[arg(long, default_value_t = 0)]
    max_jobs: u64,
    /// Stop gracefully after running this long (e.g. 6h), as --max-jobs.
    #[arg(long, value_parser = humantime::parse_duration)]
    max_lifetime: Option<std::time::Duration>,
    /// Serve `GET /health` here for a process supervisor: 200 while the
    /// worker is connected to a node, 503 otherwise, with what it holds
    /// and its last result (e.g. 127.0.0.1:9100).
    #[arg(long)]
    health_addr: Option<std::net::SocketAddr>,
}

/// `/health` of a worker.
async fn serve_health(
    addr: std::net::SocketAddr,
    health: std::sync::Arc<worker::WorkerHealth>,
    capacity: u32,
) -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--health-addr {addr}: cannot listen: {e}"))?;
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let h = health.clone();
            async move {
                let connected = h.connected.load(Relaxed);
                let body = serde_json::json!({
                    "connected": connected,
                    "held": h.held.load(Relaxed),
                    "capacity": capacity,
                    "completed": h.completed.load(Relaxed),
                    "failed": h.failed.load(Relaxed),
                    "last_result_ms": h.last_result_ms.load(Relaxed),
                });
                let status = if connected {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                };
                (status, axum::Json(body))
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(event = "worker_health_failed", error = %e, "the health endpoint stopped");
        }
    });
    Ok(())
}

pub async fn run(a: WorkerArgs) -> Result<()> {
    crate::serve::init_tracing("auto", "info");
    let id = a.id.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_else(|_| "worker".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let on_signal = stop_tx.clone();
    let terminated = crate::serve::wait_for_signal();
    tokio::spawn(async move {
        terminated.await;
        on_signal.send_replace(true);
    });
    if let Some(lifetime) = a.max_lifetime {
        let on_age = stop_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(lifetime).await;
            tracing::info!(
                event = "worker_recycled",
                why = "max_lifetime",
                "stopping after --max-lifetime: held jobs finish first"
            );
            on_age.send_replace(true);
        });
    }
    let cmd = std::sync::Arc::new(a.exec);
    let started = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let max_jobs = a.max_jobs;
    let handler = move |job: drover::client::worker::Job| {
        let cmd = cmd.clone();
        // The job that reaches --max-jobs still runs; stopping makes the
        // worker take no more and exit once its results are reported.
        let n = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if max_jobs > 0 && n == max_jobs {
            tracing::info!(
                event = "worker_recycled",
                why = "max_jobs",
                jobs = n,
                "stopping after --max-jobs: held jobs finish first"
            );
            stop_tx.send_replace(true);
        }
        async move { drover::worker_exec::exec_job(&cmd, job.into_leased()).await }
    };
    let mut opts = WorkerOptions::new(a.target.server.clone(), id, a.queue, a.concurrency);
    if let Some(addr) = a.health_addr {
        serve_health(addr, opts.health.clone(), a.concurrency).await?;
    }
    opts.stop_timeout = a.stop_timeout;
    opts.credentials = a.target.credentials()?;
    opts.version = a.worker_version;
    let report = worker::Worker::from(opts).run_with(handler, stop).await?;
    eprintln!(
        "worker stopped: {} completed, {} failed, {} refused",
        report.completed, report.failed, report.refused
    );
    Ok(())
}
