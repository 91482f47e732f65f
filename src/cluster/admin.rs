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
/// How often a transfer that has not happened yet is asked for again.
const TRANSFER_RETRY: Duration = Duration::from_secs(2);

fn refused(reason: impl Into<String>) -> Error {
    Error::MembershipRefused(reason.into())
}

/// How long the node asked may take to open a connection to a new
/// member's address before the add is refused.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds node `id`, reachable at `addr`: as a learner first, promoted to
/// voter once it has answered the leader and caught up.
pub async fn add(router: &Router, id: u64, addr: &str) -> Result<NodeStatus, Error> {
    if id == 0 {
        return Err(Error::invalid("id", "node ids are 1 or more"));
    }
    crate::wire::check_peer_addr(addr).map_err(|reason| Error::invalid("addr", reason))?;
    let view = router.members().await?;
    // Until it has answered, a learner's progress says nothing, so the wait
    // below is for a log index it can only report by answering: the entry
    // that added it, or (a learner from an earlier attempt) what is
    // committed now.
    let answered_at = match view.members.iter().find(|m| m.id == id) {
        Some(m) if m.voter => return Err(refused(format!("node {id} is already a voter"))),
        Some(_) => view.commit_index, // a learner from an earlier attempt: go on to promote it
        None => {
            probe(router, id, addr).await?;
            router
                .change_members(MemberChange::AddLearner {
                    id,
                    addr: addr.to_string(),
                })
                .await?
        }
    };
    let deadline = Instant::now() + CATCH_UP;
    let view = loop {
        let view = router.members().await?;
        let caught_up = view.members.iter().any(|m| {
            m.id == id
                && m.match_index.is_some_and(|i| {
                    i >= answered_at.max(1) && i + CAUGHT_UP_SLACK >= view.commit_index
                })
        });
        if caught_up {
            break view;
        }
        if Instant::now() > deadline {
            return Err(refused(format!(
                "node {id} joined as a learner but has not answered the leader with the log up to index {answered_at} within {}s, so it stays a learner; check that it runs at {addr} with join = true and the same cluster_id, and can reach the members at their addresses; run the add again to promote it once it has caught up, or remove it",
                CATCH_UP.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The learner has answered, so it counts as reachable.
    let voters = view.members.iter().filter(|m| m.voter).count() + 1;
    let reachable = view
        .members
        .iter()
        .filter(|m| m.voter && m.reachable == Some(true))
        .count()
        + 1;
    check_quorum(voters, reachable)
        .map_err(|why| refused(format!("promoting node {id} would leave {why}")))?;
    router.change_members(MemberChange::Promote { id }).await?;
    router.members().await
}

/// Asks the node at `addr` who it is before anything enters the log: it
/// must answer (within [`DIAL_TIMEOUT`] per step), over a connection this
/// cluster's TLS settings trust, admit this cluster (same `cluster_id`,
/// this node among its peers), run as node `id`, and belong to no cluster
/// yet (started with `join = true` on an empty data dir). Otherwise the
/// add is refused, naming what is wrong.
async fn probe(router: &Router, id: u64, addr: &str) -> Result<(), Error> {
    let endpoint = router
        .credentials()
        .endpoint(addr)
        .map_err(|e| Error::invalid("addr", e.to_string()))?
        .connect_timeout(DIAL_TIMEOUT);
    let secs = DIAL_TIMEOUT.as_secs();
    let channel = match tokio::time::timeout(DIAL_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(refused(connect_failure(addr, &e))),
        Err(_) => {
            return Err(refused(format!(
                "no answer from {addr} within {secs}s; start the new node first (with join = true) and check the address and that no firewall drops it"
            )))
        }
    };
    let mut client = crate::proto::v1::peer_service_client::PeerServiceClient::new(
        router.credentials().wrap(channel),
    );
    let request = crate::proto::v1::MembersRequest {
        header: Some(router.header()),
    };
    let reply = match tokio::time::timeout(DIAL_TIMEOUT, client.members(request)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => {
            return Err(refused(format!(
                "the node at {addr} refused this cluster's request: {}; nothing was changed",
                status.message()
            )))
        }
        Err(_) => {
            return Err(refused(format!(
                "the node at {addr} accepted a connection but did not answer within {secs}s; is it a drover node, and is it stuck?"
            )))
        }
    };
    let them: NodeStatus = serde_json::from_str(&reply.json).map_err(|e| {
        refused(format!(
            "the node at {addr} answered with a status this drover cannot read ({e}); are both running the same version?"
        ))
    })?;
    if them.node_id != id {
        return Err(refused(format!(
            "the node at {addr} runs as node {}, not node {id}; add it as {} or fix its node_id",
            them.node_id, them.node_id
        )));
    }
    if !them.members.is_empty() {
        let members: Vec<u64> = them.members.iter().map(|m| m.id).collect();
        return Err(refused(format!(
            "node {id} at {addr} already belongs to a cluster (members {members:?}, term {}, applied index {}): it was started without join = true, or holds an old data dir. Adding it would mix two clusters' logs; stop it, empty its data dir, start it with --join (join = true), and add it again",
            them.term, them.applied_index
        )));
    }
    Ok(())
}

/// Why a connection to a would-be member failed, with what to do.
fn connect_failure(addr: &str, e: &tonic::transport::Error) -> String {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    let lower = detail.to_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") || lower.contains("tls") {
        format!(
            "cannot connect to {addr} over TLS ({detail}): its certificate is not trusted by this cluster's [tls] ca, or it does not speak TLS; give it a certificate signed by the cluster's CA"
        )
    } else if lower.contains("refused") {
        format!(
            "cannot connect to {addr}: nothing listens there ({detail}); start the new node first (with join = true) and check the address and port"
        )
    } else {
        format!(
            "cannot connect to {addr}: {detail}; start the new node first (with join = true) and check the address and port"
        )
    }
}

/// Whether `reachable` of `voters` make a quorum; `Err` says why not, to
/// follow "would leave".
fn check_quorum(voters: usize, reachable: usize) -> Result<(), String> {
    let quorum = voters / 2 + 1;
    if reachable < quorum {
        return Err(format!(
            "{reachable} reachable of {voters} voters, fewer than the {quorum} a quorum needs"
        ));
    }
    Ok(())
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
        if let Err(why) = check_quorum(left.len(), reachable) {
            if !force {
                return Err(refused(format!(
                    "removing node {id} would leave {why}; bring members back first, or pass --force to remove it anyway"
                )));
            }
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
    let mut asked = Instant::now();
    loop {
        let view = router.members().await?;
        if view.leader_id == id {
            return Ok(view);
        }
        // raft gives a transfer up after an election timeout, and the
        // message that starts the target's election may be lost (its
        // stream was reconnecting): ask again until the deadline. A
        // transfer to the same node already under way is left alone.
        if asked.elapsed() >= TRANSFER_RETRY && view.leader_id != 0 {
            router.transfer_leader(id).await?;
            asked = Instant::now();
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

#[cfg(test)]
mod tests {
    use super::check_quorum;

    #[test]
    fn quorum_of_reachable_voters() {
        assert!(check_quorum(1, 1).is_ok());
        assert!(check_quorum(2, 1).is_err());
        assert!(check_quorum(3, 2).is_ok());
        assert!(check_quorum(4, 2).is_err());
        assert_eq!(
            check_quorum(5, 2).unwrap_err(),
            "2 reachable of 5 voters, fewer than the 3 a quorum needs"
        );
    }
}
