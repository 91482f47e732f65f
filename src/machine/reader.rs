//! Reads of the committed tree for the APIs, beside apply.

use super::*;

/// Reads committed job records straight from sled, with no lock shared with
/// apply, so reads never wait behind writes.
#[derive(Clone)]
pub struct JobReader {
    pub(super) committed: Arc<RwLock<Committed>>,
}

/// The committed tree and where its large payloads are; replaced together
/// when a snapshot is installed.
pub(super) struct Committed {
    pub(super) tree: sled::Tree,
    pub(super) files: Option<SpillDir>,
}

/// One thing that holds a ready job back (see [`JobReader::holds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobHold {
    /// Why it waits.
    pub reason: blocked::BlockReason,
    /// What holds it, as [`blocked::Blocked::scope`] names it.
    pub scope: String,
    /// The job's view's words for it.
    pub detail: String,
}

impl JobReader {
    pub(super) fn tree(&self) -> sled::Tree {
        self.committed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .tree
            .clone()
    }

    /// A page of the audit log, newest first (see [`audit::page`]).
    pub fn audit(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<audit::AuditPage, MachineError> {
        audit::page(&self.tree(), before, limit)
    }

    /// The schedules' states (last slot, paused, jobs fired).
    pub fn schedules(&self) -> Result<BTreeMap<String, schedules::ScheduleState>, MachineError> {
        match self.tree().get(SCHEDULES_KEY)? {
            Some(v) => decode(SCHEDULES_KEY, &v),
            None => Ok(BTreeMap::new()),
        }
    }

    /// The policies the log last set (defaults before any).
    pub fn policies(&self) -> Result<Policies, MachineError> {
        Ok(match self.tree().get(POLICIES_KEY)? {
            Some(v) => read_policies(&v).unwrap_or_default(),
            None => Policies::default(),
        })
    }

    /// What holds a ready job back from a lease, of what the log decides,
    /// in the order [`blocked`] counts them (the first is the one its
    /// queue's counts show); `queue_leased` is how many of its queue's
    /// jobs are leased. Empty when nothing does (or it is not ready).
    /// What the workers connected add is the APIs' to say.
    pub fn holds(&self, job: &Job, queue_leased: u64) -> Result<Vec<JobHold>, MachineError> {
        use blocked::BlockReason as R;
        let mut out = Vec::new();
        if job.state != JobState::Ready {
            return Ok(out);
        }
        let mut hold = |reason, scope: &str, detail: String| {
            out.push(JobHold {
                reason,
                scope: scope.to_string(),
                detail,
            })
        };
        let tree = self.tree();
        let controls: controls::Controls = match tree.get(CONTROLS_KEY)? {
            Some(v) => decode(CONTROLS_KEY, &v)?,
            None => controls::Controls::default(),
        };
        if controls.paused.contains(&job.queue) {
            hold(R::Paused, "", "queue paused".into());
        }
        if controls.paused_tenants.contains(&job.tenant) {
            hold(R::TenantPaused, &job.tenant, "tenant paused".into());
        }
        if let Some((q, t, class)) = self.breaker_holding(&job.queue, &job.tenant)? {
            hold(
                R::Breaker,
                &format!("{q}/{t}/{class}"),
                "held: breaker".into(),
            );
        }
        if self.tenant_day(&job.tenant)?.capped {
            hold(
                R::DailyCap,
                &job.tenant,
                "held: budget daily_cost_cap_usd".into(),
            );
        }
        if let Some(budget) = self.run_held(job)? {
            hold(
                R::Budget,
                &format!("{}/{}", job.tenant, job.run_id),
                format!("held: budget {budget}"),
            );
        }
        let k = key(PARKED, job.id);
        if let Some(v) = tree.get(k)? {
            // A budget's hold is its run's record's to say (above).
            let h = decode::<limits::Hold>(&k, &v)?;
            if let limits::Hold::Concurrency(key) | limits::Hold::Rate(key) = &h {
                hold(R::KeyLimit, key, h.describe());
            }
        }
        if let Some(limit) = self.policies()?.queue(&job.queue).concurrency_limit {
            if queue_leased >= limit {
                hold(
                    R::ConcurrencyLimit,
                    &format!("{queue_leased} leased of {limit}"),
                    format!("queue at its concurrency limit ({queue_leased} leased of {limit})"),
                );
            }
        }
        Ok(out)
    }

    /// Why a ready job is not leased yet: the first of its [`holds`]
    /// (queue limits aside), as text. None when nothing holds it.
    ///
    /// [`holds`]: JobReader::holds
    pub fn waiting(&self, job: &Job) -> Result<Option<String>, MachineError> {
        Ok(self.holds(job, 0)?.into_iter().next().map(|h| h.detail))
    }

    /// The job an idempotency key names in (tenant, queue), while the key
    /// has not expired.
    pub fn job_by_key(
        &self,
        tenant: &str,
        queue: &str,
        key: &str,
    ) -> Result<Option<JobId>, MachineError> {
        let k = idempotency_key(tenant, queue, key);
        match self.tree().get(&k)? {
            Some(v) => Ok(Some(u64::from_be_bytes(v.as_ref().try_into().map_err(
                |_| MachineError::Corrupt {
                    key: describe_key(&k),
                    reason: "an idempotency record is not a job id".into(),
                },
            )?))),
            None => Ok(None),
        }
    }

    /// Job `id`'s committed record, without its payload; None if there is no
    /// such job (never enqueued, or removed by retention).
    pub fn job(&self, id: JobId) -> Result<Option<Job>, MachineError> {
        let k = key(JOB, id);
        match self.tree().get(k)? {
            Some(v) => decode_job(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Job `id`'s committed record and its payload, read from its own record
    /// when it is not kept inline.
    pub fn job_and_payload(&self, id: JobId) -> Result<Option<(Job, bytes::Bytes)>, MachineError> {
        // One read of both: a snapshot installed meanwhile swaps them
        // together.
        let (tree, files) = {
            let c = self.committed.read().unwrap_or_else(|e| e.into_inner());
            (c.tree.clone(), c.files.clone())
        };
        let k = key(JOB, id);
        let Some(v) = tree.get(k)? else {
            return Ok(None);
        };
        let (job, payload): (Job, Payload) = decode(&k, &v)?;
        let payload = payload.bytes(id, |k| {
            if let Some(v) = tree.get(k)? {
                return Ok(Some(bytes::Bytes::copy_from_slice(&v)));
            }
            tree.get(key(SPILLED, id))?
                .map(|m| read_spilled(files.as_ref(), id, &m))
                .transpose()
        });
        match payload {
            Ok(payload) => Ok(Some((job, payload))),
            // Removed since the record was read (retention, an erase): its
            // file may be gone with it.
            Err(_) if tree.get(k)?.is_none() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What job `id`'s worker returned when it succeeded; empty if nothing was
    /// stored.
    pub fn result(&self, id: JobId) -> Result<bytes::Bytes, MachineError> {
        Ok(self
            .tree()
            .get(key(RESULT, id))?
            .map(|v| bytes::Bytes::copy_from_slice(&v))
            .unwrap_or_default())
    }

    /// The digest of the committed tree and the applied index it covers, as
    /// [`Machine::digest`] computes it. Consistent only while nothing is
    /// applied meanwhile: for comparing nodes of a quiet cluster.
    pub fn digest(&self) -> Result<(u64, u64), MachineError> {
        let mut digest = 0u64;
        for item in self.tree().iter() {
            let (k, v) = item?;
            if &k[..] != META_KEY {
                digest = digest.wrapping_add(digest_record(&k, &v));
            }
        }
        let applied = match self.tree().get(META_KEY)? {
            Some(bytes) => decode::<Meta>(META_KEY, &bytes)?.applied_index,
            None => 0,
        };
        Ok((applied, digest))
    }
}
