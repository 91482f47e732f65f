//! Adapters from the wire to commands: the gRPC producer, worker and peer
//! services and the HTTP admin API. They turn requests into commands and
//! outcomes into responses.
//!
//! The rules are not here. A new job is checked by [`crate::job`]'s
//! validation before it becomes a command, and what a command may do is the
//! machine's to decide ([`crate::machine`]), so every node applies the same
//! rules. Access rules stay at the edge, since they are about the caller,
//! not the state: [`auth`] checks tokens, roles and rate limits, and
//! [`scope`] what a token may touch.

pub mod auth;
pub mod blocked;
pub mod canary;
pub mod certs;
pub mod convert;
pub mod costs;
pub mod dead;
pub mod http;
pub mod lease_batch;
pub mod listen;
pub mod listing;
pub mod peer;
pub mod producer;
pub mod request_metrics;
pub mod scope;
pub mod types;
pub mod worker;

use std::sync::Arc;

use tokio::sync::watch;

use crate::api::auth::Caller;
use crate::api::types::ErrorBody;
use crate::cluster::router::Router;
use crate::command::{Command, Enqueued, Outcome};
use crate::config::Config;
use crate::driver::DriverHandle;
use crate::error::Error;
use crate::job::{Job, JobId, JobRequest, JobState};
use crate::workers::WorkerRegistry;

/// What every adapter shares: the way to the driver, the config, the soft
/// state of connected workers, and the shutdown signal.
#[derive(Clone)]
pub struct App {
    /// Which worker ids get series of their own in the per-worker metrics.
    pub worker_labels: crate::metrics::WorkerLabels,
    /// Faults this node injected, by queue and kind (`GET /api/v1/chaos`).
    pub chaos: ChaosCounts,
    /// The way to this node's raft loop: its committed state, the stats it
    /// publishes, the log's clock.
    pub driver: DriverHandle,
    /// Where commands go: proposed here, or forwarded to the leader.
    pub router: Router,
    /// The config file as the node read it at start (a SIGHUP reload does
    /// not change it).
    pub config: Arc<Config>,
    /// The workers connected to this node (soft state, lost on restart).
    pub workers: WorkerRegistry,
    /// Turns true when the node begins to stop: the listener stops
    /// accepting, and worker streams are told to move to another node.
    pub shutdown: watch::Receiver<bool>,
    /// What seals payloads, results and error messages before they are
    /// proposed and opens them as they leave (no keys: nothing sealed).
    pub keys: Arc<crate::sealing::Keys>,
    /// The cluster's workers as last gathered, for what they hold back.
    pub workers_cache: blocked::WorkersCache,
    /// Where node spans go (`[tracing] otlp_endpoint`), if anywhere.
    pub tracer: crate::otlp::NodeTracer,
}

/// Faults a node injected into its worker streams, by (queue, kind), since
/// it started.
#[derive(Clone, Default)]
pub struct ChaosCounts(
    Arc<std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>>>,
);

impl ChaosCounts {
    /// Counts one fault of `kind` (`drop`, `delay`, `revoke`, `fail`)
    /// injected into `queue`, here and in `drover_chaos_injected_total`.
    pub fn count(&self, queue: &str, kind: &'static str) {
        metrics::counter!("drover_chaos_injected_total", "queue" => queue.to_string(), "kind" => kind)
            .increment(1);
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((queue.to_string(), kind))
            .or_default() += 1;
    }

    /// The counts so far, by (queue, kind).
    pub fn snapshot(&self) -> std::collections::BTreeMap<(String, &'static str), u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A job as read back, with its payload and result.
pub struct JobView {
    /// Its record: everything but payload and result.
    pub job: Job,
    /// What the producer enqueued.
    pub payload: bytes::Bytes,
    /// What the worker that completed it sent back; empty until then.
    pub result: bytes::Bytes,
    /// Why a ready job is not leased yet: the first of `holds`.
    pub waiting: Option<String>,
    /// Everything that holds a ready job back, the log's reasons first
    /// (see [`crate::machine::JobReader::holds`]), then the workers'.
    pub holds: Vec<crate::machine::JobHold>,
}

impl App {
    /// The workers connected to this node, with their quarantine.
    pub fn local_workers(&self) -> Vec<crate::workers::WorkerInfo> {
        let stats = self.driver.stats();
        self.workers.list(
            self.config.node_id,
            self.driver.log_now_ms(),
            &stats.quarantined,
        )
    }

    /// The workers connected across the cluster, gathered at most once a
    /// second.
    pub async fn cluster_workers(&self) -> Arc<blocked::ClusterWorkers> {
        if let Some(w) = self.workers_cache.fresh() {
            return w;
        }
        let mut workers = self.local_workers();
        let mut unreachable = Vec::new();
        for (id, answer) in self.router.peer_workers("", false).await {
            match answer {
                Ok(peer) => workers.extend(peer.workers),
                Err(_) => unreachable.push(id),
            }
        }
        self.workers_cache.keep(blocked::ClusterWorkers {
            workers,
            unreachable,
        })
    }

    /// Everything that holds `job` back from a lease now (nothing unless
    /// it is ready).
    pub async fn job_holds(&self, job: &Job) -> Result<Vec<crate::machine::JobHold>, Error> {
        if job.state != crate::job::JobState::Ready {
            return Ok(Vec::new());
        }
        let stats = self.driver.stats();
        let leased = stats.queues.get(&job.queue).map_or(0, |c| c.leased);
        let mut holds = self.driver.reader().holds(job, leased)?;
        let workers = self.cluster_workers().await;
        let now = self.driver.log_now_ms();
        holds.extend(blocked::job_worker_hold(job, &stats, &workers, now));
        Ok(holds)
    }

    /// Validates a batch of job requests and enqueues them as one command.
    /// Errors name the job's position in the batch and the field.
    /// A producer's jobs are labelled with its token's name, so it may
    /// cancel them later; nobody else may set that label.
    pub async fn enqueue(
        &self,
        caller: &Caller,
        requests: Vec<JobRequest>,
    ) -> Result<Vec<Enqueued>, Error> {
        let started = std::time::Instant::now();
        let result = self.enqueue_labelled(caller, requests, &[]).await;
        let outcome = if result.is_ok() { "ok" } else { "refused" };
        metrics::histogram!(crate::metrics::ENQUEUE_LATENCY, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// [`App::enqueue`], adding drover's own `labels` to every job once it
    /// is validated (producers may not set them).
    pub async fn enqueue_labelled(
        &self,
        caller: &Caller,
        requests: Vec<JobRequest>,
        labels: &[(&str, String)],
    ) -> Result<Vec<Enqueued>, Error> {
        let jobs = self.validate_jobs(caller, requests, labels)?;
        // Spans only for jobs that carry a trace context, and only when
        // they go somewhere.
        let traced: Vec<(usize, crate::job::NewJob)> = if self.tracer.is_on() {
            jobs.iter()
                .enumerate()
                .filter(|(_, j)| j.labels.contains_key(crate::job::TRACEPARENT_LABEL))
                .map(|(i, j)| (i, j.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let started = (!traced.is_empty()).then(std::time::SystemTime::now);
        match self.router.propose(Command::Enqueue { jobs }).await? {
            Outcome::Enqueued(ids) => {
                if let Some(started) = started {
                    self.trace_enqueued(&traced, &ids, started);
                }
                Ok(ids)
            }
            Outcome::Rejected(refusal) => {
                if let crate::command::Refusal::Shed {
                    queue, priority, ..
                } = &refusal
                {
                    metrics::counter!("drover_jobs_shed_total", "queue" => queue.clone(), "priority" => priority.to_string())
                        .increment(1);
                }
                Err(Error::Refused(refusal))
            }
            other => Err(unexpected(other)),
        }
    }

    /// The enqueue spans of the traced jobs of a batch (by their place in
    /// it) that `ids` says were new.
    fn trace_enqueued(
        &self,
        traced: &[(usize, crate::job::NewJob)],
        ids: &[Enqueued],
        started: std::time::SystemTime,
    ) {
        for (i, job) in traced {
            let Some(e) = ids.get(*i).filter(|e| !e.duplicate) else {
                continue;
            };
            self.tracer.job_span(
                "drover.enqueue",
                opentelemetry::trace::SpanKind::Server,
                crate::otlp::SpanJob::of_new(e.id, job),
                started,
                &[],
            );
        }
    }

    /// Validates requests into jobs, as [`App::enqueue_labelled`] takes them.
    fn validate_jobs(
        &self,
        caller: &Caller,
        requests: Vec<JobRequest>,
        labels: &[(&str, String)],
    ) -> Result<Vec<crate::job::NewJob>, Error> {
        if requests.is_empty() {
            return Err(Error::invalid("jobs", "the request holds no jobs"));
        }
        let max = self.config.limits.max_jobs_per_request;
        if requests.len() > max {
            return Err(Error::invalid(
                "jobs",
                format!(
                    "{} jobs is over the limit of {max} per request (limits.max_jobs_per_request)",
                    requests.len()
                ),
            ));
        }
        let limits = self.config.job_limits();
        let batch = requests.len() > 1;
        let jobs = requests
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                if caller.is_producer() {
                    r.labels
                        .insert(Caller::OWNER_LABEL.into(), caller.name.clone());
                } else {
                    r.labels.remove(Caller::OWNER_LABEL);
                }
                let mut job = r.validate(limits).map_err(|e| {
                    if batch {
                        Error::invalid("jobs", format!("job {i}: {e}"))
                    } else {
                        Error::InvalidJob(e)
                    }
                })?;
                for (k, v) in labels {
                    job.labels.insert(k.to_string(), v.clone());
                }
                if crate::sealing::looks_sealed(&job.payload) {
                    return Err(Error::invalid(
                        "payload",
                        "starts with the bytes drover marks sealed payloads with (NUL \"drs1\"): prefix it with another byte",
                    ));
                }
                job.payload = self
                    .keys
                    .seal(crate::sealing::Field::Payload, job.payload);
                Ok::<_, Error>(job)
            })
            .collect::<Result<Vec<_>, _>>()?;
        for job in &jobs {
            caller.check_job_scope(&job.tenant, &job.queue)?;
        }
        // Checked on validated names only, so a flood of made-up tenants
        // is refused before it can grow the limiter.
        let tenants: std::collections::BTreeSet<&str> =
            jobs.iter().map(|j| j.tenant.as_str()).collect();
        for tenant in tenants {
            caller.check_tenant(tenant)?;
        }
        Ok(jobs)
    }

    /// Enqueues `requests` (copies of run `run`'s jobs) as a new run: the
    /// one named `into`, or the first free `RUN-replay-N`, chosen by the
    /// machine in the same entry. Answers the run and the copies.
    pub async fn replay_run(
        &self,
        caller: &Caller,
        tenant: &str,
        run: &str,
        into: Option<String>,
        requests: Vec<JobRequest>,
    ) -> Result<(String, Vec<Enqueued>), Error> {
        let replay_of = format!("{tenant}/{run}");
        let jobs = self.validate_jobs(
            caller,
            requests,
            &[(crate::job::REPLAY_OF_LABEL, replay_of)],
        )?;
        let command = Command::EnqueueReplay(crate::command::EnqueueReplay {
            tenant: tenant.to_string(),
            run: run.to_string(),
            into,
            jobs,
        });
        match self.router.propose(command).await? {
            Outcome::EnqueuedRun { run, jobs } => Ok((run, jobs)),
            Outcome::Rejected(refusal) => Err(Error::Refused(refusal)),
            other => Err(unexpected(other)),
        }
    }

    /// Opens what a job record keeps sealed (its last error's message).
    pub fn open_job(&self, job: &mut Job) -> Result<(), Error> {
        if !job.last_error.is_empty() {
            let sealed = std::mem::take(&mut job.last_error);
            job.last_error = self.keys.open_text(crate::sealing::Field::Error, sealed)?;
        }
        Ok(())
    }

    /// Reads a job as it is now in the cluster (after a read index). A
    /// producer reads only the jobs it enqueued.
    pub async fn get_job(&self, caller: &Caller, id: JobId) -> Result<JobView, Error> {
        self.router.read_barrier().await?;
        let reader = self.driver.reader();
        let (mut job, payload) = reader.job_and_payload(id)?.ok_or(Error::JobNotFound(id))?;
        check_owner(caller, &job)?;
        use crate::sealing::Field;
        let result = self.keys.open(Field::Result, reader.result(id)?)?;
        let holds = self.job_holds(&job).await?;
        self.open_job(&mut job)?;
        Ok(JobView {
            payload: self.keys.open(Field::Payload, payload)?,
            result,
            waiting: holds.first().map(|h| h.detail.clone()),
            holds,
            job,
        })
    }

    /// The job an idempotency key names in a queue for a tenant (empty:
    /// "default"), until the key expires.
    pub async fn job_by_key(
        &self,
        caller: &Caller,
        tenant: &str,
        queue: &str,
        key: &str,
    ) -> Result<JobView, Error> {
        crate::job::validate_queue(queue)?;
        let tenant = if tenant.is_empty() {
            crate::job::DEFAULT_NAME
        } else {
            tenant
        };
        crate::job::validate_name("tenant", tenant)?;
        if key.is_empty() || key.len() > 256 {
            return Err(Error::invalid(
                "key",
                "an idempotency key is 1 to 256 bytes",
            ));
        }
        self.router.read_barrier().await?;
        let id = self
            .driver
            .reader()
            .job_by_key(tenant, queue, key)?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no job has idempotency key {key:?} in queue {queue} for tenant {tenant} (or the key expired)"
                ))
            })?;
        self.get_job(caller, id).await
    }

    /// Marks a producer answer from a follower with the leader's address
    /// (`drover-leader`), so a client given several nodes can send there
    /// directly and save the hop through this one.
    pub fn hint_leader<T>(&self, mut response: tonic::Response<T>) -> tonic::Response<T> {
        if let Some(addr) = self.router.leader_addr() {
            if let Ok(v) = tonic::metadata::MetadataValue::try_from(addr.as_str()) {
                response.metadata_mut().insert(crate::wire::LEADER_HINT, v);
            }
        }
        response
    }

    /// Cancels a job; returns the state it was in. A producer may cancel
    /// only the jobs it enqueued.
    pub async fn cancel(&self, caller: &Caller, id: JobId) -> Result<JobState, Error> {
        if caller.is_producer() || caller.tenant_scoped() {
            self.router.read_barrier().await?;
            let job = self
                .driver
                .reader()
                .job(id)?
                .ok_or(Error::JobNotFound(id))?;
            check_owner(caller, &job)?;
        }
        let change = crate::command::Audited::Cancel(crate::command::Cancel { id });
        match self
            .audited(caller, "job.cancel", format!("job {id}"), change)
            .await?
        {
            Outcome::Cancelled(r) => Ok(r?),
            other => Err(unexpected(other)),
        }
    }

    /// Proposes a change with its audit record (written if it takes effect)
    /// and answers the change's outcome.
    pub async fn audited(
        &self,
        caller: &Caller,
        action: &str,
        target: String,
        change: crate::command::Audited,
    ) -> Result<Outcome, Error> {
        let command = Command::Audit {
            record: caller.audit(action, target),
            command: Some(change),
        };
        self.router.propose(command).await
    }

    /// Writes an audit record of a change that is not a machine command
    /// (membership, leadership, snapshots, workers), once it was made; a
    /// refused one changes nothing, the audit log included. The result is
    /// returned as it was; a record that cannot be written is logged, since
    /// the change itself stands.
    pub async fn record<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: String,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        let value = result?;
        let mut record = caller.audit(action, target);
        record.outcome = "ok".into();
        let patience = std::time::Duration::from_secs(5);
        let command = Command::Audit {
            record: record.clone(),
            command: None,
        };
        if let Err(e) = self.router.propose_retrying(command, patience).await {
            tracing::error!(event = "audit_record_lost", ?record, error = %e, "could not write the audit record of a change");
        }
        Ok(value)
    }
}

/// A producer acts only on the jobs it enqueued (their owner label names
/// its token); other callers on any job their role reaches.
/// A producer's own jobs carry its token's name; other callers see all.
/// A token scoped to tenants reaches only their jobs.
pub(crate) fn owns(caller: &Caller, job: &Job) -> bool {
    caller.sees_tenant(&job.tenant)
        && (!caller.is_producer() || job.labels.get(Caller::OWNER_LABEL) == Some(&caller.name))
}

fn check_owner(caller: &Caller, job: &Job) -> Result<(), Error> {
    if !caller.sees_tenant(&job.tenant) {
        return Err(Error::PermissionDenied(format!(
            "job {} belongs to tenant {:?}, outside the tenants scope of token {:?}",
            job.id, job.tenant, caller.name
        )));
    }
    if !owns(caller, job) {
        return Err(Error::PermissionDenied(format!(
            "job {} was not enqueued with token {:?}; a producer reads and cancels only its own jobs",
            job.id, caller.name
        )));
    }
    Ok(())
}

/// The errors any admin endpoint may answer, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ErrorResponses {
    /// Bad input; `details.field` names what was wrong.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No token, or one the node does not know.
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The token's role may not do this.
    #[response(status = 403)]
    PermissionDenied(ErrorBody),
    /// No such job, node or endpoint.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Refused in the state things are in (a finished job, a membership
    /// change under way).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// Over the token's rate limit; see `Retry-After`.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// No leader, or the node is stopping; see `Retry-After` and
    /// `details.retry_safe`.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// Failed inside the node; its log has the details.
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// An outcome that does not belong to the command proposed: a bug, reported
/// rather than panicked on.
pub(crate) fn unexpected(outcome: Outcome) -> Error {
    Error::Machine(crate::machine::MachineError::Corrupt {
        key: "outcome".into(),
        reason: format!("unexpected outcome {outcome:?}"),
    })
}
