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
use std::time::Duration;

use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType};
use raft::{RawNode, StateRole};
use tokio::sync::{mpsc, oneshot, watch};

use crate::command::{Command, LogEntry, Outcome, Refusal};
use crate::config::Config;
use crate::error::Error;
use crate::machine::{JobReader, LeaseEvent, Machine, MachineError, MachineStats};
use crate::peers::transport::Transport;
use crate::peers::{Control, MemberChange};
use crate::resources::Pressure;
use crate::snapshot::{self, SnapshotError, SnapshotMeta};
use crate::store::{Database, RaftStore, StoreError, DEFAULT_MACHINE_TREE, INIT_INDEX};

mod apply;
mod compaction;
mod handle;
mod leadership;
mod start;
pub use crate::clock::log_time;
mod membership;
mod pending;
mod persist;
mod propose;
mod reads;
mod snapshots;
mod snapshotting;
mod status;
mod upkeep;
pub use crate::clock::{mono_ms, now_ms};
pub use handle::{DriverHandle, PeerFormats};
pub use log_time::LogTime;
use snapshots::Snapshots;
pub use start::start;
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
/// machine never splits an entry across sled batches (it commits after an
/// entry once 1,000 keys are staged), and sled keeps a batch's memory until
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
    /// A command for the machine.
    Command(Command),
    /// A change of raft's membership.
    Member(MemberChange),
}

/// A proposal waiting to be committed and applied.
pub struct Proposal {
    /// What to put in the log.
    pub what: Proposed,
    /// Where the outcome and the index it was applied at go, or why it failed.
    pub reply: Reply,
}

/// A failure the driver cannot recover from: raft's or the machine's storage
/// is broken. The node stops rather than run on half-written state.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The raft log or its state could not be read or written.
    #[error("raft storage failed: {0}")]
    Store(#[from] StoreError),
    /// The machine's storage failed.
    #[error("state machine failed: {0}")]
    Machine(#[from] MachineError),
    /// raft-rs returned an error it cannot go on from.
    #[error("raft failed: {0}")]
    Raft(#[from] raft::Error),
    /// The OS refused to start the driver's thread.
    #[error("cannot start the raft driver thread: {0}")]
    Thread(std::io::Error),
    /// The thread that makes the log durable stopped.
    #[error("log flusher failed: {0}")]
    Flusher(String),
    /// A snapshot could not be written, read or installed.
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    /// A committed entry is of a format newer than this build applies: the node
    /// stops with its log and data as they are, to be upgraded.
    #[error("log entry {index} has format {found}, and this drover applies formats up to {reads}: it was written by a newer drover. Upgrade this node's binary to the version the other nodes run; its log and data are kept as they are")]
    EntryTooNew {
        /// The entry's log index.
        index: u64,
        /// Its format.
        found: u8,
        /// The newest format this build applies.
        reads: u8,
    },
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
    history: Arc<std::sync::Mutex<crate::history::History>>,
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
    /// The policies this node's config asks for, as the format it writes
    /// can carry them: the leader proposes them when the machine's differ;
    /// a follower says which keys differ.
    policies: crate::policies::Policies,
    /// The same, whole: what `policies` becomes once every voter writes
    /// the newest format.
    policies_whole: crate::policies::Policies,
    /// The SHA-256 of the config file they were read from (empty: the
    /// embedded defaults), for the audit record of a change.
    policies_source: String,
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
    incarnation: crate::peers::identity::Incarnation,
    /// The log's clock: this node advances it while leading.
    log_time: Arc<LogTime>,
    /// Peers' wall clocks: a node far from the majority's does not lead.
    clocks: Arc<crate::peers::clocks::Clocks>,
    /// Whether this node led at the last look (see `notice_role`).
    leading: bool,
    /// Why this node's clock keeps it from leading, while it does.
    skew: Option<crate::peers::clocks::Skew>,
    /// When a skewed leader last asked to hand leadership away.
    skew_transfer_at: Option<std::time::Instant>,
    /// The majority's wall clock minus this node's (ms), as of the last
    /// tick: what the log's time is slewed toward.
    wall_offset_ms: i64,
    /// The term whose lease renewal this node (leading) proposed.
    renewed_term: u64,
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
                    if self.removed.is_none() {
                        if self.holds_campaign() {
                            self.tick_without_campaign();
                        } else {
                            self.raw.tick();
                        }
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
                    // The first request after a commit usually comes alone:
                    // the producers just answered are still on their way
                    // back. Letting the tasks that are ready run first puts
                    // theirs into the same entry (and the same flush).
                    tokio::task::yield_now().await;
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
                        tracing::info!(event = "incarnation_adopted", incarnation = %crate::peers::identity::show(value), "joined a cluster: took its incarnation")
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
            Control::ReadyByTenant(reply) => {
                let _ = reply.send(self.machine.ready_by_tenant());
            }
            Control::RunTotals(reply) => {
                let _ = reply.send(self.machine.run_totals());
            }
            Control::Policies(p, source) => {
                self.policies_whole = *p;
                self.policies = self.policies_whole.for_format(self.writing_version);
                self.policies_source = source;
                self.policies_warned = None;
                self.policies_asked = Some(self.raw.raft.raft_log.last_index());
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
}
