//! Chaos on a real node: dropping a fifth of a queue's lease grants loses
//! no job (each dropped lease expires and its job runs again, counted as a
//! requeue), failed completions fail with the chosen class, `chaos off`
//! ends it at once, and a node that does not allow chaos refuses it.

mod common;

use std::time::Duration;

use common::*;
use drover::api::types::{ChaosBody, JobStateBody, StatsBody};

/// The succeeded jobs of `queue` (0 while the node does not answer).
async fn succeeded(node: &TestNode, queue: &str) -> u64 {
    let stats = node.try_body::<StatsBody>("/api/v1/stats").await;
    stats.map_or(0, |s| s.queues.get(queue).map_or(0, |q| q.succeeded))
}

#[tokio::test]
async fn dropped_leases_lose_no_job_and_chaos_off_ends_it() {
    let node = TestNode::start(
        "[jobs]\nheartbeat_timeout = \"1s\"\nmax_retries = 0\n[chaos]\nallowed = true\n",
    );
    let server = node.grpc.as_str();
    for (args, says) in [
        (
            vec!["chaos", "set", "q", "--drop", "1.5"],
            "not a share in 0 to 1",
        ),
        (vec!["chaos", "set", "bad queue!", "--drop", "0.1"], "queue"),
    ] {
        let out = drover_cli(&args, server, "");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    drover_ok(&["chaos", "set", "q", "--drop", "0.2", "--json"], server);
    enqueue_n(server, "q", 2000);
    let _worker = exec_worker_with(server, "q", "w", "true", &["--concurrency", "32"]);
    wait_for("all 2,000 jobs done", Duration::from_secs(120), || async {
        let done = succeeded(&node, "q").await;
        if done == 2000 {
            Ok(())
        } else {
            Err(format!("{done} succeeded"))
        }
    })
    .await;
    let list: ChaosBody = drover_body(&["chaos", "list", "--json"], server);
    let dropped = list
        .injected
        .iter()
        .find(|i| i.kind == "drop")
        .map_or(0, |i| i.count);
    assert!(
        dropped > 100,
        "about a fifth of the grants dropped: {list:?}"
    );
    let metrics = metrics_text(&node).await;
    let requeued: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"drover_jobs_requeued_total{queue="q",reason="expired"} "#))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        requeued >= dropped as f64,
        "{requeued} requeued for {dropped} dropped"
    );

    // Failed completions carry the chosen class; off ends it at once.
    drover_ok(
        &[
            "chaos",
            "set",
            "f",
            "--fail",
            "1",
            "--fail-class",
            "injected",
            "--json",
        ],
        server,
    );
    let _fw = exec_worker_with(server, "f", "wf", "true", &[]);
    let failed = enqueue_n(server, "f", 3);
    for id in failed {
        wait_for(
            &format!("job {id} dead"),
            Duration::from_secs(20),
            || async {
                let v = try_job(&node, id).await?;
                if v.state == JobStateBody::Dead && v.last_error_class == "injected" {
                    Ok(())
                } else {
                    Err(format!("{v:?}"))
                }
            },
        )
        .await;
    }
    let off: ChaosBody = drover_body(&["chaos", "off", "--json"], server);
    assert!(off.rules.is_empty(), "{off:?}");
    let after = enqueue_n(server, "f", 3);
    for id in after {
        wait_state(&node, id, "succeeded").await;
    }
    // The whole answer as text: both actions are in it.
    let audit = get_json(&format!("{}/api/v1/audit", node.http))
        .await
        .1
        .to_string();
    assert!(
        audit.contains("chaos.set") && audit.contains("chaos.off"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_node_that_does_not_allow_chaos_refuses_it() {
    let node = TestNode::start("");
    let out = drover_cli(&["chaos", "set", "q", "--drop", "0.5"], &node.grpc, "");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("[chaos] allowed = true"),
        "{err}"
    );
    let list: ChaosBody = drover_body(&["chaos", "list", "--json"], &node.grpc);
    assert_eq!(
        (list.allowed, list.rules.is_empty()),
        (false, true),
        "{list:?}"
    );
}
