//! Dead letters: list (with counts by queue and class), show with the
//! error history, replay and purge, one job or by filter.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};

use super::{body, id_param, query, HttpState};
use crate::api::auth::Caller;
use crate::api::types::{
    DeadCountBody, DeadFilterBody, DeadJobBody, DeadPageBody, JobBody, PurgedDeadBody, ReplayedBody,
};
use crate::api::ErrorResponses;
use crate::error::Error;
use crate::job::JobState;
use crate::machine::find::JobQuery;

/// A duration ago ("1h") or a time (RFC 3339), as ms since the epoch.
pub(super) fn parse_since(field: &'static str, s: &str) -> Result<u64, Error> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        return Ok(ms);
    }
    let ago = crate::wire::parse_duration_ms(s, crate::wire::MAX_DELAY).map_err(|reason| {
        Error::invalid(
            field,
            format!("{reason}; give a duration (\"1h\") or a time (\"2026-11-28T09:00:00Z\")"),
        )
    })?;
    Ok(crate::driver::now_ms().saturating_sub(ago))
}

fn duration(field: &'static str, s: &Option<String>) -> Result<Option<u64>, Error> {
    s.as_deref()
        .map(|d| {
            crate::wire::parse_duration_ms(d, crate::wire::MAX_DELAY)
                .map_err(|reason| Error::invalid(field, reason))
        })
        .transpose()
}

/// The dead jobs a filter names.
fn dead_query(
    queue: &Option<String>,
    job_type: &Option<String>,
    class: &Option<String>,
    since: &Option<String>,
    older_than: &Option<String>,
) -> Result<JobQuery, Error> {
    if let Some(q) = queue {
        crate::job::validate_queue(q)?;
    }
    Ok(JobQuery {
        queue: queue.clone(),
        state: Some(JobState::Dead),
        job_type: job_type.clone(),
        class: class.clone(),
        older_than_ms: duration("older_than", older_than)?,
        finished_since_ms: since
            .as_deref()
            .map(|s| parse_since("since", s))
            .transpose()?,
        ..Default::default()
    })
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DeadQuery {
    #[serde(default)]
    queue: Option<String>,
    /// The job type.
    #[serde(default, rename = "type")]
    #[param(rename = "type")]
    job_type: Option<String>,
    /// The last error's class.
    #[serde(default)]
    class: Option<String>,
    /// Died within this long ("1h") or since this time (RFC 3339).
    #[serde(default)]
    since: Option<String>,
    /// The `next` of the page before.
    #[serde(default)]
    after: Option<String>,
    /// Jobs on a page, 1 to 1000 (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Dead jobs, newest first, and how many there are by queue and class.
#[utoipa::path(get, path = "/api/v1/dead", tag = "dead letters", params(DeadQuery),
    responses((status = 200, body = DeadPageBody), ErrorResponses))]
pub(super) async fn list(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<DeadQuery>, QueryRejection>,
) -> Result<Json<DeadPageBody>, Error> {
    let q = query(q)?;
    let filter = dead_query(&q.queue, &q.job_type, &q.class, &q.since, &None)?;
    let page = s
        .app
        .list_jobs(&caller, filter, q.after.as_deref(), q.limit.unwrap_or(100))
        .await?;
    let stats = s.app.driver.stats();
    let counts = stats
        .dead_by_class
        .iter()
        .filter(|(queue, _)| q.queue.as_ref().is_none_or(|w| w == *queue))
        .flat_map(|(queue, classes)| {
            classes.iter().map(move |(class, count)| DeadCountBody {
                queue: queue.clone(),
                class: class.clone(),
                count: *count,
            })
        })
        .filter(|c| q.class.as_ref().is_none_or(|w| *w == c.class))
        .collect();
    Ok(Json(DeadPageBody {
        jobs: page.jobs.iter().map(Into::into).collect(),
        next: page.next,
        counts,
    }))
}

/// A dead job with its error history.
#[utoipa::path(get, path = "/api/v1/dead/{id}", tag = "dead letters",
    params(("id" = u64, Path, minimum = 1)),
    responses((status = 200, body = DeadJobBody), ErrorResponses))]
pub(super) async fn show(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<DeadJobBody>, Error> {
    let id = id_param("id", &id, "a job id")?;
    let job: JobBody = s.app.dead_job(&caller, id).await?.into();
    let errors = job
        .events
        .iter()
        .filter(|e| e.kind == "failed" || (e.kind == "note" && e.what.starts_with("failed with")))
        .cloned()
        .collect();
    Ok(Json(DeadJobBody { job, errors }))
}

/// Run a dead job again: same payload, retries counted afresh, its
/// timeline kept.
#[utoipa::path(post, path = "/api/v1/dead/{id}/replay", tag = "dead letters",
    params(("id" = u64, Path, minimum = 1)),
    responses((status = 200, body = ReplayedBody), ErrorResponses))]
pub(super) async fn replay_one(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ReplayedBody>, Error> {
    let id = id_param("id", &id, "a job id")?;
    s.app.dead_job(&caller, id).await?;
    let replayed = s.app.replay(&caller, vec![id], format!("job {id}")).await?;
    if replayed.is_empty() {
        // It changed between the read and the replay.
        let job = s.app.get_job(&caller, id).await?.job;
        return Err(Error::NotDead {
            id,
            state: job.state,
        });
    }
    Ok(Json(ReplayedBody { replayed }))
}

fn bulk_limit(limit: Option<usize>) -> Result<usize, Error> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("limit", format!("{limit} is not 1 to 1000")));
    }
    Ok(limit)
}

fn target(b: &DeadFilterBody) -> String {
    let mut parts = vec!["dead".to_string()];
    for (k, v) in [
        ("queue", &b.queue),
        ("class", &b.class),
        ("since", &b.since),
        ("older_than", &b.older_than),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.join(" ")
}

/// Replay the dead jobs a filter names, newest first, up to `limit`.
#[utoipa::path(post, path = "/api/v1/dead/replay", tag = "dead letters",
    request_body = DeadFilterBody,
    responses((status = 200, body = ReplayedBody), ErrorResponses))]
pub(super) async fn replay_many(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    b: Result<super::body::Object<DeadFilterBody>, Error>,
) -> Result<Json<ReplayedBody>, Error> {
    let b = body(b)?;
    let limit = bulk_limit(b.limit)?;
    let filter = dead_query(&b.queue, &b.job_type, &b.class, &b.since, &b.older_than)?;
    let ids = s.app.find_jobs(&caller, filter, limit).await?;
    let ids = ids.iter().map(|j| j.id).collect();
    let replayed = s.app.replay(&caller, ids, target(&b)).await?;
    Ok(Json(ReplayedBody { replayed }))
}

/// Remove the dead jobs a filter names (payloads and results too), up to
/// `limit`.
#[utoipa::path(post, path = "/api/v1/dead/purge", tag = "dead letters",
    request_body = DeadFilterBody,
    responses((status = 200, body = PurgedDeadBody), ErrorResponses))]
pub(super) async fn purge(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    b: Result<super::body::Object<DeadFilterBody>, Error>,
) -> Result<Json<PurgedDeadBody>, Error> {
    let b = body(b)?;
    let limit = bulk_limit(b.limit)?;
    let filter = dead_query(&b.queue, &b.job_type, &b.class, &b.since, &b.older_than)?;
    let ids = s.app.find_jobs(&caller, filter, limit).await?;
    let ids = ids.iter().map(|j| j.id).collect();
    let purged = s.app.purge_dead(&caller, ids, target(&b)).await?;
    Ok(Json(PurgedDeadBody { purged }))
}
