//! What makes one node part of a cluster above its driver: the router
//! that sends a follower's writes to the leader, and membership changes.
//! The peer side below the driver (transport, identity, clocks) is
//! [`crate::peers`]; its names are kept here too for code that used them.

pub mod admin;
pub mod router;

pub use crate::peers::{clocks, header, identity, peer_credentials, transport};
pub use crate::peers::{Control, MemberChange};

use serde::{Deserialize, Serialize};

use crate::command::Command;

/// What a follower forwards to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forwardable {
    /// A command for the machine.
    Command(Command),
    /// A membership change.
    Member(MemberChange),
    /// Hand leadership to this node.
    TransferLeader(u64),
}
