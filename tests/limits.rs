//! Per-key limits and finding jobs on a real node, through the CLI as an
//! operator would: a concurrency key leases at most its limit while a
//! worker has room for more, the held jobs say why they wait, and
//! `drover jobs list` finds jobs by state, key and age; bad input is named.

mod common;

use std::time::Duration;

use common::*;
use drover::api::types::{EnqueuedBody, ErrorBody, JobBody, JobsPageBody, StatsBody};

use common::drover_body as drover;

fn ids(page: &JobsPageBody) -> Vec<u64> {
    page.jobs.iter().map(|j| j.id).collect()
}

fn list(args: &[&str], server: &str) -> JobsPageBody {
    drover(args, server)
}

// Multi-threaded: the CLI runs blocking while the worker task works on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_key_holds_jobs_back_and_jobs_list_finds_them() {
    let node = TestNode::start("[limits.\"api:\"]\nconcurrency = 1\n");
    let server = node.grpc.as_str();
    wait_for_policy(&node, "limits.\"api:\" concurrency = 1", |p| {
        p.limits.keys.get("api:").and_then(|k| k.concurrency) == Some(1)
    })
    .await;
    let keyed: Vec<EnqueuedBody> = drover(
        &[
            "enqueue",
            "--queue",
            "q",
            "--concurrency-key",
            "api:acme",
            "--count",
            "3",
            "--json",
        ],
        server,
    );
    let keyed: Vec<u64> = keyed.iter().map(|j| j.id).collect();
    let free = enqueued_id(&["enqueue", "--queue", "q", "--json"], server);

    // A worker with room for four holds what it is given until released.
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let opts = drover::client::worker::WorkerOptions::new(server, "w", vec!["q".into()], 4);
    let worker = tokio::spawn(drover::client::worker::run(
        opts,
        move |_job: drover::client::worker::Job| {
            let mut release = release.clone();
            async move {
                let _ = release.wait_for(|r| *r).await;
                Ok(bytes::Bytes::new())
            }
        },
        stop,
    ));
    let leased = wait_for("two leases", Duration::from_secs(10), || async {
        let page = list(&["jobs", "list", "--state", "leased", "--json"], server);
        let got = ids(&page);
        if got.len() >= 2 {
            Ok(got)
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    // A job is parked only by a lease that picked it and found its key
    // full: both of the key's others were offered to this worker (with room
    // for two more) and refused.
    for &id in &keyed[1..] {
        wait_for(
            &format!("job {id} parked behind its key"),
            Duration::from_secs(10),
            || async {
                let job: JobBody = drover(&["jobs", "get", &id.to_string(), "--json"], server);
                if job.waiting.as_deref() == Some("limit api:acme") {
                    Ok(())
                } else {
                    Err(format!("{job:?}"))
                }
            },
        )
        .await;
    }
    let page = list(&["jobs", "list", "--state", "leased", "--json"], server);
    assert_eq!(ids(&page), leased, "no more leases while the key is full");
    assert_eq!(
        leased,
        vec![keyed[0], free],
        "one of api:acme, and the free job"
    );
    assert_eq!(page.jobs[0].worker.as_deref(), Some("w"));

    let held: JobBody = drover(&["jobs", "get", &keyed[1].to_string(), "--json"], server);
    assert_eq!(held.waiting.as_deref(), Some("limit api:acme"), "{held:?}");
    let text = drover_cli(&["jobs", "get", &keyed[1].to_string()], server, "");
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("waiting: limit api:acme"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let ready = list(
        &["jobs", "list", "--state", "ready", "--queue", "q", "--json"],
        server,
    );
    assert_eq!(ids(&ready), vec![keyed[1], keyed[2]]);
    // Paged by id: one per page, the cursor goes on.
    let first = list(
        &["jobs", "list", "--state", "ready", "--limit", "1", "--json"],
        server,
    );
    assert_eq!(ids(&first), vec![keyed[1]]);
    let next = first.next.clone().unwrap();
    let second = list(
        &[
            "jobs", "list", "--state", "ready", "--limit", "1", "--after", &next, "--json",
        ],
        server,
    );
    assert_eq!(ids(&second), vec![keyed[2]]);
    // Nothing has been leased for an hour.
    let stuck = list(
        &[
            "jobs",
            "list",
            "--state",
            "leased",
            "--older-than",
            "1h",
            "--json",
        ],
        server,
    );
    assert!(ids(&stuck).is_empty(), "{stuck:?}");

    release_tx.send(true).unwrap();
    let done = wait_for("all succeeded", Duration::from_secs(20), || async {
        let page = list(&["jobs", "list", "--state", "succeeded", "--json"], server);
        let got = ids(&page);
        if got.len() == 4 {
            Ok(got)
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    let mut sorted = done.clone();
    sorted.sort();
    let mut all = keyed.clone();
    all.push(free);
    assert_eq!(sorted, all);
    assert_eq!(
        done[0], keyed[2],
        "finished jobs come newest first: the key's last ran last"
    );
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
}

#[tokio::test]
async fn bad_limits_and_list_queries_are_named_and_change_nothing() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let bad = [
        (vec!["--concurrency-limit", "2"], "concurrency_limit"),
        (
            vec!["--rate-key", "k", "--rate-limit", "lots"],
            "rate_limit",
        ),
        (vec!["--label", "drover.concurrency_key=x"], "drover."),
    ];
    for (args, want) in bad {
        let mut all = vec!["enqueue", "--queue", "q"];
        all.extend(args);
        let out = drover_cli(&all, server, "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{all:?}: {err}"
        );
    }
    let http = reqwest::Client::new();
    for (q, field) in [
        ("state=stuck", "state"),
        ("limit=0", "limit"),
        ("state=ready&after=yesterday", "after"),
        ("state=dead&after=12", "after"),
        ("older_than=soon", "older_than"),
        ("queue=no%20spaces", "queue"),
        ("colour=red", "colour"),
    ] {
        let resp = http
            .get(format!("{}/api/v1/jobs?{q}", node.http))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: ErrorBody = resp.json().await.unwrap();
        assert_eq!(status, 400, "{q}: {body:?}");
        assert!(body.error.message.contains(field), "{q}: {body:?}");
    }
    let stats: StatsBody = node.body("/api/v1/stats").await;
    assert!(
        !stats.queues.contains_key("q"),
        "nothing was enqueued: {stats:?}"
    );
}
