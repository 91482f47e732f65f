//! Producing and reading jobs: `drover enqueue`, `drover jobs get|cancel`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use drover::api::types::{CancelledBody, JobBody};
use drover::proto::v1 as pb;

use crate::target::Target;

#[derive(Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long)]
    queue: String,
    #[arg(long = "type", default_value = "")]
    job_type: String,
    /// 1 (highest) to 5 (lowest).
    #[arg(long, default_value_t = 3)]
    priority: u32,
    #[arg(long, default_value = "")]
    tenant: String,
    /// Run id grouping jobs for budgets.
    #[arg(long, default_value = "")]
    run: String,
    /// Wait this long before the job is ready: "30s", "5m".
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
    #[arg(long, default_value = "")]
    idempotency_key: String,
    #[arg(long, conflicts_with = "payload_file")]
    payload: Option<String>,
    #[arg(long)]
    payload_file: Option<PathBuf>,
    /// Enqueue this many copies.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// A label, `KEY=VALUE`; repeat for more.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// At most N jobs of this key are leased at once (N: --concurrency-limit,
    /// else the config's `[limits."PREFIX"]` for the key).
    #[arg(long, default_value = "")]
    concurrency_key: String,
    #[arg(long, default_value_t = 0)]
    concurrency_limit: u32,
    /// At most N leases of this key per period (--rate-limit, else the config's).
    #[arg(long, default_value = "")]
    rate_key: String,
    /// `N/PERIOD`: "10/s", "100/m", "5/30s".
    #[arg(long, default_value = "")]
    rate_limit: String,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[derive(Subcommand)]
pub enum JobsCmd {
    /// Print one job: state, attempts, result or last error, timeline.
    Get {
        id: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Cancel a job that has not finished.
    Cancel {
        id: u64,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn enqueue(a: EnqueueArgs) -> Result<()> {
    let payload: bytes::Bytes = match (&a.payload, &a.payload_file) {
        (Some(p), _) => p.clone().into(),
        (None, Some(f)) => std::fs::read(f)
            .with_context(|| format!("cannot read --payload-file {}", f.display()))?
            .into(),
        (None, None) => bytes::Bytes::new(),
    };
    if a.count == 0 {
        bail!("--count must be 1 or more");
    }
    let job = pb::NewJob {
        queue: a.queue,
        job_type: a.job_type,
        tenant: a.tenant,
        run_id: a.run,
        priority: a.priority,
        payload,
        idempotency_key: a.idempotency_key,
        delay_ms: a.delay.map_or(0, |d| d.as_millis() as u64),
        labels: a.labels.into_iter().collect(),
        concurrency_key: a.concurrency_key,
        concurrency_limit: a.concurrency_limit,
        rate_key: a.rate_key,
        rate_limit: a.rate_limit,
    };
    let mut producer = a.target.producer().await?;
    let mut left = a.count;
    let mut all = Vec::new();
    while left > 0 {
        let n = left.min(drover::config::DEFAULT_MAX_JOBS_PER_REQUEST as u32);
        let ids = producer.enqueue(vec![job.clone(); n as usize]).await?;
        all.extend(
            ids.into_iter()
                .map(|j| serde_json::json!({"id": j.id, "duplicate": j.duplicate})),
        );
        left -= n;
    }
    a.target.print(&all, |all| {
        for j in all {
            if j["duplicate"] == true {
                println!("{} (duplicate)", j["id"]);
            } else {
                println!("{}", j["id"]);
            }
        }
    })
}

pub async fn run(cmd: JobsCmd) -> Result<()> {
    match cmd {
        JobsCmd::Get { id, target } => {
            let j: JobBody = target.admin()?.get(&format!("/api/v1/jobs/{id}")).await?;
            target.print(&j, print_job)
        }
        JobsCmd::Cancel { id, target } => {
            let c: CancelledBody = target
                .admin()?
                .post(&format!("/api/v1/jobs/{id}/cancel"), &serde_json::json!({}))
                .await?;
            target.print(&c, |c| {
                println!("job {} cancelled (was {})", c.id, c.was.as_str())
            })
        }
    }
}

pub fn at(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn print_job(j: &JobBody) {
    println!(
        "job {}  queue {}  type {}  tenant {}  priority {}",
        j.id, j.queue, j.job_type, j.tenant, j.priority
    );
    match &j.waiting {
        Some(w) => println!(
            "state {} (waiting: {w})  attempts {}",
            j.state.as_str(),
            j.attempts
        ),
        None => println!("state {}  attempts {}", j.state.as_str(), j.attempts),
    }
    match (&j.result, &j.result_base64) {
        (Some(r), _) if !r.is_empty() => println!("result: {r}"),
        (_, Some(b)) => println!("result (base64): {b}"),
        _ => {}
    }
    if !j.last_error_class.is_empty() {
        println!("last error: {}: {}", j.last_error_class, j.last_error);
    }
    if !j.events.is_empty() {
        println!("timeline:");
        for e in &j.events {
            println!("  {}  {}", at(e.at_ms), e.what);
        }
    }
}
