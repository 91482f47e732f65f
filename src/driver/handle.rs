//! The rest of the node's way to the driver: a cloneable handle that
//! proposes, asks and reads what the loop publishes.

use super::*;

/// The newest log entry format each peer applies, as the first message of
/// its raft stream to this node said (a peer not heard from: format 1).
/// Written by the peer service; read by the leader's proposals and by a
/// follower forwarding a command to its leader.
#[derive(Clone, Default)]
pub struct PeerFormats(Arc<std::sync::RwLock<std::collections::BTreeMap<u64, u8>>>);

impl PeerFormats {
    /// Records the newest format `peer` applies, as its stream's first message
    /// said (0 counts as 1).
    pub fn note(&self, peer: u64, format: u8) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, format.max(1));
    }

    /// The newest format `peer` applies; 1 for a peer not heard from.
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
    pub(super) tx: mpsc::Sender<Proposal>,
    pub(super) control: mpsc::Sender<Control>,
    pub(super) status: watch::Receiver<NodeStatus>,
    pub(super) stats: watch::Receiver<Arc<MachineStats>>,
    /// Each queue's recent history on this node, for charts.
    pub(super) history: Arc<std::sync::Mutex<crate::history::History>>,
    pub(super) revoked: tokio::sync::broadcast::Sender<Arc<[LeaseEvent]>>,
    /// When the loop last took a raft tick (ms of [`mono_ms`]), for the
    /// systemd watchdog.
    pub(super) turned_at: Arc<std::sync::atomic::AtomicU64>,
    /// The log's clock, as this node reads it.
    pub(super) log_time: Arc<LogTime>,
    /// Peers' wall clocks, as their batches say.
    pub(super) clocks: Arc<crate::peers::clocks::Clocks>,
    /// The newest entry format each peer applies, as its peer header said.
    pub(super) peer_formats: PeerFormats,
    pub(super) reader: JobReader,
    pub(super) retry_after_ms: u64,
    /// This node's disk and memory, and what its peers report of theirs.
    pub(super) pressure: Arc<Pressure>,
    /// The cluster incarnation this node belongs to.
    pub(super) incarnation: crate::peers::identity::Incarnation,
    /// Set once, when this node learns it was removed (and why).
    pub(super) removed: watch::Receiver<Option<String>>,
}

impl DriverHandle {
    /// Changes once: when this node learns it was removed from the cluster.
    pub fn removed_watch(&self) -> watch::Receiver<Option<String>> {
        self.removed.clone()
    }

    /// The cluster incarnation this node belongs to (0: none yet).
    pub fn incarnation(&self) -> &crate::peers::identity::Incarnation {
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

    /// The policies this node's config now asks for (after a reload), and
    /// the SHA-256 of the file they were read from.
    pub fn set_policies(&self, policies: crate::policies::Policies, file_sha256: String) {
        self.control(Control::Policies(Box::new(policies), file_sha256));
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

    /// A copy of the raft status the loop last published.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// The status without copying it; hold it briefly (it blocks updates).
    pub fn status_ref(&self) -> watch::Ref<'_, NodeStatus> {
        self.status.borrow()
    }

    /// The raft status, to wait for it to change.
    pub fn status_watch(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// What the machine published after the last applied range.
    pub fn stats(&self) -> Arc<MachineStats> {
        self.stats.borrow().clone()
    }

    /// Each queue's last hour and day on this node (see [`crate::history`]).
    pub fn history(&self) -> Arc<std::sync::Mutex<crate::history::History>> {
        self.history.clone()
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

    /// The log's clock itself: the peer service sets it from the leader's
    /// batches.
    pub fn log_time(&self) -> &Arc<LogTime> {
        &self.log_time
    }

    /// Peers' clock offsets, as their batches say.
    pub fn clocks(&self) -> &Arc<crate::peers::clocks::Clocks> {
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

    /// Ready jobs by tenant, every queue, from this node's indexes. Asked
    /// for, not published with the stats: with many tenants it is too
    /// large to build after every applied range.
    pub async fn ready_by_tenant(&self) -> Result<std::collections::BTreeMap<String, u64>, Error> {
        let rx = self.ask(Control::ReadyByTenant).await?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    /// Budget counters by tenant since this node opened its machine (for a
    /// metrics scrape; too large to publish after every applied range).
    pub async fn run_totals(&self) -> Result<crate::machine::runs::RunTotals, Error> {
        let rx = self.ask(Control::RunTotals).await?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    /// Reads committed job records without going through the loop.
    pub fn reader(&self) -> &JobReader {
        &self.reader
    }

    /// How long a client told there is no leader should wait before trying
    /// again: one election timeout, in ms.
    pub fn retry_after_ms(&self) -> u64 {
        self.retry_after_ms
    }
}
