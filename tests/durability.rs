//! Crash safety: a node killed with SIGKILL and restarted has every job whose
//! enqueue was acknowledged, and no entry applied twice.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use drover::api::types::StatsBody;
use drover::client::Producer;

#[tokio::test]
async fn sigkill_and_restart_loses_no_acknowledged_job() {
    let mut node = TestNode::start("");
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut producers = Vec::new();
    for t in 0..8 {
        let url = node.grpc.clone();
        let acked = acked.clone();
        producers.push(tokio::spawn(async move {
            let mut p = Producer::connect(&url).await.unwrap();
            // Bounded: stops at the first error (the node died) or after 5,000 jobs.
            for i in 0..5_000 {
                match p
                    .enqueue(vec![new_job("durable", &format!("{t}-{i}"))])
                    .await
                {
                    Ok(ids) => {
                        acked.lock().unwrap().insert(ids[0].id);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    wait_for(
        "some jobs to be acknowledged",
        Duration::from_secs(30),
        || async {
            let n = acked.lock().unwrap().len();
            if n >= 500 {
                Ok(())
            } else {
                Err(format!("{n} acked"))
            }
        },
    )
    .await;
    node.kill();
    for p in producers {
        p.await.unwrap();
    }
    let acked: HashSet<u64> = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());

    node.spawn();
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    for id in &acked {
        let job = p
            .get(*id)
            .await
            .unwrap_or_else(|e| panic!("acknowledged job {id} lost: {e}"));
        assert_eq!(job.state, "ready");
    }
    // Every id the machine assigned exists exactly once: ids are 1..=max with
    // no gaps, and the ready count is the number of ids.
    let stats: StatsBody = node.body("/api/v1/stats").await;
    let ready = stats.queues["durable"].ready[2];
    let max = *acked.iter().max().unwrap();
    assert!(
        ready >= acked.len() as u64,
        "ready {ready} < acked {}",
        acked.len()
    );
    for id in 1..=ready {
        p.get(id)
            .await
            .unwrap_or_else(|e| panic!("job {id} of {ready} missing: {e}"));
    }
    assert!(
        p.get(ready + 1).await.is_err(),
        "more jobs than the ready count: an entry was applied twice"
    );
    assert!(max <= ready);
    // The node goes on assigning fresh ids after the restart.
    let next = p.enqueue(vec![new_job("durable", "after")]).await.unwrap()[0].id;
    assert_eq!(next, ready + 1);
}

#[tokio::test]
async fn a_saved_snapshot_restores_into_a_new_node() {
    let node = TestNode::start("");
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    let ids: Vec<u64> = p
        .enqueue(vec![new_job("backup", "keep me"); 30])
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    p.cancel(ids[0]).await.unwrap();

    let file = node.dir.path().join("backup.snap");
    let file_s = file.to_str().unwrap();
    drover_local(&["snapshot", "save", file_s, "--http", &node.http]);

    // Restoring into a dir that holds data is refused; into a new one works.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["snapshot", "restore", file_s, "--data-dir"])
        .arg(node.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{out:?}"
    );

    let mut restored = TestNode::prepare("127.0.0.1:0", "");
    drover_local(&[
        "snapshot",
        "restore",
        file_s,
        "--data-dir",
        restored.data_dir().to_str().unwrap(),
    ]);
    restored.spawn();
    assert_eq!(job_state(&restored, ids[0]).await, "cancelled");
    for id in &ids[1..] {
        assert_eq!(job_state(&restored, *id).await, "ready");
    }
    // The restored node goes on from where the snapshot left off.
    let mut p2 = Producer::connect(&restored.grpc).await.unwrap();
    let next = p2.enqueue(vec![new_job("backup", "new")]).await.unwrap()[0].id;
    assert!(next > *ids.last().unwrap());

    // A damaged backup is refused with a clear message.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["snapshot", "restore", file_s, "--data-dir"])
        .arg(fresh.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a valid drover snapshot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
