//! Payloads, results and error messages sealed at rest (`[storage]
//! encryption_key_file`), on a real node: none of their bytes is in the
//! data dir or a backup, a restart reads everything, a rotated key keeps
//! old jobs readable, and a node given the wrong key stops with a clear
//! message and changes nothing on disk.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const PAYLOAD: &str = "sealed-payload-marker-9d1";
const RESULT: &str = "sealed-result-marker-9d1";
const ERROR: &str = "sealed-error-marker-9d1";

fn new_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let out = drover_cli(&["key", "new", path.to_str().unwrap()], "", "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("encryption_key_file"), "{said}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    path
}

fn storage(current: &Path, old: &[&Path]) -> String {
    format!(
        "[retry.t]\nmax_retries = 0\n[storage]\nencryption_key_file = {current:?}\nencryption_old_keys = {old:?}\n"
    )
}

/// Every file at or under `path` whose bytes hold one of the markers.
fn files_holding(path: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&p).unwrap();
        for m in [PAYLOAD, RESULT, ERROR] {
            if bytes.windows(m.len()).any(|w| w == m.as_bytes()) {
                found.push(format!("{} holds {m}", p.display()));
            }
        }
    }
    found
}

/// Every file under `dir` with its bytes, to see that nothing changed.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Enqueues one job with `payload`; answers its id.
fn enqueue_one(server: &str, queue: &str, payload: &str) -> u64 {
    let args = [
        "enqueue",
        "--queue",
        queue,
        "--type",
        "t",
        "--payload",
        payload,
        "--json",
    ];
    let jobs: Vec<drover::api::types::EnqueuedBody> = drover_body(&args, server);
    jobs[0].id
}

/// The job as `drover jobs get --json` shows it: payload, result, error.
async fn read_back(node: &TestNode, id: u64) -> (String, String, String) {
    let j = job_body(node, id).await;
    (
        j.payload.unwrap_or_default(),
        j.result.unwrap_or_default(),
        j.last_error,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_data_never_reaches_the_disk_in_clear_and_survives_restart_and_rotation() {
    let keys = tempfile::tempdir().unwrap();
    let k1 = new_key(keys.path(), "k1.key");
    // An existing key file is never overwritten.
    let again = drover_cli(&["key", "new", k1.to_str().unwrap()], "", "");
    assert!(!again.status.success());

    let mut node = TestNode::prepare("127.0.0.1:0", &storage(&k1, &[]));
    node.log_file = Some(node.dir.path().join("node.log"));
    node.spawn();
    let server = node.grpc.clone();
    let ok = enqueue_one(&server, "q", &format!("ok {PAYLOAD}"));
    let bad = enqueue_one(&server, "q", &format!("fail {PAYLOAD}"));
    let script = format!(
        r#"p=$(cat); case "$p" in ok*) echo "{RESULT}";; *) echo "{ERROR}" >&2; exit 3;; esac"#
    );
    let worker = exec_worker(&server, "q", "w1", &script);
    wait_state_within(&node, ok, "succeeded", Duration::from_secs(30)).await;
    wait_state_within(&node, bad, "dead", Duration::from_secs(30)).await;
    drop(worker);
    let (p, r, _) = read_back(&node, ok).await;
    assert_eq!(
        (p.as_str(), r.trim()),
        (format!("ok {PAYLOAD}").as_str(), RESULT)
    );
    let (_, _, e) = read_back(&node, bad).await;
    assert!(e.contains(ERROR), "{e}");
    // A payload a producer sends that looks sealed is refused.
    let looks = reqwest::Client::new()
        .post(format!("{}/api/v1/queues/q/jobs", node.http))
        .json(&serde_json::json!({"payload_base64": "AGRyczF4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(looks.status(), 400);
    assert!(looks.text().await.unwrap().contains("drs1"));

    // A backup holds them sealed.
    let backup = node.dir.path().join("backup.bin");
    drover_ok(&["snapshot", "save", backup.to_str().unwrap()], &server);
    assert!(files_holding(&backup).is_empty());
    node.terminate();
    assert_eq!(files_holding(&node.data_dir()), Vec::<String>::new());

    // A restart with the same key reads everything.
    node.spawn();
    let (p, r, _) = read_back(&node, ok).await;
    assert_eq!(
        (p.as_str(), r.trim()),
        (format!("ok {PAYLOAD}").as_str(), RESULT)
    );

    // Rotation: a new key seals, the old one still opens.
    node.terminate();
    let k2 = new_key(keys.path(), "k2.key");
    node.extra_config = storage(&k2, &[&k1]);
    node.spawn();
    let (p, _, _) = read_back(&node, ok).await;
    assert_eq!(p, format!("ok {PAYLOAD}"));
    let newer = enqueue_one(&node.grpc, "q", "after the rotation");
    assert_eq!(read_back(&node, newer).await.0, "after the rotation");

    // The wrong key, or none: the node stops, saying what to do, and the
    // data dir is as it was.
    node.terminate();
    let before = contents(&node.data_dir());
    let k3 = new_key(keys.path(), "k3.key");
    for config in [storage(&k3, &[]), storage(&k2, &[]), String::new()] {
        node.extra_config = config;
        let out = node.serve_command().output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("Nothing was changed") && err.contains("encryption_old_keys"),
            "{err}"
        );
        assert_eq!(contents(&node.data_dir()), before);
    }
    // A key file that is not one.
    let bad_key = keys.path().join("bad.key");
    std::fs::write(&bad_key, "swordfish\n").unwrap();
    node.extra_config = storage(&bad_key, &[]);
    let out = node.serve_command().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("drover key new"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_one_key_seals_on_every_node_and_reads_through_any() {
    let keys = tempfile::tempdir().unwrap();
    let key = new_key(keys.path(), "cluster.key");
    let mut cluster = TestCluster::start(3, &storage(&key, &[]));
    let leader = cluster.leader().await;
    let (follower, other) = ((leader + 1) % 3, (leader + 2) % 3);
    // Enqueued through a follower (forwarded sealed), worked through the
    // other (the lease's payload opened there), read on every node.
    let id = enqueue_one(&cluster.nodes[follower].grpc, "q", &format!("ok {PAYLOAD}"));
    let script = format!(r#"p=$(cat); case "$p" in ok*) echo "{RESULT}";; esac"#);
    let worker = exec_worker(&cluster.nodes[other].grpc, "q", "w1", &script);
    wait_state_within(
        &cluster.nodes[leader],
        id,
        "succeeded",
        Duration::from_secs(30),
    )
    .await;
    drop(worker);
    cluster.converged().await;
    for n in &cluster.nodes {
        let (p, r, _) = read_back(n, id).await;
        assert_eq!(
            (p.as_str(), r.trim()),
            (format!("ok {PAYLOAD}").as_str(), RESULT)
        );
    }
    for n in &mut cluster.nodes {
        n.terminate();
        assert_eq!(files_holding(&n.data_dir()), Vec::<String>::new());
    }
}
