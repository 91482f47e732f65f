//! Workers over the real gRPC stream: the Rust worker runtime, `drover worker
//! --exec`, retries and dead letters, and a worker that dies mid-job.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use drover::api::types::StatsBody;
use drover::client::worker::{self, JobError, JobUsage, WorkerOptions};
use drover::client::Producer;
use drover::proto::v1 as pb;
use tokio::sync::watch;

/// Sends SIGKILL to a child process when dropped.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        signal(self.0, libc::SIGKILL);
    }
}

/// These tests run one at a time: each starts a node and workers, and on a
/// 2-core machine several at once starve each other's timers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SHORT: &str = "[jobs]\nheartbeat_timeout = \"1s\"\nmax_retries = 1\nretry_base_delay = \"100ms\"\nretry_max_delay = \"200ms\"\n";

#[tokio::test]
async fn rust_worker_completes_jobs_by_priority() {
    let _serial = SERIAL.lock().await;
    let node = TestNode::start("");
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    let mut jobs = Vec::new();
    for (i, prio) in [5, 1, 3, 1, 2].iter().enumerate() {
        jobs.push(pb::NewJob {
            priority: *prio,
            ..new_job("work", &format!("job-{i}"))
        });
    }
    let ids: Vec<u64> = p
        .enqueue(jobs)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();

    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (stop_tx, stop) = watch::channel(false);
    let seen = order.clone();
    let handler = move |job: drover::client::worker::Job| {
        seen.lock().unwrap().push(job.job_id);
        let mut out = job.payload.to_vec();
        out.extend_from_slice(b"-done");
        async move { Ok::<_, JobError>(Bytes::from(out)) }
    };
    let w = tokio::spawn(worker::run(
        WorkerOptions::new(&node.grpc, "w1", vec!["work".into()], 1),
        handler,
        stop,
    ));
    for id in &ids {
        let id = *id;
        wait_state(&node, id, "succeeded").await;
    }
    stop_tx.send_replace(true);
    let report = tokio::time::timeout(Duration::from_secs(20), w)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.completed, 5);
    assert_eq!(report.refused, 0);
    // One at a time, so the order is the dispatch order: priority, then age.
    assert_eq!(
        *order.lock().unwrap(),
        vec![ids[1], ids[3], ids[4], ids[2], ids[0]]
    );
    let job = p.get(ids[2]).await.unwrap();
    assert_eq!(job.result, Bytes::from_static(b"job-2-done"));
    assert_eq!(job.attempts, 1);
}

#[tokio::test]
async fn failing_jobs_retry_then_dead_letter() {
    let _serial = SERIAL.lock().await;
    let node = TestNode::start(SHORT);
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    let id = p.enqueue(vec![new_job("flaky", "x")]).await.unwrap()[0].id;
    let tries = Arc::new(AtomicU32::new(0));
    let t = tries.clone();
    let handler = move |_job: drover::client::worker::Job| {
        t.fetch_add(1, Ordering::SeqCst);
        async {
            Err::<Bytes, _>(JobError {
                class: "upstream_500".into(),
                message: "bad gateway".into(),
                usage: JobUsage {
                    cost_usd: 0.25,
                    named: [("tokens_in".to_string(), 7)].into_iter().collect(),
                },
            })
        }
    };
    let (stop_tx, stop) = watch::channel(false);
    let w = tokio::spawn(worker::run(
        WorkerOptions::new(&node.grpc, "w", vec!["flaky".into()], 2),
        handler,
        stop,
    ));
    wait_state(&node, id, "dead").await;
    stop_tx.send_replace(true);
    let report = w.await.unwrap().unwrap();
    assert_eq!(
        tries.load(Ordering::SeqCst),
        2,
        "one try plus max_retries = 1"
    );
    assert_eq!(report.failed, 2);
    let job = p.get(id).await.unwrap();
    assert_eq!(job.cost_usd, 0.5, "what both failed attempts cost");
    assert_eq!(job.usage.get("tokens_in"), Some(&14));
    let job = p.get(id).await.unwrap();
    assert_eq!(job.last_error_class, "upstream_500");
    assert_eq!(job.last_error, "bad gateway");
    assert!(
        job.events
            .iter()
            .any(|e| e.what.contains("retry scheduled")),
        "{:?}",
        job.events
    );
    assert!(
        job.events.iter().any(|e| e.what.contains("dead-lettered")),
        "{:?}",
        job.events
    );
}

/// A worker that dies holding a job: after the heartbeat timeout the job is
/// ready again and another worker completes it; the dead worker's late
/// completion would be refused as stale.
#[tokio::test]
async fn a_dead_workers_job_is_requeued_and_completed_by_another() {
    let _serial = SERIAL.lock().await;
    let node = TestNode::start(SHORT);
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    let id = p.enqueue(vec![new_job("slow", "x")]).await.unwrap()[0].id;

    // The first worker takes the job and never finishes it; then it dies.
    let (taken_tx, mut taken) = tokio::sync::mpsc::unbounded_channel();
    let handler = move |job: drover::client::worker::Job| {
        let _ = taken_tx.send(job.attempt);
        async { std::future::pending::<Result<Bytes, JobError>>().await }
    };
    let (_stop1, stop) = watch::channel(false);
    let mut opts = WorkerOptions::new(&node.grpc, "doomed", vec!["slow".into()], 1);
    opts.max_reconnects = 1;
    let doomed = tokio::spawn(worker::run(opts, handler, stop));
    let attempt = tokio::time::timeout(Duration::from_secs(20), taken.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt, 1);
    doomed.abort();
    let _ = doomed.await;

    let handler = |_job: drover::client::worker::Job| async {
        Ok::<_, JobError>(Bytes::from_static(b"rescued"))
    };
    let (stop_tx, stop) = watch::channel(false);
    let rescuer = tokio::spawn(worker::run(
        WorkerOptions::new(&node.grpc, "rescuer", vec!["slow".into()], 1),
        handler,
        stop,
    ));
    wait_state(&node, id, "succeeded").await;
    stop_tx.send_replace(true);
    rescuer.await.unwrap().unwrap();
    let job = p.get(id).await.unwrap();
    assert_eq!(job.attempts, 2);
    assert_eq!(job.result, Bytes::from_static(b"rescued"));
    assert!(
        job.events
            .iter()
            .any(|e| e.what.contains("lease expired (worker doomed)")),
        "{:?}",
        job.events
    );
    let stats: StatsBody = node.body("/api/v1/stats").await;
    assert_eq!(stats.totals.requeued, 1);
}

#[tokio::test]
async fn exec_worker_runs_commands_and_stops_on_sigterm() {
    let _serial = SERIAL.lock().await;
    let node = TestNode::start(SHORT);
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    let ok = p.enqueue(vec![new_job("sh", "hello")]).await.unwrap()[0].id;
    let failing = p.enqueue(vec![new_job("sh", "fail")]).await.unwrap()[0].id;
    let script = r#"read -r line; if [ "$line" = fail ]; then echo "it broke" >&2; echo error_class=bad_input >&2; exit 4; fi
if [ "$line" = slow ]; then sleep 2; fi
printf '%s/%s/%s' "$line" "$DROVER_QUEUE" "$DROVER_ATTEMPT""#;
    let mut worker = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "worker",
            "--server",
            &node.grpc,
            "--queue",
            "sh",
            "--concurrency",
            "2",
            "--id",
            "shell",
            "--exec",
            script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Killed if the test fails first, so no worker outlives it and takes
    // jobs from a later test's node that reuses the port.
    let _reaper = KillOnDrop(worker.id());
    for (id, want) in [(ok, "succeeded"), (failing, "dead")] {
        wait_state(&node, id, want).await;
    }
    assert_eq!(
        p.get(ok).await.unwrap().result,
        Bytes::from_static(b"hello/sh/1")
    );
    let dead = p.get(failing).await.unwrap();
    assert_eq!(dead.last_error_class, "bad_input");
    assert!(dead.last_error.contains("it broke"), "{}", dead.last_error);

    // SIGTERM while a slow job runs: the worker finishes it, then exits 0.
    let slow = p.enqueue(vec![new_job("sh", "slow")]).await.unwrap()[0].id;
    wait_state(&node, slow, "leased").await;
    signal(worker.id(), libc::SIGTERM);
    let status = wait_child(&mut worker, Duration::from_secs(30));
    assert!(status.success(), "worker exited with {status}");
    assert_eq!(
        job_state(&node, slow).await,
        "succeeded",
        "the held job finished before exit"
    );
}

/// A node shutting down tells its workers to move to another node, and
/// exits cleanly; a lone node's worker then finds no node and, with
/// `max_reconnects` set, gives up saying so (by default it keeps trying
/// until the node is back).
#[tokio::test]
async fn node_sigterm_sends_workers_elsewhere_and_exits_cleanly() {
    let _serial = SERIAL.lock().await;
    let mut node = TestNode::start("shutdown_grace = \"5s\"\n");
    let handler = |_job: drover::client::worker::Job| async { Ok::<_, JobError>(Bytes::new()) };
    let (_stop_tx, stop) = watch::channel(false);
    let mut opts = WorkerOptions::new(&node.grpc, "w", vec!["q".into()], 1);
    opts.max_reconnects = 1;
    let w = tokio::spawn(worker::run(opts, handler, stop));
    wait_for("the worker to connect", Duration::from_secs(20), || async {
        let s = node.try_body::<StatsBody>("/api/v1/stats").await?;
        if s.workers.len() == 1 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    let status = tokio::task::spawn_blocking(move || {
        let s = node.terminate();
        (s, node)
    })
    .await
    .unwrap()
    .0;
    assert!(status.success(), "node exited with {status}");
    let report = tokio::time::timeout(Duration::from_secs(20), w)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(report, Err(drover::client::ClientError::Connect { .. })),
        "the worker left for another node and found none: {report:?}"
    );
}

/// A worker told to stop while its node is gone tries to reach one for
/// `stop_timeout`, then exits saying what it could not report, instead of
/// waiting forever; its job runs again once the lease expires.
#[tokio::test]
async fn a_stopping_worker_that_reaches_no_node_gives_up_after_its_stop_timeout() {
    let _serial = SERIAL.lock().await;
    let mut node = TestNode::start(SHORT);
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    p.enqueue(vec![new_job("orphan", "x")]).await.unwrap();

    // The job finishes only once its node is gone, so its result can only
    // be reported to a node that no longer answers.
    let (taken_tx, mut taken) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let finish = release.clone();
    let handler = move |_job: drover::client::worker::Job| {
        let _ = taken_tx.send(());
        let finish = finish.clone();
        async move {
            finish.notified().await;
            Ok::<_, JobError>(Bytes::from_static(b"done too late"))
        }
    };
    let (stop_tx, stop) = watch::channel(false);
    let mut opts = WorkerOptions::new(&node.grpc, "orphaned", vec!["orphan".into()], 1);
    opts.reconnect_delay = Duration::from_millis(100);
    opts.stop_timeout = Duration::from_secs(1);
    let w = tokio::spawn(worker::run(opts, handler, stop));
    tokio::time::timeout(Duration::from_secs(20), taken.recv())
        .await
        .expect("the worker took the job")
        .unwrap();
    node.kill();
    release.notify_one();
    stop_tx.send_replace(true);

    let result = tokio::time::timeout(Duration::from_secs(30), w)
        .await
        .expect("the worker gave up within its stop timeout and a reconnect")
        .unwrap();
    match result {
        Err(drover::client::ClientError::Abandoned { results, .. }) => {
            assert_eq!(results, 1, "the finished job's result went unreported")
        }
        other => panic!("expected Abandoned, got {other:?}"),
    }
}

/// Large payloads go gzipped both ways when the clients ask for it, and
/// come out whole; the builder's worker reports progress and results.
#[tokio::test]
async fn gzipped_payloads_and_the_worker_builder() {
    let _serial = SERIAL.lock().await;
    let node = TestNode::start("");
    let mut p = Producer::connect(&node.grpc)
        .await
        .unwrap()
        .with_compression();
    let big: Vec<u8> = b"drover ".iter().cycle().take(900 << 10).copied().collect();
    let mut job = new_job("zip", "");
    job.payload = big.clone().into();
    let id = p.enqueue(vec![job]).await.unwrap()[0].id;
    let (stop_tx, stop) = watch::channel(false);
    let w = tokio::spawn(
        worker::Worker::new(node.grpc.clone(), ["zip"])
            .id("zipper")
            .compression(true)
            .run_with(
                |job: worker::Job| async move {
                    job.progress(0.5, "half");
                    Ok::<_, JobError>(Bytes::from(job.payload.len().to_string()))
                },
                stop,
            ),
    );
    wait_state_within(&node, id, "succeeded", Duration::from_secs(30)).await;
    let got = p.get(id).await.unwrap();
    assert_eq!(got.payload.len(), big.len());
    assert_eq!(&got.result[..], big.len().to_string().as_bytes());
    stop_tx.send_replace(true);
    assert_eq!(w.await.unwrap().unwrap().completed, 1);
}
