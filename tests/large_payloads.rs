//! Large payloads through a real node: the data dir holds them in
//! proportion (each is written once beside sled, plus its raft log entry
//! until the log is compacted), not in multiples, and every one reads back.

mod common;

use bytes::Bytes;
use common::*;
use drover::client::Producer;

#[tokio::test]
async fn large_payloads_take_disk_in_proportion_and_read_back() {
    let node = TestNode::start("");
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    const JOBS: usize = 40;
    const SIZE: usize = 1_000_000;
    let before = drover::metrics::disk_usage(&node.data_dir());
    let mut ids = Vec::new();
    for call in 0..JOBS / 10 {
        let jobs: Vec<_> = (0..10)
            .map(|i| drover::proto::v1::NewJob {
                queue: "docs".into(),
                payload: Bytes::from(vec![(call * 10 + i) as u8; SIZE]),
                ..Default::default()
            })
            .collect();
        ids.extend(
            p.enqueue_call(jobs)
                .await
                .unwrap()
                .into_iter()
                .map(|j| j.id),
        );
    }
    // Before payloads had files of their own, sled held 6.6 copies of each
    // payload byte right after such a burst (docs/performance.md). Now: one
    // payload file, and the log entry's copy until compaction.
    let grown = drover::metrics::disk_usage(&node.data_dir()).saturating_sub(before);
    let payload = (JOBS * SIZE) as u64;
    assert!(
        grown <= 3 * payload,
        "the data dir grew by {grown} bytes for {payload} bytes of payload"
    );
    let files = std::fs::read_dir(node.data_dir().join("spill/machine"))
        .unwrap()
        .count();
    assert_eq!(files, JOBS, "one file per payload");
    for (i, id) in ids.iter().enumerate().step_by(7) {
        let job = p.get(*id).await.unwrap();
        assert_eq!(job.payload, Bytes::from(vec![i as u8; SIZE]), "job {id}");
    }
}
