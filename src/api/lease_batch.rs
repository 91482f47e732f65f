//! How many leases a worker is sent at once: node soft state per session.
//! A worker starts at its queues' `initial_batch_size`; each job it
//! finishes well inside its lease (in under half the lease timeout) grows
//! the batch by one toward `max_batch_size` (so a fast worker doubles it
//! about every batch), and each lease it lets expire halves it. A slow
//! worker then holds few jobs another worker could run, and a fast one
//! needs few lease round trips.

use std::time::Duration;

use crate::config::Config;

/// Without `initial_batch_size` / `max_batch_size` in `[queues.*]`.
pub const DEFAULT_INITIAL: u32 = 20;
/// The most leases a worker is sent at once without `max_batch_size`.
pub const DEFAULT_MAX: u32 = 200;

/// One worker session's batch size, between 1 and its queues'
/// `max_batch_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseBatch {
    size: u32,
    max: u32,
    lease: Duration,
}

impl LeaseBatch {
    /// The batch of a worker serving `queues`: the smallest sizes any of
    /// them sets (a queue not named takes `[queues."*"]`'s).
    pub fn new(config: &Config, queues: &[String], lease: Duration) -> LeaseBatch {
        let of = |q: &str, f: fn(&crate::config::QueueConfig) -> Option<u32>| {
            config
                .queues
                .get(q)
                .and_then(f)
                .or_else(|| config.queues.get(crate::policies::DEFAULTS).and_then(f))
        };
        let pick = |f, default| {
            queues
                .iter()
                .map(|q| of(q, f).unwrap_or(default))
                .min()
                .unwrap_or(default)
                .max(1)
        };
        let max = pick(|q| q.max_batch_size, DEFAULT_MAX);
        let initial = pick(|q| q.initial_batch_size, DEFAULT_INITIAL).min(max);
        LeaseBatch {
            size: initial,
            max,
            lease,
        }
    }

    /// The most leases to send the worker in one go now (at least 1).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// A job came back (completed or failed) `held` after it was sent.
    pub fn finished(&mut self, held: Duration) {
        if held < self.lease / 2 {
            self.size = (self.size + 1).min(self.max);
        }
    }

    /// A lease of this worker expired.
    pub fn expired(&mut self) {
        self.size = (self.size / 2).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml(text).unwrap()
    }

    #[test]
    fn grows_on_quick_jobs_to_its_max_and_halves_on_expiry() {
        let c = config("[queues.fast]\ninitial_batch_size = 2\nmax_batch_size = 4\n");
        let mut b = LeaseBatch::new(&c, &["fast".into()], Duration::from_secs(30));
        assert_eq!(b.size(), 2);
        b.finished(Duration::from_secs(20));
        assert_eq!(
            b.size(),
            2,
            "a job that used most of its lease does not grow it"
        );
        for _ in 0..5 {
            b.finished(Duration::from_millis(5));
        }
        assert_eq!(b.size(), 4);
        b.expired();
        assert_eq!(b.size(), 2);
        b.expired();
        b.expired();
        assert_eq!(b.size(), 1, "never below one");
    }

    #[test]
    fn a_worker_of_several_queues_takes_the_smallest_sizes() {
        let c = config(
            "[queues.\"*\"]\nmax_batch_size = 50\n[queues.slow]\ninitial_batch_size = 1\nmax_batch_size = 5\n",
        );
        let lease = Duration::from_secs(30);
        let b = LeaseBatch::new(&c, &["a".into(), "slow".into()], lease);
        assert_eq!((b.size(), b.max), (1, 5));
        let b = LeaseBatch::new(&c, &["a".into()], lease);
        assert_eq!((b.size(), b.max), (DEFAULT_INITIAL, 50));
        let b = LeaseBatch::new(&config(""), &["a".into()], lease);
        assert_eq!((b.size(), b.max), (DEFAULT_INITIAL, DEFAULT_MAX));
    }
}
