//! `drover cluster`: members, and changes of membership and leadership.

use anyhow::Result;
use clap::Subcommand;
use drover::api::types::{AddMemberBody, MembersBody, NodeRefBody};

use crate::target::{table, Target};

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Each member with its role, match index and whether the leader hears it.
    Members(Target),
    /// Add node ID, reachable by its peers at ADDR (its gRPC address). Start
    /// it first with `join = true`; it votes once it has caught up.
    Add {
        id: u64,
        addr: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove node ID. Refused if the voters left would have no reachable
    /// majority, unless --force.
    Remove {
        id: u64,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Make node ID the leader.
    TransferLeader {
        id: u64,
        #[command(flatten)]
        target: Target,
    },
}

pub async fn run(cmd: ClusterCmd) -> Result<()> {
    let (target, members): (Target, MembersBody) = match cmd {
        ClusterCmd::Members(target) => {
            let m = target.admin()?.get("/api/v1/cluster/members").await?;
            (target, m)
        }
        ClusterCmd::Add { id, addr, target } => {
            let m = target
                .admin()?
                .post("/api/v1/cluster/members", &AddMemberBody { id, addr })
                .await?;
            (target, m)
        }
        ClusterCmd::Remove { id, force, target } => {
            let m = target
                .admin()?
                .delete(&format!("/api/v1/cluster/members/{id}?force={force}"))
                .await?;
            (target, m)
        }
        ClusterCmd::TransferLeader { id, target } => {
            let m = target
                .admin()?
                .post("/api/v1/cluster/transfer-leader", &NodeRefBody { id })
                .await?;
            (target, m)
        }
    };
    target.print(&members, print_members)
}

fn print_members(s: &MembersBody) {
    let leader = if s.leader_id == 0 {
        "none".to_string()
    } else {
        s.leader_id.to_string()
    };
    println!(
        "leader {leader}  term {}  commit {}  (as seen from node {})",
        s.term, s.commit_index, s.seen_from
    );
    let mut t = table(&["ID", "ROLE", "ADDR", "MATCH", "REACHABLE", "ALARMS"]);
    let opt = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    for m in &s.members {
        let role = match (m.id == s.leader_id, m.voter) {
            (true, _) => "leader",
            (false, true) => "follower",
            (false, false) => "learner",
        };
        t.add_row(vec![
            m.id.to_string(),
            role.to_string(),
            m.addr.clone(),
            opt(m.match_index.map(|i| i.to_string())),
            opt(m.reachable.map(|r| r.to_string())),
            if m.alarms.is_empty() {
                "-".to_string()
            } else {
                m.alarms.join(",")
            },
        ]);
    }
    println!("{t}");
}
