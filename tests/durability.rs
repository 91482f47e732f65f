//! Crash safety: a node killed with SIGKILL and restarted has every job whose
//! enqueue was acknowledged, and no entry applied twice.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
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
    let (_, stats) = get_json(&format!("{}/api/v1/stats", node.http)).await;
    let ready = stats["queues"]["durable"]["ready"][2].as_u64().unwrap();
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
