//! Runs and budgets on a real node, through the CLI, with a real exec
//! worker reporting what each job cost: a run over its cost budget stops
//! after the job that used it up, an override lets it finish, and the
//! run's view, the costs and the metrics say so. Bad input is named and
//! changes nothing.

mod common;

use std::time::Duration;

use common::*;
use drover::api::types::{
    CostsBody, DigestBody, JobBody, JobStateBody, JobsPageBody, RunBody, RunCancelledBody,
    RunReplayedBody, RunTimelineBody, RunsBody,
};

use common::drover_body as drover;

fn fails(args: &[&str], server: &str) -> String {
    let out = drover_cli(args, server, "");
    assert!(!out.status.success(), "drover {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run_view(server: &str, run: &str) -> RunBody {
    drover(&["runs", "get", run, "--json"], server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_its_cost_budget_stops_until_an_override() {
    let node = TestNode::start("[tenants.default.budgets]\ncost_usd = 0.05\n");
    let server = node.grpc.as_str();
    wait_for_policy(&node, "tenants.default budgets cost_usd = 0.05", |p| {
        p.tenants
            .get("default")
            .and_then(|t| t.budgets.as_ref())
            .and_then(|b| b.cost_usd)
            == Some(0.05)
    })
    .await;
    for _ in 0..5 {
        drover_ok(
            &["enqueue", "--queue", "q", "--run", "r1", "--json"],
            server,
        );
    }
    // One job at a time, each reporting 0.02 USD.
    let _worker = exec_worker(
        server,
        "q",
        "w",
        "echo done; echo cost_usd=0.02 tokens_in=10 >&2",
    );
    let view = wait_for("the run held", Duration::from_secs(20), || async {
        let v = run_view(server, "r1");
        if v.budget.state == "held" {
            Ok(v)
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await;
    assert_eq!(view.budget.held_by.as_deref(), Some("cost_usd"), "{view:?}");
    assert_eq!(view.jobs.succeeded, 3, "held after the third: {view:?}");
    assert_eq!(view.budget.usage.get("tokens_in"), Some(&30), "{view:?}");
    let cost = view.budget.budgets[0].clone();
    assert_eq!(cost.budget, "cost_usd");
    assert!((cost.used - 0.06).abs() < 1e-9, "{view:?}");
    // Nothing more is dispatched while it is held. Other runs go on: a job
    // of another run, newer than r1's two, is leased and done, so a lease
    // met r1's jobs first and passed them over.
    let other = enqueued_id(
        &["enqueue", "--queue", "q", "--run", "r2", "--json"],
        server,
    );
    wait_state(&node, other, "succeeded").await;
    let view = run_view(server, "r1");
    assert_eq!(view.jobs.succeeded, 3, "{view:?}");
    assert_eq!(view.jobs.unfinished, 2, "{view:?}");
    let held: JobsPageBody = drover(
        &["jobs", "list", "--run", "r1", "--state", "ready", "--json"],
        server,
    );
    let first = held.jobs[0].id;
    let job: JobBody = drover(&["jobs", "get", &first.to_string(), "--json"], server);
    assert_eq!(
        job.waiting.as_deref(),
        Some("held: budget cost_usd"),
        "{job:?}"
    );
    assert_eq!(job.attempts, 0, "{job:?}");
    let text = drover_cli(&["runs", "budget", "r1"], server, "");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("held: budget cost_usd"), "{text}");

    // New jobs for it are refused, naming the budget and the usage.
    let err = fails(&["enqueue", "--queue", "q", "--run", "r1"], server);
    assert!(
        err.contains("cost_usd") && err.contains("0.06 of 0.05 USD"),
        "{err}"
    );

    let err = fails(&["runs", "override", "r1", "--cost-usd", "1"], server);
    assert!(err.contains("--reason"), "{err}");
    drover_ok(
        &[
            "runs",
            "override",
            "r1",
            "--cost-usd",
            "1",
            "--reason",
            "rerun approved",
            "--json",
        ],
        server,
    );
    let view = wait_for("the run done", Duration::from_secs(20), || async {
        let v = run_view(server, "r1");
        if v.budget.state == "done" {
            Ok(v)
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await;
    assert_eq!(view.jobs.succeeded, 5, "{view:?}");
    assert!((view.budget.cost_usd - 0.10).abs() < 1e-9);

    let costs: CostsBody = drover(&["costs", "--json"], server);
    assert!(
        (costs.by_run["default/r1"].cost_usd - 0.10).abs() < 1e-9,
        "{costs:?}"
    );
    assert_eq!(
        costs
            .by_queue
            .get("q")
            .and_then(|q| q.usage.get("tokens_in")),
        Some(&60),
        "{costs:?}"
    );
    let runs: RunsBody = drover(&["runs", "list", "--state", "done", "--json"], server);
    let names: Vec<&str> = runs.runs.iter().map(|r| r.run.as_str()).collect();
    assert!(names.contains(&"r1"), "{runs:?}");
    // The whole answer as text: the reason is recorded somewhere in it.
    let audit = drover_json(&["audit", "--json"], server);
    assert!(audit.to_string().contains("rerun approved"), "{audit}");
    let metrics = metrics_text(&node).await;
    assert!(
        metrics.contains("drover_budget_exceeded_total{budget=\"cost_usd\",tenant=\"default\"} 1"),
        "{metrics}"
    );
    // r1 finished: what it used of its (raised) cost budget, 0.1 of 1;
    // the tenant paid for r1 and the one job of r2.
    assert!(
        metrics.contains("drover_run_budget_used_ratio_bucket{budget=\"cost_usd\",le=\"0.1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("drover_tenant_cost_microusd_total{tenant=\"default\"} 120000"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_budget_requests_are_named_and_change_nothing() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    drover_ok(
        &["enqueue", "--queue", "q", "--run", "r1", "--json"],
        server,
    );
    let digest = || async { node.body::<DigestBody>("/api/v1/debug/digest").await.digest };
    let before = digest().await;
    let err = fails(&["budgets", "set", "default", "--cost-usd=-1"], server);
    assert!(err.contains("cost_usd"), "{err}");
    let err = fails(&["runs", "budget", "nope"], server);
    assert!(err.contains("404") && err.contains("nope"), "{err}");
    let err = fails(
        &[
            "runs",
            "override",
            "nope",
            "--cost-usd",
            "1",
            "--reason",
            "x",
        ],
        server,
    );
    assert!(err.contains("no run \"nope\""), "{err}");
    let err = fails(&["runs", "override", "r1", "--reason", "x"], server);
    assert!(err.contains("name a limit"), "{err}");
    let err = fails(&["runs", "list", "--state", "bogus"], server);
    assert!(err.contains("state"), "{err}");
    let err = fails(&["costs", "--since=-5m"], server);
    assert!(err.contains("since"), "{err}");
    let err = fails(&["runs", "get", "r1", "--tenant", "bad tenant"], server);
    assert!(err.contains("tenant"), "{err}");
    assert_eq!(digest().await, before, "refused requests changed the state");
}

/// A plan and its three steps go in as one request, the steps naming the
/// plan by position; the steps are more urgent, yet the plan runs first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_enqueued_with_its_steps_runs_first() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let mut producer = drover::client::Producer::connect(server).await.unwrap();
    let mut plan = new_job("q", "plan");
    plan.priority = 5;
    let mut jobs = vec![plan];
    for i in 0..3 {
        let mut step = new_job("q", &format!("step {i}"));
        step.priority = 1;
        step.after = vec!["@0".into()];
        jobs.push(step);
    }
    let ids: Vec<u64> = producer
        .enqueue(jobs)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(job_state(&node, ids[1]).await, "waiting");
    let dir = tempfile::tempdir().unwrap();
    let order = dir.path().join("order");
    let script = format!("echo $DROVER_JOB_ID >> {}", order.display());
    let _worker = exec_worker(server, "q", "w", &script);
    for &id in &ids {
        wait_state(&node, id, "succeeded").await;
    }
    let ran = std::fs::read_to_string(&order).unwrap();
    assert_eq!(
        ran.lines().next(),
        Some(ids[0].to_string().as_str()),
        "{ran}"
    );
    let step: JobBody = drover(&["jobs", "get", &ids[1].to_string(), "--json"], server);
    assert_eq!(step.after, [ids[0]], "{step:?}");

    // A step naming a later job, or an unknown one, is refused as a whole.
    let mut bad = new_job("q", "x");
    bad.after = vec!["@1".into()];
    let err = producer.enqueue(vec![bad]).await.unwrap_err().to_string();
    assert!(err.contains("@1 must name an earlier job"), "{err}");
    let err = fails(&["enqueue", "--queue", "q", "--after", "999999"], server);
    assert!(err.contains("999999"), "{err}");
}

fn enqueue_id(args: &[&str], server: &str) -> u64 {
    let mut all = vec!["enqueue", "--json"];
    all.extend_from_slice(args);
    enqueued_id(&all, server)
}

/// `drover runs cancel` stops a whole run (its waiters too), `runs replay`
/// enqueues it again as a new run linked to the old one, with its
/// dependencies pointing at the copies, and `runs timeline` merges its
/// jobs' events in time order, a page at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_cancelled_replayed_and_read_as_one_timeline() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let a = enqueue_id(&["--queue", "q", "--run", "r3"], server);
    let a_str = a.to_string();
    let b = enqueue_id(&["--queue", "q", "--run", "r3", "--after", &a_str], server);
    enqueue_id(&["--queue", "q", "--run", "r3"], server);
    assert_eq!(job_state(&node, b).await, "waiting");

    let err = fails(&["runs", "cancel", "r3"], server);
    assert!(err.contains("--reason"), "{err}");
    let err = fails(&["runs", "cancel", "nope", "--reason", "x"], server);
    assert!(err.contains("nope"), "{err}");
    let done: RunCancelledBody = drover(
        &[
            "runs",
            "cancel",
            "r3",
            "--reason",
            "bad input data",
            "--json",
        ],
        server,
    );
    assert_eq!(done.cancelled, 3, "{done:?}");
    let view: RunBody = drover(&["runs", "get", "r3", "--json"], server);
    assert_eq!(view.jobs.cancelled, 3, "{view:?}");
    assert_eq!(view.budget.state, "done", "{view:?}");

    let t: RunTimelineBody = drover(&["runs", "timeline", "r3", "--json"], server);
    let kinds: Vec<&str> = t.events.iter().map(|e| e.event.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "enqueued").count(),
        3,
        "{t:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "cancelled").count(),
        3,
        "{t:?}"
    );
    let times: Vec<u64> = t.events.iter().map(|e| e.event.at_ms).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "in time order: {t:?}"
    );
    let page: RunTimelineBody = drover(
        &["runs", "timeline", "r3", "--limit", "2", "--json"],
        server,
    );
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.next.as_deref(), Some("2"), "{page:?}");

    let replayed: RunReplayedBody =
        drover(&["runs", "replay", "r3", "--failed-only", "--json"], server);
    assert_eq!(replayed.run, "r3-replay-1", "{replayed:?}");
    assert_eq!(replayed.replay_of, "default/r3");
    let new = replayed.jobs;
    assert_eq!(new.len(), 3);
    let copy_of_b: JobBody = drover(&["jobs", "get", &new[1].to_string(), "--json"], server);
    assert_eq!(copy_of_b.after, [new[0]], "{copy_of_b:?}");
    assert_eq!(copy_of_b.state, JobStateBody::Waiting);
    let view: RunBody = drover(&["runs", "get", "r3-replay-1", "--json"], server);
    assert_eq!(view.replay_of.as_deref(), Some("default/r3"), "{view:?}");
    let err = fails(&["runs", "replay", "r3", "--into", "r3-replay-1"], server);
    assert!(err.contains("exists already"), "{err}");
    // Replays at once each get a run of their own: the name is chosen
    // where the log is applied, not by probing first.
    let both = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    drover::<RunReplayedBody>(
                        &["runs", "replay", "r3", "--failed-only", "--json"],
                        server,
                    )
                })
            })
            .collect();
        calls
            .into_iter()
            .map(|c| c.join().unwrap().run)
            .collect::<std::collections::BTreeSet<_>>()
    });
    assert_eq!(
        both,
        ["r3-replay-2".to_string(), "r3-replay-3".to_string()].into(),
        "two replays, two runs"
    );
}
