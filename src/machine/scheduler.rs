//! The pick: which ready job a lease takes. Priorities are strict (1
//! first); within a priority, tenants share by weight (start-time fair
//! queueing: each tenant's clock advances by 1/weight per dispatch and the
//! tenant furthest behind goes next); within a tenant, oldest first.
//!
//! The clocks are part of the replicated state (`S`+queue): a pick must be
//! the same on every node and after every restart, so nothing here depends
//! on the order things happened in memory.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::job::JobId;

/// One dispatch of a weight-1 tenant on the clock; a tenant of weight w
/// advances SCALE / w.
const SCALE: u64 = 1_000_000;

/// Ready jobs of one queue: priority -> tenant -> ids, oldest first.
#[derive(Debug, Default)]
pub(super) struct ReadySet {
    levels: BTreeMap<u8, BTreeMap<String, BTreeSet<JobId>>>,
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
    pub(super) priority: u8,
    pub(super) tenant: String,
    pub(super) id: JobId,
}

impl ReadySet {
    pub(super) fn insert(&mut self, priority: u8, tenant: &str, id: JobId) {
        self.levels
            .entry(priority)
            .or_default()
            .entry(tenant.to_string())
            .or_default()
            .insert(id);
    }

    pub(super) fn remove(&mut self, priority: u8, tenant: &str, id: JobId) {
        let Some(level) = self.levels.get_mut(&priority) else {
            return;
        };
        if let Some(ids) = level.get_mut(tenant) {
            ids.remove(&id);
            if ids.is_empty() {
                level.remove(tenant);
            }
        }
        if level.is_empty() {
            self.levels.remove(&priority);
        }
    }

    /// Tenants with ready jobs.
    pub(super) fn tenants(&self) -> BTreeSet<&str> {
        self.levels
            .values()
            .flat_map(|l| l.keys().map(String::as_str))
            .collect()
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

    /// The next job to lease: the highest priority that has a tenant not
    /// `held`, the tenant furthest behind its share there, its oldest job.
    pub(super) fn pick(&self, clocks: &Clocks, held: impl Fn(&str) -> bool) -> Option<Pick> {
        for (&priority, level) in &self.levels {
            let best = level
                .iter()
                .filter(|(t, ids)| !held(t) && !ids.is_empty())
                .min_by_key(|(t, ids)| (clocks.at(t), ids.first().copied()));
            if let Some((tenant, ids)) = best {
                let id = *ids.first()?;
                return Some(Pick {
                    priority,
                    tenant: tenant.clone(),
                    id,
                });
            }
        }
        None
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
            let Some(p) = set.pick(clocks, |_| false) else {
                break;
            };
            clocks.dispatched(&p.tenant, weight(&p.tenant));
            set.remove(p.priority, &p.tenant, p.id);
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
            set.insert(3, "a", id);
        }
        for _ in 0..100 {
            id += 1;
            set.insert(3, "b", id);
        }
        let order = run(&mut set, &mut Clocks::default(), &[], 200);
        assert_eq!(order.iter().filter(|t| *t == "b").count(), 100);
    }

    #[test]
    fn weights_set_the_shares_and_priority_stays_strict() {
        let mut set = ReadySet::default();
        for id in 1..=300 {
            set.insert(3, ["a", "b", "c"][id as usize % 3], id);
        }
        set.insert(1, "c", 1000);
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
            set.insert(3, "a", id);
        }
        run(&mut set, &mut clocks, &[], 50);
        for id in 101..=110 {
            set.insert(3, "b", id);
        }
        let order = run(&mut set, &mut clocks, &[], 10);
        let b = order.iter().filter(|t| *t == "b").count();
        assert!((4..=6).contains(&b), "{order:?}");
    }

    #[test]
    fn held_tenants_are_skipped() {
        let mut set = ReadySet::default();
        set.insert(1, "a", 1);
        set.insert(2, "b", 2);
        let p = set.pick(&Clocks::default(), |t| t == "a").unwrap();
        assert_eq!((p.priority, p.id), (2, 2));
    }
}
