//! How many workers a queue wants: `drover_queue_desired_workers`, for an
//! autoscaler (KEDA, or a systemd timer running `systemctl start
//! drover-worker@N`) to act on.
//!
//! By Little's law the jobs in service on average are the arrival rate
//! times the time each holds a worker: `busy = λ · W`. On top of that, the
//! backlog of ready jobs should drain within [`DRAIN_TARGET_S`]: `backlog ·
//! W / DRAIN_TARGET_S` more. Jobs already leased need their workers whatever
//! the rate says, so the slots wanted are `max(busy, leased) + drain`, and
//! workers `ceil(slots / per_worker)`, clamped to the queue's `min` and
//! `max`. λ and W are measured over the last five minutes (arrivals, and
//! the leases that ended and how long they ran); with no lease ended in
//! that time W is not known, and a queue with work wants its `expected`.

use serde::{Deserialize, Serialize};

/// A queue's work over the last few minutes (the machine's
/// `tally::FLOW_WINDOW_MS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Jobs enqueued.
    pub arrived: u64,
    /// Leases that ended (a result, a cancel, a take-back).
    pub leases_ended: u64,
    /// The time those leases ran, summed.
    pub lease_ms: u64,
    /// How long (ms) the counts above cover.
    pub window_ms: u64,
}

/// The time a backlog should drain in.
pub const DRAIN_TARGET_S: f64 = 300.0;

/// `[queues.NAME] workers = { min, max, expected, per_worker }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerPool {
    /// Fewest workers to keep, even idle.
    pub min: u32,
    /// Most workers worth starting.
    pub max: u32,
    /// How many usually serve the queue: the alert fires under half of it.
    pub expected: u32,
    /// Jobs one worker runs at once (its `--concurrency`).
    pub per_worker: u32,
    /// The cooldown: desired workers go down only once a lower figure has
    /// held this long (then to the highest figure seen meanwhile), so a
    /// scaler does not stop workers that a dip between bursts would want
    /// back. They go up at once. Unset: down at once.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub scale_down_after: Option<std::time::Duration>,
}

impl Default for WorkerPool {
    fn default() -> Self {
        WorkerPool {
            min: 0,
            max: 1_000,
            expected: 1,
            per_worker: 1,
            scale_down_after: None,
        }
    }
}

impl WorkerPool {
    /// What is wrong with it, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.max == 0 || self.per_worker == 0 {
            return Some("max and per_worker must be 1 or more".into());
        }
        if !(self.min <= self.expected && self.expected <= self.max) {
            return Some(format!(
                "must have min <= expected <= max (got min {}, expected {}, max {})",
                self.min, self.expected, self.max
            ));
        }
        None
    }

    /// The workers the queue wants, given its recent `flow`, its ready
    /// `backlog` and the jobs `leased` now.
    pub fn desired(&self, flow: &Flow, backlog: u64, leased: u64) -> u32 {
        let slots = if flow.leases_ended == 0 || flow.window_ms == 0 {
            if backlog + leased == 0 {
                return self.min;
            }
            // Jobs longer than the window: the ones running keep their
            // workers whatever the unknown run time.
            let running = leased.div_ceil(u64::from(self.per_worker));
            let running = u32::try_from(running).unwrap_or(u32::MAX);
            return self.expected.max(running).clamp(self.min, self.max);
        } else {
            let w = flow.lease_ms as f64 / flow.leases_ended as f64 / 1000.0;
            let lambda = flow.arrived as f64 / (flow.window_ms as f64 / 1000.0);
            (lambda * w).max(leased as f64) + backlog as f64 * w / DRAIN_TARGET_S
        };
        let workers = (slots / f64::from(self.per_worker)).ceil();
        // Float to int saturates; clamp keeps it in the pool's bounds.
        (workers as u32).clamp(self.min, self.max)
    }
}

/// `drover_queue_desired_workers` as published: up at once, down only
/// after the pool's `scale_down_after` (see [`WorkerPool`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hold {
    /// The figure published last.
    shown: Option<u32>,
    /// Since when (ms) the figure wanted has been below `shown`.
    lower_since: Option<u64>,
    /// The highest figure wanted since then.
    lower_max: u32,
}

impl Hold {
    /// The figure to publish at `now` (ms) when the queue wants `wanted`.
    pub fn show(&mut self, wanted: u32, now: u64, cooldown_ms: u64) -> u32 {
        let shown = match self.shown {
            Some(shown) if wanted < shown => match self.lower_since {
                None => {
                    self.lower_since = Some(now);
                    self.lower_max = wanted;
                    if cooldown_ms == 0 {
                        self.lower_since = None;
                        wanted
                    } else {
                        shown
                    }
                }
                Some(since) => {
                    self.lower_max = self.lower_max.max(wanted);
                    if now.saturating_sub(since) >= cooldown_ms {
                        self.lower_since = None;
                        self.lower_max
                    } else {
                        shown
                    }
                }
            },
            _ => {
                self.lower_since = None;
                wanted
            }
        };
        self.shown = Some(shown);
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(arrived: u64, leases_ended: u64, lease_ms: u64) -> Flow {
        Flow {
            arrived,
            leases_ended,
            lease_ms,
            window_ms: 300_000,
        }
    }

    #[test]
    fn desired_workers_go_down_only_after_the_cooldown() {
        let mut h = Hold::default();
        assert_eq!(h.show(2, 0, 10_000), 2);
        assert_eq!(h.show(6, 1_000, 10_000), 6, "up at once");
        assert_eq!(h.show(1, 2_000, 10_000), 6);
        assert_eq!(h.show(3, 5_000, 10_000), 6);
        assert_eq!(h.show(1, 11_999, 10_000), 6);
        // Down to the highest figure wanted during the cooldown.
        assert_eq!(h.show(1, 12_000, 10_000), 3);
        // A burst in the next cooldown sends it up and starts it again.
        assert_eq!(h.show(1, 13_000, 10_000), 3);
        assert_eq!(h.show(4, 14_000, 10_000), 4);
        assert_eq!(h.show(1, 20_000, 10_000), 4);
        assert_eq!(h.show(1, 30_000, 10_000), 1);
        // Without a cooldown, down at once.
        let mut h = Hold::default();
        assert_eq!(h.show(5, 0, 0), 5);
        assert_eq!(h.show(1, 1, 0), 1);
    }

    #[test]
    fn littles_law_with_backlog_and_bounds() {
        let pool = WorkerPool {
            min: 2,
            max: 10,
            expected: 4,
            per_worker: 1,
            scale_down_after: None,
        };
        // 1 job/s, 3 s each: 3 busy; nothing waiting.
        assert_eq!(pool.desired(&flow(300, 300, 900_000), 0, 3), 3);
        // 600 waiting at 3 s each should drain in 300 s: 6 more.
        assert_eq!(pool.desired(&flow(300, 300, 900_000), 600, 3), 9);
        // Capped at max, and at least min when idle.
        assert_eq!(pool.desired(&flow(300, 300, 900_000), 10_000, 3), 10);
        assert_eq!(pool.desired(&flow(0, 1, 10), 0, 0), 2);
        // Leased jobs keep their workers whatever the rate.
        assert_eq!(pool.desired(&flow(0, 1, 1000), 0, 7), 7);
        // Unknown run time: expected if there is work, min if not, and
        // never fewer than the jobs running need.
        assert_eq!(pool.desired(&flow(5, 0, 0), 5, 0), 4);
        assert_eq!(pool.desired(&flow(0, 0, 0), 0, 7), 7);
        assert_eq!(pool.desired(&flow(0, 0, 0), 0, 0), 2);
        let wide = WorkerPool {
            per_worker: 4,
            ..pool
        };
        assert_eq!(wide.desired(&flow(300, 300, 900_000), 600, 3), 3);
    }

    #[test]
    fn problems_are_named() {
        let bad = WorkerPool {
            min: 5,
            max: 3,
            expected: 4,
            per_worker: 1,
            scale_down_after: None,
        };
        assert!(bad.problem().unwrap().contains("min <= expected <= max"));
        assert!(WorkerPool::default().problem().is_none());
    }
}
