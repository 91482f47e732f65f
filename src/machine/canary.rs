//! Canary rules: a share of a queue's jobs, chosen from the job id (the
//! same on every node), is leased only to workers of the canary version,
//! and the rest only to others. A canary job no canary worker took within
//! `max_wait_ms` of becoming ready goes to the others too. Rules are
//! records `N`+queue, set at run time (audited).

use super::*;
use crate::command::CanaryRule;
use crate::policies::CanaryJudge;

/// Which of 10,000 parts of the jobs `id` falls in: a fixed mix of the id,
/// so every node, and every lease, decides the same.
pub fn canary_part(id: JobId) -> u64 {
    // splitmix64's finalizer: ids that follow each other spread evenly.
    let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % 10_000
}

impl CanaryRule {
    /// Whether job `id` is one of the canary's share.
    pub fn covers(&self, id: JobId) -> bool {
        canary_part(id) < u64::from(self.percent.min(100)) * 100
    }

    /// Whether a worker of `version` (None: it gave none) may lease job
    /// `id`, ready since `since`, at `now`.
    pub fn admits(&self, version: Option<&str>, id: JobId, since: u64, now: u64) -> bool {
        let canary_worker = version == Some(self.version.as_str());
        if self.covers(id) {
            canary_worker || now.saturating_sub(since) >= self.max_wait_ms
        } else {
            !canary_worker
        }
    }
}

fn canary_key(queue: &str) -> Vec<u8> {
    named_key(CANARY, queue)
}

impl Machine {
    /// The queue's canary rule in force: one set at run time, else its
    /// policy's (`[queues.NAME.canary]`).
    pub(super) fn canary_rule(&self, queue: &str) -> Option<&CanaryRule> {
        self.canaries.get(queue).or_else(|| {
            self.policies
                .queues
                .get(queue)
                .and_then(|p| p.canary.as_ref())
        })
    }

    /// Every queue's rule in force.
    pub(super) fn canary_rules(&self) -> BTreeMap<String, CanaryRule> {
        let mut out: BTreeMap<String, CanaryRule> = self
            .policies
            .queues
            .iter()
            .filter_map(|(q, p)| Some((q.clone(), p.canary.clone()?)))
            .collect();
        out.extend(self.canaries.iter().map(|(q, r)| (q.clone(), r.clone())));
        out
    }

    pub(super) fn load_canaries(&mut self) -> Result<(), MachineError> {
        self.canaries.extend(load_named(&self.tree, CANARY)?);
        Ok(())
    }

    /// Applies a [`Command::SetCanary`]: a rule for the queue, or none.
    pub(super) fn set_canary(&mut self, queue: &str, rule: Option<&CanaryRule>) -> Outcome {
        match rule {
            Some(r) => {
                // A new version or share starts the comparison afresh.
                self.canary_arms.remove(queue);
                self.canaries.insert(queue.to_string(), r.clone());
                self.put(canary_key(queue), encode(r));
            }
            None => {
                self.canary_arms.remove(queue);
                if self.canaries.remove(queue).is_none() {
                    return Outcome::Rejected(Refusal::NoCanary {
                        queue: queue.to_string(),
                    });
                }
                self.delete(canary_key(queue));
            }
        }
        Outcome::Noop
    }
}

/// What one side of a canary comparison did since the rule was set (or its
/// share changed): counters, and run times in power-of-two buckets of
/// milliseconds for a rank test. Small and fixed in size, so it is cheap to
/// publish after every applied range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// Results counted: successes and failures (timeouts included).
    pub jobs: u64,
    /// Of them, successes.
    pub succeeded: u64,
    /// Their run times summed, in ms.
    pub ran_ms_sum: f64,
    /// Their reported costs summed, in USD.
    pub cost_sum: f64,
    /// The squares of those costs summed, for Welch's t.
    pub cost_sq_sum: f64,
    /// Bucket b holds runs of [2^(b-1), 2^b) ms; bucket 0 holds 0 ms.
    pub ran_buckets: Vec<u64>,
}

const BUCKETS: usize = 40;

fn bucket(ms: u64) -> usize {
    ((u64::BITS - ms.leading_zeros()) as usize).min(BUCKETS - 1)
}

impl Arm {
    /// Counts one result: whether it succeeded, how long it ran, and what it
    /// cost in millionths of a USD.
    pub fn record(&mut self, ok: bool, ran_ms: u64, cost_micros: u64) {
        if self.ran_buckets.len() != BUCKETS {
            self.ran_buckets = vec![0; BUCKETS];
        }
        self.jobs += 1;
        self.succeeded += u64::from(ok);
        self.ran_ms_sum += ran_ms as f64;
        let cost = cost_micros as f64 / 1e6;
        self.cost_sum += cost;
        self.cost_sq_sum += cost * cost;
        self.ran_buckets[bucket(ran_ms)] += 1;
    }

    /// Successes over results, 0 to 1; 0 with none.
    pub fn success_rate(&self) -> f64 {
        self.succeeded as f64 / self.jobs.max(1) as f64
    }

    /// Mean run time in ms; 0 with none.
    pub fn mean_ran_ms(&self) -> f64 {
        self.ran_ms_sum / self.jobs.max(1) as f64
    }

    /// Mean cost in USD; 0 with none.
    pub fn mean_cost(&self) -> f64 {
        self.cost_sum / self.jobs.max(1) as f64
    }

    /// The run time 95% of jobs stayed under, to a power of two of ms.
    pub fn p95_ran_ms(&self) -> u64 {
        let want = (self.jobs as f64 * 0.95).ceil() as u64;
        let mut seen = 0;
        for (b, n) in self.ran_buckets.iter().enumerate() {
            seen += n;
            if seen >= want && want > 0 {
                return if b == 0 { 0 } else { 1 << b };
            }
        }
        0
    }
}

impl Arm {
    fn merge(&mut self, other: &Arm) {
        self.jobs += other.jobs;
        self.succeeded += other.succeeded;
        self.ran_ms_sum += other.ran_ms_sum;
        self.cost_sum += other.cost_sum;
        self.cost_sq_sum += other.cost_sq_sum;
        if self.ran_buckets.len() < other.ran_buckets.len() {
            self.ran_buckets.resize(other.ran_buckets.len(), 0);
        }
        for (a, b) in self.ran_buckets.iter_mut().zip(&other.ran_buckets) {
            *a += b;
        }
    }
}

/// The window the comparison counts over.
pub const ARM_WINDOW_MS: u64 = 60 * 60_000;

/// A canary queue's (canary, control) results over the last
/// [`ARM_WINDOW_MS`], in ten buckets of a tenth of it; read at the
/// reader's time, so a quiet queue's old results leave too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Arms {
    /// (bucket start ms, canary, control), oldest first.
    buckets: std::collections::VecDeque<(u64, Arm, Arm)>,
}

impl Arms {
    const WIDTH: u64 = ARM_WINDOW_MS / 10;

    fn record(&mut self, now: u64, canary: bool, ok: bool, ran_ms: u64, cost: u64) {
        let start = now - now % Arms::WIDTH;
        while self
            .buckets
            .front()
            .is_some_and(|b| b.0 + Arms::WIDTH + ARM_WINDOW_MS <= now)
        {
            self.buckets.pop_front();
        }
        if self.buckets.back().is_none_or(|b| b.0 != start) {
            self.buckets
                .push_back((start, Arm::default(), Arm::default()));
        }
        if let Some(b) = self.buckets.back_mut() {
            let arm = if canary { &mut b.1 } else { &mut b.2 };
            arm.record(ok, ran_ms, cost);
        }
    }

    /// (canary, control) in the window ending at `now`.
    pub fn at(&self, now: u64) -> (Arm, Arm) {
        let mut out = (Arm::default(), Arm::default());
        for b in self
            .buckets
            .iter()
            .filter(|b| b.0 + Arms::WIDTH + ARM_WINDOW_MS > now)
        {
            out.0.merge(&b.1);
            out.1.merge(&b.2);
        }
        out
    }
}

/// One metric of a canary comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    /// `success_rate_delta` (canary minus control), `duration_ratio` or
    /// `cost_ratio` (canary over control).
    pub metric: &'static str,
    /// The metric: for the delta a fraction (-0.05 is 5 points below the
    /// control), for a ratio 1.0 when both sides are alike.
    pub value: f64,
    /// `ok`, `worse` or `not enough data`.
    pub verdict: &'static str,
}

/// z above which a one-sided test at 95% says the canary is worse.
const Z_95: f64 = 1.645;

/// The canary against the control, with the judge's thresholds (defaults
/// in brackets): the success-rate delta by a two-proportion z-test (worse:
/// more than `max_success_drop` [5 points] below), the run time by a
/// Mann-Whitney rank test on the buckets (worse: mean more than
/// `max_duration_ratio` [1.1] times), the cost by Welch's t (worse: mean
/// more than `max_cost_ratio` [1.2] times). Fewer than `min_samples` [30]
/// on either side say "not enough data".
pub fn compare(canary: &Arm, control: &Arm, judge: &CanaryJudge) -> Vec<Judged> {
    let enough = canary.jobs >= judge.min_samples && control.jobs >= judge.min_samples;
    let verdict = |metric, value: f64, worse: bool| Judged {
        metric,
        value,
        verdict: match (enough, worse) {
            (false, _) => "not enough data",
            (true, true) => "worse",
            (true, false) => "ok",
        },
    };
    let (n1, n2) = (canary.jobs.max(1) as f64, control.jobs.max(1) as f64);
    // Success rate.
    let (p1, p2) = (canary.success_rate(), control.success_rate());
    let pooled = (canary.succeeded + control.succeeded) as f64 / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let z = if se > 0.0 { (p1 - p2) / se } else { 0.0 };
    let success = verdict(
        "success_rate_delta",
        p1 - p2,
        p1 - p2 < -judge.max_success_drop && z < -Z_95,
    );
    // Run time: U counts, for each canary run, the control runs shorter
    // (ties count half).
    let mut below = 0.0;
    let mut u = 0.0;
    let buckets = canary.ran_buckets.len().max(control.ran_buckets.len());
    for b in 0..buckets {
        let c1 = *canary.ran_buckets.get(b).unwrap_or(&0) as f64;
        let c2 = *control.ran_buckets.get(b).unwrap_or(&0) as f64;
        u += c1 * (below + c2 / 2.0);
        below += c2;
    }
    let mean_u = n1 * n2 / 2.0;
    let sd_u = (n1 * n2 * (n1 + n2 + 1.0) / 12.0).sqrt();
    let z_ran = if sd_u > 0.0 { (u - mean_u) / sd_u } else { 0.0 };
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            a / b
        } else if a > 0.0 {
            f64::INFINITY
        } else {
            1.0
        }
    };
    let duration_ratio = ratio(canary.mean_ran_ms(), control.mean_ran_ms());
    let duration = verdict(
        "duration_ratio",
        duration_ratio,
        duration_ratio > judge.max_duration_ratio && z_ran > Z_95,
    );
    // Cost: Welch's t on the means.
    let var = |a: &Arm, n: f64| {
        let mean = a.mean_cost();
        ((a.cost_sq_sum / n) - mean * mean).max(0.0) * n / (n - 1.0).max(1.0)
    };
    let se_cost = (var(canary, n1) / n1 + var(control, n2) / n2).sqrt();
    let t = if se_cost > 0.0 {
        (canary.mean_cost() - control.mean_cost()) / se_cost
    } else {
        0.0
    };
    let cost_ratio = ratio(canary.mean_cost(), control.mean_cost());
    let cost = verdict(
        "cost_ratio",
        cost_ratio,
        cost_ratio > judge.max_cost_ratio && t > Z_95,
    );
    vec![success, duration, cost]
}

impl Machine {
    /// A canary queue's result of a lease by a versioned worker: counted
    /// for the canary or the control side.
    pub(super) fn canary_observe(
        &mut self,
        job: &Job,
        attempt: u32,
        ok: bool,
        ran_ms: u64,
        cost: u64,
    ) {
        let Some(version) = self.lease_versions.remove(&(job.id, attempt)) else {
            return;
        };
        let Some(rule) = self.canary_rule(&job.queue) else {
            return;
        };
        let canary = version == rule.version;
        let now = self.meta.last_at_ms;
        self.canary_arms
            .entry(job.queue.clone())
            .or_default()
            .record(now, canary, ok, ran_ms, cost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(jobs: u64, failing: f64, ran_ms: u64) -> Arm {
        let mut a = Arm::default();
        for i in 0..jobs {
            let ok = (i as f64) >= failing * jobs as f64;
            a.record(ok, ran_ms + i % 7, 10_000);
        }
        a
    }

    #[test]
    fn a_failing_canary_is_flagged_once_there_is_enough_data() {
        let d = CanaryJudge::default();
        let verdict = |c: &Arm, k: &Arm| compare(c, k, &d)[0].verdict;
        assert_eq!(
            verdict(&arm(20, 0.3, 100), &arm(200, 0.0, 100)),
            "not enough data"
        );
        assert_eq!(verdict(&arm(200, 0.3, 100), &arm(2000, 0.0, 100)), "worse");
        assert_eq!(verdict(&arm(200, 0.01, 100), &arm(2000, 0.0, 100)), "ok");
        let delta = compare(&arm(200, 0.3, 100), &arm(2000, 0.0, 100), &d)[0].value;
        assert!((delta + 0.3).abs() < 0.01, "{delta}");
    }

    #[test]
    fn slower_and_dearer_canaries_are_flagged() {
        let (slow, fast) = (arm(300, 0.0, 400), arm(300, 0.0, 100));
        let d = CanaryJudge::default();
        let j = compare(&slow, &fast, &d);
        assert_eq!((j[1].metric, j[1].verdict), ("duration_ratio", "worse"));
        assert_eq!(compare(&fast, &slow, &d)[1].verdict, "ok");
        // A looser threshold forgives the same difference.
        let loose = CanaryJudge {
            max_duration_ratio: 5.0,
            ..CanaryJudge::default()
        };
        assert_eq!(compare(&slow, &fast, &loose)[1].verdict, "ok");
        let mut dear = Arm::default();
        let mut cheap = Arm::default();
        for i in 0..100 {
            dear.record(true, 10, 15_000 + i * 10);
            cheap.record(true, 10, 10_000 + i * 10);
        }
        assert_eq!(compare(&dear, &cheap, &d)[2].verdict, "worse");
        assert_eq!(compare(&cheap, &dear, &d)[2].verdict, "ok");
        assert_eq!(arm(100, 0.0, 100).p95_ran_ms(), 128);
    }
}
