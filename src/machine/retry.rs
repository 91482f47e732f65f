//! Retry jitter: a pure function of the job and the retry, so every node
//! schedules a retry for the same millisecond. The policy itself is
//! [`crate::policies::Retry`].

pub use crate::mix::jitter;
