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
