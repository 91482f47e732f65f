//! The pick: which ready job a lease takes. Priorities are strict (1
//! first), but with `aging_after` a waiting job counts one level higher per
//! that much waiting, so priority 5 is never starved forever; within a
//! priority, tenants share by weight (start-time fair queueing: each
//! tenant's clock advances by 1/weight per dispatch and the tenant furthest
//! behind goes next); within a tenant, oldest first.
//!
//! The clocks are part of the replicated state (`S`+queue, and in layout 4
//! the changes since, see `fair_clocks`): a pick must be the same on every node and after every
//! restart, so nothing here depends on the order things happened in
//! memory.
//!
//! A pick costs the logarithm of the tenants with ready jobs, not their
//! number: each level keeps its tenants in the order a pick ranks them
//! (see [`Level`]), so the pick is the first one not held. The plain scan
//! the rules were first written as, [`ReadySet::pick_scan`], stays: canary
//! eligibility still uses it, and the property test holds the indexed pick
//! to it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::job::JobId;

/// Ready jobs of a tenant a pick with an eligibility test looks at.
const ELIGIBLE_SCAN: usize = 64;

/// One dispatch of a weight-1 tenant on the clock; a tenant of weight w
/// advances SCALE / w.
const SCALE: u64 = 1_000_000;

/// A tenant's name, shared by the indexes that hold it.
type Tenant = Arc<str>;

/// Ready jobs of one queue, by priority and tenant, longest waiting first
/// (not by id alone: a requeued job waits from its requeue, behind younger
/// jobs that waited longer), with the tenants' fair-share clocks.
#[derive(Debug, Default)]
pub(super) struct ReadySet {
    levels: BTreeMap<u8, Level>,
    /// Ready jobs by tenant, every level.
    counts: BTreeMap<Tenant, u64>,
    clocks: Clocks,
}

/// One priority's ready jobs, and its tenants in the orders a pick needs.
/// A pick ranks a tenant by (its clock, its first job's id), and a tenant
/// at or behind the queue's `now` counts as at `now`: those all tie on the
/// clock, so the id alone orders them, and they all come before any tenant
/// ahead. `now` only grows, so a tenant moves from `ahead` to `behind` once
/// per dispatch of its own at most.
#[derive(Debug, Default)]
struct Level {
    /// Tenant -> its ready jobs: (ready since (ms), id), oldest first.
    tenants: BTreeMap<Tenant, BTreeSet<(u64, JobId)>>,
    /// Tenants at or behind `now`, by their first job's id (then its
    /// ready since, which the id already decides).
    behind: BTreeSet<(JobId, u64, Tenant)>,
    /// Tenants ahead of `now`, by (clock, first job's id, ready since).
    ahead: BTreeSet<(u64, JobId, u64, Tenant)>,
    /// Every tenant by its first job (ready since, id): the oldest, and
    /// the tenants aging lifts.
    by_since: BTreeSet<(u64, JobId, Tenant)>,
}

/// The fair-share clocks of one queue: the queue's own (`now`: where the
/// last dispatched tenant stood) and each tenant's that is ahead of it. A
/// tenant at or behind `now` counts as at `now`, so one that was idle
/// rejoins at the others' pace instead of taking a burst for the time it
/// had nothing to run; it needs no clock of its own.
#[derive(Debug, Default)]
pub(super) struct Clocks {
    now: u64,
    ahead: BTreeMap<Tenant, u64>,
    /// `ahead` by (clock, tenant): who falls behind as `now` moves.
    order: BTreeSet<(u64, Tenant)>,
    /// Tenants whose clock changed since [`ReadySet::take_changed`].
    changed: BTreeSet<Tenant>,
    /// Clocks at or behind `now` of tenants with ready jobs: they count
    /// for nothing, but layout 3's record kept them, and a node must write
    /// the bytes its peers write while the cluster is on that layout.
    stale: BTreeMap<Tenant, u64>,
}

/// The clocks as one record (`S`+queue), the same shape in both layouts:
/// all of them in layout 3, rewritten after every lease; in layout 4 as
/// they were at the last compaction, with the leases' changes since kept
/// apart (see `fair_clocks`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ClocksRecord {
    /// The queue's clock.
    pub(super) now: u64,
    /// Tenants' clocks (those at or behind `now` may be left out).
    pub(super) tenants: BTreeMap<String, u64>,
}

/// What one lease command changed of a queue's clocks (layout 4 keeps
/// these after its record, `s`+queue+`\0`+sequence).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ClocksDelta {
    /// The queue's clock after the command.
    pub(super) now: u64,
    /// Each tenant whose clock changed: its clock if ahead of `now`.
    pub(super) tenants: Vec<(String, Option<u64>)>,
}

/// What a pick chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pick {
    /// The job's own priority (where it is in the set).
    pub(super) priority: u8,
    /// Its priority after aging, which it was chosen by.
    pub(super) effective: u8,
    pub(super) tenant: String,
    pub(super) id: JobId,
    /// Ready since (ms).
    pub(super) since: u64,
}

/// `priority` after waiting since `since` until `now`: one level higher
/// per `aging_after_ms`, never above 1.
pub(super) fn aged(priority: u8, since: u64, now: u64, aging_after_ms: Option<u64>) -> u8 {
    match aging_after_ms {
        Some(step) if step > 0 => {
            let levels = now.saturating_sub(since) / step;
            let levels = u8::try_from(levels).unwrap_or(u8::MAX);
            priority.saturating_sub(levels).max(1)
        }
        _ => priority,
    }
}

/// A tenant's place in a level: its first job (ready since, id).
type First = (u64, JobId);

impl Level {
    fn index(&mut self, t: &Tenant, (since, id): First, clock: Option<u64>) {
        match clock {
            Some(c) => self.ahead.insert((c, id, since, t.clone())),
            None => self.behind.insert((id, since, t.clone())),
        };
        self.by_since.insert((since, id, t.clone()));
    }

    fn unindex(&mut self, t: &Tenant, (since, id): First, clock: Option<u64>) {
        match clock {
            Some(c) => self.ahead.remove(&(c, id, since, t.clone())),
            None => self.behind.remove(&(id, since, t.clone())),
        };
        self.by_since.remove(&(since, id, t.clone()));
    }

    /// Moves a tenant whose first job went from `before` to `after` (None:
    /// it had or has no jobs here).
    fn reindex(
        &mut self,
        t: &Tenant,
        before: Option<First>,
        after: Option<First>,
        clock: Option<u64>,
    ) {
        if before != after {
            if let Some(b) = before {
                self.unindex(t, b, clock);
            }
            if let Some(a) = after {
                self.index(t, a, clock);
            }
        }
    }

    /// The level's tenants best first, as a pick ranks them, each with its
    /// first job.
    fn ranked(&self) -> impl Iterator<Item = (&Tenant, First)> + '_ {
        let behind = self.behind.iter().map(|(id, s, t)| (t, (*s, *id)));
        let ahead = self.ahead.iter().map(|(_, id, s, t)| (t, (*s, *id)));
        behind.chain(ahead)
    }

    /// The best tenant not `held` whose first job aging lifts to `top`
    /// (`effective` of its ready since), where none not held is lifted
    /// higher: the first such in rank order. By first job they are a run
    /// (aging lifts the longest waiting most), after only held tenants, so
    /// a walk of that run, ranking as it goes, finds it too; both walks go
    /// side by side and the one that ends first answers, so the cost is
    /// the shorter of the two.
    fn best_lifted(
        &self,
        held: &impl Fn(&str) -> bool,
        effective: impl Fn(u64) -> u8,
        top: u8,
        at: impl Fn(&str) -> u64,
    ) -> Option<(&Tenant, First)> {
        let mut ranked = self.ranked();
        let mut oldest = self.by_since.iter();
        let mut best: Option<((u64, JobId), &Tenant, First)> = None;
        loop {
            match ranked.next() {
                Some((t, first)) if !held(t) && effective(first.0) == top => {
                    return Some((t, first))
                }
                Some(_) => {}
                None => return None,
            }
            match oldest.next() {
                Some((since, id, t)) if effective(*since) <= top => {
                    let rank = (at(t), *id);
                    if !held(t) && best.as_ref().is_none_or(|(r, _, _)| rank < *r) {
                        best = Some((rank, t, (*since, *id)));
                    }
                }
                _ => return best.map(|(_, t, first)| (t, first)),
            }
        }
    }
}

impl ReadySet {
    /// The set's own copy of a tenant's name (a new one if it has none).
    fn tenant(&self, name: &str) -> Tenant {
        self.counts
            .get_key_value(name)
            .map_or_else(|| Arc::from(name), |(t, _)| t.clone())
    }

    /// Adds a job; false if it was in the set already.
    pub(super) fn insert(&mut self, priority: u8, tenant: &str, id: JobId, since: u64) -> bool {
        let t = self.tenant(tenant);
        let clock = self.clocks.ahead.get(tenant).copied();
        let level = self.levels.entry(priority).or_default();
        let ids = level.tenants.entry(t.clone()).or_default();
        let before = ids.first().copied();
        if !ids.insert((since, id)) {
            return false;
        }
        let after = ids.first().copied();
        level.reindex(&t, before, after, clock);
        *self.counts.entry(t).or_default() += 1;
        true
    }

    /// Removes a job; false if it was not in the set.
    pub(super) fn remove(&mut self, priority: u8, tenant: &str, id: JobId, since: u64) -> bool {
        let Some(level) = self.levels.get_mut(&priority) else {
            return false;
        };
        let Some(t) = level.tenants.get_key_value(tenant).map(|(t, _)| t.clone()) else {
            return false;
        };
        let Some(ids) = level.tenants.get_mut(tenant) else {
            return false;
        };
        let before = ids.first().copied();
        if !ids.remove(&(since, id)) {
            return false;
        }
        let after = ids.first().copied();
        if ids.is_empty() {
            level.tenants.remove(tenant);
        }
        let clock = self.clocks.ahead.get(tenant).copied();
        level.reindex(&t, before, after, clock);
        if level.tenants.is_empty() {
            self.levels.remove(&priority);
        }
        match self.counts.get_mut(tenant) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.counts.remove(tenant);
            }
            None => {}
        }
        true
    }

    /// When the longest-waiting ready job became ready (ms).
    pub(super) fn oldest_since(&self) -> Option<u64> {
        self.levels
            .values()
            .filter_map(|l| l.by_since.first().map(|(s, _, _)| *s))
            .min()
    }

    /// Tenants with ready jobs, each with how many.
    pub(super) fn by_tenant(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.counts.iter().map(|(t, n)| (&**t, *n))
    }

    /// How many ready jobs `tenant` has, every level.
    pub(super) fn tenant_ready(&self, tenant: &str) -> u64 {
        self.counts.get(tenant).copied().unwrap_or(0)
    }

    /// How many tenants have ready jobs.
    pub(super) fn tenant_count(&self) -> usize {
        self.counts.len()
    }

    /// Every ready job: (priority, tenant, id, ready since), by priority
    /// and tenant, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u8, &str, JobId, u64)> + '_ {
        self.levels.iter().flat_map(|(p, level)| {
            level.tenants.iter().flat_map(move |(t, ids)| {
                ids.iter().map(move |(since, id)| (*p, &**t, *id, *since))
            })
        })
    }

    /// [`ReadySet::pick`], or with an eligibility test `eligible(id, ready
    /// since)` [`ReadySet::pick_scan`]: within a tenant, the oldest
    /// eligible of its first [`ELIGIBLE_SCAN`] (a canary rule makes most
    /// jobs eligible for most workers; the bound keeps a pick cheap when
    /// few are). Eligibility changes which job stands for a tenant, so the
    /// order the indexes keep does not hold for it.
    pub(super) fn pick_where(
        &self,
        held: impl Fn(&str) -> bool,
        eligible: Option<&dyn Fn(JobId, u64) -> bool>,
        aging_after_ms: Option<u64>,
        now: u64,
    ) -> Option<Pick> {
        match eligible {
            None => self.pick(held, aging_after_ms, now),
            Some(_) => self.pick_scan(held, eligible, aging_after_ms, now),
        }
    }

    /// The next job to lease: the best priority after aging (at `now`)
    /// that has a tenant not `held`; the tenant furthest behind its share
    /// there; its longest-waiting job, which also stands for the level's
    /// aging. The same choice as [`ReadySet::pick_scan`], found by walking
    /// the indexes in order: the cost is the held tenants passed on the
    /// way, not the number of tenants.
    pub(super) fn pick(
        &self,
        held: impl Fn(&str) -> bool,
        aging_after_ms: Option<u64>,
        now: u64,
    ) -> Option<Pick> {
        let chosen = |p: u8, effective: u8, (t, (since, id)): (&Tenant, First)| Pick {
            priority: p,
            effective,
            tenant: t.to_string(),
            id,
            since,
        };
        let Some(step) = aging_after_ms.filter(|s| *s > 0) else {
            // Strict priorities: the first level with a tenant not held.
            return self.levels.iter().find_map(|(&p, level)| {
                let found = level.ranked().find(|(t, _)| !held(t))?;
                Some(chosen(p, p, found))
            });
        };
        let aged = |p: u8, since: u64| aged(p, since, now, Some(step));
        // Each level's best effective priority is its longest-waiting
        // tenant's not held; the pick is among the levels that reach the
        // best of those.
        let reach: Vec<(u8, u8)> = self
            .levels
            .iter()
            .filter_map(|(&p, level)| {
                let (since, _, _) = level.by_since.iter().find(|(_, _, t)| !held(t))?;
                Some((p, aged(p, *since)))
            })
            .collect();
        let top = reach.iter().map(|(_, e)| *e).min()?;
        let at = |t: &str| self.clocks.at(t);
        reach
            .iter()
            .filter(|(_, e)| *e == top)
            .filter_map(|(p, _)| {
                let level = self.levels.get(p)?;
                // A level of the top's own number has no tenant lifted
                // above it: all of it is at the top.
                let found = if *p == top {
                    level.ranked().find(|(t, _)| !held(t))
                } else {
                    level.best_lifted(&held, |since| aged(*p, since), top, at)
                }?;
                let rank = (at(found.0), found.1 .1);
                Some((rank, chosen(*p, top, found)))
            })
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, pick)| pick)
    }

    /// The pick as the rules say it, looking at every tenant: for each
    /// tenant not held, its first job (the first `eligible` one of its
    /// first [`ELIGIBLE_SCAN`] with a test), ranked by (priority after
    /// aging, the tenant's clock, the job's id); the smallest wins.
    pub(super) fn pick_scan(
        &self,
        held: impl Fn(&str) -> bool,
        eligible: Option<&dyn Fn(JobId, u64) -> bool>,
        aging_after_ms: Option<u64>,
        now: u64,
    ) -> Option<Pick> {
        let mut best: Option<((u8, u64, JobId), Pick)> = None;
        for (&priority, level) in &self.levels {
            // Without aging a better level always wins: stop at the first.
            if aging_after_ms.is_none() && best.is_some() {
                break;
            }
            for (tenant, ids) in &level.tenants {
                if held(tenant) {
                    continue;
                }
                let first = match eligible {
                    None => ids.first(),
                    Some(f) => ids
                        .iter()
                        .take(ELIGIBLE_SCAN)
                        .find(|(since, id)| f(*id, *since)),
                };
                let Some(&(since, id)) = first else {
                    continue;
                };
                let effective = aged(priority, since, now, aging_after_ms);
                let rank = (effective, self.clocks.at(tenant), id);
                if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                    let pick = Pick {
                        priority,
                        effective,
                        tenant: tenant.to_string(),
                        id,
                        since,
                    };
                    best = Some((rank, pick));
                }
            }
        }
        best.map(|(_, p)| p)
    }

    /// Advances `tenant`'s clock by one dispatch (1/weight of a step) from
    /// where it stands, and the queue's `now` to there.
    pub(super) fn dispatched(&mut self, tenant: &str, weight: u32) {
        let start = self.clocks.at(tenant);
        self.advance_to(start);
        let step = SCALE / u64::from(weight.max(1));
        let clock = start.saturating_add(step);
        let t = self.tenant(tenant);
        self.reclock(&t, (clock > start).then_some(clock));
        // The clock the first layout keeps even when not ahead.
        self.clocks.stale.remove(tenant);
        if clock <= start {
            self.clocks.stale.insert(t, clock);
        }
    }

    /// Moves the queue's `now` up to `to` (never back): the tenants it
    /// catches up with count as at `now` from there.
    fn advance_to(&mut self, to: u64) {
        if to <= self.clocks.now {
            return;
        }
        self.clocks.now = to;
        while let Some((c, t)) = self.clocks.order.first().cloned() {
            if c > to {
                break;
            }
            self.reclock(&t, None);
        }
    }

    /// Sets a tenant's clock: `Some` ahead of `now`, None at or behind it.
    fn reclock(&mut self, t: &Tenant, clock: Option<u64>) {
        let old = self.clocks.ahead.get(t).copied();
        if old == clock {
            return;
        }
        for level in self.levels.values_mut() {
            if let Some(first) = level.tenants.get(t).and_then(|ids| ids.first().copied()) {
                level.unindex(t, first, old);
                level.index(t, first, clock);
            }
        }
        if let Some(c) = old {
            self.clocks.order.remove(&(c, t.clone()));
            self.clocks.ahead.remove(t);
            self.clocks.stale.insert(t.clone(), c);
        }
        if let Some(c) = clock {
            self.clocks.order.insert((c, t.clone()));
            self.clocks.ahead.insert(t.clone(), c);
            self.clocks.stale.remove(t);
        }
        self.clocks.changed.insert(t.clone());
    }

    /// The clocks as one record. Layout 3 (`keep_stale`) keeps, as it
    /// always did, the clocks of tenants with ready jobs that are no longer
    /// ahead, and forgets those of tenants with none; layout 4 keeps only
    /// the tenants ahead.
    pub(super) fn clocks_record(&mut self, keep_stale: bool) -> ClocksRecord {
        if keep_stale {
            let counts = &self.counts;
            self.clocks.stale.retain(|t, _| counts.contains_key(t));
        } else {
            self.clocks.stale.clear();
        }
        ClocksRecord {
            now: self.clocks.now,
            tenants: self
                .clocks
                .ahead
                .iter()
                .chain(self.clocks.stale.iter())
                .map(|(t, c)| (t.to_string(), *c))
                .collect(),
        }
    }

    /// What changed of the clocks since the last call: `now`, and each
    /// tenant whose clock changed with its clock if it is ahead.
    pub(super) fn take_changed(&mut self) -> ClocksDelta {
        let changed = std::mem::take(&mut self.clocks.changed);
        let tenants = changed
            .into_iter()
            .map(|t| {
                let c = self.clocks.ahead.get(&t).copied();
                (t.to_string(), c)
            })
            .collect();
        ClocksDelta {
            now: self.clocks.now,
            tenants,
        }
    }

    /// How many tenants are ahead of `now`.
    pub(super) fn ahead_count(&self) -> usize {
        self.clocks.ahead.len()
    }

    /// Takes the clocks a record kept (on open).
    pub(super) fn restore_clocks(&mut self, record: ClocksRecord) {
        self.advance_to(record.now);
        for (t, c) in record.tenants {
            let t = self.tenant(&t);
            if c > self.clocks.now {
                self.reclock(&t, Some(c));
            } else {
                self.clocks.stale.insert(t, c);
            }
        }
        self.clocks.changed.clear();
    }

    /// Takes what a lease changed, as [`ReadySet::take_changed`] gave it
    /// (on open, after the record it followed).
    pub(super) fn restore_delta(&mut self, delta: ClocksDelta) {
        self.advance_to(delta.now);
        for (t, c) in delta.tenants {
            let t = self.tenant(&t);
            self.reclock(&t, c.filter(|c| *c > self.clocks.now));
        }
        self.clocks.changed.clear();
    }

    /// Forgets a tenant's clock (an erased tenant, with no ready jobs
    /// left); answers whether it had one.
    pub(super) fn forget_tenant(&mut self, tenant: &str) -> bool {
        let ahead = self.clocks.ahead.contains_key(tenant);
        if ahead {
            let t = self.tenant(tenant);
            self.reclock(&t, None);
        }
        let stale = self.clocks.stale.remove(tenant).is_some();
        ahead || stale
    }

    /// Drops what only layout 3 keeps (the clocks of tenants not ahead).
    pub(super) fn forget_stale(&mut self) {
        self.clocks.stale.clear();
    }
}

impl Clocks {
    /// Where a tenant stands: its own clock if ahead, else `now`.
    fn at(&self, tenant: &str) -> u64 {
        self.ahead.get(tenant).copied().unwrap_or(self.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(set: &mut ReadySet, weights: &[(&str, u32)], n: usize) -> Vec<String> {
        let weight = |t: &str| weights.iter().find(|(w, _)| *w == t).map_or(1, |(_, w)| *w);
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(p) = set.pick(|_| false, None, 0) else {
                break;
            };
            set.dispatched(&p.tenant, weight(&p.tenant));
            set.remove(p.priority, &p.tenant, p.id, p.since);
            out.push(p.tenant);
        }
        out
    }

    #[test]
    fn a_flood_does_not_starve_another_tenant() {
        let mut set = ReadySet::default();
        let mut id = 0;
        for _ in 0..10_000 {
            id += 1;
            set.insert(3, "a", id, 0);
        }
        for _ in 0..100 {
            id += 1;
            set.insert(3, "b", id, 0);
        }
        let order = run(&mut set, &[], 200);
        assert_eq!(order.iter().filter(|t| *t == "b").count(), 100);
    }

    #[test]
    fn weights_set_the_shares_and_priority_stays_strict() {
        let mut set = ReadySet::default();
        for id in 1..=300 {
            set.insert(3, ["a", "b", "c"][id as usize % 3], id, 0);
        }
        set.insert(1, "c", 1000, 0);
        let order = run(&mut set, &[("a", 1), ("b", 2), ("c", 4)], 71);
        assert_eq!(order[0], "c", "priority 1 first");
        let count = |t: &str| order[1..].iter().filter(|x| *x == t).count() as i64;
        for (t, want) in [("a", 10), ("b", 20), ("c", 40)] {
            assert!(
                (count(t) - want).abs() <= 1,
                "{t}: {} of 70, want {want}",
                count(t)
            );
        }
    }

    #[test]
    fn an_idle_tenant_gets_its_share_not_a_burst() {
        let mut set = ReadySet::default();
        for id in 1..=100 {
            set.insert(3, "a", id, 0);
        }
        run(&mut set, &[], 50);
        for id in 101..=110 {
            set.insert(3, "b", id, 0);
        }
        let order = run(&mut set, &[], 10);
        let b = order.iter().filter(|t| *t == "b").count();
        assert!((4..=6).contains(&b), "{order:?}");
    }

    #[test]
    fn held_tenants_are_skipped() {
        let mut set = ReadySet::default();
        set.insert(1, "a", 1, 0);
        set.insert(2, "b", 2, 0);
        let p = set.pick(|t| t == "a", None, 0).unwrap();
        assert_eq!((p.priority, p.id), (2, 2));
    }

    #[test]
    fn a_waiting_job_ages_one_level_per_step_and_is_not_starved() {
        assert_eq!(aged(5, 0, 9_999, Some(10_000)), 5);
        assert_eq!(aged(5, 0, 10_000, Some(10_000)), 4);
        assert_eq!(aged(5, 0, 1_000_000, Some(10_000)), 1);
        assert_eq!(aged(5, 0, 1_000_000, None), 5);
        let mut set = ReadySet::default();
        set.insert(5, "a", 1, 0);
        set.insert(2, "a", 2, 35_000);
        // At 40 s the priority-5 job has aged 4 levels (to 1): it goes first.
        let p = set.pick(|_| false, Some(10_000), 40_000).unwrap();
        assert_eq!((p.id, p.priority, p.effective), (1, 5, 1));
        // Without aging, strict priority.
        let p = set.pick(|_| false, None, 40_000).unwrap();
        assert_eq!(p.id, 2);
    }

    /// The clocks as the first layout kept them, from before the indexes:
    /// one map of every tenant dispatched, trimmed after each lease.
    #[derive(Default)]
    struct FirstClocks {
        now: u64,
        tenants: BTreeMap<String, u64>,
    }

    impl FirstClocks {
        fn dispatched(&mut self, tenant: &str, weight: u32) {
            let start = self.tenants.get(tenant).copied().unwrap_or(0).max(self.now);
            self.now = start;
            let step = SCALE / u64::from(weight.max(1));
            self.tenants
                .insert(tenant.to_string(), start.saturating_add(step));
        }

        fn trim(&mut self, active: &BTreeSet<String>) {
            let now = self.now;
            self.tenants.retain(|t, at| active.contains(t) || *at > now);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            priority: u8,
            tenant: u8,
            since: u64,
        },
        Remove(usize),
        Pause(u8),
        Lease(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u8..5, 0u8..12, 0u64..80)
                .prop_map(|(priority, tenant, since)| Op::Insert { priority, tenant, since }),
            1 => any::<usize>().prop_map(Op::Remove),
            1 => (0u8..12).prop_map(Op::Pause),
            2 => (1u8..6).prop_map(Op::Lease),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// The indexed pick chooses what the plain scan of the rules
        /// chooses, at every step of random work (tenants, weights,
        /// priorities, pauses, aging), and the clocks write the record the
        /// first layout wrote.
        #[test]
        fn the_indexed_pick_is_the_scan(
            ops in proptest::collection::vec(op(), 1..250),
            aging in prop_oneof![Just(None), Just(Some(0)), (1u64..40).prop_map(Some)],
            weights in proptest::collection::vec(prop_oneof![1u32..5, Just(3_000_000)], 12),
        ) {
            let mut set = ReadySet::default();
            let mut first = FirstClocks::default();
            let mut jobs: Vec<(u8, String, JobId, u64)> = Vec::new();
            let mut paused: BTreeSet<String> = BTreeSet::new();
            let (mut next, mut now) = (1, 0);
            for op in ops {
                now += 3;
                match op {
                    Op::Insert { priority, tenant, since } => {
                        let tenant = format!("t{tenant}");
                        // Ids are not in ready-since order (requeues and delays).
                        set.insert(priority, &tenant, next, since);
                        jobs.push((priority, tenant, next, since));
                        next += 1;
                    }
                    Op::Remove(i) if !jobs.is_empty() => {
                        let (p, t, id, since) = jobs.swap_remove(i % jobs.len());
                        set.remove(p, &t, id, since);
                    }
                    Op::Remove(_) => {}
                    Op::Pause(t) => {
                        let t = format!("t{t}");
                        if !paused.remove(&t) {
                            paused.insert(t);
                        }
                    }
                    Op::Lease(n) => {
                        for _ in 0..n {
                            let held = |t: &str| paused.contains(t);
                            let fast = set.pick(held, aging, now);
                            let scan = set.pick_scan(held, None, aging, now);
                            prop_assert_eq!(&fast, &scan);
                            let Some(p) = fast else { break };
                            let i: usize = p.tenant[1..].parse().unwrap();
                            set.dispatched(&p.tenant, weights[i]);
                            first.dispatched(&p.tenant, weights[i]);
                            set.remove(p.priority, &p.tenant, p.id, p.since);
                            jobs.retain(|j| j.2 != p.id);
                        }
                        let active = jobs.iter().map(|j| j.1.clone()).collect();
                        first.trim(&active);
                        let want = ClocksRecord { now: first.now, tenants: first.tenants.clone() };
                        prop_assert_eq!(set.clocks_record(true), want);
                    }
                }
            }
        }
    }
}
