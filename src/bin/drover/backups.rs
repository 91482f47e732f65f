//! `drover backups list`: the scheduled backups of every member, newest
//! first, with the node each lies on (they are written by whichever node
//! led at the time).

use anyhow::Result;
use clap::Subcommand;
use drover::api::types::{BackupBody, BackupsBody, MembersBody};

use crate::target::{table, Target};
use drover::client::admin::AdminClient;

#[derive(Subcommand)]
pub enum BackupsCmd {
    /// Every member's backups, newest first, with where each lies.
    List(Target),
}

pub async fn run(cmd: BackupsCmd) -> Result<()> {
    let BackupsCmd::List(target) = cmd;
    let members: MembersBody = target.admin()?.get("/api/v1/cluster/members").await?;
    let credentials = target.credentials()?;
    let mut all: Vec<BackupBody> = Vec::new();
    let mut missing = Vec::new();
    for m in &members.members {
        // A member's gRPC address serves the admin API too; a lone node
        // started without [[peers]] knows no address of its own.
        let addr = match m.addr.as_str() {
            "" if m.id == members.seen_from => target.server.as_str(),
            "" => {
                missing.push(format!("node {}: no address known", m.id));
                continue;
            }
            a => a,
        };
        let listed: Result<BackupsBody> = async {
            Ok(AdminClient::new(addr, &credentials, "")?
                .get("/api/v1/backups")
                .await?)
        }
        .await;
        match listed {
            Ok(b) => all.extend(b.backups),
            Err(e) => missing.push(format!("node {} ({}): {e:#}", m.id, m.addr)),
        }
    }
    all.sort_by_key(|b| std::cmp::Reverse((b.taken_at_secs, b.index)));
    target.print(&all, |all| {
        let mut t = table(&["TAKEN (UTC)", "NODE", "INDEX", "BYTES", "PATH"]);
        for b in all {
            let taken = chrono::DateTime::from_timestamp(b.taken_at_secs as i64, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| b.taken_at_secs.to_string());
            t.add_row(vec![
                taken,
                b.node.to_string(),
                b.index.to_string(),
                b.bytes.to_string(),
                b.path.clone(),
            ]);
        }
        println!("{t}");
        if all.is_empty() {
            println!("no backups on any member reached ([backup] every turns them on)");
        }
    })?;
    for m in &missing {
        eprintln!("could not list the backups of {m}");
    }
    Ok(())
}
