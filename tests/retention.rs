//! Finished jobs do not pile up: past `jobs.retention` the leader's purge
//! removes them (a purged id answers 404), and a node that runs millions of
//! jobs keeps a flat data dir and a flat memory.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use drover::client::worker::{self, JobError, WorkerOptions};
use drover::client::Producer;
use tokio::sync::watch;

fn run_workers(
    servers: &str,
    queue: &str,
    n: usize,
    capacity: u32,
    done: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Result<worker::WorkerReport, drover::client::ClientError>>> {
    (0..n)
        .map(|i| {
            let done = done.clone();
            let handler = move |_job: drover::client::worker::Job| {
                let done = done.clone();
                async move {
                    done.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, JobError>(Bytes::from_static(b"ok"))
                }
            };
            let opts = WorkerOptions::new(servers, format!("w{i}"), vec![queue.into()], capacity);
            tokio::spawn(worker::run(opts, handler, stop.clone()))
        })
        .collect()
}

async fn metric(node: &TestNode, name: &str) -> f64 {
    metric_value(&metrics_text(node).await, name).unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test]
async fn finished_jobs_are_removed_after_their_retention() {
    let node = TestNode::start("[jobs]\nretention = \"1s\"\nidempotency_ttl = \"1s\"\n");
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    let mut keyed = new_job("short", "x");
    keyed.idempotency_key = "k1".into();
    let first = p.enqueue(vec![keyed.clone()]).await.unwrap()[0].id;
    let mut ids = vec![first];
    ids.extend(
        p.enqueue(
            (0..299)
                .map(|i| new_job("short", &format!("{i}")))
                .collect(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id),
    );
    let done = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let workers = run_workers(&node.grpc, "short", 2, 16, done.clone(), stop);
    wait_for("all jobs finished", Duration::from_secs(30), || async {
        let n = done.load(Ordering::Relaxed);
        if n >= 300 {
            Ok(())
        } else {
            Err(format!("{n} done"))
        }
    })
    .await;
    assert!(metric(&node, "drover_data_dir_bytes").await > 0.0);
    // Gone after their retention, every one: 404, and no finished jobs left.
    wait_for(
        "finished jobs to be purged",
        Duration::from_secs(30),
        || async {
            let finished = metric(&node, "drover_finished_jobs").await;
            if finished == 0.0 {
                Ok(())
            } else {
                Err(format!("{finished} finished jobs kept"))
            }
        },
    )
    .await;
    for id in [ids[0], ids[150], ids[299]] {
        let (status, body) = get_json(&format!("{}/api/v1/jobs/{id}", node.http)).await;
        assert_eq!(status, 404, "job {id}: {body}");
    }
    // The idempotency key went with its job: it makes a new one now.
    let again = p.enqueue(vec![keyed]).await.unwrap();
    assert!(!again[0].duplicate);
    assert_ne!(again[0].id, first);
    stop_tx.send_replace(true);
    for w in workers {
        w.await.unwrap().unwrap();
    }
}

/// Bytes of the data dir, as `du` counts them.
fn du(node: &TestNode) -> u64 {
    drover::metrics::disk_usage(&node.data_dir())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs 2,000,000 jobs; run by .ci/run in release"]
async fn the_data_dir_levels_off_while_millions_of_jobs_run_through() {
    let total: u64 = std::env::var("DROVER_RETENTION_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let node = TestNode::start("[jobs]\nretention = \"5s\"\n");
    let done = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let workers = run_workers(&node.grpc, "flow", 4, 256, done.clone(), stop);
    let producing = Arc::new(AtomicBool::new(true));
    let enqueued = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for f in 0..2 {
        let (servers, producing, enqueued, done) = (
            node.grpc.clone(),
            producing.clone(),
            enqueued.clone(),
            done.clone(),
        );
        producers.push(tokio::spawn(async move {
            let p = Producer::connect(&servers).await.unwrap();
            let mut s = p.enqueue_stream().await.unwrap();
            let payload = "x".repeat(256);
            while producing.load(Ordering::Relaxed) {
                // Keep the backlog small: this measures finished jobs.
                if enqueued.load(Ordering::Relaxed) > done.load(Ordering::Relaxed) + 20_000 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let batch = (0..200).map(|_| new_job("flow", &payload)).collect();
                s.enqueue(batch).await.unwrap();
                if enqueued.fetch_add(200, Ordering::Relaxed) + 200 >= total {
                    break;
                }
            }
            let _ = f;
        }));
    }
    let started = Instant::now();
    let mut samples: Vec<(u64, u64)> = Vec::new(); // (jobs done, bytes on disk)
    let mut rss: Vec<(u64, u64)> = Vec::new(); // (jobs done, the node's RSS)
    let mut next_sample = 0;
    while done.load(Ordering::Relaxed) < total {
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "the run took too long"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = done.load(Ordering::Relaxed);
        if n >= next_sample {
            // Not /metrics: a scrape drains the recorder's histogram
            // samples, which is the very growth this must see if it is back.
            let bytes = du(&node);
            let resident = drover::resources::rss_of(node.pid()).expect("the node's RSS");
            eprintln!(
                "{n} jobs done after {:.0?}: data dir {} MB (snapshots {} MB), RSS {} MB",
                started.elapsed(),
                bytes / 1_000_000,
                drover::metrics::disk_usage(&node.data_dir().join("snapshots")) / 1_000_000,
                resident / 1_000_000,
            );
            samples.push((n, bytes));
            rss.push((n, resident));
            next_sample = n + total / 20;
        }
    }
    producing.store(false, Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    stop_tx.send_replace(true);
    for w in workers {
        w.await.unwrap().unwrap();
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    // Growth with the count would double the size between the middle and
    // the end; flat means it stays within what the first half reached.
    let half: u64 = samples
        .iter()
        .filter(|(n, _)| *n <= total / 2)
        .map(|(_, b)| *b)
        .max()
        .unwrap_or(0);
    let end = samples.last().map(|(_, b)| *b).unwrap_or(0);
    let second_half_max = samples
        .iter()
        .filter(|(n, _)| *n > total / 2)
        .map(|(_, b)| *b)
        .max()
        .unwrap_or(0);
    eprintln!(
        "{total} jobs at {rate:.0}/s: data dir at most {} MB by the middle, at most {} MB after it, {} MB at the end",
        half / 1_000_000,
        second_half_max / 1_000_000,
        end / 1_000_000
    );
    assert!(
        second_half_max <= half + half / 4,
        "the data dir grew with the job count: {} MB by the middle, {} MB after",
        half / 1_000_000,
        second_half_max / 1_000_000
    );
    // Memory: the highest RSS of the second half against that of the
    // first, per job of the second half. Histogram samples kept until a
    // scrape once made it about 70 bytes per job; a node whose memory
    // follows what is live (a 5 s window of finished jobs) stays within the
    // allocator's swings, a few MB. Maxima, not single reads, since RSS
    // moves by 10-20 MB from one read to the next.
    let max_rss = |second: bool| {
        rss.iter()
            .filter(|(n, _)| (*n > total / 2) == second)
            .map(|(_, b)| *b)
            .max()
            .unwrap_or(0)
    };
    let (first_rss, second_rss) = (max_rss(false), max_rss(true));
    let per_job = second_rss.saturating_sub(first_rss) as f64 / (total / 2) as f64;
    eprintln!(
        "RSS at most {} MB by the middle, at most {} MB after it: {per_job:.1} bytes per job; {} finished jobs kept at the end",
        first_rss / 1_000_000,
        second_rss / 1_000_000,
        metric(&node, "drover_finished_jobs").await
    );
    assert!(
        per_job < 30.0,
        "memory grew with the job count: RSS at most {} MB by the middle, {} MB after, {per_job:.1} bytes per job",
        first_rss / 1_000_000,
        second_rss / 1_000_000
    );
}
