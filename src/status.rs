//! What a node knows of its raft group, as the rest of the node reads it:
//! published by the driver's loop after every Ready (a `watch`), so no
//! reader ever waits on the loop. Plain data, below the driver, the API
//! and the metrics that read it.

/// A node's part in its raft group, as raft's `StateRole` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Follows a leader, or waits to hear from one.
    #[default]
    Follower,
    /// Campaigning for votes in a new term.
    Candidate,
    /// Asking whether it could win before it starts an election (raft's
    /// pre-vote), so a node cut off does not raise the term.
    PreCandidate,
    /// Leads: proposes entries and replicates the log.
    Leader,
}

impl Role {
    /// Its name in the API and CLI: `follower`, `candidate`, `precandidate` or
    /// `leader`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "precandidate",
            Role::Leader => "leader",
        }
    }
}

/// What the node knows of its raft group, published after every Ready.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// This node's raft id.
    pub node_id: u64,
    /// Its part in the group now.
    pub role: Role,
    /// The raft term it is in.
    pub term: u64,
    /// 0 when no leader is known.
    pub leader_id: u64,
    /// Index of the last entry it knows to be committed.
    pub commit_index: u64,
    /// Index of the last entry its machine applied.
    pub applied_index: u64,
    /// Index of the last entry in its log, committed or not.
    pub last_index: u64,
    /// Every voter and learner; progress is known only on the leader.
    pub members: Vec<Member>,
    /// Nodes removed from the cluster, by the log index of the change that
    /// removed each: their messages are refused, saying so.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub removed_members: std::collections::BTreeMap<u64, u64>,
    /// This node was removed from the cluster, and how it learned it: it
    /// no longer campaigns, and stops unless told to wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
    /// The cluster incarnation this node belongs to (0: none yet).
    #[serde(default)]
    pub incarnation: u64,
    /// Set while this node's clock is too far from a majority's for it to
    /// lead: by how much, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<String>,
}

impl NodeStatus {
    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// Where member `id` is reached, if known.
    pub fn addr_of(&self, id: u64) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.id == id && !m.addr.is_empty())
            .map(|m| m.addr.as_str())
    }
}

/// A member as the leader sees it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The member's raft id.
    pub id: u64,
    /// Its gRPC address, as peers reach it.
    pub addr: String,
    /// A voter; false for a learner, which gets the log but does not vote.
    pub voter: bool,
    /// Highest log index known to be on that node (leader only).
    pub match_index: Option<u64>,
    /// Heard from within an election timeout (leader only).
    pub reachable: Option<bool>,
    /// Its disk and memory alarms, as this node knows them (its own, and
    /// on the leader every voter's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<crate::resources::Alarm>,
    /// Its wall clock minus this node's, in ms, as its last batches said
    /// (filled where members are shown, not in every published status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
}
