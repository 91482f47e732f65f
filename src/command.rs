//! Commands are the only way state changes: they go into raft log entries,
//! applied in log order by the state machine on every node. Outcomes are
//! what apply returns to the request that proposed the command.
//!
//! Variants carry batches (many completions, many heartbeats) so a busy worker
//! costs one log entry per round, not one per job.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::job::{Job, JobId, JobState, NewJob, Progress};

/// The log entry format this build writes and applies: a normal entry's
/// raft `context` holds its format as one byte (an empty context is format
/// 1, written before formats were numbered). A change to [`LogEntry`] or
/// [`Command`] that an older build could not apply gets the next number;
/// a leader writes it only once every voter applies it (each peer names
/// its newest format in its `PeerHeader`), so a cluster can be upgraded
/// one node at a time.
///
/// Format 2 added [`Command::LeaseAs`], [`Command::SwitchVersion`],
/// [`Command::SetCanary`] and their [`Audited`] forms. Format 3 added
/// [`Command::RenewLeases`]. Format 4 added [`Command::SetPoliciesFrom`],
/// and its first entry moves every node's tree to the layout that keeps
/// each lease's clock changes apart, which a drover that writes format 3
/// would misread. Format 5 added [`Command::PurgeJobs`].
pub const ENTRY_VERSION: u8 = 5;

/// The format of a normal entry, from its raft `context`.
pub fn entry_version(context: &[u8]) -> u8 {
    context.first().copied().unwrap_or(1).max(1)
}

/// Kept here too for code that named it here; it is the wire's.
pub use crate::wire::PROTOCOL_VERSION;

/// One raft log entry's payload: every command the leader took in one turn
/// of its loop, applied in order at one time. One entry per turn instead of
/// per command is group commit reaching into the log: one record to write,
/// send, decode and compact for many requests. `at_ms` is stamped by the
/// leader when it proposes; the machine never reads a clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The leader's clock when it proposed the entry (ms since the epoch):
    /// the time its commands apply at (never before the previous entry's).
    pub at_ms: u64,
    /// The commands, applied in this order, one outcome each.
    pub commands: Vec<Command>,
}

/// A change of state, as the log carries it. Variants are numbered in the
/// log by position: a new one goes last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Adds new jobs, all or none: one refused (a drain, a depth limit, a
    /// budget, a bad dependency) refuses the batch as [`Outcome::Rejected`];
    /// else answered as [`Outcome::Enqueued`], one per job in order.
    Enqueue {
        /// The jobs, validated.
        jobs: Vec<NewJob>,
    },
    /// Lease up to `max` ready jobs from `queues` to `worker`.
    Lease {
        /// The worker's id: the leases are held in its name.
        worker: String,
        /// The queues to take from, weighed together: the best pick of any
        /// goes first.
        queues: Vec<String>,
        /// Most jobs to lease; fewer when fewer are ready.
        max: u32,
    },
    /// Extends each lease to a full heartbeat timeout from now and keeps
    /// the progress it reports; answered as [`Outcome::Acks`], one per lease
    /// (a lease no longer held at that attempt is refused as stale).
    Heartbeat {
        /// The worker that sent them; the attempts, not this, fence the leases.
        worker: String,
        /// The leases to extend.
        leases: Vec<LeaseBeat>,
    },
    /// Ends each lease with success and keeps the job's result; answered as
    /// [`Outcome::Acks`], one per item. A result sent again for the same
    /// attempt is acknowledged and changes nothing.
    Complete {
        /// The worker that sent them; the attempts, not this, fence the leases.
        worker: String,
        /// One per job finished.
        items: Vec<Completion>,
    },
    /// Ends each lease with a failure: the job is retried, escalated or dead
    /// as its type's retry policy says; answered as [`Outcome::Acks`], one
    /// per item. A failure sent again for the same attempt changes nothing.
    Fail {
        /// The worker that sent them; the attempts, not this, fence the leases.
        worker: String,
        /// One per job that failed.
        items: Vec<Failure>,
    },
    /// Cancels a job that has not finished; answered as
    /// [`Outcome::Cancelled`] with the state it was in.
    Cancel(Cancel),
    /// Proposed by the leader when something is due: expires leases not
    /// extended in time and makes delayed jobs ready.
    Tick,
    /// The jobs leased to `worker` now (answered as [`Outcome::Leased`];
    /// changes nothing). A worker's session asks when it may have missed
    /// leases the log gave it: after it registers (its previous session may
    /// have ended with a lease on the way) and after a lease proposal whose
    /// outcome it could not learn. Appended last: variants are numbered in
    /// the log by position.
    Held {
        /// The worker whose leases are asked for.
        worker: String,
    },
    /// Proposed by the leader when finished jobs are past their retention:
    /// removes up to `limit` of them, oldest first, and idempotency records
    /// past their TTL. The bounds travel in the command, so every node
    /// purges exactly the same whatever its own config says.
    Purge {
        /// How long each kind of record is kept.
        retention: Retention,
        /// Most jobs and idempotency records removed by this one command.
        limit: u32,
    },
    /// A change made through the admin API, and who made it: `command` is
    /// applied (when there is one; membership changes and snapshots are not
    /// machine commands and are recorded after they happened) and the
    /// record is written with its outcome, in the same batch.
    Audit {
        /// Who did what, and why; the machine fills in its `outcome`.
        record: AuditRecord,
        /// The machine command the change is, if it is one.
        command: Option<Audited>,
    },
    /// Proposed by the leader: removes up to `limit` audit records older
    /// than `keep_ms` (`jobs.audit_retention`).
    PurgeAudit {
        /// Age (ms) past which a record goes.
        keep_ms: u64,
        /// Most records removed by this one command.
        limit: u32,
    },
    /// The policies every node applies from now on (the leader's config,
    /// or an admin's change).
    SetPolicies {
        /// The policies, whole: they replace those in effect.
        #[serde(with = "crate::policies::as_json")]
        policies: crate::policies::Policies,
    },
    /// Pause, drain or resume queues (sent wrapped in an audit record).
    Control(Control),
    /// Proposed by the leader when a schedule's slot is due: marks the slot
    /// fired and, with `enqueue`, enqueues the schedule's job. A slot at or
    /// before the last one fired changes nothing, so a slot proposed twice
    /// (a failover) fires once.
    Fire {
        /// The schedule's name in the policies.
        schedule: String,
        /// The slot (ms since the epoch).
        slot_ms: u64,
        /// Whether the slot enqueues the job; false only marks a slot missed by
        /// more than the grace as passed.
        enqueue: bool,
    },
    /// Pause or resume a schedule, or run it now (sent wrapped in an audit
    /// record).
    Schedule(Schedule),
    /// Cancels up to `limit` of a queue's waiting jobs that match (one
    /// slice of `drover queues purge`; the API sends slices until done).
    PurgeQueue {
        /// The queue whose waiting jobs are cancelled.
        queue: String,
        /// Which of its waiting jobs.
        filter: PurgeFilter,
        /// Most jobs this slice cancels.
        limit: u32,
    },
    /// Runs these dead jobs again (those still dead): same payload, a new
    /// retry count, the timeline kept.
    Replay(Replay),
    /// Removes these dead jobs (those still dead) with their payloads and
    /// results.
    PurgeDead(PurgeDead),
    /// Takes back these leases (those still held at that attempt) and
    /// makes their jobs ready again: `drover queues clear-stuck`.
    Requeue(Requeue),
    /// Closes one circuit breaker (queue, tenant, class), or all of them.
    ResetBreakers(ResetBreakers),
    /// Keeps `worker` from new leases for at least `for_ms` (proposed by
    /// the node it is connected to when its failure rate crossed its
    /// queues' `quarantine_failure_rate`; `completed` and `failed` are the
    /// counts that decided it).
    Quarantine {
        /// The worker's id.
        worker: String,
        /// How long (ms) it must stay away: reconnecting after it lifts the
        /// quarantine.
        for_ms: u64,
        /// Its completions in the window that decided it.
        completed: u64,
        /// Its failures in the window that decided it.
        failed: u64,
    },
    /// Lets a quarantined worker lease again.
    ReleaseWorker(ReleaseWorker),
    /// [`Command::Complete`] with what each job cost (used when any did;
    /// a variant of its own, so entries of earlier drovers still decode).
    CompleteWithUsage {
        /// The worker that sent them; the attempts, not this, fence the leases.
        worker: String,
        /// Each completion with what its job used.
        items: Vec<(Completion, Usage)>,
    },
    /// [`Command::Fail`] with what each job cost.
    FailWithUsage {
        /// The worker that sent them; the attempts, not this, fence the leases.
        worker: String,
        /// Each failure with what its job used.
        items: Vec<(Failure, Usage)>,
    },
    /// Raises (or sets) one run's limits and releases its held jobs if it
    /// is under them now (sent wrapped in an audit record, with the reason).
    OverrideRun(OverrideRun),
    /// A tenant's run limits and daily cap as an operator set them, in
    /// place of its config's (sent wrapped in an audit record).
    SetTenantBudgets(SetTenantBudgets),
    /// Cancels the unfinished jobs of a run among the `limit` after job
    /// `after` (one slice of `drover runs cancel`).
    CancelRun(CancelRun),
    /// [`Command::Lease`] for a worker of `version`: jobs a version switch
    /// keeps from that version are left for other workers. Format 2.
    LeaseAs {
        /// The worker's id: the leases are held in its name.
        worker: String,
        /// The version the worker registered with.
        version: String,
        /// The queues to take from, weighed together.
        queues: Vec<String>,
        /// Most jobs to lease; fewer when fewer are ready.
        max: u32,
    },
    /// Stops (`enabled` false) or allows again leasing the jobs `switch`
    /// names to workers of its version (sent audited). Format 2.
    SwitchVersion(SwitchVersion),
    /// Sets the queue's canary rule, or ends it (None; sent audited).
    /// Format 2.
    SetCanary(SetCanary),
    /// Sets the faults injected into a queue's leases and results, or ends
    /// them (None); `queue` None with `rule` None ends every queue's (sent
    /// audited). Format 2.
    SetChaos(SetChaos),
    /// Proposed by a new leader first: every live lease gets a full
    /// heartbeat window from now, as etcd renews leases on a leader
    /// change, so no healthy worker loses its job to the time the cluster
    /// had no leader to heartbeat to. Format 3.
    RenewLeases,
    /// Enqueues a run's jobs again as a new run the machine names: `into`
    /// if no such run exists, else (None) the first free
    /// `RUN-replay-N`, chosen where the log is applied so two replays at
    /// once never share a run. Answered as [`Outcome::EnqueuedRun`].
    /// Format 3.
    EnqueueReplay(EnqueueReplay),
    /// [`Command::SetPolicies`] with where they came from: the machine
    /// also writes an audit record of every value they change. Format 4.
    SetPoliciesFrom(Box<PoliciesFrom>),
    /// Erases a tenant's jobs among the `limit` job records after job
    /// `after`: unfinished ones are cancelled first (their waiters follow),
    /// then each goes with its payload, result, idempotency record and run
    /// index. One slice of `drover tenants erase`; the API sends slices
    /// until none is left, then [`Command::EraseTenant`]. Format 4.
    EraseTenantJobs(EraseTenantJobs),
    /// Erases what is left of a tenant once its jobs are gone: its runs
    /// (at most `limit` of them a slice), held runs, daily cost, budgets,
    /// breakers, fair-share clocks, pause and drain, and the version
    /// switches that name it. The API sends slices until none is left,
    /// then an audit record of the whole erasure. Format 4.
    EraseTenant(EraseTenant),
    /// Cancels these jobs of a queue that still wait (ready or
    /// scheduled): a slice of `drover queues purge --type`, whose filter
    /// the API applied to a listing (job types have no index the machine
    /// could filter a slice on). Format 5.
    PurgeJobs(PurgeJobs),
}

/// The payload of [`Command::PurgeJobs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeJobs {
    /// The queue they must still be in.
    pub queue: String,
    /// The jobs; those no longer waiting in the queue are skipped.
    pub ids: Vec<JobId>,
}

/// The payload of [`Command::EraseTenantJobs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EraseTenantJobs {
    /// The tenant whose jobs are erased.
    pub tenant: String,
    /// The slice starts after this job id (0: at the first job).
    pub after: JobId,
    /// Most job records (of any tenant) this slice looks at.
    pub limit: u32,
}

/// The payload of [`Command::EraseTenant`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EraseTenant {
    /// The tenant erased.
    pub tenant: String,
    /// Most runs this slice removes.
    pub limit: u32,
}

/// What [`Command::EraseTenant`] removed besides jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasedRecords {
    /// Runs (with their held state and job index).
    pub runs: u32,
    /// Circuit breakers of the tenant's scopes.
    pub breakers: u32,
    /// Queues whose fair-share clocks named the tenant.
    pub clocks: u32,
    /// Other records: daily cost, budgets set at run time, pause or
    /// drain, version switches naming the tenant.
    pub other: u32,
    /// The slice stopped at its limit: send another.
    pub more: bool,
}

/// The payload of [`Command::SetPoliciesFrom`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoliciesFrom {
    /// The policies, whole: they replace those in effect.
    #[serde(with = "crate::policies::as_json")]
    pub policies: crate::policies::Policies,
    /// The node whose config they are (the leader that proposed them).
    pub node: u64,
    /// The SHA-256 (hex) of that node's config file; empty for the
    /// embedded defaults.
    pub file_sha256: String,
}

/// The payload of [`Command::EnqueueReplay`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnqueueReplay {
    /// The tenant whose run is replayed.
    pub tenant: String,
    /// The run replayed.
    pub run: String,
    /// The new run's name, when the caller chose one.
    pub into: Option<String>,
    /// The copies, validated; each takes the new run's name.
    pub jobs: Vec<NewJob>,
}

/// Faults the nodes that allow chaos inject into a queue's worker streams.
/// They never touch the log: a dropped or revoked lease expires and its job
/// runs again; a failed result is a failure like any other.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChaosRule {
    /// Share of lease grants not sent to the worker (0 to 1).
    pub drop_leases: f64,
    /// Lease grants sent this much later.
    pub delay_ms: u64,
    /// Share of leases taken back (Cancel) right after they are sent.
    pub revoke: f64,
    /// Share of completions turned into failures of `fail_class`.
    pub fail: f64,
    /// The error class of those failures.
    pub fail_class: String,
}

pub use crate::policies::CanaryRule;

/// Which jobs a version switch keeps from which workers: those of `queue`
/// (every queue: None) and `tenant` (every tenant: None), from workers
/// that registered `version`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VersionSwitch {
    /// The worker version the jobs are kept from.
    pub version: String,
    /// Only this queue's jobs; None: every queue's.
    pub queue: Option<String>,
    /// Only this tenant's jobs; None: every tenant's.
    pub tenant: Option<String>,
}

impl VersionSwitch {
    /// Whether it keeps a job of `queue` and `tenant` from its version.
    pub fn covers(&self, queue: &str, tenant: &str) -> bool {
        self.queue.as_deref().is_none_or(|q| q == queue)
            && self.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    /// `v4`, `v4 in queue q`, `v4 for tenant t in queue q`.
    pub fn describe(&self) -> String {
        let mut s = format!("version {}", self.version);
        if let Some(t) = &self.tenant {
            s.push_str(&format!(" for tenant {t}"));
        }
        if let Some(q) = &self.queue {
            s.push_str(&format!(" in queue {q}"));
        }
        s
    }
}

/// What a worker reported one attempt of a job used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Millionths of a USD.
    pub cost_micros: u64,
    /// Named amounts (`tokens_in` = 1200).
    pub named: BTreeMap<String, u64>,
}

impl Usage {
    /// Whether the worker reported nothing: no cost, no named amounts.
    pub fn is_empty(&self) -> bool {
        self.cost_micros == 0 && self.named.is_empty()
    }
}

/// Which waiting jobs of a queue a purge cancels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeFilter {
    /// Ready or scheduled; None: both.
    pub state: Option<JobState>,
    /// Only this tenant's jobs; None: every tenant's.
    pub tenant: Option<String>,
    /// Only jobs enqueued at least this long ago.
    pub older_than_ms: Option<u64>,
}

/// What an operator does to a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleAction {
    /// Its slots pass without enqueueing its job.
    Pause,
    /// Its slots enqueue its job again.
    Resume,
    /// Enqueue its job now, outside its slots.
    Trigger,
}

impl ScheduleAction {
    /// The action's name, as the API and the audit log write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleAction::Pause => "pause",
            ScheduleAction::Resume => "resume",
            ScheduleAction::Trigger => "trigger",
        }
    }
}

/// The machine commands an audit record can carry: a closed list, so an
/// entry cannot nest audits (and its decoding cannot recurse).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Audited {
    /// Cancel a job.
    Cancel(Cancel),
    /// Pause, drain or resume queues.
    Control(Control),
    /// Pause, resume or trigger a schedule.
    Schedule(Schedule),
    /// Run dead jobs again.
    Replay(Replay),
    /// Remove dead jobs.
    PurgeDead(PurgeDead),
    /// Take back leases and make their jobs ready.
    Requeue(Requeue),
    /// Close one circuit breaker, or all.
    ResetBreakers(ResetBreakers),
    /// Let a quarantined worker lease again.
    ReleaseWorker(ReleaseWorker),
    /// Raise (or set) a run's limits.
    OverrideRun(OverrideRun),
    /// Set a tenant's run limits and daily cap.
    SetTenantBudgets(SetTenantBudgets),
    /// Cancel one slice of a run's unfinished jobs.
    CancelRun(CancelRun),
    /// Format 2.
    SwitchVersion(SwitchVersion),
    /// Format 2.
    SetCanary(SetCanary),
    /// Format 2.
    SetChaos(SetChaos),
}

/// The payload of [`Command::Cancel`], and of [`Audited::Cancel`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cancel {
    /// The job to cancel.
    pub id: JobId,
}

/// The payload of [`Command::Control`], and of [`Audited::Control`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Control {
    /// The queues (or the tenant) it applies to.
    pub scope: QueueScope,
    /// What it does to them.
    pub action: QueueAction,
}

/// The payload of [`Command::Schedule`], and of [`Audited::Schedule`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The schedule's name in the policies.
    pub schedule: String,
    /// What is done to it.
    pub action: ScheduleAction,
}

/// The payload of [`Command::Replay`], and of [`Audited::Replay`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    /// The jobs to run again; those not dead are skipped.
    pub ids: Vec<JobId>,
}

/// The payload of [`Command::PurgeDead`], and of [`Audited::PurgeDead`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeDead {
    /// The jobs to remove; those not dead are skipped.
    pub ids: Vec<JobId>,
}

/// The payload of [`Command::Requeue`], and of [`Audited::Requeue`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requeue {
    /// Each lease as (job, attempt); one not held at that attempt any
    /// more is skipped.
    pub leases: Vec<(JobId, u32)>,
    /// The operator's reason, written into each job's timeline.
    pub reason: String,
}

/// The payload of [`Command::ResetBreakers`], and of [`Audited::ResetBreakers`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResetBreakers {
    /// The breaker as (queue, tenant, error class); None: every breaker.
    pub scope: Option<(String, String, String)>,
}

/// The payload of [`Command::ReleaseWorker`], and of [`Audited::ReleaseWorker`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseWorker {
    /// The quarantined worker's id.
    pub worker: String,
}

/// The payload of [`Command::OverrideRun`], and of [`Audited::OverrideRun`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverrideRun {
    /// The run's tenant.
    pub tenant: String,
    /// The run's name.
    pub run: String,
    /// The new limits; those not set keep the run's own.
    pub limits: Box<crate::policies::Budgets>,
}

/// The payload of [`Command::SetTenantBudgets`], and of [`Audited::SetTenantBudgets`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetTenantBudgets {
    /// The tenant whose budgets they are.
    pub tenant: String,
    /// Its run limits and daily cap; those set go before its config's.
    pub budgets: Box<crate::policies::Budgets>,
}

/// The payload of [`Command::CancelRun`], and of [`Audited::CancelRun`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRun {
    /// The run's tenant.
    pub tenant: String,
    /// The run's name.
    pub run: String,
    /// The slice starts after this job of the run (0: at its first).
    pub after: JobId,
    /// Most of the run's jobs this slice looks at.
    pub limit: u32,
}

/// The payload of [`Command::SwitchVersion`], and of [`Audited::SwitchVersion`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchVersion {
    /// Which jobs, kept from which version.
    pub switch: VersionSwitch,
    /// false switches the version off for those jobs; true lets it have
    /// them again.
    pub enabled: bool,
}

/// The payload of [`Command::SetCanary`], and of [`Audited::SetCanary`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetCanary {
    /// The queue whose canary it is.
    pub queue: String,
    /// The rule; None ends the one set at run time (the config's, if any,
    /// applies again).
    pub rule: Option<CanaryRule>,
}

/// The payload of [`Command::SetChaos`], and of [`Audited::SetChaos`] when an
/// admin sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetChaos {
    /// The queue; None (with no rule) ends every queue's rule.
    pub queue: Option<String>,
    /// The faults; None ends the queue's.
    pub rule: Option<ChaosRule>,
}

/// What a control applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueScope {
    /// One queue, by name.
    Queue(String),
    /// Every queue that exists now.
    All,
    /// One tenant's jobs, in every queue.
    Tenant(String),
}

/// What an operator does to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueAction {
    /// No leases: its jobs wait, enqueues go on.
    Pause,
    /// No enqueues: leases go on until it is empty.
    Drain,
    /// Back to normal.
    Resume,
}

impl QueueAction {
    /// The action's name, as the API and the audit log write it.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueAction::Pause => "pause",
            QueueAction::Drain => "drain",
            QueueAction::Resume => "resume",
        }
    }
}

impl Audited {
    /// The command it stands for.
    pub fn command(&self) -> Command {
        match self {
            Audited::Cancel(p) => Command::Cancel(p.clone()),
            Audited::Control(p) => Command::Control(p.clone()),
            Audited::Schedule(p) => Command::Schedule(p.clone()),
            Audited::Replay(p) => Command::Replay(p.clone()),
            Audited::PurgeDead(p) => Command::PurgeDead(p.clone()),
            Audited::Requeue(p) => Command::Requeue(p.clone()),
            Audited::ResetBreakers(p) => Command::ResetBreakers(p.clone()),
            Audited::ReleaseWorker(p) => Command::ReleaseWorker(p.clone()),
            Audited::OverrideRun(p) => Command::OverrideRun(p.clone()),
            Audited::SetTenantBudgets(p) => Command::SetTenantBudgets(p.clone()),
            Audited::CancelRun(p) => Command::CancelRun(p.clone()),
            Audited::SwitchVersion(p) => Command::SwitchVersion(p.clone()),
            Audited::SetCanary(p) => Command::SetCanary(p.clone()),
            Audited::SetChaos(p) => Command::SetChaos(p.clone()),
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The token's name (`anonymous` on a node without tokens).
    pub who: String,
    /// The token's role, empty without tokens.
    pub role: String,
    /// What was done: `job.cancel`, `cluster.add`, `snapshot`...
    pub action: String,
    /// What it was done to: `job 42`, `node 4 at 10.0.0.4:7070`.
    pub target: String,
    /// Why, as the operator said (`--reason`, `X-Drover-Reason`).
    pub reason: String,
    /// `ok`; the machine writes a record only for a command that took
    /// effect.
    pub outcome: String,
}

/// How long finished jobs and idempotency records are kept, as the leader's
/// config said when it proposed a [`Command::Purge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Succeeded and cancelled jobs, from when they finished.
    pub finished_ms: u64,
    /// Dead jobs, from when they died.
    pub dead_ms: u64,
    /// Idempotency records, from their job's enqueue.
    pub idempotency_ms: u64,
    /// Most bytes of finished-job records kept; past it the oldest go first,
    /// whatever their age.
    pub max_finished_bytes: u64,
}

impl Command {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Enqueue { .. } => "enqueue",
            Command::Lease { .. } => "lease",
            Command::Heartbeat { .. } => "heartbeat",
            Command::Complete { .. } => "complete",
            Command::Fail { .. } => "fail",
            Command::Cancel(..) => "cancel",
            Command::Tick => "tick",
            Command::Held { .. } => "held",
            Command::Purge { .. } => "purge",
            Command::Audit { .. } => "audit",
            Command::PurgeAudit { .. } => "purge_audit",
            Command::SetPolicies { .. } => "set_policies",
            Command::Control(..) => "control",
            Command::Fire { .. } => "fire",
            Command::Schedule(..) => "schedule",
            Command::PurgeQueue { .. } => "purge_queue",
            Command::Replay(..) => "replay",
            Command::PurgeDead(..) => "purge_dead",
            Command::Requeue(..) => "requeue",
            Command::ResetBreakers(..) => "reset_breakers",
            Command::Quarantine { .. } => "quarantine",
            Command::ReleaseWorker(..) => "release_worker",
            Command::CompleteWithUsage { .. } => "complete",
            Command::FailWithUsage { .. } => "fail",
            Command::OverrideRun(..) => "override_run",
            Command::SetTenantBudgets(..) => "set_tenant_budgets",
            Command::CancelRun(..) => "cancel_run",
            Command::LeaseAs { .. } => "lease",
            Command::SwitchVersion(..) => "switch_version",
            Command::SetCanary(..) => "set_canary",
            Command::SetChaos(..) => "set_chaos",
            Command::RenewLeases => "renew_leases",
            Command::EnqueueReplay(_) => "enqueue_replay",
            Command::SetPoliciesFrom(_) => "set_policies",
            Command::EraseTenantJobs(_) => "erase_tenant_jobs",
            Command::EraseTenant(_) => "erase_tenant",
            Command::PurgeJobs(_) => "purge_jobs",
        }
    }

    /// The oldest log entry format that can carry it.
    pub fn min_format(&self) -> u8 {
        match self {
            Command::LeaseAs { .. }
            | Command::SwitchVersion(..)
            | Command::SetCanary(..)
            | Command::SetChaos(..) => 2,
            Command::RenewLeases | Command::EnqueueReplay(_) => 3,
            Command::SetPoliciesFrom(_) | Command::EraseTenantJobs(_) | Command::EraseTenant(_) => {
                4
            }
            Command::PurgeJobs(_) => 5,
            Command::Audit {
                command:
                    Some(Audited::SwitchVersion(..) | Audited::SetCanary(..) | Audited::SetChaos(..)),
                ..
            } => 2,
            _ => 1,
        }
    }

    /// The command as an entry of `format` can carry it: itself, or a lease
    /// without its worker's version (switches are not kept while a cluster
    /// is upgrading); None when it cannot be written yet.
    pub fn for_format(self, format: u8) -> Option<Command> {
        if self.min_format() <= format {
            return Some(self);
        }
        match self {
            Command::LeaseAs {
                worker,
                queues,
                max,
                ..
            } => Some(Command::Lease {
                worker,
                queues,
                max,
            }),
            // Set without the audit record an older build would not write.
            Command::SetPoliciesFrom(from) => Some(Command::SetPolicies {
                policies: from.policies,
            }),
            _ => None,
        }
    }

    /// About how many bytes the command takes in the log; bounds how many
    /// go into one entry.
    pub fn approx_bytes(&self) -> usize {
        const RECORD: usize = 64;
        match self {
            Command::Enqueue { jobs } => jobs.iter().map(|j| RECORD + j.payload.len()).sum(),
            Command::EnqueueReplay(r) => r.jobs.iter().map(|j| RECORD + j.payload.len()).sum(),
            Command::Complete { items, .. } => items.iter().map(|c| RECORD + c.result.len()).sum(),
            Command::Fail { items, .. } => items
                .iter()
                .map(|f| RECORD + f.message.len() + f.error_class.len())
                .sum(),
            Command::Heartbeat { leases, .. } => RECORD * leases.len(),
            Command::CompleteWithUsage { items, .. } => items
                .iter()
                .map(|(c, u)| RECORD + c.result.len() + usage_bytes(u))
                .sum(),
            Command::FailWithUsage { items, .. } => items
                .iter()
                .map(|(f, u)| RECORD + f.message.len() + f.error_class.len() + usage_bytes(u))
                .sum(),
            Command::Audit { record, command } => {
                RECORD
                    + record.reason.len()
                    + record.target.len()
                    + command.as_ref().map_or(0, |c| c.command().approx_bytes())
            }
            Command::Replay(Replay { ids })
            | Command::PurgeDead(PurgeDead { ids })
            | Command::PurgeJobs(PurgeJobs { ids, .. }) => RECORD + 8 * ids.len(),
            Command::Requeue(Requeue { leases, reason }) => {
                RECORD + reason.len() + 12 * leases.len()
            }
            Command::ResetBreakers(..)
            | Command::Quarantine { .. }
            | Command::ReleaseWorker(..)
            | Command::OverrideRun(..)
            | Command::SetTenantBudgets(..)
            | Command::CancelRun(..)
            | Command::SwitchVersion(..)
            | Command::SetCanary(..)
            | Command::SetChaos(..)
            | Command::EraseTenantJobs(..)
            | Command::EraseTenant(..) => RECORD,
            Command::Lease { .. }
            | Command::LeaseAs { .. }
            | Command::Cancel(..)
            | Command::Tick
            | Command::RenewLeases
            | Command::Held { .. }
            | Command::Purge { .. }
            | Command::PurgeAudit { .. }
            | Command::SetPolicies { .. }
            | Command::SetPoliciesFrom(_)
            | Command::Control(..)
            | Command::Fire { .. }
            | Command::Schedule(..)
            | Command::PurgeQueue { .. } => RECORD,
        }
    }
}

fn usage_bytes(u: &Usage) -> usize {
    8 + u.named.keys().map(|k| k.len() + 8).sum::<usize>()
}

/// One lease a heartbeat extends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseBeat {
    /// The leased job.
    pub job_id: JobId,
    /// The attempt the lease was granted for: the fence.
    pub attempt: u32,
    /// What the worker says of the job's progress, if anything.
    pub progress: Option<Progress>,
}

/// A worker's result for one leased job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The job it finished.
    pub job_id: JobId,
    /// The lease's attempt; a result for any other is refused as stale.
    pub attempt: u32,
    /// The job's result, kept with it (empty: none kept).
    pub result: Bytes,
}

/// A worker's failure of one leased job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The job that failed.
    pub job_id: JobId,
    /// The lease's attempt; a failure for any other is refused as stale.
    pub attempt: u32,
    /// What kind of failure: its retry policy (`retry_on`, `no_retry`)
    /// and the circuit breakers go by it.
    pub error_class: String,
    /// What went wrong, kept as the job's last error.
    pub message: String,
}

/// The id a new job got, or the id of the job its idempotency key already named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The new job's id, or the existing job's.
    pub id: JobId,
    /// True when the idempotency key named an existing job and nothing was
    /// enqueued.
    pub duplicate: bool,
}

/// What a [`Refusal::Shed`] says, by the limit it names.
fn shed_message(queue: &str, priority: u8, depth: u64, limit: u64, what: &str) -> String {
    match what {
        "shed_when.oldest_ready" => format!("queue {queue:?} sheds new jobs of priority {priority}: its oldest ready job has waited {depth}s, over its {what} of {limit}s; retry later, add workers, or raise the limit"),
        "shed_when.failure_rate" => format!("queue {queue:?} sheds new jobs of priority {priority}: {depth}% of its recent results failed, over its {what} of {limit}%; retry later, or fix what fails (drover dead list --queue {queue})"),
        _ => format!("queue {queue:?} is full for priority {priority}: {depth} jobs waiting, over its {what} limit of {limit}; retry later, or raise the limit"),
    }
}

/// Why the machine refused a message about one job. Refusals change nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    /// A message named a job that does not exist (never did, or was
    /// purged).
    #[error("job {0} does not exist")]
    UnknownJob(JobId),
    /// A heartbeat, result or failure named an attempt that is not the
    /// job's lease now (it expired, was taken back, or the job finished).
    #[error("stale lease on job {job_id}: attempt {attempt} is not the current lease (job is {state}, current attempt {current})")]
    StaleLease {
        /// The job named.
        job_id: JobId,
        /// The attempt the message named.
        attempt: u32,
        /// How many times the job has been leased: its latest attempt.
        current: u32,
        /// The state the job is in.
        state: JobState,
    },
    /// A cancel named a job that has finished already.
    #[error("job {job_id} is already {state}")]
    Finished {
        /// The job named.
        job_id: JobId,
        /// How it finished.
        state: JobState,
    },
    /// The log entry holding the command did not decode (written by
    /// another drover version?); every node skipped it.
    #[error("log entry at index {index} could not be decoded: {reason}")]
    Undecodable {
        /// The entry's raft index.
        index: u64,
        /// What the decoder said.
        reason: String,
    },
    /// An enqueue would pass its queue's `max_depth` or its priority's
    /// `shed` fraction, or the cluster's `limits.max_pending`.
    #[error("{}", shed_message(queue, *priority, *depth, *limit, what))]
    Shed {
        /// The queue the job was for.
        queue: String,
        /// The job's priority.
        priority: u8,
        /// Jobs waiting in the queue (for `limits.max_pending`: jobs not
        /// finished in the cluster).
        depth: u64,
        /// The limit that depth reached.
        limit: u64,
        /// Which limit: `max_depth`, `shed` or `limits.max_pending`.
        what: String,
    },
    /// An enqueue named a draining queue.
    #[error("queue {queue:?} is draining and takes no new jobs; `drover queues resume {queue}` takes them again")]
    Draining {
        /// The draining queue.
        queue: String,
    },
    /// A schedule action named a schedule the policies in effect do not
    /// have.
    #[error("no schedule {schedule:?} in the policies in effect (see drover schedules list)")]
    UnknownSchedule {
        /// The name given.
        schedule: String,
    },
    /// An enqueue was for a draining tenant.
    #[error("tenant {tenant:?} is draining and its jobs are not taken; `drover tenants resume {tenant}` takes them again")]
    TenantDraining {
        /// The draining tenant.
        tenant: String,
    },
    /// A release named a worker that is not quarantined.
    #[error("worker {worker:?} is not quarantined (see drover workers list)")]
    NotQuarantined {
        /// The worker named.
        worker: String,
    },
    /// A reset named a breaker that is neither open nor counting failures.
    #[error("no breaker {queue}/{tenant}/{class} is open or counting failures (see drover breakers list)")]
    UnknownBreaker {
        /// The breaker's queue.
        queue: String,
        /// The breaker's tenant.
        tenant: String,
        /// The breaker's error class.
        class: String,
    },
    /// An enqueue into a run its budget holds, or for a tenant past its
    /// daily cost cap.
    #[error("{} is over its {budget} budget ({usage}); `drover runs override RUN --reason TEXT` (or `drover budgets set TENANT`) raises it", budget_scope(tenant, run))]
    BudgetExceeded {
        /// The job's tenant.
        tenant: String,
        /// The run held; empty when it is the tenant's daily cap.
        run: String,
        /// Which budget: `cost_usd`, `time`, `attempts` or
        /// `daily_cost_cap_usd`.
        budget: String,
        /// What was used of the limit, for people (`1.5 of 1 USD`).
        usage: String,
    },
    /// A request named a run of the tenant that has no jobs (an override,
    /// a read, a cancel).
    #[error("tenant {tenant:?} has no run {run:?} (see drover runs list)")]
    UnknownRun {
        /// The tenant named.
        tenant: String,
        /// The run named.
        run: String,
    },
    /// A job of an enqueue names a job to run after that it cannot wait
    /// for.
    #[error("job {position} of the request: field `after`: {reason}")]
    BadDependency {
        /// The job's place in the request (from 0).
        position: usize,
        /// What is wrong with the dependency.
        reason: String,
    },
    /// Switching a version on where no switch keeps it off.
    #[error("{switch} is not switched off (see drover versions list)")]
    NotSwitchedOff {
        /// The switch, described.
        switch: String,
    },
    /// The queue named has no canary rule: none set at run time to end, or
    /// none at all to show.
    #[error(
        "queue {queue:?} has no canary rule (drover canary set QUEUE --version V --percent N)"
    )]
    NoCanary {
        /// The queue named.
        queue: String,
    },
    /// A replay named a new run that exists already (or found no free
    /// `RUN-replay-N`).
    #[error("run {run:?} of tenant {tenant:?} exists already; name a new one")]
    RunExists {
        /// The run's tenant.
        tenant: String,
        /// The run that exists.
        run: String,
    },
}

fn budget_scope(tenant: &str, run: &str) -> String {
    if run.is_empty() {
        format!("tenant {tenant:?}")
    } else {
        format!("run {run:?} of tenant {tenant:?}")
    }
}

impl Refusal {
    /// The stable, snake_case name of the refusal (the admin API's error
    /// `code`).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownJob(_)
            | Refusal::UnknownSchedule { .. }
            | Refusal::NotQuarantined { .. }
            | Refusal::UnknownBreaker { .. }
            | Refusal::UnknownRun { .. }
            | Refusal::NotSwitchedOff { .. }
            | Refusal::NoCanary { .. } => "not_found",
            Refusal::BudgetExceeded { .. } => "budget_exceeded",
            Refusal::BadDependency { .. } | Refusal::RunExists { .. } => "invalid_argument",
            Refusal::StaleLease { .. } => "stale_lease",
            Refusal::Finished { .. } => "already_finished",
            Refusal::Shed { .. } => "shed",
            Refusal::Draining { .. } | Refusal::TenantDraining { .. } => "draining",
            Refusal::Undecodable { .. } => "internal",
        }
    }

    /// What the request named does not exist (404 / NOT_FOUND).
    pub fn is_not_found(&self) -> bool {
        self.code() == "not_found"
    }
}

/// A job handed to a worker, with the payload it runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeasedJob {
    /// The job, with its new lease.
    pub job: Job,
    /// The payload the worker runs it on.
    pub payload: Bytes,
}

/// What applying a command produced. Serializable because a follower gets it
/// back from the leader it forwarded the command to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// One per job of an enqueue, in order.
    Enqueued(Vec<Enqueued>),
    /// The run a replay's copies went into, and the copies.
    EnqueuedRun {
        /// The run the copies went into.
        run: String,
        /// One per copy, in order.
        jobs: Vec<Enqueued>,
    },
    /// The jobs leased, with their new lease and their payloads (which a
    /// follower that forwarded the lease gets back from the leader).
    Leased(Vec<LeasedJob>),
    /// One result per item of a heartbeat, complete or fail, in order.
    Acks(Vec<Result<(), Refusal>>),
    /// The state the job was in when it was cancelled.
    Cancelled(Result<JobState, Refusal>),
    /// What a tick did.
    Ticked {
        /// Leases that ended: expired, or past their execution timeout.
        expired: u32,
        /// Delayed jobs made ready.
        promoted: u32,
    },
    /// Raft's own entries (empty entries of a new leader, conf changes).
    Noop,
    /// The command was refused and changed nothing.
    Rejected(Refusal),
    /// What a purge removed; `more` when it stopped at its limit.
    Purged {
        /// Jobs removed (cancelled, for a queue's purge).
        jobs: u32,
        /// Idempotency records removed.
        idempotency_records: u32,
        /// Whether it stopped at its limit, so a further one may find more.
        more: bool,
    },
    /// The queues a control changed.
    Controlled(Vec<String>),
    /// The dead jobs replayed.
    Replayed(Vec<JobId>),
    /// How many records a removal took away.
    Removed(u32),
    /// The jobs whose leases were taken back.
    Requeued(Vec<JobId>),
    /// A run's budgets were changed: the budget it is still over, if any.
    RunBudget {
        /// The budget it is still over; None: under all of them.
        over: Option<String>,
    },
    /// A slice of a run's cancel: how many it cancelled, and the job after
    /// which the next slice starts (none: done).
    RunCancelled {
        /// Jobs this slice cancelled.
        cancelled: u32,
        /// The `after` of the next slice; None: the run is done.
        next: Option<JobId>,
    },
    /// A slice of a tenant's erasure: the jobs it erased, and the job
    /// after which the next slice starts (None: no job records are left).
    TenantJobsErased {
        /// The tenant's jobs this slice erased.
        jobs: u32,
        /// The `after` of the next slice; None: every job was looked at.
        next: Option<JobId>,
    },
    /// What erasing a tenant's other records removed.
    TenantErased(ErasedRecords),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Audited` as it was written before its variants shared payload
    /// types with `Command` (fields inline): the log holds entries of it.
    #[derive(Serialize)]
    enum Before {
        Cancel {
            id: JobId,
        },
        Control {
            scope: QueueScope,
            action: QueueAction,
        },
        Schedule {
            schedule: String,
            action: ScheduleAction,
        },
        Replay {
            ids: Vec<JobId>,
        },
        PurgeDead {
            ids: Vec<JobId>,
        },
        Requeue {
            leases: Vec<(JobId, u32)>,
            reason: String,
        },
        ResetBreakers {
            scope: Option<(String, String, String)>,
        },
        ReleaseWorker {
            worker: String,
        },
        OverrideRun {
            tenant: String,
            run: String,
            limits: Box<crate::policies::Budgets>,
        },
        SetTenantBudgets {
            tenant: String,
            budgets: Box<crate::policies::Budgets>,
        },
        CancelRun {
            tenant: String,
            run: String,
            after: JobId,
            limit: u32,
        },
        SwitchVersion {
            switch: VersionSwitch,
            enabled: bool,
        },
        SetCanary {
            queue: String,
            rule: Option<CanaryRule>,
        },
        SetChaos {
            queue: Option<String>,
            rule: Option<ChaosRule>,
        },
    }

    fn bytes<T: Serialize>(v: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap()
    }

    #[test]
    fn shared_payloads_encode_as_the_inline_fields_did() {
        let budgets = Box::new(crate::policies::Budgets {
            cost_micros: Some(5),
            ..Default::default()
        });
        let switch = VersionSwitch {
            version: "v2".into(),
            queue: Some("q".into()),
            tenant: None,
        };
        let canary = CanaryRule {
            version: "v3".into(),
            percent: 10,
            max_wait_ms: 9,
        };
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (
                bytes(&Before::Cancel { id: 7 }),
                bytes(&Audited::Cancel(Cancel { id: 7 })),
            ),
            (
                bytes(&Before::Control {
                    scope: QueueScope::Tenant("t".into()),
                    action: QueueAction::Drain,
                }),
                bytes(&Audited::Control(Control {
                    scope: QueueScope::Tenant("t".into()),
                    action: QueueAction::Drain,
                })),
            ),
            (
                bytes(&Before::Schedule {
                    schedule: "s".into(),
                    action: ScheduleAction::Trigger,
                }),
                bytes(&Audited::Schedule(Schedule {
                    schedule: "s".into(),
                    action: ScheduleAction::Trigger,
                })),
            ),
            (
                bytes(&Before::Replay { ids: vec![1, 2] }),
                bytes(&Audited::Replay(Replay { ids: vec![1, 2] })),
            ),
            (
                bytes(&Before::PurgeDead { ids: vec![3] }),
                bytes(&Audited::PurgeDead(PurgeDead { ids: vec![3] })),
            ),
            (
                bytes(&Before::Requeue {
                    leases: vec![(4, 2)],
                    reason: "r".into(),
                }),
                bytes(&Audited::Requeue(Requeue {
                    leases: vec![(4, 2)],
                    reason: "r".into(),
                })),
            ),
            (
                bytes(&Before::ResetBreakers {
                    scope: Some(("q".into(), "t".into(), "c".into())),
                }),
                bytes(&Audited::ResetBreakers(ResetBreakers {
                    scope: Some(("q".into(), "t".into(), "c".into())),
                })),
            ),
            (
                bytes(&Before::ReleaseWorker { worker: "w".into() }),
                bytes(&Audited::ReleaseWorker(ReleaseWorker {
                    worker: "w".into(),
                })),
            ),
            (
                bytes(&Before::OverrideRun {
                    tenant: "t".into(),
                    run: "r".into(),
                    limits: budgets.clone(),
                }),
                bytes(&Audited::OverrideRun(OverrideRun {
                    tenant: "t".into(),
                    run: "r".into(),
                    limits: budgets.clone(),
                })),
            ),
            (
                bytes(&Before::SetTenantBudgets {
                    tenant: "t".into(),
                    budgets: budgets.clone(),
                }),
                bytes(&Audited::SetTenantBudgets(SetTenantBudgets {
                    tenant: "t".into(),
                    budgets,
                })),
            ),
            (
                bytes(&Before::CancelRun {
                    tenant: "t".into(),
                    run: "r".into(),
                    after: 8,
                    limit: 100,
                }),
                bytes(&Audited::CancelRun(CancelRun {
                    tenant: "t".into(),
                    run: "r".into(),
                    after: 8,
                    limit: 100,
                })),
            ),
            (
                bytes(&Before::SwitchVersion {
                    switch: switch.clone(),
                    enabled: true,
                }),
                bytes(&Audited::SwitchVersion(SwitchVersion {
                    switch,
                    enabled: true,
                })),
            ),
            (
                bytes(&Before::SetCanary {
                    queue: "q".into(),
                    rule: Some(canary.clone()),
                }),
                bytes(&Audited::SetCanary(SetCanary {
                    queue: "q".into(),
                    rule: Some(canary),
                })),
            ),
            (
                bytes(&Before::SetChaos {
                    queue: None,
                    rule: None,
                }),
                bytes(&Audited::SetChaos(SetChaos {
                    queue: None,
                    rule: None,
                })),
            ),
        ];
        for (i, (before, now)) in pairs.iter().enumerate() {
            assert_eq!(before, now, "variant {i}");
        }
        // And in a command: its variant number, then the same fields.
        let mut cancel = bytes(&Command::Cancel(Cancel { id: 7 }));
        assert_eq!(cancel.remove(0), 5, "Cancel is Command's sixth variant");
        assert_eq!(cancel, bytes(&7u64));
    }
}
