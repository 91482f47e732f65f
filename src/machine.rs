//! The state machine: applies committed commands in log order and is the only
//! writer of the job state.
//!
//! It is pure: no clock (time comes in each entry), no randomness (backoff
//! jitter is derived from the job id), no network, no async. Its one side
//! effect is its own sled tree. Changes of a range of entries are staged in
//! memory and written by [`Machine::commit`] in one atomic `Batch` together
//! with the applied index, so a crash never applies an entry twice or skips
//! one.
//!
//! Job records live only in sled; memory holds the indexes that scheduling
//! needs (ready jobs by priority, delayed jobs and leases by due time) and
//! counters, rebuilt from the tree on open. That keeps a node with a million
//! pending jobs small.
//!
//! Key layout of the tree, one byte of prefix per record kind:
//! `f` format, `m` meta, `j`+id job (with its payload if small), `p`+id
//! large payload, `r`+id result, `i`+scope idempotency.
//!
//! A payload of up to [`INLINE_PAYLOAD_MAX`] bytes shares the job's record:
//! an enqueue is one tree write per job instead of two (a sled insert costs
//! ~5-8 µs, on every node), and a lease reads the payload with the job. State
//! changes rewrite such a payload with the record, which costs less than the
//! second insert did. A larger payload keeps its own record, so heartbeats
//! and other state changes never rewrite it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::command::{
    Command, Completion, Enqueued, Failure, LeaseBeat, LeasedJob, LogEntry, Outcome, Refusal,
};
use crate::job::{Job, JobId, JobState, Lease, NewJob, PRIORITY_LOWEST};

const META_KEY: &[u8] = b"m";
const FORMAT_KEY: &[u8] = b"f";
/// Layout of the tree; a tree of another layout is refused, not misread.
/// 1 kept payloads under their own `p` keys.
const FORMAT: u8 = 2;
const JOB: u8 = b'j';
const PAYLOAD: u8 = b'p';
/// Largest payload kept inside its job's record.
pub const INLINE_PAYLOAD_MAX: usize = 4096;
const RESULT: u8 = b'r';
const IDEMPOTENCY: u8 = b'i';

/// Payload bytes one [`Command::Held`] answer carries at most.
const HELD_ANSWER_BYTES: usize = 16 << 20;

/// Staged writes after which [`Machine::wants_commit`] asks for a commit.
const COMMIT_WRITES: usize = 1000;

/// The settings apply depends on. They must be equal on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineConfig {
    pub heartbeat_timeout_ms: u64,
    pub max_retries: u32,
    pub retry_base_delay_ms: u64,
    pub retry_max_delay_ms: u64,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            heartbeat_timeout_ms: 30_000,
            max_retries: 3,
            retry_base_delay_ms: 1_000,
            retry_max_delay_ms: 300_000,
        }
    }
}

/// A failure of the machine's own storage. Unlike a [`Refusal`] it is not an
/// answer to a request: the node cannot go on applying and must stop.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("machine storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("machine record {key} is corrupt ({reason}); the data dir is damaged: restore it from a backup or let the node re-sync from its peers")]
    Corrupt { key: String, reason: String },
    #[error("the job store has layout {found}, this drover reads layout {FORMAT}: it was written by another version of drover; run that version, or start this node with an empty data dir so it re-syncs from its peers")]
    Format { found: String },
    /// A bug in the caller, reported rather than panicked on.
    #[error("a consistent read of the machine could not start: {0}")]
    Capture(&'static str),
}

/// Where a job's payload is, as its record says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Payload {
    Inline(bytes::Bytes),
    /// Under `p`+id.
    Apart,
}

impl Payload {
    /// The payload's bytes; `read` fetches a record by key (from the staged
    /// writes or the tree) for one kept apart.
    fn bytes(
        self,
        id: JobId,
        read: impl FnOnce(&[u8]) -> Result<Option<bytes::Bytes>, MachineError>,
    ) -> Result<bytes::Bytes, MachineError> {
        match self {
            Payload::Inline(bytes) => Ok(bytes),
            Payload::Apart => read(&key(PAYLOAD, id))?.ok_or_else(|| missing_payload(id)),
        }
    }
}

/// A job record from its stored bytes without its payload, which follows
/// the job in the record and is left unread.
fn decode_job(k: &[u8], bytes: &[u8]) -> Result<Job, MachineError> {
    decode(k, bytes)
}

/// Persisted with every commit; the applied index and the state it describes
/// are always written together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub applied_index: u64,
    pub applied_term: u64,
    /// The latest time seen in the log; apply never lets time go backwards.
    pub last_at_ms: u64,
    pub next_id: JobId,
}

/// Jobs of one queue by state. `ready` is split by priority (index 0 is priority 1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    pub ready: [u64; 5],
    pub scheduled: u64,
    pub leased: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
}

impl QueueCounts {
    pub fn ready_total(&self) -> u64 {
        self.ready.iter().sum()
    }

    /// Jobs not yet finished.
    pub fn pending(&self) -> u64 {
        self.ready_total() + self.scheduled + self.leased
    }

    fn slot(&mut self, state: JobState, priority: u8) -> &mut u64 {
        match state {
            JobState::Ready => &mut self.ready[usize::from(priority.clamp(1, PRIORITY_LOWEST) - 1)],
            JobState::Scheduled => &mut self.scheduled,
            JobState::Leased => &mut self.leased,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Dead => &mut self.dead,
            JobState::Cancelled => &mut self.cancelled,
        }
    }
}

/// Counters of events since this node opened its machine. They feed the
/// `_total` metrics; a restart resets them, as Prometheus counters expect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub enqueued: u64,
    pub dispatched: u64,
    pub completed: u64,
    pub failed: u64,
    pub retried: u64,
    pub requeued: u64,
    pub dead: u64,
    pub cancelled: u64,
}

/// What the machine publishes after each applied range, for stats, metrics
/// and for workers waiting for ready jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineStats {
    pub applied_index: u64,
    pub last_at_ms: u64,
    pub queues: BTreeMap<String, QueueCounts>,
    pub totals: Totals,
}

#[derive(Debug, Default)]
struct QueueIndex {
    /// (priority, id): lowest priority number first, then oldest first.
    ready: BTreeSet<(u8, JobId)>,
    counts: QueueCounts,
}

pub struct Machine {
    tree: sled::Tree,
    /// The same tree, for readers; swapped when a snapshot is installed.
    shared: Arc<RwLock<sled::Tree>>,
    cfg: MachineConfig,
    meta: Meta,
    queues: BTreeMap<String, QueueIndex>,
    /// (run_at, id) of scheduled jobs.
    scheduled: BTreeSet<(u64, JobId)>,
    /// (lease deadline, id) of leased jobs.
    leases: BTreeSet<(u64, JobId)>,
    /// Leased jobs by the worker holding them, for [`Command::Held`].
    held_by: HashMap<String, BTreeSet<JobId>>,
    totals: Totals,
    /// Writes of the entries applied since the last commit; reads look here
    /// first so later entries of a range see earlier ones.
    staged: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// A consistent read of the tree in progress (a snapshot being
    /// written): each commit tells it what it is about to overwrite.
    capture: Option<Arc<capture::Capture>>,
    /// Bytes kept by finished jobs (see [`retention`]); stored under `b`.
    finished_bytes: u64,
    /// Jobs the command being applied finished (dead?, id, bytes), indexed
    /// together when it is done.
    finishing: Vec<(bool, JobId, u64)>,
    /// Audit records written by the entry being applied (their keys'
    /// position within it).
    audit_seq: u32,
}

fn key(prefix: u8, id: JobId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn idempotency_key(tenant: &str, queue: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + tenant.len() + queue.len() + key.len());
    k.push(IDEMPOTENCY);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(queue.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn describe_key(k: &[u8]) -> String {
    match (k.first(), k.len()) {
        (Some(&p), 9) => format!(
            "{}/{}",
            p as char,
            u64::from_be_bytes(k[1..9].try_into().unwrap_or_default())
        ),
        _ => String::from_utf8_lossy(k).into_owned(),
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("bincode encoding of in-memory values cannot fail")
}

fn decode<T: for<'de> Deserialize<'de>>(k: &[u8], bytes: &[u8]) -> Result<T, MachineError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| MachineError::Corrupt {
            key: describe_key(k),
            reason: e.to_string(),
        })
}

fn missing_payload(id: JobId) -> MachineError {
    MachineError::Corrupt {
        key: describe_key(&key(PAYLOAD, id)),
        reason: "the job's record keeps its payload here, but there is none".into(),
    }
}

/// Refuses a tree of another layout; marks an empty one with this layout.
/// Every node starts empty or from a snapshot (which carries the mark), so
/// the mark is the same on all of them.
fn check_format(tree: &sled::Tree) -> Result<(), MachineError> {
    if tree.is_empty() {
        tree.insert(FORMAT_KEY, &[FORMAT])?;
        return Ok(());
    }
    check_layout(tree)
}

/// Refuses a tree, such as one just loaded from a snapshot, that is not of
/// this layout. Call it before anything depends on the tree: a snapshot
/// installed or restored and only then refused would leave a node that
/// cannot start.
pub fn check_layout(tree: &sled::Tree) -> Result<(), MachineError> {
    match tree.get(FORMAT_KEY)? {
        Some(v) if v.as_ref() == [FORMAT] => Ok(()),
        Some(v) => Err(MachineError::Format {
            found: format!("{:?}", v.as_ref()),
        }),
        None => Err(MachineError::Format {
            found: "1 (no layout mark)".into(),
        }),
    }
}

/// An order-sensitive hash of records in key order: equal trees, equal hashes.
fn hash_records<'a>(records: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    let mut h = 0u64;
    for (k, v) in records {
        for b in k.iter().chain(v.iter()) {
            h = mix(h ^ u64::from(*b));
        }
        h = mix(h ^ 0xff);
    }
    h
}

/// splitmix64: a fixed mixing function, so jitter is a pure function of the job.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl MachineConfig {
    /// Delay before retry number `attempt` (1-based): exponential from the base,
    /// capped, plus up to a quarter of jitter derived from the job id so jobs
    /// that failed together do not all come back in the same millisecond.
    pub fn backoff_ms(&self, job_id: JobId, attempt: u32) -> u64 {
        let exp = attempt.saturating_sub(1).min(32);
        let delay = self
            .retry_base_delay_ms
            .saturating_mul(1u64 << exp)
            .min(self.retry_max_delay_ms);
        let jitter_range = delay / 4 + 1;
        delay + mix(job_id ^ (u64::from(attempt) << 48)) % jitter_range
    }
}

impl Machine {
    /// Opens the machine on its tree and rebuilds the in-memory indexes from
    /// the job records.
    pub fn open(tree: sled::Tree, cfg: MachineConfig) -> Result<Machine, MachineError> {
        check_format(&tree)?;
        let meta = match tree.get(META_KEY)? {
            Some(bytes) => decode(META_KEY, &bytes)?,
            None => Meta {
                next_id: 1,
                ..Meta::default()
            },
        };
        let finished_bytes = Machine::load_finished_bytes(&tree)?;
        let mut machine = Machine {
            shared: Arc::new(RwLock::new(tree.clone())),
            tree,
            cfg,
            meta,
            queues: BTreeMap::new(),
            scheduled: BTreeSet::new(),
            leases: BTreeSet::new(),
            held_by: HashMap::new(),
            totals: Totals::default(),
            staged: BTreeMap::new(),
            capture: None,
            finished_bytes,
            finishing: Vec::new(),
            audit_seq: 0,
        };
        for item in machine.tree.scan_prefix([JOB]) {
            let (k, v) = item?;
            machine.place(&decode_job(&k, &v)?);
        }
        Ok(machine)
    }

    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// A reader of committed job records that needs no access to the machine.
    pub fn reader(&self) -> JobReader {
        JobReader {
            tree: self.shared.clone(),
        }
    }

    /// The tree holding the committed state, for taking a snapshot. Only
    /// meaningful right after [`Machine::commit`].
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Starts a consistent read of the committed state as it is now, for a
    /// snapshot written off the raft loop: the reader may run on any thread
    /// while the machine applies on. Call right after [`Machine::commit`]
    /// (nothing staged), and one at a time.
    pub fn start_capture(&mut self) -> Result<capture::CaptureReader, MachineError> {
        if !self.staged.is_empty() {
            return Err(MachineError::Capture("writes are staged; commit first"));
        }
        if self.capture.as_ref().is_some_and(|c| !c.finished()) {
            return Err(MachineError::Capture("another one is running"));
        }
        let (shared, reader) = capture::CaptureReader::start(self.tree.clone());
        self.capture = Some(shared);
        Ok(reader)
    }

    /// Moves the machine onto `tree` (a snapshot just loaded into it) and
    /// rebuilds the indexes from it. Readers follow; event totals carry on.
    pub fn replace_tree(&mut self, tree: sled::Tree) -> Result<(), MachineError> {
        if let Some(c) = self.capture.take() {
            c.cancel();
        }
        let mut fresh = Machine::open(tree.clone(), self.cfg)?;
        fresh.totals = self.totals;
        fresh.shared = self.shared.clone();
        *fresh.shared.write().unwrap_or_else(|e| e.into_inner()) = tree;
        *self = fresh;
        Ok(())
    }

    /// The earliest time at which a [`Command::Tick`] would change something.
    pub fn next_due_ms(&self) -> Option<u64> {
        let s = self.scheduled.first().map(|(at, _)| *at);
        let l = self.leases.first().map(|(at, _)| *at);
        match (s, l) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether any of `queues` has a job a worker could lease now.
    pub fn has_ready(&self, queues: &[String]) -> bool {
        queues
            .iter()
            .any(|q| self.queues.get(q).is_some_and(|qi| !qi.ready.is_empty()))
    }

    pub fn stats(&self) -> MachineStats {
        MachineStats {
            applied_index: self.meta.applied_index,
            last_at_ms: self.meta.last_at_ms,
            queues: self
                .queues
                .iter()
                .map(|(name, qi)| (name.clone(), qi.counts.clone()))
                .collect(),
            totals: self.totals,
        }
    }

    /// Applies one committed entry: each of its commands in order, with one
    /// outcome each. Must be followed, after the last entry of the range, by
    /// [`Machine::commit`].
    pub fn apply(
        &mut self,
        index: u64,
        term: u64,
        entry: &LogEntry,
    ) -> Result<Vec<Outcome>, MachineError> {
        let now = entry.at_ms.max(self.meta.last_at_ms);
        self.meta.last_at_ms = now;
        self.meta.applied_index = index;
        self.meta.applied_term = term;
        self.audit_seq = 0;
        entry
            .commands
            .iter()
            .map(|c| {
                let outcome = self.apply_command(now, c);
                self.index_finished(now);
                outcome
            })
            .collect()
    }

    fn apply_command(&mut self, now: u64, command: &Command) -> Result<Outcome, MachineError> {
        Ok(match command {
            Command::Enqueue { jobs } => Outcome::Enqueued(self.enqueue(now, jobs)?),
            Command::Lease {
                worker,
                queues,
                max,
            } => Outcome::Leased(self.lease(now, worker, queues, *max)?),
            Command::Heartbeat { leases, .. } => Outcome::Acks(
                leases
                    .iter()
                    .map(|b| self.heartbeat(now, b))
                    .collect::<Result<_, _>>()?,
            ),
            Command::Complete { items, .. } => Outcome::Acks(
                items
                    .iter()
                    .map(|c| self.complete(now, c))
                    .collect::<Result<_, _>>()?,
            ),
            Command::Fail { items, .. } => Outcome::Acks(
                items
                    .iter()
                    .map(|f| self.fail(now, f))
                    .collect::<Result<_, _>>()?,
            ),
            Command::Cancel { id } => Outcome::Cancelled(self.cancel(now, *id)?),
            Command::Tick => self.tick(now)?,
            Command::Held { worker } => Outcome::Leased(self.held(worker)?),
            Command::Purge { retention, limit } => self.purge(now, retention, *limit)?,
            Command::Audit { record, command } => self.audit(now, record, command.as_ref())?,
            Command::PurgeAudit { keep_ms, limit } => self.purge_audit(now, *keep_ms, *limit)?,
        })
    }

    /// Records an entry that carries no command (a new leader's empty entry,
    /// a conf change, an entry that could not be decoded) as applied.
    pub fn apply_noop(&mut self, index: u64, term: u64) {
        self.meta.applied_index = index;
        self.meta.applied_term = term;
    }

    /// Whether enough is staged that the caller should commit before applying
    /// more. sled keeps every node copy an `apply_batch` makes until the batch
    /// ends, so batches of thousands of writes leave hundreds of MB behind in
    /// the allocator; batches of up to about a thousand writes do not.
    pub fn wants_commit(&self) -> bool {
        self.staged.len() >= COMMIT_WRITES
    }

    /// Writes everything applied since the last commit, with the applied
    /// index, in one atomic batch. Does not flush: the raft log already holds
    /// the entries durably and replays them after a crash.
    pub fn commit(&mut self) -> Result<(), MachineError> {
        if let Some(c) = &self.capture {
            if c.finished() {
                self.capture = None;
            } else {
                let keys = self.staged.keys().map(|k| &k[..]);
                c.before_write(&self.tree, keys.chain(std::iter::once(META_KEY)))?;
            }
        }
        let mut batch = sled::Batch::default();
        for (k, v) in std::mem::take(&mut self.staged) {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch.insert(META_KEY, encode(&self.meta));
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// A digest of everything the machine stores, committed and staged; equal
    /// on every node that applied the same log. The meta record (applied
    /// index, the log's time, next id) is left out: a command the machine
    /// refuses still moves the applied index and the time, and changes
    /// nothing a client can see, so the digest stays as it was.
    pub fn digest(&self) -> Result<u64, MachineError> {
        let mut all: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            all.insert(k.to_vec(), v.to_vec());
        }
        for (k, v) in &self.staged {
            match v {
                Some(v) => all.insert(k.clone(), v.clone()),
                None => all.remove(k),
            };
        }
        all.remove(META_KEY);
        Ok(hash_records(all.iter().map(|(k, v)| (&k[..], &v[..]))))
    }

    // ---- commands ----

    fn enqueue(&mut self, now: u64, jobs: &[NewJob]) -> Result<Vec<Enqueued>, MachineError> {
        let mut out = Vec::with_capacity(jobs.len());
        for new in jobs {
            let idem = (!new.idempotency_key.is_empty())
                .then(|| idempotency_key(&new.tenant, &new.queue, &new.idempotency_key));
            if let Some(k) = &idem {
                if let Some(v) = self.get(k)? {
                    let id = v
                        .as_slice()
                        .try_into()
                        .map(u64::from_be_bytes)
                        .map_err(|_| MachineError::Corrupt {
                            key: describe_key(k),
                            reason: "idempotency record is not a job id".into(),
                        })?;
                    out.push(Enqueued {
                        id,
                        duplicate: true,
                    });
                    continue;
                }
            }
            let id = self.meta.next_id;
            self.meta.next_id += 1;
            let run_at_ms = now.saturating_add(new.delay_ms);
            let mut job = Job {
                id,
                queue: new.queue.clone(),
                job_type: new.job_type.clone(),
                tenant: new.tenant.clone(),
                run_id: new.run_id.clone(),
                priority: new.priority,
                state: if new.delay_ms > 0 {
                    JobState::Scheduled
                } else {
                    JobState::Ready
                },
                attempts: 0,
                idempotency_key: new.idempotency_key.clone(),
                labels: new.labels.clone(),
                enqueued_at_ms: now,
                run_at_ms,
                lease: None,
                progress: None,
                last_error_class: String::new(),
                last_error: String::new(),
                finished_at_ms: 0,
                events: Vec::new(),
            };
            job.record(now, "enqueued");
            if let Some(k) = idem {
                self.index_idempotency(now, id, &k);
                self.put(k, id.to_be_bytes().to_vec());
            }
            let payload = if new.payload.len() <= INLINE_PAYLOAD_MAX {
                Payload::Inline(new.payload.clone())
            } else {
                self.put(key(PAYLOAD, id).to_vec(), new.payload.to_vec());
                Payload::Apart
            };
            self.place(&job);
            self.put_job(&job, &payload);
            self.totals.enqueued += 1;
            out.push(Enqueued {
                id,
                duplicate: false,
            });
        }
        Ok(out)
    }

    /// The jobs leased to `worker` now, as a lease hands them out. Changes
    /// nothing.
    fn held(&self, worker: &str) -> Result<Vec<LeasedJob>, MachineError> {
        let Some(ids) = self.held_by.get(worker) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(ids.len());
        let mut bytes = 0;
        for &id in ids {
            // One answer stays well inside a gRPC message; leases past it
            // are not re-sent and run again after they expire.
            if bytes >= HELD_ANSWER_BYTES {
                break;
            }
            let (job, payload) = self.must_load(id)?;
            let payload = self.payload_bytes(job.id, payload)?;
            bytes += payload.len();
            out.push(LeasedJob { job, payload });
        }
        Ok(out)
    }

    fn lease(
        &mut self,
        now: u64,
        worker: &str,
        queues: &[String],
        max: u32,
    ) -> Result<Vec<LeasedJob>, MachineError> {
        let mut out = Vec::new();
        while out.len() < max as usize {
            let best = queues
                .iter()
                .filter_map(|q| self.queues.get(q).and_then(|qi| qi.ready.first()))
                .min()
                .copied();
            let Some((_, id)) = best else { break };
            let (mut job, payload) = self.must_load(id)?;
            self.unplace(&job);
            job.attempts += 1;
            job.state = JobState::Leased;
            job.lease = Some(Lease {
                worker: worker.to_string(),
                attempt: job.attempts,
                deadline_ms: now.saturating_add(self.cfg.heartbeat_timeout_ms),
            });
            job.progress = None;
            job.record(
                now,
                format!("leased by {worker} (attempt {})", job.attempts),
            );
            self.place(&job);
            self.put_job(&job, &payload);
            self.totals.dispatched += 1;
            let payload = self.payload_bytes(job.id, payload)?;
            out.push(LeasedJob { job, payload });
        }
        Ok(out)
    }

    /// Loads a job and checks that `attempt` is its current lease.
    fn fenced(
        &self,
        job_id: JobId,
        attempt: u32,
    ) -> Result<Result<(Job, Payload), Refusal>, MachineError> {
        let Some((job, payload)) = self.load(job_id)? else {
            return Ok(Err(Refusal::UnknownJob(job_id)));
        };
        let current = job.lease.as_ref().map_or(0, |l| l.attempt);
        if job.state != JobState::Leased || current != attempt {
            return Ok(Err(Refusal::StaleLease {
                job_id,
                attempt,
                current: job.attempts,
                state: job.state,
            }));
        }
        Ok(Ok((job, payload)))
    }

    fn heartbeat(
        &mut self,
        now: u64,
        beat: &LeaseBeat,
    ) -> Result<Result<(), Refusal>, MachineError> {
        let (mut job, payload) = match self.fenced(beat.job_id, beat.attempt)? {
            Ok(loaded) => loaded,
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.unplace(&job);
        if let Some(lease) = job.lease.as_mut() {
            lease.deadline_ms = now.saturating_add(self.cfg.heartbeat_timeout_ms);
        }
        if beat.progress.is_some() {
            job.progress = beat.progress.clone();
        }
        self.place(&job);
        self.put_job(&job, &payload);
        Ok(Ok(()))
    }

    fn complete(&mut self, now: u64, c: &Completion) -> Result<Result<(), Refusal>, MachineError> {
        let (mut job, payload) = match self.fenced(c.job_id, c.attempt)? {
            Ok(loaded) => loaded,
            // A worker sends a result again when it could not learn whether
            // the first reached the log; the repeat changes nothing.
            Err(Refusal::StaleLease {
                state: JobState::Succeeded,
                current,
                ..
            }) if current == c.attempt => return Ok(Ok(())),
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.unplace(&job);
        job.state = JobState::Succeeded;
        job.lease = None;
        job.finished_at_ms = now;
        job.record(now, format!("completed (attempt {})", c.attempt));
        self.place(&job);
        let record = self.put_job(&job, &payload);
        if !c.result.is_empty() {
            self.put(key(RESULT, job.id).to_vec(), c.result.to_vec());
        }
        let bytes = self.stored_bytes(record, job.id, &payload, c.result.len())?;
        self.finished(&job, bytes);
        self.totals.completed += 1;
        Ok(Ok(()))
    }

    fn fail(&mut self, now: u64, f: &Failure) -> Result<Result<(), Refusal>, MachineError> {
        let (mut job, payload) = match self.fenced(f.job_id, f.attempt)? {
            Ok(loaded) => loaded,
            // A repeated failure report (see `complete`): the job failed at
            // this attempt and waits for its retry, or is dead.
            Err(Refusal::StaleLease {
                state: JobState::Scheduled | JobState::Dead,
                current,
                ..
            }) if current == f.attempt => return Ok(Ok(())),
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.unplace(&job);
        job.lease = None;
        job.last_error_class = f.error_class.clone();
        job.last_error = f.message.clone();
        self.totals.failed += 1;
        if job.attempts > self.cfg.max_retries {
            job.state = JobState::Dead;
            job.finished_at_ms = now;
            job.record(
                now,
                format!(
                    "failed with {} (attempt {}); dead-lettered after {} retries",
                    f.error_class, f.attempt, self.cfg.max_retries
                ),
            );
            self.totals.dead += 1;
        } else {
            job.state = JobState::Scheduled;
            job.run_at_ms = now.saturating_add(self.cfg.backoff_ms(job.id, job.attempts));
            job.record(
                now,
                format!(
                    "failed with {} (attempt {}); retry scheduled at {}",
                    f.error_class, f.attempt, job.run_at_ms
                ),
            );
            self.totals.retried += 1;
        }
        self.place(&job);
        let record = self.put_job(&job, &payload);
        if job.state == JobState::Dead {
            let bytes = self.stored_bytes(record, job.id, &payload, 0)?;
            self.finished(&job, bytes);
        }
        Ok(Ok(()))
    }

    fn cancel(&mut self, now: u64, id: JobId) -> Result<Result<JobState, Refusal>, MachineError> {
        let Some((mut job, payload)) = self.load(id)? else {
            return Ok(Err(Refusal::UnknownJob(id)));
        };
        if job.state.is_finished() {
            return Ok(Err(Refusal::Finished {
                job_id: id,
                state: job.state,
            }));
        }
        let was = job.state;
        self.unplace(&job);
        job.state = JobState::Cancelled;
        job.lease = None;
        job.finished_at_ms = now;
        job.record(now, format!("cancelled while {was}"));
        self.place(&job);
        let record = self.put_job(&job, &payload);
        // Only an unfinished job can be cancelled: it has no result.
        let bytes = self.stored_bytes(record, job.id, &payload, 0)?;
        self.finished(&job, bytes);
        self.totals.cancelled += 1;
        Ok(Ok(was))
    }

    fn tick(&mut self, now: u64) -> Result<Outcome, MachineError> {
        let mut expired = 0;
        while let Some(&(deadline, id)) = self.leases.first() {
            if deadline > now {
                break;
            }
            let (mut job, payload) = self.must_load(id)?;
            self.unplace(&job);
            let worker = job.lease.take().map(|l| l.worker).unwrap_or_default();
            job.state = JobState::Ready;
            job.record(now, format!("lease expired (worker {worker}); requeued"));
            self.place(&job);
            self.put_job(&job, &payload);
            self.totals.requeued += 1;
            expired += 1;
        }
        let mut promoted = 0;
        while let Some(&(run_at, id)) = self.scheduled.first() {
            if run_at > now {
                break;
            }
            let (mut job, payload) = self.must_load(id)?;
            self.unplace(&job);
            job.state = JobState::Ready;
            self.place(&job);
            self.put_job(&job, &payload);
            promoted += 1;
        }
        Ok(Outcome::Ticked { expired, promoted })
    }

    // ---- indexes ----

    /// Adds a job to the indexes and counts of its state.
    fn place(&mut self, job: &Job) {
        let qi = self.queues.entry(job.queue.clone()).or_default();
        *qi.counts.slot(job.state, job.priority) += 1;
        match job.state {
            JobState::Ready => {
                qi.ready.insert((job.priority, job.id));
            }
            JobState::Scheduled => {
                self.scheduled.insert((job.run_at_ms, job.id));
            }
            JobState::Leased => {
                if let Some(l) = &job.lease {
                    self.leases.insert((l.deadline_ms, job.id));
                    match self.held_by.get_mut(&l.worker) {
                        Some(held) => {
                            held.insert(job.id);
                        }
                        None => {
                            self.held_by
                                .insert(l.worker.clone(), BTreeSet::from([job.id]));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Removes a job from the indexes of its state; the inverse of `place`.
    fn unplace(&mut self, job: &Job) {
        if let Some(qi) = self.queues.get_mut(&job.queue) {
            let slot = qi.counts.slot(job.state, job.priority);
            *slot = slot.saturating_sub(1);
            if job.state == JobState::Ready {
                qi.ready.remove(&(job.priority, job.id));
            }
        }
        match job.state {
            JobState::Scheduled => {
                self.scheduled.remove(&(job.run_at_ms, job.id));
            }
            JobState::Leased => {
                if let Some(l) = &job.lease {
                    self.leases.remove(&(l.deadline_ms, job.id));
                    if let Some(held) = self.held_by.get_mut(&l.worker) {
                        held.remove(&job.id);
                        if held.is_empty() {
                            self.held_by.remove(&l.worker);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    // ---- staged storage ----

    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, MachineError> {
        if let Some(v) = self.staged.get(k) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(k)?.map(|v| v.to_vec()))
    }

    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.staged.insert(k, Some(v));
    }

    /// Stages a job's record; returns its length.
    fn put_job(&mut self, job: &Job, payload: &Payload) -> usize {
        let record = encode(&(job, payload));
        let len = record.len();
        self.put(key(JOB, job.id).to_vec(), record);
        len
    }

    fn delete(&mut self, k: Vec<u8>) {
        self.staged.insert(k, None);
    }

    /// The bytes of a payload the job's record names.
    fn payload_bytes(&self, id: JobId, payload: Payload) -> Result<bytes::Bytes, MachineError> {
        payload.bytes(id, |k| Ok(self.get(k)?.map(bytes::Bytes::from)))
    }

    fn load(&self, id: JobId) -> Result<Option<(Job, Payload)>, MachineError> {
        let k = key(JOB, id);
        match self.staged.get(&k[..]) {
            Some(Some(v)) => decode(&k, v).map(Some),
            Some(None) => Ok(None),
            None => match self.tree.get(k)? {
                Some(v) => decode(&k, &v).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Loads a job the indexes say exists; its absence means the tree and the
    /// indexes disagree, which only damage on disk can cause.
    fn must_load(&self, id: JobId) -> Result<(Job, Payload), MachineError> {
        self.load(id)?.ok_or_else(|| MachineError::Corrupt {
            key: describe_key(&key(JOB, id)),
            reason: "indexed job has no record".into(),
        })
    }
}

/// Reads committed job records straight from sled, with no lock shared with
/// apply, so reads never wait behind writes.
#[derive(Clone)]
pub struct JobReader {
    tree: Arc<RwLock<sled::Tree>>,
}

impl JobReader {
    fn tree(&self) -> sled::Tree {
        self.tree.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A page of the audit log, newest first (see [`audit::page`]).
    pub fn audit(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<audit::AuditPage, MachineError> {
        audit::page(&self.tree(), before, limit)
    }

    pub fn job(&self, id: JobId) -> Result<Option<Job>, MachineError> {
        let k = key(JOB, id);
        match self.tree().get(k)? {
            Some(v) => decode_job(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    pub fn job_and_payload(&self, id: JobId) -> Result<Option<(Job, bytes::Bytes)>, MachineError> {
        let tree = self.tree();
        let k = key(JOB, id);
        let Some(v) = tree.get(k)? else {
            return Ok(None);
        };
        let (job, payload): (Job, Payload) = decode(&k, &v)?;
        let payload = payload.bytes(id, |k| {
            Ok(tree.get(k)?.map(|v| bytes::Bytes::copy_from_slice(&v)))
        })?;
        Ok(Some((job, payload)))
    }

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
        let mut records = Vec::new();
        for item in self.tree().iter() {
            let (k, v) = item?;
            if &k[..] != META_KEY {
                records.push((k, v));
            }
        }
        let applied = match self.tree().get(META_KEY)? {
            Some(bytes) => decode::<Meta>(META_KEY, &bytes)?.applied_index,
            None => 0,
        };
        Ok((
            applied,
            hash_records(records.iter().map(|(k, v)| (&k[..], &v[..]))),
        ))
    }
}

pub mod audit;
pub mod capture;
mod retention;

#[cfg(test)]
mod tests;
