//! Queues: their depths, state and policy; pause, drain and resume, one
//! queue or all of them.

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::HttpState;
use crate::api::auth::Caller;
use crate::api::types::{
    ControlledBody, PurgeBody, PurgeState, PurgedBody, QueuePolicyBody, QueueStatusBody, QueuesBody,
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
    let mut names: std::collections::BTreeSet<&String> = stats.queues.keys().collect();
    names.extend(stats.paused.iter().chain(stats.draining.iter()));
    let queues = names
        .into_iter()
        .map(|name| {
            let counts = stats.queues.get(name).cloned().unwrap_or_default();
            let p = policies.queue(name);
            QueueStatusBody {
                name: name.clone(),
                counts: (&counts).into(),
                paused: stats.paused.contains(name),
                draining: stats.draining.contains(name),
                policy: QueuePolicyBody {
                    max_depth: p.max_depth,
                    concurrency_limit: p.concurrency_limit,
                    heartbeat_timeout: Some(duration(policies.heartbeat_timeout_ms(name))),
                    shed: p.shed.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                    sla: p.sla_ms.map(duration),
                    aging_after: p.aging_after_ms.map(duration),
                },
            }
        })
        .collect();
    Ok(Json(QueuesBody { queues }))
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
            crate::command::Audited::Control { scope, action },
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
    b: Result<Json<PurgeBody>, axum::extract::rejection::JsonRejection>,
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
    let mut cancelled = 0u64;
    let result = loop {
        let slice = crate::command::Command::PurgeQueue {
            queue: queue.clone(),
            filter: filter.clone(),
            limit: PURGE_SLICE,
        };
        match s.app.router.propose(slice).await {
            Ok(crate::command::Outcome::Purged { jobs, more, .. }) => {
                cancelled += u64::from(jobs);
                if !more || jobs == 0 {
                    break Ok(());
                }
            }
            Ok(other) => break Err(crate::api::unexpected(other)),
            Err(e) => break Err(e),
        }
    };
    // What was cancelled stays cancelled even if a later slice failed.
    let target = format!("queue {queue} ({cancelled} jobs)");
    if cancelled > 0 {
        s.app
            .record(&caller, "queues.purge", target, Ok(()))
            .await?;
    }
    result?;
    Ok(Json(PurgedBody { queue, cancelled }))
}
