//! Load for cluster tests: producers enqueueing through every node until
//! stopped, workers recording what they are handed, and the history check
//! run after a fault (nothing acknowledged lost, no lease handed out twice).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use drover::client::worker::{self, JobError, WorkerOptions};
use drover::client::Producer;
use tokio::sync::watch;

use super::{new_job, wait_for, wait_state_within, TestCluster, TestNode};

/// (job, attempt, worker) of every lease a recording worker was handed.
pub type Runs = Arc<Mutex<Vec<(u64, u32, String)>>>;

/// Waits until `node` reports every job of `ids` succeeded.
pub async fn all_succeeded(node: &TestNode, ids: &[u64]) {
    for &id in ids {
        wait_state_within(node, id, "succeeded", Duration::from_secs(60)).await;
    }
}

/// A worker that records every (job, attempt) it is handed.
pub fn recording_worker(
    servers: &str,
    id: &str,
    queue: &str,
    runs: Runs,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<worker::WorkerReport, drover::client::ClientError>> {
    let me = id.to_string();
    let handler = move |job: drover::client::worker::Job| {
        runs.lock()
            .unwrap()
            .push((job.job_id, job.attempt, me.clone()));
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok::<_, JobError>(Bytes::from_static(b"ok"))
        }
    };
    let mut opts = WorkerOptions::new(servers, id, vec![queue.into()], 8);
    opts.reconnect_delay = Duration::from_millis(200);
    tokio::spawn(worker::run(opts, handler, stop))
}

/// The servers list starting at node `first`, so clients spread out.
pub fn rotated(c: &TestCluster, first: usize) -> String {
    let n = c.nodes.len();
    (0..n)
        .map(|i| c.nodes[(first + i) % n].grpc.clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// Producers enqueueing one job per call into `queue` through every node
/// (each starting at another), until stopped or `per_producer` each.
pub struct Load {
    pub acked: Arc<Mutex<Vec<u64>>>,
    /// Enqueues whose outcome is not known (the call failed).
    pub unknown: Arc<Mutex<u32>>,
    producing: Arc<AtomicBool>,
    producers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(c: &TestCluster, queue: &str, producers: usize, per_producer: usize) -> Load {
        let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
        let unknown = Arc::new(Mutex::new(0u32));
        let producing = Arc::new(AtomicBool::new(true));
        let producers = (0..producers)
            .map(|i| {
                let servers = rotated(c, i);
                let queue = queue.to_string();
                let (acked, unknown, producing) =
                    (acked.clone(), unknown.clone(), producing.clone());
                tokio::spawn(async move {
                    let mut p = Producer::connect(&servers).await.unwrap();
                    for n in 0..per_producer {
                        if !producing.load(Ordering::Relaxed) {
                            break;
                        }
                        match p.enqueue(vec![new_job(&queue, &format!("p{i}-{n}"))]).await {
                            Ok(ids) => acked.lock().unwrap().push(ids[0].id),
                            Err(e) => {
                                *unknown.lock().unwrap() += 1;
                                eprintln!("enqueue p{i}-{n}: {e}");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            acked,
            unknown,
            producing,
            producers,
        }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` enqueues past `from` are acknowledged.
    pub async fn wait_acked(&self, from: usize, more: usize, what: &str) {
        wait_for(what, Duration::from_secs(30), || async {
            let n = self.acked_count();
            if n >= from + more {
                Ok(())
            } else {
                Err(format!("{n} acked, {from} before"))
            }
        })
        .await;
    }

    /// Stops the producers; returns the acknowledged ids and the count of
    /// enqueues whose outcome is unknown.
    pub async fn stop(self) -> (Vec<u64>, u64) {
        self.producing.store(false, Ordering::Relaxed);
        for p in self.producers {
            p.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        let unknown = u64::from(*self.unknown.lock().unwrap());
        (acked, unknown)
    }
}

/// After a fault: every acknowledged job succeeded exactly once as far as
/// the queue counts go (an unknown enqueue may have taken effect), the
/// acknowledged ids are unique, nothing is left ready, leased or dead, and
/// no (job, attempt) lease went to two workers.
pub async fn check_history(node: &TestNode, queue: &str, acked: &[u64], unknown: u64, runs: &Runs) {
    all_succeeded(node, acked).await;
    assert_eq!(
        acked.iter().collect::<HashSet<_>>().len(),
        acked.len(),
        "duplicate ids acknowledged"
    );
    let s: drover::api::types::StatsBody = node.body("/api/v1/stats").await;
    let q = s
        .queues
        .get(queue)
        .unwrap_or_else(|| panic!("no queue {queue}: {s:?}"));
    assert_eq!(q.leased, 0, "{s:?}");
    assert_eq!(q.scheduled, 0, "{s:?}");
    assert_eq!(q.dead, 0, "{s:?}");
    assert!(q.ready.iter().all(|&v| v == 0), "{s:?}");
    let succeeded = q.succeeded;
    assert!(
        succeeded >= acked.len() as u64 && succeeded <= acked.len() as u64 + unknown,
        "{succeeded} succeeded for {} acknowledged and {unknown} unknown enqueues",
        acked.len()
    );
    let mut holders: HashMap<(u64, u32), Vec<String>> = HashMap::new();
    for (job, attempt, worker) in runs.lock().unwrap().iter() {
        holders
            .entry((*job, *attempt))
            .or_default()
            .push(worker.clone());
    }
    let doubled: Vec<_> = holders.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(doubled.is_empty(), "leases handed out twice: {doubled:?}");
}
