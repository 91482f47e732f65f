//! `drover chaos set|list|off`: inject faults into a queue's worker
//! streams to prove a fleet recovers (refused unless every node's config
//! says `[chaos] allowed = true`).

use anyhow::Result;
use clap::Subcommand;
use drover::api::types::{ChaosBody, ChaosRuleBody};

use crate::target::{table, Target};

#[derive(Subcommand)]
pub enum ChaosCmd {
    /// What is injected where, and how often the node asked did it.
    List(Target),
    /// Inject faults into QUEUE's leases and results (shares 0 to 1).
    Set {
        queue: String,
        /// Share of lease grants not sent (they expire and run again).
        #[arg(long, default_value_t = 0.0)]
        drop: f64,
        /// Lease grants sent this much later: "200ms".
        #[arg(long, value_parser = humantime::parse_duration)]
        delay: Option<std::time::Duration>,
        /// Share of leases taken back right after they are sent.
        #[arg(long, default_value_t = 0.0)]
        revoke: f64,
        /// Share of completions turned into failures of --fail-class.
        #[arg(long, default_value_t = 0.0)]
        fail: f64,
        #[arg(long, default_value = "chaos")]
        fail_class: String,
        #[command(flatten)]
        target: Target,
    },
    /// End every fault at once.
    Off(Target),
}

pub async fn run(cmd: ChaosCmd) -> Result<()> {
    match cmd {
        ChaosCmd::List(target) => {
            let c: ChaosBody = target.admin()?.get("/api/v1/chaos").await?;
            target.print(&c, print)
        }
        ChaosCmd::Set {
            queue,
            drop,
            delay,
            revoke,
            fail,
            fail_class,
            target,
        } => {
            let body = ChaosRuleBody {
                drop_leases: drop,
                delay_ms: delay.map_or(0, |d| d.as_millis() as u64),
                revoke,
                fail,
                fail_class,
            };
            let c: ChaosBody = target
                .admin()?
                .post(&format!("/api/v1/chaos/{queue}"), &body)
                .await?;
            target.print(&c, print)
        }
        ChaosCmd::Off(target) => {
            let c: ChaosBody = target.admin()?.post_empty("/api/v1/chaos/off").await?;
            target.print(&c, |c| {
                println!("every fault ended");
                print(c)
            })
        }
    }
}

fn print(c: &ChaosBody) {
    if !c.allowed {
        println!("this node does not allow chaos ([chaos] allowed = true)");
    }
    let mut t = table(&["QUEUE", "DROP", "DELAY", "REVOKE", "FAIL", "CLASS"]);
    for (q, r) in &c.rules {
        t.add_row(vec![
            q.clone(),
            r.drop_leases.to_string(),
            format!("{} ms", r.delay_ms),
            r.revoke.to_string(),
            r.fail.to_string(),
            r.fail_class.clone(),
        ]);
    }
    println!("{t}");
    for i in &c.injected {
        println!("{} {}: {} injected by this node", i.queue, i.kind, i.count);
    }
}
