//! W3C trace context on a real node: a `traceparent` given as a job's
//! field, as gRPC metadata or as an HTTP header is kept with the job and
//! handed to its worker with the lease (`drover worker --exec` passes it
//! on as `TRACEPARENT`); a bad field is refused, a bad header ignored.

mod common;

use std::time::Duration;

use common::*;
use drover::client::Producer;
use drover::proto::v1 as pb;
use prost::Message;

const FIELD: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const METADATA: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const HEADER: &str = "00-11111111111111111111111111111111-2222222222222222-00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_context_goes_from_producer_to_worker() {
    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let job = |payload: &str, traceparent: &str| pb::NewJob {
        traceparent: traceparent.into(),
        ..new_job("traced", payload)
    };
    // Its own field wins over the request's metadata.
    let request = pb::EnqueueRequest {
        jobs: vec![job("field", FIELD), job("metadata", "")],
    };
    let reply = common::raw_grpc::call_with_headers(
        server,
        "/drover.v1.ProducerService/Enqueue",
        &[("traceparent", METADATA)],
        vec![common::raw_grpc::frame(&request.encode_to_vec())],
        Duration::from_secs(10),
        1,
    )
    .await;
    assert_eq!(reply.messages.len(), 1, "{reply:?}");
    let ids: Vec<u64> = pb::EnqueueResponse::decode(reply.messages[0].clone())
        .unwrap()
        .jobs
        .iter()
        .map(|j| j.id)
        .collect();
    // Over HTTP: the header; one that is not W3C's is ignored.
    let http = reqwest::Client::new();
    let enqueue_http = |traceparent: &'static str| {
        http.post(format!("{}/api/v1/queues/traced/jobs", node.http))
            .header("traceparent", traceparent)
            .json(&serde_json::json!({"payload": "header"}))
            .send()
    };
    let by_header: serde_json::Value = enqueue_http(HEADER).await.unwrap().json().await.unwrap();
    let ignored: serde_json::Value = enqueue_http("01-not-a-trace")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_header = by_header["id"].as_u64().unwrap();
    let ignored = ignored["id"].as_u64().unwrap();

    // Kept with the job, for anyone who reads it.
    let node = &node;
    let kept = |id: u64| async move {
        job_json(node, id).await["labels"]["drover.traceparent"]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(kept(ids[0]).await.as_deref(), Some(FIELD));
    assert_eq!(kept(ids[1]).await.as_deref(), Some(METADATA));
    assert_eq!(kept(by_header).await.as_deref(), Some(HEADER));
    assert_eq!(kept(ignored).await, None);

    // Handed to the worker: an exec worker's job sees it as TRACEPARENT.
    let _worker = exec_worker(server, "traced", "tracer", "printf '%s' \"$TRACEPARENT\"");
    for (id, want) in [
        (ids[0], FIELD),
        (ids[1], METADATA),
        (by_header, HEADER),
        (ignored, ""),
    ] {
        let done = wait_state(node, id, "succeeded").await;
        assert_eq!(done.result.as_deref().unwrap_or(""), want, "job {id}");
    }

    // A bad field is refused, naming it and the form it takes.
    let mut producer = Producer::connect(server).await.unwrap();
    let err = producer
        .enqueue(vec![job("bad", "00-xyz-123-01")])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("traceparent") && err.contains("W3C"), "{err}");
    let out = drover(
        &[
            "enqueue",
            "--queue",
            "traced",
            "--traceparent",
            "00-00000000000000000000000000000000-2222222222222222-00",
        ],
        server,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("traceparent"));
}

/// The Rust worker runs a traced job's handler in a span of the program's
/// tracer provider, a child of the job's trace context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_workers_handler_span_is_a_child_of_the_jobs_context() {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let _ = provider.tracer("test");

    let node = TestNode::start("");
    let server = node.grpc.as_str();
    let mut producer = Producer::connect(server).await.unwrap();
    let traced = pb::NewJob {
        traceparent: FIELD.into(),
        ..new_job("rust-traced", "a")
    };
    let ids: Vec<u64> = producer
        .enqueue(vec![traced, new_job("rust-traced", "b")])
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let inside = seen.clone();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let opts = drover::client::worker::WorkerOptions::new(
        server,
        "rust-tracer",
        vec!["rust-traced".into()],
        2,
    );
    let worker = tokio::spawn(drover::client::worker::run(
        opts,
        move |job: drover::client::worker::Job| {
            let inside = inside.clone();
            async move {
                let cx = opentelemetry::Context::current();
                let span = cx.span();
                let trace_id = format!("{:032x}", span.span_context().trace_id());
                inside
                    .lock()
                    .unwrap()
                    .push((job.job_id, job.traceparent.clone(), trace_id));
                Ok(bytes::Bytes::new())
            }
        },
        stop,
    ));
    for &id in &ids {
        wait_state(&node, id, "succeeded").await;
    }
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
    let seen = seen.lock().unwrap().clone();
    let traced = seen.iter().find(|(id, _, _)| *id == ids[0]).unwrap();
    assert_eq!(traced.1, FIELD);
    assert_eq!(
        traced.2, "0af7651916cd43dd8448eb211c80319c",
        "the handler ran in the job's trace"
    );
    let plain = seen.iter().find(|(id, _, _)| *id == ids[1]).unwrap();
    assert_eq!(plain.1, "");
    assert_eq!(plain.2, format!("{:032x}", 0), "no context, no span");
    let spans = exporter.get_finished_spans().unwrap();
    let handler: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "drover job default")
        .collect();
    assert_eq!(handler.len(), 1, "{spans:?}");
    assert_eq!(
        format!("{:016x}", handler[0].parent_span_id),
        "b7ad6b7169203331"
    );
}
