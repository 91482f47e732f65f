//! Enqueue and read jobs over gRPC and HTTP against a real node; bad input is
//! refused with the right code and a message naming what was wrong.

mod common;

use common::*;
use drover::api::types::{DigestBody, EnqueuedBody, JobBody, JobStateBody, RoleBody, StatsBody};
use drover::client::{ClientError, Producer};
use drover::proto::v1 as pb;
use serde_json::json;

fn code(e: ClientError) -> (tonic::Code, String) {
    match e {
        ClientError::Status(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a status, got {other}"),
    }
}

#[tokio::test]
async fn enqueue_and_get_over_grpc_and_http() {
    let node = TestNode::start("");
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    let mut job = new_job("emails", "hello");
    job.priority = 2;
    job.labels.insert("customer".into(), "acme".into());
    let ids = p
        .enqueue(vec![job.clone(), new_job("emails", "second")])
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids[0].id < ids[1].id, "ids sort by enqueue order");

    let got = p.get(ids[0].id).await.unwrap();
    assert_eq!(got.state, "ready");
    assert_eq!(got.payload, bytes::Bytes::from_static(b"hello"));
    assert_eq!(got.priority, 2);
    assert_eq!(got.labels["customer"], "acme");

    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/api/v1/queues/emails/jobs", node.http))
        .json(&json!({"payload": "over http", "priority": 1, "type": "welcome", "delay": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: EnqueuedBody = resp.json().await.unwrap();
    let id = body.id;
    let (status, j) = get_json(&format!("{}/api/v1/jobs/{id}", node.http)).await;
    assert_eq!(status, 200);
    let j: JobBody = serde_json::from_value(j).unwrap();
    assert_eq!(j.state, JobStateBody::Scheduled);
    assert_eq!(j.payload.as_deref(), Some("over http"));
    assert_eq!(j.job_type, "welcome");

    let (status, stats) = get_json(&format!("{}/api/v1/stats", node.http)).await;
    assert_eq!(status, 200);
    let stats: StatsBody = serde_json::from_value(stats).unwrap();
    let emails = stats.queues.get("emails");
    assert_eq!(emails.map(|q| q.ready), Some([0, 1, 1, 0, 0]));
    assert_eq!(emails.map(|q| q.scheduled), Some(1));
    assert_eq!(stats.node.role, RoleBody::Leader);

    // Idempotency: the same key names the same job.
    let mut keyed = new_job("emails", "once");
    keyed.idempotency_key = "order-17".into();
    let first = p.enqueue(vec![keyed.clone()]).await.unwrap();
    let again = p.enqueue(vec![keyed]).await.unwrap();
    assert_eq!(first[0].id, again[0].id);
    assert!(again[0].duplicate);

    // Cancel over gRPC; a second cancel is refused.
    assert_eq!(p.cancel(ids[1].id).await.unwrap(), "ready");
    let (c, msg) = code(p.cancel(ids[1].id).await.unwrap_err());
    assert_eq!(c, tonic::Code::FailedPrecondition, "{msg}");
}

#[tokio::test]
async fn an_enqueue_stream_answers_each_request_in_order_and_survives_a_refusal() {
    let node = TestNode::start("[limits]\nmax_payload_bytes = 1024\n");
    let p = Producer::connect(&node.grpc).await.unwrap();
    let mut stream = p.enqueue_stream().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        let got = stream
            .enqueue(vec![new_job("streamed", &format!("job {i}"))])
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        ids.push(got[0].id);
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids in send order: {ids:?}"
    );

    // A refused request is answered with its error; the stream goes on.
    let (c, msg) = code(
        stream
            .enqueue(vec![new_job("streamed", &"x".repeat(2000))])
            .await
            .unwrap_err(),
    );
    assert_eq!(c, tonic::Code::InvalidArgument, "{msg}");
    assert!(msg.contains("payload"), "{msg}");
    let (c, _) = code(stream.enqueue(vec![]).await.unwrap_err());
    assert_eq!(c, tonic::Code::InvalidArgument);

    // An enqueue dropped after sending leaves its reply unread; the next
    // call skips it. One poll sends the request and then waits for the reply.
    use futures::FutureExt;
    assert!(stream
        .enqueue(vec![new_job("streamed", "dropped")])
        .now_or_never()
        .is_none());
    let last = stream
        .enqueue(vec![new_job("streamed", "last")])
        .await
        .unwrap();
    let mut unary = Producer::connect(&node.grpc).await.unwrap();
    let job = unary.get(last[0].id).await.unwrap();
    assert_eq!(job.payload, bytes::Bytes::from_static(b"last"));
    for (i, id) in ids.iter().enumerate() {
        let job = unary.get(*id).await.unwrap();
        assert_eq!(job.payload, bytes::Bytes::from(format!("job {i}")));
    }
}

#[tokio::test]
async fn a_stopping_node_ends_enqueue_streams_with_a_retryable_status() {
    let node = TestNode::start("");
    let p = Producer::connect(&node.grpc).await.unwrap();
    let mut stream = p.enqueue_stream().await.unwrap();
    stream
        .enqueue(vec![new_job("streamed", "before")])
        .await
        .unwrap();
    signal(node.pid(), libc::SIGTERM);
    // Requests the node still read are answered; the first one it did not
    // read fails in a way that says it may be sent elsewhere.
    let mut refused = None;
    for _ in 0..100 {
        match stream.enqueue(vec![new_job("streamed", "during")]).await {
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    match refused.expect("the stopping node ended the stream") {
        ClientError::Status(s) => {
            assert!(drover::client::retryable(&s), "{s:?}");
            assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
        }
        other => panic!("expected a status, got {other}"),
    }
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_problem() {
    let node = TestNode::start("[limits]\nmax_payload_bytes = 1024\n");
    let mut p = Producer::connect(&node.grpc).await.unwrap();

    let cases: Vec<(pb::NewJob, &str)> = vec![
        (new_job("bad queue!", "x"), "queue"),
        (new_job("", "x"), "queue"),
        (new_job(&"q".repeat(129), "x"), "queue"),
        (
            pb::NewJob {
                priority: 9,
                ..new_job("q", "x")
            },
            "priority",
        ),
        (new_job("q", &"x".repeat(1025)), "payload"),
        (
            pb::NewJob {
                tenant: "a/b".into(),
                ..new_job("q", "x")
            },
            "tenant",
        ),
    ];
    for (job, field) in cases {
        let (c, msg) = code(p.enqueue(vec![job]).await.unwrap_err());
        assert_eq!(c, tonic::Code::InvalidArgument, "{msg}");
        assert!(msg.contains(field), "message {msg:?} should name {field}");
    }
    let (c, msg) = code(p.enqueue(vec![]).await.unwrap_err());
    assert_eq!(c, tonic::Code::InvalidArgument, "{msg}");
    // A bad job in a batch names its position, and nothing of the batch is kept.
    let (c, msg) = code(
        p.enqueue(vec![new_job("q", "ok"), new_job("no spaces", "x")])
            .await
            .unwrap_err(),
    );
    assert_eq!(c, tonic::Code::InvalidArgument);
    assert!(msg.contains("job 1"), "{msg}");
    let (c, _) = code(p.get(999_999).await.unwrap_err());
    assert_eq!(c, tonic::Code::NotFound);

    let client = reqwest::Client::new();
    let post = |path: &str, body: &'static str| {
        post_raw_json(&client, format!("{}{path}", node.http), body)
    };
    for (path, body, needle) in [
        ("/api/v1/queues/q/jobs", "{not json", "body"),
        (
            "/api/v1/queues/q/jobs",
            r#"{"payload": "x", "colour": "red"}"#,
            "colour",
        ),
        ("/api/v1/queues/q/jobs", r#"{"priority": 0.5}"#, "priority"),
        ("/api/v1/queues/q/jobs", r#"{"priority": 7}"#, "priority"),
        ("/api/v1/queues/bad%20name/jobs", r#"{}"#, "queue"),
        ("/api/v1/queues/q/jobs", r#"{"delay": "soon"}"#, "delay"),
        (
            "/api/v1/queues/q/jobs",
            r#"{"payload_base64": "***"}"#,
            "payload_base64",
        ),
    ] {
        let resp = post(path, body).await.unwrap();
        assert_eq!(resp.status(), 400, "{path} {body}");
        let j: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(j["error"]["code"], "invalid_argument", "{j}");
        let err = j["error"]["message"].as_str().unwrap_or_default();
        assert!(err.contains(needle), "error {err:?} should name {needle}");
    }
    let big = format!(r#"{{"payload": "{}"}}"#, "x".repeat(2000));
    let resp = client
        .post(format!("{}/api/v1/queues/q/jobs", node.http))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (status, _) = get_json(&format!("{}/api/v1/jobs/abc", node.http)).await;
    assert_eq!(status, 400);
    let (status, _) = get_json(&format!("{}/api/v1/jobs/424242", node.http)).await;
    assert_eq!(status, 404);
    let (status, _) = get_json(&format!("{}/api/v1/nope", node.http)).await;
    assert_eq!(status, 404);

    // Nothing invalid was stored.
    let stats: StatsBody = node.body("/api/v1/stats").await;
    assert_eq!(stats.totals.enqueued, 0, "{stats:?}");
}

#[tokio::test]
async fn probes_and_metrics_answer_without_a_token() {
    let node = TestNode::start("");
    let (status, _) = get_json(&format!("{}/health", node.http)).await;
    assert_eq!(status, 200);
    wait_for(
        "the node to be ready",
        std::time::Duration::from_secs(10),
        || async {
            let (s, body) = get_json(&format!("{}/ready", node.http)).await;
            if s == 200 {
                Ok(())
            } else {
                Err(body.to_string())
            }
        },
    )
    .await;
    let mut p = Producer::connect(&node.grpc).await.unwrap();
    p.enqueue(vec![new_job("metered", "x")]).await.unwrap();
    let text = metrics_text(&node).await;
    for needle in [
        "drover_pending_jobs{queue=\"metered\",priority=\"3\"} 1",
        "drover_jobs_enqueued_total{queue=\"metered\",job_type=\"default\"} 1",
        "drover_jobs_dispatched_total{queue=\"metered\",job_type=\"default\"} 0",
        "drover_jobs_completed_total{queue=\"metered\",job_type=\"default\"} 0",
        "drover_jobs_requeued_total",
        "drover_queue_workers{queue=\"metered\"} 0",
        "drover_active_workers 0",
        "drover_raft_term",
        "drover_raft_commit_index",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle:?}:\n{text}");
    }
}

#[test]
fn bad_config_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = |config: &str| {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{config:?} should not start");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(run("node_idd = 2").contains("node_idd"));
    assert!(run("[jobs]\nheartbeat_timeout = 5").contains("heartbeat_timeout"));
    assert!(run("node_id = 0").contains("node_id"));
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = run(&format!(
        "data_dir = {:?}\ngrpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"",
        file.join("sub")
    ));
    assert!(err.contains("data_dir"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["serve", "--config", "/nonexistent/drover.toml"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/drover.toml"));
}

/// Every write endpoint that takes a JSON body, as the OpenAPI document
/// (generated from the handlers) lists them, refuses malformed JSON, a
/// wrong type in each field, an unknown field and an oversized body with
/// 400 naming the field, and changes nothing.
#[tokio::test]
async fn bad_bodies_on_every_write_endpoint_are_refused_naming_the_field() {
    use utoipa::OpenApi;
    let node = TestNode::start("[limits]\nmax_payload_bytes = 1024\n");
    let doc = serde_json::to_value(drover::api::http::openapi::ApiDoc::openapi()).unwrap();
    let digest = || async { node.body::<DigestBody>("/api/v1/debug/digest").await.digest };
    let before = digest().await;
    let http = reqwest::Client::new();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(schema) =
                op["requestBody"]["content"]["application/json"]["schema"].as_object()
            else {
                continue;
            };
            let name = schema["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
            let props = doc["components"]["schemas"][name]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>();
            let url = format!("{}{}", node.http, path.replace("{queue}", "q"));
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let mut cases: Vec<(String, String)> = vec![
                ("{not json".into(), String::new()),
                (r#"{"no_such_field": 1}"#.into(), "no_such_field".into()),
                // Just over the limit (the payload limit as base64 plus 64 KiB).
                (
                    format!(r#"{{"x": "{}"}}"#, "y".repeat(80 << 10)),
                    "body".into(),
                ),
            ];
            for p in &props {
                // An object with a number inside is the wrong type for
                // every field (labels' values are strings).
                cases.push((format!(r#"{{"{p}": {{"k": 1}}}}"#), p.clone()));
            }
            for (body, field) in cases {
                let resp = http
                    .request(method.clone(), &url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                let j: serde_json::Value = resp.json().await.unwrap();
                let shown = &body[..body.len().min(60)];
                assert_eq!(status, 400, "{method} {path} {shown}: {j}");
                assert_eq!(j["error"]["code"], "invalid_argument", "{j}");
                if !field.is_empty() {
                    let named = j["error"]["details"]["field"].as_str().unwrap_or("");
                    assert!(
                        named.starts_with(&field),
                        "{method} {path} {shown}: details.field {named:?} should name {field}: {j}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "{checked} cases");
    assert_eq!(digest().await, before, "refused requests changed the state");
}

/// `drover policies show` prints the replicated policies as TOML a config
/// file can hold as it is.
#[tokio::test]
async fn policies_show_prints_the_policies_as_loadable_toml() {
    let config = "[limits]\nmax_pending = 1000\n[jobs]\nmax_retries = 7\n[queues.\"*\"]\nmax_depth = 50\nshed = { 5 = 0.5 }\n[queues.emails]\nconcurrency_limit = 4\nheartbeat_timeout = \"2m\"\n[tenants.acme]\nweight = 4\n";
    let node = TestNode::start(config);
    let show = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["policies", "show", "--server", &node.grpc])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The leader proposes its config's policies once it leads.
    let text = wait_for(
        "the config's policies in the log",
        std::time::Duration::from_secs(10),
        || async {
            let text = show();
            if text.contains("max_retries = 7") {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await;
    let shown = drover::Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    shown.validate().unwrap();
    let ours = drover::Config::from_toml(config).unwrap();
    assert_eq!(shown.policies(), ours.policies(), "{text}");
}
