//! Membership changes as an operator asks for them: one at a time, new
//! members caught up as learners before they vote, and no change that would
//! leave the cluster without a reachable quorum unless forced.

use std::time::Duration;

use tokio::time::Instant;

use super::router::Router;
use super::MemberChange;
use crate::driver::NodeStatus;
use crate::error::Error;

/// How long a new member may take to catch up before it is promoted.
const CATCH_UP: Duration = Duration::from_secs(120);
/// A learner this close to the commit index counts as caught up.
const CAUGHT_UP_SLACK: u64 = 100;
const TRANSFER_WAIT: Duration = Duration::from_secs(10);

fn refused(reason: impl Into<String>) -> Error {
    Error::MembershipRefused(reason.into())
}

/// Adds node `id`, reachable at `addr`: as a learner first, promoted to
/// voter once it has caught up.
pub async fn add(router: &Router, id: u64, addr: &str) -> Result<NodeStatus, Error> {
    if id == 0 {
        return Err(Error::invalid("id", "node ids are 1 or more"));
    }
    crate::client::endpoint(addr).map_err(|e| Error::invalid("addr", e.to_string()))?;
    let view = router.members().await?;
    match view.members.iter().find(|m| m.id == id) {
        Some(m) if m.voter => return Err(refused(format!("node {id} is already a voter"))),
        Some(_) => {} // a learner from an earlier attempt: go on to promote it
        None => {
            router
                .change_members(MemberChange::AddLearner {
                    id,
                    addr: addr.to_string(),
                })
                .await?;
        }
    }
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let view = router.members().await?;
        let caught_up = view.members.iter().any(|m| {
            m.id == id
                && m.reachable == Some(true)
                && m.match_index
                    .is_some_and(|i| i + CAUGHT_UP_SLACK >= view.commit_index)
        });
        if caught_up {
            break;
        }
        if Instant::now() > deadline {
            return Err(refused(format!(
                "node {id} joined as a learner but did not catch up within {}s; check that it runs with join = true, the same cluster_id, and can reach the members at their addresses; run the add again to promote it once it has caught up, or remove it",
                CATCH_UP.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    router.change_members(MemberChange::Promote { id }).await?;
    router.members().await
}

/// Removes node `id`. Refused when the voters left would not include a
/// reachable majority, unless `force`.
pub async fn remove(router: &Router, id: u64, force: bool) -> Result<NodeStatus, Error> {
    let view = router.members().await?;
    let Some(member) = view.members.iter().find(|m| m.id == id) else {
        return Err(refused(format!("node {id} is not a member")));
    };
    if id == view.leader_id {
        return Err(refused(format!(
            "node {id} leads the cluster; move leadership first with `drover cluster transfer-leader`"
        )));
    }
    if member.voter {
        let left: Vec<_> = view
            .members
            .iter()
            .filter(|m| m.voter && m.id != id)
            .collect();
        if left.is_empty() {
            return Err(refused("the last voter cannot be removed"));
        }
        let reachable = left.iter().filter(|m| m.reachable == Some(true)).count();
        let quorum = left.len() / 2 + 1;
        if reachable < quorum && !force {
            return Err(refused(format!(
                "removing node {id} would leave {reachable} reachable of {} voters, fewer than the {quorum} a quorum needs; bring members back first, or pass --force to remove it anyway",
                left.len()
            )));
        }
    }
    router.change_members(MemberChange::Remove { id }).await?;
    router.members().await
}

/// Hands leadership to voter `id` and waits until it leads.
pub async fn transfer_leader(router: &Router, id: u64) -> Result<NodeStatus, Error> {
    let view = router.members().await?;
    if !view.members.iter().any(|m| m.id == id && m.voter) {
        return Err(refused(format!("node {id} is not a voter")));
    }
    if view.leader_id == id {
        return Ok(view);
    }
    router.transfer_leader(id).await?;
    let deadline = Instant::now() + TRANSFER_WAIT;
    loop {
        let view = router.members().await?;
        if view.leader_id == id {
            return Ok(view);
        }
        if Instant::now() > deadline {
            return Err(refused(format!(
                "leadership did not move to node {id} within {}s; is it reachable and caught up?",
                TRANSFER_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
