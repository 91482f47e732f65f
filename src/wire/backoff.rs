//! The one backoff every retry loop uses (client calls, worker reconnects
//! and result resends, forwarded proposals, raft links): exponential from a
//! base, capped, with jitter, so the clients of a node that went away do
//! not all come back at the same instant.

use std::time::Duration;

/// The wait before retry `attempt` (0-based): a random time between half
/// and all of `base · 2^attempt`, at most `cap`.
pub fn jittered(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let full = base.saturating_mul(1u32 << attempt.min(20)).min(cap);
    let half = full / 2;
    let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let random = getrandom::u64().unwrap_or_else(|_| u64::from(std::process::id()));
    half + Duration::from_nanos(random % spread.saturating_add(1))
}

/// [`jittered`] waits, counting the attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Waits from `base`, doubling to `cap`, with jitter.
    pub const fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The wait before the next try; each call waits longer, to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = jittered(self.attempt, self.base, self.cap);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// After a success: the next failure starts from the base again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(1));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let d = jittered(0, base, cap);
            assert!(d >= base / 2 && d <= base, "{d:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 10, "waits are spread, not in step");
        for attempt in [10, 30, 1000] {
            let d = jittered(attempt, base, cap);
            assert!(d >= cap / 2 && d <= cap, "{d:?}");
        }
        let mut b = Backoff::new(base, cap);
        let first = b.next_delay();
        let _ = (b.next_delay(), b.next_delay(), b.next_delay());
        assert!(b.next_delay() >= base * 4 && first <= base);
        b.reset();
        assert!(b.next_delay() <= base);
    }
}
