//! Why ready jobs are not leased. Each queue's ready jobs are split into
//! runnable and blocked, by reason, from what the machine keeps as
//! commands apply (the ready set's per-tenant counts, parked jobs by
//! queue, tenant and hold, held runs' jobs in the ready set by queue),
//! never by scanning the backlog: this runs after every applied range.
//!
//! A job counts once, under the first reason that holds it, in this order:
//! its queue paused; its tenant paused, held by a breaker, or over its
//! daily cap; its run over a budget; parked behind a key limit; its queue
//! at its concurrency limit. What holds jobs because of the workers
//! connected (`version`, `no_workers`) is not replicated state: the APIs
//! add it from the cluster's workers ([`BlockReason::Version`]).
//!
//! A job whose key is at its limit is counted under `key_limit` once the
//! scheduler has met it (parked it); until a pick reaches it, it counts as
//! runnable, as nothing short of a scan could tell.

use super::*;
use limits::Hold;

/// Why ready jobs wait.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// The queue is paused.
    Paused,
    /// The job's tenant is paused.
    TenantPaused,
    /// An open (or probing) circuit breaker holds the queue's jobs of the
    /// tenant.
    Breaker,
    /// The tenant is over its daily cost cap.
    DailyCap,
    /// The job's run is over a budget.
    Budget,
    /// A concurrency or rate key of the job is at its limit.
    KeyLimit,
    /// The queue has as many jobs leased as its concurrency limit allows.
    ConcurrencyLimit,
    /// Every worker connected for the queue runs a version switched off
    /// for it (or only the canary version, for jobs outside its share).
    Version,
    /// No worker that takes new leases is connected for the queue.
    NoWorkers,
}

impl BlockReason {
    /// Every reason, in the order a job is counted under the first.
    pub const ALL: [BlockReason; 9] = [
        BlockReason::Paused,
        BlockReason::TenantPaused,
        BlockReason::Breaker,
        BlockReason::DailyCap,
        BlockReason::Budget,
        BlockReason::KeyLimit,
        BlockReason::ConcurrencyLimit,
        BlockReason::Version,
        BlockReason::NoWorkers,
    ];

    /// The reasons the machine counts, the first of [`BlockReason::ALL`]
    /// (the rest come from the workers).
    pub const REPLICATED: &'static [BlockReason] = Self::ALL.as_slice().split_at(7).0;

    /// The name the APIs, the CLI and the metric's `reason` label use.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockReason::Paused => "paused",
            BlockReason::TenantPaused => "tenant_paused",
            BlockReason::Breaker => "breaker",
            BlockReason::DailyCap => "daily_cap",
            BlockReason::Budget => "budget",
            BlockReason::KeyLimit => "key_limit",
            BlockReason::ConcurrencyLimit => "concurrency_limit",
            BlockReason::Version => "version",
            BlockReason::NoWorkers => "no_workers",
        }
    }

    /// What releases jobs held for this reason in `queue`, at `scope`
    /// (as [`Blocked::scope`] names it): a command where there is one.
    pub fn release(self, queue: &str, scope: &str) -> String {
        match self {
            BlockReason::Paused => format!("drover queues resume {queue}"),
            BlockReason::TenantPaused => format!("drover tenants resume {scope}"),
            BlockReason::Breaker => format!(
                "drover breakers reset {scope} --reason TEXT (or wait for its cooldown and a good probe)"
            ),
            BlockReason::DailyCap => format!(
                "drover budgets set {scope} --daily-cost-cap-usd N --reason TEXT (or wait for the next UTC day)"
            ),
            BlockReason::Budget => {
                let (tenant, run) = scope.split_once('/').unwrap_or(("default", scope));
                format!(
                    "drover runs override {run} --tenant {tenant} --cost-usd N|--time D|--attempts N --reason TEXT"
                )
            }
            BlockReason::KeyLimit => format!(
                "wait: key {scope}'s jobs come back as its leases end or its rate allows; or raise [limits.{scope}] and drover policies reload"
            ),
            BlockReason::ConcurrencyLimit => format!(
                "wait for leases of {queue} to end, or raise [queues.{queue}] concurrency_limit and drover policies reload"
            ),
            BlockReason::Version => format!(
                "drover versions enable {scope} --queue {queue} --reason TEXT, or connect workers of another version"
            ),
            BlockReason::NoWorkers => format!("start workers for {queue}: drover worker --queue {queue} ..."),
        }
    }
}

impl std::fmt::Display for BlockReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ready jobs of a queue held for one reason, at one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    /// Why they wait.
    pub reason: BlockReason,
    /// What holds them: the tenant (`tenant_paused`, `daily_cap`), the
    /// breaker (`QUEUE/TENANT/CLASS`), the run (`TENANT/RUN`), the key
    /// (`key_limit`), the limit (`concurrency_limit`, "N leased of N"),
    /// the versions (`version`); empty for the queue itself.
    pub scope: String,
    /// How many.
    pub jobs: u64,
}

/// Tenant and run of a run key (`tenant\0run`).
fn split_run_key(key: &str) -> (&str, &str) {
    key.split_once('\0').unwrap_or(("", key))
}

impl Machine {
    /// What holds all of `tenant`'s ready jobs in `queue` (its scope),
    /// whichever of its holds comes first.
    pub(super) fn tenant_hold(&self, queue: &str, tenant: &str) -> Option<(BlockReason, String)> {
        if self.controls.paused_tenants.contains(tenant) {
            return Some((BlockReason::TenantPaused, tenant.to_string()));
        }
        if !self.breakers.is_empty() {
            if let Some((q, t, class)) = breaker::holding(&self.breakers, queue, tenant) {
                return Some((BlockReason::Breaker, format!("{q}/{t}/{class}")));
            }
        }
        if self.tenant_capped(tenant) {
            return Some((BlockReason::DailyCap, tenant.to_string()));
        }
        None
    }

    /// Each queue's blocked ready jobs by reason and scope; queues with
    /// none are left out.
    pub(super) fn blocked_jobs(&self) -> BTreeMap<String, Vec<Blocked>> {
        let mut out = BTreeMap::new();
        for (name, qi) in &self.queues {
            let blocked = self.blocked_in(name, qi);
            if !blocked.is_empty() {
                out.insert(name.clone(), blocked);
            }
        }
        out
    }

    fn blocked_in(&self, queue: &str, qi: &QueueIndex) -> Vec<Blocked> {
        let total = qi.counts.ready_total();
        if total == 0 {
            return Vec::new();
        }
        if self.controls.paused.contains(queue) {
            return vec![Blocked {
                reason: BlockReason::Paused,
                scope: String::new(),
                jobs: total,
            }];
        }
        let mut by: BTreeMap<(BlockReason, String), u64> = BTreeMap::new();
        // Tenants held in this queue, counted from whichever side is
        // smaller: the holds, or the queue's tenants.
        let breakers_here = breaker::held_tenants(&self.breakers, queue);
        let holds =
            self.controls.paused_tenants.len() + self.runs.capped.len() + breakers_here.len();
        let mut held_tenants: BTreeSet<&str> = BTreeSet::new();
        if holds > 0 {
            if holds <= qi.ready.tenant_count() {
                held_tenants.extend(self.controls.paused_tenants.iter().map(String::as_str));
                held_tenants.extend(self.runs.capped.keys().map(String::as_str));
                held_tenants.extend(breakers_here);
            } else {
                held_tenants.extend(qi.ready.by_tenant().map(|(t, _)| t));
            }
        }
        for t in held_tenants {
            let n = qi.ready.tenant_ready(t);
            if n == 0 {
                continue;
            }
            if let Some(hold) = self.tenant_hold(queue, t) {
                *by.entry(hold).or_default() += n;
            }
        }
        // Parked jobs (outside the ready set): under their tenant's hold,
        // else their own.
        for ((tenant, hold), n) in self.limits.parked_in(queue) {
            let key = match holds {
                0 => None,
                _ => self.tenant_hold(queue, tenant),
            };
            *by.entry(key.unwrap_or_else(|| parked_reason(hold)))
                .or_default() += n;
        }
        // Jobs of held runs still in the ready set (a pick parks them when
        // it meets them); a held tenant's are counted already.
        for run in self.runs.held.keys() {
            let n = qi.run_ready.get(run).copied().unwrap_or(0);
            let (tenant, name) = split_run_key(run);
            if n == 0 || (holds > 0 && self.tenant_hold(queue, tenant).is_some()) {
                continue;
            }
            *by.entry((BlockReason::Budget, format!("{tenant}/{name}")))
                .or_default() += n;
        }
        let counted: u64 = by.values().sum();
        let rest = total.saturating_sub(counted);
        if rest > 0 {
            if let Some(limit) = self.policies.concurrency_limit(queue) {
                if qi.counts.leased >= limit {
                    by.insert(
                        (
                            BlockReason::ConcurrencyLimit,
                            format!("{} leased of {limit}", qi.counts.leased),
                        ),
                        rest,
                    );
                }
            }
        }
        by.into_iter()
            .map(|((reason, scope), jobs)| Blocked {
                reason,
                scope,
                jobs,
            })
            .collect()
    }
}

/// The reason a parked job of an unheld tenant counts under.
fn parked_reason(hold: &Hold) -> (BlockReason, String) {
    match hold {
        Hold::Concurrency(k) | Hold::Rate(k) => (BlockReason::KeyLimit, k.clone()),
        Hold::Budget(run) => {
            let (tenant, name) = split_run_key(run);
            (BlockReason::Budget, format!("{tenant}/{name}"))
        }
    }
}

/// Ready jobs of each queue by reason, as a scan of every ready job works
/// them out, for the property test to check the counts against.
#[cfg(test)]
impl Machine {
    pub(super) fn blocked_by_scan(&self) -> BTreeMap<String, BTreeMap<BlockReason, u64>> {
        let mut out: BTreeMap<String, BTreeMap<BlockReason, u64>> = BTreeMap::new();
        for (id, job) in self
            .tree
            .scan_prefix([JOB])
            .filter_map(Result::ok)
            .map(|(k, v)| (job_key_id(&k).unwrap(), decode_job(&k, &v).unwrap()))
        {
            if job.state != JobState::Ready {
                continue;
            }
            let q = job.queue.as_str();
            let reason = if self.controls.paused.contains(q) {
                Some(BlockReason::Paused)
            } else if let Some((r, _)) = self.tenant_hold(q, &job.tenant) {
                Some(r)
            } else if let Some(hold) = self.limits.hold_of(id) {
                Some(parked_reason(hold).0)
            } else if self.budget_hold(&job).is_some() {
                Some(BlockReason::Budget)
            } else {
                let limit = self.policies.concurrency_limit(q);
                let leased = self.queues.get(q).map_or(0, |qi| qi.counts.leased);
                limit
                    .is_some_and(|l| leased >= l)
                    .then_some(BlockReason::ConcurrencyLimit)
            };
            if let Some(r) = reason {
                *out.entry(job.queue.clone())
                    .or_default()
                    .entry(r)
                    .or_default() += 1;
            }
        }
        out
    }
}
