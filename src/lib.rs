//! drover: a job queue in one binary.
//!
//! Every change of state is a [`command::Command`] proposed through the raft
//! log ([`driver`]), persisted in sled ([`store`]) and applied by the pure
//! [`machine`]. The gRPC and HTTP adapters in [`api`] translate requests into
//! commands and outcomes into responses; [`node`] wires them together.

pub mod command;
pub mod config;
pub mod driver;
pub mod error;
pub mod job;
pub mod machine;
pub mod proto;
pub mod store;

pub use config::Config;
pub use error::Error;
