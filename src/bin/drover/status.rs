//! `drover status`: the node, its queues and connected workers.

use anyhow::Result;
use drover::api::types::StatsBody;

use crate::target::{table, Target};

pub async fn run(target: Target) -> Result<()> {
    // Answers even with no leader: an operator needs it most then.
    let s: StatsBody = target.admin()?.get("/api/v1/stats?stale=ok").await?;
    target.print(&s, |s| {
        let n = &s.node;
        println!(
            "node {}  role {}  term {}  leader {}  commit {}  applied {}",
            n.node_id,
            n.role.as_str(),
            n.term,
            n.leader_id,
            n.commit_index,
            n.applied_index
        );
        for a in &n.alarms {
            println!(
                "ALARM  node {} {} (drover cluster members; docs/operations.md says what to do)",
                a.node, a.alarm
            );
        }
        println!();
        let mut t = table(&[
            "QUEUE",
            "READY p1/p2/p3/p4/p5",
            "SCHEDULED",
            "LEASED",
            "SUCCEEDED",
            "DEAD",
            "CANCELLED",
        ]);
        for (name, c) in &s.queues {
            let ready: Vec<String> = c.ready.iter().map(u64::to_string).collect();
            t.add_row(vec![
                name.clone(),
                ready.join("/"),
                c.scheduled.to_string(),
                c.leased.to_string(),
                c.succeeded.to_string(),
                c.dead.to_string(),
                c.cancelled.to_string(),
            ]);
        }
        println!("{t}");
        println!();
        println!("{} worker(s) connected to this node", s.workers.len());
        for w in &s.workers {
            println!(
                "  {}  queues={}  capacity={}  in_flight={}{}",
                w.worker_id,
                w.queues.join(","),
                w.capacity,
                w.in_flight,
                if w.draining { "  draining" } else { "" }
            );
        }
    })
}
