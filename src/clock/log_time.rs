//! The log's clock: what time the leader stamps on each entry, and what
//! every node reads as "now" against the times the machine keeps.
//!
//! Log time advances by the leader's monotonic clock, so a step of any
//! node's wall clock (NTP, a VM resumed from suspend, `date -s`) changes
//! no lease, delay, retry or timeout. It stays near wall time by a slew:
//! at most 1% faster or slower than real time toward the majority's wall
//! clock, never backwards, so a duration measured in log time is off by at
//! most 1% while an offset is being corrected.
//!
//! A follower keeps the log time its leader sends with every raft batch,
//! plus its own monotonic time since; a new leader continues from there.
//! Only a node that has heard no leader since it started (a whole cluster
//! restarted, or one node alone) takes the majority's wall clock as its
//! start, and never less than the log's last time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// The slew: log time runs at most 1/SLEW faster or slower than real time.
const SLEW: u64 = 100;
const NS_PER_MS: u64 = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Reading {
    /// Log time in ns as of `at`: ns so that frequent reads add up, and
    /// the slew of each (a hundredth of its elapsed time) too.
    log_ns: u64,
    at: Instant,
    /// Set by a live leader's reading, or by this node's own leadership.
    anchored: bool,
}

/// Shared by the driver (stamps entries when leading), the transport
/// (sends it with every batch when leading), the peer service (takes the
/// leader's) and the API (reads "now").
#[derive(Debug)]
pub struct LogTime {
    reading: Mutex<Reading>,
    leading: AtomicBool,
}

/// How a new leader set the log's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// From the time its last leader sent, plus the monotonic time since.
    Continued,
    /// From the majority's wall clock: no leader heard since start.
    Wall,
    /// From the log's last entry: the clocks read earlier than it.
    LastEntry,
}

impl LogTime {
    /// A node whose log last said `last_at_ms`, before it heard anyone.
    pub fn new(last_at_ms: u64, now: Instant) -> LogTime {
        LogTime {
            reading: Mutex::new(Reading {
                log_ns: last_at_ms.saturating_mul(NS_PER_MS),
                at: now,
                anchored: false,
            }),
            leading: AtomicBool::new(false),
        }
    }

    /// Log time now, in ms.
    pub fn now_ms(&self) -> u64 {
        self.at(Instant::now())
    }

    /// Log time at the instant `now`, in ms.
    pub fn at(&self, now: Instant) -> u64 {
        let r = *self.lock();
        Self::project(&r, now) / NS_PER_MS
    }

    /// Whether this node has a time to go on from: a live leader's, or its
    /// own leadership's.
    pub fn anchored(&self) -> bool {
        self.lock().anchored
    }

    /// The log time a leader sends with its batches; None on a follower.
    pub fn leader_ms(&self) -> Option<u64> {
        self.leading.load(Ordering::Relaxed).then(|| self.now_ms())
    }

    /// A follower heard its leader's log time (ms, 0 from an older build).
    pub fn heard(&self, log_ms: u64, now: Instant) {
        if log_ms == 0 || self.leading.load(Ordering::Relaxed) {
            return;
        }
        *self.lock() = Reading {
            log_ns: log_ms.saturating_mul(NS_PER_MS),
            at: now,
            anchored: true,
        };
    }

    /// This node became leader of a log whose last entry says
    /// `last_at_ms`: from now on it advances the log's time.
    pub fn lead(&self, last_at_ms: u64, majority_wall_ms: u64, now: Instant) -> (u64, Anchor) {
        let mut r = self.lock();
        let (base, anchor) = if r.anchored {
            (Self::project(&r, now) / NS_PER_MS, Anchor::Continued)
        } else {
            (majority_wall_ms, Anchor::Wall)
        };
        let (start, anchor) = if base < last_at_ms {
            (last_at_ms, Anchor::LastEntry)
        } else {
            (base, anchor)
        };
        *r = Reading {
            log_ns: start.saturating_mul(NS_PER_MS),
            at: now,
            anchored: true,
        };
        self.leading.store(true, Ordering::Relaxed);
        (start, anchor)
    }

    /// This node no longer leads: it takes the next leader's time.
    pub fn follow(&self) {
        self.leading.store(false, Ordering::Relaxed);
    }

    /// The leader's log time now: its monotonic time since the last
    /// reading, slewed by at most 1/SLEW of it toward `target_ms` (the
    /// majority's wall clock).
    pub fn advance(&self, target_ms: u64, now: Instant) -> u64 {
        let mut r = self.lock();
        let elapsed =
            u64::try_from(now.saturating_duration_since(r.at).as_nanos()).unwrap_or(u64::MAX);
        let plain = r.log_ns.saturating_add(elapsed);
        let target = target_ms.saturating_mul(NS_PER_MS);
        let room = elapsed / SLEW;
        let next = if target > plain {
            plain.saturating_add((target - plain).min(room))
        } else {
            plain - (plain - target).min(room)
        };
        r.log_ns = next;
        r.at = now;
        next / NS_PER_MS
    }

    fn project(r: &Reading, now: Instant) -> u64 {
        let elapsed =
            u64::try_from(now.saturating_duration_since(r.at).as_nanos()).unwrap_or(u64::MAX);
        r.log_ns.saturating_add(elapsed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reading> {
        self.reading.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn a_step_of_the_wall_clock_moves_log_time_by_at_most_the_slew() {
        let t = Instant::now();
        let clock = LogTime::new(0, t);
        assert_eq!(clock.lead(0, 1_000_000, t), (1_000_000, Anchor::Wall));
        // The wall steps an hour ahead: 10 s later log time is 10.1 s on.
        let ten = t + Duration::from_secs(10);
        assert_eq!(clock.advance(1_000_000 + HOUR, ten), 1_010_100);
        // And an hour back: 10 s later it is 9.9 s on, never back.
        let twenty = ten + Duration::from_secs(10);
        assert_eq!(clock.advance(500_000, twenty), 1_020_000);
        // Reads many times a millisecond still add up, and so does their
        // slew (297 µs of each 300).
        let mut now = twenty;
        let mut last = 0;
        for _ in 0..1000 {
            now += Duration::from_micros(300);
            last = clock.advance(0, now);
        }
        assert_eq!(last, 1_020_297);
    }

    #[test]
    fn the_slew_closes_a_small_offset_and_then_keeps_to_it() {
        let t = Instant::now();
        let clock = LogTime::new(0, t);
        clock.lead(0, 5_000, t);
        let later = t + Duration::from_secs(100);
        // 200 ms behind the wall: 100 s of slew (1 s of room) closes it.
        assert_eq!(clock.advance(105_200, later), 105_200);
        let more = later + Duration::from_secs(1);
        assert_eq!(clock.advance(106_200, more), 106_200);
    }

    #[test]
    fn a_new_leader_continues_the_time_its_leader_sent() {
        let t = Instant::now();
        let clock = LogTime::new(500, t);
        assert_eq!(clock.leader_ms(), None, "a follower sends none");
        clock.heard(2_000, t);
        let later = t + Duration::from_secs(3);
        assert_eq!(clock.at(later), 5_000);
        // Its own wall clock an hour ahead does not matter.
        assert_eq!(
            clock.lead(1_900, 5_000 + HOUR, later),
            (5_000, Anchor::Continued)
        );
        assert!(clock.leader_ms().is_some());
        clock.heard(1, later);
        assert_eq!(clock.at(later), 5_000, "a leader keeps its own time");
        clock.follow();
        clock.heard(6_000, later);
        assert_eq!(clock.at(later), 6_000);
    }

    #[test]
    fn log_time_never_goes_below_the_logs_last_entry() {
        let t = Instant::now();
        // Restarted with the wall clock behind what the log already says.
        let clock = LogTime::new(9_000, t);
        assert_eq!(clock.lead(9_000, 4_000, t), (9_000, Anchor::LastEntry));
        assert_eq!(
            clock.advance(4_000, t + Duration::from_secs(1)),
            9_990,
            "slowed toward the wall clock, never stopped"
        );
    }
}
