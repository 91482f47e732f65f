//! Per-key limits. A concurrency key lets at most N of its jobs be leased
//! at once; a rate key at most N leases per period (GCRA, timed by the log's
//! time, one value per key under `R`+key).
//!
//! A ready job the pick meets while its key is at its limit is parked: it
//! stays ready but leaves the ready set, so later picks do not meet it
//! again, and `W`+id records why. Parking is replicated state like the
//! rest: which jobs are parked, and when they come back, follow only from
//! the log and what is stored, so every node (and a reopened one) picks
//! alike. A concurrency key's jobs come back one per freed slot when its
//! leases end; a rate key's one per emission interval (the next release
//! time is stored with the key's arrival time).

use super::*;
use crate::job::JobKeys;
use crate::policies::Rate;

/// Most jobs one lease command parks; the rest are met by later leases.
const MAX_PARKS_PER_LEASE: usize = 1000;

/// What holds a parked job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Hold {
    /// Its concurrency key, which has as many jobs leased as it may.
    Concurrency(String),
    /// Its rate key, which has no lease left in its period.
    Rate(String),
    /// The job's run (tenant\0run) is over a budget.
    Budget(String),
}

impl Hold {
    /// How a job's view says it waits.
    pub fn describe(&self) -> String {
        match self {
            Hold::Concurrency(k) => format!("limit {k}"),
            Hold::Rate(k) => format!("limit {k} (rate)"),
            Hold::Budget(_) => "held: budget".into(),
        }
    }
}

/// A rate key's state, in µs of log time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RateState {
    /// GCRA's theoretical arrival time: a lease is allowed while
    /// `now + tolerance >= tat`.
    tat: u64,
    /// No parked job of the key comes back before this.
    release: u64,
}

/// A parked job, with what putting it back into the ready set needs.
#[derive(Debug, Clone)]
struct Parked {
    hold: Hold,
    queue: String,
    tenant: String,
    /// Its run's key (`tenant\0run`), empty if it has none.
    run: String,
    priority: u8,
    since: u64,
    /// The job's own limits, if it set them.
    own_limit: Option<u32>,
    own_rate: Option<Rate>,
}

/// The state of per-key limits; the machine stores and orchestrates it.
#[derive(Debug, Default)]
pub(super) struct KeyLimits {
    /// Leased jobs by concurrency key (rebuilt from the job records).
    leased: HashMap<String, u32>,
    rates: HashMap<String, RateState>,
    /// Parked jobs by hold, in (priority, id) order.
    parked: BTreeMap<Hold, BTreeSet<(u8, JobId)>>,
    parked_ids: HashMap<JobId, Parked>,
    /// Parked jobs by queue, then by (tenant, hold), for the blocked
    /// counts.
    parked_by_queue: HashMap<String, BTreeMap<(String, Hold), u64>>,
    /// Holds read from `W` on open, before their jobs are placed.
    loaded: HashMap<JobId, Hold>,
    /// Concurrency keys whose leases ended in the command being applied.
    freed: BTreeSet<String>,
    /// Rate keys with parked jobs by when (ms) the next comes back, so a
    /// lease looks at the keys that are due, not at every key.
    rate_due: BTreeSet<(u64, String)>,
    rate_due_of: HashMap<String, u64>,
}

fn to_us(ms: u64) -> u64 {
    ms.saturating_mul(1000)
}

/// A rate's emission interval and tolerance, in µs: N per period allows N
/// at once, then one per period/N.
fn gcra(rate: Rate) -> (u64, u64) {
    let period = to_us(rate.period_ms);
    let interval = (period / u64::from(rate.count.max(1))).max(1);
    (interval, period.saturating_sub(interval))
}

impl KeyLimits {
    /// Parked jobs whose (queue, tenant) pass `keep`.
    pub(super) fn parked_ids<'a>(
        &'a self,
        keep: impl Fn(&str, &str) -> bool + 'a,
    ) -> impl Iterator<Item = JobId> + 'a {
        self.parked_ids
            .iter()
            .filter(move |(_, p)| keep(&p.queue, &p.tenant))
            .map(|(id, _)| *id)
    }

    /// Parked jobs of `queue` by (tenant, hold).
    pub(super) fn parked_in(&self, queue: &str) -> impl Iterator<Item = (&(String, Hold), &u64)> {
        self.parked_by_queue.get(queue).into_iter().flatten()
    }

    /// What holds job `id` parked, if it is.
    #[cfg(test)]
    pub(super) fn hold_of(&self, id: JobId) -> Option<&Hold> {
        self.parked_ids.get(&id).map(|p| &p.hold)
    }

    fn count_parked(&mut self, p: &Parked, add: bool) {
        let by = self.parked_by_queue.entry(p.queue.clone()).or_default();
        let k = (p.tenant.clone(), p.hold.clone());
        if add {
            *by.entry(k).or_default() += 1;
        } else {
            if let Some(n) = by.get_mut(&k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    by.remove(&k);
                }
            }
            if by.is_empty() {
                self.parked_by_queue.remove(&p.queue);
            }
        }
    }

    /// Whether a lease of `key` at `now` (ms) keeps within `rate`.
    fn rate_allows(&self, key: &str, rate: Rate, now: u64) -> bool {
        let (_, tolerance) = gcra(rate);
        self.rates
            .get(key)
            .is_none_or(|s| to_us(now).saturating_add(tolerance) >= s.tat)
    }

    /// When (ms) the key's next parked job comes back.
    fn release_at(&self, key: &str, rate: Option<Rate>) -> u64 {
        let state = self.rates.get(key).copied().unwrap_or_default();
        let allowed = match rate {
            Some(rate) => state.tat.saturating_sub(gcra(rate).1),
            None => 0,
        };
        allowed.max(state.release).div_ceil(1000)
    }
}

impl Machine {
    /// Reads the parked holds and rate states on open, before the jobs are
    /// placed.
    pub(super) fn load_limits(&mut self) -> Result<(), MachineError> {
        for item in self.tree.scan_prefix([PARKED]) {
            let (k, v) = item?;
            let id = u64::from_be_bytes(k[1..].try_into().map_err(|_| MachineError::Corrupt {
                key: describe_key(&k),
                reason: "a parked job's key is not W and an id".into(),
            })?);
            self.limits.loaded.insert(id, decode(&k, &v)?);
        }
        for item in self.tree.scan_prefix([RATE]) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k[1..]).into_owned();
            self.limits.rates.insert(key, decode(&k, &v)?);
        }
        Ok(())
    }

    /// The limit of the job's concurrency key, if it is under one.
    fn concurrency_limit_of(&self, key: &str, own: Option<u32>) -> Option<u32> {
        own.or_else(|| self.policies.key_limit(key)?.concurrency)
    }

    fn rate_of(&self, key: &str, own: Option<Rate>) -> Option<Rate> {
        own.or_else(|| self.policies.key_limit(key)?.rate)
    }

    /// What holds `job` back from a lease at `now`, if anything.
    pub(super) fn limit_hold(&self, job: &Job, now: u64) -> Option<Hold> {
        if let Some(hold) = self.budget_hold(job) {
            return Some(hold);
        }
        let keys = JobKeys::of(&job.labels);
        if let Some((key, own)) = keys.concurrency {
            let leased = self.limits.leased.get(key).copied().unwrap_or(0);
            if self
                .concurrency_limit_of(key, own)
                .is_some_and(|limit| leased >= limit)
            {
                return Some(Hold::Concurrency(key.to_string()));
            }
        }
        if let Some((key, own)) = keys.rate {
            if let Some(rate) = self.rate_of(key, own) {
                if !self.limits.rate_allows(key, rate, now) {
                    return Some(Hold::Rate(key.to_string()));
                }
            }
        }
        None
    }

    /// Takes a ready job the pick met out of the ready set until its key
    /// frees.
    pub(super) fn park(&mut self, job: &Job, hold: Hold) {
        if let Some(qi) = self.queues.get_mut(&job.queue) {
            if qi
                .ready
                .remove(job.priority, &job.tenant, job.id, job.run_at_ms)
            {
                qi.count_run_ready(&job.tenant, &job.run_id, false);
            }
        }
        self.put(key(PARKED, job.id).to_vec(), encode(&hold));
        self.track_parked(job, hold);
    }

    fn track_parked(&mut self, job: &Job, hold: Hold) {
        let l = &mut self.limits;
        l.parked
            .entry(hold.clone())
            .or_default()
            .insert((job.priority, job.id));
        let keys = JobKeys::of(&job.labels);
        let own_limit = keys.concurrency.and_then(|(_, own)| own);
        let own_rate = keys.rate.and_then(|(_, own)| own);
        let parked = Parked {
            hold,
            queue: job.queue.clone(),
            tenant: job.tenant.clone(),
            run: match job.run_id.as_str() {
                "" => String::new(),
                run => runs::run_key(&job.tenant, run),
            },
            priority: job.priority,
            since: job.run_at_ms,
            own_limit,
            own_rate,
        };
        l.count_parked(&parked, true);
        l.parked_ids.insert(job.id, parked);
        if let Some(Hold::Rate(key)) = self.limits.parked_ids.get(&job.id).map(|p| p.hold.clone()) {
            self.reschedule_rate(&key);
        }
    }

    /// `place` of a ready job: into the ready set, or back among the parked
    /// if `W` says so (on open).
    pub(super) fn place_ready(&mut self, job: &Job) {
        if let Some(hold) = self.limits.loaded.remove(&job.id) {
            self.track_parked(job, hold);
            return;
        }
        let qi = self.queues.entry(job.queue.clone()).or_default();
        if qi
            .ready
            .insert(job.priority, &job.tenant, job.id, job.run_at_ms)
        {
            qi.count_run_ready(&job.tenant, &job.run_id, true);
        }
    }

    /// `unplace` of a ready job: out of the ready set or the parked.
    pub(super) fn unplace_ready(&mut self, job: &Job) {
        if self.forget_parked(job.id) {
            self.delete(key(PARKED, job.id).to_vec());
        } else if let Some(qi) = self.queues.get_mut(&job.queue) {
            if qi
                .ready
                .remove(job.priority, &job.tenant, job.id, job.run_at_ms)
            {
                qi.count_run_ready(&job.tenant, &job.run_id, false);
            }
        }
    }

    fn forget_parked(&mut self, id: JobId) -> bool {
        let l = &mut self.limits;
        let Some(p) = l.parked_ids.remove(&id) else {
            return false;
        };
        l.count_parked(&p, false);
        if let Some(set) = l.parked.get_mut(&p.hold) {
            set.remove(&(p.priority, id));
            if set.is_empty() {
                l.parked.remove(&p.hold);
            }
        }
        if let Hold::Rate(key) = &p.hold {
            self.reschedule_rate(key);
        }
        true
    }

    /// Puts a parked job back into the ready set.
    fn unpark(&mut self, id: JobId) {
        let Some(p) = self.limits.parked_ids.get(&id).cloned() else {
            return;
        };
        self.forget_parked(id);
        self.delete(key(PARKED, id).to_vec());
        let qi = self.queues.entry(p.queue).or_default();
        if qi.ready.insert(p.priority, &p.tenant, id, p.since) && !p.run.is_empty() {
            *qi.run_ready.entry(p.run).or_default() += 1;
        }
    }

    /// Counts a job's lease against its concurrency key (`place`).
    pub(super) fn count_lease(&mut self, job: &Job) {
        if let Some((key, _)) = JobKeys::of(&job.labels).concurrency {
            *self.limits.leased.entry(key.to_string()).or_default() += 1;
        }
    }

    /// The inverse of `count_lease` (`unplace`); the key's parked jobs may
    /// come back once the command is applied.
    pub(super) fn uncount_lease(&mut self, job: &Job) {
        if let Some((key, _)) = JobKeys::of(&job.labels).concurrency {
            if let Some(n) = self.limits.leased.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.limits.leased.remove(key);
                }
            }
            if self
                .limits
                .parked
                .contains_key(&Hold::Concurrency(key.to_string()))
            {
                self.limits.freed.insert(key.to_string());
            }
        }
    }

    /// After a lease of `job`: the rate key's arrival time moves on.
    pub(super) fn took_lease(&mut self, job: &Job, now: u64) {
        let Some((key, own)) = JobKeys::of(&job.labels).rate else {
            return;
        };
        let Some(rate) = self.rate_of(key, own) else {
            return;
        };
        let (interval, _) = gcra(rate);
        let state = self.limits.rates.entry(key.to_string()).or_default();
        state.tat = state.tat.max(to_us(now)).saturating_add(interval);
        let bytes = encode(&*state);
        let mut k = vec![RATE];
        k.extend_from_slice(key.as_bytes());
        self.put(k, bytes);
        if self.limits.rate_due_of.contains_key(key) {
            let key = key.to_string();
            self.reschedule_rate(&key);
        }
    }

    /// After each command: parked jobs of concurrency keys with free slots
    /// come back, best (priority, id) first, as many as there are slots.
    pub(super) fn release_freed(&mut self) {
        if self.limits.freed.is_empty() {
            return;
        }
        for key in std::mem::take(&mut self.limits.freed) {
            self.release_concurrency(&key);
        }
    }

    fn release_concurrency(&mut self, key: &str) {
        let hold = Hold::Concurrency(key.to_string());
        let mut back = 0u32;
        loop {
            let Some(&(_, id)) = self.limits.parked.get(&hold).and_then(|s| s.first()) else {
                return;
            };
            let own = self.first_parked(&hold).and_then(|p| p.own_limit);
            let leased = self.limits.leased.get(key).copied().unwrap_or(0);
            if self
                .concurrency_limit_of(key, own)
                .is_some_and(|limit| leased.saturating_add(back) >= limit)
            {
                return;
            }
            self.unpark(id);
            back += 1;
        }
    }

    /// Parked jobs of rate keys whose time has come: one per key per
    /// emission interval (all of a key no longer limited).
    pub(super) fn release_rates(&mut self, now: u64) {
        let due: Vec<String> = self
            .limits
            .rate_due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, k)| k.clone())
            .collect();
        for key in due {
            self.release_rate(&key, now);
            self.reschedule_rate(&key);
        }
    }

    /// Files when a rate key's next parked job comes back (at once when it
    /// is no longer limited), or takes it out when none is parked.
    fn reschedule_rate(&mut self, key: &str) {
        let hold = Hold::Rate(key.to_string());
        let due = self
            .first_parked(&hold)
            .map(|p| match self.rate_of(key, p.own_rate) {
                Some(rate) => self.limits.release_at(key, Some(rate)),
                None => 0,
            });
        let l = &mut self.limits;
        if let Some(old) = l.rate_due_of.remove(key) {
            l.rate_due.remove(&(old, key.to_string()));
        }
        if let Some(due) = due {
            l.rate_due.insert((due, key.to_string()));
            l.rate_due_of.insert(key.to_string(), due);
        }
    }

    fn release_rate(&mut self, key: &str, now: u64) {
        let hold = Hold::Rate(key.to_string());
        let Some(rate) = self.first_parked(&hold).map(|p| p.own_rate) else {
            return;
        };
        let rate = self.rate_of(key, rate);
        let Some(rate) = rate else {
            self.unpark_hold(&hold);
            return;
        };
        if self.limits.release_at(key, Some(rate)) > now {
            return;
        }
        let Some(&(_, id)) = self.limits.parked.get(&hold).and_then(|s| s.first()) else {
            return;
        };
        self.unpark(id);
        let (interval, _) = gcra(rate);
        let state = self.limits.rates.entry(key.to_string()).or_default();
        state.release = to_us(now).saturating_add(interval);
        let bytes = encode(&*state);
        let mut k = vec![RATE];
        k.extend_from_slice(key.as_bytes());
        self.put(k, bytes);
    }

    /// After new policies: every key's parked jobs are weighed again.
    pub(super) fn release_all(&mut self, now: u64) {
        let mut concurrency = Vec::new();
        let mut rate = Vec::new();
        for hold in self.limits.parked.keys() {
            match hold {
                Hold::Concurrency(k) => concurrency.push(k.clone()),
                Hold::Rate(k) => rate.push(k.clone()),
                Hold::Budget(_) => {}
            }
        }
        for key in concurrency {
            self.release_concurrency(&key);
        }
        // The policies set the rates: when each key is due again.
        for key in rate {
            self.reschedule_rate(&key);
        }
        self.release_rates(now);
    }

    /// Puts every job parked by `hold` back into the ready set.
    pub(super) fn unpark_hold(&mut self, hold: &Hold) {
        let ids: Vec<JobId> = self
            .limits
            .parked
            .get(hold)
            .map(|s| s.iter().map(|(_, id)| *id).collect())
            .unwrap_or_default();
        for id in ids {
            self.unpark(id);
        }
    }

    /// The key's best parked job: the one that comes back first.
    fn first_parked(&self, hold: &Hold) -> Option<&Parked> {
        let (_, id) = self.limits.parked.get(hold)?.first()?;
        self.limits.parked_ids.get(id)
    }

    /// The earliest time a parked rate-limited job comes back.
    pub(super) fn next_release_ms(&self) -> Option<u64> {
        self.limits.rate_due.first().map(|(at, _)| *at)
    }

    /// The due index as a scan of every parked rate key works it out.
    #[cfg(test)]
    pub(super) fn rate_due_by_scan(&self) -> BTreeSet<(u64, String)> {
        self.limits
            .parked
            .keys()
            .filter_map(|h| match h {
                Hold::Rate(k) => {
                    let own = self.first_parked(h).and_then(|p| p.own_rate);
                    let due = match self.rate_of(k, own) {
                        Some(rate) => self.limits.release_at(k, Some(rate)),
                        None => 0,
                    };
                    Some((due, k.clone()))
                }
                Hold::Concurrency(_) | Hold::Budget(_) => None,
            })
            .collect()
    }

    /// The due index as kept.
    #[cfg(test)]
    pub(super) fn rate_due(&self) -> &BTreeSet<(u64, String)> {
        &self.limits.rate_due
    }

    /// Parks jobs the pick meets in a lease at most this often.
    pub(super) const fn max_parks() -> usize {
        MAX_PARKS_PER_LEASE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_count_at_once_then_one_per_interval() {
        let rate = Rate {
            count: 2,
            period_ms: 1000,
        };
        let mut l = KeyLimits::default();
        let take = |l: &mut KeyLimits, now: u64| {
            let ok = l.rate_allows("k", rate, now);
            if ok {
                let s = l.rates.entry("k".into()).or_default();
                s.tat = s.tat.max(to_us(now)) + gcra(rate).0;
            }
            ok
        };
        assert!(take(&mut l, 0));
        assert!(take(&mut l, 0));
        assert!(!take(&mut l, 0), "a third at once is over 2/s");
        assert!(!take(&mut l, 499));
        assert!(take(&mut l, 500), "one more after period/count");
        assert!(!take(&mut l, 500));
        assert_eq!(l.release_at("k", Some(rate)), 1000);
    }
}
