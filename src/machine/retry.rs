//! Retry jitter: a pure function of the job and the retry, so every node
//! schedules a retry for the same millisecond. The policy itself is
//! [`crate::policies::Retry`].

use super::*;

/// A number derived from the job id and retry number.
pub fn jitter(job_id: JobId, retry: u32) -> u64 {
    mix(job_id ^ (u64::from(retry) << 48))
}
