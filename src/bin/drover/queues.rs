//! `drover queues list|why|history|pause|drain|resume|purge|clear-stuck`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use drover::api::types::{
    ClearStuckBody, ControlledBody, HistoryBody, PurgeBody, PurgeState, PurgedBody, QueueWhyBody,
    QueuesBody, RequeuedBody,
};

use crate::target::{table, Target};

#[derive(Subcommand)]
pub enum QueuesCmd {
    /// Every queue: depth by state and priority, paused or draining, limits.
    List(Target),
    /// Why QUEUE's jobs are not moving: its ready jobs that are runnable,
    /// those held back by each reason (paused, tenant_paused, breaker,
    /// budget, daily_cap, key_limit, concurrency_limit, version,
    /// no_workers) with what holds them and the command that releases
    /// them, and those waiting for dependencies or their time.
    Why {
        queue: String,
        #[command(flatten)]
        target: Target,
    },
    /// What the node saw of QUEUE (or of every queue) over the last hour
    /// or day: rates and wait and run time percentiles per bucket.
    History {
        /// The queue (default: all queues together).
        queue: Option<String>,
        /// `1h` (10-second buckets) or `24h` (5-minute buckets).
        #[arg(long, default_value = "1h")]
        range: String,
        /// Print every bucket, not only the last 30 that saw work (--json has them all).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Lease nothing from QUEUE (or --all); its jobs wait, enqueues go on.
    Pause(ControlArgs),
    /// Take no new jobs into QUEUE (or --all); leases go on.
    Drain(ControlArgs),
    /// End a pause or drain.
    Resume(ControlArgs),
    /// Cancel QUEUE's waiting jobs that match, and say how many.
    Purge {
        queue: String,
        /// `ready` or `scheduled` (default: both).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Only jobs waiting at least this long: "1h".
        #[arg(long)]
        older_than: Option<String>,
        /// Only jobs of this type.
        #[arg(long = "type")]
        job_type: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Requeue QUEUE's jobs leased longer than --older-than (default 10m),
    /// held by --worker, or held by a worker connected to no node.
    ClearStuck(ClearStuckArgs),
}

/// Take back QUEUE's stuck leases and make their jobs ready again.
#[derive(Args)]
pub struct ClearStuckArgs {
    queue: String,
    /// Leased longer than this (default 10m when no --worker is named).
    #[arg(long)]
    older_than: Option<String>,
    /// Held by this worker, however long.
    #[arg(long)]
    worker: Option<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(Args)]
pub struct ControlArgs {
    queue: Option<String>,
    /// Every queue.
    #[arg(long, conflicts_with = "queue")]
    all: bool,
    /// Return once nothing is leased in the queues any more (the runbook's
    /// "stop taking work, wait for what is in flight, then maintain").
    #[arg(long)]
    wait: bool,
    /// How long --wait waits at most.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    target: Target,
}

pub async fn run(cmd: QueuesCmd) -> Result<()> {
    let (action, a) = match cmd {
        QueuesCmd::List(target) => {
            let q: QueuesBody = target.admin()?.get("/api/v1/queues").await?;
            return target.print(&q, print);
        }
        QueuesCmd::Why { queue, target } => {
            drover::job::validate_queue(&queue)?;
            let w: QueueWhyBody = target
                .admin()?
                .get(&format!("/api/v1/queues/{queue}/why"))
                .await?;
            return target.print(&w, print_why);
        }
        QueuesCmd::History {
            queue,
            range,
            all,
            target,
        } => {
            let path = match &queue {
                Some(q) => format!("/api/v1/queues/{q}/history?range={range}"),
                None => format!("/api/v1/history?range={range}"),
            };
            let h: HistoryBody = target.admin()?.get(&path).await?;
            return target.print(&h, |h| print_history(h, all));
        }
        QueuesCmd::Purge {
            queue,
            state,
            tenant,
            older_than,
            job_type,
            target,
        } => {
            let state = match state.as_deref() {
                None => None,
                Some("ready") => Some(PurgeState::Ready),
                Some("scheduled") => Some(PurgeState::Scheduled),
                Some(other) => bail!("--state {other:?}: give ready or scheduled (default: both)"),
            };
            let body = PurgeBody {
                state,
                tenant,
                older_than,
                job_type,
            };
            let done: PurgedBody = target
                .admin()?
                .post(&format!("/api/v1/queues/{queue}/purge"), &body)
                .await?;
            return target.print(&done, |d| {
                println!(
                    "cancelled {} waiting jobs of queue {}",
                    d.cancelled, d.queue
                )
            });
        }
        QueuesCmd::ClearStuck(a) => {
            let body = ClearStuckBody {
                older_than: a.older_than,
                worker: a.worker,
            };
            let done: RequeuedBody = a
                .target
                .admin()?
                .post(&format!("/api/v1/queues/{}/clear-stuck", a.queue), &body)
                .await?;
            return a.target.print(&done, |d| {
                let ids: Vec<String> = d.requeued.iter().map(u64::to_string).collect();
                println!("requeued {} jobs: {}", ids.len(), ids.join(" "))
            });
        }
        QueuesCmd::Pause(a) => ("pause", a),
        QueuesCmd::Drain(a) => ("drain", a),
        QueuesCmd::Resume(a) => ("resume", a),
    };
    let path = match (&a.queue, a.all) {
        (Some(q), false) => format!("/api/v1/queues/{q}/{action}"),
        (None, true) => format!("/api/v1/queues/{action}"),
        _ => bail!("name a queue, or --all"),
    };
    let admin = a.target.admin()?;
    let done: ControlledBody = admin.post_empty(&path).await?;
    a.target.print(&done, |d| {
        if d.changed.is_empty() {
            println!("{action}: no queue changed (already so)");
        } else {
            println!("{action}: {}", d.changed.join(", "));
        }
    })?;
    if a.wait {
        let deadline = Instant::now() + a.timeout;
        loop {
            let q: QueuesBody = admin.get("/api/v1/queues").await?;
            let leased: u64 = q
                .queues
                .iter()
                .filter(|s| a.all || a.queue.as_deref() == Some(s.name.as_str()))
                .map(|s| s.counts.leased)
                .sum();
            if leased == 0 {
                eprintln!("nothing is leased any more");
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{leased} jobs still leased after {}",
                    humantime::format_duration(a.timeout)
                );
            }
            eprintln!("waiting: {leased} jobs leased");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}

fn print_history(h: &HistoryBody, all: bool) {
    let what = h
        .queue
        .as_deref()
        .map_or("all queues".to_string(), |q| format!("queue {q}"));
    println!(
        "{what} on node {}, last {} in {} s buckets; counting since {}",
        h.node_id,
        h.range,
        h.bucket_seconds,
        crate::jobs::at(h.since_ms)
    );
    let shown: Vec<_> = if all {
        h.points.iter().collect()
    } else {
        let busy: Vec<_> = h
            .points
            .iter()
            .filter(|p| p.enqueued + p.completed + p.failed > 0 || p.wait_ms.is_some())
            .collect();
        busy[busy.len().saturating_sub(30)..].to_vec()
    };
    if shown.is_empty() {
        println!("nothing enqueued, completed or failed in that time");
        return;
    }
    let mut t = table(&[
        "FROM",
        "ENQUEUED/S",
        "COMPLETED/S",
        "FAILED/S",
        "WAIT p50/p95/p99",
        "RUN p50/p95/p99",
    ]);
    let times = |t: Option<drover::history::TimesMs>| {
        t.map_or("-".to_string(), |t| {
            format!("{}/{}/{} ms", t.p50, t.p95, t.p99)
        })
    };
    for p in shown {
        t.add_row(vec![
            crate::jobs::at(p.at_ms),
            per_sec(p.enqueued_per_sec),
            per_sec(p.completed_per_sec),
            per_sec(p.failed_per_sec),
            times(p.wait_ms),
            times(p.run_ms),
        ]);
    }
    println!("{t}");
}

/// A rate as people read it: three significant digits or so, and a
/// trickle (one job in five minutes) not shown as 0.
fn per_sec(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Blocked jobs as one cell: "12 (paused)", "5 budget, 3 key_limit".
fn blocked_cell(blocked: &std::collections::BTreeMap<String, u64>) -> String {
    let total: u64 = blocked.values().sum();
    match blocked.len() {
        0 => "0".to_string(),
        1 => format!(
            "{total} ({})",
            blocked.keys().next().map_or("", |k| k.as_str())
        ),
        _ => {
            // In the order a job is counted under the first reason.
            let rank = |r: &str| {
                drover::machine::blocked::BlockReason::ALL
                    .iter()
                    .position(|b| b.as_str() == r)
                    .unwrap_or(usize::MAX)
            };
            let mut held: Vec<(&String, &u64)> = blocked.iter().collect();
            held.sort_by_key(|(r, _)| rank(r));
            let parts: Vec<String> = held.iter().map(|(r, n)| format!("{n} {r}")).collect();
            format!("{total} ({})", parts.join(", "))
        }
    }
}

fn print_why(w: &QueueWhyBody) {
    println!(
        "queue {}: {} ready, {} runnable, {} blocked; {} leased, {} waiting for dependencies, {} scheduled",
        w.queue,
        w.ready,
        w.runnable,
        w.ready.saturating_sub(w.runnable),
        w.leased,
        w.waiting,
        w.scheduled
    );
    match w.workers {
        Some(n) => println!("{n} workers connected for it take new leases"),
        None => println!("a node did not answer: its workers are not counted"),
    }
    if !w.blocked.is_empty() {
        let mut t = table(&["REASON", "JOBS", "SCOPE", "RELEASE"]);
        for b in &w.blocked {
            t.add_row(vec![
                b.reason.clone(),
                b.jobs.unwrap_or(0).to_string(),
                if b.scope.is_empty() {
                    "-".to_string()
                } else {
                    b.scope.clone()
                },
                b.release.clone(),
            ]);
        }
        println!("{t}");
    } else if w.ready > 0 {
        println!("nothing holds its ready jobs back: workers lease them as they ask");
    }
    for note in &w.notes {
        println!("note: {note}");
    }
}

fn print(q: &QueuesBody) {
    let mut t = table(&[
        "QUEUE",
        "READY p1/p2/p3/p4/p5",
        "RUNNABLE",
        "BLOCKED",
        "SCHEDULED",
        "LEASED",
        "SUCCEEDED",
        "DEAD",
        "STATE",
        "MAX DEPTH",
        "CONCURRENCY",
    ]);
    for s in &q.queues {
        let c = &s.counts;
        let ready: Vec<String> = c.ready.iter().map(u64::to_string).collect();
        let state = match (s.paused, s.draining) {
            (true, true) => "paused, draining",
            (true, false) => "paused",
            (false, true) => "draining",
            (false, false) => "",
        };
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        t.add_row(vec![
            s.name.clone(),
            ready.join("/"),
            s.runnable.to_string(),
            blocked_cell(&s.blocked),
            c.scheduled.to_string(),
            c.leased.to_string(),
            c.succeeded.to_string(),
            c.dead.to_string(),
            state.to_string(),
            opt(s.policy.max_depth),
            opt(s.policy.concurrency_limit),
        ]);
    }
    println!("{t}");
}
