//! Runs and their budgets. A run is the jobs of one tenant sharing a run
//! id. Its usage (cost its workers reported, time its leases were held,
//! leases granted) is kept under `U`+tenant\0run with its job counts. A run
//! at or over a limit is held (`G`+key): the pick parks its ready jobs
//! (`Hold::Budget`) and enqueues for it are refused, until an operator's
//! override raises the limit. A tenant's cost per UTC day (`V`+tenant)
//! past its `daily_cost_cap_usd` holds all its jobs until the next day of
//! the log's time, or a higher cap. Limits: the run's override, else the
//! tenant's as an operator set them (`B`+tenant), else its config's, else
//! `[budgets]`.

use super::*;
use crate::command::Usage;
use crate::policies::{micros_to_usd, Budgets};

const DAY_MS: u64 = 86_400_000;

fn run_jobs_prefix(tenant: &str, run: &str) -> Vec<u8> {
    let mut k = prefixed(RUN_JOB, &run_key(tenant, run));
    k.push(0);
    k
}

fn run_job_key(job: &Job) -> Vec<u8> {
    let mut k = run_jobs_prefix(&job.tenant, &job.run_id);
    k.extend_from_slice(&job.id.to_be_bytes());
    k
}

fn id_suffix(k: &[u8]) -> Option<JobId> {
    let start = k.len().checked_sub(8)?;
    k[start..].try_into().ok().map(u64::from_be_bytes)
}

/// What a run used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunUsage {
    /// Cost its workers reported, in millionths of a USD.
    pub cost_micros: u64,
    /// Time its jobs' leases were held, summed, in ms.
    pub lease_ms: u64,
    /// Leases granted to its jobs.
    pub attempts: u64,
    /// Named amounts its workers reported (`tokens_in`), summed by name.
    pub named: BTreeMap<String, u64>,
}

/// A run as the machine keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The tenant whose run it is.
    pub tenant: String,
    /// The run id.
    pub run: String,
    /// When its first job was enqueued: log time, ms since the epoch.
    pub first_at_ms: u64,
    /// When it last changed (an enqueue, a lease, a result), as `first_at_ms`.
    pub last_at_ms: u64,
    /// Jobs enqueued in it.
    pub enqueued: u64,
    /// Of them, those that succeeded.
    pub succeeded: u64,
    /// Of them, those dead-lettered.
    pub dead: u64,
    /// Of them, those cancelled.
    pub cancelled: u64,
    /// What its jobs used.
    pub usage: RunUsage,
    /// Limits an operator set for this run (`drover runs override`).
    pub limits: Budgets,
    /// The budget it is over, while its jobs are held.
    pub over: Option<String>,
    /// The run (`tenant/run`) it replays (`drover runs replay`).
    pub replay_of: Option<String>,
}

impl RunRecord {
    /// Jobs not finished yet.
    pub fn unfinished(&self) -> u64 {
        self.enqueued
            .saturating_sub(self.succeeded + self.dead + self.cancelled)
    }
}

/// A budget's limit and what was used of it, in its unit (millionths of
/// a USD, ms, leases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetUse {
    /// Which budget: `cost_usd`, `time`, `attempts` or `daily_cost_cap_usd`.
    pub budget: &'static str,
    /// Its limit.
    pub limit: u64,
    /// What was used of it.
    pub used: u64,
}

impl BudgetUse {
    /// `0.06 of 0.05 USD`, `1800 s of 1800 s`, `3 of 3`.
    pub fn describe(&self) -> String {
        match self.budget {
            "cost_usd" | "daily_cost_cap_usd" => format!(
                "{} of {} USD",
                micros_to_usd(self.used),
                micros_to_usd(self.limit)
            ),
            "time" => format!("{} s of {} s", self.used / 1000, self.limit / 1000),
            _ => format!("{} of {}", self.used, self.limit),
        }
    }

    /// Used over limit (1.0 = all of it).
    pub fn ratio(&self) -> f64 {
        if self.limit == 0 {
            return 1.0;
        }
        self.used as f64 / self.limit as f64
    }
}

/// Each budget of `limits` that is set, with what `usage` used of it.
pub fn budget_uses(limits: &Budgets, usage: &RunUsage) -> Vec<BudgetUse> {
    [
        ("cost_usd", limits.cost_micros, usage.cost_micros),
        ("time", limits.time_ms, usage.lease_ms),
        ("attempts", limits.attempts, usage.attempts),
    ]
    .into_iter()
    .filter_map(|(budget, limit, used)| {
        Some(BudgetUse {
            budget,
            limit: limit?,
            used,
        })
    })
    .collect()
}

/// The first budget used up (at or past its limit: a run is held at its
/// limit, not one job later).
fn over(limits: &Budgets, usage: &RunUsage) -> Option<BudgetUse> {
    budget_uses(limits, usage)
        .into_iter()
        .find(|u| u.used >= u.limit)
}

/// A tenant's cost on one UTC day of the log's time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantDay {
    /// The UTC day, in days since the epoch.
    pub day: u64,
    /// Cost the tenant's workers reported that day, in millionths of a USD.
    pub cost_micros: u64,
    /// At or past its daily cap: its jobs are held until the next day.
    pub capped: bool,
}

/// What the driver logs and counts after an applied range.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// A run went over a budget (or a tenant over its daily cap, with an
    /// empty run).
    BudgetExceeded {
        /// The run's tenant.
        tenant: String,
        /// The run id; empty for a tenant over its daily cap.
        run: String,
        /// The budget used up, and how much of it was used.
        over: BudgetUse,
    },
    /// A run's last job finished: what it used of each budget.
    Finished {
        /// The run's tenant.
        tenant: String,
        /// The run id.
        run: String,
        /// Each budget set for it, with what the run used of it.
        uses: Vec<BudgetUse>,
    },
}

/// A run's limits: its own, else its tenant's as an operator set them,
/// else its tenant's config's, else `[budgets]`.
fn resolve_limits(
    policies: &crate::policies::Policies,
    tenant_set: Option<Budgets>,
    tenant: &str,
    own: Budgets,
) -> Budgets {
    let configured = policies
        .tenants
        .get(tenant)
        .map(|t| t.budgets)
        .unwrap_or_default();
    own.or(tenant_set.unwrap_or_default())
        .or(configured)
        .or(policies.budgets)
}

/// Adds to a tenant's counter without copying its name once it has one
/// (this runs on every result).
fn add_to(counters: &mut BTreeMap<String, u64>, tenant: &str, n: u64) {
    match counters.get_mut(tenant) {
        Some(c) => *c = c.saturating_add(n),
        None => {
            counters.insert(tenant.to_string(), n);
        }
    }
}

pub(super) fn run_key(tenant: &str, run: &str) -> String {
    format!("{tenant}\0{run}")
}

fn prefixed(prefix: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(prefix);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Counters since this node opened its machine, for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTotals {
    /// Times a budget was exceeded, by budget and tenant.
    pub exceeded: BTreeMap<String, BTreeMap<String, u64>>,
    /// Cost reported, by tenant, in millionths of a USD.
    pub cost_micros: BTreeMap<String, u64>,
    /// Lease time held, by tenant.
    pub lease_ms: BTreeMap<String, u64>,
}

/// Budgets as the stats show them. The per-tenant counters are not here:
/// with many tenants they are too large to copy after every applied range
/// (see [`Machine::run_totals`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetStats {
    /// Runs held now, over a budget.
    pub runs_over_budget: u64,
    /// Tenants whose jobs are held, over their daily cost cap.
    pub capped_tenants: BTreeSet<String>,
}

/// The in-memory side of runs: which are held, which tenants are capped.
#[derive(Debug, Default)]
pub(super) struct Runs {
    /// Held runs by key, with the budget they are over.
    pub(super) held: BTreeMap<String, String>,
    /// Tenants over their daily cap, with the day (since the epoch).
    pub(super) capped: BTreeMap<String, u64>,
    /// Tenant limits an operator set.
    pub(super) tenant_budgets: BTreeMap<String, Budgets>,
    pub(super) totals: RunTotals,
    pub(super) events: Vec<RunEvent>,
}

impl Machine {
    pub(super) fn load_runs(&mut self) -> Result<(), MachineError> {
        for item in self.tree.scan_prefix([HELD_RUN]) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k[1..]).into_owned();
            self.runs.held.insert(key, decode(&k, &v)?);
        }
        for item in self.tree.scan_prefix([TENANT_DAY]) {
            let (k, v) = item?;
            let day: TenantDay = decode(&k, &v)?;
            if day.capped {
                let tenant = String::from_utf8_lossy(&k[1..]).into_owned();
                self.runs.capped.insert(tenant, day.day);
            }
        }
        for item in self.tree.scan_prefix([TENANT_BUDGETS]) {
            let (k, v) = item?;
            let tenant = String::from_utf8_lossy(&k[1..]).into_owned();
            self.runs.tenant_budgets.insert(tenant, decode(&k, &v)?);
        }
        Ok(())
    }

    /// What events the entries applied since the last call produced.
    pub fn take_run_events(&mut self) -> Vec<RunEvent> {
        std::mem::take(&mut self.runs.events)
    }

    fn run_record(&self, tenant: &str, run: &str) -> Result<RunRecord, MachineError> {
        let k = prefixed(RUN, &run_key(tenant, run));
        Ok(match self.get(&k)? {
            Some(v) => decode(&k, &v)?,
            None => RunRecord {
                tenant: tenant.to_string(),
                run: run.to_string(),
                ..RunRecord::default()
            },
        })
    }

    /// Whether `tenant` has a run named `run` (any job was enqueued in it).
    fn run_exists(&self, tenant: &str, run: &str) -> Result<bool, MachineError> {
        Ok(self.get(&prefixed(RUN, &run_key(tenant, run)))?.is_some())
    }

    /// Enqueues a replay's copies into a new run: the one the caller named
    /// if it does not exist, else the first free `RUN-replay-N`. Chosen
    /// here, so two replays applied one after the other never share a run.
    pub(super) fn enqueue_replay(
        &mut self,
        now: u64,
        r: &crate::command::EnqueueReplay,
    ) -> Result<Outcome, MachineError> {
        let into = match &r.into {
            Some(into) if self.run_exists(&r.tenant, into)? => None,
            Some(into) => Some(into.clone()),
            None => {
                let mut free = None;
                for n in 1..1000 {
                    let name = format!("{}-replay-{n}", r.run);
                    if !self.run_exists(&r.tenant, &name)? {
                        free = Some(name);
                        break;
                    }
                }
                free
            }
        };
        let Some(into) = into else {
            return Ok(Outcome::Rejected(Refusal::RunExists {
                tenant: r.tenant.clone(),
                run: r
                    .into
                    .clone()
                    .unwrap_or_else(|| format!("{}-replay-999", r.run)),
            }));
        };
        let jobs: Vec<NewJob> = r
            .jobs
            .iter()
            .map(|j| NewJob {
                run_id: into.clone(),
                ..j.clone()
            })
            .collect();
        Ok(match self.admit(now, &jobs) {
            Ok(()) => Outcome::EnqueuedRun {
                run: into,
                jobs: self.enqueue(now, &jobs)?,
            },
            Err(refusal) => Outcome::Rejected(refusal),
        })
    }

    /// The limits a run of `tenant` is under, with the run's own `limits`
    /// first.
    pub(super) fn run_limits(&self, tenant: &str, limits: Budgets) -> Budgets {
        resolve_limits(
            &self.policies,
            self.runs.tenant_budgets.get(tenant).copied(),
            tenant,
            limits,
        )
    }

    /// Changes a run's record with `change`, then holds or releases it by
    /// its limits. Jobs without a run have none.
    fn update_run(
        &mut self,
        now: u64,
        tenant: &str,
        run: &str,
        change: impl FnOnce(&mut RunRecord),
    ) -> Result<(), MachineError> {
        if run.is_empty() {
            return Ok(());
        }
        let mut rec = self.run_record(tenant, run)?;
        let was_unfinished = rec.unfinished();
        change(&mut rec);
        if rec.first_at_ms == 0 {
            rec.first_at_ms = now;
        }
        rec.last_at_ms = now;
        self.judge_run(&mut rec);
        if was_unfinished > 0 && rec.unfinished() == 0 {
            let uses = budget_uses(&self.run_limits(&rec.tenant, rec.limits), &rec.usage);
            self.runs.events.push(RunEvent::Finished {
                tenant: rec.tenant.clone(),
                run: rec.run.clone(),
                uses,
            });
        }
        self.put(prefixed(RUN, &run_key(tenant, run)), encode(&rec));
        Ok(())
    }

    /// Holds a run that is at or over a limit; releases one that no longer is.
    fn judge_run(&mut self, rec: &mut RunRecord) {
        let key = run_key(&rec.tenant, &rec.run);
        match over(&self.run_limits(&rec.tenant, rec.limits), &rec.usage) {
            Some(over) => {
                if rec.over.as_deref() != Some(over.budget) {
                    if rec.over.is_none() {
                        self.runs.events.push(RunEvent::BudgetExceeded {
                            tenant: rec.tenant.clone(),
                            run: rec.run.clone(),
                            over,
                        });
                        *self
                            .runs
                            .totals
                            .exceeded
                            .entry(over.budget.to_string())
                            .or_default()
                            .entry(rec.tenant.clone())
                            .or_default() += 1;
                    }
                    rec.over = Some(over.budget.to_string());
                    self.runs.held.insert(key.clone(), over.budget.to_string());
                    self.put(prefixed(HELD_RUN, &key), encode(&over.budget.to_string()));
                }
            }
            None => {
                if rec.over.take().is_some() {
                    self.runs.held.remove(&key);
                    self.delete(prefixed(HELD_RUN, &key));
                    self.unpark_hold(&limits::Hold::Budget(key));
                }
            }
        }
    }

    /// Whether a job's run or tenant is held by a budget: its hold for
    /// the pick.
    pub(super) fn budget_hold(&self, job: &Job) -> Option<limits::Hold> {
        if self.runs.held.is_empty() || job.run_id.is_empty() {
            return None;
        }
        let key = run_key(&job.tenant, &job.run_id);
        self.runs
            .held
            .contains_key(&key)
            .then_some(limits::Hold::Budget(key))
    }

    /// Whether the tenant's jobs are held by its daily cap.
    pub(super) fn tenant_capped(&self, tenant: &str) -> bool {
        !self.runs.capped.is_empty() && self.runs.capped.contains_key(tenant)
    }

    /// Refuses a new job for a held run or a capped tenant, naming the
    /// budget, the limit and the usage.
    pub(super) fn admit_budget(&self, job: &NewJob) -> Result<(), Refusal> {
        if self.tenant_capped(&job.tenant) {
            let day = self.tenant_day(&job.tenant).unwrap_or_default();
            return Err(Refusal::BudgetExceeded {
                tenant: job.tenant.clone(),
                run: String::new(),
                budget: "daily_cost_cap_usd".into(),
                usage: BudgetUse {
                    budget: "daily_cost_cap_usd",
                    limit: self.daily_cap(&job.tenant).unwrap_or(0),
                    used: day.cost_micros,
                }
                .describe(),
            });
        }
        if self.runs.held.is_empty() || job.run_id.is_empty() {
            return Ok(());
        }
        let Some(budget) = self.runs.held.get(&run_key(&job.tenant, &job.run_id)) else {
            return Ok(());
        };
        let rec = self
            .run_record(&job.tenant, &job.run_id)
            .unwrap_or_default();
        let usage = budget_uses(&self.run_limits(&rec.tenant, rec.limits), &rec.usage)
            .into_iter()
            .find(|u| u.budget == budget)
            .map(|u| u.describe())
            .unwrap_or_default();
        Err(Refusal::BudgetExceeded {
            tenant: job.tenant.clone(),
            run: job.run_id.clone(),
            budget: budget.clone(),
            usage,
        })
    }

    /// A new job of a run.
    pub(super) fn run_enqueued(&mut self, now: u64, job: &Job) -> Result<(), MachineError> {
        if job.run_id.is_empty() {
            return Ok(());
        }
        self.put(run_job_key(job), Vec::new());
        let replay_of = job.labels.get(crate::job::REPLAY_OF_LABEL);
        self.update_run(now, &job.tenant, &job.run_id, |r| {
            r.enqueued += 1;
            if r.replay_of.is_none() {
                r.replay_of = replay_of.cloned();
            }
        })
    }

    /// A job removed (retention, purge) leaves its run's index.
    pub(super) fn unindex_run_job(&mut self, job: &Job) {
        if !job.run_id.is_empty() {
            self.delete(run_job_key(job));
        }
    }

    /// Applies a [`Command::CancelRun`]: cancels the run's unfinished jobs
    /// among the `limit` after job `after`; says where the next slice starts.
    pub(super) fn cancel_run(
        &mut self,
        now: u64,
        tenant: &str,
        run: &str,
        after: JobId,
        limit: u32,
    ) -> Result<Outcome, MachineError> {
        let mut start = run_jobs_prefix(tenant, run);
        let prefix = start.clone();
        start.extend_from_slice(&after.saturating_add(1).to_be_bytes());
        let ids: Vec<JobId> = self
            .scan_merged_from(&prefix, &start, limit as usize)?
            .into_iter()
            .filter_map(|(k, _)| id_suffix(&k))
            .collect();
        // A job cancelled by a dependency cancelled before it counts too:
        // this command ended it.
        let mut unfinished = Vec::new();
        for &id in &ids {
            if self
                .load(id)?
                .is_some_and(|(job, _)| !job.state.is_finished())
            {
                unfinished.push(id);
            }
        }
        let cancelled = unfinished.len() as u32;
        for id in unfinished {
            self.cancel(now, id)?.ok();
            // Waiters of what was cancelled follow now, not after the slice.
            self.release_dependents(now)?;
        }
        let next = (ids.len() == limit as usize)
            .then(|| ids.last().copied())
            .flatten();
        Ok(Outcome::RunCancelled { cancelled, next })
    }

    /// A lease of a job of a run.
    pub(super) fn run_leased(&mut self, now: u64, job: &Job) -> Result<(), MachineError> {
        self.update_run(now, &job.tenant, &job.run_id, |r| r.usage.attempts += 1)
    }

    /// A lease ended (a result, a failure, an expiry, a requeue): its time
    /// and what the worker reported count on the job, its run and its
    /// tenant.
    pub(super) fn lease_ended(
        &mut self,
        now: u64,
        job: &mut Job,
        usage: Option<&Usage>,
    ) -> Result<(), MachineError> {
        let held_ms = now.saturating_sub(find::state_since(job));
        let empty = Usage::default();
        let usage = usage.unwrap_or(&empty);
        job.lease_ms = job.lease_ms.saturating_add(held_ms);
        self.tally
            .lease_ended(now, &job.queue, &job.job_type, held_ms);
        if !self.lease_versions.is_empty() {
            self.lease_versions.remove(&(job.id, job.attempts));
        }
        job.cost_micros = job.cost_micros.saturating_add(usage.cost_micros);
        for (name, n) in &usage.named {
            let sum = job.usage.entry(name.clone()).or_default();
            *sum = sum.saturating_add(*n);
        }
        let totals = &mut self.runs.totals;
        add_to(&mut totals.lease_ms, &job.tenant, held_ms);
        if usage.cost_micros > 0 {
            add_to(&mut totals.cost_micros, &job.tenant, usage.cost_micros);
            self.tenant_spent(now, &job.tenant, usage.cost_micros)?;
        }
        self.update_run(now, &job.tenant, &job.run_id, |r| {
            let u = &mut r.usage;
            u.lease_ms = u.lease_ms.saturating_add(held_ms);
            u.cost_micros = u.cost_micros.saturating_add(usage.cost_micros);
            for (name, n) in &usage.named {
                let sum = u.named.entry(name.clone()).or_default();
                *sum = sum.saturating_add(*n);
            }
        })
    }

    /// A job of a run finished (`Some(state)`), or came back from the dead
    /// letters (`None`, after a replay).
    pub(super) fn run_finished(
        &mut self,
        now: u64,
        job: &Job,
        state: Option<JobState>,
    ) -> Result<(), MachineError> {
        self.update_run(now, &job.tenant, &job.run_id, |r| match state {
            Some(JobState::Succeeded) => r.succeeded += 1,
            Some(JobState::Dead) => r.dead += 1,
            Some(_) => r.cancelled += 1,
            None => r.dead = r.dead.saturating_sub(1),
        })
    }

    fn tenant_day(&self, tenant: &str) -> Result<TenantDay, MachineError> {
        let k = prefixed(TENANT_DAY, tenant);
        Ok(match self.get(&k)? {
            Some(v) => decode(&k, &v)?,
            None => TenantDay::default(),
        })
    }

    fn daily_cap(&self, tenant: &str) -> Option<u64> {
        self.run_limits(tenant, Budgets::default())
            .daily_cost_cap_micros
    }

    /// Counts a tenant's cost on the log's UTC day, capping it at its limit.
    fn tenant_spent(&mut self, now: u64, tenant: &str, micros: u64) -> Result<(), MachineError> {
        let mut day = self.tenant_day(tenant)?;
        let today = now / DAY_MS;
        if day.day != today {
            // A new day (before the tick that frees capped tenants): it
            // starts uncapped, in memory as on disk.
            day = TenantDay {
                day: today,
                ..TenantDay::default()
            };
            self.runs.capped.remove(tenant);
        }
        day.cost_micros = day.cost_micros.saturating_add(micros);
        self.judge_tenant(tenant, &mut day);
        self.put(prefixed(TENANT_DAY, tenant), encode(&day));
        Ok(())
    }

    /// Caps a tenant at or past its daily cap; uncaps one no longer so.
    fn judge_tenant(&mut self, tenant: &str, day: &mut TenantDay) {
        let cap = self.daily_cap(tenant);
        let over = cap.is_some_and(|cap| day.cost_micros >= cap);
        if over && !day.capped {
            day.capped = true;
            self.runs.capped.insert(tenant.to_string(), day.day);
            let over = BudgetUse {
                budget: "daily_cost_cap_usd",
                limit: cap.unwrap_or(0),
                used: day.cost_micros,
            };
            self.runs.events.push(RunEvent::BudgetExceeded {
                tenant: tenant.to_string(),
                run: String::new(),
                over,
            });
            *self
                .runs
                .totals
                .exceeded
                .entry(over.budget.to_string())
                .or_default()
                .entry(tenant.to_string())
                .or_default() += 1;
        } else if !over && day.capped {
            day.capped = false;
            self.runs.capped.remove(tenant);
        }
    }

    /// At a tick: tenants capped on an earlier day are free again.
    pub(super) fn uncap_tenants(&mut self, now: u64) -> Result<(), MachineError> {
        let today = now / DAY_MS;
        let due: Vec<String> = self
            .runs
            .capped
            .iter()
            .filter(|(_, day)| **day < today)
            .map(|(t, _)| t.clone())
            .collect();
        for tenant in due {
            let mut day = self.tenant_day(&tenant)?;
            day.capped = false;
            self.runs.capped.remove(&tenant);
            self.put(prefixed(TENANT_DAY, &tenant), encode(&day));
        }
        Ok(())
    }

    /// Applies a [`Command::OverrideRun`]: the run's limits become
    /// `limits` where set; it is released if under them now.
    pub(super) fn override_run(
        &mut self,
        now: u64,
        tenant: &str,
        run: &str,
        limits: Budgets,
    ) -> Result<Outcome, MachineError> {
        let rec = self.run_record(tenant, run)?;
        if rec.enqueued == 0 {
            return Ok(Outcome::Rejected(Refusal::UnknownRun {
                tenant: tenant.to_string(),
                run: run.to_string(),
            }));
        }
        self.update_run(now, tenant, run, |r| r.limits = limits.or(r.limits))?;
        let rec = self.run_record(tenant, run)?;
        Ok(Outcome::RunBudget { over: rec.over })
    }

    /// After new policies: held runs and capped tenants are weighed again
    /// against their limits now.
    pub(super) fn rejudge_budgets(&mut self, now: u64) -> Result<(), MachineError> {
        let held: Vec<String> = self.runs.held.keys().cloned().collect();
        for key in held {
            if let Some((tenant, run)) = key.split_once('\0') {
                self.update_run(now, tenant, run, |_| {})?;
            }
        }
        let capped: Vec<String> = self.runs.capped.keys().cloned().collect();
        for tenant in capped {
            let mut day = self.tenant_day(&tenant)?;
            self.judge_tenant(&tenant, &mut day);
            self.put(prefixed(TENANT_DAY, &tenant), encode(&day));
        }
        Ok(())
    }

    /// Applies a [`Command::SetTenantBudgets`]; the tenant's held runs and
    /// its cap are weighed again.
    pub(super) fn set_tenant_budgets(
        &mut self,
        now: u64,
        tenant: &str,
        budgets: Budgets,
    ) -> Result<Outcome, MachineError> {
        self.runs.tenant_budgets.insert(tenant.to_string(), budgets);
        self.put(prefixed(TENANT_BUDGETS, tenant), encode(&budgets));
        let prefix = run_key(tenant, "");
        let held: Vec<String> = self
            .runs
            .held
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k[prefix.len()..].to_string())
            .collect();
        for run in held {
            self.update_run(now, tenant, &run, |_| {})?;
        }
        let mut day = self.tenant_day(tenant)?;
        if day.day == now / DAY_MS || day.capped {
            self.judge_tenant(tenant, &mut day);
            self.put(prefixed(TENANT_DAY, tenant), encode(&day));
        }
        Ok(Outcome::RunBudget { over: None })
    }

    /// Budget counters and the held runs, for the stats.
    pub(super) fn run_stats(&self) -> BudgetStats {
        BudgetStats {
            runs_over_budget: self.runs.held.len() as u64,
            capped_tenants: self.runs.capped.keys().cloned().collect(),
        }
    }
}

impl Machine {
    /// Budget counters by tenant since this node opened its machine, for
    /// the metrics (asked for at a scrape, not published with the stats).
    pub fn run_totals(&self) -> RunTotals {
        self.runs.totals.clone()
    }
}

/// Runs for the APIs, from the committed tree.
impl JobReader {
    /// The committed record of `tenant`'s run `run`; None if it has none.
    pub fn run(&self, tenant: &str, run: &str) -> Result<Option<RunRecord>, MachineError> {
        let k = prefixed(RUN, &run_key(tenant, run));
        match self.tree().get(&k)? {
            Some(v) => Ok(Some(decode(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// Runs in key order (tenant, then run) after `after`, at most `limit`.
    pub fn runs(
        &self,
        tenant: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, MachineError> {
        let prefix = prefixed(RUN, &tenant.map(|t| run_key(t, "")).unwrap_or_default());
        let start = match after {
            Some((t, r)) => {
                let mut k = prefixed(RUN, &run_key(t, r));
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for item in self.tree().range(start..) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Ids of the run's jobs after `after`, at most `limit`, in id order.
    pub fn run_job_ids(
        &self,
        tenant: &str,
        run: &str,
        after: JobId,
        limit: usize,
    ) -> Result<Vec<JobId>, MachineError> {
        let prefix = run_jobs_prefix(tenant, run);
        let mut start = prefix.clone();
        start.extend_from_slice(&after.saturating_add(1).to_be_bytes());
        let mut out = Vec::new();
        for item in self.tree().range(start..) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            if let Some(id) = id_suffix(&k) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// A tenant's cost today (of `now`) and whether it is capped.
    pub fn tenant_day(&self, tenant: &str) -> Result<TenantDay, MachineError> {
        let k = prefixed(TENANT_DAY, tenant);
        Ok(match self.tree().get(&k)? {
            Some(v) => decode(&k, &v)?,
            None => TenantDay::default(),
        })
    }

    /// The limits an operator set for a tenant, if any.
    pub fn tenant_budgets(&self, tenant: &str) -> Result<Option<Budgets>, MachineError> {
        let k = prefixed(TENANT_BUDGETS, tenant);
        match self.tree().get(&k)? {
            Some(v) => Ok(Some(decode(&k, &v)?)),
            None => Ok(None),
        }
    }

    /// Each budget set for the run, with its use, and the budget that holds
    /// it (its own, or its tenant's daily cap), if one does.
    pub fn run_budget(
        &self,
        rec: &RunRecord,
    ) -> Result<(Vec<BudgetUse>, Option<String>), MachineError> {
        let limits = resolve_limits(
            &self.policies()?,
            self.tenant_budgets(&rec.tenant)?,
            &rec.tenant,
            rec.limits,
        );
        let held_by = match &rec.over {
            Some(b) => Some(b.clone()),
            None => self
                .tenant_day(&rec.tenant)?
                .capped
                .then(|| "daily_cost_cap_usd".to_string()),
        };
        Ok((budget_uses(&limits, &rec.usage), held_by))
    }

    /// The budget `job`'s run is over, if it is held.
    pub fn run_held(&self, job: &Job) -> Result<Option<String>, MachineError> {
        if job.run_id.is_empty() {
            return Ok(None);
        }
        let k = prefixed(HELD_RUN, &run_key(&job.tenant, &job.run_id));
        match self.tree().get(&k)? {
            Some(v) => Ok(Some(decode(&k, &v)?)),
            None => Ok(None),
        }
    }
}
