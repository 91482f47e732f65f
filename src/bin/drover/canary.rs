//! `drover canary set|status|promote|abort`: send a share of a queue's
//! jobs only to workers of one version.

use anyhow::Result;
use clap::Subcommand;
use drover::api::types::{CanaryBody, CanarySetBody};

use crate::target::Target;

#[derive(Subcommand)]
pub enum CanaryCmd {
    /// The queue's canary rule.
    Status {
        queue: String,
        #[command(flatten)]
        target: Target,
    },
    /// Start a canary, or change its share (to reduce it on a warning).
    Set {
        queue: String,
        /// The canary version (a new rule must name it).
        #[arg(long)]
        version: Option<String>,
        /// The share of the queue's jobs, 0 to 100.
        #[arg(long)]
        percent: Option<u32>,
        /// How long a canary job waits for a canary worker before others
        /// take it ("5m", the default).
        #[arg(long)]
        max_wait: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// End the rule: the canary version takes jobs like any other.
    Promote {
        queue: String,
        #[command(flatten)]
        target: Target,
    },
    /// End the rule and switch the canary version off for the queue.
    Abort {
        queue: String,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run(cmd: CanaryCmd) -> Result<()> {
    match cmd {
        CanaryCmd::Status { queue, target } => {
            let c: CanaryBody = target
                .admin()?
                .get(&format!("/api/v1/canary/{queue}"))
                .await?;
            target.print(&c, print)
        }
        CanaryCmd::Set {
            queue,
            version,
            percent,
            max_wait,
            target,
        } => {
            let body = CanarySetBody {
                version,
                percent,
                max_wait,
            };
            let c: CanaryBody = target
                .admin()?
                .post(&format!("/api/v1/canary/{queue}"), &body)
                .await?;
            target.print(&c, print)
        }
        CanaryCmd::Promote { queue, target } => {
            let c: CanaryBody = target
                .admin()?
                .post_empty(&format!("/api/v1/canary/{queue}/promote"))
                .await?;
            target.print(&c, |c| {
                println!(
                    "promoted {} on queue {}: the rule ended",
                    c.version, c.queue
                )
            })
        }
        CanaryCmd::Abort { queue, target } => {
            let c: CanaryBody = target
                .admin()?
                .post_empty(&format!("/api/v1/canary/{queue}/abort"))
                .await?;
            target.print(&c, |c| {
                println!(
                    "aborted {} on queue {}: the rule ended and the version is switched off for the queue (drover versions enable {} --queue {} undoes that)",
                    c.version, c.queue, c.version, c.queue
                )
            })
        }
    }
}

fn print(c: &CanaryBody) {
    println!(
        "queue {}: {}% of its jobs go only to version {}, the rest only to others; a canary job waits up to {} for a canary worker",
        c.queue, c.percent, c.version, c.max_wait
    );
    let Some(s) = &c.stats else { return };
    let mut t = crate::target::table(&["", "JOBS", "SUCCESS", "MEAN RUN", "P95 RUN", "MEAN COST"]);
    for (name, a) in [("canary", &s.canary), ("control", &s.control)] {
        t.add_row(vec![
            name.to_string(),
            a.jobs.to_string(),
            format!("{:.1}%", a.success_rate * 100.0),
            format!("{:.0} ms", a.mean_run_ms),
            format!("<{} ms", a.p95_run_ms),
            format!("${:.4}", a.mean_cost_usd),
        ]);
    }
    println!("{t}");
    for j in &s.comparison {
        println!("{:<20} {:>8.3}  {}", j.metric, j.value, j.verdict);
    }
}
