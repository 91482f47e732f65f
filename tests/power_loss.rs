//! Power loss, simulated: a node runs on lazyfs (tools/lazyfs, a FUSE
//! filesystem in the spirit of the LazyFS Jepsen uses for etcd) that keeps
//! every write not yet covered by an fsync/fdatasync in memory. Under load,
//! the power is cut: unsynced data is dropped (a random part of it written
//! back first, as a disk's writeback might have), every later request fails.
//! The node is killed, and reopened on what the "disk" holds: it must open,
//! and every job whose enqueue was acknowledged must be there.
//!
//! Needs root, /dev/fuse and the lazyfs binary, so it is ignored by a plain
//! `cargo test`; `.ci/run` builds lazyfs and runs it:
//!
//! ```sh
//! cargo build --release --manifest-path tools/lazyfs/Cargo.toml
//! cargo test --test power_loss -- --ignored --nocapture
//! ```

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use drover::client::worker::{self, JobError, WorkerOptions};
use drover::client::Producer;
use tokio::sync::watch;

/// Frequent snapshots and log compaction, so sled frees and reuses log
/// segments while the load runs: the path a power loss could catch.
const CONFIG: &str = "[raft]\nsnapshot_every = 2000\n[jobs]\nheartbeat_timeout = \"5s\"\n";
const CYCLES: u64 = 3;

/// A mounted lazyfs.
struct LazyFs {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl LazyFs {
    fn binary() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/lazyfs/target/release/lazyfs")
    }

    /// Mounts `backing` at `mount`; on a cut, the dirty pages chosen by
    /// `seed` are written back and the rest dropped.
    fn mount(backing: &Path, mount: &Path, seed: u64) -> LazyFs {
        let bin = Self::binary();
        assert!(
            bin.exists(),
            "{} is missing: cargo build --release --manifest-path tools/lazyfs/Cargo.toml",
            bin.display()
        );
        std::fs::create_dir_all(mount).expect("mount point");
        let mut child = Command::new(bin)
            .arg("--backing")
            .arg(backing)
            .arg("--mount")
            .arg(mount)
            .arg("--keep-random")
            .arg(seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn lazyfs");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[lazyfs] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut fs = LazyFs { child, lines };
        fs.expect_line("lazyfs ready");
        fs
    }

    fn expect_line(&mut self, prefix: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return,
                Ok(_) => {}
                Err(e) => panic!("lazyfs did not print {prefix:?}: {e}"),
            }
        }
    }

    /// The disk starts failing every fsync (see tools/lazyfs/README.md).
    fn fail_fsync(&mut self) {
        signal(self.child.id(), libc::SIGUSR2);
        self.expect_line("lazyfs fail-fsync");
    }

    /// The power cut.
    fn cut(&mut self) {
        signal(self.child.id(), libc::SIGUSR1);
        self.expect_line("lazyfs cut");
    }

    fn unmount(mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let status = wait_child(&mut self.child, Duration::from_secs(30));
        assert!(status.success(), "lazyfs exited with {status}");
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(self.child.id(), libc::SIGTERM);
            let _ = wait_child(&mut self.child, Duration::from_secs(30));
        }
    }
}

/// Four producers enqueueing jobs with unique payloads (`PREFIX-pI-N`)
/// into `queue` until `producing` is cleared (or 100,000 each), recording
/// every acknowledged one.
fn produce(
    server: &str,
    queue: &str,
    prefix: &str,
    acked: &Arc<Mutex<HashMap<u64, String>>>,
    producing: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|i| {
            let (server, queue, prefix) =
                (server.to_string(), queue.to_string(), prefix.to_string());
            let (acked, producing) = (acked.clone(), producing.clone());
            tokio::spawn(async move {
                let Ok(mut p) = Producer::connect(&server).await else {
                    return;
                };
                for n in 0..100_000 {
                    if !producing.load(Ordering::Relaxed) {
                        break;
                    }
                    let payload = format!("{prefix}-p{i}-{n}");
                    match p.enqueue(vec![new_job(&queue, &payload)]).await {
                        Ok(ids) => {
                            acked.lock().unwrap().insert(ids[0].id, payload);
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect()
}

/// Every acknowledged job is in the node, with its payload.
async fn check_acked(node: &TestNode, acked: &HashMap<u64, String>) {
    let mut p = Producer::connect(&node.grpc).await.expect("connect");
    for (&id, payload) in acked {
        let job = p
            .get(id)
            .await
            .unwrap_or_else(|e| panic!("acknowledged job {id} is lost: {e}"));
        assert_eq!(job.payload, Bytes::from(payload.clone()), "job {id}");
    }
}

#[tokio::test]
#[ignore = "needs root, /dev/fuse and tools/lazyfs built; run by .ci/run"]
async fn acknowledged_jobs_survive_a_power_cut() {
    let backing = tempfile::tempdir().expect("backing dir");
    let mut node = TestNode::prepare("127.0.0.1:0", CONFIG);
    let acked = Arc::new(Mutex::new(HashMap::<u64, String>::new()));
    for cycle in 0..CYCLES {
        let mut fs = LazyFs::mount(backing.path(), &node.data_dir(), 1000 + cycle);
        node.spawn();
        let before = acked.lock().unwrap().clone();
        check_acked(&node, &before).await;
        eprintln!(
            "cycle {cycle}: node opened after the cut with all {} acknowledged jobs",
            before.len()
        );

        // Load: producers with unique payloads, a worker churning records.
        let producing = Arc::new(AtomicBool::new(true));
        let producers = produce(
            &node.grpc,
            "power",
            &format!("c{cycle}"),
            &acked,
            &producing,
        );
        let (stop_tx, stop) = watch::channel(false);
        let handler = |_job: drover::client::worker::Job| async {
            Ok::<_, JobError>(Bytes::from_static(b"done"))
        };
        let mut opts = WorkerOptions::new(node.grpc.clone(), "pw", vec!["power".into()], 4);
        opts.max_reconnects = 1;
        opts.stop_timeout = Duration::from_secs(1);
        let w = tokio::spawn(worker::run(opts, handler, stop));

        let target = before.len() + 3000 + 1500 * cycle as usize;
        wait_for("load before the cut", Duration::from_secs(120), || async {
            let n = acked.lock().unwrap().len();
            if n >= target {
                Ok(())
            } else {
                Err(format!("{n} acknowledged, cutting at {target}"))
            }
        })
        .await;
        fs.cut();
        // Whatever is acknowledged from here on was synced before the cut:
        // every fsync after it fails.
        tokio::time::sleep(Duration::from_millis(300)).await;
        node.kill();
        producing.store(false, Ordering::Relaxed);
        stop_tx.send_replace(true);
        for p in producers {
            let _ = p.await;
        }
        let _ = w.await;
        fs.unmount();
        eprintln!(
            "cycle {cycle}: cut with {} acknowledged",
            acked.lock().unwrap().len()
        );
    }
    let fs = LazyFs::mount(backing.path(), &node.data_dir(), 0);
    node.spawn();
    let all = acked.lock().unwrap().clone();
    check_acked(&node, &all).await;
    eprintln!(
        "after {CYCLES} power cuts: all {} acknowledged jobs are there",
        all.len()
    );
    node.kill();
    fs.unmount();
}

/// A disk that fails an fsync under load: the node stops at once, naming
/// the disk, rather than retry an fsync whose data the kernel may have
/// dropped; and nothing it acknowledged is missing once the unsynced rest
/// is gone too (a cut after the failure).
// Multi-threaded: the producers go on (and make the node fsync) while the
// test waits for the node to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, /dev/fuse and tools/lazyfs built; run by .ci/run"]
async fn a_failed_fsync_stops_the_node_and_nothing_after_it_is_acknowledged() {
    let backing = tempfile::tempdir().expect("backing dir");
    let mut node = TestNode::prepare("127.0.0.1:0", CONFIG);
    let log = node.dir.path().join("node.log");
    node.log_file = Some(log.clone());
    let mut fs = LazyFs::mount(backing.path(), &node.data_dir(), 7);
    node.spawn();
    let acked = Arc::new(Mutex::new(HashMap::<u64, String>::new()));
    let producing = Arc::new(AtomicBool::new(true));
    let producers = produce(&node.grpc, "fsync", "f", &acked, &producing);
    wait_for(
        "load before the failure",
        Duration::from_secs(120),
        || async {
            let n = acked.lock().unwrap().len();
            if n >= 2000 {
                Ok(())
            } else {
                Err(format!("{n} acknowledged"))
            }
        },
    )
    .await;
    fs.fail_fsync();
    let stopped = node.wait_exit(Duration::from_secs(30));
    assert!(!stopped.success(), "stopped with a failure: {stopped:?}");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("failed a write or a sync"),
        "names the failing disk: {}",
        said.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    producing.store(false, Ordering::Relaxed);
    for p in producers {
        let _ = p.await;
    }
    // What the failed fsyncs were to write is gone, and so is the rest.
    fs.cut();
    fs.unmount();
    let fs = LazyFs::mount(backing.path(), &node.data_dir(), 0);
    node.spawn();
    let all = acked.lock().unwrap().clone();
    check_acked(&node, &all).await;
    eprintln!(
        "after a failed fsync: all {} acknowledged jobs are there",
        all.len()
    );
    node.kill();
    fs.unmount();
}
