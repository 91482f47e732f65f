//! drover: a job queue in one binary.
//!
//! Every change of state is a [`command::Command`] proposed through the raft
//! log ([`driver`]), persisted in sled ([`store`]) and applied by the pure
//! [`machine`]. The gRPC and HTTP adapters in [`api`] translate requests into
//! commands and outcomes into responses; [`node`] wires them together.

#![warn(missing_docs)]

pub mod api;
pub mod backup;
pub mod bench;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod command;
pub mod config;
pub mod driver;
pub mod error;
pub mod history;
pub mod job;
pub mod machine;
pub mod metrics;
pub mod mix;
pub mod node;
pub mod otlp;
pub mod peers;
pub mod policies;
pub mod pools;
pub mod proto;
pub mod reload;
pub mod resources;
pub mod restore;
pub mod schedules;
pub mod sealing;
pub mod shutdown;
pub mod snapshot;
pub mod spill;
pub mod status;
pub mod store;
pub mod systemd;
pub mod token;
pub mod window;
pub mod wire;
pub mod worker_exec;
pub mod workers;

pub use config::Config;
pub use error::Error;
