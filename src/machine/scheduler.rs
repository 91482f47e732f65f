//! The pick: which ready job a lease takes. Priorities are strict (1
//! first), but with `aging_after` a waiting job counts one level higher per
//! that much waiting, so priority 5 is never starved forever; within a
//! priority, tenants share by weight (start-time fair queueing: each
//! tenant's clock advances by 1/weight per dispatch and the tenant furthest
//! behind goes next); within a tenant, oldest first.
//!
//! The clocks are part of the replicated state (`S`+queue): a pick must be
//! the same on every node and after every restart, so nothing here depends
//! on the order things happened in memory.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::job::JobId;

/// Ready jobs of a tenant a pick with an eligibility test looks at.
const ELIGIBLE_SCAN: usize = 64;

/// One dispatch of a weight-1 tenant on the clock; a tenant of weight w
/// advances SCALE / w.
const SCALE: u64 = 1_000_000;

/// Ready jobs of one queue: priority -> tenant -> (ready since (ms), id),
/// longest waiting first. Not by id alone: a requeued job waits from its
/// requeue, behind younger jobs that waited longer.
#[derive(Debug, Default)]
pub(super) struct ReadySet {
    levels: BTreeMap<u8, BTreeMap<String, BTreeSet<(u64, JobId)>>>,
}

/// The fair-share clocks of one queue: each tenant's, and the queue's own
/// (`now`: where the last dispatched tenant stood). A tenant behind `now`
/// counts as at `now`, so one that was idle rejoins at the others' pace
/// instead of taking a burst for the time it had nothing to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Clocks {
    now: u64,
    tenants: BTreeMap<String, u64>,
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

impl ReadySet {
    pub(super) fn insert(&mut self, priority: u8, tenant: &str, id: JobId, since: u64) {
        self.levels
            .entry(priority)
            .or_default()
            .entry(tenant.to_string())
            .or_default()
            .insert((since, id));
    }

    pub(super) fn remove(&mut self, priority: u8, tenant: &str, id: JobId, since: u64) {
        let Some(level) = self.levels.get_mut(&priority) else {
            return;
        };
        if let Some(ids) = level.get_mut(tenant) {
            ids.remove(&(since, id));
            if ids.is_empty() {
                level.remove(tenant);
            }
        }
        if level.is_empty() {
            self.levels.remove(&priority);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// When the longest-waiting ready job became ready (ms).
    pub(super) fn oldest_since(&self) -> Option<u64> {
        self.levels
            .values()
            .flat_map(|l| l.values().filter_map(|ids| ids.first().map(|(s, _)| *s)))
            .min()
    }

    /// Tenants with ready jobs.
    pub(super) fn tenants(&self) -> BTreeSet<&str> {
        self.levels
            .values()
            .flat_map(|l| l.keys().map(String::as_str))
            .collect()
    }

    /// Every ready job: (priority, tenant, id, ready since), by priority
    /// and tenant, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u8, &str, JobId, u64)> + '_ {
        self.levels.iter().flat_map(|(p, level)| {
            level.iter().flat_map(move |(t, ids)| {
                ids.iter()
                    .map(move |(since, id)| (*p, t.as_str(), *id, *since))
            })
        })
    }

    /// Ready jobs by tenant.
    pub(super) fn by_tenant(&self) -> BTreeMap<&str, u64> {
        let mut out = BTreeMap::new();
        for level in self.levels.values() {
            for (t, ids) in level {
                *out.entry(t.as_str()).or_default() += ids.len() as u64;
            }
        }
        out
    }

    /// The next job to lease: the best priority after aging (at `now`)
    /// that has a tenant not `held`; the tenant furthest behind its share
    /// there; its longest-waiting job, which also stands for the level's
    /// aging.
    #[cfg(test)]
    pub(super) fn pick(
        &self,
        clocks: &Clocks,
        held: impl Fn(&str) -> bool,
        aging_after_ms: Option<u64>,
        now: u64,
    ) -> Option<Pick> {
        self.pick_where(clocks, held, None, aging_after_ms, now)
    }

    /// [`ReadySet::pick`] among the jobs `eligible(id, ready since)` takes:
    /// within a tenant, the oldest eligible of its first [`ELIGIBLE_SCAN`]
    /// (a canary rule makes most jobs eligible for most workers; the bound
    /// keeps a pick cheap when few are).
    pub(super) fn pick_where(
        &self,
        clocks: &Clocks,
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
            for (tenant, ids) in level {
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
                let rank = (effective, clocks.at(tenant), id);
                if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                    let pick = Pick {
                        priority,
                        effective,
                        tenant: tenant.clone(),
                        id,
                        since,
                    };
                    best = Some((rank, pick));
                }
            }
        }
        best.map(|(_, p)| p)
    }
}

impl Clocks {
    fn at(&self, tenant: &str) -> u64 {
        self.tenants.get(tenant).copied().unwrap_or(0).max(self.now)
    }

    /// Advances `tenant`'s clock by one dispatch: 1/weight of a step.
    pub(super) fn dispatched(&mut self, tenant: &str, weight: u32) {
        let start = self.at(tenant);
        self.now = start;
        let step = SCALE / u64::from(weight.max(1));
        self.tenants
            .insert(tenant.to_string(), start.saturating_add(step));
    }

    /// Forgets tenants with no ready jobs that are not ahead of `now`:
    /// they would rejoin at `now` anyway.
    pub(super) fn trim(&mut self, active: &BTreeSet<&str>) {
        let now = self.now;
        self.tenants
            .retain(|t, at| active.contains(t.as_str()) || *at > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        set: &mut ReadySet,
        clocks: &mut Clocks,
        weights: &[(&str, u32)],
        n: usize,
    ) -> Vec<String> {
        let weight = |t: &str| weights.iter().find(|(w, _)| *w == t).map_or(1, |(_, w)| *w);
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(p) = set.pick(clocks, |_| false, None, 0) else {
                break;
            };
            clocks.dispatched(&p.tenant, weight(&p.tenant));
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
        let order = run(&mut set, &mut Clocks::default(), &[], 200);
        assert_eq!(order.iter().filter(|t| *t == "b").count(), 100);
    }

    #[test]
    fn weights_set_the_shares_and_priority_stays_strict() {
        let mut set = ReadySet::default();
        for id in 1..=300 {
            set.insert(3, ["a", "b", "c"][id as usize % 3], id, 0);
        }
        set.insert(1, "c", 1000, 0);
        let order = run(
            &mut set,
            &mut Clocks::default(),
            &[("a", 1), ("b", 2), ("c", 4)],
            71,
        );
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
        let mut clocks = Clocks::default();
        for id in 1..=100 {
            set.insert(3, "a", id, 0);
        }
        run(&mut set, &mut clocks, &[], 50);
        for id in 101..=110 {
            set.insert(3, "b", id, 0);
        }
        let order = run(&mut set, &mut clocks, &[], 10);
        let b = order.iter().filter(|t| *t == "b").count();
        assert!((4..=6).contains(&b), "{order:?}");
    }

    #[test]
    fn held_tenants_are_skipped() {
        let mut set = ReadySet::default();
        set.insert(1, "a", 1, 0);
        set.insert(2, "b", 2, 0);
        let p = set.pick(&Clocks::default(), |t| t == "a", None, 0).unwrap();
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
        let p = set
            .pick(&Clocks::default(), |_| false, Some(10_000), 40_000)
            .unwrap();
        assert_eq!((p.id, p.priority, p.effective), (1, 5, 1));
        // Without aging, strict priority.
        let p = set
            .pick(&Clocks::default(), |_| false, None, 40_000)
            .unwrap();
        assert_eq!(p.id, 2);
    }
}
