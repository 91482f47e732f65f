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

/// `drover workers wait` for `count` workers of queue q.
fn workers_wait(server: &str, count: usize) {
    let count = count.to_string();
    let args = [
        "workers",
        "wait",
        "--queue",
        "q",
        "--count",
        &count,
        "--timeout",
        "30s",
    ];
    drover_ok(&args, server);
}

/// What systemd's `Restart=always` does for a worker: starts it again, same
/// id, each time it exits, until `stop`.
fn supervise(
    server: String,
    id: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut starts = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !stop.load(std::sync::atomic::Ordering::SeqCst)
            && std::time::Instant::now() < deadline
        {
            let mut w = exec_worker(&server, "q", id, "sleep 0.05; cat");
            starts += 1;
            loop {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return starts;
                }
                if w.0.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        starts
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_keeps_all_but_one_serving_and_loses_no_job() {
    let node = TestNode::start("");
    let server = node.grpc.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ids = ["r-1", "r-2", "r-3", "r-4"];
    let supervisors: Vec<_> = ids
        .iter()
        .map(|id| supervise(server.clone(), id, stop.clone()))
        .collect();
    workers_wait(&server, 4);
    // Load throughout: 400 jobs of 50 ms each over 4 workers, about 5 s.
    let jobs = enqueue_n(&server, "q", 400);
    // Sampled while the restart runs: how many serve the queue, not draining.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (server, sampling) = (server.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut fewest = usize::MAX;
            for _ in 0..2_000 {
                if !sampling.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let w = listed(&server);
                let serving = w.workers.iter().filter(|x| !x.draining).count();
                fewest = fewest.min(serving);
                std::thread::sleep(Duration::from_millis(50));
            }
            fewest
        })
    };
    let out = drover_cli(
        &[
            "workers",
            "restart",
            "--queue",
            "q",
            "--max-unavailable",
            "1",
            "--wait",
            "--timeout",
            "30s",
        ],
        &server,
        "",
    );
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.matches("draining ").count(), 4, "{said}");
    assert!(said.contains("restarted 4 workers of queue q"), "{said}");
    assert!(
        sampler.join().unwrap() >= 3,
        "never more than one away: {said}"
    );
    // Every job ran once, to success: a drained worker finished what it held.
    for id in &jobs {
        let j = wait_state_within(&node, *id, "succeeded", Duration::from_secs(60)).await;
        assert_eq!(j.attempts, 1, "job {id} ran {} times", j.attempts);
    }

    // No supervisor: the restart stops after the first worker and says so.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let starts: Vec<u32> = supervisors.into_iter().map(|s| s.join().unwrap()).collect();
    assert!(
        starts.iter().all(|n| *n >= 2),
        "each was started again: {starts:?}"
    );
    let _a = exec_worker(&server, "q", "s-1", "cat");
    let _b = exec_worker(&server, "q", "s-2", "cat");
    workers_wait(&server, 2);
    let out = drover_cli(
        &["workers", "restart", "--queue", "q", "--timeout", "3s"],
        &server,
        "",
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        err.contains("no replacement registered for s-1") && err.contains("Not restarted: s-2"),
        "{err}"
    );
    // And a wait that cannot be met names who is there.
    let out = drover_cli(
        &[
            "workers",
            "wait",
            "--queue",
            "q",
            "--count",
            "5",
            "--timeout",
            "1s",
        ],
        &server,
        "",
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("1 of 5 workers of queue q connected: s-2"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_worker_under_restart_exits_and_its_replacement_leases() {
    let node = TestNode::start(
        "[queues.q]\nquarantine_failure_rate = 0.5\nquarantine_min_jobs = 3\nquarantine_action = \"restart\"\n",
    );
    let server = node.grpc.clone();
    let broken = node.dir.path().join("broken");
    std::fs::write(&broken, "").unwrap();
    let script = format!("if [ -e {broken:?} ]; then exit 3; fi; cat");
    let ids = enqueue_n(&server, "q", 20);
    let mut first = exec_worker(&server, "q", "w-q", &script);
    // It fails, is quarantined and asked to exit: it exits by itself, 0.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = first.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the quarantined worker did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let w = listed(&server);
    assert!(w.quarantined.contains_key("w-q"), "{w:?}");
    let page = metrics_text(&node).await;
    assert_eq!(
        metric_value(&page, r#"drover_worker_quarantined{worker="w-q"}"#),
        Some(1.0),
        "{page}"
    );
    assert!(
        metric_value(
            &page,
            r#"drover_worker_results_total{worker="w-q",result="failed"}"#
        )
        .is_some_and(|n| n >= 3.0),
        "{page}"
    );
    // What its supervisor does: a fresh process, the same id, fixed code.
    std::fs::remove_file(&broken).unwrap();
    let _second = exec_worker(&server, "q", "w-q", &script);
    wait_for(
        "the replacement to lease",
        Duration::from_secs(30),
        || async {
            let mut done = 0;
            for id in &ids {
                if job_state(&node, *id).await == "succeeded" {
                    done += 1;
                }
            }
            match done {
                0 => Err("no job succeeded yet".to_string()),
                n => Ok(n),
            }
        },
    )
    .await;
    assert!(
        !listed(&server).quarantined.contains_key("w-q"),
        "its quarantine was lifted"
    );
    let page = metrics_text(&node).await;
    assert_eq!(
        metric_value(&page, r#"drover_worker_quarantined{worker="w-q"}"#),
        Some(0.0),
        "{page}"
    );
}

/// Per-worker series stay bounded: past `[metrics] worker_series`, other
/// workers' results count under `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_worker_series_are_bounded() {
    let node = TestNode::start("[metrics]\nworker_series = 2\n");
    let server = node.grpc.clone();
    let _workers: Vec<Reap> = (0..4)
        .map(|i| exec_worker(&server, "q", &format!("w-{i}"), "cat"))
        .collect();
    let ids = enqueue_n(&server, "q", 40);
    for id in ids {
        wait_state(&node, id, "succeeded").await;
    }
    let page = metrics_text(&node).await;
    let labels: std::collections::BTreeSet<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("drover_worker_results_total{worker=\""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert!(
        labels.len() <= 3 && labels.iter().filter(|l| **l != "other").count() <= 2,
        "{labels:?}"
    );
    let total: f64 = page
        .lines()
        .filter(|l| l.starts_with("drover_worker_results_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 40.0, "every result counted once: {page}");
}

/// `drover scale` against a fake `systemctl` on PATH: it starts instances
/// one step at a time up to the queue's desired workers, and once the
/// backlog is gone stops them only after `scale_down_after`.
#[tokio::test]
async fn the_scaler_starts_workers_for_a_backlog_and_stops_them_after_the_cooldown() {
    let node = TestNode::start(
        "[queues.s]\nworkers = { min = 0, max = 4, expected = 2, scale_down_after = \"8s\" }\n",
    );
    let server = node.grpc.as_str();
    let fake = tempfile::tempdir().unwrap();
    let units = fake.path().join("units");
    std::fs::create_dir(&units).unwrap();
    let script = fake.path().join("systemctl");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# systemctl is-active --quiet UNIT | start UNIT | stop UNIT\nd={:?}\n\
             case \"$1\" in\n  is-active) [ -e \"$d/$3\" ] ;;\n  start) touch \"$d/$2\" ;;\n  stop) rm -f \"$d/$2\" ;;\n  *) exit 2 ;;\nesac\n",
            units
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let scale = |more: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["scale", "--queue", "s", "--unit", "drover-worker@s-%i"])
            .args(["--server", server])
            .args(more)
            .env("PATH", &path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let running = || {
        let mut names: Vec<String> = std::fs::read_dir(&units)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    // Bad input says what is wrong and starts nothing.
    for (args, says) in [
        (["--queue", "s", "--unit", "drover-worker"], "%i"),
        (["--queue", "nope", "--unit", "w@%i"], "nope"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_drover"))
            .arg("scale")
            .args(args)
            .args(["--server", server])
            .env("PATH", &path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    assert!(running().is_empty());
    // A backlog: the queue wants its expected 2, started one at a time.
    enqueue_n(server, "s", 5);
    let (ok, text) = scale(&["--dry-run"]);
    assert!(ok && text.contains("start drover-worker@s-1"), "{text}");
    assert!(running().is_empty(), "a dry run starts nothing");
    for want in [
        vec!["drover-worker@s-1"],
        vec!["drover-worker@s-1", "drover-worker@s-2"],
    ] {
        let (ok, text) = scale(&[]);
        assert!(ok, "{text}");
        assert_eq!(running(), want, "{text}");
    }
    let (ok, text) = scale(&[]);
    assert!(ok && text.contains("nothing to do"), "{text}");
    // The backlog goes: the queue wants none, but not before the cooldown.
    drover_ok(&["queues", "purge", "s", "--reason", "test"], server);
    let emptied = std::time::Instant::now();
    let (ok, text) = scale(&[]);
    assert!(ok && text.contains("nothing to do"), "held: {text}");
    assert_eq!(running().len(), 2);
    let mut first_stop = None;
    for _ in 0..60 {
        let (ok, text) = scale(&[]);
        assert!(ok, "{text}");
        if running().len() < 2 && first_stop.is_none() {
            first_stop = Some(emptied.elapsed());
            assert_eq!(
                running(),
                vec!["drover-worker@s-1"],
                "the highest stops first"
            );
        }
        if running().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(running().is_empty(), "{:?}", running());
    let waited = first_stop.expect("a stop");
    assert!(
        waited >= Duration::from_secs(7),
        "stopped after {waited:?}, before the 8s cooldown"
    );
}
