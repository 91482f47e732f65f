//! The HTTP admin API (JSON under `/api/v1`) and the unauthenticated probes
//! `/health`, `/ready` and `/metrics`. Handlers are small; errors take their
//! shape from [`Error`]'s `IntoResponse`.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{App, JobView};
use crate::error::Error;
use crate::job::{Job, JobId, JobRequest};
use crate::metrics::Metrics;

#[derive(Clone)]
struct HttpState {
    app: App,
    metrics: Metrics,
}

pub fn router(app: App, metrics: Metrics) -> Router {
    // Room for the largest payload base64-encoded plus the other fields.
    let body_limit = app.config.limits.max_payload_bytes * 4 / 3 + 64 * 1024;
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/queues/{queue}/jobs", post(enqueue))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel))
        .route("/api/v1/cluster/members", get(members).post(add_member))
        .route("/api/v1/cluster/members/{id}", delete(remove_member))
        .route("/api/v1/cluster/transfer-leader", post(transfer_leader))
        .route("/api/v1/debug/digest", get(digest))
        .route("/api/v1/snapshot", get(snapshot))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(HttpState { app, metrics })
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no such endpoint; the admin API lives under /api/v1", "code": "NotFound"})),
    )
        .into_response()
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when a leader is known and this node has applied everything it knows
/// to be committed, so a load balancer sends traffic only to useful nodes.
async fn ready(State(s): State<HttpState>) -> Response {
    let st = s.app.driver.status();
    let reason = if st.leader_id == 0 {
        Some("no leader is known")
    } else if st.applied_index < st.commit_index {
        Some("applying the log (catching up)")
    } else {
        None
    };
    match reason {
        None => Json(json!({"ready": true, "leader_id": st.leader_id})).into_response(),
        Some(r) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": r})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(s): State<HttpState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(crate::metrics::Scrape {
            stats: &s.app.driver.stats(),
            status: &s.app.driver.status(),
            active_workers: s.app.workers.count(),
            data_dir: &s.app.config.data_dir,
        }),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    /// `ok`: answer from this node's state without asking the leader.
    #[serde(default)]
    stale: Option<String>,
}

/// Queue depths and totals, current as of the request (read index) unless
/// `?stale=ok`, which any node answers from what it has applied.
async fn stats(
    State(s): State<HttpState>,
    q: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, Error> {
    let Query(q) = q.map_err(|e| Error::invalid("query", e.body_text()))?;
    match q.stale.as_deref() {
        Some("ok") => {}
        None => s.app.router.read_barrier().await?,
        Some(other) => {
            return Err(Error::invalid(
                "stale",
                format!("{other:?} is not `ok`; leave it out for a current answer"),
            ))
        }
    }
    let stats = s.app.driver.stats();
    Ok(Json(json!({
        "node": s.app.driver.status(),
        "queues": stats.queues,
        "totals": stats.totals,
        "workers": s.app.workers.list(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    id: u64,
    addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRef {
    id: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn add_member(
    State(s): State<HttpState>,
    b: Result<Json<AddMember>, JsonRejection>,
) -> Result<Json<serde_json::Value>, Error> {
    let b = body(b)?;
    let status = crate::cluster::admin::add(&s.app.router, b.id, &b.addr).await?;
    Ok(members_json(&status))
}

async fn remove_member(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    q: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, Error> {
    let Query(q) = q.map_err(|e| Error::invalid("query", e.body_text()))?;
    let id = id
        .parse()
        .map_err(|_| Error::invalid("id", format!("{id:?} is not a node id")))?;
    let status = crate::cluster::admin::remove(&s.app.router, id, q.force).await?;
    Ok(members_json(&status))
}

async fn transfer_leader(
    State(s): State<HttpState>,
    b: Result<Json<NodeRef>, JsonRejection>,
) -> Result<Json<serde_json::Value>, Error> {
    let b = body(b)?;
    let status = crate::cluster::admin::transfer_leader(&s.app.router, b.id).await?;
    Ok(members_json(&status))
}

/// The cluster as its leader sees it: members, match indexes, reachability.
async fn members(State(s): State<HttpState>) -> Result<Json<serde_json::Value>, Error> {
    let status = s.app.router.members().await?;
    Ok(members_json(&status))
}

fn members_json(status: &crate::driver::NodeStatus) -> Json<serde_json::Value> {
    Json(json!({
        "leader_id": status.leader_id,
        "term": status.term,
        "commit_index": status.commit_index,
        "seen_from": status.node_id,
        "members": status.members,
    }))
}

/// A consistent backup: takes a snapshot now and streams its file.
async fn snapshot(State(s): State<HttpState>) -> Result<Response, Error> {
    let path = s.app.driver.snapshot_now().await?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|source| Error::DataDir {
            path: path.clone(),
            source,
        })?;
    let len = file
        .metadata()
        .await
        .map_err(|source| Error::DataDir {
            path: path.clone(),
            source,
        })?
        .len();
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/octet-stream".to_string(),
            ),
            (axum::http::header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

/// A digest of this node's machine tree: nodes that applied the same log
/// have the same digest (compare them on a quiet cluster).
async fn digest(State(s): State<HttpState>) -> Result<Json<serde_json::Value>, Error> {
    let (applied_index, digest) = s.app.driver.reader().digest()?;
    Ok(Json(json!({
        "node_id": s.app.config.node_id,
        "applied_index": applied_index,
        "digest": format!("{digest:016x}"),
    })))
}

/// The JSON body of `POST /api/v1/queues/{queue}/jobs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueBody {
    #[serde(rename = "type", default)]
    job_type: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    run_id: String,
    #[serde(default)]
    priority: u32,
    /// Payload as text.
    payload: Option<String>,
    /// Payload as base64, for binary payloads.
    payload_base64: Option<String>,
    #[serde(default)]
    idempotency_key: String,
    delay_ms: Option<u64>,
    /// Delay as a duration: "30s", "5m".
    delay: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Error> {
    body.map(|Json(b)| b)
        .map_err(|e| Error::invalid("body", e.body_text()))
}

fn job_id(raw: &str) -> Result<JobId, Error> {
    raw.parse().map_err(|_| {
        Error::invalid(
            "id",
            format!("{raw:?} is not a job id (a positive integer)"),
        )
    })
}

impl EnqueueBody {
    fn into_request(self, queue: String) -> Result<JobRequest, Error> {
        let payload = match (self.payload, self.payload_base64) {
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
        let delay_ms = match (self.delay_ms, self.delay) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid("delay", "give delay or delay_ms, not both"))
            }
            (Some(ms), None) => ms,
            (None, Some(d)) => crate::wire::parse_duration_ms(&d, crate::wire::MAX_DELAY)
                .map_err(|reason| Error::invalid("delay", reason))?,
            (None, None) => 0,
        };
        Ok(JobRequest {
            queue,
            job_type: self.job_type,
            tenant: self.tenant,
            run_id: self.run_id,
            priority: self.priority,
            payload,
            idempotency_key: self.idempotency_key,
            delay_ms,
            labels: self.labels,
        })
    }
}

async fn enqueue(
    State(s): State<HttpState>,
    Path(queue): Path<String>,
    b: Result<Json<EnqueueBody>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), Error> {
    let req = body(b)?.into_request(queue)?;
    let ids = s.app.enqueue(vec![req]).await?;
    let e = ids[0];
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": e.id, "duplicate": e.duplicate})),
    ))
}

/// A job as the admin API shows it: the record plus payload and result, as
/// text when they are UTF-8 and as base64 otherwise.
#[derive(Serialize)]
pub struct JobJson {
    #[serde(flatten)]
    job: Job,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_base64: Option<String>,
}

fn text_or_base64(b: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(b) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
    }
}

impl From<JobView> for JobJson {
    fn from(v: JobView) -> JobJson {
        let (payload, payload_base64) = text_or_base64(&v.payload);
        let (result, result_base64) = text_or_base64(&v.result);
        JobJson {
            job: v.job,
            payload,
            payload_base64,
            result,
            result_base64,
        }
    }
}

async fn get_job(
    State(s): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<JobJson>, Error> {
    Ok(Json(s.app.get_job(job_id(&id)?).await?.into()))
}

async fn cancel(
    State(s): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Error> {
    let id = job_id(&id)?;
    let was = s.app.cancel(id).await?;
    Ok(Json(
        json!({"id": id, "state": "cancelled", "was": was.as_str()}),
    ))
}
