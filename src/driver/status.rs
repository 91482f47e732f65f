//! The status the loop publishes, made from raft's state (the types are
//! [`crate::status`]'s, below everything that reads them).

use raft::StateRole;

pub use crate::status::{Member, NodeStatus, Role};
use crate::store::RaftStore;

impl From<StateRole> for Role {
    fn from(r: StateRole) -> Role {
        match r {
            StateRole::Follower => Role::Follower,
            StateRole::Candidate => Role::Candidate,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Leader => Role::Leader,
        }
    }
}

impl NodeStatus {
    /// The status of `raft` on node `node_id`, whose machine has applied
    /// `applied`; members' addresses from `addrs`.
    pub fn of(
        raft: &raft::Raft<RaftStore>,
        node_id: u64,
        addrs: &std::collections::BTreeMap<u64, String>,
        applied: u64,
        pressure: &crate::resources::Pressure,
    ) -> NodeStatus {
        let leader = raft.state == StateRole::Leader;
        let conf = raft.prs().conf();
        let mut members: Vec<Member> = conf
            .voters()
            .ids()
            .iter()
            .map(|id| (id, true))
            .chain(conf.learners().iter().map(|id| (*id, false)))
            .map(|(id, voter)| {
                let progress = raft.prs().get(id).filter(|_| leader);
                Member {
                    id,
                    addr: addrs.get(&id).cloned().unwrap_or_default(),
                    voter,
                    match_index: progress.map(|p| p.matched),
                    reachable: progress.map(|p| id == node_id || p.recent_active),
                    alarms: pressure.alarms_of(id),
                    clock_offset_ms: None,
                }
            })
            .collect();
        members.sort_by_key(|m| m.id);
        NodeStatus {
            node_id,
            role: raft.state.into(),
            term: raft.term,
            leader_id: raft.leader_id,
            commit_index: raft.raft_log.committed,
            applied_index: applied,
            last_index: raft.raft_log.last_index(),
            members,
            removed_members: Default::default(),
            removed: None,
            incarnation: 0,
            clock_skew: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_as_raft_names_them() {
        let json = |r: Role| serde_json::to_string(&r).unwrap();
        assert_eq!(json(Role::Leader), "\"leader\"");
        assert_eq!(json(Role::PreCandidate), "\"precandidate\"");
        assert_eq!(Role::from(StateRole::Candidate), Role::Candidate);
    }

    #[test]
    fn a_status_names_its_leader_and_member_addresses() {
        let status = NodeStatus {
            node_id: 1,
            role: Role::Leader,
            members: vec![
                Member {
                    id: 2,
                    addr: "10.0.0.2:7070".into(),
                    ..Default::default()
                },
                Member {
                    id: 3,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert!(status.is_leader());
        assert_eq!(status.addr_of(2), Some("10.0.0.2:7070"));
        assert_eq!(status.addr_of(3), None, "no address known");
        assert_eq!(status.addr_of(4), None);
    }
}
