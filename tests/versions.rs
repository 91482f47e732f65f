//! Worker versions on a real node: `drover versions disable` keeps a
//! version's workers from a queue's jobs (they go to the other version),
//! `enable` undoes it, both are audited, and bad input is refused with a
//! clear 4xx and changes nothing.

mod common;

use std::time::Duration;

use common::*;
use drover::api::types::{CanaryBody, DigestBody, JobBody, VersionsBody};

fn leased_by(job: &JobBody) -> Vec<String> {
    job.events
        .iter()
        .filter(|e| e.kind == "leased")
        .map(|e| e.worker.clone().unwrap_or_default())
        .collect()
}

fn versions(server: &str) -> VersionsBody {
    drover_body(&["versions", "list", "--json"], server)
}

async fn all_done(node: &TestNode, ids: &[u64]) -> Vec<JobBody> {
    let mut out = Vec::new();
    for &id in ids {
        out.push(wait_state_within(node, id, "succeeded", Duration::from_secs(30)).await);
    }
    out
}

#[tokio::test]
async fn a_disabled_version_gets_no_jobs_until_enabled() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let _v3 = exec_worker_with(server, "q", "w3", "echo v3", &["--worker-version", "v3"]);
    let _v4 = exec_worker_with(server, "q", "w4", "echo v4", &["--version", "v4"]);
    wait_for(
        "both versions connected",
        Duration::from_secs(20),
        || async {
            let v = versions(server);
            if v.connected.get("v3") == Some(&1) && v.connected.get("v4") == Some(&1) {
                Ok(())
            } else {
                Err(format!("{v:?}"))
            }
        },
    )
    .await;

    // Bad input changes nothing.
    let digest = || async { node.body::<DigestBody>("/api/v1/debug/digest").await.digest };
    let before = digest().await;
    for (args, says) in [
        (
            vec!["versions", "disable", "v9", "--reason", "x"],
            "no connected worker has version",
        ),
        (vec!["versions", "disable", "v4"], "needs a reason"),
        (vec!["versions", "enable", "v4"], "is not switched off"),
        (
            vec![
                "versions",
                "disable",
                "v4",
                "--queue",
                "bad queue!",
                "--reason",
                "x",
            ],
            "queue",
        ),
    ] {
        let out = drover_cli(&args, server, "");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    let long = "v".repeat(129);
    let out = drover_cli(
        &["versions", "disable", &long, "--reason", "x", "--force"],
        server,
        "",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 to 128 bytes"));
    assert_eq!(digest().await, before, "refused requests change nothing");

    drover_ok(
        &[
            "versions",
            "disable",
            "v4",
            "--queue",
            "q",
            "--reason",
            "v4 breaks q",
            "--json",
        ],
        server,
    );
    let listed = versions(server);
    assert_eq!(
        listed.switches.first().map(|s| s.version.as_str()),
        Some("v4"),
        "{listed:?}"
    );
    assert_eq!(
        listed.switches.first().and_then(|s| s.queue.as_deref()),
        Some("q"),
        "{listed:?}"
    );
    for job in all_done(&node, &enqueue_n(server, "q", 20)).await {
        assert_eq!(leased_by(&job), vec!["w3"], "{job:?}");
        assert_eq!(job.result.as_deref().map(str::trim), Some("v3"));
    }
    // The whole answer as text: the action and the reason are in it.
    let audit = get_json(&format!("{}/api/v1/audit", node.http)).await.1;
    assert!(audit.to_string().contains("versions.disable"), "{audit}");
    assert!(audit.to_string().contains("v4 breaks q"), "{audit}");

    drover_ok(
        &["versions", "enable", "v4", "--queue", "q", "--json"],
        server,
    );
    let listed = versions(server);
    assert!(listed.switches.is_empty(), "{listed:?}");
    let done = all_done(&node, &enqueue_n(server, "q", 40)).await;
    assert!(
        done.iter().any(|j| leased_by(j) == vec!["w4"]),
        "v4 takes jobs again"
    );
    // Both leased: each has a first and a last sight, which the table shows.
    let listed = versions(server);
    for v in ["v3", "v4"] {
        let seen = listed
            .seen
            .get(v)
            .unwrap_or_else(|| panic!("{v}: {listed:?}"));
        assert!(seen.first_seen_ms > 0 && seen.first_seen_ms <= seen.last_seen_ms);
    }
    let out = drover_cli(&["versions", "list"], server, "");
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("FIRST SEEN") && table.contains("LAST SEEN"),
        "{table}"
    );
}

#[tokio::test]
async fn a_canary_gets_only_its_share_and_abort_switches_it_off() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let _v3 = exec_worker_with(server, "q", "w3", "echo v3", &["--worker-version", "v3"]);
    let _v4 = exec_worker_with(server, "q", "w4", "echo v4", &["--worker-version", "v4"]);
    for (args, says) in [
        (vec!["canary", "status", "q"], "has no canary rule"),
        (
            vec!["canary", "set", "q", "--percent", "10"],
            "names its version",
        ),
        (
            vec!["canary", "set", "q", "--version", "v4", "--percent", "150"],
            "outside 0 to 100",
        ),
        (
            vec![
                "canary",
                "set",
                "q",
                "--version",
                "v4",
                "--percent",
                "5",
                "--max-wait",
                "soon",
            ],
            "max_wait",
        ),
        (vec!["canary", "abort", "q"], "has no canary rule"),
    ] {
        let out = drover_cli(&args, server, "");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    let rule: CanaryBody = drover_body(
        &[
            "canary",
            "set",
            "q",
            "--version",
            "v4",
            "--percent",
            "20",
            "--json",
        ],
        server,
    );
    assert_eq!((rule.percent, rule.max_wait.as_str()), (20, "5m"));
    let ids = enqueue_n(server, "q", 200);
    let jobs = all_done(&node, &ids).await;
    let mut canary = 0;
    for job in &jobs {
        let id = job.id;
        let covered = drover::machine::canary::canary_part(id) < 2000;
        let want = if covered { "w4" } else { "w3" };
        assert_eq!(leased_by(job), vec![want], "job {id}");
        canary += usize::from(covered);
    }
    assert!(
        canary > 10 && canary < 80,
        "{canary} of 200 went to the canary"
    );
    let status: CanaryBody = drover_body(&["canary", "status", "q", "--json"], server);
    let stats = status
        .stats
        .as_ref()
        .unwrap_or_else(|| panic!("no stats: {status:?}"));
    assert_eq!(stats.canary.jobs, canary as u64, "{status:?}");
    assert_eq!(stats.control.jobs, 200 - canary as u64, "{status:?}");
    assert_eq!(stats.canary.success_rate, 1.0, "{status:?}");
    let verdicts: Vec<&str> = stats
        .comparison
        .iter()
        .map(|j| j.verdict.as_str())
        .collect();
    // Both versions succeed and report no cost: not worse on either. (Run
    // times are real measurements, and may differ.)
    assert_eq!(verdicts.len(), 3, "{status:?}");
    assert!(
        verdicts[0] != "worse" && verdicts[2] != "worse",
        "{status:?}"
    );
    drover_ok(
        &["canary", "abort", "q", "--reason", "fails", "--json"],
        server,
    );
    let listed = versions(server);
    assert_eq!(
        listed.switches.first().map(|s| s.version.as_str()),
        Some("v4"),
        "{listed:?}"
    );
    let out = drover_cli(&["canary", "status", "q"], server, "");
    assert!(!out.status.success());
    let audit = get_json(&format!("{}/api/v1/audit", node.http))
        .await
        .1
        .to_string();
    assert!(
        audit.contains("canary.set") && audit.contains("canary.abort"),
        "{audit}"
    );
    // After the abort, v4 gets nothing of q.
    for job in all_done(&node, &enqueue_n(server, "q", 20)).await {
        assert_eq!(leased_by(&job), vec!["w3"], "{job:?}");
    }
}

/// A canary of the config file is ended from the command line too: a
/// run-time rule for its version goes first (here, promoted: every worker
/// takes every job), and `canary status` says there is none.
#[tokio::test]
async fn a_canary_of_the_config_file_ends_by_a_run_time_rule() {
    let node =
        TestNode::start("[queues.c.canary]\nversion = \"v4\"\npercent = 100\nmax_wait = \"1h\"\n");
    let server = node.grpc.as_str();
    let _v3 = exec_worker_with(server, "c", "w3", "echo v3", &["--worker-version", "v3"]);
    let _v4 = exec_worker_with(server, "c", "w4", "echo v4", &["--worker-version", "v4"]);
    let status = wait_for(
        "the config's rule in force",
        Duration::from_secs(20),
        || async {
            let out = drover_cli(&["canary", "status", "c", "--json"], server, "");
            if out.status.success() {
                Ok(serde_json::from_slice::<CanaryBody>(&out.stdout).unwrap())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).to_string())
            }
        },
    )
    .await;
    assert_eq!((status.version.as_str(), status.percent), ("v4", 100));
    let ids = enqueue_n(server, "c", 10);
    for job in all_done(&node, &ids).await {
        assert_eq!(leased_by(&job), vec!["w4"], "{job:?}");
    }
    // 0% is how an ended config canary stands: not a share to set.
    let out = drover_cli(&["canary", "set", "c", "--percent", "0"], server, "");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("canary abort"),
        "{err}"
    );
    drover_ok(&["canary", "promote", "c", "--reason", "x"], server);
    let out = drover_cli(&["canary", "status", "c"], server, "");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.contains("no canary"), "{err}");
    let out = drover_cli(&["canary", "abort", "c", "--reason", "x"], server, "");
    assert!(!out.status.success(), "an ended canary is not ended twice");
    let after = all_done(&node, &enqueue_n(server, "c", 40)).await;
    assert!(
        after.iter().any(|j| leased_by(j) == vec!["w3"]),
        "{after:?}"
    );
}

/// The leader ends a canary by itself, as `[queues.NAME.canary]` says: one
/// that fails half its jobs is aborted once its verdict held for `hold`
/// (audited, naming the measure), and the control takes every job after;
/// one as good as the control is promoted after `promote_after`.
#[tokio::test]
async fn the_leader_aborts_a_failing_canary_and_promotes_a_good_one() {
    let judge = "min_samples = 10\nhold = \"2s\"\nmax_duration_ratio = 100.0\n";
    let node = TestNode::start(&format!(
        "[jobs]\nmax_retries = 0\n\
         [queues.bad.breaker]\nenabled = false\n\
         [queues.bad.canary]\nversion = \"v4\"\npercent = 50\nmax_wait = \"1h\"\nabort_on = [\"success_rate\"]\n{judge}\
         [queues.good.canary]\nversion = \"v4\"\npercent = 50\nmax_wait = \"1h\"\npromote_after = \"3s\"\n{judge}"
    ));
    let server = node.grpc.as_str();
    let _good3 = exec_worker_with(server, "good", "g3", "true", &["--worker-version", "v3"]);
    let _good4 = exec_worker_with(server, "good", "g4", "true", &["--worker-version", "v4"]);
    let _bad3 = exec_worker_with(server, "bad", "b3", "true", &["--worker-version", "v3"]);
    let _bad4 = exec_worker_with(server, "bad", "b4", "exit 1", &["--worker-version", "v4"]);
    enqueue_n(server, "good", 60);
    enqueue_n(server, "bad", 60);
    let audit = wait_for(
        "the leader to abort the bad canary and promote the good one",
        Duration::from_secs(60),
        || async {
            let (_, audit) = get_json(&format!("{}/api/v1/audit", node.http)).await;
            let text = audit.to_string();
            if text.contains("canary.abort") && text.contains("canary.promote") {
                Ok(audit)
            } else {
                Err(text)
            }
        },
    )
    .await;
    let records = audit["records"].as_array().cloned().unwrap_or_default();
    let by_action = |action: &str| {
        records
            .iter()
            .find(|r| r["action"] == action)
            .cloned()
            .unwrap_or_else(|| panic!("no {action} in {audit}"))
    };
    let abort = by_action("canary.abort");
    assert_eq!(abort["who"], "node 1 (canary judge)", "{abort}");
    assert!(
        abort["target"].as_str().unwrap_or("").contains("queue bad")
            && abort["reason"]
                .as_str()
                .unwrap_or("")
                .contains("success_rate_delta"),
        "{abort}"
    );
    let promote = by_action("canary.promote");
    assert!(
        promote["target"]
            .as_str()
            .unwrap_or("")
            .contains("queue good"),
        "{promote}"
    );
    // v4 is switched off for bad; both queues say they have no canary now.
    let listed = versions(server);
    assert!(
        listed
            .switches
            .iter()
            .any(|s| s.version == "v4" && s.queue.as_deref() == Some("bad")),
        "{listed:?}"
    );
    for q in ["bad", "good"] {
        let out = drover_cli(&["canary", "status", q], server, "");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success() && err.contains("no canary"),
            "{q}: {err}"
        );
    }
    // After the abort, the control takes every job of bad.
    for job in all_done(&node, &enqueue_n(server, "bad", 20)).await {
        assert_eq!(leased_by(&job), vec!["b3"], "{job:?}");
    }
    // After the promotion, jobs of the canary's share go to v3 too (they
    // waited for v4 alone before).
    let after = all_done(&node, &enqueue_n(server, "good", 40)).await;
    let covered_by_v3 = after
        .iter()
        .any(|j| drover::machine::canary::canary_part(j.id) < 5000 && leased_by(j) == vec!["g3"]);
    let v4_took = after.iter().any(|j| leased_by(j) == vec!["g4"]);
    assert!(covered_by_v3 && v4_took, "{after:?}");
}

/// `drover versions only V --queue Q` pins the queue: only V's workers
/// take its jobs, however long they wait; `canary promote` undoes it.
#[tokio::test]
async fn versions_only_pins_a_queue_to_one_version() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let _v3 = exec_worker_with(server, "q", "w3", "echo v3", &["--worker-version", "v3"]);
    let _v4 = exec_worker_with(server, "q", "w4", "echo v4", &["--worker-version", "v4"]);
    let out = drover_cli(&["versions", "only", "v4"], server, "");
    assert!(!out.status.success(), "--queue is required");
    let pinned: CanaryBody = drover_body(
        &["versions", "only", "v4", "--queue", "q", "--json"],
        server,
    );
    assert_eq!(
        (pinned.percent, pinned.max_wait.as_str()),
        (100, "never"),
        "{pinned:?}"
    );
    for job in all_done(&node, &enqueue_n(server, "q", 20)).await {
        assert_eq!(leased_by(&job), vec!["w4"], "{job:?}");
    }
    drover_ok(&["canary", "promote", "q", "--reason", "unpin"], server);
    let after = all_done(&node, &enqueue_n(server, "q", 40)).await;
    assert!(
        after.iter().any(|j| leased_by(j) == vec!["w3"]),
        "{after:?}"
    );
}
