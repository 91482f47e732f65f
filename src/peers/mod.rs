//! What makes one node talk to its peers, below the driver that uses it:
//! the transport that carries raft messages, the cluster's incarnation,
//! the peers' clocks, and the inputs the peer side hands the driver.

pub mod clocks;
pub mod identity;
pub mod transport;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::proto::v1 as pb;

/// A change of membership; one raft conf change each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// Joins as a learner: receives the log, does not vote yet.
    AddLearner {
        /// The new member's raft id (its `node_id`).
        id: u64,
        /// Its gRPC address, as its peers reach it.
        addr: String,
    },
    /// A learner that has caught up becomes a voter.
    Promote {
        /// The learner's raft id.
        id: u64,
    },
    /// Leaves the cluster, voter or learner: its messages are refused from
    /// then on, and it stops (unless `wait_when_removed`).
    Remove {
        /// The member's raft id.
        id: u64,
    },
}

/// Inputs to the raft driver other than proposals.
pub enum Control {
    /// A raft message from a peer.
    Step(raft::eraftpb::Message),
    /// A send to this peer failed.
    Unreachable(u64),
    /// This node (joining, with none) took its leader's incarnation: keep it.
    Incarnation(u64),
    /// Peer `by` refused this node's messages: it applied the removal of
    /// this node at log index `at`.
    Removed {
        /// The peer that refused.
        by: u64,
        /// The log index of the change that removed this node.
        at: u64,
        /// The peer's refusal, as it worded it.
        reason: String,
    },
    /// Hand leadership to this node.
    TransferLeader(u64),
    /// How streaming a snapshot to a follower ended.
    SnapshotSent {
        /// The follower it was sent to.
        to: u64,
        /// Whether the follower took all of it.
        ok: bool,
    },
    /// Confirm leadership with a quorum and answer with the commit index
    /// every read after it must see (raft's read index).
    ReadIndex(tokio::sync::oneshot::Sender<u64>),
    /// This node's config asks for these policies now.
    Policies(Box<crate::policies::Policies>, String),
    /// Ids of live jobs a query may match, from the machine's indexes.
    FindJobs(
        Box<crate::machine::find::JobQuery>,
        crate::job::JobId,
        tokio::sync::oneshot::Sender<Vec<crate::job::JobId>>,
    ),
    /// Ready jobs by tenant, every queue, from the machine's indexes.
    ReadyByTenant(tokio::sync::oneshot::Sender<std::collections::BTreeMap<String, u64>>),
    /// Budget counters by tenant, from the machine.
    RunTotals(tokio::sync::oneshot::Sender<crate::machine::runs::RunTotals>),
    /// Take a snapshot now and answer with its file.
    TakeSnapshot(tokio::sync::oneshot::Sender<Result<std::path::PathBuf, crate::error::Error>>),
}

/// Names this node and its cluster on every peer request (the incarnation
/// as it is when the request is made: a joining node takes one).
pub fn header(cfg: &Config, incarnation: &identity::Incarnation) -> pb::PeerHeader {
    pb::PeerHeader {
        cluster_id: cfg.cluster_id.clone(),
        from: cfg.node_id,
        entry_version: u32::from(cfg.entry_version),
        incarnation: incarnation.get(),
    }
}

/// What this node shows its peers. The node checked the files at start; if
/// one went missing since, peers refuse this node and the log says why.
pub fn peer_credentials(cfg: &Config) -> crate::wire::Credentials {
    cfg.peer_credentials().unwrap_or_else(|e| {
        tracing::error!(event = "peer_credentials_unreadable", error = %e, "cannot read what this node shows its peers");
        crate::wire::Credentials::default()
    })
}
