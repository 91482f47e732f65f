//! docs/operations.md's procedures, carried out as written: through the
//! CLI, on real nodes.

mod common;

use std::time::Duration;

use common::*;
use drover::api::types::MembersBody;

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
    drover_ok(
        &["cluster", "remove", &id, "--reason", "disk lost"],
        &server,
    );
    // 2. Start it on an empty data dir with `join = true`.
    let node = &mut c.nodes[lost];
    node.extra_config = format!("join = true\n{}", node.extra_config);
    node.spawn();
    // 3. Add it back; it catches up by snapshot and votes again.
    let addr = c.nodes[lost].grpc_addr.clone();
    drover_ok(
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
            let m = c.nodes[leader]
                .try_body::<MembersBody>("/api/v1/cluster/members")
                .await?;
            let voters = m.members.iter().filter(|x| x.voter).count();
            if voters == 3 {
                Ok(())
            } else {
                Err(format!("{m:?}"))
            }
        },
    )
    .await;
}

/// "Restore a cluster": the same snapshot restored on every member, each
/// with its own config; they start as a cluster that agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_restored_from_one_snapshot_agrees() {
    let mut c = TestCluster::start(3, "");
    let leader = c.leader().await;
    let ids = enqueue_n(&c.nodes[leader].grpc, "q", 40);
    let file_s = c.save_and_wipe().await;
    for n in &c.nodes {
        let config = n.write_config();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["snapshot", "restore", &file_s, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("members [1, 2, 3]") && said.contains("drover serve --config"),
            "{said}"
        );
    }
    for n in &mut c.nodes {
        n.spawn();
    }
    let leader = c.leader().await;
    c.converged().await;
    for n in &c.nodes {
        for id in [ids[0], ids[39]] {
            assert_eq!(job_state(n, id).await, "ready");
        }
    }
    let more = enqueue_n(&c.nodes[leader].grpc, "q", 1);
    assert!(
        more[0] > ids[39],
        "new ids continue after the restored ones"
    );
    // A restore into a data dir that holds something is refused.
    let config = c.nodes[0].write_config();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["snapshot", "restore", &file_s, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

/// README's rolling restart: followers first, the leader last, each time
/// waiting with `drover cluster wait --caught-up` before the next; and the
/// wait fails, naming the node, while one is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_waits_for_each_node_and_keeps_everything() {
    let mut c = TestCluster::start(3, "");
    let first = c.leader().await;
    let ids = enqueue_n(&c.nodes[first].grpc, "q", 20);
    let servers = c.servers();
    let out = drover_cli(&["cluster", "leader"], &servers, "");
    let leader: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(leader, first + 1);
    let order: Vec<usize> = (1..=3).filter(|i| *i != leader).chain([leader]).collect();
    for id in order {
        c.nodes[id - 1].terminate();
        c.nodes[id - 1].spawn();
        drover_ok(
            &["cluster", "wait", "--caught-up", "--timeout", "60s"],
            &servers,
        );
    }
    let leader = c.leader().await;
    for id in ids {
        assert_eq!(job_state(&c.nodes[leader], id).await, "ready");
    }
    let down = (leader + 1) % 3;
    c.nodes[down].kill();
    c.wait_unreachable(leader, down as u64 + 1).await;
    let out = drover_cli(
        &["cluster", "wait", "--caught-up", "--timeout", "5s"],
        &servers,
        "",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("node {}", down + 1)),
        "{err}"
    );
}
