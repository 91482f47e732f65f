//! Regression tests for the holes an outside fuzz run found: broken frames
//! on streams, a worker pushed past its capacity, durations that wrap, and
//! members that do not exist. Each sends what a careless or hostile client
//! would, over real sockets to a real node.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::raw_grpc::{self, frame};
use common::*;
use drover::api::types::{MembersBody, QueueBody, StatsBody};
use drover::proto::v1 as pb;
use prost::Message;
use serde_json::json;

const ENQUEUE_STREAM: &str = "/drover.v1.ProducerService/EnqueueStream";
const ENQUEUE: &str = "/drover.v1.ProducerService/Enqueue";
const WORK: &str = "/drover.v1.WorkerService/Work";
const LIMIT: Duration = Duration::from_secs(20);

fn enqueue_request(queue: &str) -> Vec<u8> {
    pb::EnqueueRequest {
        jobs: vec![new_job(queue, "x")],
    }
    .encode_to_vec()
}

/// The queue's counts as the node's stats show them (None: no such queue).
async fn queue_stats(node: &TestNode, queue: &str) -> Option<QueueBody> {
    let s: StatsBody = node.body("/api/v1/stats").await;
    s.queues.get(queue).cloned()
}

#[tokio::test]
async fn an_oversized_stream_frame_ends_the_stream_and_nothing_inside_it_runs() {
    let node = TestNode::start("");
    // A 65 MiB message (over the 64 MiB limit) whose body starts with a
    // well-formed frame of its own, for queue `smuggled`.
    let inner = frame(&enqueue_request("smuggled"));
    let mut body = inner.to_vec();
    body.resize(65 * 1024 * 1024, 0x01);
    let reply = raw_grpc::call(
        &node.grpc,
        ENQUEUE_STREAM,
        vec![frame(&enqueue_request("fine")), frame(&body)],
        LIMIT,
        100,
    )
    .await;
    assert!(reply.ended, "the stream must end: {reply:?}");
    assert!(reply.messages.len() <= 1, "{reply:?}");
    assert_eq!(
        reply.grpc_status,
        Some(tonic::Code::OutOfRange as i32),
        "{}",
        reply.grpc_message
    );
    let smuggled = queue_stats(&node, "smuggled").await;
    assert!(smuggled.is_none(), "{smuggled:?}");
    // The node still serves.
    let mut p = drover::client::Producer::connect(&node.grpc).await.unwrap();
    p.enqueue(vec![new_job("after", "x")]).await.unwrap();
}

#[tokio::test]
async fn a_stream_that_cannot_be_decoded_ends_instead_of_answering_forever() {
    let node = TestNode::start("");
    // Unframed junk between two good requests: the framing is lost.
    let unframed = raw_grpc::call(
        &node.grpc,
        ENQUEUE_STREAM,
        vec![
            frame(&enqueue_request("a")),
            Bytes::from_static(&[0x0a, 0x02, 0xff, 0xfe]),
            frame(&enqueue_request("a")),
        ],
        LIMIT,
        1000,
    )
    .await;
    assert!(unframed.ended, "{unframed:?}");
    assert!(
        unframed.messages.len() <= 2,
        "{} replies",
        unframed.messages.len()
    );
    assert_ne!(unframed.grpc_status, Some(0), "{unframed:?}");
    // A well-framed message that is not an EnqueueRequest.
    let framed = raw_grpc::call(
        &node.grpc,
        ENQUEUE_STREAM,
        vec![
            frame(&enqueue_request("b")),
            frame(&[0x0a, 0x02, 0xff, 0xfe]),
            frame(&enqueue_request("b")),
        ],
        LIMIT,
        1000,
    )
    .await;
    assert!(framed.ended, "{framed:?}");
    assert_eq!(
        framed.messages.len(),
        1,
        "only the first request is answered"
    );
    assert_eq!(
        framed.grpc_status,
        Some(tonic::Code::InvalidArgument as i32),
        "{}",
        framed.grpc_message
    );
    // The request after the broken one was never read.
    assert_eq!(
        queue_stats(&node, "b").await.map(|q| q.ready),
        Some([0, 0, 1, 0, 0])
    );
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument_on_calls_and_the_work_stream() {
    let node = TestNode::start("");
    let unary = raw_grpc::call(
        &node.grpc,
        ENQUEUE,
        vec![frame(&[0x0a, 0x02, 0xff, 0xfe])],
        LIMIT,
        10,
    )
    .await;
    assert_eq!(
        unary.grpc_status,
        Some(tonic::Code::InvalidArgument as i32),
        "{}",
        unary.grpc_message
    );
    let register = pb::WorkerMessage {
        msg: Some(pb::worker_message::Msg::Register(pb::Register {
            worker_id: "w".into(),
            queues: vec!["q".into()],
            capacity: 1,
            ..Default::default()
        })),
    }
    .encode_to_vec();
    let work = raw_grpc::call(
        &node.grpc,
        WORK,
        vec![frame(&register), frame(&[0x0a, 0x02, 0xff, 0xfe])],
        LIMIT,
        10,
    )
    .await;
    assert!(work.ended, "{work:?}");
    assert_eq!(work.messages.len(), 1, "Registered, then the error");
    assert_eq!(
        work.grpc_status,
        Some(tonic::Code::InvalidArgument as i32),
        "{}",
        work.grpc_message
    );
}

/// A worker stream driven by hand.
struct RawWorker {
    out: tokio::sync::mpsc::Sender<pb::WorkerMessage>,
    inbound: tonic::Streaming<pb::ServerMessage>,
}

impl RawWorker {
    async fn register(node: &TestNode, queues: Vec<String>, capacity: u32) -> RawWorker {
        let mut client = pb::worker_service_client::WorkerServiceClient::connect(node.grpc.clone())
            .await
            .unwrap();
        let (out, rx) = tokio::sync::mpsc::channel(16);
        out.send(msg(pb::worker_message::Msg::Register(pb::Register {
            worker_id: "raw".into(),
            queues,
            capacity,
            ..Default::default()
        })))
        .await
        .unwrap();
        let mut inbound = client
            .work(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        match inbound.message().await.unwrap() {
            Some(pb::ServerMessage {
                msg: Some(pb::server_message::Msg::Registered(_)),
            }) => {}
            other => panic!("expected Registered, got {other:?}"),
        }
        RawWorker { out, inbound }
    }

    async fn next(&mut self, within: Duration) -> Option<pb::server_message::Msg> {
        match tokio::time::timeout(within, self.inbound.message()).await {
            Ok(m) => m.unwrap().and_then(|m| m.msg),
            Err(_) => None,
        }
    }
}

fn msg(m: pb::worker_message::Msg) -> pb::WorkerMessage {
    pb::WorkerMessage { msg: Some(m) }
}

#[tokio::test]
async fn reports_for_another_attempt_do_not_free_a_workers_slot() {
    let node = TestNode::start("");
    let mut p = drover::client::Producer::connect(&node.grpc).await.unwrap();
    p.enqueue((0..3).map(|_| new_job("cap", "x")).collect())
        .await
        .unwrap();
    let mut w = RawWorker::register(&node, vec!["cap".into()], 1).await;
    let Some(pb::server_message::Msg::Leases(l)) = w.next(LIMIT).await else {
        panic!("expected a lease");
    };
    assert_eq!(l.jobs.len(), 1);
    let (job_id, attempt) = (l.jobs[0].job_id, l.jobs[0].attempt);
    let forged = attempt + 1;
    let reports = [
        pb::worker_message::Msg::Heartbeat(pb::Heartbeat {
            leases: vec![pb::LeaseRef {
                job_id,
                attempt: forged,
                ..Default::default()
            }],
        }),
        pb::worker_message::Msg::Complete(pb::Complete {
            completions: vec![pb::Completion {
                job_id,
                attempt: forged,
                result: Bytes::new(),
                ..Default::default()
            }],
        }),
        pb::worker_message::Msg::Fail(pb::Fail {
            failures: vec![pb::Failure {
                job_id,
                attempt: forged,
                error_class: "x".into(),
                message: String::new(),
                ..Default::default()
            }],
        }),
    ];
    for report in reports {
        w.out.send(msg(report)).await.unwrap();
        match w.next(LIMIT).await {
            Some(pb::server_message::Msg::Acks(a)) => {
                assert_eq!(a.acks.len(), 1);
                assert!(!a.acks[0].ok, "a report for attempt {forged} is stale");
                assert!(!a.acks[0].transient, "a stale lease is a final refusal");
            }
            other => panic!("expected the refusal, got {other:?}"),
        }
        // The node still counts the lease as held: no slot to fill. (Had the
        // report freed one, the session would have asked for a lease before
        // answering it, and a write made after the answer would find that
        // lease in the log.)
        let listed = workers_body(&node).await;
        assert_eq!(listed.workers.len(), 1, "{listed:?}");
        assert_eq!(listed.workers[0].in_flight, 1, "{listed:?}");
        p.enqueue(vec![new_job("after-report", "x")]).await.unwrap();
        assert_eq!(queue_stats(&node, "cap").await.map(|q| q.leased), Some(1));
        // A second lease would come at once; a second of quiet shows none comes.
        if let Some(m) = w.next(Duration::from_secs(1)).await {
            panic!("a worker of capacity 1 holding a lease was sent {m:?}");
        }
    }
    assert_eq!(queue_stats(&node, "cap").await.map(|q| q.leased), Some(1));
    // The real report frees the slot: the next job is leased.
    w.out
        .send(msg(pb::worker_message::Msg::Complete(pb::Complete {
            completions: vec![pb::Completion {
                job_id,
                attempt,
                result: Bytes::new(),
                // Nonsense usage is left out; the result still counts.
                cost_usd: f64::NAN,
                usage: [("not a name!".to_string(), 1)].into_iter().collect(),
            }],
        })))
        .await
        .unwrap();
    let mut leased_again = false;
    for _ in 0..4 {
        if let Some(pb::server_message::Msg::Leases(_)) = w.next(LIMIT).await {
            leased_again = true;
            break;
        }
    }
    assert!(leased_again, "the completed job's slot was not freed");
}

#[tokio::test]
async fn a_queue_named_many_times_counts_once() {
    let node = TestNode::start("");
    let mut p = drover::client::Producer::connect(&node.grpc).await.unwrap();
    p.enqueue((0..5).map(|_| new_job("same", "x")).collect())
        .await
        .unwrap();
    // Named 100 times (past the 64 queues a worker may name, counted
    // apart), with room for 2: one queue, one worker, two leases.
    let mut w = RawWorker::register(&node, vec!["same".to_string(); 100], 2).await;
    let mut leased = 0;
    while leased < 2 {
        match w.next(LIMIT).await {
            Some(pb::server_message::Msg::Leases(l)) => leased += l.jobs.len(),
            other => panic!("expected leases, got {other:?}"),
        }
    }
    assert_eq!(leased, 2, "a worker of capacity 2 was sent {leased} leases");
    let listed = workers_body(&node).await;
    assert_eq!(listed.workers.len(), 1, "{listed:?}");
    assert_eq!(listed.workers[0].queues, ["same"], "{listed:?}");
    assert_eq!(listed.workers[0].capacity, 2, "{listed:?}");
    assert_eq!(listed.workers[0].in_flight, 2, "{listed:?}");
    // Counted once in the queue's worker gauges, not once per mention.
    let page = metrics_text(&node).await;
    for (series, want) in [
        ("drover_queue_workers{queue=\"same\"}", 1.0),
        ("drover_queue_worker_capacity{queue=\"same\"}", 2.0),
        ("drover_queue_worker_held{queue=\"same\"}", 2.0),
    ] {
        assert_eq!(metric_value(&page, series), Some(want), "{series}: {page}");
    }
    // The machine agrees: two leased, three waiting.
    let stats = queue_stats(&node, "same").await;
    assert_eq!(stats.as_ref().map(|q| q.leased), Some(2), "{stats:?}");
    assert_eq!(
        stats.as_ref().map(|q| q.ready),
        Some([0, 0, 3, 0, 0]),
        "{stats:?}"
    );
}

#[tokio::test]
async fn delays_that_overflow_or_are_too_long_are_refused() {
    let node = TestNode::start("");
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/queues/q/jobs", node.http);
    for delay in [
        json!({"payload": "x", "delay": "18446744073709552s 616ms"}),
        json!({"payload": "x", "delay": "400days"}),
        json!({"payload": "x", "delay_ms": u64::MAX}),
    ] {
        let resp = client.post(&url).json(&delay).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{delay}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(
            body["error"]["message"].as_str().unwrap().contains("delay"),
            "the error names the field: {body}"
        );
    }
    let ok = client
        .post(&url)
        .json(&json!({"payload": "x", "delay": "300days"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    let mut p = drover::client::Producer::connect(&node.grpc).await.unwrap();
    let mut job = new_job("q", "x");
    job.delay_ms = u64::MAX;
    match p.enqueue(vec![job]).await {
        Err(drover::client::ClientError::Status(s)) => {
            assert_eq!(s.code(), tonic::Code::InvalidArgument);
            assert!(s.message().contains("delay_ms"), "{}", s.message());
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    assert_eq!(queue_stats(&node, "q").await.map(|q| q.scheduled), Some(1));
}

#[tokio::test]
async fn adding_a_member_that_does_not_exist_is_refused_and_the_cluster_stays_up() {
    let node = TestNode::start("");
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/cluster/members", node.http);
    for addr in [
        "127.0.0.1:99999",
        "http://[zz]:1",
        "-1:-1",
        "nohost",
        "127.0.0.1:0",
    ] {
        let resp = client
            .post(&url)
            .json(&json!({"id": 784, "addr": addr}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{addr}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(
            body["error"]["message"].as_str().unwrap().contains("addr"),
            "{body}"
        );
    }
    // A well-formed address where nothing listens.
    let nobody = format!("127.0.0.1:{}", free_port());
    let resp = client
        .post(&url)
        .json(&json!({"id": 784, "addr": nobody}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{body}"
    );
    let members: MembersBody = node.body("/api/v1/cluster/members").await;
    assert_eq!(members.members.len(), 1, "{members:?}");
    let mut p = drover::client::Producer::connect(&node.grpc).await.unwrap();
    p.enqueue(vec![new_job("q", "still up")]).await.unwrap();
}

#[tokio::test]
async fn a_grpc_call_to_a_path_no_service_serves_is_unimplemented() {
    let node = TestNode::start("");
    // `/` and `/api/v1/queues` are admin routes of other methods; the
    // others no route at all.
    for path in [
        "/",
        "/api/v1/queues",
        "/drover.v1.WorkerService/Nope",
        "/nope.v1.Service/Call",
    ] {
        let r = raw_grpc::call(&node.grpc, path, vec![frame(&[])], LIMIT, 1).await;
        assert_eq!(
            r.grpc_status,
            Some(tonic::Code::Unimplemented as i32),
            "{path}: {r:?}"
        );
        assert_eq!(r.http_status, 200, "{path}: a gRPC answer");
    }
    // Plain HTTP is still told 405 on a known path with another method.
    let resp = reqwest::Client::new()
        .delete(format!("{}/api/v1/stats", node.http))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_refused_and_enqueues_nothing() {
    let node = TestNode::start("");
    let client = reqwest::Client::new();
    let post = |path: &str, body: &'static str| {
        post_raw_json(&client, format!("{}{path}", node.http), body)
    };
    for (body, what) in [
        ("[]", "an array"),
        (r#"["x"]"#, "an array"),
        (r#""x""#, "a string"),
        ("7", "a number"),
        ("null", "null"),
        ("  ", "an empty body"),
    ] {
        let resp = post("/api/v1/queues/q/jobs", body).await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        let e: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_argument", "{body}: {e}");
        assert_eq!(e["error"]["details"]["field"], "body", "{body}: {e}");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("must be a JSON object") && message.contains(what),
            "{body}: {e}"
        );
    }
    // Every endpoint with a body, not only enqueue.
    let resp = post("/api/v1/cluster/transfer-leader", "[1]")
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = post("/api/v1/dead/replay", "[]").await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // Without a JSON content type the body is refused too, saying why.
    let resp = client
        .post(format!("{}/api/v1/queues/q/jobs", node.http))
        .body(r#"{"payload": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("Content-Type: application/json"));
    // An object still enqueues; nothing else did.
    let resp = post("/api/v1/queues/q/jobs", r#"{"payload": "x"}"#)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        queue_stats(&node, "q").await.map(|q| q.ready),
        Some([0, 0, 1, 0, 0]),
        "ready jobs by priority: the one object's job, at the default 3"
    );
}
