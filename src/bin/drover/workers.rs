//! `drover workers list|shutdown|release`: the workers of the whole cluster.

use anyhow::{bail, Result};
use clap::Subcommand;
use drover::api::types::{ReleasedWorkerBody, WorkersBody};

use crate::target::{table, Target};

#[derive(Subcommand)]
pub enum WorkersCmd {
    /// Every connected worker: queues, version, jobs held, what it has done
    /// (in all and recently), when it was last heard from, the node it is
    /// connected to, and whether it is quarantined.
    List(Target),
    /// Let a quarantined worker lease again.
    Release {
        /// The worker id (see `drover workers list`).
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Ask a worker (or --all) to finish what it holds and exit.
    Shutdown {
        /// The worker id (see `drover workers list`).
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run(cmd: WorkersCmd) -> Result<()> {
    match cmd {
        WorkersCmd::List(target) => {
            let w: WorkersBody = target.admin()?.get("/api/v1/workers").await?;
            target.print(&w, print)
        }
        WorkersCmd::Release { id, target } => {
            let r: ReleasedWorkerBody = target
                .admin()?
                .post_empty(&format!("/api/v1/workers/{id}/release"))
                .await?;
            target.print(&r, |r| {
                println!("released worker {}: it may lease again", r.worker_id);
            })
        }
        WorkersCmd::Shutdown { id, all, target } => {
            let path = match (&id, all) {
                (Some(id), false) => format!("/api/v1/workers/{id}/shutdown"),
                (None, true) => "/api/v1/workers/shutdown".to_string(),
                _ => bail!("name a worker id, or --all"),
            };
            let w: WorkersBody = target.admin()?.post_empty(&path).await?;
            target.print(&w, |w| {
                println!(
                    "asked {} worker(s) to finish what they hold and exit",
                    w.asked_to_stop
                );
                print(w);
            })
        }
    }
}

fn print(w: &WorkersBody) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut t = table(&[
        "ID",
        "QUEUES",
        "VERSION",
        "HELD",
        "DONE",
        "FAILED",
        "RECENT OK/FAILED",
        "LAST SEEN",
        "NODE",
        "",
    ]);
    for x in &w.workers {
        let ago = std::time::Duration::from_secs(now.saturating_sub(x.last_seen_ms) / 1000);
        t.add_row(vec![
            x.worker_id.clone(),
            x.queues.join(","),
            if x.version.is_empty() {
                "-".into()
            } else {
                x.version.clone()
            },
            format!("{}/{}", x.in_flight, x.capacity),
            x.completed.to_string(),
            x.failed.to_string(),
            format!(
                "{}/{} in {}",
                x.recent_completed,
                x.recent_failed,
                humantime::format_duration(std::time::Duration::from_secs(
                    x.recent_window_ms / 1000
                ))
            ),
            format!("{} ago", humantime::format_duration(ago)),
            x.node_id.to_string(),
            match (x.quarantined_until_ms, x.draining) {
                (Some(_), _) => "quarantined".into(),
                (None, true) => "draining".into(),
                (None, false) => String::new(),
            },
        ]);
    }
    println!("{t}");
    for (id, q) in &w.quarantined {
        let left = std::time::Duration::from_secs(q.until_ms.saturating_sub(now) / 1000);
        println!(
            "quarantined: {id} ({} failed of {}); reconnecting after {} lifts it, or: drover workers release {id}",
            q.failed,
            q.completed + q.failed,
            if left.is_zero() { "now".to_string() } else { humantime::format_duration(left).to_string() }
        );
    }
    for (node, why) in &w.unreachable {
        println!("node {node} did not answer ({why}): its workers are not listed");
    }
}
