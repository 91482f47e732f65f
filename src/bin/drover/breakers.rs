//! `drover breakers list|reset`: circuit breakers per (queue, tenant,
//! error class).

use anyhow::{bail, Result};
use clap::Subcommand;
use drover::api::types::{BreakersBody, ResetBreakersBody, ResetBreakersDoneBody};

use crate::jobs::at;
use crate::target::{table, Target};

#[derive(Subcommand)]
pub enum BreakersCmd {
    /// Breakers that are open, half-open, or counting failures.
    List(Target),
    /// Close a breaker (QUEUE/TENANT/CLASS), or --all.
    Reset {
        scope: Option<String>,
        #[arg(long, conflicts_with = "scope")]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run(cmd: BreakersCmd) -> Result<()> {
    match cmd {
        BreakersCmd::List(target) => {
            let b: BreakersBody = target.admin()?.get("/api/v1/breakers").await?;
            target.print(&b, |b| {
                let mut t = table(&[
                    "QUEUE", "TENANT", "CLASS", "STATE", "FAILURES", "OPENED", "PROBE",
                ]);
                for x in &b.breakers {
                    t.add_row(vec![
                        x.queue.clone(),
                        x.tenant.clone(),
                        x.class.clone(),
                        x.state.clone(),
                        x.failures.to_string(),
                        if x.opened_at_ms > 0 {
                            at(x.opened_at_ms)
                        } else {
                            String::new()
                        },
                        x.probe.map(|p| p.to_string()).unwrap_or_default(),
                    ]);
                }
                println!("{t}");
            })
        }
        BreakersCmd::Reset { scope, all, target } => {
            let body = match (scope, all) {
                (None, true) => ResetBreakersBody {
                    all: true,
                    ..Default::default()
                },
                (Some(s), false) => match s.splitn(3, '/').collect::<Vec<_>>()[..] {
                    [q, t, c] => ResetBreakersBody {
                        queue: Some(q.to_string()),
                        tenant: Some(t.to_string()),
                        class: Some(c.to_string()),
                        all: false,
                    },
                    _ => bail!("{s:?} is not QUEUE/TENANT/CLASS (see drover breakers list)"),
                },
                _ => bail!("name a breaker as QUEUE/TENANT/CLASS, or --all"),
            };
            let done: ResetBreakersDoneBody = target
                .admin()?
                .post("/api/v1/breakers/reset", &body)
                .await?;
            target.print(&done, |d| println!("reset {} breakers", d.reset))
        }
    }
}
