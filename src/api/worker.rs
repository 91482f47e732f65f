//! The gRPC worker service: one bidirectional stream per worker.
//!
//! A session pushes leases while the worker has free capacity and one of its
//! queues has ready jobs (learned from the stats the driver publishes, so an
//! idle worker proposes nothing). Messages that arrive together are folded
//! into one command per kind, so a busy worker costs one log entry per round
//! of completions, not one per job.

use crate::sealing::Field;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::api::auth::Caller;
use crate::api::{convert, App};
use crate::command::{Command, Completion, Failure, LeaseBeat, Outcome, Refusal, Usage};
use crate::error::Error;
use crate::job::{validate_queue, JobId, Progress};
use crate::machine::MachineStats;
use crate::proto::v1 as pb;
use crate::proto::v1::worker_message::Msg;
use crate::proto::v1::worker_service_server::WorkerService;
use crate::workers::{Registration, WorkerEntry};

/// How long a new stream may take to send Register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most inbound messages folded into one round of commands.
const MAX_MESSAGES_PER_ROUND: usize = 512;
/// Most bytes of messages folded into one round: its commands must fit in
/// a log entry and in a forward to the leader.
const MAX_BYTES_PER_ROUND: usize = 8 << 20;
/// Pause before asking again after a lease proposal failed (no leader).
const LEASE_RETRY: Duration = Duration::from_millis(200);
const MAX_ERROR_MESSAGE: usize = 4096;
/// Finished leases a session remembers; see `Session::finished`.
const FINISHED_REMEMBERED: usize = 4096;
/// Most named usage amounts one result may report.
const MAX_USAGE_NAMES: usize = 16;
/// How long a completion or failure is retried while no leader is known.
const RESULT_RETRY: Duration = Duration::from_secs(10);

/// The gRPC `WorkerService`: each `Work` stream is one worker's session.
pub struct Worker {
    /// The node it serves for.
    pub app: App,
}

#[tonic::async_trait]
impl WorkerService for Worker {
    type WorkStream = ReceiverStream<Result<pb::ServerMessage, Status>>;

    async fn work(
        &self,
        req: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::WorkStream>, Status> {
        let caller = crate::api::auth::caller_of(&req)?;
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(
                    "no Register message within 10 s of opening the Work stream",
                )
            })?
            .map_err(crate::wire::inbound_stream_error)?;
        let Some(pb::WorkerMessage {
            msg: Some(Msg::Register(reg)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message on a Work stream must be Register (worker_id, queues, capacity)",
            ));
        };
        let registration = self.register(reg, &caller).map_err(|e| {
            tracing::warn!(event = "worker_register_failed", error = %e, "refused a worker");
            Status::from(e)
        })?;
        let (tx, rx) = mpsc::channel(256);
        let timeout_ms = self.app.config.jobs.heartbeat_timeout.as_millis() as u64;
        let _ = tx
            .send(Ok(pb::ServerMessage {
                msg: Some(pb::server_message::Msg::Registered(pb::Registered {
                    heartbeat_interval_ms: (timeout_ms / 3).max(1),
                    lease_timeout_ms: timeout_ms,
                    node_id: self.app.config.node_id,
                    protocol_version: crate::wire::PROTOCOL_VERSION,
                })),
            }))
            .await;
        tracing::info!(event = "worker_registered", worker_id = %registration.entry.worker_id,
            queues = ?registration.entry.queues, capacity = registration.entry.capacity, "worker connected");
        let batch = super::lease_batch::LeaseBatch::new(
            &self.app.config,
            &registration.entry.queues,
            std::time::Duration::from_millis(timeout_ms),
        );
        let session = Session {
            results: crate::metrics::WorkerResults::new(
                &self.app.worker_labels.label(&registration.entry.worker_id),
            ),
            app: self.app.clone(),
            registration,
            batch,
            lost: Vec::new(),
            sent_at: Default::default(),
            traced: Default::default(),
            in_flight: HashSet::new(),
            draining: false,
            finished: Default::default(),
            worker_drained: false,
            quarantine_asked: false,
            restart_quarantined: false,
            quarantine_seen: false,
            reclaim: true,
            tx,
            chaos_queues: Default::default(),
        };
        tokio::spawn(session.run(inbound));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl Worker {
    fn register(&self, reg: pb::Register, caller: &Caller) -> Result<Registration, Error> {
        if reg.worker_id.is_empty() || reg.worker_id.len() > 128 {
            return Err(Error::invalid("worker_id", "must be 1 to 128 bytes"));
        }
        // A queue named twice is served once, so it counts once.
        let mut queues = reg.queues;
        queues.sort();
        queues.dedup();
        if queues.is_empty() || queues.len() > 64 {
            return Err(Error::invalid("queues", "name 1 to 64 queues to serve"));
        }
        for q in &queues {
            validate_queue(q)?;
        }
        caller.check_worker_scope(&reg.worker_id, &queues)?;
        if reg.protocol_version > crate::wire::PROTOCOL_VERSION {
            // Served: within drover.v1 a newer worker only adds fields this
            // node ignores. Said, so a feature that does nothing is explained.
            tracing::info!(event = "worker_protocol_newer", worker_id = %reg.worker_id,
                worker = reg.protocol_version, node = crate::wire::PROTOCOL_VERSION,
                "the worker speaks a newer protocol revision than this node; what it added is ignored until the node is upgraded");
        }
        let max = self.app.config.limits.max_worker_capacity;
        if reg.capacity == 0 || reg.capacity > max {
            return Err(Error::invalid(
                "capacity",
                format!(
                    "{} is outside 1 to {max} (limits.max_worker_capacity)",
                    reg.capacity
                ),
            ));
        }
        Ok(self.app.workers.register(WorkerEntry {
            worker_id: reg.worker_id,
            queues,
            capacity: reg.capacity,
            version: truncate(reg.version, 128),
            connected_at_ms: self.app.driver.log_now_ms(),
            in_flight: Default::default(),
            draining: Default::default(),
            completed: Default::default(),
            failed: Default::default(),
            last_seen_ms: self.app.driver.log_now_ms().into(),
            recent: Default::default(),
            stop: Default::default(),
        }))
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Heartbeat,
    Complete,
    Fail,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::Complete => "complete",
            Kind::Fail => "fail",
        }
    }

    fn ack_kind(self) -> pb::AckKind {
        match self {
            Kind::Heartbeat => pb::AckKind::Heartbeat,
            Kind::Complete => pb::AckKind::Complete,
            Kind::Fail => pb::AckKind::Fail,
        }
    }
}

enum Event {
    /// A lease or (true) a reclaim answered.
    Leased(bool, Result<Outcome, Error>),
    /// A quarantine or release this session proposed was answered.
    Quarantine(Result<Outcome, Error>),
    Acked(Kind, Vec<(JobId, u32)>, Result<Outcome, Error>),
}

/// A traced lease: its job as a span names it, and when it was handed out.
struct Traced {
    id: JobId,
    queue: String,
    job_type: String,
    tenant: String,
    traceparent: String,
    leased_at: std::time::SystemTime,
}

impl Traced {
    fn span(&self) -> crate::otlp::SpanJob<'_> {
        crate::otlp::SpanJob {
            id: self.id,
            queue: &self.queue,
            job_type: &self.job_type,
            tenant: &self.tenant,
            traceparent: &self.traceparent,
        }
    }
}

struct Session {
    app: App,
    registration: Registration,
    /// Leases this worker holds, as (job, attempt): a report about another
    /// attempt of a held job (stale or forged) frees no slot.
    in_flight: HashSet<(JobId, u32)>,
    /// How many leases to ask for at once.
    batch: super::lease_batch::LeaseBatch,
    /// Held leases a heartbeat found gone, to cancel on the worker.
    lost: Vec<(JobId, u32, String)>,
    /// When each lease in flight was sent, to tell quick jobs from slow.
    sent_at: std::collections::HashMap<(JobId, u32), Instant>,
    /// Leases of jobs with a trace context, while spans go somewhere: what
    /// their completion span needs.
    traced: std::collections::HashMap<(JobId, u32), Traced>,
    draining: bool,
    /// Leases whose result this session has received, so a late heartbeat
    /// answer does not count them as held again.
    finished: std::collections::HashSet<(JobId, u32)>,
    /// The worker sent Drain: it knows to stop.
    worker_drained: bool,
    /// A quarantine of this worker is proposed and not yet answered.
    quarantine_asked: bool,
    /// The worker is asked to exit for its quarantine
    /// (`quarantine_action = "restart"`), not by an operator.
    restart_quarantined: bool,
    /// This session has seen the worker quarantined: once released, its
    /// results are counted afresh.
    quarantine_seen: bool,
    /// Its counters in `drover_worker_results_total` (under its bounded
    /// label).
    results: crate::metrics::WorkerResults,
    /// The log may hold leases for this worker that it never received: its
    /// previous session ended (or a lease proposal's answer was lost) with a
    /// lease on the way. Set at register and after such a loss; the session
    /// then asks the log what it holds ([`Command::Held`]) and sends what
    /// the worker does not know of, instead of letting those jobs wait out
    /// their leases.
    reclaim: bool,
    tx: mpsc::Sender<Result<pb::ServerMessage, Status>>,
    /// The queue of each lease sent while chaos rules are set, for faults
    /// injected into its result.
    chaos_queues: std::collections::HashMap<(JobId, u32), String>,
}

/// True with probability `p`.
fn chance(p: f64) -> bool {
    p > 0.0 && (getrandom::u64().unwrap_or(u64::MAX) as f64 / u64::MAX as f64) < p
}

fn has_ready(stats: &MachineStats, queues: &[String]) -> bool {
    queues.iter().any(|q| {
        !stats.blocked.contains(q) && stats.queues.get(q).is_some_and(|c| c.ready_total() > 0)
    })
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<pb::WorkerMessage>) {
        let mut proposals: FuturesUnordered<BoxFuture<'static, Event>> = FuturesUnordered::new();
        let mut lease_in_flight = false;
        let mut stats = self.app.driver.stats_watch();
        let mut shutdown = self.app.shutdown.clone();
        let mut server_stopping = *shutdown.borrow();
        let mut retry_at: Option<Instant> = None;
        let worker_id = self.registration.entry.worker_id.clone();
        let entry = self.registration.entry.clone();
        let stop = entry.stop.notified();
        tokio::pin!(stop);
        let mut revoked = self.app.driver.revoked_leases();
        let mut revoked_open = true;
        self.lift_quarantine(&stats.borrow(), &mut proposals);
        loop {
            let free =
                (self.registration.entry.capacity as usize).saturating_sub(self.in_flight.len());
            if self.reclaim && !lease_in_flight && retry_at.is_none() {
                self.reclaim = false;
                lease_in_flight = true;
                let router = self.app.router.clone();
                let cmd = Command::Held {
                    worker: worker_id.clone(),
                };
                proposals
                    .push(async move { Event::Leased(true, router.propose(cmd).await) }.boxed());
                continue;
            }
            let may_lease = !self.draining && !lease_in_flight && free > 0 && retry_at.is_none();
            if may_lease && self.may_take(&stats.borrow_and_update()) {
                lease_in_flight = true;
                let router = self.app.router.clone();
                let entry = &self.registration.entry;
                let (queues, max) = (entry.queues.clone(), (free as u32).min(self.batch.size()));
                // A worker with a version may be kept from jobs by a
                // version switch; the machine needs to know it.
                let cmd = if entry.version.is_empty() {
                    Command::Lease {
                        worker: worker_id.clone(),
                        queues,
                        max,
                    }
                } else {
                    Command::LeaseAs {
                        worker: worker_id.clone(),
                        version: entry.version.clone(),
                        queues,
                        max,
                    }
                };
                proposals
                    .push(async move { Event::Leased(false, router.propose(cmd).await) }.boxed());
                continue;
            }
            // The stream stays open until the worker has answered Shutdown
            // with Drain: closing it at once could lose the Shutdown on the
            // way, and the worker would take the stop for a failure.
            // A draining worker's stream is closed once it has reported
            // every lease sent to it, so a lease already on its way when it
            // began to drain still reaches it (and is run) first.
            if self.worker_drained && self.in_flight.is_empty() && proposals.is_empty() {
                break;
            }
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(first)) => {
                        let mut bytes = prost::Message::encoded_len(&first);
                        let mut batch = vec![first];
                        while batch.len() < MAX_MESSAGES_PER_ROUND && bytes < MAX_BYTES_PER_ROUND {
                            match inbound.message().now_or_never() {
                                Some(Ok(Some(m))) => {
                                    bytes += prost::Message::encoded_len(&m);
                                    batch.push(m);
                                }
                                _ => break,
                            }
                        }
                        if let Err(status) = self.on_messages(batch, &mut proposals) {
                            let _ = self.tx.send(Err(status)).await;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        // Framing is lost after a bad frame: end the stream
                        // with the error (the worker reconnects) instead of
                        // reading on from inside it.
                        tracing::info!(event = "worker_stream_error", worker_id = %worker_id, error = %status, "worker stream broke");
                        let _ = self.tx.send(Err(crate::wire::inbound_stream_error(status))).await;
                        break;
                    }
                },
                Some(event) = proposals.next(), if !proposals.is_empty() => {
                    match event {
                        Event::Leased(..) => lease_in_flight = false,
                        Event::Quarantine(result) => {
                            self.quarantine_asked = false;
                            if let Err(e) = result {
                                tracing::warn!(event = "worker_quarantine_failed", worker_id = %worker_id, error = %e, "could not record this worker's quarantine; it will be asked again");
                            }
                            continue;
                        }
                        Event::Acked(..) => {}
                    }
                    if !self.on_event(event, &mut retry_at).await {
                        break;
                    }
                }
                changed = stats.changed(), if may_lease => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = shutdown.changed(), if !server_stopping => {
                    server_stopping = true;
                    self.draining = true;
                    self.send_shutdown("the node is shutting down: reconnect to another node", true).await;
                }
                events = revoked.recv(), if revoked_open => match events {
                    Ok(events) => {
                        if !self.cancel_revoked(&events).await {
                            break;
                        }
                    }
                    // Missed some: the next heartbeat finds those leases gone.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => revoked_open = false,
                },
                _ = &mut stop, if !self.draining => {
                    self.draining = true;
                    if self.restart_quarantined {
                        tracing::warn!(event = "worker_restart_asked", worker_id = %worker_id, "a quarantined worker is asked to exit, for its supervisor to start a fresh one (quarantine_action = \"restart\")");
                        self.send_shutdown("quarantined for failing too often (quarantine_action = \"restart\"): finish held jobs and exit; a fresh process leases again", false).await;
                    } else {
                        tracing::info!(event = "worker_stop_asked", worker_id = %worker_id, "an operator asked this worker to stop");
                        self.send_shutdown("an operator asked this worker to stop (drover workers shutdown): finish held jobs and exit", false).await;
                    }
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    retry_at = None;
                }
                _ = self.tx.closed() => break,
            }
        }
        // Jobs still held stay leased until their deadline: the worker may
        // reconnect (to this or another node) and keep them by heartbeating.
        tracing::info!(event = "worker_disconnected", worker_id = %worker_id, held = self.in_flight.len(), "worker session ended");
    }

    /// Tells the worker to stop the jobs whose leases the log took back
    /// from it (a timeout, an expiry, an operator's requeue), without
    /// waiting for its next heartbeat to be refused. Returns false when
    /// the worker is gone.
    async fn cancel_revoked(&mut self, events: &[crate::machine::LeaseEvent]) -> bool {
        let entry = self.registration.entry.clone();
        let mut cancels = Vec::new();
        for e in events.iter().filter(|e| e.worker == entry.worker_id) {
            let lease = (e.job_id, e.attempt);
            if self.in_flight.remove(&lease) {
                self.sent_at.remove(&lease);
                self.mark_finished(e.job_id, e.attempt);
                cancels.push(pb::Cancel {
                    job_id: e.job_id,
                    attempt: e.attempt,
                    reason: format!("{}: the lease was taken back", e.what),
                });
            }
        }
        if cancels.is_empty() {
            return true;
        }
        self.sync_entry();
        self.send_cancels(cancels).await
    }

    /// Tells the worker to stop these jobs; false when it is gone.
    async fn send_cancels(&self, cancels: Vec<pb::Cancel>) -> bool {
        for cancel in cancels {
            let msg = pb::server_message::Msg::Cancel(cancel);
            if self
                .tx
                .send(Ok(pb::ServerMessage { msg: Some(msg) }))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Whether a lease could find anything: the worker is not quarantined
    /// and one of its queues has ready jobs.
    fn may_take(&self, stats: &MachineStats) -> bool {
        let entry = &self.registration.entry;
        (stats.quarantined.is_empty() || !stats.quarantined.contains_key(&entry.worker_id))
            && has_ready(stats, &entry.queues)
    }

    /// A quarantined worker that connects after its `quarantine_for` has
    /// served it: the quarantine is lifted.
    fn lift_quarantine(
        &mut self,
        stats: &MachineStats,
        proposals: &mut FuturesUnordered<BoxFuture<'static, Event>>,
    ) {
        let worker = &self.registration.entry.worker_id;
        let Some(q) = stats.quarantined.get(worker) else {
            return;
        };
        if self.app.driver.log_now_ms() < q.until_ms {
            tracing::info!(event = "worker_still_quarantined", worker_id = %worker, until_ms = q.until_ms, "a quarantined worker reconnected before its quarantine_for passed: it gets no leases");
            return;
        }
        tracing::info!(event = "worker_quarantine_lifted", worker_id = %worker, "a quarantined worker reconnected after its quarantine_for: it leases again");
        self.propose_quarantine(
            proposals,
            Command::ReleaseWorker(crate::command::ReleaseWorker {
                worker: worker.clone(),
            }),
        );
    }

    /// Counts a round of results in the worker's window and, when its
    /// failure rate crosses its queues' `quarantine_failure_rate`, asks
    /// the cluster to quarantine it.
    fn count_results(
        &mut self,
        completed: u64,
        failed: u64,
        proposals: &mut FuturesUnordered<BoxFuture<'static, Event>>,
    ) {
        let stats = self.app.driver.stats();
        let entry = self.registration.entry.clone();
        self.results.count(completed, failed);
        let policy = stats.policies.quarantine(&entry.queues);
        let window = policy.map_or(crate::policies::QUARANTINE_WINDOW_MS, |p| p.window_ms);
        let now = self.app.driver.log_now_ms();
        let quarantined = stats.quarantined.contains_key(&entry.worker_id);
        let mut recent = entry.recent.lock().unwrap_or_else(|p| p.into_inner());
        if self.quarantine_seen && !quarantined {
            // Released: what led to the quarantine is behind it.
            recent.clear();
        }
        self.quarantine_seen = quarantined;
        recent.add(now, window, [completed, failed]);
        let Some(policy) = policy else { return };
        if self.quarantine_asked || quarantined {
            return;
        }
        let [ok, bad] = recent.counts(now);
        if !crate::machine::quarantine::judge(&policy, ok, bad) {
            return;
        }
        drop(recent);
        tracing::warn!(event = "worker_quarantined", worker_id = %entry.worker_id, completed = ok, failed = bad,
            failure_rate = policy.failure_rate, for_ms = policy.for_ms,
            "a worker failing too often gets no new leases (drover workers release ID lifts it)");
        self.quarantine_asked = true;
        self.quarantine_seen = true;
        // A worker to be replaced is kept from leases only until it goes:
        // the fresh process that reconnects under its id lifts it.
        let for_ms = if policy.restart { 0 } else { policy.for_ms };
        self.propose_quarantine(
            proposals,
            Command::Quarantine {
                worker: entry.worker_id.clone(),
                for_ms,
                completed: ok,
                failed: bad,
            },
        );
        if policy.restart {
            self.restart_quarantined = true;
            entry.stop.notify_one();
        }
    }

    fn propose_quarantine(
        &self,
        proposals: &mut FuturesUnordered<BoxFuture<'static, Event>>,
        cmd: Command,
    ) {
        let router = self.app.router.clone();
        proposals.push(
            async move { Event::Quarantine(router.propose_retrying(cmd, RESULT_RETRY).await) }
                .boxed(),
        );
    }

    /// The chaos rules in force, when this node allows chaos.
    fn chaos(&self) -> std::collections::BTreeMap<String, crate::command::ChaosRule> {
        if !self.app.config.chaos.allowed {
            return Default::default();
        }
        self.app.driver.stats().chaos.clone()
    }

    /// Whether chaos fails this completion, and with what error class.
    fn chaos_fail(&mut self, job_id: JobId, attempt: u32) -> Option<String> {
        let queue = self.chaos_queues.remove(&(job_id, attempt))?;
        let rule = self.chaos().get(&queue).cloned()?;
        if !chance(rule.fail) {
            return None;
        }
        self.app.chaos.count(&queue, "fail");
        Some(if rule.fail_class.is_empty() {
            "chaos".into()
        } else {
            rule.fail_class
        })
    }

    async fn send_shutdown(&self, reason: &str, reconnect: bool) {
        let _ = self
            .tx
            .send(Ok(pb::ServerMessage {
                msg: Some(pb::server_message::Msg::Shutdown(pb::Shutdown {
                    reason: reason.into(),
                    reconnect,
                })),
            }))
            .await;
    }

    fn sync_entry(&self) {
        self.registration
            .entry
            .in_flight
            .store(self.in_flight.len() as u32, Ordering::Relaxed);
        self.registration
            .entry
            .draining
            .store(self.draining, Ordering::Relaxed);
    }

    /// Folds a round of messages into at most one command per kind.
    fn on_messages(
        &mut self,
        batch: Vec<pb::WorkerMessage>,
        proposals: &mut FuturesUnordered<BoxFuture<'static, Event>>,
    ) -> Result<(), Status> {
        let max_result = self.app.config.limits.max_payload_bytes;
        let mut beats = Vec::new();
        let mut completions = Vec::new();
        let mut failures = Vec::new();
        let entry = self.registration.entry.clone();
        entry
            .last_seen_ms
            .store(self.app.driver.log_now_ms(), Ordering::Relaxed);
        for m in batch {
            match m.msg {
                Some(Msg::Register(_)) => {
                    return Err(Status::invalid_argument(
                        "Register may be sent only once, as the first message",
                    ))
                }
                Some(Msg::Heartbeat(h)) => beats.extend(h.leases.into_iter().map(|l| LeaseBeat {
                    job_id: l.job_id,
                    attempt: l.attempt,
                    progress: (!l.progress_message.is_empty() || l.progress > 0.0).then(|| {
                        Progress {
                            fraction: if l.progress.is_finite() {
                                l.progress.clamp(0.0, 1.0)
                            } else {
                                0.0
                            },
                            message: truncate(l.progress_message, 256),
                        }
                    }),
                })),
                Some(Msg::Complete(c)) => {
                    entry
                        .completed
                        .fetch_add(c.completions.len() as u64, Ordering::Relaxed);
                    for c in c.completions {
                        self.in_flight.remove(&(c.job_id, c.attempt));
                        self.came_back(c.job_id, c.attempt);
                        self.trace_result(c.job_id, c.attempt, "completed");
                        self.mark_finished(c.job_id, c.attempt);
                        let usage = self.usage(c.job_id, c.cost_usd, c.usage);
                        if let Some(class) = self.chaos_fail(c.job_id, c.attempt) {
                            failures.push((
                                Failure {
                                    job_id: c.job_id,
                                    attempt: c.attempt,
                                    error_class: class,
                                    message: "chaos: a completion turned into a failure".into(),
                                },
                                usage,
                            ));
                        } else if c.result.len() > max_result {
                            // Refusing the completion would leave the job
                            // leased until expiry; failing it says why at once.
                            failures.push((
                                Failure {
                                    job_id: c.job_id,
                                    attempt: c.attempt,
                                    error_class: "result_too_large".into(),
                                    message: format!(
                                        "result of {} bytes is over the limit of {max_result} bytes (limits.max_payload_bytes)",
                                        c.result.len()
                                    ),
                                },
                                usage,
                            ));
                        } else {
                            completions.push((
                                Completion {
                                    job_id: c.job_id,
                                    attempt: c.attempt,
                                    result: self.app.keys.seal(Field::Result, c.result),
                                },
                                usage,
                            ));
                        }
                    }
                }
                Some(Msg::Fail(f)) => {
                    entry
                        .failed
                        .fetch_add(f.failures.len() as u64, Ordering::Relaxed);
                    for f in f.failures {
                        self.in_flight.remove(&(f.job_id, f.attempt));
                        self.came_back(f.job_id, f.attempt);
                        self.trace_result(f.job_id, f.attempt, "failed");
                        self.mark_finished(f.job_id, f.attempt);
                        let usage = self.usage(f.job_id, f.cost_usd, f.usage);
                        failures.push((
                            Failure {
                                job_id: f.job_id,
                                attempt: f.attempt,
                                error_class: if f.error_class.is_empty() {
                                    "unknown".into()
                                } else {
                                    truncate(f.error_class, 128)
                                },
                                message: self.app.keys.seal_text(
                                    Field::Error,
                                    truncate(f.message, MAX_ERROR_MESSAGE),
                                ),
                            },
                            usage,
                        ));
                    }
                }
                Some(Msg::Drain(_)) => {
                    self.draining = true;
                    self.worker_drained = true;
                }
                None => {
                    return Err(Status::invalid_argument(
                        "empty WorkerMessage: set one of its fields",
                    ))
                }
            }
        }
        if !completions.is_empty() || !failures.is_empty() {
            self.count_results(completions.len() as u64, failures.len() as u64, proposals);
        }
        let worker = self.registration.entry.worker_id.clone();
        if !beats.is_empty() {
            let refs = beats.iter().map(|b| (b.job_id, b.attempt)).collect();
            self.push(
                proposals,
                Kind::Heartbeat,
                refs,
                Command::Heartbeat {
                    worker: worker.clone(),
                    leases: beats,
                },
            );
        }
        if !completions.is_empty() {
            let refs = completions
                .iter()
                .map(|(c, _)| (c.job_id, c.attempt))
                .collect();
            // Most workers report no cost: their results go in the
            // plain command, as before usage existed.
            let cmd = if completions.iter().all(|(_, u)| u.is_empty()) {
                Command::Complete {
                    worker: worker.clone(),
                    items: completions.into_iter().map(|(c, _)| c).collect(),
                }
            } else {
                Command::CompleteWithUsage {
                    worker: worker.clone(),
                    items: completions,
                }
            };
            self.push(proposals, Kind::Complete, refs, cmd);
        }
        if !failures.is_empty() {
            let refs = failures
                .iter()
                .map(|(f, _)| (f.job_id, f.attempt))
                .collect();
            let cmd = if failures.iter().all(|(_, u)| u.is_empty()) {
                Command::Fail {
                    worker,
                    items: failures.into_iter().map(|(f, _)| f).collect(),
                }
            } else {
                Command::FailWithUsage {
                    worker,
                    items: failures,
                }
            };
            self.push(proposals, Kind::Fail, refs, cmd);
        }
        self.sync_entry();
        Ok(())
    }

    fn push(
        &self,
        proposals: &mut FuturesUnordered<BoxFuture<'static, Event>>,
        kind: Kind,
        refs: Vec<(JobId, u32)>,
        cmd: Command,
    ) {
        let router = self.app.router.clone();
        let started = Instant::now();
        let result = async move {
            match kind {
                // The next heartbeat goes out soon anyway.
                Kind::Heartbeat => router.propose(cmd).await,
                // A result is worth keeping through an election.
                Kind::Complete | Kind::Fail => router.propose_retrying(cmd, RESULT_RETRY).await,
            }
        };
        proposals.push(
            async move {
                let result = result.await;
                metrics::histogram!(crate::metrics::WORKER_RPC_LATENCY, "kind" => kind.label())
                    .record(started.elapsed().as_secs_f64());
                Event::Acked(kind, refs, result)
            }
            .boxed(),
        );
    }

    /// Returns false when the worker is gone.
    async fn on_event(&mut self, event: Event, retry_at: &mut Option<Instant>) -> bool {
        let msg = match event {
            // Answered in the loop.
            Event::Quarantine(_) => return true,
            Event::Leased(_, Ok(Outcome::Leased(jobs))) => {
                if jobs.is_empty() {
                    return true;
                }
                let chaos = self.chaos();
                let mut leased = Vec::with_capacity(jobs.len());
                let (mut revoke, mut delay_ms) = (Vec::new(), 0);
                for mut leased_job in jobs {
                    match self.app.keys.open(Field::Payload, leased_job.payload) {
                        Ok(payload) => leased_job.payload = payload,
                        Err(e) => {
                            // Its lease stays in the log and expires, so a
                            // node that has the key may hand it out.
                            tracing::error!(event = "payload_unreadable", job_id = leased_job.job.id, error = %e, "cannot open a leased job's payload");
                            continue;
                        }
                    }
                    if self.app.tracer.is_on() {
                        self.trace_lease(&leased_job.job);
                    }
                    let job = convert::leased_job(leased_job);
                    let lease = (job.job_id, job.attempt);
                    // A reclaim names leases this session already sent or
                    // has seen finish.
                    if self.finished.contains(&lease) || self.in_flight.contains(&lease) {
                        continue;
                    }
                    if let Some(rule) = chaos.get(&job.queue) {
                        // Chaos: the lease stays in the log and expires, so
                        // its job runs again; nothing acknowledged is lost.
                        if chance(rule.drop_leases) {
                            self.app.chaos.count(&job.queue, "drop");
                            continue;
                        }
                        if chance(rule.revoke) {
                            self.app.chaos.count(&job.queue, "revoke");
                            revoke.push(pb::Cancel {
                                job_id: job.job_id,
                                attempt: job.attempt,
                                reason: "chaos: lease revoked early".into(),
                            });
                        }
                        if rule.delay_ms > 0 {
                            self.app.chaos.count(&job.queue, "delay");
                            delay_ms = delay_ms.max(rule.delay_ms);
                        }
                        self.chaos_queues.insert(lease, job.queue.clone());
                    }
                    self.in_flight.insert(lease);
                    self.sent_at.insert(lease, Instant::now());
                    leased.push(job);
                }
                for c in &revoke {
                    self.in_flight.remove(&(c.job_id, c.attempt));
                }
                if leased.is_empty() {
                    return true;
                }
                self.sync_entry();
                let msg = pb::server_message::Msg::Leases(pb::Leases { jobs: leased });
                if delay_ms > 0 || !revoke.is_empty() {
                    // Sent apart from the session, so a delay holds up no
                    // other message.
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                        let _ = tx.send(Ok(pb::ServerMessage { msg: Some(msg) })).await;
                        for c in revoke {
                            let m = pb::server_message::Msg::Cancel(c);
                            let _ = tx.send(Ok(pb::ServerMessage { msg: Some(m) })).await;
                        }
                    });
                    return true;
                }
                msg
            }
            Event::Leased(reclaiming, result) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "lease proposal failed; retrying shortly");
                    // A lease may have taken effect, and a reclaim that
                    // failed is still owed: ask the log what it holds.
                    self.reclaim |= reclaiming || !e.retry_safe();
                }
                *retry_at = Some(Instant::now() + LEASE_RETRY);
                return true;
            }
            Event::Acked(kind, refs, result) => {
                let acks = self.acks(kind, refs, result);
                if acks.is_empty() {
                    return true;
                }
                // Leases this worker held that a heartbeat found gone (a
                // timeout, an expiry, an operator): after the acks, tell
                // the worker to stop those jobs, in so many words.
                let lost = std::mem::take(&mut self.lost);
                let acks = pb::server_message::Msg::Acks(pb::Acks { acks });
                if self
                    .tx
                    .send(Ok(pb::ServerMessage { msg: Some(acks) }))
                    .await
                    .is_err()
                {
                    return false;
                }
                let cancels = lost
                    .into_iter()
                    .map(|(job_id, attempt, reason)| pb::Cancel {
                        job_id,
                        attempt,
                        reason,
                    })
                    .collect();
                return self.send_cancels(cancels).await;
            }
        };
        self.tx
            .send(Ok(pb::ServerMessage { msg: Some(msg) }))
            .await
            .is_ok()
    }

    /// What a worker reported a job used. A cost or name that is not
    /// valid is left out and logged: the result itself still counts.
    fn usage(
        &self,
        job_id: JobId,
        cost_usd: f64,
        named: std::collections::HashMap<String, u64>,
    ) -> Usage {
        let worker = &self.registration.entry.worker_id;
        let cost_micros = match crate::policies::check_usd(cost_usd) {
            Ok(()) => crate::policies::usd_to_micros(cost_usd),
            Err(e) => {
                tracing::warn!(event = "worker_usage_refused", worker_id = %worker, job_id, cost_usd, "a reported cost_usd {e}; left out");
                0
            }
        };
        let mut usage = Usage {
            cost_micros,
            named: Default::default(),
        };
        for (name, n) in named {
            let valid = usage.named.len() < MAX_USAGE_NAMES
                && (1..=64).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if valid {
                usage.named.insert(name, n);
            } else {
                tracing::warn!(event = "worker_usage_refused", worker_id = %worker, job_id, name = %name.chars().take(80).collect::<String>(),
                    "a usage name must be 1 to 64 characters of A-Z a-z 0-9 _ . -, at most 16 per result; left out");
            }
        }
        usage
    }

    /// A lease came back with a result: a quick one grows the batch.
    /// The lease span of a job with a trace context (from when it became
    /// ready to now, when it goes to this worker), and what its completion
    /// span will need.
    fn trace_lease(&mut self, job: &crate::job::Job) {
        let span = crate::otlp::SpanJob::of(job);
        if span.traceparent.is_empty() {
            return;
        }
        let attempt = job.lease.as_ref().map_or(job.attempts, |l| l.attempt);
        let worker = self.registration.entry.worker_id.clone();
        let ready_since = std::time::UNIX_EPOCH + std::time::Duration::from_millis(job.run_at_ms);
        self.app.tracer.job_span(
            "drover.lease",
            opentelemetry::trace::SpanKind::Producer,
            span,
            ready_since,
            &[
                opentelemetry::KeyValue::new("drover.worker", worker),
                opentelemetry::KeyValue::new("drover.attempt", i64::from(attempt)),
            ],
        );
        self.traced.insert(
            (job.id, attempt),
            Traced {
                id: job.id,
                queue: job.queue.clone(),
                job_type: job.job_type.clone(),
                tenant: job.tenant.clone(),
                traceparent: span.traceparent.to_string(),
                leased_at: std::time::SystemTime::now(),
            },
        );
    }

    /// The completion span of a traced lease: from its hand-out to its
    /// result, with how it ended.
    fn trace_result(&mut self, job_id: JobId, attempt: u32, outcome: &str) {
        let Some(t) = self.traced.remove(&(job_id, attempt)) else {
            return;
        };
        self.app.tracer.job_span(
            "drover.complete",
            opentelemetry::trace::SpanKind::Consumer,
            t.span(),
            t.leased_at,
            &[
                opentelemetry::KeyValue::new("drover.attempt", i64::from(attempt)),
                opentelemetry::KeyValue::new("drover.outcome", outcome.to_string()),
            ],
        );
    }

    fn came_back(&mut self, job_id: JobId, attempt: u32) {
        if let Some(sent) = self.sent_at.remove(&(job_id, attempt)) {
            self.batch.finished(sent.elapsed());
        }
    }

    fn mark_finished(&mut self, job_id: JobId, attempt: u32) {
        // Only the last few seconds matter (heartbeats in flight); the
        // bound keeps a long session small.
        if self.finished.len() >= FINISHED_REMEMBERED {
            self.finished.clear();
        }
        self.finished.insert((job_id, attempt));
    }

    fn acks(
        &mut self,
        kind: Kind,
        refs: Vec<(JobId, u32)>,
        result: Result<Outcome, Error>,
    ) -> Vec<pb::Ack> {
        if matches!(kind, Kind::Heartbeat) && result.is_err() {
            // The heartbeat did not reach the log (no leader); the next one will.
            return Vec::new();
        }
        // (message, transient) for each refused report. A refusal by the
        // machine is final; a proposal that failed (no leader, the node
        // stopping, an outcome not known) is transient: the worker keeps
        // the result and sends it again, which the machine's fencing by
        // (job, attempt) makes safe.
        let results: Vec<Result<(), (String, bool)>> = match result {
            Ok(Outcome::Acks(results)) if results.len() == refs.len() => results
                .into_iter()
                .map(|r| r.map_err(|e: Refusal| (e.to_string(), false)))
                .collect(),
            Ok(other) => vec![Err((format!("unexpected outcome {other:?}"), false)); refs.len()],
            Err(e) => vec![Err((e.to_string(), e.is_transient())); refs.len()],
        };
        let mut acks = Vec::new();
        for ((job_id, attempt), r) in refs.into_iter().zip(results) {
            if let Kind::Heartbeat = kind {
                match &r {
                    // A worker that reconnected keeps its jobs by heartbeating them.
                    // But a heartbeat answered after the job's result came
                    // in must not bring it back: the worker no longer holds it.
                    Ok(()) => {
                        if !self.finished.contains(&(job_id, attempt)) {
                            self.in_flight.insert((job_id, attempt));
                        }
                        continue;
                    }
                    Err((reason, transient)) => {
                        // The lease is gone: it expired, or another took it.
                        if self.in_flight.remove(&(job_id, attempt)) {
                            self.batch.expired();
                            if !transient {
                                self.lost.push((job_id, attempt, reason.clone()));
                            }
                        }
                        self.sent_at.remove(&(job_id, attempt));
                    }
                }
            }
            let ok = r.is_ok();
            let (error, transient) = r.err().unwrap_or_default();
            acks.push(pb::Ack {
                job_id,
                attempt,
                kind: kind.ack_kind() as i32,
                ok,
                error,
                transient,
            });
        }
        self.sync_entry();
        acks
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
