//! `drover cluster add` checks the new node before it writes anything: a
//! node that answers nothing, runs under another id, belongs to another
//! cluster or already to a cluster of its own is refused within a bound,
//! naming the cause, and the membership is left as it was.

mod common;

use std::time::{Duration, Instant};

use common::*;

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

async fn member_ids(node: &TestNode) -> Vec<u64> {
    let (_, m) = get_json(&format!("{}/api/v1/cluster/members", node.http)).await;
    m["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["id"].as_u64())
        .collect()
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
    assert!(
        !ok && err.contains("already belongs to a cluster") && err.contains("join = true"),
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
    let term = |n: &TestNode| {
        let url = format!("{}/api/v1/stats?stale=ok", n.http);
        async move { get_json(&url).await.1["node"]["term"].as_u64().unwrap_or(0) }
    };
    let before = term(&c.nodes[leader]).await;
    let id = (gone + 1).to_string();
    drover_json(
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
    let (_, m) = get_json(&format!("{}/api/v1/cluster/members", c.nodes[leader].http)).await;
    assert_eq!(m["members"].as_array().map(Vec::len), Some(2), "{m}");
}
