//! Queues: their depths, state and policy; pause, drain and resume, one
//! queue or all of them.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;

use super::HttpState;
use crate::api::auth::Caller;
use crate::api::blocked::queue_holds;
use crate::api::types::{
    BlockedBody, ClearStuckBody, ControlledBody, HistoryBody, PurgeBody, PurgeState, PurgedBody,
    QueuePolicyBody, QueueStatusBody, QueueWhyBody, QueuesBody, RequeuedBody,
};
use crate::api::ErrorResponses;
use crate::command::{QueueAction, QueueScope};
use crate::error::Error;

/// Every queue that holds jobs or has a state, with its depths by state and
/// priority, paused and draining, and its policy.
#[utoipa::path(get, path = "/api/v1/queues", tag = "queues",
    responses((status = 200, body = QueuesBody), ErrorResponses))]
pub(super) async fn list(State(s): State<HttpState>) -> Result<Json<QueuesBody>, Error> {
    s.app.router.read_barrier().await?;
    let stats = s.app.driver.stats();
    let policies = s.app.driver.reader().policies()?;
    let workers = s.app.cluster_workers().await;
    let mut names: std::collections::BTreeSet<&String> = stats.queues.keys().collect();
    names.extend(stats.paused.iter().chain(stats.draining.iter()));
    let queues = names
        .into_iter()
        .map(|name| {
            let counts = stats.queues.get(name).cloned().unwrap_or_default();
            let p = policies.queue(name);
            let holds = queue_holds(name, &counts, &stats, Some(&workers));
            QueueStatusBody {
                name: name.clone(),
                counts: (&counts).into(),
                paused: stats.paused.contains(name),
                draining: stats.draining.contains(name),
                oldest_ready_at_ms: stats.oldest_ready.get(name).copied(),
                sla_missed: stats.sla_missed.get(name).map_or(0, |m| m.iter().sum()),
                runnable: holds.runnable,
                blocked: holds.by_reason(),
                policy: QueuePolicyBody {
                    heartbeat_timeout: Some(duration(policies.heartbeat_timeout_ms(name))),
                    ..QueuePolicyBody::from(&p)
                },
            }
        })
        .collect();
    Ok(Json(QueuesBody { queues }))
}

/// Why a queue's jobs are not moving: its ready jobs, runnable and blocked
/// by reason and scope (each counted once, under the first reason that
/// holds it) with what releases them, and those waiting for dependencies
/// or their time.
#[utoipa::path(get, path = "/api/v1/queues/{queue}/why", tag = "queues",
    params(("queue" = String, Path)),
    responses((status = 200, body = QueueWhyBody), ErrorResponses))]
pub(super) async fn why(
    State(s): State<HttpState>,
    Path(queue): Path<String>,
) -> Result<Json<QueueWhyBody>, Error> {
    crate::job::validate_queue(&queue)?;
    s.app.router.read_barrier().await?;
    let stats = s.app.driver.stats();
    let Some(counts) = stats.queues.get(&queue) else {
        return Err(Error::NotFound(format!(
            "no queue {queue:?} holds jobs: `drover queues list` shows the queues"
        )));
    };
    let workers = s.app.cluster_workers().await;
    let holds = queue_holds(&queue, counts, &stats, Some(&workers));
    Ok(Json(QueueWhyBody {
        ready: counts.ready_total(),
        runnable: holds.runnable,
        blocked: holds
            .blocked
            .iter()
            .map(|b| BlockedBody::of(&queue, b.reason, &b.scope, Some(b.jobs), None))
            .collect(),
        waiting: counts.waiting,
        scheduled: counts.scheduled,
        leased: counts.leased,
        workers: holds.workers.map(|n| n as u64),
        notes: holds.notes,
        queue,
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryQuery {
    /// `1h` (10-second buckets, the default) or `24h` (5-minute buckets).
    #[serde(default)]
    range: Option<String>,
}

/// One queue's last hour or day on the node that answers: enqueued,
/// completed and failed per second, wait and run time percentiles.
#[utoipa::path(get, path = "/api/v1/queues/{queue}/history", tag = "queues",
    params(("queue" = String, Path), HistoryQuery),
    responses((status = 200, body = HistoryBody), ErrorResponses))]
pub(super) async fn history(
    State(s): State<HttpState>,
    Path(queue): Path<String>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<HistoryBody>, Error> {
    crate::job::validate_queue(&queue)?;
    history_of(&s, Some(queue), super::query(q)?)
}

/// Every queue's last hour or day together, on the node that answers.
#[utoipa::path(get, path = "/api/v1/history", tag = "queues", params(HistoryQuery),
    responses((status = 200, body = HistoryBody), ErrorResponses))]
pub(super) async fn history_all(
    State(s): State<HttpState>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<HistoryBody>, Error> {
    history_of(&s, None, super::query(q)?)
}

fn history_of(
    s: &HttpState,
    queue: Option<String>,
    q: HistoryQuery,
) -> Result<Json<HistoryBody>, Error> {
    use crate::history::Range;
    let range = match q.range.as_deref() {
        None => Range::Hour,
        Some(r) => Range::parse(r).ok_or_else(|| {
            Error::invalid(
                "range",
                format!(
                    "{r:?} is not a range: use 1h (10-second buckets) or 24h (5-minute buckets)"
                ),
            )
        })?,
    };
    let history = s.app.driver.history();
    // Plain data: a panic elsewhere while it was held leaves nothing half
    // written that matters.
    let history = history.lock().unwrap_or_else(|e| e.into_inner());
    let now = history.now_ms();
    let points = match history.points(queue.as_deref(), range, now) {
        Some(p) => p,
        // A queue the node knows that saw nothing since it started has an
        // empty chart; one it has never heard of is a typo.
        None if queue
            .as_ref()
            .is_some_and(|q| s.app.driver.stats().queues.contains_key(q)) =>
        {
            crate::history::History::new(now)
                .points(None, range, now)
                .unwrap_or_default()
        }
        None => {
            return Err(Error::NotFound(format!(
                "no queue {:?} on this node: `drover queues list` shows the queues",
                queue.unwrap_or_default()
            )))
        }
    };
    Ok(Json(HistoryBody {
        queue,
        range: range.as_str().into(),
        bucket_seconds: range.bucket_ms() / 1000,
        since_ms: history.since_ms(),
        node_id: s.app.driver.status().node_id,
        points,
    }))
}

fn duration(ms: u64) -> String {
    crate::wire::config_duration(std::time::Duration::from_millis(ms))
}

pub(super) async fn control(
    s: &HttpState,
    caller: &Caller,
    scope: QueueScope,
    action: QueueAction,
) -> Result<Json<ControlledBody>, Error> {
    let (family, target) = match &scope {
        QueueScope::Queue(q) => {
            crate::job::validate_queue(q)?;
            ("queues", format!("queue {q}"))
        }
        QueueScope::All => ("queues", "all queues".to_string()),
        QueueScope::Tenant(t) => {
            crate::job::validate_name("tenant", t)?;
            ("tenants", format!("tenant {t}"))
        }
    };
    let changed = s
        .app
        .audited(
            caller,
            &format!("{family}.{}", action.as_str()),
            target,
            crate::command::Audited::Control(crate::command::Control { scope, action }),
        )
        .await?;
    match changed {
        crate::command::Outcome::Controlled(changed) => Ok(Json(ControlledBody {
            action: action.as_str().to_string(),
            changed,
        })),
        other => Err(crate::api::unexpected(other)),
    }
}

macro_rules! queue_action {
    ($one:ident, $all:ident, $action:expr, $path_one:literal, $path_all:literal, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path_one, tag = "queues",
                            params(("queue" = String, Path)),
                            responses((status = 200, body = ControlledBody), ErrorResponses))]
        pub(super) async fn $one(
            State(s): State<HttpState>,
            Extension(caller): Extension<Caller>,
            Path(queue): Path<String>,
        ) -> Result<Json<ControlledBody>, Error> {
            control(&s, &caller, QueueScope::Queue(queue), $action).await
        }

        #[doc = $doc]
        /// Every queue at once.
        #[utoipa::path(post, path = $path_all, tag = "queues",
                            responses((status = 200, body = ControlledBody), ErrorResponses))]
        pub(super) async fn $all(
            State(s): State<HttpState>,
            Extension(caller): Extension<Caller>,
        ) -> Result<Json<ControlledBody>, Error> {
            control(&s, &caller, QueueScope::All, $action).await
        }
    };
}

queue_action!(
    pause,
    pause_all,
    QueueAction::Pause,
    "/api/v1/queues/{queue}/pause",
    "/api/v1/queues/pause",
    "Pause: lease nothing from the queue; its jobs wait, enqueues go on."
);
queue_action!(
    drain,
    drain_all,
    QueueAction::Drain,
    "/api/v1/queues/{queue}/drain",
    "/api/v1/queues/drain",
    "Drain: take no new jobs; leases go on until the queue is empty."
);
queue_action!(
    resume,
    resume_all,
    QueueAction::Resume,
    "/api/v1/queues/{queue}/resume",
    "/api/v1/queues/resume",
    "Resume: end a pause or a drain."
);

/// Jobs one purge slice cancels (one log entry).
const PURGE_SLICE: u32 = 500;

/// Cancel a queue's waiting jobs that match, in slices of 500 (each one log
/// entry), and say how many.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/purge", tag = "queues",
    params(("queue" = String, Path)),
    request_body = PurgeBody,
    responses((status = 200, body = PurgedBody), ErrorResponses))]
pub(super) async fn purge(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
    b: Result<super::body::Object<PurgeBody>, Error>,
) -> Result<Json<PurgedBody>, Error> {
    crate::job::validate_queue(&queue)?;
    let b = super::body(b)?;
    let older_than_ms = match &b.older_than {
        None => None,
        Some(d) => Some(
            crate::wire::parse_duration_ms(d, crate::wire::MAX_DELAY)
                .map_err(|reason| Error::invalid("older_than", reason))?,
        ),
    };
    if let Some(t) = &b.tenant {
        crate::job::validate_name("tenant", t)?;
    }
    let filter = crate::command::PurgeFilter {
        state: b.state.map(|s| match s {
            PurgeState::Ready => crate::job::JobState::Ready,
            PurgeState::Scheduled => crate::job::JobState::Scheduled,
        }),
        tenant: b.tenant.clone(),
        older_than_ms,
    };
    if let Some(t) = &b.job_type {
        crate::job::validate_name("type", t)?;
    }
    let result = match &b.job_type {
        Some(job_type) => purge_of_type(&s, &caller, &queue, &filter, job_type).await,
        None => purge_slices(&s, &queue, &filter).await,
    };
    let cancelled = match &result {
        Ok(n) => *n,
        Err((n, _)) => *n,
    };
    // What was cancelled stays cancelled even if a later slice failed.
    let target = format!("queue {queue} ({cancelled} jobs)");
    if cancelled > 0 {
        s.app
            .record(&caller, "queues.purge", target, Ok(()))
            .await?;
    }
    result.map_err(|(_, e)| e)?;
    Ok(Json(PurgedBody { queue, cancelled }))
}

/// The slices of a purge the machine filters itself: (jobs cancelled, and
/// the error that stopped it, if one did).
async fn purge_slices(
    s: &HttpState,
    queue: &str,
    filter: &crate::command::PurgeFilter,
) -> Result<u64, (u64, Error)> {
    let mut cancelled = 0u64;
    loop {
        let slice = crate::command::Command::PurgeQueue {
            queue: queue.to_string(),
            filter: filter.clone(),
            limit: PURGE_SLICE,
        };
        match s.app.router.propose(slice).await {
            Ok(crate::command::Outcome::Purged { jobs, more, .. }) => {
                cancelled += u64::from(jobs);
                if !more || jobs == 0 {
                    return Ok(cancelled);
                }
            }
            Ok(other) => return Err((cancelled, crate::api::unexpected(other))),
            Err(e) => return Err((cancelled, e)),
        }
    }
}

/// A purge of one job type: the jobs listed by the filter (off the raft
/// loop), then cancelled by id, a page at a time, by
/// [`crate::command::Command::PurgeJobs`], which skips any that stopped
/// waiting meanwhile.
async fn purge_of_type(
    s: &HttpState,
    caller: &Caller,
    queue: &str,
    filter: &crate::command::PurgeFilter,
    job_type: &str,
) -> Result<u64, (u64, Error)> {
    use crate::job::JobState;
    let states = match filter.state {
        Some(state) => vec![state],
        None => vec![JobState::Ready, JobState::Scheduled],
    };
    let started = s.app.driver.log_now_ms();
    let mut cancelled = 0u64;
    for state in states {
        let mut after: Option<String> = None;
        loop {
            let query = crate::machine::find::JobQuery {
                queue: Some(queue.to_string()),
                state: Some(state),
                tenant: filter.tenant.clone(),
                job_type: Some(job_type.to_string()),
                ..Default::default()
            };
            let page = s
                .app
                .list_jobs(caller, query, after.as_deref(), PURGE_SLICE as usize)
                .await
                .map_err(|e| (cancelled, e))?;
            // Ids grow with the log's time: a job enqueued after the purge
            // began ends it, so producers that keep enqueueing the type
            // cannot keep it going.
            let (before, after_start): (Vec<&crate::job::Job>, Vec<&crate::job::Job>) =
                page.jobs.iter().partition(|j| j.enqueued_at_ms <= started);
            // Waiting as `PurgeQueue` measures it: ready jobs from when they
            // became ready, delayed ones from their enqueue.
            let waited = |j: &crate::job::Job| match state {
                JobState::Ready => crate::machine::find::state_since(j),
                _ => j.enqueued_at_ms,
            };
            let ids: Vec<u64> = before
                .into_iter()
                .filter(|j| {
                    filter
                        .older_than_ms
                        .is_none_or(|age| started.saturating_sub(waited(j)) >= age)
                })
                .map(|j| j.id)
                .collect();
            if !ids.is_empty() {
                let slice = crate::command::Command::PurgeJobs(crate::command::PurgeJobs {
                    queue: queue.to_string(),
                    ids,
                });
                match s.app.router.propose(slice).await {
                    Ok(crate::command::Outcome::Purged { jobs, .. }) => {
                        cancelled += u64::from(jobs)
                    }
                    Ok(other) => return Err((cancelled, crate::api::unexpected(other))),
                    Err(e) => return Err((cancelled, e)),
                }
            }
            match page.next {
                Some(next) if after_start.is_empty() => after = Some(next),
                _ => break,
            }
        }
    }
    Ok(cancelled)
}

/// Default age past which `clear-stuck` takes a lease back.
const STUCK_AFTER: &str = "10m";

/// Take back a queue's stuck leases and make their jobs ready again:
/// leased longer than `older_than` (default 10m), held by `worker`, or
/// held by a worker connected to no node. Counted in
/// `drover_jobs_requeued_total{queue,reason="stuck"}`.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/clear-stuck", tag = "queues",
    params(("queue" = String, Path, description = "A-Z a-z 0-9 _ . -, at most 128")),
    request_body = ClearStuckBody,
    responses((status = 200, body = RequeuedBody), ErrorResponses))]
pub(super) async fn clear_stuck(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
    b: Result<super::body::Object<ClearStuckBody>, Error>,
) -> Result<Json<RequeuedBody>, Error> {
    crate::job::validate_queue(&queue)?;
    let b = super::body(b)?;
    if b.worker
        .as_ref()
        .is_some_and(|w| w.is_empty() || w.len() > 128)
    {
        return Err(Error::invalid("worker", "a worker id is 1 to 128 bytes"));
    }
    let older_than = match (&b.older_than, &b.worker) {
        (Some(d), _) => Some(d.as_str()),
        (None, None) => Some(STUCK_AFTER),
        (None, Some(_)) => None,
    };
    let older_than_ms = older_than
        .map(|d| {
            crate::wire::parse_duration_ms(d, crate::wire::MAX_DELAY)
                .map_err(|reason| Error::invalid("older_than", reason))
        })
        .transpose()?;
    let leased = crate::machine::find::JobQuery {
        queue: Some(queue.clone()),
        state: Some(crate::job::JobState::Leased),
        ..Default::default()
    };
    let jobs = s.app.find_jobs(&caller, leased, 100_000).await?;
    // Workers no node knows of hold nothing they will finish; only when
    // every node answered can a worker be called gone.
    let connected = super::workers::gather(&s, "", false).await;
    let gone = |w: &str| {
        connected.unreachable.is_empty() && !connected.workers.iter().any(|c| c.worker_id == w)
    };
    let now = s.app.driver.log_now_ms();
    let stuck: Vec<crate::job::Job> = jobs
        .into_iter()
        .filter(|j| {
            let holder = j.lease.as_ref().map_or("", |l| l.worker.as_str());
            let old = older_than_ms
                .is_some_and(|d| now.saturating_sub(crate::machine::find::state_since(j)) > d);
            let named = b.worker.as_deref().is_some_and(|w| w == holder);
            old || named || (b.worker.is_none() && gone(holder))
        })
        .collect();
    let reason = match (&b.worker, older_than) {
        (Some(w), None) => format!("held by worker {w}"),
        (Some(w), Some(d)) => format!("held by worker {w} or leased over {d}"),
        (None, Some(d)) => format!("leased over {d} or its worker is gone"),
        (None, None) => "stuck".into(),
    };
    let requeued = s
        .app
        .requeue(&caller, &stuck, reason, format!("queue {queue}"))
        .await?;
    Ok(Json(RequeuedBody { requeued }))
}
