//! The large-payload scenario: a burst of large jobs into one node (or,
//! with `--cluster`, three), then one worker drains them. Every node's RSS
//! and data dir are sampled every second throughout, since the peak under
//! the burst is the figure, not the level after it. The enqueue rate is set
//! against the sequential write speed of the disk the nodes write to,
//! measured in the same run: a node writes each payload twice (its raft
//! log entry and its payload file), so half that speed is the most it can
//! take in.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use super::{job, join_workers, target, what_runs, BenchArgs, BenchError};
use crate::client::worker::{self, WorkerOptions};
use crate::client::Producer;

/// Payloads per enqueue call, as a producer of documents would batch them.
const PER_REQUEST: usize = 10;
/// Producers sending at once.
const PRODUCERS: usize = 4;
/// Jobs and payload size when `--jobs` and `--payload-bytes` are left at
/// their defaults (which suit the small-job workloads).
const DEFAULT_JOBS: u64 = 500;
const DEFAULT_PAYLOAD: usize = 1_000_000;
/// Copies of a payload a node writes: its log entry and its payload file.
/// The nodes the bench starts share one disk, so a cluster's is three times
/// this.
const COPIES_PER_NODE: usize = 2;
/// Bytes written to measure the disk's sequential write speed.
const DISK_PROBE_BYTES: usize = 256 << 20;

/// The highest RSS and data dir any node reached while sampled.
#[derive(Default, Clone, Copy)]
struct Peak {
    rss: u64,
    disk: u64,
}

fn mb(b: u64) -> String {
    format!("{:.0} MB", b as f64 / 1e6)
}

/// Sequential write speed of the filesystem of `dir` in bytes per second:
/// 1 MiB writes, synced at the end, like `dd bs=1M conv=fdatasync`.
fn disk_write_speed(dir: &Path) -> std::io::Result<f64> {
    let path = dir.join("drover-bench-disk-probe");
    let chunk = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let written = (|| {
        let mut f = std::fs::File::create(&path)?;
        for _ in 0..DISK_PROBE_BYTES / chunk.len() {
            f.write_all(&chunk)?;
        }
        f.sync_data()
    })();
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    written.map(|()| DISK_PROBE_BYTES as f64 / secs)
}

/// Samples every node's RSS and data dir once a second into `peak` until
/// `stop` is set.
fn sample(
    nodes: Vec<(u32, PathBuf)>,
    peak: Arc<Mutex<Peak>>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let nodes = nodes.clone();
            let now = tokio::task::spawn_blocking(move || read_nodes(&nodes))
                .await
                .unwrap_or_default();
            {
                let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                p.rss = p.rss.max(now.rss);
                p.disk = p.disk.max(now.disk);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        }
    })
}

/// The largest RSS and data dir among `nodes` now.
fn read_nodes(nodes: &[(u32, PathBuf)]) -> Peak {
    let mut p = Peak::default();
    for (pid, data) in nodes {
        p.rss = p.rss.max(crate::resources::rss_of(*pid).unwrap_or(0));
        p.disk = p.disk.max(crate::metrics::disk_usage(data));
    }
    p
}

pub(super) async fn large(args: BenchArgs) -> Result<(), BenchError> {
    let jobs = if args.jobs == 100_000 {
        DEFAULT_JOBS
    } else {
        args.jobs
    };
    let size = if args.payload_bytes == 256 {
        DEFAULT_PAYLOAD
    } else {
        args.payload_bytes
    };
    println!(
        "drover bench --scenario large: {jobs} jobs of {size} bytes ({}) in calls of {PER_REQUEST} from {PRODUCERS} producers into {}, then one worker of 16 drains them; RSS and data dir of every node sampled every second",
        mb(jobs * size as u64),
        what_runs(&args, "")
    );
    let target = target(&args).await?;
    let nodes: Vec<(u32, PathBuf)> = target
        .nodes
        .iter()
        .map(|n| (n.child.id(), n.dir.path().join("data")))
        .collect();
    if nodes.is_empty() {
        println!("  (RSS and data dir are read only of nodes the bench starts)");
    }
    // The same filesystem as the nodes' data dirs (the bench's temp dirs).
    let probe_dir = target
        .nodes
        .first()
        .map(|n| n.dir.path().to_path_buf())
        .unwrap_or_else(std::env::temp_dir);
    let disk = tokio::task::spawn_blocking(move || disk_write_speed(&probe_dir))
        .await
        .map_err(|e| BenchError::Spawn(e.to_string()))?
        .map_err(|e| BenchError::Spawn(format!("cannot measure the disk's write speed: {e}")))?;

    let peak = Arc::new(Mutex::new(Peak::default()));
    let (stop_tx, stop) = watch::channel(false);
    let sampler = sample(nodes.clone(), peak.clone(), stop);
    let payload = Bytes::from(vec![b'x'; size]);
    let start = Instant::now();
    let requests = jobs.div_ceil(PER_REQUEST as u64);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..PRODUCERS {
        let mut p = Producer::connect(&target.url(i)).await?;
        let (next, payload) = (next.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= requests {
                    return Ok::<(), crate::client::ClientError>(());
                }
                let count = (jobs - n * PER_REQUEST as u64).min(PER_REQUEST as u64) as usize;
                p.enqueue_call(vec![job("bench-large", &payload); count])
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| BenchError::Spawn(e.to_string()))??;
    }
    let took = start.elapsed().as_secs_f64();
    let pending_peak = *peak.lock().unwrap_or_else(|e| e.into_inner());
    let rate = (jobs * size as u64) as f64 / took;
    let copies = COPIES_PER_NODE * target.nodes.len().max(1);
    println!(
        "  disk      {:.0} MB/s sequential write (synced) on the nodes' filesystem",
        disk / 1e6
    );
    println!(
        "  enqueue   {:.0} MB/s ({:.1} jobs/s): {:.2} of the disk's speed over the {copies} copies written to it ({COPIES_PER_NODE} a node; issue 41 asks at least 0.5)",
        rate / 1e6,
        jobs as f64 / took,
        rate / (disk / copies as f64)
    );
    if !nodes.is_empty() {
        let now = tokio::task::spawn_blocking({
            let nodes = nodes.clone();
            move || read_nodes(&nodes)
        })
        .await
        .unwrap_or_default();
        println!(
            "  pending   peak rss {}, peak data dir {} while enqueued; now rss {}, data dir {} (highest node)",
            mb(pending_peak.rss.max(now.rss)),
            mb(pending_peak.disk.max(now.disk)),
            mb(now.rss),
            mb(now.disk)
        );
    }

    let drained = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (done_tx, done) = watch::channel(false);
    let opts = WorkerOptions::new(
        target.url(0),
        "bench-large".to_string(),
        vec!["bench-large".into()],
        16,
    );
    let handler = {
        let drained = drained.clone();
        move |_job: crate::client::worker::Job| {
            if drained.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 >= jobs {
                done_tx.send_replace(true);
            }
            async { Ok(Bytes::new()) }
        }
    };
    let start = Instant::now();
    join_workers(vec![tokio::spawn(worker::run(opts, handler, done))]).await?;
    let took = start.elapsed().as_secs_f64();
    stop_tx.send_replace(true);
    let _ = sampler.await;
    let overall = *peak.lock().unwrap_or_else(|e| e.into_inner());
    print!(
        "  drain     {:.1} s ({:.0} MB/s)",
        took,
        (jobs * size as u64) as f64 / took / 1e6
    );
    if nodes.is_empty() {
        println!();
    } else {
        let now = read_nodes(&nodes);
        println!(
            "; peak rss {}, peak data dir {} over the run; after it rss {}, data dir {}",
            mb(overall.rss),
            mb(overall.disk),
            mb(now.rss),
            mb(now.disk)
        );
    }
    Ok(())
}
