//! `drover worker`: runs a shell command once per job.

use anyhow::Result;
use clap::Args;
use drover::client::worker::{self, WorkerOptions};
use drover::proto::v1 as pb;

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
    /// A version label shown by `drover workers list` (a build, an image tag).
    #[arg(long, default_value = "")]
    worker_version: String,
    /// How long a stopping worker keeps trying to reach a node to report
    /// its results before it exits without them (e.g. 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    stop_timeout: std::time::Duration,
}

pub async fn run(a: WorkerArgs) -> Result<()> {
    crate::serve::init_tracing("auto", "info");
    let id = a.id.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_else(|_| "worker".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::serve::wait_for_signal().await;
        stop_tx.send_replace(true);
    });
    let cmd = std::sync::Arc::new(a.exec);
    let handler = move |job: pb::LeasedJob| {
        let cmd = cmd.clone();
        async move { drover::worker_exec::exec_job(&cmd, job).await }
    };
    let mut opts = WorkerOptions::new(a.target.server.clone(), id, a.queue, a.concurrency);
    opts.stop_timeout = a.stop_timeout;
    opts.credentials = a.target.credentials()?;
    opts.version = a.worker_version;
    let report = worker::run(opts, handler, stop).await?;
    eprintln!(
        "worker stopped: {} completed, {} failed, {} refused",
        report.completed, report.failed, report.refused
    );
    Ok(())
}
