//! A worker's results survive the leader dying under them: a completion that
//! could not reach the log for a passing reason (no leader, the leader lost
//! mid-forward) is acknowledged as transient, and the worker sends it again
//! until it is taken. No finished job waits out its lease and runs again.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use drover::api::types::JobStateBody;
use drover::client::worker::{self, JobError, WorkerOptions};
use drover::client::Producer;
use tokio::sync::watch;

/// Long enough that a dropped result shows as a job still leased (or run
/// again) when the test ends, short enough that the test then fails fast.
const CONFIG: &str = "[jobs]\nheartbeat_timeout = \"15s\"\n";
const JOBS: usize = 3000;

#[tokio::test]
async fn results_in_flight_when_the_leader_dies_are_sent_again_not_dropped() {
    let mut c = TestCluster::start(3, CONFIG);
    let leader = c.leader().await;
    let mut p = Producer::connect(&c.servers()).await.unwrap();
    let mut ids = Vec::with_capacity(JOBS);
    for chunk in 0..JOBS / 500 {
        let jobs = (0..500)
            .map(|i| new_job("results", &format!("{chunk}-{i}")))
            .collect();
        ids.extend(p.enqueue(jobs).await.unwrap().into_iter().map(|e| e.id));
    }

    // Each worker talks to one follower only, so its results are forwarded
    // to the leader: the hop a leader's death breaks.
    let finished = Arc::new(Mutex::new(HashMap::<u64, Vec<u32>>::new()));
    let (stop_tx, stop) = watch::channel(false);
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let workers: Vec<_> = followers
        .iter()
        .map(|&f| {
            let finished = finished.clone();
            let handler = move |job: drover::client::worker::Job| {
                let finished = finished.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    finished
                        .lock()
                        .unwrap()
                        .entry(job.job_id)
                        .or_default()
                        .push(job.attempt);
                    Ok::<_, JobError>(Bytes::from_static(b"ok"))
                }
            };
            let mut opts = WorkerOptions::new(
                c.nodes[f].grpc.clone(),
                format!("w{f}"),
                vec!["results".into()],
                8,
            );
            opts.reconnect_delay = Duration::from_millis(100);
            tokio::spawn(worker::run(opts, handler, stop.clone()))
        })
        .collect();

    // Kill the leader three times while results flow, restarting each.
    for round in 0..3 {
        let target = (round + 1) * JOBS / 5;
        wait_for("results to flow", Duration::from_secs(60), || async {
            let n = finished.lock().unwrap().len();
            if n >= target {
                Ok(())
            } else {
                Err(format!("{n} finished, waiting for {target}"))
            }
        })
        .await;
        let leader = c.leader().await;
        c.nodes[leader].kill();
        c.leader().await;
        c.nodes[leader].spawn();
    }

    let node = &c.nodes[c.leader().await];
    for &id in &ids {
        wait_for(
            &format!("job {id} to succeed"),
            Duration::from_secs(60),
            || async {
                let j = try_job(node, id).await?;
                match j.state {
                    JobStateBody::Succeeded => Ok(j),
                    other => Err(format!("{other:?}: {j:?}")),
                }
            },
        )
        .await;
    }
    stop_tx.send_replace(true);
    for w in workers {
        w.await.unwrap().unwrap();
    }

    // A lease expiry after the worker finished the attempt is a dropped
    // result; an attempt the worker never saw is a lease grant that did not
    // reach it.
    let finished = finished.lock().unwrap().clone();
    let mut dropped = Vec::new();
    let mut never_run = Vec::new();
    for &id in &ids {
        let j = job_body(node, id).await;
        let runs = finished.get(&id).cloned().unwrap_or_default();
        for e in &j.events {
            if e.what.contains("expired") {
                if runs.contains(&1) {
                    dropped.push((id, runs.clone(), j.attempts));
                } else {
                    never_run.push((id, runs.clone(), j.attempts));
                }
            }
        }
    }
    assert!(
        dropped.is_empty() && never_run.is_empty(),
        "of {JOBS} jobs, {} had a lease expire after their worker finished them (job, attempts run, attempts): {dropped:?}; {} had a lease expire that never reached a worker: {never_run:?}",
        dropped.len(),
        never_run.len()
    );
}
