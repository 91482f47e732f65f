//! Our own fuzzing: every gRPC method and HTTP route of a real node driven
//! with generated bad input (mutated protobuf, random bytes, frames broken
//! or missing on the streams, JSON of the wrong shape), asserting that the
//! node never panics, never answers 5xx (or INTERNAL / UNKNOWN on gRPC),
//! that every call and stream ends within a bound, and that a refused call
//! leaves the state digest as it was.
//!
//! The seed is printed; `DROVER_FUZZ_SEED=N` replays a run and
//! `DROVER_FUZZ_CASES=N` (default 300) makes it longer:
//! `DROVER_FUZZ_CASES=20000 cargo test --release --test fuzz -- --nocapture`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::raw_grpc::{self, frame};
use common::*;
use drover::proto::v1 as pb;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use prost::Message;
use serde_json::{json, Value};

/// How long one call may take before the node counts as hung.
const CALL_LIMIT: Duration = Duration::from_secs(15);
/// Replies read from one stream at most: a stream answering more than its
/// requests could ask for is answering forever.
const MAX_REPLIES: usize = 64;

#[derive(Debug, Clone)]
enum Body {
    None,
    Json(Value),
    Raw(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Chunk {
    Framed(Vec<u8>),
    Unframed(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Call {
    Http {
        method: &'static str,
        path: String,
        body: Body,
    },
    Grpc {
        path: &'static str,
        chunks: Vec<Chunk>,
    },
}

/// A path segment: sometimes plausible, often not (percent-encoded junk).
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        "[0-9]{1,22}",
        Just("-1".to_string()),
        Just("0".to_string()),
        "[ -~]{0,12}".prop_map(|s| {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        }),
    ]
}

/// Any JSON value, nested a little.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[ -~]{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "payload",
            "payload_base64",
            "priority",
            "delay",
            "delay_ms",
            "type",
            "tenant",
            "run_id",
            "idempotency_key",
            "labels",
            "id",
            "addr",
        ])
        .prop_map(String::from),
        "[a-z_]{1,10}",
    ]
}

/// Delays that are refused, or too far out to fall due while the test runs
/// (a due job would change the state between two calls).
fn far_delay() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "18446744073709552s 616ms",
            "400days",
            "1h",
            "300days",
            "soon",
            "-5s",
            "",
            "99999999999999999999999ms",
        ])
        .prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        (31_536_000_001u64..u64::MAX).prop_map(Value::from),
        Just(Value::from(3_600_000u64)),
    ]
}

/// An enqueue body with the right field names and random values.
fn enqueue_body() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof!["[ -~]{0,32}".prop_map(Value::from), any_json()]),
        prop::option::of(prop_oneof![
            "[A-Za-z0-9+/=]{0,24}".prop_map(Value::from),
            any_json()
        ]),
        prop::option::of(prop_oneof![(0u32..8).prop_map(Value::from), any_json()]),
        prop::option::of(far_delay()),
        prop::option::of(prop_oneof!["[a-z]{0,8}".prop_map(Value::from), any_json()]),
        prop::option::of(any_json()),
    )
        .prop_map(|(payload, b64, priority, delay, tenant, labels)| {
            let mut m = serde_json::Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            };
            put("payload", payload);
            put("payload_base64", b64);
            put("priority", priority);
            let key = if delay.as_ref().is_some_and(Value::is_string) {
                "delay"
            } else {
                "delay_ms"
            };
            put(key, delay);
            put("tenant", tenant);
            put("labels", labels);
            Value::Object(m)
        })
}

/// A member address: malformed, out of range, or where nothing listens.
fn member_body() -> impl Strategy<Value = Value> {
    (
        prop_oneof![any::<u64>().prop_map(Value::from), any_json()],
        prop_oneof![
            prop::sample::select(vec![
                "127.0.0.1:99999",
                "http://[zz]:1",
                "-1:-1",
                "127.0.0.1:1",
                "127.0.0.1:0",
                "",
                "[::1]:70000",
            ])
            .prop_map(Value::from),
            "[ -~]{0,20}".prop_map(Value::from),
            any_json(),
        ],
    )
        .prop_map(|(id, addr)| json!({"id": id, "addr": addr}))
}

fn http_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        Just(Body::None),
        any_json().prop_map(Body::Json),
        enqueue_body().prop_map(Body::Json),
        member_body().prop_map(Body::Json),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Body::Raw),
    ]
}

fn http_call() -> impl Strategy<Value = Call> {
    let route = prop_oneof![
        segment().prop_map(|q| ("POST", format!("/api/v1/queues/{q}/jobs"))),
        segment().prop_map(|id| ("GET", format!("/api/v1/jobs/{id}"))),
        segment().prop_map(|id| ("POST", format!("/api/v1/jobs/{id}/cancel"))),
        Just(("GET", "/api/v1/cluster/members".to_string())),
        Just(("POST", "/api/v1/cluster/members".to_string())),
        segment().prop_map(|id| ("DELETE", format!("/api/v1/cluster/members/{id}"))),
        Just(("POST", "/api/v1/cluster/transfer-leader".to_string())),
        segment().prop_map(|v| ("GET", format!("/api/v1/stats?stale={v}"))),
        Just(("GET", "/api/v1/stats".to_string())),
        Just(("GET", "/api/v1/debug/digest".to_string())),
        Just(("GET", "/health".to_string())),
        Just(("GET", "/ready".to_string())),
        Just(("GET", "/metrics".to_string())),
        segment().prop_map(|p| ("PUT", format!("/api/v1/{p}"))),
    ];
    (route, http_body()).prop_map(|((method, path), body)| Call::Http { method, path, body })
}

/// A random job, often with values the node must refuse. Queue names are
/// plain lower-case letters, so no fuzzed worker (queues `w-*`) leases one.
fn new_job() -> impl Strategy<Value = pb::NewJob> {
    (
        prop_oneof!["[a-z]{1,8}", "[ -~]{0,10}", Just(String::new())],
        0u32..9,
        prop::collection::vec(any::<u8>(), 0..64),
        prop::sample::select(vec![0u64, u64::MAX, 1 << 50, 31_536_000_001, 3_600_000]),
        prop_oneof!["[a-z]{0,6}", "[ -~]{0,6}"],
    )
        .prop_map(|(queue, priority, payload, delay_ms, tenant)| pb::NewJob {
            queue,
            priority,
            payload: payload.into(),
            delay_ms,
            tenant,
            ..Default::default()
        })
}

/// Bytes of a message: valid, valid with bytes flipped or cut, or random.
fn mutated(valid: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        valid.clone(),
        (valid.clone(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut v, i, b)| {
            if !v.is_empty() {
                let i = i.index(v.len());
                v[i] ^= b | 1;
            }
            v
        }),
        (valid, any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let cut = if v.is_empty() { 0 } else { i.index(v.len()) };
            v[..cut].to_vec()
        }),
        prop::collection::vec(any::<u8>(), 0..48),
    ]
}

fn enqueue_request() -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(new_job(), 0..4)
        .prop_map(|jobs| pb::EnqueueRequest { jobs }.encode_to_vec())
        .boxed()
}

fn worker_message() -> BoxedStrategy<Vec<u8>> {
    use pb::worker_message::Msg;
    let id = prop_oneof![0u64..64, any::<u64>()];
    let msg = prop_oneof![
        (id.clone(), any::<u32>()).prop_map(|(job_id, attempt)| Msg::Heartbeat(pb::Heartbeat {
            leases: vec![pb::LeaseRef {
                job_id,
                attempt,
                progress: f32::NAN,
                progress_message: "x".repeat(300),
            }],
        })),
        (id.clone(), any::<u32>(), any::<f64>(), "[ -~]{0,70}").prop_map(
            |(job_id, attempt, cost_usd, name)| Msg::Complete(pb::Complete {
                completions: vec![pb::Completion {
                    job_id,
                    attempt,
                    result: Bytes::from_static(b"r"),
                    cost_usd,
                    usage: [(name, u64::MAX)].into_iter().collect(),
                }],
            })
        ),
        (id, any::<u32>(), "[ -~]{0,8}", any::<f64>()).prop_map(
            |(job_id, attempt, error_class, cost_usd)| {
                Msg::Fail(pb::Fail {
                    failures: vec![pb::Failure {
                        job_id,
                        attempt,
                        error_class,
                        message: String::new(),
                        cost_usd,
                        ..Default::default()
                    }],
                })
            }
        ),
        Just(Msg::Drain(pb::Drain {})),
        register(),
    ];
    prop_oneof![
        msg.prop_map(|m| pb::WorkerMessage { msg: Some(m) }.encode_to_vec()),
        Just(pb::WorkerMessage { msg: None }.encode_to_vec()),
    ]
    .boxed()
}

/// A Register, often invalid. Its queues start with `w-` (see `new_job`).
fn register() -> impl Strategy<Value = pb::worker_message::Msg> {
    (
        prop_oneof!["[a-z]{1,8}", Just(String::new()), "[ -~]{0,140}"],
        prop::collection::vec(prop_oneof!["w-[a-z]{1,6}", "[ -~]{0,8}"], 0..70),
        prop_oneof![0u32..4, any::<u32>()],
    )
        .prop_map(|(worker_id, queues, capacity)| {
            pb::worker_message::Msg::Register(pb::Register {
                worker_id,
                queues: queues
                    .into_iter()
                    .filter(|q| q.starts_with("w-") || q.contains(' '))
                    .collect(),
                capacity,
                ..Default::default()
            })
        })
}

fn chunks(message: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = Vec<Chunk>> {
    prop::collection::vec(
        prop_oneof![
            4 => mutated(message).prop_map(Chunk::Framed),
            1 => prop::collection::vec(any::<u8>(), 0..16).prop_map(Chunk::Unframed),
        ],
        0..5,
    )
}

fn grpc_call() -> impl Strategy<Value = Call> {
    let id = || prop_oneof![0u64..64, any::<u64>()];
    prop_oneof![
        mutated(enqueue_request())
            .prop_map(|b| grpc("/drover.v1.ProducerService/Enqueue", vec![Chunk::Framed(b)])),
        chunks(enqueue_request()).prop_map(|c| grpc("/drover.v1.ProducerService/EnqueueStream", c)),
        mutated(
            (id(), "[ -~]{0,300}", "[a-z .]{0,8}", "[a-z]{0,8}")
                .prop_map(|(id, key, queue, tenant)| pb::GetJobRequest {
                    id,
                    idempotency_key: key,
                    queue,
                    tenant,
                }
                .encode_to_vec())
                .boxed()
        )
        .prop_map(|b| grpc("/drover.v1.ProducerService/GetJob", vec![Chunk::Framed(b)])),
        mutated(
            id().prop_map(|id| pb::CancelRequest { id }.encode_to_vec())
                .boxed()
        )
        .prop_map(|b| grpc("/drover.v1.ProducerService/Cancel", vec![Chunk::Framed(b)])),
        prop::collection::vec(any::<u8>(), 0..16)
            .prop_map(|b| grpc("/drover.v1.ProducerService/Ping", vec![Chunk::Framed(b)])),
        (
            mutated(
                register()
                    .prop_map(|m| pb::WorkerMessage { msg: Some(m) }.encode_to_vec())
                    .boxed()
            ),
            chunks(worker_message())
        )
            .prop_map(|(first, mut rest)| {
                rest.insert(0, Chunk::Framed(first));
                grpc("/drover.v1.WorkerService/Work", rest)
            }),
        chunks(worker_message()).prop_map(|c| grpc("/drover.v1.WorkerService/Work", c)),
        chunks(prop::collection::vec(any::<u8>(), 0..32).boxed())
            .prop_map(|c| grpc("/drover.v1.PeerService/Forward", c)),
        chunks(prop::collection::vec(any::<u8>(), 0..32).boxed())
            .prop_map(|c| grpc("/drover.v1.PeerService/Raft", c)),
        chunks(prop::collection::vec(any::<u8>(), 0..32).boxed())
            .prop_map(|c| grpc("/drover.v1.NoSuch/Method", c)),
    ]
}

fn grpc(path: &'static str, chunks: Vec<Chunk>) -> Call {
    Call::Grpc { path, chunks }
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![http_call(), grpc_call()]
}

/// What a call did, as far as the checks care.
struct Answer {
    /// The node took the request (2xx, gRPC OK, or an OK reply on a stream):
    /// the state may have changed.
    accepted: bool,
    /// What is wrong with the answer, if anything.
    problem: Option<String>,
}

async fn perform(node: &TestNode, http: &reqwest::Client, call: &Call) -> Answer {
    match call {
        Call::Http { method, path, body } => {
            let url = format!("{}{path}", node.http);
            let mut req = http.request(method.parse().expect("method"), &url);
            req = match body {
                Body::None => req,
                Body::Json(v) => req.json(v),
                Body::Raw(b) => req
                    .header("content-type", "application/json")
                    .body(b.clone()),
            };
            match tokio::time::timeout(CALL_LIMIT, req.send()).await {
                Err(_) => Answer {
                    accepted: true,
                    problem: Some("no answer in time".into()),
                },
                Ok(Err(e)) => Answer {
                    accepted: true,
                    problem: Some(format!("request failed: {e}")),
                },
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    Answer {
                        accepted: status.is_success(),
                        problem: status
                            .is_server_error()
                            .then(|| format!("HTTP {status}: {text}")),
                    }
                }
            }
        }
        Call::Grpc { path, chunks } => {
            let raw = chunks
                .iter()
                .map(|c| match c {
                    Chunk::Framed(b) => frame(b),
                    Chunk::Unframed(b) => Bytes::from(b.clone()),
                })
                .collect();
            let reply = raw_grpc::call(&node.grpc, path, raw, CALL_LIMIT, MAX_REPLIES).await;
            let ok_reply = match *path {
                "/drover.v1.ProducerService/EnqueueStream" => reply.messages.iter().any(|m| {
                    matches!(
                        pb::EnqueueReply::decode(m.clone()),
                        Ok(pb::EnqueueReply {
                            result: Some(pb::enqueue_reply::Result::Ok(_))
                        })
                    )
                }),
                // Registered: the worker may have leased, though no job is in its queues.
                "/drover.v1.WorkerService/Work" => !reply.messages.is_empty(),
                _ => false,
            };
            let problem = if !reply.ended {
                Some(format!(
                    "the stream did not end within {CALL_LIMIT:?} ({} replies)",
                    reply.messages.len()
                ))
            } else if matches!(reply.grpc_status, Some(2 | 13 | 15)) {
                Some(format!(
                    "status {:?}: {}",
                    reply.grpc_status, reply.grpc_message
                ))
            } else if reply.grpc_status.is_none() && reply.http_status != 0 {
                Some(format!("no grpc-status (HTTP {})", reply.http_status))
            } else {
                None
            };
            Answer {
                accepted: reply.grpc_status == Some(0) || ok_reply,
                problem,
            }
        }
    }
}

async fn digest(node: &TestNode) -> String {
    node.body::<drover::api::types::DigestBody>("/api/v1/debug/digest")
        .await
        .digest
}

#[test]
fn fuzz_every_route_and_method() {
    let seed: u64 = std::env::var("DROVER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let cases: u32 = std::env::var("DROVER_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    println!("fuzz: seed {seed}, {cases} cases (replay with DROVER_FUZZ_SEED={seed})");
    let mut seed_bytes = [0u8; 32];
    for (i, b) in seed_bytes.iter_mut().enumerate() {
        *b = (seed >> ((i % 8) * 8)) as u8 ^ i as u8;
    }
    let mut runner = TestRunner::new_with_rng(
        Config::with_cases(cases),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = call();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let node = TestNode::start("");
    let http = reqwest::Client::new();
    rt.block_on(async {
        let mut before = digest(&node).await;
        for case in 0..cases {
            let call = strategy
                .new_tree(&mut runner)
                .expect("generate a case")
                .current();
            let answer = perform(&node, &http, &call).await;
            if let Some(problem) = answer.problem {
                panic!("seed {seed} case {case}: {problem}\ncall: {call:?}");
            }
            let after = digest(&node).await;
            if !answer.accepted {
                assert_eq!(
                    after, before,
                    "seed {seed} case {case}: a refused call changed the state\ncall: {call:?}"
                );
            }
            before = after;
        }
        let (status, _) = get_json(&format!("{}/health", node.http)).await;
        assert_eq!(status, 200, "the node is alive after the run");
        let mut p = drover::client::Producer::connect(&node.grpc).await.unwrap();
        p.enqueue(vec![common::new_job("after-fuzz", "x")])
            .await
            .unwrap();
    });
}
