//! Scenarios: workloads that exercise the scheduler rather than the raw
//! path. `mixed` preloads a backlog of five priorities, three tenants of
//! weights 1/2/4, a tenth failing once and a quarter under one concurrency
//! key, then drains it: throughput, p99 wait by priority, and each tenant's
//! share while all are backlogged. `deep` runs the e2e workload on a queue
//! that also holds 10,000 and then 1,000,000 ready jobs of a lower
//! priority, in one session, since a pick must cost O(log n). `tenants`
//! drains a backlog spread over 1, 20,000 and 100,000 tenants.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;

use super::{
    end_to_end_on, figure, join_workers, target, BenchArgs, BenchError, CpuMark, Target, Via,
};
use crate::client::worker::{self, JobError, WorkerOptions};
use crate::client::{ClientError, Producer};
use crate::proto::v1 as pb;

const TENANTS: [(&str, u32); 3] = [("t1", 1), ("t2", 2), ("t4", 4)];
const KEY_LIMIT: u32 = 8;
const PRELOAD_BATCH: u64 = 500;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Enqueues jobs `0..n` made by `make` from `args.producers` producers in
/// batches; answers when all are durable.
async fn preload(
    target: &Target,
    args: &BenchArgs,
    n: u64,
    make: impl Fn(u64) -> pb::NewJob + Send + Sync + 'static,
) -> Result<(), BenchError> {
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..args.producers.max(1) {
        let mut p = Producer::connect(&target.url(i)).await?;
        let (make, next) = (make.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(PRELOAD_BATCH, std::sync::atomic::Ordering::Relaxed);
                if start >= n {
                    return Ok::<(), ClientError>(());
                }
                let jobs = (start..(start + PRELOAD_BATCH).min(n))
                    .map(|i| make(i))
                    .collect();
                p.enqueue(jobs).await?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| BenchError::Spawn(e.to_string()))??;
    }
    Ok(())
}

/// Runs `args.workers` workers on `queue` with `handler` until `done`
/// jobs have been run (`count` says when); answers the jobs completed.
async fn drain<H>(
    target: &Target,
    args: &BenchArgs,
    queue: &str,
    handler: impl Fn(watch::Sender<bool>) -> H,
) -> Result<u64, BenchError>
where
    H: worker::Handler,
{
    let (stop_tx, stop) = watch::channel(false);
    let mut workers = Vec::new();
    for i in 0..args.workers {
        let opts = WorkerOptions::new(
            target.url(i),
            format!("bench-{i}"),
            vec![queue.into()],
            args.worker_concurrency,
        );
        workers.push(tokio::spawn(worker::run(
            opts,
            handler(stop_tx.clone()),
            stop.clone(),
        )));
    }
    join_workers(workers).await
}

/// What the mixed scenario's workers saw.
#[derive(Default)]
struct Seen {
    /// Waits (µs) from when workers started to each job's first lease, by
    /// priority.
    waits: BTreeMap<u32, Vec<u64>>,
    /// Each priority's first leases in dispatch order, by tenant (one list
    /// per run when summed up).
    order: BTreeMap<u32, Vec<String>>,
}

#[derive(Default)]
struct AllSeen {
    waits: BTreeMap<u32, Vec<u64>>,
    order: BTreeMap<u32, Vec<Vec<String>>>,
}

/// The tenants' shares of a priority's dispatches until one tenant has had
/// `upto` of them: a window in which every tenant still has jobs of that
/// priority ready (each had twice as many, a quarter of them under the
/// concurrency key), so the weights decide.
fn contended_shares(order: &[String], upto: usize) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in order {
        let c = counts.entry(t.clone()).or_default();
        *c += 1;
        if *c >= upto {
            break;
        }
    }
    counts
}

pub(super) async fn mixed(mut args: BenchArgs) -> Result<(), BenchError> {
    let mut config = String::from("[jobs]\nretry_base_delay = \"10ms\"\n");
    for (t, w) in TENANTS {
        config.push_str(&format!("[tenants.{t}]\nweight = {w}\n"));
    }
    config.push_str(&format!("[limits.\"api:\"]\nconcurrency = {KEY_LIMIT}\n"));
    args.extra_config = config;
    let n = args.jobs;
    println!(
        "drover bench --scenario mixed: {n} jobs preloaded (priorities 1-5, tenants t1/t2/t4 of weights 1/2/4, \
         1 in 10 failing once, 1 in 4 under concurrency key api:x limited to {KEY_LIMIT}), then drained by {} workers of {}; {} runs",
        args.workers, args.worker_concurrency, args.runs
    );
    let payload_len = args.payload_bytes.max(9);
    let mut rates = Vec::new();
    let mut all = AllSeen::default();
    for _ in 0..args.runs.max(1) {
        let target = target(&args).await?;
        preload(&target, &args, n, move |i| {
            let mut payload = vec![0u8; payload_len];
            payload[..8].copy_from_slice(&now_us().to_be_bytes());
            payload[8] = u8::from(i % 10 == 7);
            let mut job = pb::NewJob {
                queue: "bench-mixed".into(),
                tenant: TENANTS[(i / 5 % 3) as usize].0.into(),
                priority: (i % 5) as u32 + 1,
                payload: payload.into(),
                ..Default::default()
            };
            if i % 4 == 0 {
                job.concurrency_key = "api:x".into();
            }
            job
        })
        .await?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let start = Instant::now();
        let started_us = now_us();
        let cpu = CpuMark::now(&target);
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let completed = drain(
            &target,
            &args,
            "bench-mixed",
            |stop: watch::Sender<bool>| {
                let (seen, done) = (seen.clone(), done.clone());
                move |job: crate::client::worker::Job| {
                    let fail = job.attempt == 1 && job.payload.get(8) == Some(&1);
                    if job.attempt == 1 {
                        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                        s.waits
                            .entry(job.priority)
                            .or_default()
                            .push(now_us().saturating_sub(started_us));
                        s.order
                            .entry(job.priority)
                            .or_default()
                            .push(job.tenant.clone());
                    }
                    if !fail && done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 >= n {
                        stop.send_replace(true);
                    }
                    async move {
                        if fail {
                            Err(JobError {
                                class: "flaky".into(),
                                message: "fails once".into(),
                                ..Default::default()
                            })
                        } else {
                            Ok(Bytes::new())
                        }
                    }
                }
            },
        )
        .await?;
        let rate = completed as f64 / start.elapsed().as_secs_f64();
        let nodes_us = CpuMark::now(&target)
            .per_op_since(cpu, completed)
            .nodes
            .map(|us| format!(", nodes {us:.0} us cpu/job"))
            .unwrap_or_default();
        println!(
            "  run: {completed} jobs in {:.1} s, {rate:.0} jobs/s{nodes_us}",
            start.elapsed().as_secs_f64()
        );
        rates.push(rate);
        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
        for (p, w) in std::mem::take(&mut s.waits) {
            all.waits.entry(p).or_default().extend(w);
        }
        for (p, order) in std::mem::take(&mut s.order) {
            all.order.entry(p).or_default().push(order);
        }
    }
    let f = figure(rates);
    println!(
        "mixed      {:>9.0} jobs/s  (min {:.0}, max {:.0})",
        f.median, f.min, f.max
    );
    for (p, mut w) in all.waits {
        w.sort_unstable();
        let at = |q: f64| w[((w.len() as f64 * q) as usize).min(w.len() - 1)] as f64 / 1e3;
        println!(
            "  priority {p}: wait from the workers' start p50 {:.0} ms, p99 {:.0} ms ({} jobs)",
            at(0.5),
            at(0.99),
            w.len()
        );
    }
    // Jobs of one priority and tenant: i % 5 picks the priority, i / 5 % 3
    // the tenant.
    let half = (n / 15 / 2) as usize;
    let mut shares: BTreeMap<String, usize> = BTreeMap::new();
    for runs in all.order.values() {
        for order in runs {
            for (t, c) in contended_shares(order, half) {
                *shares.entry(t).or_default() += c;
            }
        }
    }
    let total = shares.values().sum::<usize>().max(1) as f64;
    let weights: u32 = TENANTS.iter().map(|(_, w)| w).sum();
    println!("  tenant shares of each priority's dispatches until a tenant had half its jobs of it run (all three backlogged):");
    for (t, w) in TENANTS {
        let share = shares.get(t).copied().unwrap_or(0) as f64 / total;
        println!(
            "  tenant {t} (weight {w}): {:.1}% (its weight's share: {:.1}%)",
            share * 100.0,
            f64::from(w) / f64::from(weights) * 100.0
        );
    }
    Ok(())
}

pub(super) async fn deep(args: BenchArgs) -> Result<(), BenchError> {
    println!(
        "drover bench --scenario deep: e2e ({} jobs at priority 3, {} producers, {} workers of {}) on a queue that also holds 10,000 and then 1,000,000 ready jobs of priority 5; {} runs each",
        args.jobs, args.producers, args.workers, args.worker_concurrency, args.runs
    );
    let mut medians = Vec::new();
    for depth in [10_000u64, 1_000_000] {
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        for _ in 0..args.runs.max(1) {
            let target = target(&args).await?;
            let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
            let loaded = Instant::now();
            preload(&target, &args, depth, move |_| pb::NewJob {
                queue: "bench-e2e".into(),
                priority: 5,
                payload: payload.clone(),
                ..Default::default()
            })
            .await?;
            let loaded = loaded.elapsed();
            let run = end_to_end_on(&target, &args, Via::Calls).await?;
            println!(
                "  {depth} ready (loaded in {:.1} s): {:.0} jobs/s{}",
                loaded.as_secs_f64(),
                run.rate,
                run.cpu
                    .nodes
                    .map(|us| format!(", nodes {us:.0} us cpu/job"))
                    .unwrap_or_default()
            );
            rates.push(run.rate);
            cpus.extend(run.cpu.nodes);
            // Let the node go before the next loads a million jobs.
            drop(target);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let f = figure(rates);
        let cpu = (!cpus.is_empty()).then(|| figure(cpus).median);
        println!(
            "deep {depth:>9} ready: {:>7.0} jobs/s (min {:.0}, max {:.0}){}",
            f.median,
            f.min,
            f.max,
            cpu.map(|c| format!("  nodes {c:.0} us cpu/job"))
                .unwrap_or_default()
        );
        medians.push(f.median);
    }
    if let [shallow, deep] = medians[..] {
        println!(
            "deep: with 1,000,000 ready, e2e runs at {:.2}x its rate with 10,000 (the target: above 0.5x)",
            deep / shallow
        );
    }
    Ok(())
}

/// The tenant counts of the `tenants` scenario: one, then many with a few
/// jobs each.
const TENANT_COUNTS: [u64; 3] = [1, 20_000, 100_000];

/// Jobs for `tenants` tenants: `--jobs`, but at least two per tenant.
fn jobs_for(tenants: u64, jobs: u64) -> u64 {
    jobs.max(tenants * 2)
}

/// `tenants`: a backlog spread over 1, 20,000 and 100,000 tenants, each
/// drained by the workers: what a pick costs as tenants grow (it should not
/// grow with them), as the ratio to one tenant's rate in the same session.
pub(super) async fn tenants(args: BenchArgs) -> Result<(), BenchError> {
    println!(
        "drover bench --scenario tenants: a backlog over {TENANT_COUNTS:?} tenants (--jobs {}, at least two per tenant) drained by {} workers of {}; {} runs each",
        args.jobs, args.workers, args.worker_concurrency, args.runs
    );
    let mut medians = Vec::new();
    for tenants in TENANT_COUNTS {
        let n = jobs_for(tenants, args.jobs);
        let mut rates = Vec::new();
        for _ in 0..args.runs.max(1) {
            let target = target(&args).await?;
            let payload = Bytes::from(vec![b'x'; args.payload_bytes]);
            preload(&target, &args, n, move |i| pb::NewJob {
                queue: "bench-tenants".into(),
                tenant: format!("t{}", i % tenants),
                payload: payload.clone(),
                ..Default::default()
            })
            .await?;
            let start = Instant::now();
            let cpu = CpuMark::now(&target);
            let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let completed = drain(&target, &args, "bench-tenants", |stop| {
                let done = done.clone();
                move |_job: crate::client::worker::Job| {
                    if done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 >= n {
                        stop.send_replace(true);
                    }
                    async { Ok::<_, JobError>(Bytes::new()) }
                }
            })
            .await?;
            let rate = completed as f64 / start.elapsed().as_secs_f64();
            println!(
                "  {tenants} tenants, {n} jobs: {rate:.0} jobs/s{}",
                CpuMark::now(&target)
                    .per_op_since(cpu, completed)
                    .nodes
                    .map(|us| format!(", nodes {us:.0} us cpu/job"))
                    .unwrap_or_default()
            );
            rates.push(rate);
        }
        let f = figure(rates);
        println!(
            "tenants {tenants:>7}: {:>7.0} jobs/s (min {:.0}, max {:.0})",
            f.median, f.min, f.max
        );
        medians.push(f.median);
    }
    if let [one, rest @ ..] = &medians[..] {
        for (tenants, rate) in TENANT_COUNTS[1..].iter().zip(rest) {
            println!(
                "tenants: with {tenants} tenants, dispatch runs at {:.2}x one tenant's rate",
                rate / one.max(f64::MIN_POSITIVE)
            );
        }
    }
    Ok(())
}
