//! `drover runs list|get|budget|timeline|override|cancel|replay`,
//! `drover budgets set` and `drover costs`: runs, their budgets, and what
//! jobs cost.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use drover::api::types::{
    CancelRunBody, CostSumBody, CostsBody, OverrideBody, ReplayRunBody, RunBody, RunBudgetBody,
    RunCancelledBody, RunReplayedBody, RunTimelineBody, RunsBody, TenantBudgetsBody,
};

use crate::jobs::at;
use crate::target::{table, Target};

#[derive(Subcommand)]
pub enum RunsCmd {
    /// Runs with their jobs, cost and state (active, held, done).
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// active, held or done.
        #[arg(long)]
        state: Option<String>,
        /// The `next` of the page before.
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        target: Target,
    },
    /// A run: its jobs by how they ended, its budgets and what it used.
    Get(RunArgs),
    /// A run's budgets: limits, use, what is left, whether it is held.
    Budget(RunArgs),
    /// The run's jobs' events merged in time order, a page at a time.
    Timeline {
        #[command(flatten)]
        run: RunArgs,
        /// The `next` of the page before.
        #[arg(long)]
        after: Option<usize>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Cancel every unfinished job of a run; needs --reason.
    Cancel(RunArgs),
    /// Enqueue a run's jobs again as a new run (same payloads, types,
    /// priorities and dependencies), linked to the old one.
    Replay {
        #[command(flatten)]
        run: RunArgs,
        /// Only the jobs that ended dead or cancelled.
        #[arg(long)]
        failed_only: bool,
        /// The new run's id (default RUN-replay-N).
        #[arg(long)]
        into: Option<String>,
    },
    /// Raise one run's limits (those given) and release its held jobs;
    /// needs --reason, which goes into the audit log.
    Override {
        run: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        cost_usd: Option<f64>,
        /// A duration: 1h.
        #[arg(long)]
        time: Option<String>,
        #[arg(long)]
        attempts: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args)]
pub struct RunArgs {
    run: String,
    #[arg(long, default_value = "default")]
    tenant: String,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand)]
pub enum BudgetsCmd {
    /// Set a tenant's run limits and daily cost cap, in place of its
    /// config's `[tenants.NAME.budgets]`.
    Set {
        tenant: String,
        #[arg(long)]
        cost_usd: Option<f64>,
        /// A duration: 30m.
        #[arg(long)]
        time: Option<String>,
        #[arg(long)]
        attempts: Option<u64>,
        #[arg(long)]
        daily_cost_cap_usd: Option<f64>,
        #[command(flatten)]
        target: Target,
    },
}

/// `drover costs`: what jobs that finished since a time cost.
#[derive(Args)]
pub struct CostsArgs {
    #[arg(long)]
    tenant: Option<String>,
    /// A duration ago (24h) or a time (RFC 3339).
    #[arg(long, default_value = "24h")]
    since: String,
    #[command(flatten)]
    target: Target,
}

pub async fn run(cmd: RunsCmd) -> Result<()> {
    match cmd {
        RunsCmd::List {
            tenant,
            state,
            after,
            limit,
            target,
        } => {
            let mut path = String::from("/api/v1/runs?");
            for (k, v) in [("tenant", tenant), ("state", state), ("after", after)] {
                if let Some(v) = v {
                    path.push_str(&format!("{k}={v}&"));
                }
            }
            if let Some(l) = limit {
                path.push_str(&format!("limit={l}"));
            }
            let runs: RunsBody = target.admin()?.get(&path).await?;
            target.print(&runs, |r| {
                let mut t = table(&[
                    "TENANT",
                    "RUN",
                    "STATE",
                    "JOBS",
                    "UNFINISHED",
                    "DEAD",
                    "COST USD",
                    "LAST",
                ]);
                for x in &r.runs {
                    t.add_row(vec![
                        x.tenant.clone(),
                        x.run.clone(),
                        state_text(&x.budget),
                        x.jobs.enqueued.to_string(),
                        x.jobs.unfinished.to_string(),
                        x.jobs.dead.to_string(),
                        format!("{:.4}", x.budget.cost_usd),
                        at(x.last_at_ms),
                    ]);
                }
                println!("{t}");
                if let Some(next) = &r.next {
                    println!("more: --after {next}");
                }
            })
        }
        RunsCmd::Get(a) => {
            let r: RunBody = a
                .target
                .admin()?
                .get(&format!("/api/v1/runs/{}?tenant={}", a.run, a.tenant))
                .await?;
            let timeline: RunTimelineBody = a
                .target
                .admin()?
                .get(&format!(
                    "/api/v1/runs/{}/timeline?tenant={}&limit=50",
                    a.run, a.tenant
                ))
                .await?;
            a.target.print(&r, |r| {
                println!(
                    "run {} of tenant {}: {}",
                    r.run,
                    r.tenant,
                    state_text(&r.budget)
                );
                if let Some(of) = &r.replay_of {
                    println!("replays run {of}");
                }
                let j = &r.jobs;
                println!(
                    "jobs: {} enqueued, {} unfinished, {} succeeded, {} dead, {} cancelled",
                    j.enqueued, j.unfinished, j.succeeded, j.dead, j.cancelled
                );
                println!("first {}, last {}", at(r.first_at_ms), at(r.last_at_ms));
                print_budget(&r.budget);
                print_timeline(&timeline);
            })
        }
        RunsCmd::Timeline { run, after, limit } => {
            let mut path = format!(
                "/api/v1/runs/{}/timeline?tenant={}&limit={limit}",
                run.run, run.tenant
            );
            if let Some(a) = after {
                path.push_str(&format!("&after={a}"));
            }
            let t: RunTimelineBody = run.target.admin()?.get(&path).await?;
            run.target.print(&t, print_timeline)
        }
        RunsCmd::Cancel(a) => {
            if a.target.reason.trim().is_empty() {
                bail!("cancelling a run needs --reason TEXT: it goes into the audit log");
            }
            let body = CancelRunBody {
                tenant: Some(a.tenant.clone()),
                reason: None,
            };
            let c: RunCancelledBody = a
                .target
                .admin()?
                .post(&format!("/api/v1/runs/{}/cancel", a.run), &body)
                .await?;
            a.target.print(&c, |c| {
                println!("cancelled {} unfinished jobs of run {}", c.cancelled, c.run)
            })
        }
        RunsCmd::Replay {
            run,
            failed_only,
            into,
        } => {
            let body = ReplayRunBody {
                tenant: Some(run.tenant.clone()),
                failed_only,
                into,
            };
            let r: RunReplayedBody = run
                .target
                .admin()?
                .post(&format!("/api/v1/runs/{}/replay", run.run), &body)
                .await?;
            run.target.print(&r, |r| {
                println!(
                    "run {} replays {} with {} jobs",
                    r.run,
                    r.replay_of,
                    r.jobs.len()
                )
            })
        }
        RunsCmd::Budget(a) => {
            let b: RunBudgetBody = a
                .target
                .admin()?
                .get(&format!(
                    "/api/v1/runs/{}/budget?tenant={}",
                    a.run, a.tenant
                ))
                .await?;
            a.target.print(&b, |b| {
                println!("run {} of tenant {}: {}", b.run, b.tenant, state_text(b));
                print_budget(b);
            })
        }
        RunsCmd::Override {
            run,
            tenant,
            cost_usd,
            time,
            attempts,
            target,
        } => {
            if target.reason.trim().is_empty() {
                bail!("an override needs --reason TEXT: it goes into the audit log");
            }
            let body = OverrideBody {
                tenant: Some(tenant),
                cost_usd,
                time,
                attempts,
                reason: None,
            };
            let b: RunBudgetBody = target
                .admin()?
                .post(&format!("/api/v1/runs/{run}/override"), &body)
                .await?;
            target.print(&b, |b| {
                println!("run {} of tenant {}: {}", b.run, b.tenant, state_text(b));
                print_budget(b);
            })
        }
    }
}

pub async fn budgets(cmd: BudgetsCmd) -> Result<()> {
    match cmd {
        BudgetsCmd::Set {
            tenant,
            cost_usd,
            time,
            attempts,
            daily_cost_cap_usd,
            target,
        } => {
            let body = TenantBudgetsBody {
                cost_usd,
                time,
                attempts,
                daily_cost_cap_usd,
            };
            let b: TenantBudgetsBody = target
                .admin()?
                .put(&format!("/api/v1/tenants/{tenant}/budgets"), &body)
                .await?;
            target.print(&b, |b| {
                println!("tenant {tenant}: its runs' limits and daily cap are now");
                println!("{}", serde_json::to_string_pretty(b).unwrap_or_default());
            })
        }
    }
}

pub async fn costs(a: CostsArgs) -> Result<()> {
    let mut path = format!("/api/v1/costs?since={}", a.since);
    if let Some(t) = &a.tenant {
        path.push_str(&format!("&tenant={t}"));
    }
    let c: CostsBody = a.target.admin()?.get(&path).await?;
    a.target.print(&c, |c| {
        println!(
            "since {}: {} jobs, {:.4} USD",
            at(c.since_ms),
            c.total.jobs,
            c.total.cost_usd
        );
        for (title, sums) in [
            ("TENANT", &c.by_tenant),
            ("RUN", &c.by_run),
            ("QUEUE", &c.by_queue),
            ("JOB TYPE", &c.by_job_type),
        ] {
            if sums.is_empty() {
                continue;
            }
            let mut t = table(&[title, "JOBS", "COST USD", "LEASE S", "USAGE"]);
            for (name, s) in sums {
                t.add_row(sum_row(name, s));
            }
            println!("{t}");
        }
        if c.truncated {
            println!("(more jobs finished than one request sums: narrow --since or --tenant)");
        }
    })
}

fn sum_row(name: &str, s: &CostSumBody) -> Vec<String> {
    vec![
        name.to_string(),
        s.jobs.to_string(),
        format!("{:.4}", s.cost_usd),
        (s.lease_ms / 1000).to_string(),
        s.usage
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
    ]
}

fn print_timeline(t: &RunTimelineBody) {
    for e in &t.events {
        println!(
            "  {}  job {}  {}",
            at(e.event.at_ms),
            e.job_id,
            e.event.what
        );
    }
    if let Some(next) = &t.next {
        println!("more: drover runs timeline {} --after {next}", t.run);
    }
}

fn state_text(b: &RunBudgetBody) -> String {
    match &b.held_by {
        Some(budget) => format!("held: budget {budget}"),
        None => b.state.clone(),
    }
}

fn print_budget(b: &RunBudgetBody) {
    println!(
        "used: {:.4} USD, {} s of leases, {} attempts",
        b.cost_usd,
        b.lease_ms / 1000,
        b.attempts
    );
    for (k, v) in &b.usage {
        println!("  {k} = {v}");
    }
    if b.budgets.is_empty() {
        println!("no budgets set ([budgets], [tenants.NAME.budgets])");
        return;
    }
    let mut t = table(&["BUDGET", "LIMIT", "USED", "REMAINING"]);
    for u in &b.budgets {
        t.add_row(vec![
            u.budget.clone(),
            u.limit.to_string(),
            u.used.to_string(),
            u.remaining.to_string(),
        ]);
    }
    println!("{t}");
}
