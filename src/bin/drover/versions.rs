//! `drover versions list|disable|enable|only`: keep a worker version from a
//! queue's or tenant's jobs (or all), pin a queue to one version, and see
//! which versions are connected.

use anyhow::Result;
use clap::{Args, Subcommand};
use drover::api::types::{
    CanaryBody, CanarySetBody, VersionSwitchBody, VersionSwitchRequest, VersionsBody,
};

use crate::target::{table, Target};

#[derive(Subcommand)]
pub enum VersionsCmd {
    /// Version switches, how many workers of each version are connected,
    /// and when each version was first and last seen leasing.
    List(Target),
    /// Stop leasing jobs to workers of VERSION (of --queue, of --tenant, or
    /// all); they go to workers of other versions, or wait. Needs --reason.
    Disable(SwitchArgs),
    /// Undo a `disable` (the same --queue and --tenant).
    Enable(SwitchArgs),
    /// Pin --queue to VERSION: only its workers take the queue's jobs (a
    /// canary rule of 100% that never waits for others); undo with
    /// `drover canary promote QUEUE`. Needs --reason.
    Only {
        version: String,
        #[arg(long)]
        queue: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args)]
pub struct SwitchArgs {
    /// The version label workers registered (`drover worker --worker-version`).
    version: String,
    #[arg(long)]
    queue: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    /// Switch off a version no connected worker has (yet).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    target: Target,
}

pub async fn run(cmd: VersionsCmd) -> Result<()> {
    match cmd {
        VersionsCmd::List(target) => {
            let v: VersionsBody = target.admin()?.get("/api/v1/versions").await?;
            target.print(&v, print)
        }
        VersionsCmd::Disable(a) => switch(a, "disable").await,
        VersionsCmd::Enable(a) => switch(a, "enable").await,
        VersionsCmd::Only {
            version,
            queue,
            target,
        } => {
            let body = CanarySetBody {
                version: Some(version),
                percent: Some(100),
                max_wait: Some("never".into()),
            };
            let path = format!("/api/v1/canary/{queue}");
            let c: CanaryBody = target.admin()?.post(&path, &body).await?;
            target.print(&c, |c| {
                println!(
                    "queue {}: only workers of version {} take its jobs (undo: drover canary promote {})",
                    c.queue, c.version, c.queue
                )
            })
        }
    }
}

async fn switch(a: SwitchArgs, action: &str) -> Result<()> {
    let body = VersionSwitchRequest {
        queue: a.queue,
        tenant: a.tenant,
        force: a.force,
    };
    let path = format!("/api/v1/versions/{}/{action}", a.version);
    let s: VersionSwitchBody = a.target.admin()?.post(&path, &body).await?;
    a.target.print(&s, |s| {
        let scope = describe(s);
        match action {
            "disable" => println!("switched off {scope}: its workers get none of those jobs"),
            _ => println!("switched on {scope} again"),
        }
    })
}

fn describe(s: &VersionSwitchBody) -> String {
    format!(
        "version {} (queue {}, tenant {})",
        s.version,
        s.queue.as_deref().unwrap_or("*"),
        s.tenant.as_deref().unwrap_or("*")
    )
}

fn print(v: &VersionsBody) {
    let mut t = table(&["VERSION", "CONNECTED WORKERS", "FIRST SEEN", "LAST SEEN"]);
    let versions: std::collections::BTreeSet<&String> =
        v.connected.keys().chain(v.seen.keys()).collect();
    for version in versions {
        let name = if version.is_empty() {
            "(none)"
        } else {
            version
        };
        let seen = v.seen.get(version);
        t.add_row(vec![
            name.to_string(),
            v.connected.get(version).copied().unwrap_or(0).to_string(),
            seen.map_or("-".into(), |s| crate::jobs::at(s.first_seen_ms)),
            seen.map_or("-".into(), |s| crate::jobs::at(s.last_seen_ms)),
        ]);
    }
    println!("{t}");
    if v.switches.is_empty() {
        println!("no version is switched off");
    } else {
        let mut t = table(&["SWITCHED OFF", "QUEUE", "TENANT"]);
        for s in &v.switches {
            t.add_row(vec![
                s.version.clone(),
                s.queue.clone().unwrap_or_else(|| "*".into()),
                s.tenant.clone().unwrap_or_else(|| "*".into()),
            ]);
        }
        println!("{t}");
    }
    for (node, why) in &v.unreachable {
        println!("node {node} did not answer ({why}): its workers are not counted");
    }
}
