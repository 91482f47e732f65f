//! The raft driver: one task owns the `RawNode` and the state machine; a
//! flusher thread makes its writes durable. Everything else talks to it through [`DriverHandle`].
//!
//! Each turn of its loop puts every proposal waiting in the channel into one
//! log entry, then handles one `Ready` in the order raft-rs asks: send
//! messages, apply committed entries, write new entries and hard state to
//! sled, and hand the flush to the flusher thread; messages that must wait
//! for durability (votes, append responses) go out when it reports back.
//! That is group commit: everything written while a flush runs shares the
//! next one.
//!
//! Waiting proposals are keyed by (index, term). An entry applied at that
//! index with another term means a new leader replaced ours: its proposer is
//! told so explicitly and never handed someone else's outcome.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType};
use raft::{RawNode, StateRole};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cluster::transport::Transport;
use crate::cluster::{Control, MemberChange};
use crate::command::{Command, LogEntry, Outcome, Refusal};
use crate::config::Config;
use crate::error::Error;
use crate::machine::{JobReader, LeaseEvent, Machine, MachineError, MachineStats};
use crate::resources::Pressure;
use crate::snapshot::{self, SnapshotError, SnapshotMeta};
use crate::store::{Database, RaftStore, StoreError, DEFAULT_MACHINE_TREE, INIT_INDEX};

pub mod log_time;
mod pending;
mod persist;
mod reads;
mod snapshots;
mod status;
pub use log_time::LogTime;
use snapshots::Snapshots;
pub use status::{Member, NodeStatus, Role};

/// Finished jobs one purge entry removes at most (about six writes each).
/// 200 fell behind 26,000 finished jobs/s on one node; 400 keeps up.
const PURGE_SLICE: u32 = 400;
/// How often the leader looks whether a purge is due when none was.
const PURGE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Most proposals folded into one Ready; bounds the size of one flush.
const MAX_PROPOSALS_PER_READY: usize = 4096;
/// Raft messages and reports waiting for the driver before more are dropped.
const CONTROL_QUEUE: usize = 16384;
/// Commands go into one entry until it holds about this many bytes. The
/// machine writes an entry in one sled batch, whose memory sled keeps until
/// the batch ends, so this also bounds that.
const MAX_ENTRY_BYTES: usize = 256 << 10;
/// Most log entries dropped per Ready by compaction.
const COMPACT_STEP: u64 = 1000;
/// How long the log must say this node is removed before it acts on it.
const REMOVAL_GRACE: Duration = Duration::from_secs(3);
/// Most raft messages stepped before the driver handles a Ready.
const MAX_STEPS_PER_READY: usize = 1024;

/// What a proposal's proposer hears: the outcome and the index it was applied at.
use pending::{fail_all, MemberOutcome, Pending, Reply};
use persist::Persistence;
use reads::ReadWaiters;

/// What can be proposed: a command for the machine, or a membership change
/// for raft itself.
pub enum Proposed {
    Command(Command),
    Member(MemberChange),
}

/// A proposal waiting to be committed and applied.
pub struct Proposal {
    pub what: Proposed,
    pub reply: Reply,
}

/// A failure the driver cannot recover from: raft's or the machine's storage
/// is broken. The node stops rather than run on half-written state.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("raft storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("state machine failed: {0}")]
    Machine(#[from] MachineError),
    #[error("raft failed: {0}")]
    Raft(#[from] raft::Error),
    #[error("cannot start the raft driver thread: {0}")]
    Thread(std::io::Error),
    #[error("log flusher failed: {0}")]
    Flusher(String),
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    #[error("log entry {index} has format {found}, and this drover applies formats up to {reads}: it was written by a newer drover. Upgrade this node's binary to the version the other nodes run; its log and data are kept as they are")]
    EntryTooNew { index: u64, found: u8, reads: u8 },
}

/// The newest log entry format each peer applies, as the first message of
/// its raft stream to this node said (a peer not heard from: format 1).
/// Written by the peer service; read by the leader's proposals and by a
/// follower forwarding a command to its leader.
#[derive(Clone, Default)]
pub struct PeerFormats(Arc<std::sync::RwLock<std::collections::BTreeMap<u64, u8>>>);

impl PeerFormats {
    pub fn note(&self, peer: u64, format: u8) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, format.max(1));
    }

    pub fn of(&self, peer: u64) -> u8 {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .copied()
            .unwrap_or(1)
    }
}

/// The rest of the node's way to the driver.
#[derive(Clone)]
pub struct DriverHandle {
    tx: mpsc::Sender<Proposal>,
    control: mpsc::Sender<Control>,
    status: watch::Receiver<NodeStatus>,
    stats: watch::Receiver<Arc<MachineStats>>,
    revoked: tokio::sync::broadcast::Sender<Arc<[LeaseEvent]>>,
    /// When the loop last took a raft tick (ms of [`mono_ms`]), for the
    /// systemd watchdog.
    turned_at: Arc<std::sync::atomic::AtomicU64>,
    /// The log's clock, as this node reads it.
    log_time: Arc<LogTime>,
    /// Peers' wall clocks, as their batches say.
    clocks: Arc<crate::cluster::clocks::Clocks>,
    /// The newest entry format each peer applies, as its peer header said.
    peer_formats: PeerFormats,
    reader: JobReader,
    retry_after_ms: u64,
    /// This node's disk and memory, and what its peers report of theirs.
    pressure: Arc<Pressure>,
    /// The cluster incarnation this node belongs to.
    incarnation: crate::cluster::identity::Incarnation,
    /// Set once, when this node learns it was removed (and why).
    removed: watch::Receiver<Option<String>>,
}

impl DriverHandle {
    /// Changes once: when this node learns it was removed from the cluster.
    pub fn removed_watch(&self) -> watch::Receiver<Option<String>> {
        self.removed.clone()
    }

    /// The cluster incarnation this node belongs to (0: none yet).
    pub fn incarnation(&self) -> &crate::cluster::identity::Incarnation {
        &self.incarnation
    }

    /// This node's disk and memory alarms, and its peers'.
    pub fn pressure(&self) -> &Arc<Pressure> {
        &self.pressure
    }

    /// What peers said of the entry formats they apply.
    pub fn peer_formats(&self) -> &PeerFormats {
        &self.peer_formats
    }

    /// Proposes a command on this node and waits until it is applied. Fails
    /// with [`Error::NoLeader`] unless this node leads; the cluster router
    /// sends commands where they belong.
    pub async fn propose(&self, command: Command) -> Result<Outcome, Error> {
        self.propose_at(command).await.map(|(outcome, _)| outcome)
    }

    /// Like [`DriverHandle::propose`], with the index the command was applied at.
    pub async fn propose_at(&self, command: Command) -> Result<(Outcome, u64), Error> {
        self.submit(Proposed::Command(command)).await
    }

    /// Proposes a membership change on this node (the leader) and waits
    /// until it is applied.
    pub async fn change_members(&self, change: MemberChange) -> Result<u64, Error> {
        self.submit(Proposed::Member(change))
            .await
            .map(|(_, index)| index)
    }

    async fn submit(&self, what: Proposed) -> Result<(Outcome, u64), Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Proposal { what, reply })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        // A dropped reply means the driver died holding the proposal, maybe
        // after it entered the log: not safe to send again blindly.
        rx.await.map_err(|_| Error::OutcomeUnknown)?
    }

    /// The policies this node's config now asks for (after a reload).
    pub fn set_policies(&self, policies: crate::policies::Policies) {
        self.control(Control::Policies(Box::new(policies)));
    }

    /// Takes a snapshot now (or finds the newest if nothing was applied
    /// since) and returns its file.
    pub async fn snapshot_now(&self) -> Result<PathBuf, Error> {
        self.ask(Control::TakeSnapshot)
            .await?
            .await
            .map_err(|_| Error::ShuttingDown)?
    }

    /// Sends the driver a request that carries its own reply channel.
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> Result<oneshot::Receiver<T>, Error> {
        let (reply, rx) = oneshot::channel();
        self.control
            .send(request(reply))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        Ok(rx)
    }

    /// The index a linearizable read must wait to apply: confirmed with a
    /// quorum by the leader (raft's read index), asked through this node.
    pub async fn read_index(&self) -> Result<u64, Error> {
        let rx = self.ask(Control::ReadIndex).await?;
        let no_leader = Error::NoLeader {
            retry_after_ms: self.retry_after_ms,
        };
        match tokio::time::timeout(Duration::from_millis(self.retry_after_ms), rx).await {
            Ok(Ok(index)) => Ok(index),
            _ => Err(no_leader),
        }
    }

    /// Hands the driver a raft message or a report. Dropped when the driver
    /// is saturated: raft recovers from lost messages.
    pub fn control(&self, c: Control) {
        let _ = self.control.try_send(c);
    }

    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// The status without copying it; hold it briefly (it blocks updates).
    pub fn status_ref(&self) -> watch::Ref<'_, NodeStatus> {
        self.status.borrow()
    }

    pub fn status_watch(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    pub fn stats(&self) -> Arc<MachineStats> {
        self.stats.borrow().clone()
    }

    /// Changes whenever an applied range changed the machine.
    pub fn stats_watch(&self) -> watch::Receiver<Arc<MachineStats>> {
        self.stats.clone()
    }

    /// How long ago the raft loop last turned (took a tick), in ms of the
    /// monotonic clock: a step of the wall clock is not a stuck loop.
    pub fn loop_idle_ms(&self) -> u64 {
        mono_ms().saturating_sub(self.turned_at.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The log's time now: what the times the machine keeps (enqueued,
    /// due, finished) compare against. See [`log_time`].
    pub fn log_now_ms(&self) -> u64 {
        self.log_time.now_ms()
    }

    pub fn log_time(&self) -> &Arc<LogTime> {
        &self.log_time
    }

    /// Peers' clock offsets, as their batches say.
    pub fn clocks(&self) -> &Arc<crate::cluster::clocks::Clocks> {
        &self.clocks
    }

    /// The status with each member's clock offset as this node reads it:
    /// what `cluster members` shows.
    pub fn members_status(&self) -> NodeStatus {
        let mut status = self.status();
        let now = std::time::Instant::now();
        for m in &mut status.members {
            m.clock_offset_ms = self.clocks.offset_of(m.id, now);
        }
        status
    }

    /// Leases the log took back without a result (expiries, timeouts, an
    /// operator's requeue), as each applied range ends: the worker
    /// sessions tell their workers to stop those jobs at once.
    pub fn revoked_leases(&self) -> tokio::sync::broadcast::Receiver<Arc<[LeaseEvent]>> {
        self.revoked.subscribe()
    }

    /// Ids of live jobs (ready, scheduled, leased) above `after` that
    /// `query` may match, from this node's indexes (see
    /// [`crate::machine::Machine::live_job_ids`]).
    pub async fn live_job_ids(
        &self,
        query: crate::machine::find::JobQuery,
        after: crate::job::JobId,
    ) -> Result<Vec<crate::job::JobId>, Error> {
        let rx = self
            .ask(|reply| Control::FindJobs(Box::new(query), after, reply))
            .await?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    pub fn reader(&self) -> &JobReader {
        &self.reader
    }

    pub fn retry_after_ms(&self) -> u64 {
        self.retry_after_ms
    }
}

/// The wall clock in ms since the epoch: for what people read (file
/// names, display) and for comparing clocks. Durations and the times the
/// machine keeps go by [`LogTime`] instead.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// ms of the monotonic clock since this process first asked.
pub fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Forwards raft-rs's slog records to tracing, so one log stream shows both.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            slog::Level::Info => tracing::info!(target: "raft", "{}", record.msg()),
            _ => tracing::debug!(target: "raft", "{}", record.msg()),
        }
        Ok(())
    }
}

struct Driver {
    /// Read index requests by context; answered from Ready's read states.
    /// One that raft drops (no leader) is dropped with it, and its waiter
    /// times out.
    reads: ReadWaiters,
    db: Database,
    /// Where each member is reached: the config's peers, then every member
    /// added since (kept in the raft tree).
    addrs: std::collections::BTreeMap<u64, String>,
    snapshots: Snapshots,
    raw: RawNode<RaftStore>,
    machine: Machine,
    rx: mpsc::Receiver<Proposal>,
    control: mpsc::Receiver<Control>,
    transport: Transport,
    pending: Pending,
    status_tx: watch::Sender<NodeStatus>,
    stats_tx: watch::Sender<Arc<MachineStats>>,
    revoked_tx: tokio::sync::broadcast::Sender<Arc<[LeaseEvent]>>,
    /// The wait and run time histograms' handles.
    job_times: crate::metrics::JobTimes,
    /// The newest entry format this node applies, and each peer's (as its
    /// peer header said); a leader writes the oldest among the voters.
    entry_version: u8,
    peer_formats: PeerFormats,
    /// The format the last proposal was written in, to log a change.
    writing_version: u8,
    /// The newest format this node applied (kept in the raft tree): a
    /// leader never writes below it, even before it has heard from every
    /// voter again after a restart.
    format_floor: u8,
    turned_at: Arc<std::sync::atomic::AtomicU64>,
    shutdown: watch::Receiver<bool>,
    tick_interval: Duration,
    log_keep: u64,
    log_keep_bytes: u64,
    max_inflight: u64,
    /// Index of a Tick proposed and not yet applied; one at a time.
    tick_in_flight: Option<u64>,
    /// Index of an entry of schedule slots proposed and not yet applied.
    fire_in_flight: Option<u64>,
    /// Cron expressions parsed, by (expression, time zone).
    crons: std::collections::HashMap<(String, String), Option<crate::schedules::Parsed>>,
    /// Index of an upkeep entry (a purge, an audit purge, new policies)
    /// proposed and not yet applied; one at a time.
    upkeep_in_flight: Option<u64>,
    /// The policies this node's config asks for: the leader proposes them
    /// when the machine's differ; a follower says which keys differ.
    policies: crate::policies::Policies,
    /// The machine's policies a follower last warned about.
    policies_warned: Option<crate::policies::Policies>,
    /// This node's config policies still wait to be proposed (asked at
    /// start and on SIGHUP; the log's last index then), unless the cluster's
    /// are set by an entry after that one.
    policies_asked: Option<u64>,
    /// The machine's `policies_index` at the last comparison.
    policies_checked: Option<u64>,
    /// The bounds the leader puts in purges (`jobs.retention` and kin).
    retention: crate::command::Retention,
    /// How long audit records are kept (`jobs.audit_retention`), in ms.
    audit_keep_ms: u64,
    /// When to look again whether a purge is due, after one was not.
    purge_check_at: std::time::Instant,
    node_id: u64,
    /// Readies written to sled, on their way to the flusher thread.
    persist: Persistence,
    /// Disk and memory alarms: a leader takes no new work while one stands.
    pressure: Arc<Pressure>,
    /// Schedule fires held back by an alarm (logged once per hold).
    fires_held: bool,
    /// Members removed, by the index of the change that removed each.
    removed_members: std::collections::BTreeMap<u64, u64>,
    /// Why this node counts itself removed from the cluster: it then takes
    /// no raft ticks, so it never campaigns.
    removed: Option<String>,
    /// Since when the log says this node is removed (see `check_removed`).
    removal_seen: Option<std::time::Instant>,
    removed_tx: watch::Sender<Option<String>>,
    incarnation: crate::cluster::identity::Incarnation,
    /// The log's clock: this node advances it while leading.
    log_time: Arc<LogTime>,
    /// Peers' wall clocks: a node far from the majority's does not lead.
    clocks: Arc<crate::cluster::clocks::Clocks>,
    /// Whether this node led at the last look (see `notice_role`).
    leading: bool,
    /// Why this node's clock keeps it from leading, while it does.
    skew: Option<crate::cluster::clocks::Skew>,
    /// When a skewed leader last asked to hand leadership away.
    skew_transfer_at: Option<std::time::Instant>,
}

/// Drops machine trees left by a snapshot install that a crash interrupted.
fn drop_stale_machine_trees(db: &sled::Db, active: &str) {
    for name in db.tree_names() {
        let name = String::from_utf8_lossy(&name).into_owned();
        if name.starts_with(DEFAULT_MACHINE_TREE) && name != active {
            tracing::info!(tree = %name, "dropping a machine tree left by an interrupted snapshot install");
            let _ = db.drop_tree(name.as_bytes());
        }
    }
}

/// Opens raft and the machine on `db`, bootstraps a new cluster if the store
/// is empty, and starts the driver thread. The returned receiver yields once
/// the driver has stopped, with its error if it failed.
pub fn start(
    cfg: &Config,
    db: &Database,
    shutdown: watch::Receiver<bool>,
) -> Result<(DriverHandle, oneshot::Receiver<Result<(), DriverError>>), Error> {
    let mut store = RaftStore::open(db)?;
    let bootstrapping = store.is_new() && !cfg.join;
    if store.is_new() && cfg.join {
        tracing::info!(
            event = "waiting_to_join",
            node_id = cfg.node_id,
            "joining an existing cluster: waiting for its leader to add this node (drover cluster add)"
        );
    }
    if bootstrapping {
        let voters = cfg.initial_voters();
        tracing::info!(
            event = "cluster_bootstrapped",
            node_id = cfg.node_id,
            ?voters,
            "bootstrapped a new cluster"
        );
        let incarnation = crate::cluster::identity::for_bootstrap(&cfg.cluster_id, &voters);
        store.bootstrap(voters)?;
        store.set_incarnation(incarnation)?;
    }
    let incarnation = crate::cluster::identity::Incarnation::new(store.incarnation()?);
    let snap_dir = cfg.data_dir.join("snapshots");
    std::fs::create_dir_all(&snap_dir).map_err(|source| Error::DataDir {
        path: snap_dir.clone(),
        source,
    })?;
    // Snapshots received but never installed, or not finished writing
    // (the node stopped first).
    for e in std::fs::read_dir(&snap_dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("recv-") || name.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let tree_name = store.machine_tree()?;
    let format_floor = store.format_floor()?;
    drop_stale_machine_trees(db, &tree_name);
    for path in snapshot::list(&snap_dir) {
        match snapshot::read_meta(&path) {
            Ok(meta) => {
                store.set_latest_snapshot(meta, path);
                break;
            }
            Err(e) => {
                tracing::warn!(event = "snapshot_unreadable", error = %e, "ignoring a damaged snapshot file")
            }
        }
    }
    let mut machine = Machine::open(db.open_tree(&tree_name).map_err(StoreError::from)?)?;
    if bootstrapping {
        // The machine starts where the bootstrapped log does.
        machine.apply_noop(INIT_INDEX, INIT_INDEX);
        machine.commit()?;
    }
    let meta = machine.meta();
    // The machine only ever applies committed entries, so its applied index
    // is committed even if the hard state's commit did not reach the disk.
    if store.hard_state().commit < meta.applied_index {
        store.set_commit(meta.applied_index)?;
    }
    let raft_cfg = raft::Config {
        id: cfg.node_id,
        election_tick: cfg.raft.election_ticks,
        heartbeat_tick: cfg.raft.heartbeat_ticks,
        applied: meta.applied_index,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    raft_cfg.validate().map_err(|e| {
        Error::Config(crate::config::ConfigError::Invalid {
            key: "raft",
            reason: e.to_string(),
        })
    })?;
    let store_snapshot_index = store.latest_snapshot().map_or(0, |(m, _)| m.index);
    let logger = slog::Logger::root(TracingDrain, slog::o!());
    let mut raw = RawNode::new(&raft_cfg, store, &logger).map_err(|e| {
        Error::Store(StoreError::Corrupt {
            key: "raft".into(),
            reason: e.to_string(),
        })
    })?;
    let single_voter = raw.raft.prs().conf().voters().ids().len() == 1;
    if single_voter {
        // Nobody to wait for: become leader now instead of after an election timeout.
        let _ = raw.campaign();
    }

    let (tx, rx) = mpsc::channel(MAX_PROPOSALS_PER_READY * 4);
    let (control_tx, control) = mpsc::channel(CONTROL_QUEUE);
    let mut addrs: std::collections::BTreeMap<u64, String> =
        cfg.peers.iter().map(|p| (p.id, p.addr.clone())).collect();
    addrs.extend(raw.store().addresses()?);
    let raw_removed = raw.store().removed()?;
    let pressure = Pressure::from_config(cfg);
    pressure.sample();
    let log_time = Arc::new(LogTime::new(
        machine.meta().last_at_ms,
        std::time::Instant::now(),
    ));
    let clocks = Arc::new(crate::cluster::clocks::Clocks::new(
        cfg.node_id,
        cfg.cluster.max_clock_offset,
    ));
    let transport = Transport::start(
        cfg,
        &addrs,
        control_tx.clone(),
        pressure.clone(),
        incarnation.clone(),
        log_time.clone(),
    );
    let (status_tx, status) = watch::channel(NodeStatus::default());
    let (removed_tx, removed_rx) = watch::channel(None);
    let (stats_tx, stats) = watch::channel(Arc::new(machine.stats()));
    // Rare (timeouts and expiries); a session that lags behind learns of
    // its lost leases from its next heartbeat instead.
    let (revoked_tx, _) = tokio::sync::broadcast::channel(64);
    let turned_at = Arc::new(std::sync::atomic::AtomicU64::new(mono_ms()));
    let peer_formats = PeerFormats::default();
    let handle = DriverHandle {
        peer_formats: peer_formats.clone(),
        tx,
        control: control_tx,
        status,
        stats,
        revoked: revoked_tx.clone(),
        turned_at: turned_at.clone(),
        reader: machine.reader(),
        retry_after_ms: (cfg.raft.tick_interval * cfg.raft.election_ticks as u32).as_millis()
            as u64,
        pressure: pressure.clone(),
        incarnation: incarnation.clone(),
        removed: removed_rx,
        log_time: log_time.clone(),
        clocks: clocks.clone(),
    };
    let persist = Persistence::start(db.clone()).map_err(|e| {
        Error::Store(StoreError::Corrupt {
            key: "thread".into(),
            reason: e.to_string(),
        })
    })?;
    let last_snapshot_index = store_snapshot_index.max(meta.applied_index);
    // Entries already in the log (replayed after a restart) were set before
    // this node was asked for its config's policies.
    let asked_at = raw.raft.raft_log.last_index();
    let driver = Driver {
        reads: ReadWaiters::default(),
        addrs,
        db: db.clone(),
        snapshots: Snapshots::new(snap_dir, cfg.raft.snapshot_every, last_snapshot_index),
        persist,
        raw,
        machine,
        rx,
        control,
        transport,
        pending: Pending::default(),
        status_tx,
        stats_tx,
        revoked_tx,
        job_times: Default::default(),
        entry_version: cfg.entry_version,
        peer_formats,
        writing_version: crate::command::ENTRY_VERSION.min(cfg.entry_version),
        format_floor,
        turned_at,
        shutdown,
        tick_interval: cfg.raft.tick_interval,
        log_keep: cfg.raft.log_keep_entries,
        log_keep_bytes: cfg.raft.log_keep_bytes.as_u64(),
        max_inflight: cfg.raft.max_inflight_entries,
        tick_in_flight: None,
        fire_in_flight: None,
        crons: std::collections::HashMap::new(),
        upkeep_in_flight: None,
        policies: cfg.policies(),
        policies_warned: None,
        policies_asked: Some(asked_at),
        policies_checked: None,
        retention: cfg.jobs.retention(),
        audit_keep_ms: u64::try_from(cfg.jobs.audit_retention.as_millis()).unwrap_or(u64::MAX),
        purge_check_at: std::time::Instant::now(),
        node_id: cfg.node_id,
        pressure,
        fires_held: false,
        removed: None,
        removed_members: raw_removed,
        removal_seen: None,
        incarnation,
        removed_tx,
        log_time,
        clocks,
        leading: false,
        skew: None,
        skew_transfer_at: None,
    };
    let (done_tx, done) = oneshot::channel();
    // The driver never blocks on the disk (the flusher thread does), so it
    // runs as a task among the API's: waking a request's task on the same
    // runtime is far cheaper than waking another thread per reply.
    tokio::spawn(async move {
        let result = driver.run().await;
        if let Err(e) = &result {
            tracing::error!(event = "raft_driver_failed", error = %e, "raft driver stopped");
        }
        let _ = done_tx.send(result);
    });
    Ok((handle, done))
}

impl Driver {
    async fn run(mut self) -> Result<(), DriverError> {
        let mut ticker = tokio::time::interval(self.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.handle_ready()?;
        self.publish_status();
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                persisted = self.persist.next() => match persisted {
                    Some(Ok(number)) => self.on_persisted(number),
                    Some(Err(e)) => return Err(DriverError::Store(e.into())),
                    None => return Err(DriverError::Flusher("the flusher thread stopped".into())),
                },
                _ = ticker.tick() => {
                    self.turned_at.store(mono_ms(), std::sync::atomic::Ordering::Relaxed);
                    // Reads raft dropped (no leader) whose waiters gave up.
                    self.reads.drop_abandoned();
                    // A removed node takes no ticks: it never campaigns,
                    // so it cannot disturb the cluster it left.
                    self.check_removed();
                    self.check_clock();
                    // A node whose clock is off takes no ticks while it
                    // follows, so it never campaigns.
                    if self.removed.is_none() && (self.skew.is_none() || self.leading) {
                        self.raw.tick();
                    }
                    self.propose_tick_if_due();
                }
                written = self.snapshots.next_written() => self.on_snapshot_written(written),
                c = self.control.recv() => {
                    let Some(c) = c else { break };
                    self.on_control(c);
                    for _ in 1..MAX_STEPS_PER_READY {
                        match self.control.try_recv() {
                            Ok(c) => self.on_control(c),
                            Err(_) => break,
                        }
                    }
                }
                p = self.rx.recv(), if self.takes_proposals() => {
                    let Some(p) = p else { break };
                    let mut turn = vec![p];
                    while turn.len() < MAX_PROPOSALS_PER_READY {
                        match self.rx.try_recv() {
                            Ok(p) => turn.push(p),
                            Err(_) => break,
                        }
                    }
                    self.propose_all(turn);
                }
            }
            // Handled even while a flush is in flight: new entries go to
            // sled and the flusher folds them into its next flush (group
            // commit), and messages and reads are not held up by the disk.
            // (raft-rs still applies only entries this node has persisted.)
            // Waiting for the flush instead measured 10-20% more CPU per job
            // on 3 nodes.
            self.notice_role();
            self.reconcile_policies();
            self.propose_purge_if_due();
            self.propose_due_slots();
            self.handle_ready()?;
            self.publish_status();
        }
        // These are in the log: another node may still commit them.
        self.pending.stopping();
        Ok(())
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Step(msg) => {
                let from = msg.from;
                if let Err(e) = self.raw.step(msg) {
                    tracing::debug!(from, error = %e, "raft message not stepped");
                }
            }
            Control::Unreachable(id) => self.raw.report_unreachable(id),
            Control::Incarnation(value) => {
                // The peer service took it already (adopt); keep it.
                match self.raw.mut_store().set_incarnation(value) {
                    Ok(()) => {
                        tracing::info!(event = "incarnation_adopted", incarnation = %crate::cluster::identity::show(value), "joined a cluster: took its incarnation")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot keep the cluster's incarnation; it is taken again at the next start")
                    }
                }
            }
            Control::Removed { by, at, reason } => {
                // Believed only of a removal this node has not applied yet
                // while it counts itself a member: a node not yet added
                // (joining) or added again since (applied past `at`) is
                // merely talking to a peer that lags behind.
                let member = {
                    let conf = self.raw.raft.prs().conf();
                    conf.voters().contains(self.node_id) || conf.learners().contains(&self.node_id)
                };
                if member && self.machine.meta().applied_index < at {
                    self.mark_removed(format!("node {by} says: {reason}"));
                }
            }

            Control::TransferLeader(id) => self.raw.transfer_leader(id),
            Control::SnapshotSent { to, ok } => {
                let status = if ok {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            Control::ReadIndex(reply) => {
                // raft drops reads until a new leader has committed in its
                // term; those are asked once it has.
                let defer = self.raw.raft.state == StateRole::Leader
                    && !self.raw.raft.commit_to_current_term();
                if let Some(ctx) = self.reads.add(reply, defer) {
                    self.raw.read_index(ctx);
                }
            }
            Control::TakeSnapshot(reply) => self.take_snapshot(Some(reply)),
            Control::FindJobs(query, after, reply) => {
                let _ = reply.send(self.machine.live_job_ids(&query, after));
            }
            Control::Policies(p) => {
                self.policies = *p;
                self.policies_warned = None;
                self.policies_asked = Some(self.raw.raft.raft_log.last_index());
            }
        }
    }

    /// The leader proposes the slots of schedules that are due (by its
    /// clock), one entry at a time; the machine fires each slot once.
    fn propose_due_slots(&mut self) {
        if self.raw.raft.state != StateRole::Leader
            || self.fire_in_flight.is_some()
            || !self.raw.raft.commit_to_current_term()
            || self.machine.policies().schedules.is_empty()
        {
            return;
        }
        // A fire is new work: held while an alarm stands, and fired (as
        // each schedule's misfire rule says) once it clears.
        match self.refusal() {
            Some(r) => {
                if !self.fires_held {
                    tracing::warn!(event = "schedules_held", reason = %r, "schedule fires wait until the alarm clears");
                    self.fires_held = true;
                }
                return;
            }
            None if self.fires_held => {
                tracing::info!(event = "schedules_resumed", "schedule fires go on");
                self.fires_held = false;
            }
            None => {}
        }
        let now = self.log_now();
        let mut commands = Vec::new();
        for (name, policy) in &self.machine.policies().schedules {
            let key = (policy.cron.clone(), policy.timezone.clone());
            let parsed = self.crons.entry(key).or_insert_with(|| {
                crate::schedules::parse(&policy.cron, &policy.timezone)
                    .map_err(|e| {
                        // Once per expression, not per turn.
                        tracing::error!(event = "schedule_invalid", schedule = %name, error = %e, "cannot work out this schedule's slots");
                    })
                    .ok()
            });
            let Some(parsed) = parsed.as_ref() else {
                continue;
            };
            let last = self
                .machine
                .schedules()
                .get(name)
                .map_or(0, |s| s.last_slot_ms);
            if let Some((slot_ms, enqueue)) =
                crate::schedules::due(parsed, last, policy.run_once, now)
            {
                commands.push(Command::Fire {
                    schedule: name.clone(),
                    slot_ms,
                    enqueue,
                });
            }
        }
        if !commands.is_empty() {
            let replies = commands.iter().map(|_| None).collect();
            self.propose(commands, replies);
        }
    }

    /// Brings the machine's policies to what this node's config says: the
    /// leader proposes them; a follower never applies its own, and says once
    /// which keys its file has otherwise.
    fn reconcile_policies(&mut self) {
        // Runs every turn: compare the (possibly large) policies only when
        // this node was asked for its own or the cluster's changed since the
        // last look.
        let index = self.machine.policies_index();
        if self.policies_asked.is_none() && self.policies_checked == Some(index) {
            return;
        }
        self.policies_checked = Some(index);
        let current = self.machine.policies();
        if *current == self.policies {
            self.policies_asked = None;
            return;
        }
        // Another leader set the cluster's policies after this node was
        // asked for its own: theirs stand (a node that merely differs does
        // not override the cluster at each election).
        if self
            .policies_asked
            .is_some_and(|asked| self.machine.policies_index() > asked)
        {
            self.policies_asked = None;
        }
        if self.wants_own_policies() {
            if self.upkeep_in_flight.is_none() && self.raw.raft.commit_to_current_term() {
                tracing::info!(event = "policies_proposed", keys = ?current.differences(&self.policies), "proposing this node's config policies to the cluster");
                self.propose(
                    vec![Command::SetPolicies {
                        policies: self.policies.clone(),
                    }],
                    vec![None],
                );
            }
        } else if self.machine.policies_set() && self.policies_warned.as_ref() != Some(current) {
            tracing::warn!(event = "policies_differ", keys = ?current.differences(&self.policies), "this node's config file has other policies than the cluster applies; the cluster's stand (send SIGHUP to the leader after changing its file)");
            self.policies_warned = Some(current.clone());
        }
    }

    /// A leader asked (at start or by SIGHUP) to bring its config's
    /// policies to the cluster, and they are not applied yet.
    fn wants_own_policies(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
            && self.policies_asked.is_some()
            && *self.machine.policies() != self.policies
    }

    /// Whether to take new proposals now: a leader with
    /// `max_inflight_entries` uncommitted entries holds them back, so they
    /// pile up in the channel and go into one entry once one commits. That
    /// batches by how long replication takes, not by how fast requests come.
    /// Other nodes refuse them at once, so they need no limit.
    fn takes_proposals(&self) -> bool {
        // A leader whose config asks for other policies holds requests
        // until the cluster applies them, so nothing is admitted or leased
        // under the old ones after a start or a reload.
        if self.wants_own_policies() {
            return false;
        }
        if self.max_inflight == 0 || self.raw.raft.state != StateRole::Leader {
            return true;
        }
        let log = &self.raw.raft.raft_log;
        log.last_index().saturating_sub(log.committed) < self.max_inflight
    }

    /// Proposes what one turn of the loop took in: the commands in as few
    /// entries as [`MAX_ENTRY_BYTES`] allows, membership changes each alone.
    fn propose_all(&mut self, turn: Vec<Proposal>) {
        let mut commands = Vec::new();
        let mut replies = Vec::new();
        let mut bytes = 0;
        // Judged once a turn, and only when the turn holds new work.
        let mut refusal = None;
        for p in turn {
            match p.what {
                Proposed::Member(m) => self.propose_member(m, p.reply),
                Proposed::Command(Command::Enqueue { .. })
                    if refusal.get_or_insert_with(|| self.refusal()).is_some() =>
                {
                    if let Some(Some(r)) = &refusal {
                        let _ = p.reply.send(Err(Error::Pressure(r.clone())));
                    }
                }
                Proposed::Command(c) => {
                    let size = c.approx_bytes();
                    if !commands.is_empty() && bytes + size > MAX_ENTRY_BYTES {
                        self.propose(std::mem::take(&mut commands), std::mem::take(&mut replies));
                        bytes = 0;
                    }
                    bytes += size;
                    commands.push(c);
                    replies.push(Some(p.reply));
                }
            }
        }
        if !commands.is_empty() {
            self.propose(commands, replies);
        }
    }

    /// Proposes a conf change, carrying a new member's address in its
    /// context so every node learns where to reach it.
    fn propose_member(&mut self, change: MemberChange, reply: Reply) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(Error::NoLeader {
                retry_after_ms: self.tick_interval.as_millis() as u64 * 5,
            }));
            return;
        }
        let mut cc = ConfChange::default();
        match &change {
            MemberChange::AddLearner { id, addr } => {
                cc.set_change_type(ConfChangeType::AddLearnerNode);
                cc.node_id = *id;
                cc.context = addr.clone().into_bytes().into();
            }
            MemberChange::Promote { id } => {
                cc.set_change_type(ConfChangeType::AddNode);
                cc.node_id = *id;
            }
            MemberChange::Remove { id } => {
                cc.set_change_type(ConfChangeType::RemoveNode);
                cc.node_id = *id;
            }
        }
        if self.raw.raft.has_pending_conf() {
            // raft would turn the change into an empty entry.
            let _ = reply.send(Err(Error::MembershipBusy));
            return;
        }
        let before = self.raw.raft.raft_log.last_index();
        match self.raw.propose_conf_change(vec![], cc) {
            Ok(()) if self.raw.raft.raft_log.last_index() > before => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                tracing::info!(
                    event = "membership_change_proposed",
                    ?change,
                    index,
                    "proposed a membership change"
                );
                self.pending.insert(index, term, vec![Some(reply)], true);
            }
            _ => {
                let _ = reply.send(Err(Error::MembershipBusy));
            }
        }
    }

    /// Proposes `commands` as one entry; `replies` holds one waiter (or
    /// None) per command.
    fn propose(&mut self, commands: Vec<Command>, replies: Vec<Option<Reply>>) {
        let retry_after_ms = self.tick_interval.as_millis() as u64 * 5;
        let refuse = |replies| fail_all(replies, || Error::NoLeader { retry_after_ms });
        if self.raw.raft.state != StateRole::Leader {
            // A follower would forward it to the leader inside raft, where
            // its outcome could never come back to us.
            return refuse(replies);
        }
        let format = self.write_version();
        let (commands, replies) = for_format(commands, replies, format);
        if commands.is_empty() {
            return;
        }
        let ticks = commands.iter().any(|c| matches!(c, Command::Tick));
        let fires = commands.iter().any(|c| matches!(c, Command::Fire { .. }));
        let purges = commands.iter().any(|c| {
            matches!(
                c,
                Command::Purge { .. } | Command::PurgeAudit { .. } | Command::SetPolicies { .. }
            )
        });
        metrics::histogram!(crate::metrics::COMMANDS_PER_ENTRY).record(commands.len() as f64);
        let entry = LogEntry {
            at_ms: self.log_now(),
            commands,
        };
        let data = bincode::serde::encode_to_vec(&entry, bincode::config::standard())
            .expect("bincode encoding of in-memory values cannot fail");
        match self.raw.propose(vec![format], data) {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                self.pending.insert(index, term, replies, false);
                if ticks {
                    self.tick_in_flight = Some(index);
                }
                if fires {
                    self.fire_in_flight = Some(index);
                }
                if purges {
                    self.upkeep_in_flight = Some(index);
                }
            }
            Err(_) => refuse(replies),
        }
    }

    /// The leader proposes a Tick when a lease or a delayed job is due, so an
    /// idle cluster writes nothing to its log.
    fn propose_tick_if_due(&mut self) {
        if self.raw.raft.state != StateRole::Leader || self.tick_in_flight.is_some() {
            return;
        }
        let Some(due) = self.machine.next_due_ms() else {
            return self.propose_purge_if_due();
        };
        if due <= self.log_now() {
            self.propose(vec![Command::Tick], vec![None]);
        }
        self.propose_purge_if_due();
    }

    /// The leader proposes a purge when finished jobs or idempotency records
    /// are past their retention: one bounded slice at a time, the next as
    /// soon as the last applied, and a look once a second when none was due.
    fn propose_purge_if_due(&mut self) {
        // New policies go first: requests wait for them, purges can wait.
        if self.wants_own_policies()
            || self.raw.raft.state != StateRole::Leader
            || self.upkeep_in_flight.is_some()
            || std::time::Instant::now() < self.purge_check_at
        {
            return;
        }
        let now = self.log_now();
        let due = self
            .machine
            .purge_due(now, &self.retention)
            .and_then(|jobs| Ok((jobs, self.machine.audit_purge_due(now, self.audit_keep_ms)?)));
        match due {
            Ok((false, false)) => {
                self.purge_check_at = std::time::Instant::now() + PURGE_CHECK_EVERY;
            }
            Ok((jobs, audit)) => {
                let mut commands = Vec::new();
                if jobs {
                    commands.push(Command::Purge {
                        retention: self.retention,
                        limit: PURGE_SLICE,
                    });
                }
                if audit {
                    commands.push(Command::PurgeAudit {
                        keep_ms: self.audit_keep_ms,
                        limit: PURGE_SLICE,
                    });
                }
                let replies = commands.iter().map(|_| None).collect();
                self.propose(commands, replies);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whether a purge is due");
                self.purge_check_at = std::time::Instant::now() + PURGE_CHECK_EVERY;
            }
        }
    }

    fn handle_ready(&mut self) -> Result<(), DriverError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        self.send(rd.take_messages());
        for rs in rd.take_read_states() {
            self.reads.answer(&rs.request_ctx, rs.index);
        }
        if !rd.snapshot().is_empty() {
            return self.handle_snapshot_ready(rd);
        }
        let committed = rd.take_committed_entries();
        self.apply(committed)?;
        self.maybe_take_snapshot();
        let entries = rd.take_entries();
        let hs = rd.hs().cloned();
        let must_sync = rd.must_sync();
        self.supersede(&entries);
        if !entries.is_empty() || hs.is_some() {
            self.raw.mut_store().write(&entries, hs.as_ref())?;
        }
        let number = rd.number();
        let persisted_messages = rd.take_persisted_messages();
        // Entries are readable by raft now and durable once the flusher says
        // so; meanwhile this loop goes on taking proposals, which the next
        // flush covers. That is the pipelined half of group commit.
        self.raw.advance_append_async(rd);
        self.raw.advance_apply();
        // raft takes new reads only between Readies.
        self.release_deferred_reads();
        let now = self
            .persist
            .written(number, must_sync, persisted_messages)
            .map_err(|_| DriverError::Flusher("the flusher thread is gone".into()))?;
        // Nothing new must be durable (a commit index, entries to apply).
        if let Some(number) = now {
            self.on_persisted(number);
        }
        Ok(())
    }

    /// Answers proposals whose entries a new leader's entries replace: they
    /// will never apply. Called before `entries` overwrite the log.
    fn supersede(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        if first.index > raft::Storage::last_index(self.raw.store()).unwrap_or(0)
            || self.pending.is_empty()
        {
            return;
        }
        // A Tick or Purge among the replaced entries will never apply.
        if self.tick_in_flight.is_some_and(|i| i >= first.index) {
            self.tick_in_flight = None;
        }
        if self.fire_in_flight.is_some_and(|i| i >= first.index) {
            self.fire_in_flight = None;
        }
        if self.upkeep_in_flight.is_some_and(|i| i >= first.index) {
            self.upkeep_in_flight = None;
        }
        self.pending.supersede(first.index, |idx| {
            entries.get((idx - first.index) as usize).map(|e| e.term)
        });
    }

    fn release_deferred_reads(&mut self) {
        let leader = self.raw.raft.state == StateRole::Leader;
        let committed = leader && self.raw.raft.commit_to_current_term();
        for ctx in self.reads.release(leader, committed) {
            self.raw.read_index(ctx);
        }
    }

    /// A Ready that installs a snapshot is handled synchronously: raft may
    /// count the snapshot as applied only once it is persisted. Whatever an
    /// earlier Ready left to the flusher is made durable first.
    fn handle_snapshot_ready(&mut self, mut rd: raft::Ready) -> Result<(), DriverError> {
        if let Some(n) = self.persist.awaiting() {
            self.raw.store().flush()?;
            self.on_persisted(n);
        }
        self.install_snapshot(rd.snapshot())?;
        self.apply(rd.take_committed_entries())?;
        let entries = rd.take_entries();
        let hs = rd.hs().cloned();
        self.supersede(&entries);
        if !entries.is_empty() || hs.is_some() {
            self.raw.mut_store().write(&entries, hs.as_ref())?;
        }
        self.raw.store().flush()?;
        self.send(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        Ok(())
    }

    /// Called when everything written up to ready `number` is on disk.
    fn on_persisted(&mut self, number: u64) {
        let messages = self.persist.persisted(number);
        self.raw.on_persist_ready(number);
        self.send(messages);
    }

    fn send(&mut self, msgs: Vec<raft::eraftpb::Message>) {
        for m in msgs {
            self.transport.send(m);
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), DriverError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut replies = Vec::with_capacity(entries.len());
        for entry in entries {
            let (index, term) = (entry.index, entry.term);
            // Set for conf change entries: whether raft took the change.
            let mut membership = None;
            let outcomes = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    self.machine.apply_noop(index, term);
                    vec![Outcome::Noop]
                }
                EntryType::EntryNormal => {
                    // An entry this build cannot read stops the node: skipping
                    // it would leave this node's state behind the others'.
                    let found = crate::command::entry_version(&entry.context);
                    if found > self.entry_version {
                        return Err(DriverError::EntryTooNew {
                            index,
                            found,
                            reads: self.entry_version,
                        });
                    }
                    if found > self.format_floor {
                        self.format_floor = found;
                        self.raw.mut_store().set_format_floor(found)?;
                    }
                    // Every byte must be read: a shorter parse is an entry
                    // of another format that only looks like one of ours.
                    let decoded = bincode::serde::decode_from_slice::<LogEntry, _>(
                        &entry.data,
                        bincode::config::standard(),
                    )
                    .map_err(|e| e.to_string())
                    .and_then(|(log_entry, read)| {
                        if read == entry.data.len() {
                            Ok(log_entry)
                        } else {
                            Err(format!(
                                "{} trailing bytes after the entry: written by another drover version?",
                                entry.data.len() - read
                            ))
                        }
                    });
                    match decoded {
                        Ok(log_entry) => self.machine.apply(index, term, &log_entry)?,
                        Err(e) => {
                            // Every node decodes the same bytes the same way,
                            // so skipping keeps them equal.
                            tracing::error!(event = "entry_undecodable", index, error = %e, "skipping a log entry that does not decode");
                            self.machine.apply_noop(index, term);
                            vec![Outcome::Rejected(Refusal::Undecodable { index, reason: e })]
                        }
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    membership = Some(self.apply_conf_change(&entry)?);
                    self.machine.apply_noop(index, term);
                    vec![Outcome::Noop]
                }
            };
            if self.tick_in_flight.is_some_and(|i| i <= index) {
                self.tick_in_flight = None;
            }
            if self.fire_in_flight.is_some_and(|i| i <= index) {
                self.fire_in_flight = None;
            }
            if self.upkeep_in_flight.is_some_and(|i| i <= index) {
                self.upkeep_in_flight = None;
            }
            replies.push((index, term, outcomes, membership));
            // Commits at entry boundaries, so each batch is still atomic with
            // the applied index it carries.
            if self.machine.wants_commit() {
                self.machine.commit()?;
            }
        }
        self.machine.commit()?;
        // Publish before replying, so whoever is answered sees the new state.
        self.job_times.record(self.machine.take_observations());
        let revoked = self.machine.take_lease_events();
        for e in &revoked {
            tracing::warn!(event = e.event, what = e.what, job_id = e.job_id, queue = %e.queue, worker = %e.worker, attempt = e.attempt, "a lease ended without a result");
        }
        for e in self.machine.take_run_events() {
            match e {
                crate::machine::runs::RunEvent::BudgetExceeded { tenant, run, over } => {
                    tracing::warn!(event = "budget_exceeded", %tenant, %run, budget = over.budget, usage = %over.describe(), "a budget is used up: its jobs are held until an override (drover runs override) or a higher limit");
                }
                crate::machine::runs::RunEvent::Finished { uses, .. } => {
                    for u in uses {
                        metrics::histogram!(crate::metrics::RUN_BUDGET_RATIO, "budget" => u.budget)
                            .record(u.ratio());
                    }
                }
            }
        }
        if !revoked.is_empty() && self.revoked_tx.receiver_count() > 0 {
            let _ = self.revoked_tx.send(revoked.into());
        }
        let stats = Arc::new(self.machine.stats());
        log_breaker_changes(&self.stats_tx.borrow().breakers, &stats.breakers);
        self.stats_tx.send_replace(stats);
        for (index, term, outcomes, membership) in replies {
            let membership = membership.map(|m| match m {
                Ok(()) => MemberOutcome::Applied,
                Err(reason) => MemberOutcome::Refused(reason),
            });
            self.pending.applied(index, term, outcomes, membership);
        }
        self.compact_log()?;
        Ok(())
    }

    /// Takes a snapshot every `snapshot_every` applied entries, and when raft
    /// wanted one to send that we did not have.
    fn maybe_take_snapshot(&mut self) {
        let applied = self.machine.meta().applied_index;
        let store = self.raw.store();
        let latest = store.latest_snapshot().map_or(0, |(m, _)| m.index);
        if self.snapshots.due(applied, store.snapshot_wanted(), latest) {
            self.take_snapshot(None);
        }
    }

    /// Starts writing a snapshot of the machine's committed state off the
    /// loop (see [`snapshots`]), or answers `waiter` with the newest file
    /// if nothing was applied since. Runs between Readies, when nothing is
    /// staged, so the read starts at exactly the applied state.
    fn take_snapshot(&mut self, waiter: Option<snapshots::Waiter>) {
        let meta = self.machine.meta();
        if let Some((m, p)) = self.raw.store().latest_snapshot() {
            if m.index == meta.applied_index && p.exists() {
                if let Some(w) = waiter {
                    let _ = w.send(Ok(p.clone()));
                }
                return;
            }
        }
        let snap = SnapshotMeta {
            index: meta.applied_index,
            term: meta.applied_term,
            conf_state: self.raw.raft.prs().conf().to_conf_state(),
            addrs: self.addrs.clone(),
        };
        if let Err(e) = self.snapshots.start(&mut self.machine, snap) {
            tracing::error!(event = "snapshot_failed", error = %e, "could not start a snapshot");
            if let Some(w) = waiter {
                let _ = w.send(Err(Error::Driver(format!("snapshot failed: {e}"))));
            }
            return;
        }
        if let Some(w) = waiter {
            // Joins the snapshot just started, or the one already running.
            self.snapshots.wait(w);
        }
    }

    /// A snapshot the writer thread finished: offered to raft (and the log
    /// compacted behind it) unless an installed one is newer.
    fn on_snapshot_written(&mut self, written: snapshots::Written) {
        let Some(taken) = self.snapshots.finished(written) else {
            return;
        };
        let newer = self
            .raw
            .store()
            .latest_snapshot()
            .is_some_and(|(m, _)| m.index >= taken.meta.index);
        if !newer {
            self.raw
                .mut_store()
                .set_latest_snapshot(taken.meta, taken.path);
        }
        self.snapshots.prune();
    }

    /// Replaces this node's state with a snapshot the leader sent: loads it
    /// into a fresh tree, then switches the machine and moves the log past
    /// it in one flushed batch, so a crash leaves the old state or the new.
    fn install_snapshot(&mut self, snap: &raft::eraftpb::Snapshot) -> Result<(), DriverError> {
        let received = PathBuf::from(String::from_utf8_lossy(&snap.data).into_owned());
        let md = snap.get_metadata();
        let name = format!("{DEFAULT_MACHINE_TREE}.{}", md.index);
        let started = std::time::Instant::now();
        self.db
            .drop_tree(name.as_bytes())
            .map_err(StoreError::from)?;
        let tree = self.db.open_tree(&name).map_err(StoreError::from)?;
        let meta = snapshot::load(&received, &tree)?;
        crate::machine::check_layout(&tree)?;
        if meta.index != md.index || meta.term != md.term {
            return Err(DriverError::Snapshot(SnapshotError::Corrupt {
                path: received,
                reason: format!(
                    "file is at ({}, {}) but raft installs ({}, {})",
                    meta.index, meta.term, md.index, md.term
                ),
            }));
        }
        self.db.flush().map_err(StoreError::from)?;
        let old = self.raw.store().machine_tree()?;
        self.raw.mut_store().apply_snapshot(&meta, &name)?;
        self.machine.replace_tree(tree)?;
        for (id, addr) in &meta.addrs {
            if self.addrs.get(id) != Some(addr) {
                self.addrs.insert(*id, addr.clone());
                if *id != self.node_id {
                    self.transport.add_peer(*id, addr);
                }
            }
        }
        self.raw.mut_store().set_addresses(&self.addrs)?;
        // The replaced tree stays until the next start (see
        // drop_stale_machine_trees): readers may still hold it.
        let _ = old;
        // The received file becomes ours to offer if this node leads later.
        let kept = snapshot::path_for(self.snapshots.dir(), meta.index, meta.term);
        match std::fs::rename(&received, &kept) {
            Ok(()) => {
                self.raw.mut_store().set_latest_snapshot(meta.clone(), kept);
                self.snapshots.prune();
            }
            Err(e) => tracing::warn!(error = %e, "cannot keep the installed snapshot file"),
        }
        self.snapshots.installed(meta.index);
        // Proposals this node made as leader that the snapshot jumped over:
        // whether they committed is not known here.
        self.pending.covered_by_snapshot(meta.index);
        tracing::info!(
            event = "snapshot_installed",
            index = meta.index,
            term = meta.term,
            ms = started.elapsed().as_millis() as u64,
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    /// Applies a conf change: raft's membership, and the address book that
    /// the transport and the router use. One that raft refuses (it would
    /// remove the last voter, say) is refused the same way on every node,
    /// so it is logged and skipped.
    fn apply_conf_change(&mut self, entry: &Entry) -> Result<Result<(), String>, DriverError> {
        use protobuf::Message as _;
        let corrupt = |e: protobuf::ProtobufError| StoreError::Corrupt {
            key: format!("raft/e/{}", entry.index),
            reason: e.to_string(),
        };
        let result = if entry.get_entry_type() == EntryType::EntryConfChangeV2 {
            let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(corrupt)?;
            self.raw.apply_conf_change(&cc)
        } else {
            let cc = ConfChange::parse_from_bytes(&entry.data).map_err(corrupt)?;
            let result = self.raw.apply_conf_change(&cc);
            if result.is_ok() {
                let id = cc.node_id;
                match cc.get_change_type() {
                    ConfChangeType::AddNode | ConfChangeType::AddLearnerNode
                        if !cc.context.is_empty() =>
                    {
                        let addr = String::from_utf8_lossy(&cc.context).into_owned();
                        self.addrs.insert(id, addr.clone());
                        if id != self.node_id {
                            self.transport.add_peer(id, &addr);
                        }
                    }
                    ConfChangeType::RemoveNode => {
                        self.addrs.remove(&id);
                        self.transport.remove_peer(id);
                        // This node's own removal is acted on by
                        // `check_removed`, once it stands.
                        self.removed_members.insert(id, entry.index);
                    }
                    _ => {}
                }
                if matches!(
                    cc.get_change_type(),
                    ConfChangeType::AddNode | ConfChangeType::AddLearnerNode
                ) {
                    self.removed_members.remove(&id);
                }
                self.raw.mut_store().set_addresses(&self.addrs)?;
                self.raw.mut_store().set_removed(&self.removed_members)?;
            }
            result
        };
        match result {
            Ok(cs) => {
                tracing::info!(event = "membership_changed", index = entry.index, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
                self.raw.mut_store().set_conf_state(cs)?;
                Ok(Ok(()))
            }
            Err(e) => {
                tracing::error!(event = "membership_change_refused", index = entry.index, error = %e, "raft refused a membership change; skipped on every node");
                Ok(Err(format!("raft refused the membership change: {e}")))
            }
        }
    }

    /// Keeps the log from growing without bound: everything applied more than
    /// `log_keep` entries ago is dropped, once another `log_keep` entries
    /// have been applied, and applied entries past `log_keep_bytes` as soon
    /// as they are; [`COMPACT_STEP`] entries per Ready. A leader keeps what
    /// its slowest follower still needs, so a follower that was down catches
    /// up from the log (or, past the byte bound, from a snapshot).
    fn compact_log(&mut self) -> Result<(), DriverError> {
        let applied = self.machine.meta().applied_index;
        let store = self.raw.store();
        let by_bytes = store.index_keeping_bytes(self.log_keep_bytes).min(applied);
        let by_count = applied.saturating_sub(self.log_keep);
        let batch_from = if by_bytes > store.compacted_index() {
            store.compacted_index()
        } else {
            store.compacted_index() + self.log_keep
        };
        let mut upto = by_count.max(by_bytes);
        if self.raw.raft.state == StateRole::Leader {
            // Keep what the slowest follower needs, unless a snapshot covers it.
            let slowest = self
                .raw
                .raft
                .prs()
                .iter()
                .map(|(_, p)| p.matched)
                .min()
                .unwrap_or(applied);
            let on_disk = self
                .raw
                .store()
                .latest_snapshot()
                .map_or(0, |(m, _)| m.index);
            let needed = slowest.max(on_disk);
            if by_bytes > needed && applied > on_disk && self.snapshots.may_start() {
                // A follower lags past the byte bound: a snapshot lets the
                // log go, and is what that follower will need anyway.
                self.take_snapshot(None);
            }
            upto = upto.min(needed);
        }
        let store = self.raw.mut_store();
        if upto > batch_from {
            // A bounded step per Ready, so compaction never stalls the loop.
            store.compact(upto.min(store.compacted_index() + COMPACT_STEP))?;
        }
        Ok(())
    }

    /// The entry format to write: the newest every member (voters and
    /// learners) applies. A member not heard from yet counts as format 1,
    /// which every build applies, unless the log already holds a newer
    /// format: every voter applied that, so it is never written below.
    fn write_version(&mut self) -> u8 {
        let me = self.raw.raft.id;
        let heard = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(&id, _)| match id {
                id if id == me => self.entry_version,
                id => self.peer_formats.of(id),
            })
            .min()
            .unwrap_or(1);
        let version = heard.max(self.format_floor).clamp(1, self.entry_version);
        if version != self.writing_version {
            tracing::info!(
                event = "entry_version_changed",
                from = self.writing_version,
                to = version,
                "log entries are now written in another format: the oldest every voter applies"
            );
            self.writing_version = version;
        }
        version
    }

    /// The log's time now, as this node (leading) advances it toward the
    /// majority's wall clock.
    fn log_now(&mut self) -> u64 {
        self.notice_role();
        let now = std::time::Instant::now();
        let target = self.majority_wall_ms(now);
        self.log_time.advance(target, now)
    }

    fn voters(&self) -> Vec<u64> {
        self.raw.raft.prs().conf().voters().ids().iter().collect()
    }

    fn majority_wall_ms(&self, now: std::time::Instant) -> u64 {
        self.clocks.majority_wall_ms(&self.voters(), now_ms(), now)
    }

    /// Takes up leadership when raft gave it: the log's time continues
    /// from where it stands, and the first entry renews every lease.
    fn notice_role(&mut self) {
        let leader = self.raw.raft.state == StateRole::Leader;
        if leader == self.leading {
            return;
        }
        self.leading = leader;
        if !leader {
            self.log_time.follow();
            return;
        }
        let now = std::time::Instant::now();
        let wall = self.majority_wall_ms(now);
        let last = self.machine.meta().last_at_ms;
        let (start, anchor) = self.log_time.lead(last, wall, now);
        let wall_offset_ms = i128::from(start) - i128::from(now_ms());
        tracing::info!(event = "log_time_taken", log_ms = start, from = ?anchor, wall_offset_ms = wall_offset_ms as i64, term = self.raw.raft.term, "leading: the log's time goes on from here by this node's monotonic clock");
        self.propose(vec![Command::RenewLeases], vec![None]);
    }

    /// Judges this node's clock against the voters' (once a tick): while
    /// it is further than `max_clock_offset` from a majority's, the node
    /// does not campaign, and hands leadership to a peer if it leads.
    fn check_clock(&mut self) {
        let now = std::time::Instant::now();
        let skew = self.clocks.skew(&self.voters(), now);
        match (&self.skew, &skew) {
            (None, Some(s)) => {
                tracing::error!(
                    event = "clock_skewed",
                    offset_ms = s.offset_ms,
                    max_offset_ms = s.max_offset_ms,
                    "{s}"
                );
            }
            (Some(_), None) => {
                tracing::info!(event = "clock_skew_cleared", "this node's clock is back within max_clock_offset of the majority's: it may lead again");
            }
            _ => {}
        }
        self.skew = skew;
        if self.skew.is_none() || self.raw.raft.state != StateRole::Leader {
            return;
        }
        if self
            .skew_transfer_at
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(2))
        {
            return;
        }
        // The voter most up to date whose clock agrees with the majority.
        let me = self.node_id;
        let target = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(&id, _)| id != me && self.raw.raft.prs().conf().voters().contains(id))
            .filter(|(&id, _)| {
                self.clocks.offset_of(id, now).is_some_and(|o| {
                    self.skew
                        .is_some_and(|s| (o - s.offset_ms).unsigned_abs() <= s.max_offset_ms)
                })
            })
            .max_by_key(|(_, p)| p.matched)
            .map(|(&id, _)| id);
        if let Some(id) = target {
            tracing::warn!(event = "clock_skew_transfer", to = id, "this node's clock is off: handing leadership to a node whose clock agrees with the majority");
            self.skew_transfer_at = Some(now);
            self.raw.transfer_leader(id);
        }
    }

    /// Why this node, leading, refuses new work now: an alarm on its
    /// voters (see [`crate::resources::judge`]). None on a follower: its
    /// leader judges.
    fn refusal(&self) -> Option<crate::resources::Refusal> {
        if !self.pressure.any() || self.raw.raft.state != StateRole::Leader {
            return None;
        }
        self.pressure.refusal(&self.voters())
    }

    /// Acts on this node's own removal once it has stood for
    /// [`REMOVAL_GRACE`]: a node rebuilt under its old id replays the
    /// change that removed it on the way to the one that added it back.
    fn check_removed(&mut self) {
        if self.removed.is_some() {
            return;
        }
        match self.removed_members.get(&self.node_id).copied() {
            None => self.removal_seen = None,
            Some(at) => {
                let since = *self
                    .removal_seen
                    .get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= REMOVAL_GRACE {
                    self.mark_removed(format!("the configuration change at index {at} removed it"));
                }
            }
        }
    }

    /// This node is out of the cluster: it stops campaigning, says so once,
    /// and reports it in its status (the node then stops, unless told to
    /// wait).
    fn mark_removed(&mut self, reason: String) {
        if self.removed.is_some() {
            return;
        }
        tracing::error!(
            event = "removed_from_cluster",
            node_id = self.node_id,
            reason = %reason,
            "this node was removed from the cluster: it no longer campaigns. To bring it back, empty its data dir, start it with join = true and run `drover cluster add`"
        );
        self.removed_tx.send_replace(Some(reason.clone()));
        self.removed = Some(reason);
    }

    fn publish_status(&mut self) {
        let mut status = NodeStatus::of(
            &self.raw.raft,
            self.node_id,
            &self.addrs,
            self.machine.meta().applied_index,
            &self.pressure,
        );
        status.removed_members = self.removed_members.clone();
        status.removed = self.removed.clone();
        status.incarnation = self.incarnation.get();
        status.clock_skew = self.skew.map(|s| s.to_string());
        self.status_tx.send_if_modified(|s| {
            if s.leader_id != status.leader_id {
                metrics::counter!(crate::metrics::LEADER_CHANGES).increment(1);
            }
            if *s != status {
                *s = status;
                true
            } else {
                false
            }
        });
    }
}

/// The commands as an entry of `format` carries them (see
/// [`Command::for_format`]); one that cannot be written yet is answered
/// with [`Error::Upgrading`] and left out.
fn for_format(
    commands: Vec<Command>,
    replies: Vec<Option<Reply>>,
    format: u8,
) -> (Vec<Command>, Vec<Option<Reply>>) {
    if format >= crate::command::ENTRY_VERSION {
        return (commands, replies);
    }
    let mut kept = (
        Vec::with_capacity(commands.len()),
        Vec::with_capacity(replies.len()),
    );
    for (command, reply) in commands.into_iter().zip(replies) {
        let needs = command.min_format();
        match command.for_format(format) {
            Some(c) => {
                kept.0.push(c);
                kept.1.push(reply);
            }
            None => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(Error::Upgrading {
                        needs,
                        writing: format,
                    }));
                }
            }
        }
    }
    kept
}

/// `breaker_opened` and `breaker_closed` events, from the breakers before
/// and after an applied range (every node logs them as it applies).
fn log_breaker_changes(
    before: &std::collections::BTreeMap<
        crate::machine::breaker::Scope,
        crate::machine::breaker::Breaker,
    >,
    after: &std::collections::BTreeMap<
        crate::machine::breaker::Scope,
        crate::machine::breaker::Breaker,
    >,
) {
    use crate::machine::breaker::BreakerState;
    if before.is_empty() && after.is_empty() {
        return;
    }
    let state = |m: &std::collections::BTreeMap<_, crate::machine::breaker::Breaker>, s| {
        m.get(s).map_or(BreakerState::Closed, |b| b.state)
    };
    for scope in before.keys().chain(after.keys()) {
        let (was, is) = (state(before, scope), state(after, scope));
        if was == is {
            continue;
        }
        let (queue, tenant, class) = scope;
        match is {
            BreakerState::Open => {
                tracing::warn!(event = "breaker_opened", %queue, %tenant, %class, "circuit breaker opened: this tenant's jobs in this queue are held")
            }
            BreakerState::HalfOpen => {
                tracing::info!(event = "breaker_half_open", %queue, %tenant, %class, "circuit breaker half-open: one job goes through")
            }
            BreakerState::Closed => {
                tracing::info!(event = "breaker_closed", %queue, %tenant, %class, was = was.as_str(), "circuit breaker closed")
            }
        }
    }
}
