//! When a failed job runs again: exponential backoff with deterministic
//! jitter (a pure function of the job and attempt).

use super::*;

impl crate::policies::JobPolicies {
    /// Delay before retry number `attempt` (1-based): exponential from the base,
    /// capped, plus up to a quarter of jitter derived from the job id so jobs
    /// that failed together do not all come back in the same millisecond.
    pub fn backoff_ms(&self, job_id: JobId, attempt: u32) -> u64 {
        let exp = attempt.saturating_sub(1).min(32);
        let delay = self
            .retry_base_delay_ms
            .saturating_mul(1u64 << exp)
            .min(self.retry_max_delay_ms);
        let jitter_range = delay / 4 + 1;
        delay + mix(job_id ^ (u64::from(attempt) << 48)) % jitter_range
    }
}
