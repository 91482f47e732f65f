//! Recurring jobs on a real three-node cluster: a schedule firing every
//! second keeps firing each slot exactly once across a leader kill; pause,
//! trigger and bad input through the CLI.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use drover::api::types::{SchedulesBody, StatsBody};

/// Elections of 0.5-1 s (ticks of 50 ms): the machine collapses the slots
/// a cluster without a leader missed into the latest (by design), so with
/// the default 1-2 s a split vote under CI's load made an outage of over 2 s
/// and one slot was rightly not fired (CI, 2026-12-07: term 7 failed, the
/// leader of term 8 came 2.3 s after the kill).
const EVERY_SECOND: &str = "[raft]\ntick_interval = \"50ms\"\n[schedules.tick]\ncron = \"* * * * * *\"\njob = { queue = \"cron\", job_type = \"tick\", payload = \"hi\" }\n";

/// The slots of the jobs the schedule enqueued, read from one node.
async fn slots(node: &TestNode) -> Vec<u64> {
    let total = node
        .try_body::<StatsBody>("/api/v1/stats?stale=ok")
        .await
        .map_or(0, |s| s.totals.enqueued);
    let mut out = Vec::new();
    // Ids count up from 1 and only the schedule enqueues here.
    for id in 1..=total.max(1) + 5 {
        let Ok(job) = try_job(node, id).await else {
            continue;
        };
        if let Some(slot) = job.labels.get("drover.slot") {
            out.push(slot.parse().unwrap());
        }
    }
    out
}

#[tokio::test]
async fn each_slot_fires_once_across_a_leader_kill() {
    let mut cluster = TestCluster::start(3, EVERY_SECOND);
    let leader = cluster.leader().await;
    let other = (leader + 1) % 3;
    wait_for("a few slots fired", Duration::from_secs(20), || async {
        let n = slots(&cluster.nodes[other]).await.len();
        if n >= 3 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
    cluster.nodes[leader].kill();
    let before = slots(&cluster.nodes[other]).await.len();
    wait_for(
        "slots fired under the new leader",
        Duration::from_secs(30),
        || async {
            let n = slots(&cluster.nodes[other]).await.len();
            if n >= before + 4 {
                Ok(())
            } else {
                Err(format!("{n} of {}", before + 4))
            }
        },
    )
    .await;
    let got = slots(&cluster.nodes[other]).await;
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "a slot fired twice: {got:?}");
    let first = *unique.first().unwrap();
    let last = *unique.last().unwrap();
    let expected: BTreeSet<u64> = (first..=last).step_by(1000).collect();
    assert_eq!(unique, expected, "a slot was skipped across the failover");
}

#[tokio::test]
async fn schedules_are_listed_paused_and_triggered_through_the_cli() {
    let node = TestNode::start(
        "[schedules.nightly]\ncron = \"0 30 2 * * *\"\ntimezone = \"Europe/Berlin\"\nmisfire = \"run_once\"\njob = { queue = \"reports\", job_type = \"nightly\", priority = 2 }\n",
    );
    let server = node.grpc.as_str();
    let list = wait_for(
        "the schedule in effect",
        Duration::from_secs(10),
        || async {
            let out = drover(&["schedules", "list", "--json"], server);
            match serde_json::from_slice::<SchedulesBody>(&out.stdout) {
                Ok(v) if v.schedules.first().is_some_and(|s| s.name == "nightly") => Ok(v),
                Ok(v) => Err(format!("{v:?}")),
                Err(e) => Err(format!("{e}: {}", String::from_utf8_lossy(&out.stderr))),
            }
        },
    )
    .await;
    let s = &list.schedules[0];
    assert_eq!(s.queue, "reports");
    assert_eq!(s.misfire, "run_once");
    assert!(s.next_slot_ms.unwrap() > 0);

    let out = drover(
        &["schedules", "trigger", "nightly", "--reason", "rerun"],
        server,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("enqueued job"), "{text}");
    let job = job_body(&node, 1).await;
    assert_eq!(job.queue, "reports");
    assert_eq!(job.priority, 2);
    assert_eq!(
        job.labels.get("drover.schedule").map(String::as_str),
        Some("nightly")
    );

    let out = drover(&["schedules", "pause", "nightly"], server);
    assert!(out.status.success());
    let v: SchedulesBody = drover_body(&["schedules", "list", "--json"], server);
    assert!(v.schedules[0].paused, "{v:?}");

    let out = drover(&["schedules", "trigger", "nope"], server);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
}

#[test]
fn a_bad_cron_or_zone_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (schedule, needle) in [
        ("cron = \"61 * * * * *\"", "cron"),
        (
            "cron = \"* * * * *\"\ntimezone = \"Mars/Olympus\"",
            "timezone",
        ),
        ("cron = \"* * * * *\"\nmisfire = \"sometimes\"", "misfire"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            format!("[schedules.x]\n{schedule}\njob = {{ queue = \"q\" }}\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["config", "check"])
            .arg(&path)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("schedules") && err.contains(needle), "{err}");
    }
}
