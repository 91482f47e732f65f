//! What holds ready jobs back, as the APIs show it: the machine's counts by
//! reason ([`crate::machine::blocked`]), the same on every node, and what
//! the workers connected across the cluster add (`version`,
//! `no_workers`), which no log entry records.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::command::VersionSwitch;
use crate::machine::blocked::{BlockReason, Blocked};
use crate::machine::{JobHold, MachineStats, QueueCounts};
use crate::workers::WorkerInfo;

/// How long a gathered list of the cluster's workers is reused: job views
/// and queue lists read it often, and a worker connects or leaves in
/// seconds anyway.
const WORKERS_FRESH: Duration = Duration::from_secs(1);

/// A canary's wait at or past this never ends (`max_wait = "never"`).
const NEVER_MS: u64 = u64::MAX / 2;

/// The workers connected across the cluster, as last gathered.
#[derive(Debug, Clone, Default)]
pub struct ClusterWorkers {
    /// Every worker the reachable nodes know.
    pub workers: Vec<WorkerInfo>,
    /// Nodes that did not answer: their workers are missing, so nothing
    /// is said about the workers at all.
    pub unreachable: Vec<u64>,
}

impl ClusterWorkers {
    fn complete(&self) -> bool {
        self.unreachable.is_empty()
    }
}

/// A gathered list and when it was gathered.
type Gathered = Option<(Instant, Arc<ClusterWorkers>)>;

/// A short-lived cache of [`ClusterWorkers`], shared by the APIs.
#[derive(Clone, Default)]
pub struct WorkersCache(Arc<Mutex<Gathered>>);

impl WorkersCache {
    /// The cached list, if it is fresh.
    pub fn fresh(&self) -> Option<Arc<ClusterWorkers>> {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .filter(|(at, _)| at.elapsed() < WORKERS_FRESH)
            .map(|(_, w)| w.clone())
    }

    /// Keeps `workers` as the fresh list.
    pub fn keep(&self, workers: ClusterWorkers) -> Arc<ClusterWorkers> {
        let workers = Arc::new(workers);
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), workers.clone()));
        workers
    }
}

/// A queue's ready jobs: runnable, and blocked by reason and scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueHolds {
    /// Ready jobs nothing holds back.
    pub runnable: u64,
    /// The rest, by reason and scope, in the order they are counted.
    pub blocked: Vec<Blocked>,
    /// What holds some jobs that cannot be counted without a scan
    /// (a tenant's version switch, a canary's share).
    pub notes: Vec<String>,
    /// Workers connected for the queue that take new leases (None: a node
    /// did not answer).
    pub workers: Option<usize>,
}

impl QueueHolds {
    /// Blocked jobs by reason.
    pub fn by_reason(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for b in &self.blocked {
            *out.entry(b.reason.as_str().to_string()).or_default() += b.jobs;
        }
        out
    }
}

/// The workers for `queue` that take new leases, and how many others are
/// connected for it (draining or quarantined).
fn taking<'a>(workers: &'a [WorkerInfo], queue: &str) -> (Vec<&'a WorkerInfo>, usize) {
    let serving = workers
        .iter()
        .filter(|w| w.queues.iter().any(|q| q == queue));
    let (taking, idle): (Vec<&WorkerInfo>, Vec<&WorkerInfo>) =
        serving.partition(|w| !w.draining && w.quarantined_until_ms.is_none());
    (taking, idle.len())
}

fn version_of(w: &WorkerInfo) -> Option<&str> {
    (!w.version.is_empty()).then_some(w.version.as_str())
}

/// Versions of `workers`, comma-separated, `(none)` for those without one.
fn versions(workers: &[&WorkerInfo]) -> String {
    let set: std::collections::BTreeSet<&str> = workers
        .iter()
        .map(|w| version_of(w).unwrap_or("(none)"))
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

fn no_workers(idle: usize) -> String {
    match idle {
        0 => String::new(),
        n => format!("{n} connected, none taking leases (draining or quarantined)"),
    }
}

/// Whether a switch keeps jobs of `queue` (of every tenant, or of
/// `tenant`) from workers of `version`.
fn switched_off(
    switches: &std::collections::BTreeSet<VersionSwitch>,
    version: Option<&str>,
    queue: &str,
    tenant: Option<&str>,
) -> bool {
    let Some(version) = version else {
        return false;
    };
    switches.iter().any(|s| {
        s.version == version
            && match tenant {
                Some(t) => s.covers(queue, t),
                None => s.tenant.is_none() && s.queue.as_deref().is_none_or(|q| q == queue),
            }
    })
}

/// Splits `queue`'s ready jobs into runnable and blocked: the machine's
/// counts, then, of the rest, what the workers add.
pub fn queue_holds(
    queue: &str,
    counts: &QueueCounts,
    stats: &MachineStats,
    workers: Option<&ClusterWorkers>,
) -> QueueHolds {
    let mut blocked = stats.blocked_jobs.get(queue).cloned().unwrap_or_default();
    let held: u64 = blocked.iter().map(|b| b.jobs).sum();
    let mut runnable = counts.ready_total().saturating_sub(held);
    let mut notes = Vec::new();
    let workers = workers.filter(|w| w.complete());
    let mut taking_n = None;
    if let Some(all) = workers {
        let (taking, idle) = taking(&all.workers, queue);
        taking_n = Some(taking.len());
        let eligible: Vec<&WorkerInfo> = taking
            .iter()
            .copied()
            .filter(|w| !switched_off(&stats.version_switches, version_of(w), queue, None))
            .collect();
        // A canary rule that sends every job one way holds them all when
        // no worker of that side is connected; one that splits them, only
        // its share, which only a scan could count.
        let canary = stats.canaries.get(queue);
        let canary_n = eligible
            .iter()
            .filter(|w| canary.is_some_and(|r| version_of(w) == Some(r.version.as_str())))
            .count();
        let (all_canary, none_canary) = match canary {
            Some(r) => (
                r.percent >= 100 && r.max_wait_ms >= NEVER_MS,
                r.percent == 0,
            ),
            None => (false, false),
        };
        let worker_hold = if runnable == 0 {
            None
        } else if taking.is_empty() {
            Some((BlockReason::NoWorkers, no_workers(idle)))
        } else if eligible.is_empty()
            || (all_canary && canary_n == 0)
            || (none_canary && canary_n == eligible.len())
        {
            Some((BlockReason::Version, versions(&taking)))
        } else {
            None
        };
        if let Some((reason, scope)) = worker_hold {
            blocked.push(Blocked {
                reason,
                scope,
                jobs: runnable,
            });
            runnable = 0;
        } else if runnable > 0 {
            if let Some(rule) = canary.filter(|_| !all_canary && !none_canary) {
                if canary_n == eligible.len() {
                    notes.push(format!(
                        "every worker connected runs the canary version {}: the {}% of jobs outside its share wait for a worker of another version (drover canary promote|abort {queue})",
                        rule.version,
                        100 - rule.percent.min(100),
                    ));
                } else if canary_n == 0 {
                    notes.push(format!(
                        "no worker of the canary version {} is connected: its {}% share waits up to {} ms before others take it",
                        rule.version, rule.percent, rule.max_wait_ms,
                    ));
                }
            }
            let tenant_switches: Vec<String> = stats
                .version_switches
                .iter()
                .filter(|s| s.tenant.is_some() && s.queue.as_deref().is_none_or(|q| q == queue))
                .filter(|s| {
                    eligible
                        .iter()
                        .any(|w| version_of(w) == Some(s.version.as_str()))
                })
                .map(VersionSwitch::describe)
                .collect();
            if !tenant_switches.is_empty() {
                notes.push(format!(
                    "switched off for some tenants ({}): their jobs wait for workers of other versions; `drover jobs get ID` says for each job",
                    tenant_switches.join("; ")
                ));
            }
        }
    } else if runnable > 0 {
        notes.push(
            "a node did not answer: what its workers would add (version, no_workers) is not counted".into(),
        );
    }
    QueueHolds {
        runnable,
        blocked,
        notes,
        workers: taking_n,
    }
}

/// What the workers connected add to a ready job's holds: none take
/// leases for its queue, or none may take it (its version is switched off
/// for the job, or the queue's canary rule keeps it from them).
pub fn job_worker_hold(
    job: &crate::job::Job,
    stats: &MachineStats,
    workers: &ClusterWorkers,
    now_ms: u64,
) -> Option<JobHold> {
    if job.state != crate::job::JobState::Ready || !workers.complete() {
        return None;
    }
    let (taking, idle) = taking(&workers.workers, &job.queue);
    if taking.is_empty() {
        return Some(JobHold {
            reason: BlockReason::NoWorkers,
            scope: no_workers(idle),
            detail: format!(
                "no worker taking leases is connected for queue {}",
                job.queue
            ),
        });
    }
    let rule = stats.canaries.get(&job.queue);
    let since = crate::machine::find::state_since(job);
    let eligible = taking.iter().any(|w| {
        let v = version_of(w);
        !switched_off(&stats.version_switches, v, &job.queue, Some(&job.tenant))
            && rule.is_none_or(|r| r.admits(v, job.id, since, now_ms))
    });
    if eligible {
        return None;
    }
    let detail = match rule {
        Some(r) if r.covers(job.id) => format!(
            "in the canary share of version {}: no worker of it is connected (others take it {} ms after it became ready)",
            r.version, r.max_wait_ms
        ),
        Some(r) if taking.iter().all(|w| version_of(w) == Some(r.version.as_str())) => format!(
            "outside the canary share: every worker connected runs the canary version {}",
            r.version
        ),
        _ => format!(
            "every worker connected for queue {} runs a version switched off for it ({})",
            job.queue,
            versions(&taking)
        ),
    };
    Some(JobHold {
        reason: BlockReason::Version,
        scope: versions(&taking),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::CanaryRule;

    fn worker(version: &str, queue: &str, draining: bool) -> WorkerInfo {
        WorkerInfo {
            worker_id: format!("w-{version}"),
            queues: vec![queue.into()],
            version: version.into(),
            capacity: 1,
            in_flight: 0,
            completed: 0,
            failed: 0,
            connected_at_ms: 0,
            last_seen_ms: 0,
            draining,
            node_id: 1,
            recent_completed: 0,
            recent_failed: 0,
            recent_window_ms: 0,
            quarantined_until_ms: None,
        }
    }

    fn holds(stats: &MachineStats, workers: Vec<WorkerInfo>) -> QueueHolds {
        let counts = QueueCounts {
            ready: [0, 0, 4, 0, 0],
            ..Default::default()
        };
        let workers = ClusterWorkers {
            workers,
            unreachable: Vec::new(),
        };
        queue_holds("q", &counts, stats, Some(&workers))
    }

    fn reasons(h: &QueueHolds) -> Vec<(BlockReason, u64)> {
        h.blocked.iter().map(|b| (b.reason, b.jobs)).collect()
    }

    #[test]
    fn what_the_workers_connected_hold_back() {
        let mut stats = MachineStats::default();
        // Nobody, or only a draining worker: no_workers, saying so.
        let h = holds(&stats, vec![]);
        assert_eq!(
            (h.runnable, reasons(&h)),
            (0, vec![(BlockReason::NoWorkers, 4)])
        );
        let h = holds(
            &stats,
            vec![worker("v1", "q", true), worker("v1", "other", false)],
        );
        assert_eq!(reasons(&h), vec![(BlockReason::NoWorkers, 4)]);
        assert!(h.blocked[0].scope.contains("1 connected"), "{h:?}");
        // A version switched off for the queue.
        stats.version_switches.insert(VersionSwitch {
            version: "v1".into(),
            queue: Some("q".into()),
            tenant: None,
        });
        let h = holds(&stats, vec![worker("v1", "q", false)]);
        assert_eq!(reasons(&h), vec![(BlockReason::Version, 4)]);
        assert_eq!(h.blocked[0].scope, "v1");
        let h = holds(
            &stats,
            vec![worker("v1", "q", false), worker("v2", "q", false)],
        );
        assert_eq!((h.runnable, h.blocked.len()), (4, 0));
        // A pin to v3 (every job, never others) with only v2 connected.
        stats.canaries.insert(
            "q".into(),
            CanaryRule {
                version: "v3".into(),
                percent: 100,
                max_wait_ms: u64::MAX,
            },
        );
        let h = holds(&stats, vec![worker("v2", "q", false)]);
        assert_eq!(reasons(&h), vec![(BlockReason::Version, 4)]);
        // A split canary cannot be counted: it is noted.
        stats.canaries.get_mut("q").unwrap().percent = 10;
        let h = holds(&stats, vec![worker("v3", "q", false)]);
        assert_eq!((h.runnable, h.blocked.len()), (4, 0));
        assert!(
            h.notes[0].contains("90% of jobs outside its share"),
            "{h:?}"
        );
        // A node that did not answer: nothing is said about workers.
        let counts = QueueCounts {
            ready: [0, 0, 4, 0, 0],
            ..Default::default()
        };
        let partial = ClusterWorkers {
            workers: vec![],
            unreachable: vec![2],
        };
        let h = queue_holds("q", &counts, &stats, Some(&partial));
        assert_eq!((h.runnable, h.workers), (4, None));
    }
}
