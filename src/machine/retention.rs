//! Retention: finished jobs (succeeded, cancelled, dead) and idempotency
//! records are removed once past the bounds a [`Command::Purge`] carries,
//! oldest first, a bounded slice per entry, so the disk and memory of a busy
//! node stay flat and every node removes exactly the same records.
//!
//! The jobs one command finishes share a time-index record (`F` for
//! succeeded and cancelled, `D` for dead: finish time, first id -> each
//! job's id and the bytes it keeps): one more write per batch of
//! completions, not per job. Each idempotency record gets one of its own
//! (`T`: enqueue time, id -> the record's key).
//! The machine keeps the total bytes of finished jobs under `b`. Reads merge
//! the staged writes into the tree's order, so a purge sees the same records
//! whatever the commit boundaries of the node applying it.

use super::keys::{DEAD_AT, FINISHED_AT, FINISHED_BYTES_KEY, IDEMPOTENT_AT};
use super::{decode, encode, key, Machine, MachineError, Payload, JOB, PAYLOAD, RESULT};
use crate::command::{Outcome, Retention};
use crate::job::{Job, JobId, JobState};

/// A time-index key: prefix, time, id (big-endian, so keys sort by time).
pub(super) fn time_key(prefix: u8, at_ms: u64, id: JobId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(prefix);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The (time, id) a time-index key names.
pub(super) fn parse_time_key(k: &[u8]) -> Result<(u64, JobId), MachineError> {
    let at = k
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes);
    let id = k
        .get(9..17)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes);
    match (at, id, k.len()) {
        (Some(at), Some(id), 17) => Ok((at, id)),
        _ => Err(MachineError::Corrupt {
            key: String::from_utf8_lossy(k).into_owned(),
            reason: "time-index key is not prefix, time and id".into(),
        }),
    }
}

fn u64_value(k: &[u8], v: &[u8]) -> Result<u64, MachineError> {
    v.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| MachineError::Corrupt {
            key: String::from_utf8_lossy(k).into_owned(),
            reason: "value is not a u64".into(),
        })
}

/// A key and its value.
type Record = (Vec<u8>, Vec<u8>);

/// A time-index record, as a purge reads it.
struct Indexed {
    key: Vec<u8>,
    at_ms: u64,
    id: JobId,
    /// The value: for finished jobs, each job's id and bytes (encoded).
    value: Vec<u8>,
}

impl Machine {
    /// Reads the stored total of finished-job bytes (0 in a new tree).
    pub(super) fn load_finished_bytes(tree: &sled::Tree) -> Result<u64, MachineError> {
        match tree.get(FINISHED_BYTES_KEY)? {
            Some(v) => u64_value(FINISHED_BYTES_KEY, &v),
            None => Ok(0),
        }
    }

    /// Notes a job that just finished, keeping `bytes` on disk; the
    /// command's finished jobs are indexed together by [`Self::index_finished`].
    pub(super) fn finished(&mut self, now: u64, job: &Job, bytes: u64) -> Result<(), MachineError> {
        let dead = job.state == JobState::Dead;
        self.finishing.push((dead, job.id, bytes));
        if self.dependents.contains_key(&job.id) {
            self.dependencies_due.push((job.id, job.state));
        }
        self.run_finished(now, job, Some(job.state))
    }

    /// Writes the time-index records of the jobs the command just applied
    /// finished, all at `now`.
    pub(super) fn index_finished(&mut self, now: u64) {
        if self.finishing.is_empty() {
            return;
        }
        let finishing = std::mem::take(&mut self.finishing);
        let added: u64 = finishing.iter().map(|(_, _, bytes)| bytes).sum();
        self.set_finished_bytes(self.finished_bytes.saturating_add(added));
        for (dead, prefix) in [(false, FINISHED_AT), (true, DEAD_AT)] {
            let jobs: Vec<(JobId, u64)> = finishing
                .iter()
                .filter(|(d, _, _)| *d == dead)
                .map(|(_, id, bytes)| (*id, *bytes))
                .collect();
            if let Some(&(first, _)) = jobs.first() {
                self.put(time_key(prefix, now, first), encode(&jobs));
            }
        }
    }

    /// Indexes an idempotency record by its job's enqueue time.
    pub(super) fn index_idempotency(&mut self, at_ms: u64, id: JobId, record: &[u8]) {
        self.put(time_key(IDEMPOTENT_AT, at_ms, id), record.to_vec());
    }

    fn set_finished_bytes(&mut self, bytes: u64) {
        self.finished_bytes = bytes;
        self.put(FINISHED_BYTES_KEY.to_vec(), bytes.to_be_bytes().to_vec());
    }

    /// What a job that just finished keeps on disk: its record, its payload
    /// if kept apart, and its result.
    pub(super) fn stored_bytes(
        &self,
        record: usize,
        id: JobId,
        payload: &Payload,
        result: usize,
    ) -> Result<u64, MachineError> {
        let apart = match payload {
            Payload::Apart => match self.get(&key(PAYLOAD, id))? {
                Some(p) => p.len(),
                None => self
                    .get(&key(super::keys::SPILLED, id))?
                    .map_or(0, |m| crate::spill::value_len(&m) as usize),
            },
            Payload::Inline(_) => 0,
        };
        Ok((record + apart + result) as u64)
    }

    /// Whether a [`Command::Purge`] with `r` at `now` would remove anything:
    /// the leader asks before proposing one. Reads committed state only.
    pub fn purge_due(&self, now: u64, r: &Retention) -> Result<bool, MachineError> {
        let oldest = |prefix: u8| -> Result<Option<u64>, MachineError> {
            match self.tree.scan_prefix([prefix]).next() {
                Some(item) => Ok(Some(parse_time_key(&item?.0)?.0)),
                None => Ok(None),
            }
        };
        let due = |at: Option<u64>, keep: u64| at.is_some_and(|at| at.saturating_add(keep) <= now);
        let finished = oldest(FINISHED_AT)?;
        let dead = oldest(DEAD_AT)?;
        Ok(due(finished, r.finished_ms)
            || due(dead, r.dead_ms)
            || due(oldest(IDEMPOTENT_AT)?, r.idempotency_ms)
            || (self.finished_bytes > r.max_finished_bytes
                && (finished.is_some() || dead.is_some())))
    }

    /// Applies a [`Command::Purge`]: whole index records, oldest first,
    /// until at least `limit` jobs are removed (one record may take it past).
    pub(super) fn purge(
        &mut self,
        now: u64,
        r: &Retention,
        limit: u32,
    ) -> Result<Outcome, MachineError> {
        let limit = limit as usize;
        let finished = self.time_index(FINISHED_AT, limit)?;
        let dead = self.time_index(DEAD_AT, limit)?;
        let (mut finished, mut dead) =
            (finished.into_iter().peekable(), dead.into_iter().peekable());
        let mut jobs = 0;
        while jobs < limit {
            let over_bytes = self.finished_bytes > r.max_finished_bytes;
            let f_due = finished
                .peek()
                .is_some_and(|f| over_bytes || f.at_ms.saturating_add(r.finished_ms) <= now);
            let d_due = dead
                .peek()
                .is_some_and(|d| over_bytes || d.at_ms.saturating_add(r.dead_ms) <= now);
            let next = match (f_due, d_due) {
                (true, true) => {
                    let (f, d) = (finished.peek(), dead.peek());
                    if f.map(|f| (f.at_ms, f.id)) <= d.map(|d| (d.at_ms, d.id)) {
                        finished.next()
                    } else {
                        dead.next()
                    }
                }
                (true, false) => finished.next(),
                (false, true) => dead.next(),
                (false, false) => break,
            };
            let Some(next) = next else { break };
            jobs += self.purge_record(next)?;
        }
        let mut records = 0;
        let room = limit.saturating_sub(jobs);
        let expired = self.time_index(IDEMPOTENT_AT, room)?;
        for entry in expired {
            if entry.at_ms.saturating_add(r.idempotency_ms) > now {
                break;
            }
            self.drop_idempotency(entry.key, entry.id)?;
            records += 1;
        }
        let more = jobs + records >= limit;
        Ok(Outcome::Purged {
            jobs: jobs as u32,
            idempotency_records: records as u32,
            more,
        })
    }

    /// Removes the jobs of one finished-jobs index record, and the record;
    /// returns how many jobs went.
    fn purge_record(&mut self, record: Indexed) -> Result<usize, MachineError> {
        let jobs: Vec<(JobId, u64)> = decode(&record.key, &record.value)?;
        self.delete(record.key);
        let mut purged = 0;
        for (id, bytes) in jobs {
            self.set_finished_bytes(self.finished_bytes.saturating_sub(bytes));
            let Some((job, payload)) = self.load(id)? else {
                continue; // gone already
            };
            // A job finished again later (replayed) is indexed again then.
            if !job.state.is_finished() || job.finished_at_ms != record.at_ms {
                continue;
            }
            self.remove_job(&job, &payload)?;
            purged += 1;
        }
        Ok(purged)
    }

    /// Removes a finished job: its record, payload, result and
    /// idempotency record.
    pub(super) fn remove_job(&mut self, job: &Job, payload: &Payload) -> Result<(), MachineError> {
        let id = job.id;
        self.unplace(job);
        self.delete(key(JOB, id).to_vec());
        self.unindex_run_job(job);
        if let Payload::Apart = payload {
            self.delete(key(PAYLOAD, id).to_vec());
        }
        self.delete(key(RESULT, id).to_vec());
        if !job.idempotency_key.is_empty() {
            self.drop_idempotency(time_key(IDEMPOTENT_AT, job.enqueued_at_ms, id), id)?;
        }
        Ok(())
    }

    /// Removes an idempotency record's time index and the record itself if
    /// it still names job `id` (a key reused after expiry names a newer one).
    fn drop_idempotency(&mut self, index_key: Vec<u8>, id: JobId) -> Result<(), MachineError> {
        let Some(record) = self.get(&index_key)? else {
            return Ok(()); // expired earlier
        };
        self.delete(index_key);
        if let Some(v) = self.get(&record)? {
            if u64_value(&record, &v)? == id {
                self.delete(record);
            }
        }
        Ok(())
    }

    /// The first `limit` records of a time index, oldest first, staged
    /// writes merged in.
    fn time_index(&self, prefix: u8, limit: usize) -> Result<Vec<Indexed>, MachineError> {
        let mut out = Vec::new();
        for (k, v) in self.scan_merged(&[prefix], limit)? {
            let (at_ms, id) = parse_time_key(&k)?;
            out.push(Indexed {
                key: k,
                at_ms,
                id,
                value: v,
            });
        }
        Ok(out)
    }

    /// The first `limit` records under `prefix`, in key order, as the tree
    /// will hold them once the staged writes are committed.
    pub(super) fn scan_merged(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Record>, MachineError> {
        self.scan_merged_from(prefix, prefix, limit)
    }

    /// Like [`Machine::scan_merged`], from the key `from` (under `prefix`) on.
    pub(super) fn scan_merged_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Record>, MachineError> {
        let mut tree = self
            .tree
            .range(from..)
            .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)));
        let mut staged = self
            .staged
            .range(from.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut out = Vec::new();
        let mut next_tree = tree.next().transpose()?;
        while out.len() < limit {
            let take_staged = match (&next_tree, staged.peek()) {
                (None, None) => break,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some((tk, _)), Some((sk, _))) => sk[..] <= tk[..],
            };
            if take_staged {
                let Some((k, v)) = staged.next() else { break };
                if next_tree.as_ref().is_some_and(|(tk, _)| tk[..] == k[..]) {
                    next_tree = tree.next().transpose()?;
                }
                if let Some(v) = v {
                    out.push((k.clone(), v.clone()));
                }
            } else if let Some((k, v)) = next_tree.take() {
                out.push((k.to_vec(), v.to_vec()));
                next_tree = tree.next().transpose()?;
            }
        }
        Ok(out)
    }
}
