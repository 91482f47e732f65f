//! A rolling upgrade, one node at a time, under load. The nodes start as
//! a build that writes entry format 3 (`--entry-version 3`) and are
//! upgraded to this build (format 5): while any voter is older the leader
//! writes format 3, which both apply, so the mixed cluster loses nothing;
//! once all are upgraded it writes format 5, whose first entry moves every
//! node's tree to layout 4 (clock changes kept apart) at the same index
//! (the digests still agree); and a node started on the old build after
//! that refuses the newer entries, saying to upgrade it, and keeps its data
//! for the build that can.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::load::*;
use common::*;
use tokio::sync::watch;

const OLDER: [&str; 2] = ["--entry-version", "3"];

fn log_has(node: &TestNode, needle: &str) -> bool {
    node.log_file
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|text| text.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_under_load_loses_nothing_and_an_old_build_refuses_newer_entries() {
    // shed_when is a key the older build would ignore: the leader holds it
    // back until every voter writes the newest format.
    let mut c = TestCluster::prepare(
        3,
        "[jobs]\nheartbeat_timeout = \"2s\"\n[queues.up]\nshed_when = { oldest_ready = \"1h\" }\n",
    );
    for node in &mut c.nodes {
        node.args = OLDER.iter().map(|s| s.to_string()).collect();
        node.spawn();
    }
    c.leader().await;
    let runs: Runs = Arc::new(Mutex::new(Vec::new()));
    let load = Load::start(&c, "up", 3, 100_000);
    let (stop_tx, stop) = watch::channel(false);
    let workers: Vec<_> = (0..2)
        .map(|i| {
            recording_worker(
                &rotated(&c, i),
                &format!("w{i}"),
                "up",
                runs.clone(),
                stop.clone(),
            )
        })
        .collect();
    load.wait_acked(0, 100, "load before the upgrade").await;

    // One node at a time, followers first: stop it (SIGTERM), start the
    // newer build on its data dir, wait until it has caught up.
    let first_leader = c.leader().await;
    let order: Vec<usize> = (1..=3).map(|i| (first_leader + i) % 3).collect();
    for (step, &i) in order.iter().enumerate() {
        let status = tokio::task::block_in_place(|| c.nodes[i].terminate());
        assert!(status.success(), "node {} exited with {status}", i + 1);
        c.nodes[i].args.clear();
        c.nodes[i].log_file = Some(c.nodes[i].dir.path().join("node.log"));
        c.nodes[i].spawn();
        c.caught_up(i).await;
        let before = load.acked_count();
        load.wait_acked(before, 50, "load through the mixed cluster")
            .await;
        if step < 2 {
            // An older voter is left: nobody writes the newer format.
            assert!(
                !c.nodes.iter().any(|n| log_has(n, "entry_version_changed")),
                "a newer format written while a voter applies only format 3"
            );
        }
    }
    let leader = c.leader().await;
    wait_for(
        "the leader to write the newest format once every voter applies it",
        Duration::from_secs(20),
        || async {
            let before = load.acked_count();
            if log_has(&c.nodes[leader], "entry_version_changed") && before > 0 {
                Ok(())
            } else {
                Err(format!("{before} acked"))
            }
        },
    )
    .await;

    // ...and then sets the key it held back, audited.
    wait_for(
        "the held-back shed_when to reach the cluster",
        Duration::from_secs(20),
        || async {
            let (_, audit) = get_json(&format!("{}/api/v1/audit", c.nodes[leader].http)).await;
            let text = audit.to_string();
            match text.contains("policies.set") && text.contains("shed_when") {
                true => Ok(()),
                false => Err(text),
            }
        },
    )
    .await;

    // A follower goes back to the old build while newer entries are
    // written: it refuses them, saying to upgrade, and exits.
    let old = (leader + 1) % 3;
    let status = tokio::task::block_in_place(|| c.nodes[old].terminate());
    assert!(status.success());
    let before = load.acked_count();
    load.wait_acked(before, 50, "format-3 entries while it is down")
        .await;
    c.nodes[old].args = OLDER.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::block_in_place(|| {
        let mut child = c.nodes[old]
            .serve_command()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let status = wait_child(&mut child, Duration::from_secs(30));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut text).unwrap();
        (status, text)
    });
    assert!(!out.0.success(), "the old build must not run on: {}", out.1);
    assert!(
        out.1.contains("written by a newer drover") && out.1.contains("Upgrade this node"),
        "{}",
        out.1
    );
    // Its data was kept: the newer build takes it up from there.
    c.nodes[old].args.clear();
    c.nodes[old].spawn();
    c.caught_up(old).await;

    let (acked, unknown) = load.stop().await;
    c.converged().await;
    check_history(&c.nodes[c.leader().await], "up", &acked, unknown, &runs).await;
    stop_tx.send_replace(true);
    for w in workers {
        w.await.unwrap().unwrap();
    }
}
