//! Queue policies and controls on real nodes: policies replicated from the
//! leader's config (and reloaded on SIGHUP), shedding past a queue's depth,
//! pause, drain and resume through the CLI, a paused queue leasing nothing.

mod common;

use std::time::Duration;

use common::*;
use drover::api::types::{
    AuditPageBody, JobStateBody, PoliciesBody, PurgedBody, QueuesBody, StatsBody, TenantsBody,
};
use drover::client::Producer;

/// The cluster's `jobs.max_retries` as `node` applies it; None while it
/// cannot answer.
async fn max_retries_seen(node: &TestNode) -> Option<u32> {
    let p: PoliciesBody = node.admin().get("/api/v1/policies").await.ok()?;
    Some(p.jobs.max_retries)
}

async fn every_node_sees_max_retries(cluster: &TestCluster, want: u32) {
    for n in &cluster.nodes {
        wait_for(
            "the policy on every node",
            Duration::from_secs(20),
            || async {
                match max_retries_seen(n).await {
                    Some(got) if got == want => Ok(()),
                    other => Err(format!("{other:?}, want {want}")),
                }
            },
        )
        .await;
    }
}

#[tokio::test]
async fn policies_come_from_the_leader_and_reload_on_sighup() {
    let mut cluster = TestCluster::prepare(3, "[jobs]\nmax_retries = 6\n");
    for node in &mut cluster.nodes {
        node.log_file = Some(node.dir.path().join("node.log"));
        node.spawn();
    }
    let leader = cluster.leader().await;
    every_node_sees_max_retries(&cluster, 6).await;
    // The leader's file changes; SIGHUP makes it propose the change, and
    // every node applies it (the followers' files still say 6).
    let file = cluster.nodes[leader].dir.path().join("node.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let changed = text.replace("max_retries = 6", "max_retries = 8");
    std::fs::write(&file, &changed).unwrap();
    // Before the reload, `policies diff` says what the file would change.
    let server = cluster.nodes[leader].grpc.clone();
    let out = drover_cli(&["policies", "diff", file.to_str().unwrap()], &server, "");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("1 value(s)") && said.contains("jobs.max_retries: 6 -> 8"),
        "{said}"
    );
    signal(cluster.nodes[leader].pid(), libc::SIGHUP);
    every_node_sees_max_retries(&cluster, 8).await;
    // Every node keeps an audit record of it: the same key, the file's
    // hash and the node whose file it was.
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(changed.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    for n in &cluster.nodes {
        wait_for(
            "the policies change in every node's audit log",
            Duration::from_secs(20),
            || async {
                let page: AuditPageBody = n
                    .admin()
                    .get("/api/v1/audit")
                    .await
                    .map_err(|e| e.to_string())?;
                let found = page
                    .records
                    .iter()
                    .find(|r| r.action == "policies.set" && r.target == "jobs.max_retries: 6 -> 8");
                match found {
                    Some(r)
                        if r.who == "config"
                            && r.reason
                                == format!("node {}'s config file, sha256 {sha}", leader + 1) =>
                    {
                        Ok(())
                    }
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    // Unchanged now: the diff says so; a file that does not parse is named.
    let out = drover_cli(&["policies", "diff", file.to_str().unwrap()], &server, "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no changes"));
    let bad = cluster.nodes[leader].dir.path().join("bad.toml");
    std::fs::write(&bad, "max_retries = \"lots\"").unwrap();
    let out = drover_cli(&["policies", "diff", bad.to_str().unwrap()], &server, "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bad.toml") && err.contains("max_retries"),
        "{err}"
    );
    // A bad file on SIGHUP keeps what is in effect: the node reads it,
    // says it refused it, and changes nothing.
    let node = &cluster.nodes[leader];
    let (reloaded, refused) = (
        node.log_count("config_reloaded"),
        node.log_count("config_reload_failed"),
    );
    assert!(
        reloaded >= 1,
        "the good reload was logged: {}",
        node.log_text()
    );
    std::fs::write(&file, "max_retries = \"lots\"").unwrap();
    signal(node.pid(), libc::SIGHUP);
    let log = node.wait_logged("config_reload_failed", refused).await;
    let (_, said) = log.rsplit_once("config_reload_failed").unwrap();
    assert!(said.contains("max_retries"), "names the bad key: {said}");
    assert_eq!(
        node.log_count("config_reloaded"),
        reloaded,
        "the bad file was not applied"
    );
    assert!(node.is_running());
    assert_eq!(max_retries_seen(node).await, Some(8));
    every_node_sees_max_retries(&cluster, 8).await;
}

#[tokio::test]
async fn a_full_queue_sheds_low_priorities_first_with_a_retry_hint() {
    let node = TestNode::start("[queues.\"*\"]\nmax_depth = 4\nshed = { 5 = 0.5 }\n");
    wait_for_policy(&node, "queues.* max_depth = 4", |p| {
        p.queues.get("*").and_then(|q| q.max_depth) == Some(4)
    })
    .await;
    let http = reqwest::Client::new();
    let enqueue = |priority: u32| {
        http.post(format!("{}/api/v1/queues/q/jobs", node.http))
            .json(&serde_json::json!({"payload": "x", "priority": priority}))
            .send()
    };
    assert_eq!(enqueue(5).await.unwrap().status(), 201);
    assert_eq!(enqueue(5).await.unwrap().status(), 201);
    let resp = enqueue(5).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: drover::api::types::ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.error.code, "shed", "{body:?}");
    let msg = &body.error.message;
    assert!(
        msg.contains("\"q\"") && msg.contains("2 jobs waiting") && msg.contains("limit of 2"),
        "{msg}"
    );
    // Higher priorities still get in, up to max_depth.
    assert_eq!(enqueue(1).await.unwrap().status(), 201);
    assert_eq!(enqueue(1).await.unwrap().status(), 201);
    // gRPC says RESOURCE_EXHAUSTED, retry-safe; the client's retries give up.
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    let err = p.enqueue(vec![new_job("q", "x")]).await.unwrap_err();
    match err {
        drover::client::ClientError::Status(s) => {
            assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
            assert!(drover::wire::retry_safe(&s));
        }
        other => panic!("{other}"),
    }
    let text = metrics_text(&node).await;
    assert!(
        text.contains("drover_jobs_shed_total{queue=\"q\",priority=\"5\"}"),
        "{text}"
    );
}

// Multi-threaded: the CLI runs blocking while the worker task works on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_drain_and_resume_through_the_cli() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let mut p = Producer::connect(server).await.unwrap();
    let mail_ids: Vec<u64> = p
        .enqueue(vec![new_job("mail", "a"), new_job("mail", "b")])
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    p.enqueue(vec![new_job("other", "c")]).await.unwrap();

    let out = drover(
        &["queues", "pause", "mail", "--reason", "smtp down"],
        server,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A worker serving both queues gets only the other queue's job.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    let opts = drover::client::worker::WorkerOptions::new(
        server,
        "w",
        vec!["mail".into(), "other".into()],
        4,
    );
    let worker = tokio::spawn(drover::client::worker::run(
        opts,
        move |job: drover::client::worker::Job| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(job.queue.clone());
                Ok(bytes::Bytes::new())
            }
        },
        stop,
    ));
    wait_for(
        "the other queue's job done",
        Duration::from_secs(10),
        || async {
            let n = got.lock().unwrap().len();
            if n >= 1 {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        },
    )
    .await;
    // Every lease this worker asks for names both queues, and mail's jobs
    // are the older: another job of the other queue, leased while mail's
    // wait, shows a lease that could have taken them passed them over.
    let later = p.enqueue(vec![new_job("other", "e")]).await.unwrap()[0].id;
    wait_state(&node, later, "succeeded").await;
    assert_eq!(
        *got.lock().unwrap(),
        ["other", "other"],
        "a paused queue leases nothing"
    );
    for &id in &mail_ids {
        let job = job_body(&node, id).await;
        assert_eq!(job.state, JobStateBody::Ready, "{job:?}");
        assert_eq!(job.attempts, 0, "{job:?}");
        assert_eq!(job.waiting.as_deref(), Some("queue paused"), "{job:?}");
    }

    let list: QueuesBody = drover_body(&["queues", "list", "--json"], server);
    let mail = list.queues.iter().find(|q| q.name == "mail").unwrap();
    assert!(mail.paused, "{mail:?}");
    assert_eq!(mail.counts.ready, [0, 0, 2, 0, 0]);

    // Drain: no new jobs, a clear refusal.
    let out = drover(&["queues", "drain", "mail"], server);
    assert!(out.status.success());
    let err = p.enqueue(vec![new_job("mail", "d")]).await.unwrap_err();
    assert!(err.to_string().contains("draining"), "{err}");

    // Resume everything, and wait until nothing is leased.
    let out = drover(
        &["queues", "resume", "--all", "--wait", "--timeout", "20s"],
        server,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the mail jobs done", Duration::from_secs(10), || async {
        let n = got.lock().unwrap().len();
        if n == 4 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;

    // Bad input: an unknown action or a bad name changes nothing.
    let out = drover(&["queues", "pause", "bad name"], server);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("queue"));
    let out = drover(&["queues", "pause"], server);
    assert!(!out.status.success());

    let page: AuditPageBody = drover_body(&["audit", "--json"], server);
    let actions: Vec<&str> = page.records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["queues.resume", "queues.drain", "queues.pause"]);
    assert_eq!(page.records[2].reason, "smtp down");
}

/// One tenant floods a queue, another enqueues a little after it: the
/// second tenant's jobs are not stuck behind the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flood_does_not_starve_another_tenant() {
    let node = TestNode::start("[tenants.small]\nweight = 1\n");
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    let job = |tenant: &str| {
        let mut j = new_job("shared", tenant);
        j.tenant = tenant.into();
        j
    };
    for _ in 0..20 {
        p.enqueue(vec![job("big"); 500]).await.unwrap();
    }
    p.enqueue(vec![job("small"); 100]).await.unwrap();

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = order.clone();
    let opts = drover::client::worker::WorkerOptions::new(
        node.grpc.clone(),
        "one",
        vec!["shared".into()],
        1,
    );
    let worker = tokio::spawn(drover::client::worker::run(
        opts,
        move |job: drover::client::worker::Job| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(job.tenant.clone());
                Ok(bytes::Bytes::new())
            }
        },
        stop,
    ));
    wait_for("200 dispatches", Duration::from_secs(60), || async {
        let n = order.lock().unwrap().len();
        if n >= 200 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
    let order = order.lock().unwrap();
    let small = order[..200].iter().filter(|t| *t == "small").count();
    assert_eq!(
        small, 100,
        "all of small's jobs within the first 200 dispatches"
    );

    // Pausing a tenant is listed, and audited.
    let out = drover(&["tenants", "pause", "big"], &node.grpc);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: TenantsBody = drover_body(&["tenants", "list", "--json"], &node.grpc);
    let big = list.tenants.iter().find(|t| t.name == "big").unwrap();
    assert!(big.paused, "{big:?}");
}

#[tokio::test]
async fn a_queue_purge_cancels_what_matches_and_counts_it() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let mut p = Producer::connect(server).await.unwrap();
    let job = |tenant: &str, delay_ms: u64| {
        let mut j = new_job("bulk", "x");
        j.tenant = tenant.into();
        j.delay_ms = delay_ms;
        j
    };
    for _ in 0..3 {
        p.enqueue(vec![job("a", 0); 400]).await.unwrap();
    }
    p.enqueue(vec![job("b", 0); 10]).await.unwrap();
    p.enqueue(vec![job("a", 3_600_000); 5]).await.unwrap();
    p.enqueue(vec![new_job("other", "y")]).await.unwrap();

    // Bad input changes nothing.
    let out = drover(&["queues", "purge", "bulk", "--state", "leased"], server);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("state"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = drover(&["queues", "purge", "bulk", "--older-than", "soon"], server);
    assert!(String::from_utf8_lossy(&out.stderr).contains("older_than"));

    // Only tenant a's ready jobs: 1,200, over three slices.
    let done: PurgedBody = drover_body(
        &[
            "queues", "purge", "bulk", "--tenant", "a", "--state", "ready", "--json",
        ],
        server,
    );
    assert_eq!(done.cancelled, 1200);
    let stats: StatsBody = get_body(&node, "/api/v1/stats").await;
    assert_eq!(stats.queues["bulk"].ready, [0, 0, 10, 0, 0]);
    assert_eq!(stats.queues["bulk"].scheduled, 5);
    assert_eq!(stats.queues["other"].ready, [0, 0, 1, 0, 0]);
    // Then everything left that waits.
    let done: PurgedBody = drover_body(&["queues", "purge", "bulk", "--json"], server);
    assert_eq!(done.cancelled, 15);
    let page: AuditPageBody = drover_body(&["audit", "--json"], server);
    assert_eq!(page.records[0].action, "queues.purge");
    assert_eq!(page.records[0].target, "queue bulk (15 jobs)");
}

/// `shed_when` is judged from replicated state, so every node refuses
/// alike: once the oldest ready job of `s` waited past `oldest_ready` (a
/// type of `shed_types` at half of it), and once half the recent results
/// of `f` failed. gRPC says RESOURCE_EXHAUSTED, HTTP 429 with code shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shed_when_refuses_on_every_node_alike() {
    let cluster = TestCluster::start(
        3,
        "[jobs]\nmax_retries = 0\n\
         [queues.s]\nshed_when = { oldest_ready = \"6s\" }\nshed_types = [\"analytics\"]\n\
         [queues.f]\nshed_when = { failure_rate = 0.5, min_results = 4 }\n\
         [queues.f.breaker]\nenabled = false\n",
    );
    let leader = cluster.leader().await;
    let typed = |queue: &str, job_type: &str| drover::proto::v1::NewJob {
        job_type: job_type.into(),
        ..new_job(queue, "x")
    };
    let refused = |node: usize, job: drover::proto::v1::NewJob| {
        let server = cluster.nodes[node].grpc.clone();
        async move {
            let mut p = Producer::connect(&server)
                .await
                .map_err(|e| e.to_string())?;
            match p.enqueue(vec![job]).await {
                Ok(_) => Err("admitted".to_string()),
                Err(drover::client::ClientError::Status(s))
                    if s.code() == tonic::Code::ResourceExhausted =>
                {
                    Ok(s.message().to_string())
                }
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let mut p = Producer::connect(&cluster.nodes[leader].grpc)
        .await
        .unwrap();
    p.enqueue(vec![typed("s", "report")]).await.unwrap();
    let first = std::time::Instant::now();
    let said = wait_for(
        "analytics jobs of s shed at half the wait",
        Duration::from_secs(30),
        || refused(leader, typed("s", "analytics")),
    )
    .await;
    assert!(said.contains("oldest ready job has waited"), "{said}");
    assert!(
        first.elapsed() >= Duration::from_millis(2_500),
        "{:?}",
        first.elapsed()
    );
    let every_node_refuses = |queue: &'static str, says: &'static str| async move {
        for node in 0..3 {
            let said = wait_for(
                &format!("node {node} to shed {queue}"),
                Duration::from_secs(30),
                || refused(node, typed(queue, "report")),
            )
            .await;
            assert!(said.contains(says), "node {node}: {said}");
        }
    };
    every_node_refuses("s", "shed_when.oldest_ready").await;
    assert!(
        first.elapsed() >= Duration::from_millis(5_500),
        "{:?}",
        first.elapsed()
    );
    let follower = (leader + 1) % 3;
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/queues/s/jobs",
            cluster.nodes[follower].http
        ))
        .json(&serde_json::json!({"payload": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let body: drover::api::types::ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.error.code, "shed", "{body:?}");
    // A queue whose every result fails: shed once it has four of them.
    let _failing = exec_worker(&cluster.nodes[leader].grpc, "f", "wf", "exit 1");
    let ids = enqueue_n(&cluster.nodes[leader].grpc, "f", 4);
    for id in ids {
        wait_state(&cluster.nodes[leader], id, "dead").await;
    }
    every_node_refuses("f", "100% of its recent results failed").await;
}

/// `drover queues purge --type` cancels the waiting jobs of one type only
/// (ready and delayed), and leaves the other types waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_type_cancels_that_type_only() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let enqueue = |t: &str, more: &[&str]| {
        let mut args = vec![
            "enqueue", "--queue", "p", "--type", t, "--count", "3", "--json",
        ];
        args.extend_from_slice(more);
        drover_json(&args, server)
    };
    enqueue("analytics", &[]);
    enqueue("analytics", &["--delay", "1h"]);
    enqueue("report", &[]);
    let out = drover_cli(
        &[
            "queues",
            "purge",
            "p",
            "--type",
            "no such type!",
            "--reason",
            "x",
        ],
        server,
        "",
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.contains("type"), "{err}");
    let purge_analytics = || -> PurgedBody {
        drover_body(
            &[
                "queues",
                "purge",
                "p",
                "--type",
                "analytics",
                "--reason",
                "x",
                "--json",
            ],
            server,
        )
    };
    let purged = purge_analytics();
    assert_eq!(purged.cancelled, 6, "{purged:?}");
    let left: serde_json::Value = drover_json(
        &["jobs", "list", "--queue", "p", "--state", "ready", "--json"],
        server,
    );
    let jobs = left["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(jobs.len(), 3, "{left}");
    assert!(
        jobs.iter()
            .all(|j| j["type"] == "report" || j["job_type"] == "report"),
        "{left}"
    );
    let purged = purge_analytics();
    assert_eq!(purged.cancelled, 0, "nothing of that type is left");
}

/// Every node keeps the history of what it applied: after 12 jobs, two of
/// them failing once, the queue's last bucket counts them and carries wait
/// and run percentiles; the day's chart has them too; unknown queues and
/// ranges are refused naming the problem.
#[tokio::test]
async fn every_node_keeps_the_history_of_its_queues() {
    use drover::api::types::HistoryBody;
    use drover::client::worker::{self, JobError};
    let cluster = TestCluster::start(3, "[jobs]\nretry_base_delay = \"10ms\"\n");
    let leader = cluster.leader().await;
    let node = &cluster.nodes[leader];
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..12 {
        let mut job = new_job("charted", "x");
        job.job_type = if i < 2 { "flaky".into() } else { String::new() };
        ids.push(p.enqueue(vec![job]).await.unwrap()[0].id);
    }
    let failed = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let w = tokio::spawn(
        worker::Worker::new(node.grpc.clone(), ["charted"]).run_with(
            move |job: worker::Job| {
                let failed = failed.clone();
                async move {
                    // Each flaky job fails its first attempt.
                    if job.job_type == "flaky" && failed.lock().unwrap().insert(job.job_id) {
                        return Err(JobError::new("transient", "first try"));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(bytes::Bytes::new())
                }
            },
            stop,
        ),
    );
    for id in &ids {
        wait_state(node, *id, "succeeded").await;
    }
    for n in &cluster.nodes {
        let h: HistoryBody = wait_for(
            "the history on every node",
            Duration::from_secs(20),
            || async {
                let h: HistoryBody = n
                    .admin()
                    .get("/api/v1/queues/charted/history?range=1h")
                    .await
                    .map_err(|e| e.to_string())?;
                let sum =
                    |f: fn(&drover::history::Point) -> u64| h.points.iter().map(f).sum::<u64>();
                match (sum(|p| p.enqueued), sum(|p| p.completed), sum(|p| p.failed)) {
                    (12, 12, 2) => Ok(h),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        assert_eq!((h.points.len(), h.bucket_seconds), (360, 10));
        assert!(h.since_ms > 0 && h.since_ms <= h.points.last().unwrap().at_ms + 10_000);
        let run = h
            .points
            .iter()
            .filter_map(|p| p.run_ms)
            .next()
            .expect("run times");
        assert!(run.p50 >= 15 && run.p99 < 60_000, "{run:?}");
        assert!(h.points.iter().any(|p| p.wait_ms.is_some()));
        let day: HistoryBody = n.admin().get("/api/v1/history?range=24h").await.unwrap();
        assert_eq!((day.points.len(), day.bucket_seconds), (288, 300));
        assert_eq!(day.points.iter().map(|p| p.completed).sum::<u64>(), 12);
    }
    let (code, err) = get_error(&format!("{}/api/v1/queues/nope/history", node.http)).await;
    assert_eq!(code, 404);
    assert!(
        err.error.message.contains("queues list"),
        "{}",
        err.error.message
    );
    let (code, err) = get_error(&format!("{}/api/v1/history?range=7d", node.http)).await;
    assert_eq!(code, 400);
    assert!(err.error.message.contains("1h"), "{}", err.error.message);
    let _ = stop_tx.send(true);
    let _ = w.await;
}
