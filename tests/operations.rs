//! docs/operations.md's procedures, carried out as written: through the
//! CLI, on real nodes.

mod common;

use std::time::Duration;

use common::*;

/// "Rebuild a node": its data is lost; remove it, empty its data dir,
/// start it to join, add it back; it catches up by snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_data_is_lost_is_rebuilt_from_its_peers() {
    let mut c = TestCluster::start(3, "[raft]\nlog_keep_entries = 20\nsnapshot_every = 50\n");
    let leader = c.leader().await;
    let lost = (leader + 1) % 3;
    let ids = enqueue_n(&c.nodes[leader].grpc, "q", 300);
    c.caught_up(lost).await;

    // The disk under node `lost` dies.
    c.nodes[lost].kill();
    std::fs::remove_dir_all(c.nodes[lost].data_dir()).unwrap();
    let id = (lost + 1).to_string();
    let server = c.nodes[leader].grpc.clone();
    // 1. Remove it from the cluster.
    drover_json(
        &["cluster", "remove", &id, "--reason", "disk lost"],
        &server,
    );
    // 2. Start it on an empty data dir with `join = true`.
    let node = &mut c.nodes[lost];
    node.extra_config = format!("join = true\n{}", node.extra_config);
    node.spawn();
    // 3. Add it back; it catches up by snapshot and votes again.
    let addr = c.nodes[lost].grpc_addr.clone();
    drover_json(
        &["cluster", "add", &id, &addr, "--reason", "rebuilt"],
        &server,
    );
    let more = enqueue_n(&server, "q", 5);
    c.converged().await;
    for j in ids.iter().step_by(37).chain(&more) {
        assert_eq!(job_state(&c.nodes[lost], *j).await, "ready", "job {j}");
    }
    wait_for(
        "the rebuilt node to vote again",
        Duration::from_secs(30),
        || async {
            let (_, m) =
                get_json(&format!("{}/api/v1/cluster/members", c.nodes[leader].http)).await;
            let voters = m["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["voter"] == true)
                .count();
            if voters == 3 {
                Ok(())
            } else {
                Err(m.to_string())
            }
        },
    )
    .await;
}
