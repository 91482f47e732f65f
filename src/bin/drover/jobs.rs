//! Producing and reading jobs: `drover enqueue`, `drover jobs get|cancel|list`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use drover::api::types::{CancelledBody, JobBody, JobsPageBody, TimelineBody};
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
    /// How long a lease of the job may run: "30m" (else its type's or
    /// queue's timeout).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Ids of jobs it runs after, comma-separated: it is `waiting` until
    /// all of them succeeded.
    #[arg(long, value_delimiter = ',')]
    after: Vec<String>,
    /// `cancel` (default) or `run`: what happens to it when a job it waits
    /// for ends dead or cancelled.
    #[arg(long, default_value = "")]
    on_dependency_failure: String,
    /// The W3C trace context to enqueue it in
    /// (00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>); its workers
    /// get it with the lease. Default: $TRACEPARENT, if set.
    #[arg(long, env = "TRACEPARENT", default_value = "")]
    traceparent: String,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[derive(Subcommand)]
pub enum JobsCmd {
    /// Print one job: state, attempts, result or last error, timeline. By
    /// id, or by idempotency key (--key K --queue Q [--tenant T]).
    Get {
        id: Option<u64>,
        /// The job's idempotency key (its result is kept until the key
        /// expires).
        #[arg(long, conflicts_with = "id", requires = "queue")]
        key: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[command(flatten)]
        target: Target,
    },
    /// A job's timeline with each event's time, and its latest progress.
    Timeline {
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
    /// List jobs by queue, state, tenant, run, error class and age (the
    /// stuck-job check: `--state leased --older-than 1h`; recent failures:
    /// `--state dead`).
    List(ListArgs),
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long)]
    queue: Option<String>,
    /// scheduled, ready, leased, succeeded, dead or cancelled.
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    run: Option<String>,
    /// The job type.
    #[arg(long = "type")]
    job_type: Option<String>,
    /// The last error's class.
    #[arg(long)]
    class: Option<String>,
    /// In its state for longer than this: "1h", "30m".
    #[arg(long)]
    older_than: Option<String>,
    /// Jobs to show.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Go on from this cursor (the `next` a page printed).
    #[arg(long)]
    after: Option<String>,
    /// Newest first (live states and the list with no --state; finished
    /// states come newest first anyway).
    #[arg(long)]
    newest: bool,
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
        timeout_ms: a.timeout.map_or(0, |d| d.as_millis() as u64),
        after: a.after,
        on_dependency_failure: a.on_dependency_failure,
        traceparent: a.traceparent,
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
        JobsCmd::List(a) => list(a).await,
        JobsCmd::Get {
            id,
            key,
            queue,
            tenant,
            target,
        } => {
            let path = match (id, key, queue) {
                (Some(id), None, _) => format!("/api/v1/jobs/{id}"),
                (None, Some(key), Some(queue)) => {
                    // Percent-encoded as a path segment ('+' would stay '+').
                    let key: String = key
                        .bytes()
                        .map(|b| match b {
                            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                                (b as char).to_string()
                            }
                            _ => format!("%{b:02X}"),
                        })
                        .collect();
                    format!("/api/v1/queues/{queue}/jobs/by-key/{key}?tenant={tenant}")
                }
                _ => bail!("name a job id, or --key K --queue Q"),
            };
            let j: JobBody = target.admin()?.get(&path).await?;
            target.print(&j, print_job)
        }
        JobsCmd::Timeline { id, target } => {
            let t: TimelineBody = target
                .admin()?
                .get(&format!("/api/v1/jobs/{id}/timeline"))
                .await?;
            target.print(&t, |t| {
                println!("job {} ({})", t.id, t.state.as_str());
                for e in &t.events {
                    println!("  {}  {}", at(e.at_ms), e.what);
                }
                if let Some(p) = &t.progress {
                    println!("progress: {:.0}% {}", p.fraction * 100.0, p.message);
                }
            })
        }
        JobsCmd::Cancel { id, target } => {
            let c: CancelledBody = target
                .admin()?
                .post_empty(&format!("/api/v1/jobs/{id}/cancel"))
                .await?;
            target.print(&c, |c| {
                println!("job {} cancelled (was {})", c.id, c.was.as_str())
            })
        }
    }
}

async fn list(a: ListArgs) -> Result<()> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let filters = [
        ("queue", &a.queue),
        ("state", &a.state),
        ("tenant", &a.tenant),
        ("run", &a.run),
        ("type", &a.job_type),
        ("class", &a.class),
        ("older_than", &a.older_than),
        ("after", &a.after),
    ];
    for (k, v) in filters {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.append_pair("limit", &a.limit.to_string());
    if a.newest {
        q.append_pair("order", "newest");
    }
    let page: JobsPageBody = a
        .target
        .admin()?
        .get(&format!("/api/v1/jobs?{}", q.finish()))
        .await?;
    a.target.print(&page, |page| {
        let mut t = crate::target::table(&[
            "ID",
            "QUEUE",
            "TYPE",
            "TENANT",
            "PRI",
            "STATE",
            "SINCE",
            "TRIES",
            "WORKER",
            "LAST ERROR",
        ]);
        for j in &page.jobs {
            let error = if j.last_error_class.is_empty() {
                String::new()
            } else {
                format!("{}: {}", j.last_error_class, j.last_error)
            };
            t.add_row(vec![
                j.id.to_string(),
                j.queue.clone(),
                j.job_type.clone(),
                j.tenant.clone(),
                j.priority.to_string(),
                j.state.as_str().to_string(),
                at(j.state_since_ms),
                j.attempts.to_string(),
                j.worker.clone().unwrap_or_default(),
                error,
            ]);
        }
        println!("{t}");
        if let Some(next) = &page.next {
            println!("\nmore: add --after {next}");
        }
    })
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
    // Every hold, with what releases it; the first is the one its queue's
    // counts show.
    if !j.blocked.is_empty() {
        println!("held back by:");
        for b in &j.blocked {
            let scope = if b.scope.is_empty() {
                String::new()
            } else {
                format!(" ({})", b.scope)
            };
            println!(
                "  {}{scope}: {}",
                b.reason,
                b.detail.as_deref().unwrap_or("")
            );
            println!("    release: {}", b.release);
        }
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
