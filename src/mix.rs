//! Fixed mixing functions: every node derives the same numbers from the
//! same inputs, so the state machine stays pure and replicas agree.

/// splitmix64: a fixed mixing function, so jitter is a pure function of the job.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A retry's jitter: a number derived from the job id and the retry
/// number, so every node schedules a retry for the same millisecond.
pub fn jitter(job_id: u64, retry: u32) -> u64 {
    mix(job_id ^ (u64::from(retry) << 48))
}
