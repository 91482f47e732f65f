//! The state machine: applies committed commands in log order and is the only
//! writer of the job state.
//!
//! It is pure: no clock (time comes in each entry), no randomness (backoff
//! jitter is derived from the job id), no network, no async. Its one side
//! effect is its own sled tree.
//!
//! Writes are staged in memory as entries apply, and [`Machine::commit`]
//! writes them in one atomic `Batch` with the applied index of the last
//! entry in it. The driver commits at the end of each applied range, and
//! also after any entry that leaves 1,000 or more keys staged, so a long
//! range goes in several batches. That is for memory: sled keeps every node
//! copy a batch makes until the batch ends, and batches of thousands of
//! writes leave hundreds of MB behind. It is still safe. A batch never
//! splits an entry and always carries its last entry's index, so after a
//! crash the tree holds whole entries up to the index it records, and raft
//! replays the log from the next one: no entry is applied twice or skipped.
//! Reads see staged writes before the tree, so where the batches fall
//! changes no outcome, and nodes that commit at other points stay equal.
//!
//! Job records live only in sled; memory holds the indexes that scheduling
//! needs (ready jobs by priority, delayed jobs and leases by due time) and
//! counters, rebuilt from the tree on open. That keeps a node with a million
//! pending jobs small.
//!
//! The parts, one concern each:
//!
//! - `keys`: the tree's key layout and record codec, so every record kind
//!   has one prefix and one encoding.
//! - `staged`: the write set, read before the tree so later entries of a
//!   range see earlier ones.
//! - `indexes`: what scheduling reads in memory, rebuilt from the tree on
//!   open.
//! - `reader`: reads of the committed tree for the APIs, so reads never
//!   wait behind apply.
//! - `capture`: a consistent read while apply goes on, so a snapshot does
//!   not stop the raft loop.
//! - `migrate`: rewrites a layout-2 tree to layout 3 on open, so old data
//!   dirs, snapshots and backups still load.
//! - `jobs`: enqueue and cancel, as producers and operators send them.
//! - `leases`: lease, heartbeat, complete, fail, and the tick that expires
//!   leases and promotes delayed jobs.
//! - `scheduler`: the pick; its clocks are replicated so every node picks
//!   alike.
//! - `retry`: retry jitter from the job id, so every node retries at the
//!   same millisecond.
//! - `dependencies`: jobs waiting for others, kept out of the ready set so
//!   they cost the pick nothing.
//! - `limits`: per-key concurrency and rate limits; a job at its key's
//!   limit is parked, so later picks skip it.
//! - `controls`: queue and tenant pause and drain, and admission of new
//!   jobs against them and the depth limits.
//! - `breaker`: circuit breakers per queue, tenant and error class, timed
//!   by the log.
//! - `quarantine`: workers failing too often, kept from new leases on
//!   every node.
//! - `dead`: replay and purge of dead jobs, and requeue of stuck leases,
//!   acting only on the jobs a command names.
//! - `retention`: finished-job and idempotency records and their purge, so
//!   disk and memory stay flat.
//! - `audit`: the audit log's records and their purge.
//! - `erase`: a tenant's erasure, its jobs and then everything else that
//!   names it, in slices.
//! - `runs`: runs, their budgets and holds, and tenants' daily cost caps.
//! - `schedules`: the last slot each schedule fired, so a failover neither
//!   skips nor doubles one.
//! - `versions`: worker versions switched off.
//! - `canary`: canary rules and the canary-against-control results.
//! - `chaos`: chaos rules; the worker sessions inject them, never the log.
//! - `tally`: counts by queue and job type, recent work, and job times,
//!   for the metrics.
//! - `find`: the candidates of `drover jobs list`, from the index of the
//!   state asked for, so a page never scans the whole store.
//!
//! `tests` drives the machine with no runtime.
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
use crate::job::{
    AfterFailed, EventKind, Job, JobId, JobState, Lease, NewJob, RequeuedBy, PRIORITY_LOWEST,
};
use crate::policies::Policies;
use crate::spill::{Marker, SpillDir, SpillError, SPILL_MIN};

/// Payload bytes one [`Command::Held`] answer carries at most.
const HELD_ANSWER_BYTES: usize = 16 << 20;

/// Staged writes after which [`Machine::wants_commit`] asks for a commit.
const COMMIT_WRITES: usize = 1000;

/// A failure of the machine's own storage. Unlike a [`Refusal`] it is not an
/// answer to a request: the node cannot go on applying and must stop.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// sled failed to read or write the machine's tree.
    #[error("machine storage error: {0}")]
    Storage(#[from] sled::Error),
    /// A stored record does not decode: the data dir is damaged.
    #[error("machine record {key} is corrupt ({reason}); the data dir is damaged: restore it from a backup or let the node re-sync from its peers")]
    Corrupt {
        /// The record's key: its prefix and job id (`j/42`), else its bytes
        /// as text.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The tree is of a layout this build neither reads nor migrates.
    #[error("the job store has layout {found}, this drover reads layout {FORMAT}: it was written by another version of drover; run that version, or start this node with an empty data dir so it re-syncs from its peers")]
    Format {
        /// The layout mark found, as its bytes, or `1 (no layout mark)`.
        found: String,
    },
    /// A bug in the caller, reported rather than panicked on.
    #[error("a consistent read of the machine could not start: {0}")]
    Capture(&'static str),
    /// A payload kept in a file of its own could not be written or read.
    #[error(transparent)]
    Spill(#[from] SpillError),
}

/// Persisted with every commit; the applied index and the state it describes
/// are always written together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Index of the last log entry applied.
    pub applied_index: u64,
    /// Term of that entry.
    pub applied_term: u64,
    /// The latest time seen in the log; apply never lets time go backwards.
    pub last_at_ms: u64,
    /// The id the next enqueued job gets.
    pub next_id: JobId,
}

/// Why a lease was taken back, as `drover_jobs_requeued_total{reason}`
/// names it: its lease expired, an operator cleared it as stuck, it ran past
/// its timeout.
pub const REQUEUE_REASONS: [&str; 3] = ["expired", "stuck", "timeout"];

/// A lease that ended without a result, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEvent {
    /// `queue_timeout` (an expiry or a timeout) or `queue_requeued`.
    pub event: &'static str,
    /// What ended it, for people: `lease expired`, `execution timeout` or
    /// `requeued by an operator`.
    pub what: &'static str,
    /// The job whose lease ended.
    pub job_id: JobId,
    /// The job's queue.
    pub queue: String,
    /// The worker that held the lease; empty if the record named none.
    pub worker: String,
    /// The attempt the lease was for.
    pub attempt: u32,
}

/// Counters of events since this node opened its machine. They feed the
/// `_total` metrics; a restart resets them, as Prometheus counters expect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// New jobs (an idempotent duplicate is not one).
    pub enqueued: u64,
    /// Leases granted.
    pub dispatched: u64,
    /// Jobs that succeeded.
    pub completed: u64,
    /// Failed attempts, execution timeouts included, whatever came after them.
    pub failed: u64,
    /// Failures after which the job runs again.
    pub retried: u64,
    /// Leases that expired, putting their job back to ready.
    pub requeued: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Exhausted jobs moved to their type's `on_exhausted` queue.
    pub escalated: u64,
    /// Leases an operator took back (`drover queues clear-stuck`).
    pub requeued_stuck: u64,
    /// Leases revoked at their execution timeout.
    pub timed_out: u64,
}

/// What the machine publishes after each applied range, for stats, metrics
/// and for workers waiting for ready jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineStats {
    /// Queues that lease nothing now: paused, or at their concurrency limit.
    pub blocked: BTreeSet<String>,
    /// Queues that lease nothing.
    pub paused: BTreeSet<String>,
    /// Queues that take no new jobs.
    pub draining: BTreeSet<String>,
    /// Tenants whose jobs are not leased.
    pub paused_tenants: BTreeSet<String>,
    /// Tenants whose new jobs are refused.
    pub draining_tenants: BTreeSet<String>,
    /// Leases past their queue's sla, by queue and priority (1 to 5).
    pub sla_missed: BTreeMap<String, [u64; 5]>,
    /// Leases taken back without a result, by queue and why (see
    /// [`REQUEUE_REASONS`]).
    pub requeued: BTreeMap<String, [u64; 3]>,
    /// Dead jobs by queue and last error class.
    pub dead_by_class: BTreeMap<String, BTreeMap<String, u64>>,
    /// Circuit breakers that are not closed, or closed with failures in
    /// their window.
    pub breakers: BTreeMap<breaker::Scope, breaker::Breaker>,
    /// Workers kept from new leases.
    pub quarantined: BTreeMap<String, quarantine::Quarantined>,
    /// The policies in force, for the sessions' own checks (quarantine).
    #[serde(skip)]
    pub policies: Arc<Policies>,
    /// Budget counters, runs over budget, tenants over their daily cap.
    pub budgets: runs::BudgetStats,
    /// Index of the last log entry applied.
    pub applied_index: u64,
    /// Log time of the last entry applied, in ms since the epoch.
    pub last_at_ms: u64,
    /// Jobs of each queue by state; finished ones until retention removes them.
    pub queues: BTreeMap<String, QueueCounts>,
    /// Event counters since this node opened its machine.
    pub totals: Totals,
    /// Queue -> job type -> event counts.
    pub by_type: BTreeMap<String, BTreeMap<String, tally::TypeCounts>>,
    /// Each queue's window of recent work (read it with
    /// [`tally::flow_at`] at the reader's time).
    #[serde(skip)]
    pub flow: BTreeMap<String, crate::window::Sliding<3>>,
    /// When each queue's longest-waiting ready job became ready (ms).
    pub oldest_ready: BTreeMap<String, u64>,
    /// Worker versions switched off.
    pub version_switches: BTreeSet<crate::command::VersionSwitch>,
    /// When each worker version was first and last seen leasing (log
    /// time, to the minute).
    pub versions_seen: BTreeMap<String, versions::Seen>,
    /// Canary rules by queue.
    pub canaries: BTreeMap<String, crate::command::CanaryRule>,
    /// Each canary queue's (canary, control) results.
    pub canary_arms: BTreeMap<String, canary::Arms>,
    /// Faults to inject, by queue.
    pub chaos: BTreeMap<String, crate::command::ChaosRule>,
    /// Each queue's ready jobs held back, by reason and scope (queues with
    /// none are left out); see [`blocked`].
    pub blocked_jobs: BTreeMap<String, Vec<blocked::Blocked>>,
}

/// The state machine: applies committed entries to its sled tree and keeps
/// the in-memory indexes scheduling needs. The driver owns it; the APIs read
/// through a [`JobReader`].
pub struct Machine {
    tree: sled::Tree,
    /// Where payloads of [`SPILL_MIN`] bytes or more go; None keeps them
    /// in the tree (a machine opened for tests or tools).
    files: Option<SpillDir>,
    /// The same tree and files, for readers; swapped when a snapshot is
    /// installed.
    shared: Arc<RwLock<reader::Committed>>,
    /// What the log last set (`P`); defaults until then. Apply reads these,
    /// never a node's own config.
    policies: Arc<Policies>,
    /// The log has set them (a `P` record exists).
    policies_set: bool,
    /// The index of the last SetPolicies applied since open (0: none), so
    /// the driver can tell that the cluster's policies were set after it
    /// asked for its own.
    policies_index: u64,
    /// Recurring jobs' last slots and pauses (`Z`).
    schedules: schedules::Schedules,
    /// Paused and draining queues (`C`).
    controls: controls::Controls,
    /// Per-key limits: leases by key, rate states, parked jobs.
    limits: limits::KeyLimits,
    /// Circuit breakers by (queue, tenant, class) (`K`).
    breakers: BTreeMap<breaker::Scope, breaker::Breaker>,
    meta: Meta,
    queues: BTreeMap<String, QueueIndex>,
    /// (run_at, id) of scheduled jobs.
    scheduled: BTreeSet<(u64, JobId)>,
    /// (lease deadline, id) of leased jobs.
    leases: BTreeSet<(u64, JobId)>,
    /// (execution deadline, id) of leased jobs under a timeout, and each
    /// job's deadline; derived from the records and the policies.
    exec_deadlines: BTreeSet<(u64, JobId)>,
    exec_of: HashMap<JobId, u64>,
    /// What the last applied entries did to leases, for the driver's log
    /// (`queue_timeout`, `queue_requeued`); not state.
    lease_events: Vec<LeaseEvent>,
    /// Leased jobs whose payload file could not be read here (job id, why),
    /// for the driver's log; not state: another node may read its copy.
    unreadable: Vec<(JobId, String)>,
    /// Dead jobs by (queue, last error class), for the dead-letter view.
    dead_classes: BTreeMap<(String, String), u64>,
    /// Leased jobs by the worker holding them, for [`Command::Held`].
    held_by: HashMap<String, BTreeSet<JobId>>,
    totals: Totals,
    /// Leases past their queue's sla, by queue and priority, since this
    /// node opened its machine (counters, like `totals`).
    sla_missed: BTreeMap<String, [u64; 5]>,
    /// Leases taken back without a result, by queue and reason, since this
    /// node opened its machine (counters).
    requeued: BTreeMap<String, [u64; 3]>,
    /// Counters by queue and job type, recent work, observed times.
    tally: tally::Tally,
    /// Worker versions switched off, and for which jobs (`v`).
    switches: BTreeSet<crate::command::VersionSwitch>,
    /// When each worker version was first and last seen (`y`).
    versions_seen: BTreeMap<String, versions::Seen>,
    /// Canary rules by queue (`N`).
    canaries: BTreeMap<String, crate::command::CanaryRule>,
    /// Results of queues whose `shed_when` has a failure rate (`O`).
    shed_results: BTreeMap<String, shedding::Results>,
    /// The version each lease of a canary queue went to, until it ends
    /// (memory only: a lease in flight across a restart is not counted).
    lease_versions: HashMap<(JobId, u32), String>,
    /// Each canary queue's (canary, control) results since its rule was
    /// set or changed (memory only, like the other counters).
    canary_arms: BTreeMap<String, canary::Arms>,
    /// Faults injected by queue (`c`).
    chaos: BTreeMap<String, crate::command::ChaosRule>,
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
    /// Workers kept from new leases (`Q` records).
    quarantined: BTreeMap<String, quarantine::Quarantined>,
    /// Held runs, capped tenants, budget counters.
    runs: runs::Runs,
    /// Waiting jobs by the unfinished job they wait for (`E` records).
    dependents: BTreeMap<JobId, BTreeSet<JobId>>,
    /// Jobs that finished in the command being applied, with how: their
    /// waiters move on after it.
    dependencies_due: Vec<(JobId, JobState)>,
    /// The tree keeps clock changes apart from the clocks' records (layout
    /// 4; see `fair_clocks`).
    clock_log: bool,
}

/// Reads the `P` record. One an earlier drover wrote (before policies were
/// JSON) reads as none set: the leader then proposes its config's again,
/// and every node reads the same bytes alike, so they stay equal.
fn read_policies(bytes: &[u8]) -> Option<Policies> {
    Policies::from_record(bytes).ok()
}

impl Machine {
    /// Opens the machine on its tree and rebuilds the in-memory indexes from
    /// the job records.
    pub fn open(tree: sled::Tree) -> Result<Machine, MachineError> {
        Machine::open_with(tree, None)
    }

    /// Opens the machine on its tree, with large payloads in `files` (see
    /// [`crate::spill`]), and removes any file there no record names: one
    /// written before a crash whose record never became durable.
    pub fn open_spilling(tree: sled::Tree, files: SpillDir) -> Result<Machine, MachineError> {
        let mut spilled = std::collections::HashSet::new();
        for item in tree.scan_prefix([SPILLED]) {
            let (k, _) = item?;
            spilled.insert(job_key_id(&k)?);
        }
        files.sweep(|id, name| name == 0 && spilled.contains(&id))?;
        Machine::open_with(tree, Some(files))
    }

    fn open_with(tree: sled::Tree, files: Option<SpillDir>) -> Result<Machine, MachineError> {
        check_format(&tree)?;
        let (policies, policies_set) = match tree.get(POLICIES_KEY)? {
            Some(bytes) => match read_policies(&bytes) {
                Some(p) => (p, true),
                None => (Policies::default(), false),
            },
            None => (Policies::default(), false),
        };
        let schedules = match tree.get(SCHEDULES_KEY)? {
            Some(bytes) => decode(SCHEDULES_KEY, &bytes)?,
            None => schedules::Schedules::default(),
        };
        let controls = match tree.get(CONTROLS_KEY)? {
            Some(bytes) => decode(CONTROLS_KEY, &bytes)?,
            None => controls::Controls::default(),
        };
        let meta = match tree.get(META_KEY)? {
            Some(bytes) => decode(META_KEY, &bytes)?,
            None => Meta {
                next_id: 1,
                ..Meta::default()
            },
        };
        let finished_bytes = Machine::load_finished_bytes(&tree)?;
        let mut machine = Machine {
            shared: Arc::new(RwLock::new(reader::Committed {
                tree: tree.clone(),
                files: files.clone(),
            })),
            tree,
            files,
            policies: Arc::new(policies),
            policies_set,
            policies_index: 0,
            schedules,
            controls,
            limits: limits::KeyLimits::default(),
            breakers: BTreeMap::new(),
            meta,
            queues: BTreeMap::new(),
            scheduled: BTreeSet::new(),
            leases: BTreeSet::new(),
            held_by: HashMap::new(),
            dead_classes: BTreeMap::new(),
            exec_deadlines: BTreeSet::new(),
            exec_of: HashMap::new(),
            lease_events: Vec::new(),
            unreadable: Vec::new(),
            totals: Totals::default(),
            sla_missed: BTreeMap::new(),
            requeued: BTreeMap::new(),
            tally: tally::Tally::default(),
            switches: BTreeSet::new(),
            versions_seen: BTreeMap::new(),
            canaries: BTreeMap::new(),
            shed_results: BTreeMap::new(),
            lease_versions: HashMap::new(),
            canary_arms: BTreeMap::new(),
            chaos: BTreeMap::new(),
            staged: BTreeMap::new(),
            capture: None,
            finished_bytes,
            finishing: Vec::new(),
            audit_seq: 0,
            quarantined: BTreeMap::new(),
            runs: runs::Runs::default(),
            dependents: BTreeMap::new(),
            dependencies_due: Vec::new(),
            clock_log: false,
        };
        machine.load_limits()?;
        machine.load_breakers()?;
        machine.load_quarantined()?;
        machine.load_version_switches()?;
        machine.load_canaries()?;
        machine.load_shed_results()?;
        machine.load_chaos()?;
        machine.load_runs()?;
        machine.load_dependents()?;
        for item in machine.tree.scan_prefix([JOB]) {
            let (k, v) = item?;
            machine.place(&decode_job(&k, &v)?);
        }
        machine.load_clocks()?;
        Ok(machine)
    }

    /// How long jobs waited and ran, as the entries applied since the last
    /// call saw it.
    pub fn take_observations(&mut self) -> Vec<tally::Observation> {
        self.tally.take_observations()
    }

    /// What the entries applied since the last call did to leases.
    pub fn take_lease_events(&mut self) -> Vec<LeaseEvent> {
        std::mem::take(&mut self.lease_events)
    }

    /// Jobs leased since the last call whose payload could not be read on
    /// this node (job id, why): they were left out of the lease's answer.
    pub fn take_unreadable_payloads(&mut self) -> Vec<(JobId, String)> {
        std::mem::take(&mut self.unreadable)
    }

    /// Counts a lease of `queue` taken back for reason `REQUEUE_REASONS[why]`.
    pub(super) fn count_requeue(&mut self, queue: &str, why: usize) {
        match self.requeued.get_mut(queue) {
            Some(counts) => counts[why] += 1,
            None => {
                let mut counts = [0; 3];
                counts[why] = 1;
                self.requeued.insert(queue.to_string(), counts);
            }
        }
    }

    /// The applied index and term, log time and next job id, as of the last
    /// entry applied (committed or still staged).
    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// A reader of committed job records that needs no access to the machine.
    pub fn reader(&self) -> JobReader {
        JobReader {
            committed: self.shared.clone(),
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
        Ok(match &self.files {
            // Files dropped from now on stay until the read ends.
            Some(files) => reader.with_files(files.clone()),
            None => reader,
        })
    }

    /// Moves the machine onto `tree` (a snapshot just loaded into it) and
    /// rebuilds the indexes from it. Readers follow; event totals carry on.
    pub fn replace_tree(
        &mut self,
        tree: sled::Tree,
        files: Option<SpillDir>,
    ) -> Result<(), MachineError> {
        if let Some(c) = self.capture.take() {
            c.cancel();
        }
        let mut fresh = match files.clone() {
            Some(files) => Machine::open_spilling(tree.clone(), files)?,
            None => Machine::open(tree.clone())?,
        };
        fresh.totals = self.totals;
        fresh.sla_missed = std::mem::take(&mut self.sla_missed);
        fresh.requeued = std::mem::take(&mut self.requeued);
        fresh.tally = std::mem::take(&mut self.tally);
        fresh.canary_arms = std::mem::take(&mut self.canary_arms);
        // A snapshot may carry other policies, set at its index.
        fresh.policies_index = fresh.meta.applied_index;
        fresh.shared = self.shared.clone();
        *fresh.shared.write().unwrap_or_else(|e| e.into_inner()) =
            reader::Committed { tree, files };
        *self = fresh;
        Ok(())
    }

    /// The policies in effect, as the log set them.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The index of the last SetPolicies applied since open (0: none).
    pub fn policies_index(&self) -> u64 {
        self.policies_index
    }

    /// Whether the log has set policies yet (until then the defaults).
    pub fn policies_set(&self) -> bool {
        self.policies_set
    }

    /// What the driver publishes after each applied range: counts, controls,
    /// breakers, budgets and rules, for the APIs, metrics and waiting workers.
    pub fn stats(&self) -> MachineStats {
        let blocked_jobs = self.blocked_jobs();
        // Queues a lease would find nothing in however many are ready, so
        // workers do not propose leases in a loop while they stay so: paused,
        // at their concurrency limit, or every ready job held.
        let at_limit = self.queues.iter().filter_map(|(name, qi)| {
            let limit = self.policies.concurrency_limit(name)?;
            (qi.counts.leased >= limit).then(|| name.clone())
        });
        let all_held = blocked_jobs.iter().filter_map(|(name, b)| {
            let ready = self.queues.get(name)?.counts.ready_total();
            (b.iter().map(|b| b.jobs).sum::<u64>() >= ready).then(|| name.clone())
        });
        let at_limit = at_limit.chain(all_held);
        MachineStats {
            blocked: self
                .controls
                .paused
                .iter()
                .cloned()
                .chain(at_limit)
                .collect(),
            paused: self.controls.paused.clone(),
            draining: self.controls.draining.clone(),
            paused_tenants: self.controls.paused_tenants.clone(),
            draining_tenants: self.controls.draining_tenants.clone(),
            sla_missed: self.sla_missed.clone(),
            requeued: self.requeued.clone(),
            dead_by_class: {
                let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
                for ((q, c), n) in &self.dead_classes {
                    out.entry(q.clone()).or_default().insert(c.clone(), *n);
                }
                out
            },
            breakers: self.breakers.clone(),
            quarantined: self.quarantined.clone(),
            policies: self.policies.clone(),
            budgets: self.run_stats(),
            applied_index: self.meta.applied_index,
            last_at_ms: self.meta.last_at_ms,
            queues: self
                .queues
                .iter()
                .map(|(name, qi)| (name.clone(), qi.counts.clone()))
                .collect(),
            totals: self.totals,
            by_type: self.tally.counts().clone(),
            flow: self.tally.flows(),
            version_switches: self.switches.clone(),
            versions_seen: self.versions_seen.clone(),
            canaries: self.canary_rules(),
            canary_arms: self.canary_arms.clone(),
            chaos: self.chaos.clone(),
            blocked_jobs,
            oldest_ready: self
                .queues
                .iter()
                .filter_map(|(name, qi)| Some((name.clone(), qi.ready.oldest_since()?)))
                .collect(),
        }
    }

    fn set_policies(&mut self, now: u64, policies: &Policies) -> Result<Outcome, MachineError> {
        self.policies = Arc::new(policies.clone());
        self.policies_set = true;
        self.policies_index = self.meta.applied_index;
        self.put(POLICIES_KEY.to_vec(), self.policies.to_record());
        self.release_all(now);
        self.reindex_timeouts()?;
        self.rejudge_budgets(now)?;
        Ok(Outcome::Noop)
    }

    /// Applies one committed entry: each of its commands in order, with one
    /// outcome each. Must be followed, after the last entry of the range, by
    /// [`Machine::commit`]; the caller may also commit after any earlier
    /// entry (see [`Machine::wants_commit`]), never within one.
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
                let outcome = self
                    .apply_command(now, c)
                    .and_then(|o| self.release_dependents(now).map(|()| o));
                self.index_finished(now);
                self.release_freed();
                outcome
            })
            .collect()
    }

    fn apply_command(&mut self, now: u64, command: &Command) -> Result<Outcome, MachineError> {
        Ok(match command {
            Command::Enqueue { jobs } => match self.admit(now, jobs) {
                Ok(()) => Outcome::Enqueued(self.enqueue(now, jobs)?),
                Err(refusal) => Outcome::Rejected(refusal),
            },
            Command::EnqueueReplay(r) => self.enqueue_replay(now, r)?,
            Command::Lease {
                worker,
                queues,
                max,
            } => Outcome::Leased(self.lease(now, worker, None, queues, *max)?),
            Command::LeaseAs {
                worker,
                version,
                queues,
                max,
            } => {
                self.version_seen(now, version);
                Outcome::Leased(self.lease(now, worker, Some(version), queues, *max)?)
            }
            Command::SwitchVersion(crate::command::SwitchVersion { switch, enabled }) => {
                self.switch_version(switch, *enabled)
            }
            Command::SetCanary(crate::command::SetCanary { queue, rule }) => {
                self.set_canary(queue, rule.as_ref())
            }
            Command::SetChaos(crate::command::SetChaos { queue, rule }) => {
                self.set_chaos(queue.as_deref(), rule.as_ref())
            }
            Command::Heartbeat { leases, .. } => Outcome::Acks(
                leases
                    .iter()
                    .map(|b| self.heartbeat(now, b))
                    .collect::<Result<_, _>>()?,
            ),
            Command::Complete { items, .. } => Outcome::Acks(
                items
                    .iter()
                    .map(|c| self.complete(now, c, None))
                    .collect::<Result<_, _>>()?,
            ),
            Command::Fail { items, .. } => Outcome::Acks(
                items
                    .iter()
                    .map(|f| self.fail(now, f, None))
                    .collect::<Result<_, _>>()?,
            ),
            Command::CompleteWithUsage { items, .. } => Outcome::Acks(
                items
                    .iter()
                    .map(|(c, u)| self.complete(now, c, Some(u)))
                    .collect::<Result<_, _>>()?,
            ),
            Command::FailWithUsage { items, .. } => Outcome::Acks(
                items
                    .iter()
                    .map(|(f, u)| self.fail(now, f, Some(u)))
                    .collect::<Result<_, _>>()?,
            ),
            Command::Cancel(crate::command::Cancel { id }) => {
                Outcome::Cancelled(self.cancel(now, *id)?)
            }
            Command::Tick => self.tick(now)?,
            Command::RenewLeases => self.renew_leases(now)?,
            Command::Held { worker } => Outcome::Leased(self.held(worker)?),
            Command::Purge { retention, limit } => self.purge(now, retention, *limit)?,
            Command::Audit { record, command } => self.audit(now, record, command.as_ref())?,
            Command::PurgeAudit { keep_ms, limit } => self.purge_audit(now, *keep_ms, *limit)?,
            Command::SetPolicies { policies } => self.set_policies(now, policies)?,
            Command::SetPoliciesFrom(from) => {
                // The first set is the cluster taking its config, not a
                // change of what it applied: no record.
                let changes = match self.policies_set {
                    true => self.policies.changes(&from.policies),
                    false => Vec::new(),
                };
                let out = self.set_policies(now, &from.policies)?;
                if !changes.is_empty() {
                    let record = audit::policies_record(from.node, &from.file_sha256, &changes);
                    self.audit(now, &record, None)?;
                }
                out
            }
            Command::Control(crate::command::Control { scope, action }) => {
                self.control(scope, *action)
            }
            Command::Fire {
                schedule,
                slot_ms,
                enqueue,
            } => self.fire(now, schedule, *slot_ms, *enqueue)?,
            Command::Schedule(crate::command::Schedule { schedule, action }) => {
                self.schedule_action(now, schedule, *action)?
            }
            Command::PurgeQueue {
                queue,
                filter,
                limit,
            } => self.purge_queue(now, queue, filter, *limit)?,
            Command::Replay(crate::command::Replay { ids }) => self.replay(now, ids)?,
            Command::PurgeDead(crate::command::PurgeDead { ids }) => self.purge_dead(ids)?,
            Command::PurgeJobs(crate::command::PurgeJobs { queue, ids }) => {
                self.purge_jobs(now, queue, ids)?
            }
            Command::Requeue(crate::command::Requeue { leases, reason }) => {
                self.requeue(now, leases, reason)?
            }
            Command::ResetBreakers(crate::command::ResetBreakers { scope }) => {
                self.reset_breakers(scope.as_ref())
            }
            Command::Quarantine {
                worker,
                for_ms,
                completed,
                failed,
            } => self.quarantine(now, worker, *for_ms, *completed, *failed),
            Command::ReleaseWorker(crate::command::ReleaseWorker { worker }) => {
                self.release_worker(worker)
            }
            Command::OverrideRun(crate::command::OverrideRun {
                tenant,
                run,
                limits,
            }) => self.override_run(now, tenant, run, **limits)?,
            Command::SetTenantBudgets(crate::command::SetTenantBudgets { tenant, budgets }) => {
                self.set_tenant_budgets(now, tenant, **budgets)?
            }
            Command::CancelRun(crate::command::CancelRun {
                tenant,
                run,
                after,
                limit,
            }) => self.cancel_run(now, tenant, run, *after, *limit)?,
            Command::EraseTenantJobs(crate::command::EraseTenantJobs {
                tenant,
                after,
                limit,
            }) => self.erase_tenant_jobs(now, tenant, *after, *limit)?,
            Command::EraseTenant(crate::command::EraseTenant { tenant, limit }) => {
                self.erase_tenant(tenant, *limit)?
            }
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
        // First, so a running capture saves the keys the batch really writes.
        let removed = match &self.files {
            Some(files) => spill_staged(files, &self.tree, &mut self.staged)?,
            None => Vec::new(),
        };
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
        if let Some(files) = &self.files {
            for id in removed {
                files.remove_later(id, 0);
            }
        }
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
        Ok(all
            .iter()
            .fold(0u64, |d, (k, v)| d.wrapping_add(digest_record(k, v))))
    }
}

/// Writes the large payloads among `staged` to their files (synced before
/// their markers are staged) and stages each marker under `q`+id in the
/// payload's place; stages the removal of the marker of every spilled
/// payload being removed, and answers their ids: their files may go only
/// once that removal is written (and then flushed).
fn spill_staged(
    files: &SpillDir,
    tree: &sled::Tree,
    staged: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Result<Vec<JobId>, MachineError> {
    let mut large = Vec::new();
    let mut removed = Vec::new();
    for (k, v) in staged.iter() {
        if k.first() != Some(&PAYLOAD) {
            continue;
        }
        match v {
            Some(v) if v.len() >= SPILL_MIN => large.push((job_key_id(k)?, k.clone())),
            Some(_) => {}
            None => {
                if tree.contains_key(with_prefix(SPILLED, k))? {
                    removed.push(job_key_id(k)?);
                }
            }
        }
    }
    for &id in &removed {
        staged.insert(key(SPILLED, id).to_vec(), None);
    }
    if large.is_empty() {
        return Ok(removed);
    }
    let markers = {
        let values: Vec<(u64, u64, &[u8])> = large
            .iter()
            .filter_map(|(id, k)| staged.get(k)?.as_deref().map(|v| (*id, 0, v)))
            .collect();
        files.write(&values)?
    };
    for ((id, k), marker) in large.into_iter().zip(markers) {
        staged.remove(&k);
        staged.insert(key(SPILLED, id).to_vec(), Some(marker.encode()));
    }
    Ok(removed)
}

pub mod audit;
pub mod blocked;
pub mod breaker;
pub mod canary;
pub mod capture;
mod chaos;
mod controls;
mod dead;
mod dependencies;
mod erase;
mod fair_clocks;
pub mod find;
mod indexes;
mod jobs;
mod keys;
mod leases;
pub mod limits;
mod migrate;
pub mod quarantine;
mod reader;
mod retention;
mod retry;
pub mod runs;
mod scheduler;
pub mod schedules;
mod shedding;
mod staged;
pub mod tally;
pub mod versions;

pub use indexes::QueueCounts;
use indexes::QueueIndex;
use keys::*;
pub use keys::{check_layout, stored_form, INLINE_PAYLOAD_MAX};
pub use reader::{JobHold, JobReader};
pub use retry::jitter;

#[cfg(test)]
mod tests;
