//! Jobs: enqueue one, read one, cancel one.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use base64::Engine as _;

use super::{body, id_param, query, HttpState};
use crate::api::auth::Caller;
use crate::api::types::{
    CancelledBody, EnqueueBody, EnqueuedBody, JobBody, JobStateBody, JobsPageBody, TimelineBody,
};
use crate::api::ErrorResponses;
use crate::error::Error;
use crate::job::JobRequest;

fn into_request(
    b: EnqueueBody,
    queue: String,
    headers: &axum::http::HeaderMap,
) -> Result<JobRequest, Error> {
    // The body's own, else the request's header (an invalid header is
    // ignored, as W3C asks; an invalid field is refused).
    let traceparent = if b.traceparent.is_empty() {
        headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| crate::job::valid_traceparent(t))
            .unwrap_or_default()
            .to_string()
    } else {
        b.traceparent
    };
    let payload = match (b.payload, b.payload_base64) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "payload",
                "give payload or payload_base64, not both",
            ))
        }
        (Some(text), None) => bytes::Bytes::from(text),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| Error::invalid("payload_base64", format!("not valid base64: {e}")))?
            .into(),
        (None, None) => bytes::Bytes::new(),
    };
    let delay_ms = match (b.delay_ms, b.delay) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid("delay", "give delay or delay_ms, not both"))
        }
        (Some(ms), None) => ms,
        (None, Some(d)) => crate::wire::parse_duration_ms(&d, crate::wire::MAX_DELAY)
            .map_err(|reason| Error::invalid("delay", reason))?,
        (None, None) => 0,
    };
    let timeout_ms = match &b.timeout {
        None => 0,
        Some(d) => crate::wire::parse_duration_ms(d, crate::wire::MAX_DELAY)
            .map_err(|reason| Error::invalid("timeout", reason))?,
    };
    Ok(JobRequest {
        queue,
        job_type: b.job_type,
        tenant: b.tenant,
        run_id: b.run_id,
        priority: b.priority,
        payload,
        idempotency_key: b.idempotency_key,
        delay_ms,
        labels: b.labels,
        concurrency_key: b.concurrency_key,
        concurrency_limit: b.concurrency_limit,
        rate_key: b.rate_key,
        rate_limit: b.rate_limit,
        timeout_ms,
        after: b.after.iter().map(u64::to_string).collect(),
        on_dependency_failure: b.on_dependency_failure,
        traceparent,
    })
}

/// Enqueue one job; answers once it is durable.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/jobs", tag = "jobs",
    params(("queue" = String, Path, description = "A-Z a-z 0-9 _ . -, at most 128")),
    request_body = EnqueueBody,
    responses((status = 201, body = EnqueuedBody), ErrorResponses))]
pub(super) async fn enqueue(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
    headers: axum::http::HeaderMap,
    b: Result<super::body::Object<EnqueueBody>, Error>,
) -> Result<(StatusCode, Json<EnqueuedBody>), Error> {
    let req = into_request(body(b)?, queue, &headers)?;
    let ids = s.app.enqueue(&caller, vec![req]).await?;
    let e = ids
        .first()
        .ok_or_else(|| Error::Driver("an enqueue of one job answered no id".into()))?;
    Ok((
        StatusCode::CREATED,
        Json(EnqueuedBody {
            id: e.id,
            duplicate: e.duplicate,
        }),
    ))
}

/// One job: its record, payload, result and timeline.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = u64, Path, minimum = 1)),
    responses((status = 200, body = JobBody), ErrorResponses))]
pub(super) async fn get_job(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<JobBody>, Error> {
    let id = id_param("id", &id, "a job id")?;
    Ok(Json(s.app.get_job(&caller, id).await?.into()))
}

/// A job's timeline, oldest first (bounded per job), and its latest
/// progress.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/timeline", tag = "jobs",
    params(("id" = u64, Path, minimum = 1)),
    responses((status = 200, body = TimelineBody), ErrorResponses))]
pub(super) async fn timeline(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TimelineBody>, Error> {
    let id = id_param("id", &id, "a job id")?;
    let job: JobBody = s.app.get_job(&caller, id).await?.into();
    Ok(Json(TimelineBody {
        id,
        state: job.state,
        events: job.events,
        progress: job.progress,
    }))
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ByKeyQuery {
    /// The tenant the job was enqueued for (default "default").
    #[serde(default)]
    tenant: Option<String>,
}

/// The job an idempotency key names in a queue (and tenant), with its
/// result, until the key expires (`jobs.idempotency_ttl`).
#[utoipa::path(get, path = "/api/v1/queues/{queue}/jobs/by-key/{key}", tag = "jobs",
    params(
        ("queue" = String, Path, description = "A-Z a-z 0-9 _ . -, at most 128"),
        ("key" = String, Path, min_length = 1, max_length = 256),
        ByKeyQuery),
    responses((status = 200, body = JobBody), ErrorResponses))]
pub(super) async fn by_key(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path((queue, key)): Path<(String, String)>,
    q: Result<Query<ByKeyQuery>, QueryRejection>,
) -> Result<Json<JobBody>, Error> {
    let q = query(q)?;
    let tenant = q.tenant.unwrap_or_default();
    Ok(Json(
        s.app
            .job_by_key(&caller, &tenant, &queue, &key)
            .await?
            .into(),
    ))
}

/// Cancel a job that has not finished.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = u64, Path, minimum = 1)),
    responses((status = 200, body = CancelledBody), ErrorResponses))]
pub(super) async fn cancel(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<CancelledBody>, Error> {
    let id = id_param("id", &id, "a job id")?;
    let was = s.app.cancel(&caller, id).await?;
    Ok(Json(CancelledBody {
        id,
        state: JobStateBody::Cancelled,
        was: was.into(),
    }))
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct JobsQuery {
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    #[param(inline)]
    state: Option<JobStateBody>,
    #[serde(default)]
    tenant: Option<String>,
    /// The run id.
    #[serde(default)]
    run: Option<String>,
    /// The job type.
    #[serde(default, rename = "type")]
    #[param(rename = "type")]
    job_type: Option<String>,
    /// The last error's class.
    #[serde(default)]
    class: Option<String>,
    /// In its state for longer than this: "1h", "30m".
    #[serde(default)]
    older_than: Option<String>,
    /// The `next` of the page before.
    #[serde(default)]
    after: Option<String>,
    /// Jobs on a page, 1 to 1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `oldest` (the default) or `newest`: the order of live states and
    /// of the list with no state (finished states are newest first).
    #[serde(default)]
    #[param(pattern = "^(newest|oldest)$")]
    order: Option<String>,
}

/// Jobs by queue, state, tenant, run, error class and age: live states
/// (ready, scheduled, leased) in id order (`order=newest`: newest first),
/// finished ones newest first; served from the state's index, never a scan
/// of every job.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobsQuery),
    responses((status = 200, body = JobsPageBody), ErrorResponses))]
pub(super) async fn list(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Json<JobsPageBody>, Error> {
    let q = query(q)?;
    let names = [("queue", &q.queue), ("tenant", &q.tenant), ("run", &q.run)];
    for (field, value) in names {
        if let Some(v) = value {
            crate::job::validate_name(field, v)?;
        }
    }
    let older_than_ms = match &q.older_than {
        None => None,
        Some(d) => Some(
            crate::wire::parse_duration_ms(d, crate::wire::MAX_DELAY)
                .map_err(|reason| Error::invalid("older_than", reason))?,
        ),
    };
    let newest = match q.order.as_deref() {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(other) => {
            return Err(Error::invalid(
                "order",
                format!("{other:?} is not newest or oldest"),
            ))
        }
    };
    let filter = crate::machine::find::JobQuery {
        newest,
        queue: q.queue,
        state: q.state.map(Into::into),
        tenant: q.tenant,
        run: q.run,
        job_type: q.job_type,
        class: q.class,
        older_than_ms,
        finished_since_ms: None,
        now_ms: 0,
    };
    let page = s
        .app
        .list_jobs(&caller, filter, q.after.as_deref(), q.limit.unwrap_or(100))
        .await?;
    Ok(Json(JobsPageBody {
        jobs: page.jobs.iter().map(Into::into).collect(),
        next: page.next,
    }))
}
