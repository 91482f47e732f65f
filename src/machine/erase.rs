//! Erasing a tenant: its jobs first (unfinished ones cancelled, so their
//! leases end and their waiters follow as for any cancel), each with its
//! payload, result, idempotency record and run index; then the rest of
//! what names it: runs, held runs, daily cost, budgets set at run time,
//! breakers, fair-share clocks, pause and drain, version switches. Both in
//! slices, one log entry each, so no entry or batch grows with the tenant.
//!
//! Job records are not indexed by tenant, so the job slices walk every job
//! record once, in id order: an erasure reads the whole store, a slice at a
//! time, and is meant to be rare. What stays: audit records (the erasure's
//! own names the tenant, and earlier ones that did keep doing so until
//! `jobs.audit_retention` purges them), ids in other jobs' dependency
//! lists, and the finished-jobs time index (ids and sizes only, dropped by
//! retention as for any purged job).

use super::*;
use crate::command::ErasedRecords;

impl Machine {
    /// Applies a [`Command::EraseTenantJobs`]: erases `tenant`'s jobs among
    /// the `limit` job records after job `after`.
    pub(super) fn erase_tenant_jobs(
        &mut self,
        now: u64,
        tenant: &str,
        after: JobId,
        limit: u32,
    ) -> Result<Outcome, MachineError> {
        let start = key(JOB, after.saturating_add(1));
        let records = self.scan_merged_from(&[JOB], &start, limit as usize)?;
        let ids = records
            .iter()
            .map(|(k, _)| job_key_id(k))
            .collect::<Result<Vec<JobId>, _>>()?;
        let mut erased = 0;
        for &id in &ids {
            let Some((job, _)) = self.load(id)? else {
                continue;
            };
            if job.tenant != tenant {
                continue;
            }
            if !job.state.is_finished() {
                self.cancel(now, id)?.ok();
                // Waiters of what was cancelled follow now, as for a run's
                // cancel.
                self.release_dependents(now)?;
            }
            if let Some((job, payload)) = self.load(id)? {
                self.remove_job(&job, &payload)?;
                erased += 1;
            }
        }
        let next = (ids.len() == limit as usize)
            .then(|| ids.last().copied())
            .flatten();
        Ok(Outcome::TenantJobsErased { jobs: erased, next })
    }

    /// Applies a [`Command::EraseTenant`]: up to `limit` of `tenant`'s runs
    /// and, once none is left, everything else that names it.
    pub(super) fn erase_tenant(
        &mut self,
        tenant: &str,
        limit: u32,
    ) -> Result<Outcome, MachineError> {
        let mut out = ErasedRecords::default();
        let runs = tenant_prefix(RUN, tenant);
        let found = self.scan_merged(&runs, limit as usize + 1)?;
        out.more = found.len() > limit as usize;
        for (k, _) in found.into_iter().take(limit as usize) {
            let held = [&[HELD_RUN][..], &k[1..]].concat();
            self.runs
                .held
                .remove(String::from_utf8_lossy(&held[1..]).as_ref());
            self.delete(held);
            // Jobs are gone, and their run index with them; a run's index
            // of jobs that were never there is not possible, but costs
            // nothing to look for.
            let mut index = [&[RUN_JOB][..], &k[1..]].concat();
            index.push(0);
            for (j, _) in self.scan_merged(&index, usize::MAX)? {
                self.delete(j);
            }
            self.delete(k);
            out.runs += 1;
        }
        if out.more {
            return Ok(Outcome::TenantErased(out));
        }
        // Held runs without a run record: none should be, none may stay.
        for (k, _) in self.scan_merged(&tenant_prefix(HELD_RUN, tenant), usize::MAX)? {
            self.runs
                .held
                .remove(String::from_utf8_lossy(&k[1..]).as_ref());
            self.delete(k);
        }
        for k in [
            [&[TENANT_DAY][..], tenant.as_bytes()].concat(),
            [&[TENANT_BUDGETS][..], tenant.as_bytes()].concat(),
        ] {
            if self.get(&k)?.is_some() {
                self.delete(k);
                out.other += 1;
            }
        }
        self.runs.capped.remove(tenant);
        self.runs.tenant_budgets.remove(tenant);
        let totals = &mut self.runs.totals;
        totals.cost_micros.remove(tenant);
        totals.lease_ms.remove(tenant);
        for by_tenant in totals.exceeded.values_mut() {
            by_tenant.remove(tenant);
        }
        out.breakers = self.erase_tenant_breakers(tenant);
        let queues: Vec<String> = self
            .queues
            .iter_mut()
            .filter_map(|(q, qi)| qi.ready.forget_tenant(tenant).then(|| q.clone()))
            .collect();
        for q in &queues {
            self.rewrite_clocks(q);
        }
        out.clocks = queues.len() as u32;
        let c = &mut self.controls;
        if c.paused_tenants.remove(tenant) | c.draining_tenants.remove(tenant) {
            self.put(CONTROLS_KEY.to_vec(), encode(&self.controls));
            out.other += 1;
        }
        let before = self.switches.len();
        self.switches
            .retain(|s| s.tenant.as_deref() != Some(tenant));
        if self.switches.len() != before {
            out.other += (before - self.switches.len()) as u32;
            self.put(VERSIONS_KEY.to_vec(), encode(&self.switches));
        }
        Ok(Outcome::TenantErased(out))
    }
}

/// `prefix`+tenant+NUL: the keys of a tenant's runs and held runs.
fn tenant_prefix(prefix: u8, tenant: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + tenant.len());
    k.push(prefix);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k
}
