//! The worker runtime: holds one Work stream, runs a handler per leased job
//! (up to the worker's concurrency), heartbeats every held lease, and sends
//! results back in batches. Jobs keep running across a reconnect: their
//! results go out on the new stream, and heartbeats on it keep their leases.
//!
//! Stopping (the `stop` signal or the server's Shutdown) sends Drain, lets
//! held jobs finish, waits for their results to be acknowledged, and returns.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{connect, ClientError};
use crate::proto::v1 as pb;
use crate::proto::v1::server_message::Msg as ServerMsg;
use crate::proto::v1::worker_message::Msg;
use crate::proto::v1::worker_service_client::WorkerServiceClient;

/// Why a job failed, as the worker reports it. `class` selects the retry
/// behaviour; `message` is kept on the job for operators.
///
/// ```
/// use drover::client::worker::JobError;
/// let e = JobError::new("smtp_timeout", "the mail server did not answer");
/// assert_eq!(e.to_string(), "smtp_timeout: the mail server did not answer");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobError {
    /// The error's class (`smtp_timeout`): retry policies, breakers and
    /// dead-letter filters go by it.
    pub class: String,
    /// For people: what went wrong.
    pub message: String,
    /// What the failed attempt used; it counts against the run's budgets.
    pub usage: JobUsage,
}

/// What one attempt of a job used: its cost in USD and named amounts
/// (`tokens_in`), counted against its run's budgets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobUsage {
    /// Cost of the attempt in USD.
    pub cost_usd: f64,
    /// Named amounts (`tokens_in`: 1200), matched by budgets of that name.
    pub named: HashMap<String, u64>,
}

/// A job's result, with what it used. A handler may return plain `Bytes`.
///
/// ```
/// use drover::client::worker::{JobOutput, JobUsage};
/// let out = JobOutput {
///     result: bytes::Bytes::from_static(b"done"),
///     usage: JobUsage { cost_usd: 0.002, named: [("tokens_in".to_string(), 1200)].into() },
/// };
/// assert_eq!(out.usage.named["tokens_in"], 1200);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobOutput {
    /// The job's result, stored with it.
    pub result: Bytes,
    /// What the attempt used.
    pub usage: JobUsage,
}

impl From<Bytes> for JobOutput {
    fn from(result: Bytes) -> JobOutput {
        JobOutput {
            result,
            usage: JobUsage::default(),
        }
    }
}

impl JobError {
    /// A failure of error `class` (which picks the retry policy).
    pub fn new(class: impl Into<String>, message: impl Into<String>) -> JobError {
        JobError {
            class: class.into(),
            message: message.into(),
            usage: JobUsage::default(),
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

impl std::error::Error for JobError {}

/// Progress reports of held jobs, sent with the next heartbeat.
type ProgressReports = Arc<std::sync::Mutex<HashMap<(u64, u32), (f32, String)>>>;

/// The OpenTelemetry context a job's handler runs in: a span of the
/// global tracer provider, child of the job's `traceparent`. None when the
/// job has no trace context.
fn job_context(job: &pb::LeasedJob) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
    let parent = crate::wire::trace::remote_parent(&job.traceparent)?;
    let tracer = opentelemetry::global::tracer("drover.worker");
    let span = tracer
        .span_builder(format!("drover job {}", job.job_type))
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            opentelemetry::KeyValue::new("drover.job_id", job.job_id as i64),
            opentelemetry::KeyValue::new("drover.attempt", i64::from(job.attempt)),
            opentelemetry::KeyValue::new("drover.queue", job.queue.clone()),
            opentelemetry::KeyValue::new("drover.tenant", job.tenant.clone()),
        ])
        .start_with_context(&tracer, &parent);
    Some(parent.with_span(span))
}

/// A leased job, as a handler gets it: the lease's fields (through
/// `Deref`: `job.job_id`, `job.attempt`, `job.payload`, `job.labels`...)
/// and a way to report progress.
///
/// ```no_run
/// # async fn handle(job: drover::client::worker::Job) -> Result<bytes::Bytes, drover::client::worker::JobError> {
/// job.progress(0.5, "half way");
/// Ok(job.payload.clone())
/// # }
/// ```
pub struct Job {
    leased: pb::LeasedJob,
    reports: ProgressReports,
}

impl Job {
    /// Reports progress (a fraction in [0, 1] and a short message) with
    /// the lease's next heartbeat; it shows in `drover jobs get` and the
    /// job's timeline.
    pub fn progress(&self, fraction: f32, message: impl Into<String>) {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        reports.insert(
            (self.leased.job_id, self.leased.attempt),
            (fraction, message.into()),
        );
    }

    /// The lease as it came off the wire.
    pub fn into_leased(self) -> pb::LeasedJob {
        self.leased
    }
}

impl std::ops::Deref for Job {
    type Target = pb::LeasedJob;

    fn deref(&self) -> &pb::LeasedJob {
        &self.leased
    }
}

/// Runs one job. Implemented for any `Fn(Job) -> impl Future` whose
/// output is `Result<Bytes, JobError>` or `Result<JobOutput, JobError>`.
pub trait Handler: Send + Sync + 'static {
    /// Runs `job`: its result, or why it failed.
    fn run(&self, job: Job) -> BoxFuture<'static, Result<JobOutput, JobError>>;
}

impl<F, Fut, T> Handler for F
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, JobError>> + Send + 'static,
    T: Into<JobOutput>,
{
    fn run(&self, job: Job) -> BoxFuture<'static, Result<JobOutput, JobError>> {
        (self)(job).map(|r| r.map(Into::into)).boxed()
    }
}

/// How a worker connects and what it takes.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// A node's address, or several separated by commas: each reconnect
    /// tries the next, so a worker outlives the node it was connected to.
    pub url: String,
    /// Its id, unique in the cluster; a reconnect under the same id takes
    /// back the leases it held.
    pub worker_id: String,
    /// The queues it leases from.
    pub queues: Vec<String>,
    /// Jobs it runs at once.
    pub concurrency: u32,
    /// Pause between reconnect attempts after a stream breaks.
    pub reconnect_delay: Duration,
    /// Give up after this many failed connects in a row (0: never).
    pub max_reconnects: u32,
    /// How long a stopping worker goes on trying to reach a node to report
    /// its results. Past it, it exits with [`ClientError::Abandoned`]: the
    /// unreported jobs run again once their leases expire. A stopping worker
    /// that is connected waits for its jobs however long they take.
    pub stop_timeout: Duration,
    /// The worker token and TLS settings.
    pub credentials: crate::wire::Credentials,
    /// A version label for `drover workers list` (a build, an image tag).
    pub version: String,
    /// What it is doing, kept current for a health check.
    pub health: Arc<WorkerHealth>,
    /// Gzip its messages (results) and take gzipped leases: for large
    /// payloads on a slow link; it costs CPU on both ends.
    pub compression: bool,
}

/// What a running worker is doing, for a supervisor's health check
/// (`drover worker --health-addr`).
#[derive(Debug, Default)]
pub struct WorkerHealth {
    /// Registered on a stream now.
    pub connected: std::sync::atomic::AtomicBool,
    /// Jobs it holds.
    pub held: std::sync::atomic::AtomicU32,
    /// Results the server accepted.
    pub completed: std::sync::atomic::AtomicU64,
    /// Failures the server accepted.
    pub failed: std::sync::atomic::AtomicU64,
    /// When the server last accepted one (ms since the epoch; 0: never).
    pub last_result_ms: std::sync::atomic::AtomicU64,
}

impl WorkerOptions {
    /// Options with the defaults: reconnect every 500 ms without end, a
    /// 60 s stop timeout, no credentials, no compression.
    pub fn new(
        url: impl Into<String>,
        worker_id: impl Into<String>,
        queues: Vec<String>,
        concurrency: u32,
    ) -> Self {
        WorkerOptions {
            url: url.into(),
            worker_id: worker_id.into(),
            queues,
            concurrency,
            reconnect_delay: Duration::from_millis(500),
            max_reconnects: 0,
            stop_timeout: Duration::from_secs(60),
            credentials: Default::default(),
            health: Default::default(),
            version: String::new(),
            compression: false,
        }
    }
}

/// What a worker did before it stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkerReport {
    /// Jobs it completed.
    pub completed: u64,
    /// Jobs it reported failed.
    pub failed: u64,
    /// Results the server refused (stale lease: the job had been given to
    /// another worker after this one's lease expired).
    pub refused: u64,
}

/// Result bytes per Complete or Fail message.
const MAX_RESULT_BYTES_PER_MESSAGE: usize = 8 << 20;
/// Transient refusals in a row after which a result is given up (counted
/// as refused; its job runs again after its lease): about two minutes of
/// backoff, for a cluster that cannot take it.
const MAX_RESENDS: u32 = 40;

/// Leases remembered in `Runtime::recent`.
const RECENT_REMEMBERED: usize = 4096;

/// How long a stopping worker with nothing held waits for the server to
/// close its stream.
const STOP_WAIT: Duration = Duration::from_secs(5);

struct Done {
    job_id: u64,
    attempt: u32,
    result: Result<JobOutput, JobError>,
}

/// The state that outlives a single stream.
struct Runtime<H> {
    opts: WorkerOptions,
    handler: Arc<H>,
    /// Held jobs: id -> attempt.
    held: HashMap<u64, u32>,
    /// The tasks running held jobs, to stop one whose lease is gone.
    running: HashMap<(u64, u32), tokio::task::AbortHandle>,
    /// Results sent and not yet acknowledged.
    unacked: HashMap<u64, Done>,
    /// Leases whose result was sent lately: a node re-sends the leases the
    /// log holds for this worker after a reconnect, and one of them may
    /// have just finished here. Bounded; cleared when full.
    recent: HashSet<(u64, u32)>,
    /// Results not yet sent (stream was down), or refused for a passing
    /// reason and waiting for `resend_at`.
    unsent: Vec<Done>,
    /// When to send `unsent` again on the open stream, after a transient
    /// refusal; its backoff grows with `transient_refusals` in a row.
    resend_at: Option<tokio::time::Instant>,
    transient_refusals: u32,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    report: WorkerReport,
    /// When the worker began to stop (it is stopping once set), for
    /// [`WorkerOptions::stop_timeout`].
    stop_began: Option<tokio::time::Instant>,
    /// The current session registered: the node was reached.
    registered: bool,
    urls: Vec<String>,
    /// Sessions started; picks the node of the next one.
    sessions: usize,
    /// What handlers reported of their jobs' progress.
    progress: ProgressReports,
}

/// Runs a worker until `stop` turns true (or the server shuts down) and every
/// held job is finished and reported.
pub async fn run<H: Handler>(
    opts: WorkerOptions,
    handler: H,
    mut stop: watch::Receiver<bool>,
) -> Result<WorkerReport, ClientError> {
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let mut rt = Runtime {
        opts: opts.clone(),
        handler: Arc::new(handler),
        held: HashMap::new(),
        running: HashMap::new(),
        unacked: HashMap::new(),
        recent: HashSet::new(),
        unsent: Vec::new(),
        resend_at: None,
        transient_refusals: 0,
        done_tx,
        done_rx,
        report: WorkerReport::default(),
        stop_began: stop.borrow().then(tokio::time::Instant::now),
        registered: false,
        urls: super::server_list(&opts.url),
        sessions: 0,
        progress: Default::default(),
    };
    let mut failures = 0u32;
    loop {
        let ended = rt.session(&mut stop).await;
        rt.opts
            .health
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        match ended {
            Ok(()) => return Ok(rt.report),
            Err(e) => {
                rt.collect_finished();
                // A stop that came while no node was reachable.
                if *stop.borrow() {
                    rt.mark_stopping();
                }
                if rt.stopping()
                    && rt.held.is_empty()
                    && rt.unsent.is_empty()
                    && rt.unacked.is_empty()
                {
                    return Ok(rt.report);
                }
                // Connects failed in a row: a session that registered ends the run.
                if std::mem::take(&mut rt.registered) {
                    failures = 0;
                }
                failures += 1;
                if rt.opts.max_reconnects > 0 && failures > rt.opts.max_reconnects {
                    return Err(e);
                }
                if let Some(began) = rt.stop_began {
                    if began.elapsed() >= rt.opts.stop_timeout {
                        tracing::error!(event = "worker_abandoned", error = %e, held = rt.held.len(), unreported = rt.unsent.len() + rt.unacked.len(), "stopping worker reached no node in time; exiting without reporting");
                        return Err(ClientError::Abandoned {
                            results: rt.unsent.len() + rt.unacked.len(),
                            running: rt.held.len(),
                            waited: rt.opts.stop_timeout,
                            last_error: e.to_string(),
                        });
                    }
                }
                tracing::warn!(event = "worker_reconnecting", error = %e, held = rt.held.len(), "worker stream lost; reconnecting");
                // Results already sent but not acknowledged may not have
                // reached the log; send them again (a duplicate is refused as stale).
                let unacked: Vec<Done> = rt.unacked.drain().map(|(_, d)| d).collect();
                rt.unsent.extend(unacked);
                // Jittered, so a fleet whose node went away does not all
                // reconnect to the next one at the same instant.
                let base = rt.opts.reconnect_delay;
                tokio::time::sleep(crate::wire::jittered(
                    failures.saturating_sub(1),
                    base,
                    base.saturating_mul(16),
                ))
                .await;
            }
        }
    }
}

fn message(msg: Msg) -> pb::WorkerMessage {
    pb::WorkerMessage { msg: Some(msg) }
}

impl<H: Handler> Runtime<H> {
    fn stopping(&self) -> bool {
        self.stop_began.is_some()
    }

    fn mark_stopping(&mut self) {
        self.stop_began
            .get_or_insert_with(tokio::time::Instant::now);
    }
    /// Takes the results of jobs that finished while no stream was open;
    /// the next session sends them.
    fn collect_finished(&mut self) {
        while let Ok(d) = self.done_rx.try_recv() {
            self.forget_held(d.job_id, d.attempt);
            self.unsent.push(d);
        }
    }

    /// One stream's life. Ok when the worker has stopped cleanly.
    async fn session(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), ClientError> {
        let url = self
            .urls
            .get(self.sessions % self.urls.len().max(1))
            .cloned()
            .unwrap_or_default();
        self.sessions += 1;
        let mut channel = connect(&url, &self.opts.credentials).await?;
        // Lease and results go to the leader anyway: connecting there saves
        // the hop through a follower.
        if let Some(i) = super::find_leader(channel.clone(), &self.urls).await {
            if let Ok(leader) = connect(&self.urls[i], &self.opts.credentials).await {
                channel = leader;
                self.sessions = i + 1;
            }
        }
        let mut client =
            WorkerServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        if self.opts.compression {
            use tonic::codec::CompressionEncoding::Gzip;
            client = client.send_compressed(Gzip).accept_compressed(Gzip);
        }
        let (out, out_rx) = mpsc::channel::<pb::WorkerMessage>(1024);
        out.send(message(Msg::Register(pb::Register {
            worker_id: self.opts.worker_id.clone(),
            queues: self.opts.queues.clone(),
            capacity: self.opts.concurrency,
            version: self.opts.version.clone(),
            protocol_version: crate::wire::PROTOCOL_VERSION,
        })))
        .await
        .map_err(|_| ClientError::Protocol("stream closed before Register".into()))?;
        if self.stopping() {
            let _ = out.send(message(Msg::Drain(pb::Drain {}))).await;
        }
        let mut inbound = client.work(ReceiverStream::new(out_rx)).await?.into_inner();
        let registered = match inbound.message().await? {
            Some(pb::ServerMessage {
                msg: Some(ServerMsg::Registered(r)),
            }) => r,
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected Registered, got {other:?}"
                )))
            }
        };
        self.registered = true;
        self.opts
            .health
            .connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let interval = Duration::from_millis(registered.heartbeat_interval_ms.max(10));
        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Results finished while disconnected go out first.
        self.resend_at = None;
        let pending: Vec<Done> = std::mem::take(&mut self.unsent);
        self.send_results(&out, pending).await?;
        // Once stopping with nothing held, the server closes the stream after
        // any lease already on its way has arrived; this bounds the wait for
        // a server that does not.
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            let idle = self.stopping()
                && self.held.is_empty()
                && self.unacked.is_empty()
                && self.unsent.is_empty();
            if !idle {
                idle_since = None;
            } else if idle_since
                .get_or_insert_with(tokio::time::Instant::now)
                .elapsed()
                > STOP_WAIT
            {
                return Ok(());
            }
            tokio::select! {
                msg = inbound.message() => match msg? {
                    None if idle => return Ok(()),
                    None => return Err(ClientError::Protocol("the server closed the stream".into())),
                    Some(m) => self.on_server(m, &out).await?,
                },
                _ = tokio::time::sleep(STOP_WAIT), if idle => {}
                _ = tokio::time::sleep_until(self.resend_at.unwrap_or_else(tokio::time::Instant::now)), if self.resend_at.is_some() => {
                    self.resend_at = None;
                    let again = std::mem::take(&mut self.unsent);
                    self.send_results(&out, again).await?;
                }
                Some(first) = self.done_rx.recv() => {
                    let mut batch = vec![first];
                    while let Ok(d) = self.done_rx.try_recv() {
                        batch.push(d);
                    }
                    for d in &batch {
                        self.running.remove(&(d.job_id, d.attempt));
                    }
                    self.send_results(&out, batch).await?;
                }
                _ = heartbeat.tick() => {
                    // Sent when idle too, with no leases: the node sees the
                    // worker is alive (drover_worker_heartbeat_age_seconds).
                    {
                        let leases = self.lease_refs();
                        send(&out, Msg::Heartbeat(pb::Heartbeat { leases })).await?;
                    }
                }
                changed = stop.changed(), if !self.stopping() => {
                    let stop_now = changed.is_err() || *stop.borrow();
                    if stop_now {
                        self.begin_stop(&out).await?;
                    }
                }
            }
        }
    }

    async fn begin_stop(
        &mut self,
        out: &mpsc::Sender<pb::WorkerMessage>,
    ) -> Result<(), ClientError> {
        self.mark_stopping();
        tracing::info!(
            event = "worker_draining",
            held = self.held.len(),
            "stopping: finishing held jobs"
        );
        send(out, Msg::Drain(pb::Drain {})).await
    }

    /// Stops heartbeating (job, attempt), if that is the attempt held: a
    /// newer attempt of the same job, leased to this worker again, stays.
    /// Stops a held job whose lease is gone (dropping its handler: an exec
    /// job's process group is killed) and forgets it.
    fn cancel(&mut self, job_id: u64, attempt: u32) {
        if let Some(task) = self.running.remove(&(job_id, attempt)) {
            task.abort();
        }
        self.forget_held(job_id, attempt);
    }

    /// Every held lease, with the progress its handler reported.
    fn lease_refs(&self) -> Vec<pb::LeaseRef> {
        let reports = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        self.held
            .iter()
            .map(|(&job_id, &attempt)| {
                let (progress, progress_message) =
                    reports.get(&(job_id, attempt)).cloned().unwrap_or_default();
                pb::LeaseRef {
                    job_id,
                    attempt,
                    progress,
                    progress_message,
                }
            })
            .collect()
    }

    fn forget_held(&mut self, job_id: u64, attempt: u32) {
        if self.held.get(&job_id) == Some(&attempt) {
            self.held.remove(&job_id);
        }
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(job_id, attempt));
        self.sync_held();
    }

    fn sync_held(&self) {
        self.opts
            .health
            .held
            .store(self.held.len() as u32, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this lease is one the worker runs or ran: a node re-sends
    /// the leases the log holds for this worker (see `recent`).
    fn knows(&self, job_id: u64, attempt: u32) -> bool {
        self.held.get(&job_id) == Some(&attempt)
            || self.recent.contains(&(job_id, attempt))
            || self
                .unacked
                .get(&job_id)
                .is_some_and(|d| d.attempt == attempt)
            || self
                .unsent
                .iter()
                .any(|d| d.job_id == job_id && d.attempt == attempt)
    }

    async fn on_server(
        &mut self,
        m: pb::ServerMessage,
        out: &mpsc::Sender<pb::WorkerMessage>,
    ) -> Result<(), ClientError> {
        match m.msg {
            Some(ServerMsg::Leases(l)) => {
                for job in l.jobs {
                    if self.knows(job.job_id, job.attempt) {
                        continue;
                    }
                    self.held.insert(job.job_id, job.attempt);
                    self.sync_held();
                    let (job_id, attempt) = (job.job_id, job.attempt);
                    // With a trace context, the handler runs in an
                    // OpenTelemetry span that is its child (through the
                    // global tracer provider the program set, if any).
                    let otel = job_context(&job);
                    // And in this tracing span, which names the context.
                    let span = tracing::info_span!(
                        "drover.job",
                        job_id,
                        attempt,
                        queue = %job.queue,
                        job_type = %job.job_type,
                        traceparent = %job.traceparent,
                    );
                    let handler = self.handler.clone();
                    let tx = self.done_tx.clone();
                    let job = Job {
                        leased: job,
                        reports: self.progress.clone(),
                    };
                    let task = tokio::spawn(async move {
                        // A panicking handler fails its job instead of killing the worker.
                        let run = tracing::Instrument::instrument(handler.run(job), span);
                        let run = match otel {
                            Some(cx) => futures::future::Either::Left(
                                opentelemetry::trace::FutureExt::with_context(run, cx),
                            ),
                            None => futures::future::Either::Right(run),
                        };
                        let result = std::panic::AssertUnwindSafe(run)
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| {
                                Err(JobError::new(
                                    "handler_panicked",
                                    "the job handler panicked",
                                ))
                            });
                        let _ = tx.send(Done {
                            job_id,
                            attempt,
                            result,
                        });
                    });
                    self.running.insert((job_id, attempt), task.abort_handle());
                }
            }
            Some(ServerMsg::Acks(a)) => {
                for ack in a.acks {
                    let kind = pb::AckKind::try_from(ack.kind).unwrap_or(pb::AckKind::Unspecified);
                    if kind == pb::AckKind::Heartbeat {
                        // Our lease is gone: stop the job and stop
                        // heartbeating it; a result would be refused.
                        self.cancel(ack.job_id, ack.attempt);
                        tracing::warn!(event = "lease_lost", job_id = ack.job_id, error = %ack.error, "lease lost; job stopped");
                        continue;
                    }
                    if self.unacked.get(&ack.job_id).map(|d| d.attempt) != Some(ack.attempt) {
                        continue;
                    }
                    let Some(done) = self.unacked.remove(&ack.job_id) else {
                        continue;
                    };
                    if !ack.ok && ack.transient && self.transient_refusals < MAX_RESENDS {
                        // It did not reach the log (election, node
                        // stopping): keep it and send it again shortly.
                        tracing::info!(event = "result_resend", job_id = ack.job_id, attempt = ack.attempt, error = %ack.error, "result not taken for now; sending it again");
                        self.unsent.push(done);
                        self.transient_refusals += 1;
                        self.resend_at.get_or_insert_with(|| {
                            tokio::time::Instant::now() + resend_backoff(self.transient_refusals)
                        });
                        continue;
                    }
                    self.transient_refusals = 0;
                    if ack.ok {
                        let health = &self.opts.health;
                        let counter = match kind {
                            pb::AckKind::Complete => {
                                self.report.completed += 1;
                                &health.completed
                            }
                            _ => {
                                self.report.failed += 1;
                                &health.failed
                            }
                        };
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        health
                            .last_result_ms
                            .store(crate::clock::now_ms(), std::sync::atomic::Ordering::Relaxed);
                    } else {
                        self.report.refused += 1;
                        tracing::warn!(event = "result_refused", job_id = ack.job_id, attempt = ack.attempt, error = %ack.error, "server refused a result");
                    }
                }
            }
            Some(ServerMsg::Shutdown(s)) if s.reconnect => {
                // Drain so the node leases nothing more here, then go: held
                // jobs keep running, and their heartbeats and results go to
                // the next node.
                tracing::info!(event = "node_leaving", reason = %s.reason, held = self.held.len(), "the node is shutting down; moving to another");
                send(out, Msg::Drain(pb::Drain {})).await?;
                return Err(ClientError::NodeLeaving(s.reason));
            }
            Some(ServerMsg::Shutdown(s)) => {
                tracing::info!(event = "server_shutdown", reason = %s.reason, "server asked this worker to stop");
                if !self.stopping() {
                    self.begin_stop(out).await?;
                }
            }
            Some(ServerMsg::Cancel(c)) => {
                self.cancel(c.job_id, c.attempt);
                tracing::warn!(event = "job_cancelled", job_id = c.job_id, attempt = c.attempt, reason = %c.reason, "the node took this job back; stopped it");
            }
            Some(ServerMsg::Registered(_)) | None => {}
        }
        Ok(())
    }

    async fn send_results(
        &mut self,
        out: &mpsc::Sender<pb::WorkerMessage>,
        batch: Vec<Done>,
    ) -> Result<(), ClientError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut completions = Vec::new();
        let mut failures = Vec::new();
        if self.recent.len() >= RECENT_REMEMBERED {
            self.recent.clear();
        }
        let mut r = Ok(());
        let mut bytes = 0;
        for d in &batch {
            self.forget_held(d.job_id, d.attempt);
            self.recent.insert((d.job_id, d.attempt));
            match &d.result {
                Ok(out) => {
                    bytes += out.result.len();
                    completions.push(pb::Completion {
                        job_id: d.job_id,
                        attempt: d.attempt,
                        result: out.result.clone(),
                        cost_usd: out.usage.cost_usd,
                        usage: out.usage.named.clone(),
                    })
                }
                Err(f) => {
                    bytes += f.message.len();
                    failures.push(pb::Failure {
                        job_id: d.job_id,
                        attempt: d.attempt,
                        error_class: f.class.clone(),
                        message: f.message.clone(),
                        cost_usd: f.usage.cost_usd,
                        usage: f.usage.named.clone(),
                    })
                }
            }
            // Messages stay well under the gRPC limit however many large
            // results are waiting.
            if bytes >= MAX_RESULT_BYTES_PER_MESSAGE && r.is_ok() {
                r = send_batch(out, &mut completions, &mut failures).await;
                bytes = 0;
            }
        }
        if r.is_ok() {
            r = send_batch(out, &mut completions, &mut failures).await;
        }
        match r {
            Ok(()) => {
                for d in batch {
                    self.unacked.insert(d.job_id, d);
                }
                Ok(())
            }
            Err(e) => {
                self.unsent.extend(batch);
                Err(e)
            }
        }
    }
}

/// Sends what `completions` and `failures` hold (one message each, if any)
/// and empties them.
async fn send_batch(
    out: &mpsc::Sender<pb::WorkerMessage>,
    completions: &mut Vec<pb::Completion>,
    failures: &mut Vec<pb::Failure>,
) -> Result<(), ClientError> {
    if !completions.is_empty() {
        let completions = std::mem::take(completions);
        send(out, Msg::Complete(pb::Complete { completions })).await?;
    }
    if !failures.is_empty() {
        let failures = std::mem::take(failures);
        send(out, Msg::Fail(pb::Fail { failures })).await?;
    }
    Ok(())
}

/// The pause before sending results again after the `n`th transient
/// refusal in a row: 100 ms doubling to 3.2 s, with up to half again of
/// random jitter so workers refused together do not come back together.
fn resend_backoff(n: u32) -> Duration {
    crate::wire::jittered(
        n.saturating_sub(1),
        Duration::from_millis(100),
        Duration::from_millis(3200),
    )
}

async fn send(out: &mpsc::Sender<pb::WorkerMessage>, msg: Msg) -> Result<(), ClientError> {
    out.send(message(msg))
        .await
        .map_err(|_| ClientError::Protocol("the stream to the server is closed".into()))
}

pub use crate::shutdown::terminated;

/// A worker, configured step by step, that runs an async handler per
/// leased job: heartbeats every held lease (with the progress the handler
/// reports), sends results (with their cost and usage) and sends them
/// again while the node cannot log them, reconnects across the given nodes
/// with jittered backoff, and on stop drains: no new jobs, held ones finish
/// and are reported.
///
/// ```no_run
/// use bytes::Bytes;
/// use drover::client::worker::{Job, JobError, Worker};
///
/// # async fn example() -> Result<(), drover::client::ClientError> {
/// let report = Worker::new("127.0.0.1:7070", ["emails"])
///     .concurrency(4)
///     .run(|job: Job| async move {
///         if job.payload.is_empty() {
///             return Err(JobError::new("empty_payload", "nothing to send"));
///         }
///         job.progress(0.5, "rendered");
///         Ok(Bytes::from_static(b"sent"))
///     })
///     .await?; // until SIGTERM or ctrl-c
/// println!("{} jobs completed", report.completed);
/// # Ok(()) }
/// ```
pub struct Worker {
    opts: WorkerOptions,
}

impl From<WorkerOptions> for Worker {
    fn from(opts: WorkerOptions) -> Worker {
        Worker { opts }
    }
}

impl Worker {
    /// A worker of `queues` on `servers` (one node's address, or several
    /// separated by commas), one job at a time, named after this host and
    /// process.
    pub fn new<Q: Into<String>>(
        servers: impl Into<String>,
        queues: impl IntoIterator<Item = Q>,
    ) -> Worker {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_else(|_| "worker".into());
        let id = format!("{}-{}", host.trim(), std::process::id());
        let queues = queues.into_iter().map(Into::into).collect();
        Worker {
            opts: WorkerOptions::new(servers, id, queues, 1),
        }
    }

    /// Its id: unique among running workers (the node re-sends a worker's
    /// leases by it after a reconnect).
    pub fn id(mut self, id: impl Into<String>) -> Worker {
        self.opts.worker_id = id.into();
        self
    }

    /// Jobs it runs at once.
    pub fn concurrency(mut self, n: u32) -> Worker {
        self.opts.concurrency = n;
        self
    }

    /// A version label for `drover workers list`.
    pub fn version(mut self, version: impl Into<String>) -> Worker {
        self.opts.version = version.into();
        self
    }

    /// The token (role worker) and TLS settings.
    pub fn credentials(mut self, credentials: crate::wire::Credentials) -> Worker {
        self.opts.credentials = credentials;
        self
    }

    /// Gzip results and take gzipped leases (large payloads, slow links).
    pub fn compression(mut self, on: bool) -> Worker {
        self.opts.compression = on;
        self
    }

    /// How long a stopping worker goes on trying to reach a node to report.
    pub fn stop_timeout(mut self, timeout: Duration) -> Worker {
        self.opts.stop_timeout = timeout;
        self
    }

    /// The options it runs with, to adjust the rest.
    pub fn options_mut(&mut self) -> &mut WorkerOptions {
        &mut self.opts
    }

    /// What it is doing, for a health check.
    pub fn health(&self) -> Arc<WorkerHealth> {
        self.opts.health.clone()
    }

    /// Works until SIGTERM or ctrl-c, then drains.
    pub async fn run<H: Handler>(self, handler: H) -> Result<WorkerReport, ClientError> {
        self.run_until(handler, terminated()).await
    }

    /// Works until `stop` completes, then drains.
    pub async fn run_until<H: Handler>(
        self,
        handler: H,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<WorkerReport, ClientError> {
        let (tx, rx) = watch::channel(false);
        let stopper = tokio::spawn(async move {
            stop.await;
            tx.send_replace(true);
        });
        let report = run(self.opts, handler, rx).await;
        stopper.abort();
        report
    }

    /// Works until `stop` turns true, then drains.
    pub async fn run_with<H: Handler>(
        self,
        handler: H,
        stop: watch::Receiver<bool>,
    ) -> Result<WorkerReport, ClientError> {
        run(self.opts, handler, stop).await
    }
}
