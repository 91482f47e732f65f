//! `drover workers list|shutdown` on a real three-node cluster with real
//! `drover worker` processes connected to different nodes: the list shows
//! every worker wherever it is connected, and shutdown stops one, then all.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use drover::api::types::{AuditPageBody, JobsPageBody, WorkersBody};

/// A `drover worker --exec cat` of queue `q`, with a version label.
fn worker(server: &str, id: &str, version: &str) -> Reap {
    exec_worker_with(server, "q", id, "cat", &["--worker-version", version])
}

fn listed(server: &str) -> WorkersBody {
    drover_body(&["workers", "list", "--json"], server)
}

#[tokio::test]
async fn workers_are_listed_cluster_wide_and_stopped_on_request() {
    let cluster = TestCluster::start(3, "");
    cluster.leader().await;
    // Each worker is given one node only, so they stay where they are put.
    let mut workers = [
        worker(&cluster.nodes[0].grpc, "w-a", "v1"),
        worker(&cluster.nodes[1].grpc, "w-b", "v2"),
        worker(&cluster.nodes[2].grpc, "w-c", "v2"),
    ];
    let asked = &cluster.nodes[0].grpc;
    let list = wait_for("three workers listed", Duration::from_secs(20), || async {
        let l = listed(asked);
        match l.workers.len() {
            3 => Ok(l),
            n => Err(format!("{n} workers: {l:?}")),
        }
    })
    .await;
    let seen: Vec<(String, String, u64)> = list
        .workers
        .iter()
        .map(|w| (w.worker_id.clone(), w.version.clone(), w.node_id))
        .collect();
    assert_eq!(
        seen,
        [
            ("w-a".into(), "v1".into(), 1),
            ("w-b".into(), "v2".into(), 2),
            ("w-c".into(), "v2".into(), 3)
        ]
    );
    // The table names them too.
    let out = drover(&["workers", "list"], asked);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("w-b") && table.contains("v2"), "{table}");

    // Stop the one on node 2, asking node 1.
    let out = drover(
        &["workers", "shutdown", "w-b", "--reason", "rolling"],
        asked,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = wait_child(&mut workers[1].0, Duration::from_secs(20));
    assert!(
        status.success(),
        "a worker asked to stop exits cleanly: {status}"
    );

    // An unknown id is an error that says so.
    let out = drover(&["workers", "shutdown", "nobody"], asked);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));

    let out = drover(&["workers", "shutdown", "--all"], asked);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in [0, 2] {
        let status = wait_child(&mut workers[i].0, Duration::from_secs(20));
        assert!(status.success(), "{status}");
    }
    // Recorded in the audit log.
    let page: AuditPageBody = drover_body(&["audit", "--json"], asked);
    let actions: Vec<&str> = page.records.iter().map(|r| r.action.as_str()).collect();
    // The shutdown of an unknown worker was refused and is not recorded.
    assert_eq!(actions, ["workers.shutdown"; 2]);
}

/// `--max-jobs` recycles a worker: it runs that many, reports them, exits 0
/// (a supervisor starts a fresh one), and leaves the rest for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_max_jobs_exits_cleanly_after_them() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    for _ in 0..5 {
        let out = drover(&["enqueue", "--queue", "q"], server);
        assert!(out.status.success());
    }
    let mut w = exec_worker_with(server, "q", "short", "cat", &["--max-jobs", "2"]);
    let status = wait_child(&mut w.0, Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let page: JobsPageBody =
        drover_body(&["jobs", "list", "--state", "succeeded", "--json"], server);
    assert_eq!(page.jobs.len(), 2, "{page:?}");
    let page: JobsPageBody = drover_body(&["jobs", "list", "--state", "ready", "--json"], server);
    assert_eq!(page.jobs.len(), 3, "{page:?}");
}

/// `--health-addr` serves the worker's health for a supervisor: 200 and
/// its results while connected, 503 once its node is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_its_health() {
    let mut node = TestNode::start("");
    let server = node.grpc.clone();
    for _ in 0..2 {
        assert!(drover(&["enqueue", "--queue", "q"], &server)
            .status
            .success());
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let _w = exec_worker_with(&server, "q", "healthy", "cat", &["--health-addr", &addr]);
    let url = format!("http://{addr}/health");
    let seen = wait_for("two results reported", Duration::from_secs(20), || async {
        let Ok(resp) = reqwest::get(&url).await else {
            return Err("not listening yet".to_string());
        };
        let code = resp.status().as_u16();
        // The worker's own health page: no type of the admin API.
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if code == 200 && body["completed"] == 2 {
            Ok(body)
        } else {
            Err(format!("{code} {body}"))
        }
    })
    .await;
    assert_eq!(seen["connected"], true);
    assert_eq!(seen["held"], 0);
    assert!(seen["last_result_ms"].as_u64().unwrap() > 0);
    node.kill();
    wait_for(
        "503 once the node is gone",
        Duration::from_secs(20),
        || async {
            match reqwest::get(&url).await {
                Ok(r) if r.status().as_u16() == 503 => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;

    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "worker",
            "--queue",
            "q",
            "--exec",
            "cat",
            "--health-addr",
            "nonsense",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("health-addr"));
}
