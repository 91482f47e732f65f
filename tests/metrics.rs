//! The metrics operators alert and chart on, on a live node: every metric
//! name the alert rules (config/prometheus/alerts.yml) and the Grafana board
//! (config/grafana/drover.json) use is on its `/metrics` page once the node
//! has seen the events they count; and the counters carry the labels
//! operators slice by.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

/// The `drover_` names in `text`, histogram series reduced to their family.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("drover_"))
        .map(|w| {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = w.strip_suffix(suffix) {
                    if base.ends_with("_seconds")
                        || base.ends_with("_ratio")
                        || base.ends_with("_per_entry")
                    {
                        return base.to_string();
                    }
                }
            }
            w.to_string()
        })
        .collect()
}

/// The metric families with a sample on a `/metrics` page.
fn families(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .flat_map(metric_names)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_alerts_and_dashboard_is_served() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let alerts = std::fs::read_to_string(root.join("config/prometheus/alerts.yml")).unwrap();
    let board = std::fs::read_to_string(root.join("config/grafana/drover.json")).unwrap();
    let board_json: serde_json::Value = serde_json::from_str(&board).expect("the board is JSON");
    assert!(board_json["panels"].as_array().unwrap().len() > 20);
    let mut wanted = metric_names(&alerts);
    wanted.extend(metric_names(&board));
    assert!(wanted.len() > 30, "{wanted:?}");
    // Served only with [tls]: tests/tls.rs checks it on a TLS node.
    assert!(wanted.remove("drover_tls_cert_expiry_timestamp_seconds"));

    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(&format!(
        r#"
[raft]
snapshot_every = 20
[backup]
every = "1s"
dir = {:?}
[chaos]
allowed = true
[metrics]
job_types = ["t"]
[budgets]
attempts = 1
[retry.t]
max_retries = 0
[queues.q]
sla = "1ms"
workers = {{ min = 1, max = 4, expected = 2 }}
[queues.q.breaker]
threshold = 1
[queues.s]
max_depth = 2
shed = {{ 5 = 0.5 }}
"#,
        dir.path().join("backups")
    ));
    let server = node.grpc.as_str();
    // Work for the worker: two jobs of one run (the second goes over the
    // run's attempt budget), one of a run that finishes, one that fails
    // (dead at once, breaker open).
    let enqueue = |more: &[&str]| {
        let mut args = vec!["enqueue", "--queue", "q", "--type", "t", "--tenant", "acme"];
        args.extend_from_slice(more);
        drover_ok(&args, server);
    };
    enqueue(&["--run", "r2"]);
    enqueue(&["--run", "r1", "--payload", "ok"]);
    enqueue(&["--run", "r1", "--payload", "ok2"]);
    enqueue(&["--payload", "fail"]);
    // A little chaos (a 1 ms delay), so its counter is on the page.
    drover_ok(&["chaos", "set", "q", "--delay", "1ms", "--json"], server);
    // A canary rule, so its comparison is on the page.
    drover_ok(
        &[
            "canary",
            "set",
            "q",
            "--version",
            "v2",
            "--percent",
            "10",
            "--json",
        ],
        server,
    );
    // Shed: the queue's second priority-5 job is over half its max_depth.
    drover_ok(&["enqueue", "--queue", "s", "--priority", "5"], server);
    let shed = drover_cli(&["enqueue", "--queue", "s", "--priority", "5"], server, "");
    assert!(!shed.status.success(), "the second enqueue is shed");
    // Entries enough for a snapshot of its own (snapshot_every = 20).
    drover_ok(&["enqueue", "--queue", "s2", "--count", "30"], server);
    let _worker = exec_worker(
        server,
        "q",
        "w1",
        r#"p=$(cat); if [ "$p" = fail ]; then exit 3; fi; echo cost_usd=0.01 >&2; echo done"#,
    );
    let missing = wait_for(
        "every metric of the alerts and the board on /metrics",
        Duration::from_secs(30),
        || async {
            let page = metrics_text(&node).await;
            let served = families(&page);
            let missing: Vec<&String> = wanted.iter().filter(|n| !served.contains(*n)).collect();
            if missing.is_empty() {
                Ok(page)
            } else {
                Err(format!("missing {missing:?}"))
            }
        },
    )
    .await;
    let page = missing;
    // The labels operators slice by.
    assert!(
        page.contains(r#"drover_jobs_failed_total{queue="q",job_type="t",error_class="exit_3"} 1"#),
        "{page}"
    );
    assert!(page.contains(r#"drover_jobs_dispatched_total{queue="q",job_type="t"}"#));
    assert!(
        page.contains(r#"drover_queue_workers{queue="q"} 1"#),
        "{page}"
    );
    assert!(page.contains(r#"drover_queue_expected_workers{queue="q"} 2"#));
    assert!(page.contains(r#"drover_worker_heartbeat_age_seconds{worker="w1"}"#));
    // A named type has its own series; the shed queue's jobs (type
    // "default", not named) count as other.
    assert!(
        page.contains(r#"drover_job_wait_seconds_count{queue="q",job_type="t"}"#),
        "{page}"
    );
    assert!(page.contains("# TYPE drover_job_run_seconds histogram"));
    // The desired workers stay within the queue's min and max.
    let desired: f64 = page
        .lines()
        .find_map(|l| l.strip_prefix(r#"drover_queue_desired_workers{queue="q"} "#))
        .expect("desired workers of q")
        .parse()
        .unwrap();
    assert!((1.0..=4.0).contains(&desired), "{desired}");
}

/// The value of the sample `series` (name and labels as served) on a page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_route_template_and_method_not_by_raw_path() {
    let node = TestNode::start("");
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", node.http);
        async move { http.get(url).send().await.expect("GET").status().as_u16() }
    };
    // A 200 and two 404s of one route, and paths no route has.
    assert_eq!(get("/api/v1/queues".into()).await, 200);
    assert_eq!(get("/api/v1/jobs/987654".into()).await, 404);
    assert_eq!(get("/api/v1/jobs/987655".into()).await, 404);
    for i in 0..3 {
        assert_eq!(get(format!("/no/such/path-{i}")).await, 404);
    }
    // gRPC: a call that works and one that finds nothing.
    let mut p = drover::client::Producer::connect(&node.grpc).await.unwrap();
    p.ping().await.unwrap();
    assert!(p.get(987654).await.is_err());

    let page = wait_for(
        "the requests counted on /metrics",
        Duration::from_secs(10),
        || async {
            let page = metrics_text(&node).await;
            let counted = sample(
                &page,
                r#"drover_grpc_requests_total{method="/drover.v1.ProducerService/GetJob",code="NotFound"}"#,
            );
            if counted == Some(1.0) {
                Ok(page)
            } else {
                Err(format!("GetJob NotFound counted {counted:?}"))
            }
        },
    )
    .await;
    let count = |series: &str| sample(&page, series);
    assert_eq!(
        count(r#"drover_http_requests_total{route="/api/v1/queues",code="200"}"#),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        count(r#"drover_http_requests_total{route="/api/v1/jobs/{id}",code="404"}"#),
        Some(2.0)
    );
    assert_eq!(
        count(r#"drover_http_requests_total{route="unmatched",code="404"}"#),
        Some(3.0)
    );
    assert!(!page.contains("path-1"), "a raw path became a label");
    assert_eq!(
        count(r#"drover_grpc_requests_total{method="/drover.v1.ProducerService/Ping",code="OK"}"#),
        Some(1.0)
    );
    assert!(page.contains(r#"drover_http_request_duration_seconds_count{route="/api/v1/queues"}"#));
    assert!(page.contains(
        r#"drover_grpc_request_duration_seconds_count{method="/drover.v1.ProducerService/Ping"}"#
    ));
}
