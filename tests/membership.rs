//! `drover cluster add` checks the new node before it writes anything: a
//! node that answers nothing, runs under another id, belongs to another
//! cluster or already to a cluster of its own is refused within a bound,
//! naming the cause, and the membership is left as it was.

mod common;

use std::time::{Duration, Instant};

use common::*;
use drover::api::types::{MembersBody, StatsBody};

fn add(server: &str, id: u64, addr: &str) -> (bool, String, Duration) {
    let started = Instant::now();
    let out = drover_cli(
        &["cluster", "add", &id.to_string(), addr, "--reason", "test"],
        server,
        "",
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

async fn members_of(node: &TestNode) -> MembersBody {
    node.body("/api/v1/cluster/members").await
}

async fn member_ids(node: &TestNode) -> Vec<u64> {
    members_of(node)
        .await
        .members
        .iter()
        .map(|x| x.id)
        .collect()
}

/// The node's raft term (0 if it does not answer).
async fn term(node: &TestNode) -> u64 {
    node.try_body::<StatsBody>("/api/v1/stats?stale=ok")
        .await
        .map_or(0, |s| s.node.term)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_add_refuses_a_node_it_cannot_safely_take() {
    let c = TestCluster::start(1, "");
    let leader = &c.nodes[0];
    let server = leader.grpc.as_str();
    let peers = c.peers.clone();

    // Nothing listens there.
    let nobody = format!("127.0.0.1:{}", free_port());
    let (ok, err, took) = add(server, 2, &nobody);
    assert!(!ok && err.contains("start the new node first"), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");

    // A node of another cluster.
    let other = TestNode::start_at(
        &format!("127.0.0.1:{}", free_port()),
        &format!("node_id = 2\ncluster_id = \"other\"\njoin = true\n{peers}"),
    );
    let (ok, err, _) = add(server, 2, &other.grpc_addr);
    assert!(
        !ok && err.contains("cluster") && err.contains("other"),
        "{err}"
    );

    // A node that runs under another id.
    let wrong = TestNode::start_at(
        &format!("127.0.0.1:{}", free_port()),
        &format!("node_id = 3\ncluster_id = \"test\"\njoin = true\n{peers}"),
    );
    let (ok, err, _) = add(server, 2, &wrong.grpc_addr);
    assert!(!ok && err.contains("runs as node 3"), "{err}");

    // A node started without join: a one-voter cluster of its own.
    let own_addr = format!("127.0.0.1:{}", free_port());
    let own = TestNode::start_at(
        &own_addr,
        &format!("node_id = 2\ncluster_id = \"test\"\n{peers}\n[[peers]]\nid = 2\naddr = \"{own_addr}\"\n"),
    );
    let (ok, err, _) = add(server, 2, &own.grpc_addr);
    // Its own incarnation (bootstrapped with other voters) gives it away
    // first; were it the same, its membership would.
    assert!(
        !ok && (err.contains("already belongs to a cluster") || err.contains("incarnation"))
            && err.contains("--join"),
        "{err}"
    );
    assert_eq!(member_ids(leader).await, vec![1], "nothing was proposed");

    // The right node, joining: taken.
    let new = TestNode::start_at(
        &format!("127.0.0.1:{}", free_port()),
        &format!("node_id = 2\ncluster_id = \"test\"\njoin = true\n{peers}"),
    );
    let (ok, err, _) = add(server, 2, &new.grpc_addr);
    assert!(ok, "{err}");
    assert_eq!(member_ids(leader).await, vec![1, 2]);
}

/// A node removed from a live cluster stops campaigning, says why, and
/// exits with status 3 (the unit does not restart it); the cluster's term
/// does not move for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_knows_it_and_exits() {
    let mut c = TestCluster::start(3, "");
    let leader = c.leader().await;
    let gone = (leader + 1) % 3;
    let log = c.nodes[gone].dir.path().join("node.log");
    c.nodes[gone].kill();
    c.nodes[gone].log_file = Some(log.clone());
    c.nodes[gone].spawn();
    c.converged().await;
    let before = term(&c.nodes[leader]).await;
    let id = (gone + 1).to_string();
    drover_ok(
        &["cluster", "remove", &id, "--reason", "test"],
        &c.nodes[leader].grpc,
    );
    let status = c.nodes[gone].wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "{status:?}");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("removed_from_cluster") && said.contains("was removed from the cluster"),
        "{said}"
    );
    // Restarted anyway (by hand), it learns from its peers and stops again.
    c.nodes[gone].spawn();
    let status = c.nodes[gone].wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "{status:?}");
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        said.matches("event=\"removed_from_cluster\"").count(),
        2,
        "{said}"
    );
    assert_eq!(
        term(&c.nodes[leader]).await,
        before,
        "the term did not move"
    );
    let m = members_of(&c.nodes[leader]).await;
    assert_eq!(m.members.len(), 2, "{m:?}");
}

/// README's old mistake: restore one node, start the others with their
/// usual configs on empty data dirs (no --join). They bootstrap a cluster
/// of their own incarnation; the two refuse each other, `cluster add` names
/// the mismatch, and the restored node keeps its jobs and its lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_node_and_nodes_bootstrapped_anew_never_mix() {
    let mut c = TestCluster::start(3, "");
    let leader = c.leader().await;
    let ids = enqueue_n(&c.nodes[leader].grpc, "q", 10);
    let file_s = c.save_and_wipe().await;
    // Node 1 restored alone (one voter).
    let data = c.nodes[0].data_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["snapshot", "restore", &file_s, "--data-dir"])
        .arg(&data)
        .args(["--node-id", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in &mut c.nodes {
        n.spawn();
    }
    // Nodes 2 and 3 elect a leader of their own...
    wait_for(
        "nodes 2 and 3 to elect among themselves",
        Duration::from_secs(30),
        || async {
            let s = c.nodes[1]
                .try_body::<StatsBody>("/api/v1/stats?stale=ok")
                .await;
            match s.map(|s| s.node.leader_id) {
                Ok(l) if l == 2 || l == 3 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // ...and cannot reach node 1, which still leads its own, with its jobs.
    let m1 = members_of(&c.nodes[0]).await;
    let m2 = members_of(&c.nodes[1]).await;
    assert_eq!(m1.leader_id, 1, "{m1:?}");
    assert_ne!(m1.incarnation, m2.incarnation, "{m1:?} {m2:?}");
    let (ok, err, took) = add(&c.nodes[0].grpc, 2, &c.nodes[1].grpc_addr);
    assert!(!ok && err.contains("incarnation"), "{err}");
    assert!(took < Duration::from_secs(30));
    for id in &ids {
        wait_state(&c.nodes[0], *id, "ready").await;
        // The others never serve a job of their own under a restored id.
        let (code, _) = get_json(&format!("{}/api/v1/jobs/{id}?stale=ok", c.nodes[1].http)).await;
        assert_eq!(code, 404, "node 2 has no job {id}");
    }
    let m1 = members_of(&c.nodes[0]).await;
    assert_eq!(m1.leader_id, 1, "node 1 kept its lead: {m1:?}");
}

/// With `wait_when_removed`, a removed node keeps running, idle, and says
/// it was removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_told_to_wait_reports_itself_removed() {
    let c = TestCluster::start(3, "wait_when_removed = true\n");
    let leader = c.leader().await;
    let gone = (leader + 1) % 3;
    let id = (gone + 1).to_string();
    drover_ok(
        &["cluster", "remove", &id, "--reason", "test"],
        &c.nodes[leader].grpc,
    );
    let seen = wait_for(
        "the removed node to say so",
        Duration::from_secs(30),
        || async {
            let m = c.nodes[gone]
                .try_body::<MembersBody>("/api/v1/cluster/members")
                .await?;
            match m.removed {
                Some(why) => Ok(why),
                None => Err(format!("{m:?}")),
            }
        },
    )
    .await;
    assert!(seen.contains("index"), "{seen}");
}
