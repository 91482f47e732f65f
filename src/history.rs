//! Each node's recent history of its queues, for charts that start full:
//! per queue and overall, jobs enqueued, completed and failed per second
//! and the p50/p95/p99 of wait and run times, over the last hour in
//! 10-second buckets and over the last day in 5-minute buckets.
//!
//! Memory is bounded: a closed bucket keeps its three counts and six
//! percentiles (56 bytes), so a queue's day and hour take about 36 KB;
//! only the two buckets being filled keep a histogram (log-scale bins of
//! 20% each, so a percentile is within 10% of the true one). At most
//! [`MAX_QUEUES`] queues get a series of their own; the overall series
//! counts every queue.
//!
//! Times come in as arguments, so this is tested without a clock. The
//! node passes [`History::now_ms`]: its start on the wall clock plus the
//! monotonic time since, so a step of the wall clock neither hides a
//! stretch of the chart nor files work under a future bucket.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Queues with a series of their own; later ones count only overall.
pub const MAX_QUEUES: usize = 1000;

/// A range a chart can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// The last hour, in 10-second buckets.
    Hour,
    /// The last day, in 5-minute buckets.
    Day,
}

impl Range {
    /// `1h` or `24h` (also `1d`).
    pub fn parse(s: &str) -> Option<Range> {
        match s {
            "1h" => Some(Range::Hour),
            "24h" | "1d" => Some(Range::Day),
            _ => None,
        }
    }

    /// Its name in answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Range::Hour => "1h",
            Range::Day => "24h",
        }
    }

    /// Its buckets' width in ms.
    pub fn bucket_ms(self) -> u64 {
        match self {
            Range::Hour => 10_000,
            Range::Day => 300_000,
        }
    }

    /// How many buckets it spans.
    pub fn buckets(self) -> usize {
        match self {
            Range::Hour => 360,
            Range::Day => 288,
        }
    }
}

/// Which time an observation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// From ready to leased.
    Wait,
    /// From leased to its result.
    Run,
}

/// The bins: bin `i` holds times below `GROWTH^i` ms (bin 0: under 1 ms).
const GROWTH: f64 = 1.2;
/// Bins of 20% up to about 5 days; longer times count in the last.
const BINS: usize = 110;

fn bin_of(ms: u64) -> usize {
    if ms == 0 {
        return 0;
    }
    let i = ((ms as f64).ln() / GROWTH.ln()).floor() as usize + 1;
    i.min(BINS - 1)
}

/// The middle of bin `i`, in ms.
fn bin_value(i: usize) -> u32 {
    if i == 0 {
        return 0;
    }
    let low = GROWTH.powi(i as i32 - 1);
    let high = GROWTH.powi(i as i32);
    ((low * high).sqrt().round() as u64).min(u32::MAX as u64) as u32
}

/// p50, p95 and p99 in ms; `NONE` where nothing was observed.
type Percentiles = [u32; 3];
const NONE: u32 = u32::MAX;

#[derive(Clone)]
struct Bins(Box<[u32; BINS]>);

impl Bins {
    fn new() -> Bins {
        Bins(Box::new([0; BINS]))
    }

    fn add(&mut self, bin: usize) {
        let b = &mut self.0[bin];
        *b = b.saturating_add(1);
    }

    fn percentiles(&self) -> Percentiles {
        let total: u64 = self.0.iter().map(|&n| n as u64).sum();
        if total == 0 {
            return [NONE; 3];
        }
        let mut out = [NONE; 3];
        for (slot, q) in out.iter_mut().zip([0.50, 0.95, 0.99]) {
            // The smallest bin whose cumulative count reaches rank q.
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, &n) in self.0.iter().enumerate() {
                seen += n as u64;
                if seen >= rank {
                    *slot = bin_value(i);
                    break;
                }
            }
        }
        out
    }
}

/// A bucket's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Jobs enqueued.
    pub enqueued: u64,
    /// Jobs that succeeded.
    pub completed: u64,
    /// Attempts that failed (retried or not).
    pub failed: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.enqueued = self.enqueued.saturating_add(other.enqueued);
        self.completed = self.completed.saturating_add(other.completed);
        self.failed = self.failed.saturating_add(other.failed);
    }
}

/// A bucket once closed: 56 bytes.
#[derive(Clone, Copy)]
struct Closed {
    start_ms: u64,
    counts: Counts,
    wait: Percentiles,
    run: Percentiles,
}

/// The bucket being filled.
struct Live {
    start_ms: u64,
    counts: Counts,
    wait: Bins,
    run: Bins,
}

impl Live {
    fn new(start_ms: u64) -> Live {
        Live {
            start_ms,
            counts: Counts::default(),
            wait: Bins::new(),
            run: Bins::new(),
        }
    }

    fn close(&self) -> Closed {
        Closed {
            start_ms: self.start_ms,
            counts: self.counts,
            wait: self.wait.percentiles(),
            run: self.run.percentiles(),
        }
    }
}

/// One range's buckets.
struct Ring {
    range: Range,
    closed: VecDeque<Closed>,
    live: Option<Live>,
}

impl Ring {
    fn new(range: Range) -> Ring {
        Ring {
            range,
            closed: VecDeque::new(),
            live: None,
        }
    }

    /// The live bucket for `now`, closing the one before it.
    fn at(&mut self, now_ms: u64) -> &mut Live {
        let width = self.range.bucket_ms();
        let start = now_ms - now_ms % width;
        // A clock stepped back: the newer bucket stays the live one.
        let stale = self.live.as_ref().is_some_and(|l| l.start_ms < start);
        if stale {
            if let Some(l) = self.live.take() {
                self.closed.push_back(l.close());
            }
        }
        self.prune(now_ms);
        self.live.get_or_insert_with(|| Live::new(start))
    }

    fn prune(&mut self, now_ms: u64) {
        let keep_from = self.keep_from(now_ms);
        while self.closed.front().is_some_and(|c| c.start_ms < keep_from) {
            self.closed.pop_front();
        }
    }

    fn keep_from(&self, now_ms: u64) -> u64 {
        let width = self.range.bucket_ms();
        let start = now_ms - now_ms % width;
        start.saturating_sub(width * (self.range.buckets() as u64 - 1))
    }

    fn is_empty(&self, now_ms: u64) -> bool {
        let keep_from = self.keep_from(now_ms);
        self.closed.back().is_none_or(|c| c.start_ms < keep_from)
            && self.live.as_ref().is_none_or(|l| l.start_ms < keep_from)
    }

    /// One point per bucket of the range ending at `now`, oldest first;
    /// buckets with nothing in them are zeros. Rates are over the part of
    /// each bucket that was counted: not before `since_ms`, not after now.
    fn points(&self, now_ms: u64, since_ms: u64) -> Vec<Point> {
        let width = self.range.bucket_ms();
        let from = self.keep_from(now_ms);
        let mut by_start: HashMap<u64, Closed> = self
            .closed
            .iter()
            .filter(|c| c.start_ms >= from)
            .map(|c| (c.start_ms, *c))
            .collect();
        if let Some(l) = &self.live {
            by_start.insert(l.start_ms, l.close());
        }
        (0..self.range.buckets() as u64)
            .map(|i| {
                let start = from + i * width;
                let counted = (start + width)
                    .min(now_ms)
                    .saturating_sub(start.max(since_ms));
                let seconds = counted.max(1_000) as f64 / 1000.0;
                let c = by_start.get(&start);
                let counts = c.map(|c| c.counts).unwrap_or_default();
                let pct = |p: Option<Percentiles>| {
                    p.filter(|p| p[0] != NONE).map(|p| TimesMs {
                        p50: p[0],
                        p95: p[1],
                        p99: p[2],
                    })
                };
                Point {
                    at_ms: start,
                    enqueued: counts.enqueued,
                    completed: counts.completed,
                    failed: counts.failed,
                    enqueued_per_sec: rate(counts.enqueued, seconds),
                    completed_per_sec: rate(counts.completed, seconds),
                    failed_per_sec: rate(counts.failed, seconds),
                    wait_ms: pct(c.map(|c| c.wait)),
                    run_ms: pct(c.map(|c| c.run)),
                }
            })
            .collect()
    }
}

// Not rounded: one job in a 5-minute bucket is 0.0033/s, not 0.
fn rate(n: u64, seconds: f64) -> f64 {
    n as f64 / seconds
}

/// An hour and a day of one queue, or of all of them.
struct Series {
    hour: Ring,
    day: Ring,
}

impl Series {
    fn new() -> Series {
        Series {
            hour: Ring::new(Range::Hour),
            day: Ring::new(Range::Day),
        }
    }

    fn count(&mut self, now_ms: u64, counts: Counts) {
        self.hour.at(now_ms).counts.add(counts);
        self.day.at(now_ms).counts.add(counts);
    }

    fn time(&mut self, now_ms: u64, timing: Timing, bin: usize) {
        for ring in [&mut self.hour, &mut self.day] {
            let live = ring.at(now_ms);
            match timing {
                Timing::Wait => live.wait.add(bin),
                Timing::Run => live.run.add(bin),
            }
        }
    }

    fn ring(&self, range: Range) -> &Ring {
        match range {
            Range::Hour => &self.hour,
            Range::Day => &self.day,
        }
    }
}

/// One bucket of a chart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Point {
    /// When the bucket starts, in ms since the epoch.
    pub at_ms: u64,
    /// Jobs enqueued in it.
    pub enqueued: u64,
    /// Jobs that succeeded in it.
    pub completed: u64,
    /// Attempts that failed in it (retried or not).
    pub failed: u64,
    /// `enqueued` per second (the newest bucket: over the part that has passed).
    pub enqueued_per_sec: f64,
    /// `completed` per second.
    pub completed_per_sec: f64,
    /// `failed` per second.
    pub failed_per_sec: f64,
    /// Wait times (ready to leased) of the jobs leased in it; absent when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<TimesMs>,
    /// Run times (leased to result) of the attempts that ended in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<TimesMs>,
}

/// Percentiles of times in a bucket, in ms (within 10%).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TimesMs {
    /// The median.
    pub p50: u32,
    /// The 95th percentile.
    pub p95: u32,
    /// The 99th percentile.
    pub p99: u32,
}

/// Every queue's history on this node.
pub struct History {
    since_ms: u64,
    started: std::time::Instant,
    overall: Series,
    queues: HashMap<String, Series>,
    /// Each queue's event totals at the last sample (see [`History::sample`]).
    last_totals: HashMap<String, Counts>,
}

impl History {
    /// An empty history that starts counting at `now_ms`.
    pub fn new(now_ms: u64) -> History {
        History {
            since_ms: now_ms,
            started: std::time::Instant::now(),
            overall: Series::new(),
            queues: HashMap::new(),
            last_totals: HashMap::new(),
        }
    }

    /// The time to file work under and to draw charts to: the wall clock
    /// at [`History::new`] plus the monotonic time since.
    pub fn now_ms(&self) -> u64 {
        let since = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since_ms.saturating_add(since)
    }

    /// When this node started counting (its start): the charts and
    /// counters hold nothing from before.
    pub fn since_ms(&self) -> u64 {
        self.since_ms
    }

    fn series(&mut self, queue: &str) -> Option<&mut Series> {
        if !self.queues.contains_key(queue) {
            if self.queues.len() >= MAX_QUEUES {
                return None;
            }
            self.queues.insert(queue.to_string(), Series::new());
        }
        self.queues.get_mut(queue)
    }

    /// Adds a wait or run time of a job of `queue`.
    pub fn time(&mut self, now_ms: u64, queue: &str, timing: Timing, ms: u64) {
        let bin = bin_of(ms);
        self.overall.time(now_ms, timing, bin);
        if let Some(s) = self.series(queue) {
            s.time(now_ms, timing, bin);
        }
    }

    /// Takes each queue's event totals (counted since the machine opened)
    /// and adds what grew since the last sample. Totals that fell (the
    /// machine was reopened, as a snapshot install does) count from zero.
    pub fn sample<'a>(&mut self, now_ms: u64, totals: impl IntoIterator<Item = (&'a str, Counts)>) {
        let mut overall = Counts::default();
        for (queue, now) in totals {
            let before = self.last_totals.get(queue).copied().unwrap_or_default();
            let grew = |a: u64, b: u64| if a >= b { a - b } else { a };
            let delta = Counts {
                enqueued: grew(now.enqueued, before.enqueued),
                completed: grew(now.completed, before.completed),
                failed: grew(now.failed, before.failed),
            };
            if before != now {
                self.last_totals.insert(queue.to_string(), now);
            }
            if delta == Counts::default() {
                continue;
            }
            overall.add(delta);
            if let Some(s) = self.series(queue) {
                s.count(now_ms, delta);
            }
        }
        if overall != Counts::default() {
            self.overall.count(now_ms, overall);
        }
        // Queues silent for a day take no memory.
        self.queues
            .retain(|_, s| !(s.hour.is_empty(now_ms) && s.day.is_empty(now_ms)));
    }

    /// The chart of `queue` (None: all queues) over `range`; None if that
    /// queue has no history on this node.
    pub fn points(&self, queue: Option<&str>, range: Range, now_ms: u64) -> Option<Vec<Point>> {
        let series = match queue {
            None => &self.overall,
            Some(q) => self.queues.get(q)?,
        };
        Some(series.ring(range).points(now_ms, self.since_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn counts(enqueued: u64, completed: u64, failed: u64) -> Counts {
        Counts {
            enqueued,
            completed,
            failed,
        }
    }

    #[test]
    fn bins_give_percentiles_within_ten_percent() {
        let mut b = Bins::new();
        for ms in 1..=1000 {
            b.add(bin_of(ms));
        }
        let [p50, p95, p99] = b.percentiles();
        for (got, want) in [(p50, 500.0), (p95, 950.0), (p99, 990.0)] {
            let err = (got as f64 - want).abs() / want;
            assert!(err <= 0.1, "{got} against {want}");
        }
        assert_eq!(Bins::new().percentiles(), [NONE; 3]);
        let mut zero = Bins::new();
        zero.add(bin_of(0));
        assert_eq!(zero.percentiles(), [0; 3]);
        // A week and more lands in the last bin, not out of bounds.
        let mut long = Bins::new();
        long.add(bin_of(u64::MAX));
        assert!(long.percentiles()[0] > 0);
    }

    #[test]
    fn samples_become_rates_in_their_buckets_and_age_out() {
        let mut h = History::new(T0);
        h.sample(T0, [("q", counts(0, 0, 0))]);
        h.sample(T0 + 1_000, [("q", counts(100, 50, 5))]);
        h.time(T0 + 1_000, "q", Timing::Wait, 40);
        h.time(T0 + 1_000, "q", Timing::Run, 2_000);
        h.sample(T0 + 12_000, [("q", counts(300, 50, 5))]);
        let now = T0 + 15_000;
        let hour = h.points(Some("q"), Range::Hour, now).unwrap();
        assert_eq!(hour.len(), 360);
        let with: Vec<&Point> = hour.iter().filter(|p| p.enqueued > 0).collect();
        assert_eq!(with.len(), 2, "{with:?}");
        assert_eq!(
            (with[0].enqueued, with[0].completed, with[0].failed),
            (100, 50, 5)
        );
        assert_eq!(with[0].enqueued_per_sec, 10.0);
        assert_eq!(with[1].enqueued, 200);
        let wait = with[0].wait_ms.unwrap();
        assert!((36..=44).contains(&wait.p50), "{wait:?}");
        assert!((1_800..=2_200).contains(&with[0].run_ms.unwrap().p99));
        // The newest point is the live bucket, at the end.
        assert_eq!(hour.last().unwrap().at_ms, now - now % 10_000);
        // The day holds both samples in one 5-minute bucket.
        let day = h.points(None, Range::Day, now).unwrap();
        assert_eq!(day.len(), 288);
        assert_eq!(day.iter().map(|p| p.enqueued).sum::<u64>(), 300);
        // An hour later the hour is empty and the day still has them.
        let later = now + 3_700_000;
        h.sample(later, [("q", counts(301, 50, 5))]);
        let hour = h.points(Some("q"), Range::Hour, later).unwrap();
        assert_eq!(hour.iter().map(|p| p.enqueued).sum::<u64>(), 1);
        let day = h.points(Some("q"), Range::Day, later).unwrap();
        assert_eq!(day.iter().map(|p| p.enqueued).sum::<u64>(), 301);
        // A day later the queue is forgotten.
        let next_day = later + 86_400_000 + 300_000;
        h.sample(next_day, [("q", counts(301, 50, 5))]);
        assert!(h.points(Some("q"), Range::Day, next_day).is_none());
        assert!(h.points(Some("never"), Range::Hour, next_day).is_none());
    }

    #[test]
    fn totals_that_fall_count_from_zero_and_clock_steps_back_lose_nothing() {
        let mut h = History::new(T0);
        h.sample(T0, [("q", counts(10, 0, 0))]);
        // The machine was reopened: its totals start again.
        h.sample(T0 + 1_000, [("q", counts(3, 0, 0))]);
        // The clock stepped back by a minute.
        h.sample(T0 - 60_000, [("q", counts(5, 0, 0))]);
        let total: u64 = h
            .points(Some("q"), Range::Day, T0 + 2_000)
            .unwrap()
            .iter()
            .map(|p| p.enqueued)
            .sum();
        assert_eq!(total, 15);
    }

    #[test]
    fn queues_past_the_limit_count_only_overall() {
        let mut h = History::new(T0);
        let names: Vec<String> = (0..MAX_QUEUES + 5).map(|i| format!("q{i}")).collect();
        h.sample(T0, names.iter().map(|n| (n.as_str(), counts(1, 0, 0))));
        assert_eq!(h.queues.len(), MAX_QUEUES);
        let overall: u64 = h
            .points(None, Range::Hour, T0)
            .unwrap()
            .iter()
            .map(|p| p.enqueued)
            .sum();
        assert_eq!(overall as usize, MAX_QUEUES + 5);
    }
}
