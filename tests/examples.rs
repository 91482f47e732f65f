//! The examples in examples/ run as their headers say, against a real node:
//! the Rust worker (built by `cargo test` as target/debug/examples/worker)
//! and the shell worker under `drover worker --exec`. The Python one is
//! run by the Python client's tests (.ci/python.sh).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use drover::api::types::{JobBody, JobStateBody};

fn example_binary(name: &str) -> PathBuf {
    // target/debug/deps/examples-HASH -> target/debug/examples/NAME
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

async fn result_of(node: &TestNode, id: u64) -> JobBody {
    wait_for(
        &format!("job {id} to finish"),
        Duration::from_secs(30),
        || async {
            let v = try_job(node, id).await?;
            match v.state {
                JobStateBody::Succeeded | JobStateBody::Dead => Ok(v),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

fn enqueue(node: &TestNode, queue: &str, payload: &str) -> u64 {
    enqueued_id(
        &["enqueue", "--queue", queue, "--payload", payload, "--json"],
        &node.grpc,
    )
}

#[tokio::test]
async fn the_rust_worker_example_reverses_payloads_and_stops_on_sigterm() {
    let node = TestNode::start("[retry.\"*\"]\nmax_retries = 0\n");
    let ok = enqueue(&node, "reverse", "hello");
    let mut worker = Command::new(example_binary("worker"))
        .arg(&node.grpc)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run target/debug/examples/worker (built by cargo test)");
    let v = result_of(&node, ok).await;
    assert_eq!(v.state, JobStateBody::Succeeded, "{v:?}");
    let result = v.result.as_deref().unwrap_or_default();
    assert!(result.contains("olleh"), "{v:?}");
    signal(worker.id(), libc::SIGTERM);
    let status = wait_child(&mut worker, Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn the_shell_worker_example_uppercases_and_fails_with_its_class() {
    let node = TestNode::start("[retry.\"*\"]\nmax_retries = 0\n");
    let ok = enqueue(&node, "upper", "hello");
    let empty = enqueued_id(&["enqueue", "--queue", "upper", "--json"], &node.grpc);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shell_worker.sh");
    let _worker = exec_worker(&node.grpc, "upper", "sh", script.to_str().unwrap());
    let v = result_of(&node, ok).await;
    assert_eq!(v.state, JobStateBody::Succeeded, "{v:?}");
    // Anywhere in the job as the API writes it.
    let text = serde_json::to_string(&v).unwrap();
    assert!(text.contains("HELLO"), "{text}");
    assert!(v.cost_usd > 0.0, "{v:?}");
    let v = result_of(&node, empty).await;
    assert_eq!(v.state, JobStateBody::Dead, "{v:?}");
    assert_eq!(v.last_error_class, "empty", "{v:?}");
}
