//! When jobs fail, on a real node through the CLI: an exec worker failing
//! with a `no_retry` class dead-letters the job at once, `drover dead`
//! lists, shows and replays it, and `drover queues clear-stuck` takes back
//! the lease of a worker that was SIGKILLed. Bad input is named and
//! changes nothing.

mod common;

use std::time::Duration;

use common::*;
use drover::api::types::{
    BreakersBody, DeadJobBody, DeadPageBody, DigestBody, ErrorBody, JobBody, JobStateBody,
    PurgedDeadBody, ReleasedWorkerBody, ReplayedBody, RequeuedBody, ResetBreakersDoneBody,
    TimelineBody, WorkersBody,
};

use common::drover_body as drover;

fn enqueue(server: &str, queue: &str) -> u64 {
    enqueued_id(&["enqueue", "--queue", queue, "--json"], server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_retry_failure_is_dead_at_once_listed_shown_and_replayed() {
    let node = TestNode::start("[retry.\"*\"]\nmax_retries = 5\nno_retry = [\"fatal_input\"]\n");
    let server = node.grpc.as_str();
    wait_for_policy(&node, "retry.* no_retry [fatal_input]", |p| {
        p.retry
            .get("*")
            .and_then(|r| r.no_retry.first())
            .map(String::as_str)
            == Some("fatal_input")
    })
    .await;
    let id = enqueue(server, "q");
    let _worker = exec_worker(
        server,
        "q",
        "failing",
        "echo 'the input is bad' >&2; echo error_class=fatal_input >&2; exit 3",
    );
    wait_state(&node, id, "dead").await;
    let job: JobBody = drover(&["jobs", "get", &id.to_string(), "--json"], server);
    assert_eq!(job.attempts, 1, "no retry for a no_retry class: {job:?}");

    let page: DeadPageBody = drover(
        &["dead", "list", "--class", "fatal_input", "--json"],
        server,
    );
    assert_eq!(page.jobs.first().map(|j| j.id), Some(id), "{page:?}");
    assert_eq!(page.counts.first().map(|c| c.queue.as_str()), Some("q"));
    assert_eq!(page.counts.first().map(|c| c.count), Some(1));
    let none: DeadPageBody = drover(&["dead", "list", "--class", "timeout", "--json"], server);
    assert!(none.jobs.is_empty(), "{none:?}");
    let shown: DeadJobBody = drover(&["dead", "show", &id.to_string(), "--json"], server);
    assert!(shown.errors[0].what.contains("fatal_input"), "{shown:?}");

    // Replayed, it runs again (and fails again: the worker still fails it).
    let replayed: ReplayedBody = drover(&["dead", "replay", &id.to_string(), "--json"], server);
    assert_eq!(replayed.replayed.first(), Some(&id));
    wait_for("the replay to run", Duration::from_secs(20), || async {
        let job: JobBody = drover(&["jobs", "get", &id.to_string(), "--json"], server);
        if job.state == JobStateBody::Dead && job.attempts == 2 {
            Ok(())
        } else {
            Err(format!("{job:?}"))
        }
    })
    .await;
    // The whole answer as text: the replay is recorded somewhere in it.
    let audit = drover_json(&["audit", "--json"], server);
    assert!(audit.to_string().contains("replay"), "{audit}");

    // A replay by filter, then a purge by filter.
    let by_filter: ReplayedBody = drover(
        &[
            "dead",
            "replay",
            "--queue",
            "q",
            "--class",
            "fatal_input",
            "--json",
        ],
        server,
    );
    assert_eq!(by_filter.replayed.first(), Some(&id));
    wait_state(&node, id, "dead").await;
    let purged: PurgedDeadBody = drover(&["dead", "purge", "--queue", "q", "--json"], server);
    assert_eq!(purged.purged, 1);
    let (status, _) = get_json(&format!("{}/api/v1/jobs/{id}", node.http)).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_stuck_requeues_the_job_of_a_killed_worker() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let id = enqueue(server, "slow");
    let mut worker = exec_worker(server, "slow", "sleepy", "sleep 600");
    wait_state(&node, id, "leased").await;
    // Nothing is older than ten minutes, and the worker is connected.
    let none: RequeuedBody = drover(&["queues", "clear-stuck", "slow", "--json"], server);
    assert!(none.requeued.is_empty(), "{none:?}");
    worker.0.kill().unwrap();
    worker.0.wait().unwrap();
    let requeued = wait_for(
        "the node to see the worker gone",
        Duration::from_secs(20),
        || async {
            let r: RequeuedBody = drover(&["queues", "clear-stuck", "slow", "--json"], server);
            if !r.requeued.is_empty() {
                Ok(r)
            } else {
                Err(format!("{r:?}"))
            }
        },
    )
    .await;
    assert_eq!(requeued.requeued.first(), Some(&id));
    assert_eq!(job_state(&node, id).await, "ready");
    let text = metrics_text(&node).await;
    assert!(
        text.contains("drover_jobs_requeued_total{queue=\"slow\",reason=\"stuck\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_dead_letter_requests_are_named_and_change_nothing() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let live = enqueue(server, "q");
    let before: DigestBody = node.body("/api/v1/debug/digest").await;
    let http = reqwest::Client::new();
    let post = |path: String, body: serde_json::Value| {
        let http = http.clone();
        async move {
            let r = http.post(path).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<ErrorBody>().await.unwrap())
        }
    };
    let base = &node.http;
    let cases = [
        (
            format!("{base}/api/v1/dead/{live}/replay"),
            serde_json::json!({}),
            409,
            "not dead",
        ),
        (
            format!("{base}/api/v1/dead/999/replay"),
            serde_json::json!({}),
            404,
            "999",
        ),
        (
            format!("{base}/api/v1/dead/replay"),
            serde_json::json!({"limit": 0}),
            400,
            "limit",
        ),
        (
            format!("{base}/api/v1/dead/replay"),
            serde_json::json!({"since": "-5m"}),
            400,
            "since",
        ),
        (
            format!("{base}/api/v1/dead/purge"),
            serde_json::json!({"older_than": "soon"}),
            400,
            "older_than",
        ),
        (
            format!("{base}/api/v1/dead/purge"),
            serde_json::json!({"colour": "red"}),
            400,
            "colour",
        ),
        (
            format!("{base}/api/v1/queues/q/clear-stuck"),
            serde_json::json!({"older_than": "-1s"}),
            400,
            "older_than",
        ),
        (
            format!("{base}/api/v1/queues/no%20such/clear-stuck"),
            serde_json::json!({}),
            400,
            "queue",
        ),
        (
            format!("{base}/api/v1/workers/nobody/release"),
            serde_json::json!({}),
            404,
            "not quarantined",
        ),
        (
            format!("{base}/api/v1/breakers/reset"),
            serde_json::json!({"queue": "q", "tenant": "default", "class": "nope"}),
            404,
            "q/default/nope",
        ),
        (
            format!("{base}/api/v1/breakers/reset"),
            serde_json::json!({"queue": "q"}),
            400,
            "scope",
        ),
    ];
    for (path, body, want, mentions) in cases {
        let (status, got) = post(path.clone(), body).await;
        assert_eq!(status, want, "{path}: {got:?}");
        assert!(got.error.message.contains(mentions), "{path}: {got:?}");
    }
    let (status, got) = get_error(&format!("{base}/api/v1/dead/{live}")).await;
    assert_eq!(status, 409, "{got:?}");
    assert_eq!(got.error.code, "not_dead");
    let out = drover_cli(&["dead", "replay"], server, "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("name a job id"));
    let after: DigestBody = node.body("/api/v1/debug/digest").await;
    assert_eq!(before.digest, after.digest, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_of_a_class_open_the_breaker_until_reset() {
    let node = TestNode::start(
        "[retry.\"*\"]\nmax_retries = 0\n[queues.\"*\".breaker]\nthreshold = 5\nwindow = \"60s\"\ncooldown = \"10m\"\n",
    );
    let server = node.grpc.as_str();
    wait_for_policy(&node, "retry.* max_retries = 0", |p| {
        p.retry.get("*").and_then(|r| r.max_retries) == Some(0)
    })
    .await;
    let ids: Vec<u64> = (0..6).map(|_| enqueue(server, "mail")).collect();
    let _worker = exec_worker(
        server,
        "mail",
        "smtp-down",
        "echo error_class=smtp >&2; exit 1",
    );
    for id in &ids[..5] {
        wait_state(&node, *id, "dead").await;
    }
    let list: BreakersBody = drover(&["breakers", "list", "--json"], server);
    assert_eq!(
        list.breakers.first().map(|b| b.state.as_str()),
        Some("open"),
        "{list:?}"
    );
    assert_eq!(
        list.breakers.first().map(|b| b.class.as_str()),
        Some("smtp")
    );
    // Another tenant's job in the same queue is leased (and fails, counted
    // on its own breaker): the worker went on asking for mail's jobs, and
    // the leases passed the held one over.
    let probe = enqueued_id(
        &["enqueue", "--queue", "mail", "--tenant", "zeta", "--json"],
        server,
    );
    wait_state(&node, probe, "dead").await;
    let held: JobBody = drover(&["jobs", "get", &ids[5].to_string(), "--json"], server);
    assert_eq!(held.state, JobStateBody::Ready, "{held:?}");
    assert_eq!(held.attempts, 0, "{held:?}");
    assert_eq!(held.waiting.as_deref(), Some("held: breaker"));
    let text = metrics_text(&node).await;
    assert!(
        text.contains("drover_breaker_state{queue=\"mail\",tenant=\"default\",class=\"smtp\"} 2"),
        "{text}"
    );
    // Bad scopes are named and change nothing.
    let out = drover_cli(&["breakers", "reset", "mail/default/nope"], server, "");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no breaker"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = drover_cli(&["breakers", "reset", "mail"], server, "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("QUEUE/TENANT/CLASS"));
    let reset: ResetBreakersDoneBody = drover(
        &["breakers", "reset", "mail/default/smtp", "--json"],
        server,
    );
    assert_eq!(reset.reset, 1);
    wait_state(&node, ids[5], "dead").await;
    let list: BreakersBody = drover(&["breakers", "list", "--json"], server);
    assert_eq!(
        list.breakers.first().map(|b| b.state.as_str()),
        Some("closed"),
        "one failure since: {list:?}"
    );
    assert_eq!(list.breakers.first().map(|b| b.failures), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_is_found_by_its_idempotency_key_and_a_timeline_has_times() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let id = enqueued_id(
        &[
            "enqueue",
            "--queue",
            "q",
            "--idempotency-key",
            "order 42/a",
            "--payload",
            "hi",
            "--json",
        ],
        server,
    );
    let _worker = exec_worker(server, "q", "echo", "cat");
    wait_state(&node, id, "succeeded").await;
    let job: JobBody = drover(
        &[
            "jobs",
            "get",
            "--key",
            "order 42/a",
            "--queue",
            "q",
            "--json",
        ],
        server,
    );
    assert_eq!(job.id, id, "{job:?}");
    assert_eq!(job.result.as_deref(), Some("hi"));
    let out = drover_cli(
        &["jobs", "get", "--key", "nope", "--queue", "q"],
        server,
        "",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job has idempotency key"));
    let other_tenant = drover_cli(
        &[
            "jobs",
            "get",
            "--key",
            "order 42/a",
            "--queue",
            "q",
            "--tenant",
            "acme",
        ],
        server,
        "",
    );
    assert!(!other_tenant.status.success(), "keys are per tenant");
    let t: TimelineBody = drover(&["jobs", "timeline", &id.to_string(), "--json"], server);
    let events = &t.events;
    assert!(events.len() >= 3, "{t:?}");
    assert!(events.iter().all(|e| e.at_ms > 0));
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["enqueued", "leased", "completed"], "{t:?}");
    assert_eq!(events[2].attempt, Some(1), "typed fields: {t:?}");
    assert!(
        events[2].worker.as_deref().is_some_and(|w| !w.is_empty()),
        "{t:?}"
    );
    let text = drover_cli(&["jobs", "timeline", &id.to_string()], server, "");
    assert!(String::from_utf8_lossy(&text.stdout).contains("completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_timeout_is_stopped_and_fails_with_class_timeout() {
    let node = TestNode::start(
        "[jobs]\nheartbeat_timeout = \"10m\"\n[retry.\"*\"]\nmax_retries = 0\n[queues.slow]\ntimeout = \"1s\"\n",
    );
    let server = node.grpc.as_str();
    wait_for_policy(&node, "retry.* max_retries = 0", |p| {
        p.retry.get("*").and_then(|r| r.max_retries) == Some(0)
    })
    .await;
    let slow = enqueued_id(
        &["enqueue", "--queue", "slow", "--payload", "slow", "--json"],
        server,
    );
    let quick = enqueued_id(
        &["enqueue", "--queue", "slow", "--payload", "quick", "--json"],
        server,
    );
    // One job at a time: the quick one runs only once the slow one stopped.
    // Heartbeats are minutes apart, so the stop is the Cancel sent when the
    // log revoked the lease, not a refused heartbeat.
    let _worker = exec_worker(
        server,
        "slow",
        "runner",
        "read -r p; if [ \"$p\" = slow ]; then sleep 600; fi; echo done",
    );
    wait_state(&node, slow, "dead").await;
    let job: JobBody = drover(&["jobs", "get", &slow.to_string(), "--json"], server);
    assert_eq!(job.last_error_class, "timeout", "{job:?}");
    wait_state(&node, quick, "succeeded").await;
    let dead: DeadPageBody = drover(&["dead", "list", "--class", "timeout", "--json"], server);
    assert_eq!(dead.jobs.first().map(|j| j.id), Some(slow));
}

fn listed(server: &str) -> WorkersBody {
    drover(&["workers", "list", "--json"], server)
}

/// `worker`'s entry in a workers list; panics naming the list if absent.
fn worker_entry<'a>(list: &'a WorkersBody, worker: &str) -> &'a drover::api::types::WorkerBody {
    list.workers
        .iter()
        .find(|w| w.worker_id == worker)
        .unwrap_or_else(|| panic!("{worker} is not listed: {list:?}"))
}

/// Waits until the cluster lists `worker` as quarantined (or, with
/// `want` false, as not).
async fn wait_quarantined(server: &str, worker: &str, want: bool) -> WorkersBody {
    wait_for(
        &format!("{worker} quarantined: {want}"),
        Duration::from_secs(20),
        || async {
            let l = listed(server);
            if l.quarantined.contains_key(worker) == want {
                Ok(l)
            } else {
                Err(format!("{l:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_failing_too_often_is_quarantined_until_released_or_back_after_quarantine_for() {
    let mut node = TestNode::prepare(
        "127.0.0.1:0",
        "[retry.\"*\"]\nmax_retries = 0\n[queues.\"*\"]\nquarantine_failure_rate = 0.5\nquarantine_min_jobs = 3\nquarantine_for = \"1h\"\n[queues.brief]\nquarantine_for = \"2s\"\n",
    );
    node.log_file = Some(node.dir.path().join("node.log"));
    node.spawn();
    let server = node.grpc.as_str();
    wait_for_policy(&node, "queues.brief quarantine_for = 2s", |p| {
        p.queues
            .get("brief")
            .and_then(|q| q.quarantine_for.as_deref())
            == Some("2s")
    })
    .await;
    let failing: Vec<u64> = (0..3).map(|_| enqueue(server, "q")).collect();
    let bad = exec_worker(server, "q", "bad", "exit 1");
    for &id in &failing {
        wait_state(&node, id, "dead").await;
    }
    let list = wait_quarantined(server, "bad", true).await;
    let entry = worker_entry(&list, "bad");
    assert!(entry.quarantined_until_ms.is_some(), "{list:?}");
    assert_eq!(entry.recent_failed, 3, "{list:?}");
    assert_eq!(
        list.quarantined.get("bad").map(|q| q.failed),
        Some(3),
        "{list:?}"
    );
    let table = drover_cli(&["workers", "list"], server, "");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("quarantined") && table.contains("drover workers release bad"),
        "{table}"
    );

    // Reconnecting before quarantine_for does not lift it: a job waits.
    drop(bad);
    let waiting = enqueue(server, "q");
    let refused = node.log_count("worker_still_quarantined");
    let _bad = exec_worker(server, "q", "bad", "exit 0");
    // The new session (not the old one, which may still be listed) found
    // the worker quarantined, with a job ready on its queue.
    let log = node.wait_logged("worker_still_quarantined", refused).await;
    let (_, said) = log.rsplit_once("worker_still_quarantined").unwrap();
    assert!(said.contains("worker_id=bad"), "{said}");
    let back = workers_body(&node).await;
    let entry = worker_entry(&back, "bad");
    assert!(entry.quarantined_until_ms.is_some(), "{back:?}");
    // A bounded wait: it holds nothing, and the job waits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let job = job_body(&node, waiting).await;
    assert_eq!(job.state, JobStateBody::Ready, "{job:?}");
    assert_eq!(job.attempts, 0, "{job:?}");
    let back = workers_body(&node).await;
    assert!(
        back.workers
            .iter()
            .filter(|w| w.worker_id == "bad")
            .all(|w| w.in_flight == 0),
        "{back:?}"
    );

    // Bad input is named and changes nothing.
    let out = drover_cli(&["workers", "release", "nobody"], server, "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not quarantined"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = drover_cli(&["workers", "release", &"x".repeat(200)], server, "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 to 128"));
    assert!(listed(server).quarantined.contains_key("bad"));

    let released: ReleasedWorkerBody = drover(&["workers", "release", "bad", "--json"], server);
    assert_eq!(released.worker_id, "bad");
    assert_eq!(released.was.map(|q| q.failed), Some(3));
    wait_state(&node, waiting, "succeeded").await;

    // A worker that comes back after its quarantine_for leases again.
    let failing: Vec<u64> = (0..3).map(|_| enqueue(server, "brief")).collect();
    let flaky = exec_worker(server, "brief", "flaky", "exit 1");
    for &id in &failing {
        wait_state(&node, id, "dead").await;
    }
    wait_quarantined(server, "flaky", true).await;
    drop(flaky);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = enqueue(server, "brief");
    let _flaky = exec_worker(server, "brief", "flaky", "exit 0");
    wait_state(&node, later, "succeeded").await;
    wait_quarantined(server, "flaky", false).await;
    assert!(metrics_text(&node)
        .await
        .contains("drover_workers_quarantined 0"));
}

#[tokio::test]
async fn jobs_and_dead_letters_are_filtered_by_type() {
    let node = TestNode::start("[retry.a]\nmax_retries = 0\n[retry.b]\nmax_retries = 0\n");
    let server = node.grpc.as_str();
    for t in ["a", "a", "b"] {
        drover_ok(&["enqueue", "--queue", "typed", "--type", t], server);
    }
    let _w = exec_worker(server, "typed", "w1", "exit 3");
    wait_for("three dead", Duration::from_secs(30), || async {
        let page: drover::api::types::DeadPageBody = drover(&["dead", "list", "--json"], server);
        match page.jobs.len() {
            3 => Ok(()),
            n => Err(format!("{n} dead")),
        }
    })
    .await;
    let types = |page: &drover::api::types::DeadPageBody| -> Vec<String> {
        page.jobs.iter().map(|j| j.job_type.clone()).collect()
    };
    let a: drover::api::types::DeadPageBody =
        drover(&["dead", "list", "--type", "a", "--json"], server);
    assert_eq!(types(&a), ["a", "a"]);
    let b: drover::api::types::JobsPageBody =
        drover(&["jobs", "list", "--type", "b", "--json"], server);
    assert_eq!(b.jobs.len(), 1);
    assert_eq!(b.jobs[0].job_type, "b");
    // A bulk replay by type takes only that type.
    drop(_w);
    drover_ok(
        &["dead", "replay", "--type", "b", "--reason", "b fixed"],
        server,
    );
    let left: drover::api::types::DeadPageBody = drover(&["dead", "list", "--json"], server);
    assert_eq!(types(&left), ["a", "a"]);
}
