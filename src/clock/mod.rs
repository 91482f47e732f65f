//! The node's two clocks as the rest of it reads them: the wall clock
//! (for people and for comparing nodes' clocks) and a monotonic one (for
//! durations), and the log's own time ([`LogTime`]).

pub mod log_time;
pub use log_time::LogTime;

use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock in ms since the epoch: for what people read (file
/// names, display) and for comparing clocks. Durations and the times the
/// machine keeps go by [`LogTime`] instead.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// ms of the monotonic clock since this process first asked.
pub fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
