//! A full disk or a backlog must never take a node down: nodes raise disk
//! and memory alarms, the leader refuses new work while they stand (and
//! lets the cluster drain), an actual ENOSPC stops a node cleanly, and a
//! restart on a disk that is still full changes nothing.
//!
//! The disk tests mount a small tmpfs under the node's data dir, which
//! needs root (CI runs as root); elsewhere they say so and return.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use drover::api::types::{JobBody, JobStateBody, MembersBody, QueueBody, StatsBody};
use drover::client::{ClientError, Producer};
use drover::proto::v1 as pb;

/// A tmpfs mounted on `dir` for as long as it lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts `size` (as mount's `size=`) on `dir`; None if this process
    /// may not mount.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here (the disk tests need root)");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A file of `mib` MiB in `dir` that the test deletes to free space.
fn ballast(dir: &Path, mib: usize) -> PathBuf {
    let path = dir.join("ballast");
    std::fs::write(&path, vec![7u8; mib << 20]).unwrap();
    path
}

fn job(queue: &str, bytes: usize, n: u64) -> pb::NewJob {
    pb::NewJob {
        queue: queue.into(),
        payload: vec![(n % 251) as u8; bytes].into(),
        ..Default::default()
    }
}

/// How an enqueue ended: the ids, or the drover code of the refusal.
async fn try_enqueue(p: &mut Producer, jobs: Vec<pb::NewJob>) -> Result<Vec<u64>, String> {
    match p.enqueue_call(jobs).await {
        Ok(done) => Ok(done.iter().map(|j| j.id).collect()),
        Err(ClientError::Status(s)) => Err(drover::wire::drover_code(&s)
            .unwrap_or(drover::wire::code_name(s.code()))
            .to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Enqueues batches of `per` jobs of `bytes` until one is refused (at most
/// `max` batches); the acknowledged ids and the refusal's code.
async fn fill(
    p: &mut Producer,
    queue: &str,
    bytes: usize,
    per: u64,
    max: usize,
) -> (Vec<u64>, Option<String>) {
    let mut acked = Vec::new();
    for b in 0..max as u64 {
        let jobs = (0..per).map(|i| job(queue, bytes, b * per + i)).collect();
        match try_enqueue(p, jobs).await {
            Ok(ids) => acked.extend(ids),
            Err(code) => return (acked, Some(code)),
        }
    }
    (acked, None)
}

async fn metric(node: &TestNode, name: &str) -> f64 {
    metric_value(&metrics_text(node).await, name).unwrap_or(f64::NAN)
}

/// Every job of `queue` by state, as the node counts them (None while it
/// does not answer, or has no such queue).
async fn states(node: &TestNode, queue: &str) -> Option<QueueBody> {
    let s = node
        .try_body::<StatsBody>("/api/v1/stats?stale=ok")
        .await
        .ok()?;
    s.queues.get(queue).cloned()
}

async fn alarms_seen_by(node: &TestNode) -> BTreeMap<u64, Vec<String>> {
    let m = node
        .try_body::<MembersBody>("/api/v1/cluster/members")
        .await;
    m.map(|m| m.members.into_iter().map(|m| (m.id, m.alarms)).collect())
        .unwrap_or_default()
}

async fn wait_alarm(node: &TestNode, id: u64, alarm: &str, on: bool) {
    wait_for(
        &format!("node {id}'s {alarm} to be {on} as seen from {}", node.http),
        Duration::from_secs(20),
        || async {
            let seen = alarms_seen_by(node).await;
            let has = seen.get(&id).is_some_and(|a| a.iter().any(|x| x == alarm));
            if has == on {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_running_low_refuses_new_work_drains_and_recovers() {
    // 128 MiB: 48 of ballast, 48 kept free; the jobs fill about 32, and
    // draining them (sled rewrites records as they finish) needs room too.
    let mut node = TestNode::prepare("127.0.0.1:0", "[storage]\nmin_free_bytes = \"48 MiB\"\n");
    let Some(_fs) = Tmpfs::mount(&node.data_dir(), "128m") else {
        return;
    };
    let ballast = ballast(&node.data_dir(), 48);
    node.spawn();
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    // 20 KB jobs, 40 to a batch: the disk reaches the mark in a few dozen.
    let (acked, refused) = fill(&mut p, "fill", 20_000, 40, 400).await;
    assert_eq!(
        refused.as_deref(),
        Some("disk_full"),
        "refused as disk_full before the disk filled"
    );
    assert!(
        acked.len() > 100,
        "took work until the mark: {}",
        acked.len()
    );
    assert!(node.is_running());
    assert_eq!(metric(&node, "drover_disk_full").await, 1.0);
    wait_alarm(&node, 1, "disk_full", true).await;
    // Reads go on; so does the CLI, which names the cause.
    let (code, j) = get_json(&format!("{}/api/v1/jobs/{}", node.http, acked[0])).await;
    let state = serde_json::from_value::<JobBody>(j).ok().map(|j| j.state);
    assert_eq!((code, state), (200, Some(JobStateBody::Ready)));
    let out = drover_cli(
        &["enqueue", "--queue", "fill", "--payload", "x"],
        &node.grpc,
        "",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("disk_full") && err.contains("min_free_bytes"),
        "{err}"
    );
    // Completions go through while new work is refused: a worker drains.
    let _worker = exec_worker(&node.grpc, "fill", "drain", "cat >/dev/null");
    wait_for(
        "the worker to finish every acknowledged job",
        Duration::from_secs(60),
        || async {
            let s = states(&node, "fill").await;
            if s.as_ref().map(|q| q.succeeded) == Some(acked.len() as u64) {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;
    // (Whether the alarm still stands here depends on what sled gave back
    // as the jobs finished; the refusal was checked above.)
    // The operator frees space: the alarm clears by itself.
    std::fs::remove_file(ballast).unwrap();
    wait_alarm(&node, 1, "disk_full", false).await;
    let more = try_enqueue(&mut p, vec![job("fill", 10, 0)]).await.unwrap();
    assert!(more[0] > *acked.last().unwrap());
    assert_eq!(metric(&node, "drover_disk_full").await, 0.0);
}

/// A snapshot of a directory tree: each file's path, size and contents'
/// hash, to tell whether anything changed.
fn tree_state(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    use std::hash::{Hash, Hasher};
    let mut out = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                out.insert(path, (bytes.len() as u64, h.finish()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_stops_the_node_and_restarts_on_a_full_disk_change_nothing() {
    let mut node = TestNode::prepare("127.0.0.1:0", "[storage]\nmin_free_bytes = 0\n");
    let Some(_fs) = Tmpfs::mount(&node.data_dir(), "64m") else {
        return;
    };
    let ballast = ballast(&node.data_dir(), 16);
    let log = node.dir.path().join("node.log");
    node.log_file = Some(log.clone());
    node.spawn();
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    let (acked, refused) = fill(&mut p, "fill", 20_000, 40, 1000).await;
    assert!(refused.is_some(), "the disk filled");
    assert!(acked.len() > 100, "took work until the disk filled");
    // The node stops by itself, with an error naming the cause.
    let status = node.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "stopped with a failure: {status:?}");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("is full") && said.contains(&node.data_dir().display().to_string()),
        "names the full disk and the data dir: {said}"
    );
    // A supervisor restarts it, again and again: nothing changes.
    let before = tree_state(&node.data_dir());
    for _ in 0..10 {
        let out = node.serve_command().output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot start on data dir") && err.contains("Nothing was changed"),
            "{err}"
        );
    }
    assert_eq!(
        tree_state(&node.data_dir()),
        before,
        "restarts wrote nothing"
    );
    // Space returns: it opens with every acknowledged job (and perhaps
    // the batch whose answer the stop cut off).
    std::fs::remove_file(ballast).unwrap();
    node.spawn();
    for id in &acked {
        assert_eq!(job_state(&node, *id).await, "ready", "job {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_snapshot_files_do_not_stop_a_node_from_opening() {
    let mut node = TestNode::start("");
    let ids = enqueue_n(&node.grpc, "q", 20);
    assert!(node.terminate().success());
    let data = node.data_dir();
    // What an interrupted sled snapshot write leaves: empty, or half of one.
    std::fs::write(data.join("snap.00000000000000AB.generating"), b"").unwrap();
    std::fs::write(
        data.join("snap.7FFFFFFFFFFFFFFF.generating"),
        vec![0x5a; 4096],
    )
    .unwrap();
    // And drover's own temp files of snapshots and backups.
    std::fs::write(data.join("snapshots/snap-x.bin.tmp"), b"half").unwrap();
    std::fs::write(data.join("snapshots/recv-1-1-from-2.part"), b"half").unwrap();
    node.spawn();
    for id in &ids {
        assert_eq!(job_state(&node, *id).await, "ready");
    }
    let left: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .chain(std::fs::read_dir(data.join("snapshots")).unwrap())
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".generating") || n.ends_with(".tmp") || n.ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "unfinished files removed: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_over_the_watermark_refuses_new_work_until_workers_drain_it() {
    // A short log and retention, so what drains leaves memory too.
    let node = TestNode::start(
        "[limits]\nmemory_high_watermark = \"256 MiB\"\n[jobs]\nretention = \"1s\"\n[raft]\nlog_keep_bytes = \"4 MiB\"\nlog_keep_entries = 100\n",
    );
    let mark = 256.0 * 1024.0 * 1024.0;
    assert_eq!(
        metric(&node, "drover_memory_high_watermark_bytes").await,
        mark
    );
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    let (acked, refused) = fill(&mut p, "big", 100_000, 10, 2000).await;
    assert_eq!(refused.as_deref(), Some("memory_high"));
    let rss = metric(&node, "drover_memory_rss_bytes").await;
    assert!(
        rss < mark + 128.0 * 1024.0 * 1024.0,
        "refused before RSS passed the mark by much: {rss}"
    );
    assert_eq!(metric(&node, "drover_memory_high").await, 1.0);
    let (code, _) = get_json(&format!("{}/api/v1/jobs/{}", node.http, acked[0])).await;
    assert_eq!(code, 200, "reads go on");
    let _worker = exec_worker_with(
        &node.grpc,
        "big",
        "drain",
        "cat >/dev/null",
        &["--concurrency", "8"],
    );
    wait_for(
        "the alarm to clear once the backlog drained",
        Duration::from_secs(120),
        || async {
            let s = states(&node, "big").await;
            let high = metric(&node, "drover_memory_high").await;
            if high == 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{s:?}, rss {}",
                    metric(&node, "drover_memory_rss_bytes").await
                ))
            }
        },
    )
    .await;
    try_enqueue(&mut p, vec![job("big", 10, 0)]).await.unwrap();
    let s = states(&node, "big").await;
    assert_eq!(s.as_ref().map_or(0, |q| q.dead), 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_alarms_reach_the_leader_which_refuses_by_the_rule() {
    let mut c = TestCluster::start(3, "");
    let leader = c.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let restart_with = |c: &mut TestCluster, i: usize, extra: &str| {
        c.nodes[i].extra_config.push_str(extra);
        assert!(c.nodes[i].terminate().success());
        c.nodes[i].spawn();
    };
    // One follower short of disk: reported, but the others take the work.
    let f1 = followers[0];
    restart_with(&mut c, f1, "\n[storage]\nmin_free_bytes = \"100%\"\n");
    let leader = c.leader().await;
    wait_alarm(&c.nodes[leader], f1 as u64 + 1, "disk_full", true).await;
    let mut p = Producer::connect(&c.nodes[leader].grpc).await.unwrap();
    try_enqueue(&mut p, vec![job("q", 10, 0)]).await.unwrap();
    // A follower over its memory mark: every voter holds the same state,
    // so the leader refuses, naming it, and so does a follower that
    // forwards.
    let f2 = *followers
        .iter()
        .find(|f| **f != f1 && **f != leader)
        .unwrap_or(&f1);
    restart_with(
        &mut c,
        f2,
        "\n[limits]\nmemory_high_watermark = \"1 MiB\"\n",
    );
    let leader = c.leader().await;
    wait_alarm(&c.nodes[leader], f2 as u64 + 1, "memory_high", true).await;
    let mut p = Producer::connect(&c.nodes[leader].grpc).await.unwrap();
    let err = p.enqueue_call(vec![job("q", 10, 1)]).await.unwrap_err();
    let ClientError::Status(s) = err else {
        panic!("{err}")
    };
    assert_eq!(drover::wire::drover_code(&s), Some("memory_high"));
    assert!(
        s.message().contains(&format!("node {}", f2 + 1)),
        "names the node: {}",
        s.message()
    );
    let out = drover_cli(
        &["enqueue", "--queue", "q", "--payload", "x"],
        &c.nodes[f1].grpc,
        "",
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("memory_high"),
        "{said}"
    );
    // Reads and cancels go on.
    let (code, _) = get_json(&format!("{}/api/v1/stats", c.nodes[leader].http)).await;
    assert_eq!(code, 200);
}
