//! `drover tenants list|pause|drain|resume|erase`.

use anyhow::{bail, Result};
use clap::Subcommand;
use drover::api::types::{ControlledBody, EraseTenantBody, TenantErasedBody, TenantsBody};

use crate::target::{table, Target};

#[derive(Subcommand)]
pub enum TenantsCmd {
    /// Every tenant: ready jobs, weight, paused or draining.
    List(Target),
    /// Lease none of TENANT's jobs, in any queue; enqueues go on.
    Pause {
        tenant: String,
        #[command(flatten)]
        target: Target,
    },
    /// Refuse TENANT's new jobs; leases go on.
    Drain {
        tenant: String,
        #[command(flatten)]
        target: Target,
    },
    /// End a pause or drain.
    Resume {
        tenant: String,
        #[command(flatten)]
        target: Target,
    },
    /// Erase TENANT's data on every node: its jobs in every state
    /// (unfinished ones cancelled first) with payloads, results and
    /// idempotency keys, its runs, costs, budgets, breakers and state.
    /// Cannot be undone; backups taken before keep it. Needs --reason and
    /// an admin token without a scope.
    Erase {
        tenant: String,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run(cmd: TenantsCmd) -> Result<()> {
    let (action, tenant, target) = match cmd {
        TenantsCmd::List(target) => {
            let t: TenantsBody = target.admin()?.get("/api/v1/tenants").await?;
            return target.print(&t, print);
        }
        TenantsCmd::Pause { tenant, target } => ("pause", tenant, target),
        TenantsCmd::Drain { tenant, target } => ("drain", tenant, target),
        TenantsCmd::Resume { tenant, target } => ("resume", tenant, target),
        TenantsCmd::Erase { tenant, target } => return erase(tenant, target).await,
    };
    let done: ControlledBody = target
        .admin()?
        .post_empty(&format!("/api/v1/tenants/{tenant}/{action}"))
        .await?;
    target.print(&done, |d| {
        if d.changed.is_empty() {
            println!("{action}: tenant {tenant} was already so");
        } else {
            println!("{action}: tenant {tenant}");
        }
    })
}

async fn erase(tenant: String, target: Target) -> Result<()> {
    if target.reason.trim().is_empty() {
        bail!("erasing a tenant needs --reason TEXT: it goes into the audit log");
    }
    let body = EraseTenantBody { reason: None };
    let e: TenantErasedBody = target
        .admin()?
        .post(&format!("/api/v1/tenants/{tenant}/erase"), &body)
        .await?;
    target.print(&e, |e| {
        println!(
            "erased tenant {} on every node: {} jobs, {} runs, {} breakers, {} other records ({} log entries)",
            e.tenant, e.jobs, e.runs, e.breakers, e.other, e.slices
        );
        println!("backups taken before this still hold its data: see README, Erasing a tenant");
    })
}

fn print(t: &TenantsBody) {
    let mut table = table(&["TENANT", "READY", "WEIGHT", "STATE"]);
    for x in &t.tenants {
        let state = match (x.paused, x.draining) {
            (true, true) => "paused, draining",
            (true, false) => "paused",
            (false, true) => "draining",
            (false, false) => "",
        };
        table.add_row(vec![
            x.name.clone(),
            x.ready.to_string(),
            x.weight.to_string(),
            state.to_string(),
        ]);
    }
    println!("{table}");
}
