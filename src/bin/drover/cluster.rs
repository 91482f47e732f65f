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
    /// Print the leader's node id (fails while there is none): for
    /// scripts that must act on the leader last.
    Leader(Target),
    /// Wait until the cluster has a leader and every member answers it
    /// with its log caught up (a rolling restart waits on this before it
    /// takes the next node down); fails after --timeout saying who lags.
    Wait {
        /// Wait for every member to be reachable and caught up.
        #[arg(long)]
        caught_up: bool,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
        timeout: std::time::Duration,
        #[command(flatten)]
        target: Target,
    },
}

/// A member this close to the leader's commit index counts as caught up.
const CAUGHT_UP_SLACK: u64 = 100;

/// Why the cluster is not yet whole, or None once it is.
fn lagging(m: &MembersBody) -> Option<String> {
    if m.leader_id == 0 {
        return Some("no leader".into());
    }
    let behind: Vec<String> = m
        .members
        .iter()
        .filter_map(|x| match (x.reachable, x.match_index) {
            (Some(true), Some(i)) if i + CAUGHT_UP_SLACK >= m.commit_index => None,
            (Some(false), _) => Some(format!("node {} unreachable", x.id)),
            (_, Some(i)) => Some(format!("node {} at {i} of {}", x.id, m.commit_index)),
            _ => Some(format!("node {}: progress unknown", x.id)),
        })
        .collect();
    (!behind.is_empty()).then(|| behind.join(", "))
}

pub async fn run(cmd: ClusterCmd) -> Result<()> {
    let (target, members): (Target, MembersBody) = match cmd {
        ClusterCmd::Leader(target) => {
            let m: MembersBody = target.admin()?.get("/api/v1/cluster/members").await?;
            if m.leader_id == 0 {
                anyhow::bail!("no leader is known (as seen from node {})", m.seen_from);
            }
            println!("{}", m.leader_id);
            return Ok(());
        }
        ClusterCmd::Wait {
            caught_up,
            timeout,
            target,
        } => {
            let deadline = std::time::Instant::now() + timeout;
            let whole = loop {
                // A node restarting refuses for a moment: the client moves
                // on to the next address, and this asks again.
                let last = match target
                    .admin()?
                    .get::<MembersBody>("/api/v1/cluster/members")
                    .await
                {
                    Ok(m) => match lagging(&m) {
                        Some(why) if caught_up || m.leader_id == 0 => why,
                        _ => break m,
                    },
                    Err(e) => format!("{e:#}"),
                };
                if std::time::Instant::now() > deadline {
                    anyhow::bail!("the cluster was not whole within {timeout:?}: {last}");
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            };
            (target, whole)
        }
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
        "leader {leader}  term {}  commit {}  incarnation {}  (as seen from node {})",
        s.term, s.commit_index, s.incarnation, s.seen_from
    );
    if let Some(why) = &s.removed {
        println!(
            "node {} was REMOVED from the cluster ({why}); it no longer campaigns",
            s.seen_from
        );
    }
    if let Some(why) = &s.clock_skew {
        println!("node {} CLOCK SKEWED: {why}", s.seen_from);
    }
    let mut t = table(&[
        "ID",
        "ROLE",
        "ADDR",
        "MATCH",
        "REACHABLE",
        "ALARMS",
        "CLOCK",
    ]);
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
            match m.clock_offset_ms {
                _ if m.id == s.seen_from => "-".to_string(),
                Some(ms) => format!("{:+.3}s", ms as f64 / 1000.0),
                None => "?".to_string(),
            },
        ]);
    }
    println!("{t}");
}
