//! `drover dead list|show|replay|purge`: the dead letters.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use drover::api::types::{DeadFilterBody, DeadJobBody, DeadPageBody, PurgedDeadBody, ReplayedBody};

use crate::jobs::at;
use crate::target::{table, Target};

#[derive(Subcommand)]
pub enum DeadCmd {
    /// Dead jobs, newest first, and how many by queue and error class.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Jobs to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Go on from this cursor (the `next` a page printed).
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// One dead job with its error history.
    Show {
        id: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Run dead jobs again: one by id, or up to --limit by filter.
    Replay {
        id: Option<u64>,
        #[command(flatten)]
        filter: Filter,
        /// Most jobs a filter replays (1 to 1000); run again for more.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
    /// Remove dead jobs that match, with their payloads and results.
    Purge {
        #[command(flatten)]
        filter: Filter,
        /// Only jobs dead longer than this: "7d".
        #[arg(long)]
        older_than: Option<String>,
        /// Most jobs removed (1 to 1000); run again for more.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args)]
pub struct Filter {
    #[arg(long)]
    queue: Option<String>,
    /// The job type.
    #[arg(long = "type")]
    job_type: Option<String>,
    /// The last error's class.
    #[arg(long)]
    class: Option<String>,
    /// Died within this long ("1h") or since this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.queue.is_none()
            && self.job_type.is_none()
            && self.class.is_none()
            && self.since.is_none()
    }

    /// The request body of a bulk replay or purge of what this matches.
    fn body(self, older_than: Option<String>, limit: usize) -> DeadFilterBody {
        DeadFilterBody {
            queue: self.queue,
            job_type: self.job_type,
            class: self.class,
            since: self.since,
            older_than,
            limit: Some(limit),
        }
    }
}

pub async fn run(cmd: DeadCmd) -> Result<()> {
    match cmd {
        DeadCmd::List {
            filter,
            limit,
            after,
            target,
        } => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            let pairs = [
                ("queue", &filter.queue),
                ("type", &filter.job_type),
                ("class", &filter.class),
                ("since", &filter.since),
                ("after", &after),
            ];
            for (k, v) in pairs {
                if let Some(v) = v {
                    q.append_pair(k, v);
                }
            }
            q.append_pair("limit", &limit.to_string());
            let page: DeadPageBody = target
                .admin()?
                .get(&format!("/api/v1/dead?{}", q.finish()))
                .await?;
            target.print(&page, print_page)
        }
        DeadCmd::Show { id, target } => {
            let d: DeadJobBody = target.admin()?.get(&format!("/api/v1/dead/{id}")).await?;
            target.print(&d, |d| {
                let j = &d.job;
                println!(
                    "job {}  queue {}  type {}  tenant {}  attempts {}",
                    j.id, j.queue, j.job_type, j.tenant, j.attempts
                );
                println!(
                    "died {}: {}: {}",
                    at(j.finished_at_ms),
                    j.last_error_class,
                    j.last_error
                );
                println!("errors:");
                for e in &d.errors {
                    println!("  {}  {}", at(e.at_ms), e.what);
                }
            })
        }
        DeadCmd::Replay {
            id,
            filter,
            limit,
            target,
        } => {
            let admin = target.admin()?;
            let done: ReplayedBody = match id {
                Some(id) if filter.is_empty() => {
                    admin
                        .post_empty(&format!("/api/v1/dead/{id}/replay"))
                        .await?
                }
                Some(_) => bail!("name a job id or a filter (--queue, --class, --since), not both"),
                None if filter.is_empty() => {
                    bail!("name a job id, or a filter: --queue, --class, --since")
                }
                None => {
                    let body = filter.body(None, limit);
                    admin.post("/api/v1/dead/replay", &body).await?
                }
            };
            target.print(&done, |d| {
                let ids: Vec<String> = d.replayed.iter().map(u64::to_string).collect();
                println!("replayed {} jobs: {}", ids.len(), ids.join(" "));
            })
        }
        DeadCmd::Purge {
            filter,
            older_than,
            limit,
            target,
        } => {
            if filter.is_empty() && older_than.is_none() {
                bail!("name what to purge: --queue, --class, --since or --older-than");
            }
            let body = filter.body(older_than, limit);
            let done: PurgedDeadBody = target.admin()?.post("/api/v1/dead/purge", &body).await?;
            target.print(&done, |d| println!("removed {} dead jobs", d.purged))
        }
    }
}

fn print_page(page: &DeadPageBody) {
    let mut counts = table(&["QUEUE", "CLASS", "DEAD"]);
    for c in &page.counts {
        counts.add_row(vec![c.queue.clone(), c.class.clone(), c.count.to_string()]);
    }
    println!("{counts}\n");
    let mut t = table(&[
        "ID",
        "QUEUE",
        "TYPE",
        "TENANT",
        "DIED",
        "TRIES",
        "LAST ERROR",
    ]);
    for j in &page.jobs {
        t.add_row(vec![
            j.id.to_string(),
            j.queue.clone(),
            j.job_type.clone(),
            j.tenant.clone(),
            at(j.state_since_ms),
            j.attempts.to_string(),
            format!("{}: {}", j.last_error_class, j.last_error),
        ]);
    }
    println!("{t}");
    if let Some(next) = &page.next {
        println!("\nmore: add --after {next}");
    }
}
