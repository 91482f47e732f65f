//! A Rust worker: reverses each payload of queue "reverse".
//!
//! ```sh
//! drover serve &
//! drover enqueue --queue reverse --payload hello
//! cargo run --example worker -- 127.0.0.1:7070
//! drover jobs get 1        # result: olleh
//! ```

use bytes::Bytes;
use drover::client::worker::{Job, JobError, Worker};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7070".into());
    let report = Worker::new(server, ["reverse"])
        .concurrency(4)
        .run(|job: Job| async move {
            if job.payload.is_empty() {
                return Err(JobError::new("empty", "nothing to reverse"));
            }
            let mut out = job.payload.to_vec();
            out.reverse();
            Ok(Bytes::from(out))
        })
        .await?; // until SIGTERM or ctrl-c
    eprintln!(
        "worker stopped: {} completed, {} failed",
        report.completed, report.failed
    );
    Ok(())
}
