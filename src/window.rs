//! Counts over a sliding window of time, in buckets of a tenth of it. The
//! caller passes the time in, so the pure machine can keep one too.

use std::collections::VecDeque;

/// `K` counters summed over the last `window_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sliding<const K: usize> {
    window_ms: u64,
    /// (bucket start ms, counts), oldest first.
    buckets: VecDeque<(u64, [u64; K])>,
}

impl<const K: usize> Default for Sliding<K> {
    fn default() -> Self {
        Sliding {
            window_ms: 0,
            buckets: VecDeque::new(),
        }
    }
}

impl<const K: usize> Sliding<K> {
    fn width(&self) -> u64 {
        (self.window_ms / 10).max(1)
    }

    /// Adds `counts` at `now` in a window of `window_ms` (a new window
    /// length starts the counts afresh).
    pub fn add(&mut self, now: u64, window_ms: u64, counts: [u64; K]) {
        if window_ms != self.window_ms {
            self.window_ms = window_ms;
            self.buckets.clear();
        }
        let width = self.width();
        let start = now - now % width;
        while self
            .buckets
            .front()
            .is_some_and(|b| b.0.saturating_add(width).saturating_add(self.window_ms) <= now)
        {
            self.buckets.pop_front();
        }
        match self.buckets.back_mut() {
            Some(b) if b.0 == start => {
                for (sum, n) in b.1.iter_mut().zip(counts) {
                    *sum = sum.saturating_add(n);
                }
            }
            _ => self.buckets.push_back((start, counts)),
        }
    }

    /// The sums in the window ending at `now`.
    pub fn counts(&self, now: u64) -> [u64; K] {
        let width = self.width();
        let mut out = [0u64; K];
        for b in self
            .buckets
            .iter()
            .filter(|b| b.0.saturating_add(width).saturating_add(self.window_ms) > now)
        {
            for (sum, n) in out.iter_mut().zip(b.1) {
                *sum = sum.saturating_add(n);
            }
        }
        out
    }

    /// The window's length in ms, as the last [`Sliding::add`] set it; 0 before
    /// any.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// The buckets as (start ms, counts), oldest first: what
    /// [`Sliding::from_buckets`] takes back.
    pub fn buckets(&self) -> Vec<(u64, [u64; K])> {
        self.buckets.iter().copied().collect()
    }

    /// A window of `window_ms` holding `buckets` (as [`Sliding::buckets`]
    /// gave them).
    pub fn from_buckets(window_ms: u64, buckets: Vec<(u64, [u64; K])>) -> Self {
        Sliding {
            window_ms,
            buckets: buckets.into(),
        }
    }

    /// Drops every count; the window's length stays.
    pub fn clear(&mut self) {
        self.buckets.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slide_out_of_the_window() {
        let mut r = Sliding::<2>::default();
        r.add(1_000, 10_000, [3, 1]);
        r.add(5_000, 10_000, [0, 2]);
        assert_eq!(r.counts(5_000), [3, 3]);
        // The first bucket (1,000 to 2,000) leaves once the window has
        // passed its end.
        assert_eq!(r.counts(11_999), [3, 3]);
        assert_eq!(r.counts(12_000), [0, 2]);
        r.add(20_000, 10_000, [1, 0]);
        assert_eq!(r.counts(20_000), [1, 0]);
        assert!(r.buckets.len() <= 11);
        r.add(20_000, 60_000, [0, 1]);
        assert_eq!(r.counts(20_000), [0, 1], "a new window counts afresh");
    }
}
