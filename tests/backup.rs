//! Scheduled backups: the leader writes one every `[backup] every` into
//! `dir`, keeps the newest `keep`, and a new node restored from the newest
//! has the jobs.

mod common;

use std::time::Duration;

use common::*;
use drover::api::types::BackupBody;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_are_kept_pruned_and_restore_into_a_new_node() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let node = TestNode::start(&format!(
        "[backup]\nevery = \"1s\"\ndir = {:?}\nkeep = 2\n",
        backups
    ));
    let server = node.grpc.as_str();
    let mut ids = Vec::new();
    for payload in ["one", "two", "three"] {
        ids.push(enqueued_id(
            &["enqueue", "--queue", "q", "--payload", payload, "--json"],
            server,
        ));
    }
    let written = wait_for(
        "two backups after the jobs",
        Duration::from_secs(20),
        || async {
            let files = drover::backup::list(&backups);
            if files.len() == 2 {
                Ok(files)
            } else {
                Err(format!("{files:?}"))
            }
        },
    )
    .await;
    // More are written (one a second); two are kept, the newest.
    let kept = wait_for(
        "newer backups replacing the older",
        Duration::from_secs(20),
        || async {
            let files = drover::backup::list(&backups);
            if files.len() == 2 && !files.contains(&written[0]) && !files.contains(&written[1]) {
                Ok(files)
            } else {
                Err(format!("{files:?}"))
            }
        },
    )
    .await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    let metrics = metrics_text(&node).await;
    assert!(
        metrics.contains("drover_backup_last_success_timestamp_seconds"),
        "{metrics}"
    );

    let mut restored = TestNode::prepare("127.0.0.1:0", "");
    let out = drover_cli(
        &[
            "snapshot",
            "restore",
            kept[0].to_str().unwrap(),
            "--data-dir",
            restored.data_dir().to_str().unwrap(),
        ],
        "",
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    restored.spawn();
    for &id in &ids {
        assert_eq!(job_state(&restored, id).await, "ready");
    }
}

/// `drover backups list` shows every member's backups, newest first, with
/// the node each lies on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_list_shows_every_members_backups_and_where() {
    let c = TestCluster::start(3, "[backup]\nevery = \"1s\"\nkeep = 3\n");
    let leader = c.leader().await;
    enqueue_n(&c.nodes[leader].grpc, "q", 3);
    let follower = (leader + 1) % 3;
    let listed = wait_for("backups to be listed", Duration::from_secs(30), || async {
        let all: Vec<BackupBody> =
            drover_body(&["backups", "list", "--json"], &c.nodes[follower].grpc);
        if all.len() >= 2 {
            Ok(all)
        } else {
            Err(format!("{all:?}"))
        }
    })
    .await;
    let taken: Vec<u64> = listed.iter().map(|b| b.taken_at_secs).collect();
    assert!(
        taken.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {taken:?}"
    );
    for b in &listed {
        let node = b.node as usize;
        let path = std::path::PathBuf::from(&b.path);
        assert!(
            path.starts_with(c.nodes[node - 1].data_dir()),
            "{b:?} lies on node {node}"
        );
        assert!(path.exists(), "{b:?}");
    }
    assert!(
        listed.iter().any(|b| b.node == leader as u64 + 1),
        "{listed:?}"
    );
}
