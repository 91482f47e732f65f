//! How far each peer's wall clock is from this node's, and whether this
//! node's clock is the one that is off.
//!
//! Every raft batch carries its sender's wall clock at sending. A reading
//! is the sender's clock minus ours at arrival, so it is the true offset
//! less the time the batch was underway: the largest reading of the last
//! few seconds is the best estimate. Wall clocks are only read here to be
//! compared; log time (see [`crate::clock::log_time`]) measures durations
//! with the monotonic clock, so a step of any node's wall clock changes no
//! lease, delay or timeout. What a skewed clock would still distort is the
//! log's wall anchor (cron slots, daily caps, the times shown), so a node
//! further than `[cluster] max_clock_offset` from a majority of the voters
//! does not campaign, hands leadership away, and its votes are refused.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Readings older than this say nothing of a peer's clock now.
const FRESH: Duration = Duration::from_secs(15);
/// The largest reading of the current and the previous window is the
/// offset: the delay of a queued batch only ever makes a reading smaller.
const WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
struct Readings {
    window_start: Instant,
    current: i64,
    previous: Option<i64>,
    heard: Instant,
}

impl Readings {
    fn offset(&self) -> i64 {
        self.previous.map_or(self.current, |p| p.max(self.current))
    }
}

/// Why this node's clock keeps it from leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    /// The majority's clock minus this node's, in ms.
    pub offset_ms: i64,
    /// The `[cluster] max_clock_offset` it is past, in ms.
    pub max_offset_ms: u64,
}

impl std::fmt::Display for Skew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = if self.offset_ms < 0 {
            "ahead of"
        } else {
            "behind"
        };
        write!(
            f,
            "this node's clock is {} ms {dir} a majority of the voters (max_clock_offset {} ms): it does not lead until its clock is back (check NTP or chrony on this host)",
            self.offset_ms.unsigned_abs(),
            self.max_offset_ms
        )
    }
}

/// Peers' clock offsets as this node reads them: written by the peer
/// service, judged by the driver, shown in `cluster members` and
/// `drover_clock_offset_seconds`.
pub struct Clocks {
    node_id: u64,
    /// 0: offsets are shown but nobody is held back.
    max_offset_ms: u64,
    peers: Mutex<BTreeMap<u64, Readings>>,
}

impl Clocks {
    /// No readings yet, for node `node_id` with `[cluster] max_clock_offset`
    /// (zero: offsets are shown, nobody is held back).
    pub fn new(node_id: u64, max_offset: Duration) -> Clocks {
        Clocks {
            node_id,
            max_offset_ms: u64::try_from(max_offset.as_millis()).unwrap_or(u64::MAX),
            peers: Mutex::default(),
        }
    }

    /// `[cluster] max_clock_offset` in ms; 0 when the check is off.
    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    /// Peer `from` sent a batch when its wall clock read `sent_at_ms`; ours
    /// reads `here_ms` as it arrives.
    pub fn note(&self, from: u64, sent_at_ms: u64, here_ms: u64, now: Instant) {
        if sent_at_ms == 0 {
            // An older build sends no reading.
            return;
        }
        let reading = i64::try_from(sent_at_ms)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(here_ms).unwrap_or(i64::MAX));
        let mut peers = self.lock();
        match peers.get_mut(&from) {
            Some(r) if now.saturating_duration_since(r.heard) < FRESH => {
                if now.saturating_duration_since(r.window_start) >= WINDOW {
                    r.previous = Some(r.current);
                    r.current = reading;
                    r.window_start = now;
                } else {
                    r.current = r.current.max(reading);
                }
                r.heard = now;
            }
            _ => {
                peers.insert(
                    from,
                    Readings {
                        window_start: now,
                        current: reading,
                        previous: None,
                        heard: now,
                    },
                );
            }
        }
    }

    /// Peer `id`'s clock minus this node's, in ms, if heard lately.
    pub fn offset_of(&self, id: u64, now: Instant) -> Option<i64> {
        if id == self.node_id {
            return Some(0);
        }
        self.lock()
            .get(&id)
            .filter(|r| now.saturating_duration_since(r.heard) < FRESH)
            .map(Readings::offset)
    }

    /// Every peer heard lately with its offset, and this node (0), so the
    /// series is there on a lone node too.
    pub fn offsets(&self, now: Instant) -> BTreeMap<u64, i64> {
        let mut out: BTreeMap<u64, i64> = self
            .lock()
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.heard) < FRESH)
            .map(|(&id, r)| (id, r.offset()))
            .collect();
        out.insert(self.node_id, 0);
        out
    }

    /// Whether this node's clock is further than the limit from a majority
    /// of `voters` that agree among themselves: some voter's clock is
    /// within the limit of a majority's, and this node's is not within it.
    /// Where no majority agrees (clocks spread wide) nobody is held back
    /// (the alert says so), lest leadership pass round and round. A node
    /// that cannot hear a majority is not judged; the voters it reaches
    /// refuse it if it is off (see [`Clocks::refuses_vote`]).
    pub fn skew(&self, voters: &[u64], now: Instant) -> Option<Skew> {
        if self.max_offset_ms == 0 || !voters.contains(&self.node_id) {
            return None;
        }
        let known: Vec<i64> = voters
            .iter()
            .filter_map(|&v| self.offset_of(v, now))
            .collect();
        let quorum = voters.len() / 2 + 1;
        let max = self.max_offset_ms;
        known
            .iter()
            .filter(|o| o.unsigned_abs() > max)
            .filter(|&&o| known.iter().filter(|&&w| w.abs_diff(o) <= max).count() >= quorum)
            .min_by_key(|o| o.unsigned_abs())
            .map(|&offset_ms| Skew {
                offset_ms,
                max_offset_ms: max,
            })
    }

    /// Whether this node refuses its vote to candidate `from`: its clock is
    /// off by more than the limit, and this node knows its own clock is
    /// with a majority (so one skewed node cannot veto the others). Returns
    /// the candidate's offset when refusing.
    pub fn refuses_vote(&self, from: u64, voters: &[u64], now: Instant) -> Option<i64> {
        if self.max_offset_ms == 0 {
            return None;
        }
        let theirs = self.offset_of(from, now)?;
        if theirs.unsigned_abs() <= self.max_offset_ms {
            return None;
        }
        let agree = voters
            .iter()
            .filter_map(|&v| self.offset_of(v, now))
            .filter(|o| o.unsigned_abs() <= self.max_offset_ms)
            .count();
        (agree > voters.len() / 2).then_some(theirs)
    }

    /// The majority's wall clock minus this node's, in ms: the median of
    /// the clocks of the voters it has heard, its own included; of two in
    /// the middle, the earlier (a log time started late catches up; one
    /// started early would expire leases and fire delays). One node far
    /// off cannot move it.
    pub fn majority_offset_ms(&self, voters: &[u64], now: Instant) -> i64 {
        let mut off: Vec<i64> = voters
            .iter()
            .filter_map(|&v| self.offset_of(v, now))
            .collect();
        if !voters.contains(&self.node_id) {
            off.push(0);
        }
        off.sort_unstable();
        match off.len() {
            0 => 0,
            n => off[(n - 1) / 2],
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Readings>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    fn clocks(node: u64) -> Clocks {
        Clocks::new(node, Duration::from_millis(500))
    }

    #[test]
    fn a_reading_is_the_largest_of_recent_ones_since_delay_only_lowers_it() {
        let c = clocks(1);
        let t = Instant::now();
        c.note(2, 10_000, 10_030, t); // 30 ms underway
        c.note(2, 10_100, 10_101, t + Duration::from_millis(100));
        assert_eq!(c.offset_of(2, t + Duration::from_millis(200)), Some(-1));
        assert_eq!(c.offset_of(3, t), None, "never heard");
        assert_eq!(c.offset_of(1, t), Some(0), "itself");
        assert_eq!(
            c.offset_of(2, t + FRESH + Duration::from_secs(1)),
            None,
            "a silent peer's reading goes stale"
        );
        c.note(2, 0, 5, t);
        assert_eq!(c.offset_of(2, t), Some(-1), "an older build sends 0");
    }

    #[test]
    fn a_step_of_a_peers_clock_is_seen_within_two_windows() {
        let c = clocks(1);
        let t = Instant::now();
        c.note(2, 1_000, 1_000, t);
        let later = t + WINDOW + Duration::from_millis(1);
        c.note(2, 1_000 + HOUR, 1_000, later);
        assert_eq!(c.offset_of(2, later), Some(HOUR as i64));
        let t = Instant::now();
        let c = clocks(1);
        c.note(2, 1_000 + HOUR, 1_000, t);
        c.note(2, 1_000, 1_000, t + WINDOW);
        c.note(2, 1_000, 1_000, t + WINDOW * 2);
        assert_eq!(c.offset_of(2, t + WINDOW * 2), Some(0), "stepped back");
    }

    #[test]
    fn a_node_a_majority_disagrees_with_is_skewed_and_one_odd_peer_is_not() {
        let t = Instant::now();
        let voters = [1, 2, 3];
        // Node 3 is an hour ahead: as node 3 reads it, both peers are behind.
        let three = clocks(3);
        three.note(1, 1_000, HOUR + 1_000, t);
        assert_eq!(
            three.skew(&voters, t),
            None,
            "one peer cannot tell who is off"
        );
        three.note(2, 1_000, HOUR + 1_000, t);
        let skew = three.skew(&voters, t).expect("two of three disagree");
        assert_eq!(skew.offset_ms, -(HOUR as i64));
        assert!(skew.to_string().contains("ahead of a majority"), "{skew}");
        // As node 1 reads it: node 3 is off, node 2 agrees.
        let one = clocks(1);
        one.note(3, HOUR + 1_000, 1_000, t);
        assert_eq!(one.skew(&voters, t), None);
        assert_eq!(
            one.refuses_vote(3, &voters, t),
            None,
            "node 1 cannot yet tell it is not the odd one"
        );
        one.note(2, 1_000, 1_000, t);
        assert_eq!(one.refuses_vote(3, &voters, t), Some(HOUR as i64));
        assert_eq!(one.refuses_vote(2, &voters, t), None);
        // Turned off: seen, not judged.
        let off = Clocks::new(3, Duration::ZERO);
        off.note(1, 1, HOUR + 1, t);
        off.note(2, 1, HOUR + 1, t);
        assert_eq!(off.skew(&voters, t), None);
        assert_eq!(off.offset_of(1, t), Some(-(HOUR as i64)));
        // A lone node is its own majority.
        assert_eq!(clocks(1).skew(&[1], t), None);
    }

    #[test]
    fn the_majority_wall_clock_is_the_median_so_one_node_cannot_move_it() {
        let t = Instant::now();
        let voters = [1, 2, 3];
        let one = clocks(1);
        assert_eq!(one.majority_offset_ms(&voters, t), 0, "alone");
        one.note(3, HOUR + 5_000, 5_000, t);
        assert_eq!(one.majority_offset_ms(&voters, t), 0, "of two, the earlier");
        one.note(2, 5_010, 5_000, t);
        assert_eq!(one.majority_offset_ms(&voters, t), 10);
        // This node an hour ahead: the others pull it back, even when only
        // one of them is heard yet.
        let three = clocks(3);
        three.note(1, 5_000, HOUR + 5_000, t);
        assert_eq!(three.majority_offset_ms(&voters, t), -(HOUR as i64));
        three.note(2, 5_000, HOUR + 5_000, t);
        assert_eq!(three.majority_offset_ms(&voters, t), -(HOUR as i64));
    }

    #[test]
    fn clocks_spread_wide_hold_nobody_back() {
        // 0, +0.6 s and -0.6 s with a 0.5 s limit: no majority agrees, so
        // no node is judged skewed and leadership does not pass round.
        let t = Instant::now();
        let voters = [1, 2, 3];
        let one = clocks(1);
        one.note(2, 10_600, 10_000, t);
        one.note(3, 9_400, 10_000, t);
        assert_eq!(one.skew(&voters, t), None);
        let two = clocks(2);
        two.note(1, 10_000, 10_600, t);
        two.note(3, 9_400, 10_600, t);
        assert_eq!(two.skew(&voters, t), None);
        // Five nodes, three agreeing: the two outside are skewed.
        let five = [1, 2, 3, 4, 5];
        let four = clocks(4);
        for (peer, at) in [(1, 10_000), (2, 10_100), (3, 9_900), (5, 12_000)] {
            four.note(peer, at, 12_000, t);
        }
        let skew = four.skew(&five, t).expect("three agree without node 4");
        assert_eq!(skew.offset_ms, -1_900);
    }
}
