//! Why work is not moving, on a real node: a queue's ready jobs split into
//! runnable and blocked by reason in `/api/v1/queues`, `drover queues
//! list` and `why`, every reason of one job in `drover jobs get`, and the
//! metric `drover_queue_blocked_jobs`; holds released, the counts follow.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use drover::api::types::{QueueStatusBody, QueueWhyBody, QueuesBody};
use drover::client::Producer;

fn queue(server: &str, name: &str) -> QueueStatusBody {
    let list: QueuesBody = drover_body(&["queues", "list", "--json"], server);
    list.queues
        .into_iter()
        .find(|q| q.name == name)
        .unwrap_or_else(|| panic!("no queue {name} listed"))
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect()
}

/// Waits until `name` shows `runnable` and `blocked` (the worker list is
/// gathered at most once a second).
async fn wait_blocked(server: &str, name: &str, runnable: u64, blocked: &[(&str, u64)]) {
    let want = counts(blocked);
    wait_for(
        &format!("queue {name} at {runnable} runnable, {want:?}"),
        Duration::from_secs(20),
        || async {
            let q = queue(server, name);
            if q.runnable == runnable && q.blocked == want {
                Ok(())
            } else {
                Err(format!("runnable {}, blocked {:?}", q.runnable, q.blocked))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_jobs_are_counted_by_reason_and_released() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let mut p = Producer::connect(server).await.unwrap();
    let job = |tenant: &str| drover::proto::v1::NewJob {
        tenant: tenant.into(),
        ..new_job("mail", "x")
    };
    let ids: Vec<u64> = p
        .enqueue(vec![
            job("acme"),
            job("acme"),
            job("acme"),
            job("beta"),
            job("beta"),
        ])
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    p.enqueue(vec![new_job("other", "y"), new_job("other", "z")])
        .await
        .unwrap();

    // Nobody serves the queues yet.
    wait_blocked(server, "mail", 0, &[("no_workers", 5)]).await;
    drover_ok(&["tenants", "pause", "acme", "--reason", "abuse"], server);
    drover_ok(
        &["queues", "pause", "other", "--reason", "maintenance"],
        server,
    );
    wait_blocked(
        server,
        "mail",
        0,
        &[("tenant_paused", 3), ("no_workers", 2)],
    )
    .await;
    wait_blocked(server, "other", 0, &[("paused", 2)]).await;

    // The replicated reasons are the metric's; zeros for the rest.
    let page = metrics_text(&node).await;
    let series = |q: &str, r: &str| {
        metric_value(
            &page,
            &format!("drover_queue_blocked_jobs{{queue=\"{q}\",reason=\"{r}\"}}"),
        )
    };
    assert_eq!(series("mail", "tenant_paused"), Some(3.0), "{page}");
    assert_eq!(series("mail", "budget"), Some(0.0), "{page}");
    assert_eq!(series("other", "paused"), Some(2.0), "{page}");

    // A worker of a version switched off for the queue takes none.
    drover_ok(
        &[
            "versions",
            "disable",
            "v2",
            "--queue",
            "mail",
            "--reason",
            "bad build",
            "--force",
        ],
        server,
    );
    let _v2 = exec_worker_with(
        server,
        "mail",
        "w2",
        "echo done",
        &["--worker-version", "v2"],
    );
    wait_blocked(server, "mail", 0, &[("tenant_paused", 3), ("version", 2)]).await;

    // Why: each hold with its scope and the command that releases it.
    let why: QueueWhyBody = drover_body(&["queues", "why", "mail", "--json"], server);
    assert_eq!(
        (why.ready, why.runnable, why.workers),
        (5, 0, Some(1)),
        "{why:?}"
    );
    let acme = why
        .blocked
        .iter()
        .find(|b| b.reason == "tenant_paused")
        .unwrap();
    assert_eq!((acme.scope.as_str(), acme.jobs), ("acme", Some(3)));
    assert_eq!(acme.release, "drover tenants resume acme");
    let version = why.blocked.iter().find(|b| b.reason == "version").unwrap();
    assert_eq!((version.scope.as_str(), version.jobs), ("v2", Some(2)));
    assert!(
        version
            .release
            .contains("drover versions enable v2 --queue mail"),
        "{version:?}"
    );
    let out = drover(&["queues", "why", "mail"], server);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "5 ready, 0 runnable, 5 blocked",
        "tenant_paused",
        "acme",
        "version",
    ] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
    let out = drover(&["queues", "list"], server);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("RUNNABLE") && text.contains("BLOCKED"),
        "{text}"
    );
    assert!(text.contains("5 (3 tenant_paused, 2 version)"), "{text}");

    // One job: every reason that holds it, first the one its queue counts.
    let held = job_body(&node, ids[0]).await;
    let reasons: Vec<&str> = held.blocked.iter().map(|b| b.reason.as_str()).collect();
    assert_eq!(reasons, ["tenant_paused", "version"], "{held:?}");
    assert_eq!(held.waiting.as_deref(), Some("tenant paused"));
    let out = drover(&["jobs", "get", &ids[0].to_string()], server);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("held back by:") && text.contains("drover tenants resume acme"),
        "{text}"
    );

    // Released, the jobs run and nothing is blocked.
    drover_ok(
        &[
            "versions", "enable", "v2", "--queue", "mail", "--reason", "fixed",
        ],
        server,
    );
    for &id in &ids[3..] {
        wait_state(&node, id, "succeeded").await;
    }
    wait_blocked(server, "mail", 0, &[("tenant_paused", 3)]).await;
    drover_ok(&["tenants", "resume", "acme"], server);
    for &id in &ids[..3] {
        wait_state(&node, id, "succeeded").await;
    }
    let page = metrics_text(&node).await;
    assert_eq!(
        metric_value(
            &page,
            "drover_queue_blocked_jobs{queue=\"mail\",reason=\"tenant_paused\"}"
        ),
        Some(0.0),
        "a released hold reads 0"
    );

    // Bad input: a queue nobody has, a bad name.
    let out = drover(&["queues", "why", "nosuch"], server);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no queue \"nosuch\""));
    let out = drover(&["queues", "why", "bad name"], server);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("queue"));
}
