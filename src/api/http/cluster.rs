//! The node and its cluster: stats, members and their changes, the digest,
//! and backups.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::api::auth::Caller;

use super::{body, id_param, query, HttpState};
use crate::api::types::{
    AddMemberBody, AuditBody, AuditPageBody, BackupBody, BackupsBody, DigestBody, MembersBody,
    NodeRefBody, PoliciesBody, PoliciesDiffBody, PoliciesDiffRequest, StatsBody,
};
use crate::api::ErrorResponses;
use crate::error::Error;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StatsQuery {
    /// `ok`: answer from this node's state without asking the leader.
    #[serde(default)]
    #[param(inline)]
    stale: Option<Stale>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
pub(super) enum Stale {
    #[serde(rename = "ok")]
    Ok,
}

/// Queue depths, totals and connected workers; current as of the request
/// (read index) unless `?stale=ok`, which any node answers from what it has
/// applied, even with no leader.
#[utoipa::path(get, path = "/api/v1/stats", tag = "cluster", params(StatsQuery),
    responses((status = 200, body = StatsBody), ErrorResponses))]
pub(super) async fn stats(
    State(s): State<HttpState>,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<StatsBody>, Error> {
    if query(q)?.stale.is_none() {
        s.app.router.read_barrier().await?;
    }
    let stats = s.app.driver.stats();
    Ok(Json(StatsBody {
        node: (&s.app.driver.status()).into(),
        queues: stats
            .queues
            .iter()
            .map(|(q, c)| (q.clone(), c.into()))
            .collect(),
        totals: (&stats.totals).into(),
        workers: s.app.local_workers(),
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RemoveQuery {
    /// Remove it even if the voters left would have no reachable majority.
    #[serde(default)]
    force: bool,
}

/// The cluster as its leader sees it: members, match indexes, reachability.
#[utoipa::path(get, path = "/api/v1/cluster/members", tag = "cluster",
    responses((status = 200, body = MembersBody), ErrorResponses))]
pub(super) async fn members(State(s): State<HttpState>) -> Result<Json<MembersBody>, Error> {
    Ok(Json((&s.app.router.members().await?).into()))
}

/// Add a node (started first with `join = true`); it votes once caught up.
#[utoipa::path(post, path = "/api/v1/cluster/members", tag = "cluster",
    request_body = AddMemberBody,
    responses((status = 200, body = MembersBody), ErrorResponses))]
pub(super) async fn add_member(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    b: Result<super::body::Object<AddMemberBody>, Error>,
) -> Result<Json<MembersBody>, Error> {
    let b = body(b)?;
    let result = crate::cluster::admin::add(&s.app.router, b.id, &b.addr).await;
    let target = format!("node {} at {}", b.id, b.addr);
    let status = s.app.record(&caller, "cluster.add", target, result).await?;
    Ok(Json((&status).into()))
}

/// Remove a node. Refused if the voters left would have no reachable
/// majority, unless `force`.
#[utoipa::path(delete, path = "/api/v1/cluster/members/{id}", tag = "cluster",
    params(("id" = u64, Path, minimum = 1), RemoveQuery),
    responses((status = 200, body = MembersBody), ErrorResponses))]
pub(super) async fn remove_member(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<RemoveQuery>, QueryRejection>,
) -> Result<Json<MembersBody>, Error> {
    let q = query(q)?;
    let id = id_param("id", &id, "a node id")?;
    let result = crate::cluster::admin::remove(&s.app.router, id, q.force).await;
    let target = format!("node {id}{}", if q.force { " (forced)" } else { "" });
    let status = s
        .app
        .record(&caller, "cluster.remove", target, result)
        .await?;
    Ok(Json((&status).into()))
}

/// Make another node the leader.
#[utoipa::path(post, path = "/api/v1/cluster/transfer-leader", tag = "cluster",
    request_body = NodeRefBody,
    responses((status = 200, body = MembersBody), ErrorResponses))]
pub(super) async fn transfer_leader(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    b: Result<super::body::Object<NodeRefBody>, Error>,
) -> Result<Json<MembersBody>, Error> {
    let b = body(b)?;
    let result = crate::cluster::admin::transfer_leader(&s.app.router, b.id).await;
    let target = format!("node {}", b.id);
    let status = s
        .app
        .record(&caller, "cluster.transfer_leader", target, result)
        .await?;
    Ok(Json((&status).into()))
}

/// This node's scheduled backups, newest first (`drover backups list`
/// asks every member).
#[utoipa::path(get, path = "/api/v1/backups", tag = "cluster",
    responses((status = 200, body = BackupsBody), ErrorResponses))]
pub(super) async fn backups(State(s): State<HttpState>) -> Json<BackupsBody> {
    let node = s.app.config.node_id;
    let dir = crate::backup::dir(&s.app.config);
    let listed = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || crate::backup::listing(&dir))
            .await
            .unwrap_or_default()
    };
    Json(BackupsBody {
        node,
        dir: dir.display().to_string(),
        backups: listed
            .into_iter()
            .map(|b| BackupBody {
                node,
                path: b.path.display().to_string(),
                bytes: b.bytes,
                taken_at_secs: b.taken_at_secs,
                index: b.index,
            })
            .collect(),
    })
}

/// A consistent backup: takes a snapshot now and streams its file. It holds
/// everything acknowledged before the request (read index), so a backup
/// taken right after an enqueue has the job; `?stale=ok` skips that wait
/// and saves what this node has applied, for a node with no quorum.
#[utoipa::path(get, path = "/api/v1/snapshot", tag = "cluster", params(StatsQuery),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), ErrorResponses))]
pub(super) async fn snapshot(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, Error> {
    if query(q)?.stale.is_none() {
        patient_barrier(&s).await?;
    }
    let result = s.app.driver.snapshot_now().await;
    let target = format!("node {}", s.app.config.node_id);
    let path = s.app.record(&caller, "snapshot", target, result).await?;
    let io = |source| Error::DataDir {
        path: path.clone(),
        source,
    };
    let file = tokio::fs::File::open(&path).await.map_err(io)?;
    let len = file.metadata().await.map_err(io)?.len();
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

/// How long a backup waits to catch up with the leader before it says so.
const SNAPSHOT_BARRIER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A read barrier that asks again while the answer is "no leader yet": a
/// backup is in no hurry, and under load, or while every member writes a
/// snapshot at once, a read index can take longer than a client read waits.
async fn patient_barrier(s: &HttpState) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + SNAPSHOT_BARRIER_WAIT;
    loop {
        match s.app.router.read_barrier().await {
            Ok(()) => return Ok(()),
            Err(e) if e.retry_safe() && tokio::time::Instant::now() < deadline => {
                tracing::info!(event = "snapshot_waits_for_leader", error = %e, "the backup waits until this node has caught up with the leader");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A digest of this node's machine state: nodes that applied the same log
/// have the same digest (compare them on a quiet cluster).
#[utoipa::path(get, path = "/api/v1/debug/digest", tag = "cluster",
    responses((status = 200, body = DigestBody), ErrorResponses))]
pub(super) async fn digest(State(s): State<HttpState>) -> Result<Json<DigestBody>, Error> {
    let (applied_index, digest) = s.app.driver.reader().digest()?;
    Ok(Json(DigestBody {
        node_id: s.app.config.node_id,
        applied_index,
        digest: format!("{digest:016x}"),
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// The `next` of the page before: records older than it.
    #[serde(default)]
    #[param(pattern = "^41[0-9a-f]{32}$")]
    before: Option<String>,
    /// Records on a page, 1 to 1000 (default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The audit log, newest first: who changed what through the admin API,
/// when, why, and how it ended.
#[utoipa::path(get, path = "/api/v1/audit", tag = "cluster", params(AuditQuery),
    responses((status = 200, body = AuditPageBody), ErrorResponses))]
pub(super) async fn audit(
    State(s): State<HttpState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPageBody>, Error> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("limit", format!("{limit} is not 1 to 1000")));
    }
    if let Some(c) = &q.before {
        let ok = hex::decode(c).is_ok_and(|k| k.len() == 17 && k[0] == b'A');
        if !ok {
            return Err(Error::invalid(
                "before",
                format!("{c:?} is not a cursor this API gave out (the `next` of a page)"),
            ));
        }
    }
    s.app.router.read_barrier().await?;
    let page = s.app.driver.reader().audit(q.before.as_deref(), limit)?;
    Ok(Json(AuditPageBody {
        records: page
            .records
            .into_iter()
            .map(|(cursor, e)| AuditBody {
                cursor,
                at_ms: e.at_ms,
                who: e.record.who,
                role: e.record.role,
                action: e.record.action,
                target: e.record.target,
                reason: e.record.reason,
                outcome: e.record.outcome,
            })
            .collect(),
        next: page.next,
    }))
}

/// What a config's policies would change of those the cluster applies,
/// value by value, in the keys the audit record of a change uses (`drover
/// policies diff FILE`). Changes nothing.
#[utoipa::path(post, path = "/api/v1/policies/diff", tag = "cluster",
    request_body = PoliciesDiffRequest,
    responses((status = 200, body = PoliciesDiffBody), ErrorResponses))]
pub(super) async fn policies_diff(
    State(s): State<HttpState>,
    b: Result<super::body::Object<PoliciesDiffRequest>, Error>,
) -> Result<Json<PoliciesDiffBody>, Error> {
    let b = body(b)?;
    let hint = "send the policies a config yields, as `drover policies diff FILE` does";
    let new: crate::policies::Policies = serde_json::from_value(b.policies.clone())
        .map_err(|e| Error::invalid("policies", format!("{e}: {hint}")))?;
    // The record form takes fields it does not know (a newer build's); a
    // request naming one is a mistake to say, not to ignore.
    let known = serde_json::to_value(&new).unwrap_or_default();
    if let Some(key) = unknown_key(&b.policies, &known, "") {
        return Err(Error::invalid(
            "policies",
            format!("unknown key {key}: {hint}"),
        ));
    }
    s.app.router.read_barrier().await?;
    let current = s.app.driver.reader().policies()?;
    Ok(Json(PoliciesDiffBody {
        changes: current.changes(&new),
    }))
}

/// The first key of `sent` that `known` (what it parsed into) lacks.
fn unknown_key(sent: &serde_json::Value, known: &serde_json::Value, at: &str) -> Option<String> {
    let (serde_json::Value::Object(sent), serde_json::Value::Object(known)) = (sent, known) else {
        return None;
    };
    sent.iter().find_map(|(k, v)| {
        let path = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        match known.get(k) {
            None => Some(path),
            Some(kv) => unknown_key(v, kv, &path),
        }
    })
}

/// The policies the cluster applies (leases, retries, queue limits,
/// shedding, tenant weights), as the log last set them.
#[utoipa::path(get, path = "/api/v1/policies", tag = "cluster",
    responses((status = 200, body = PoliciesBody), ErrorResponses))]
pub(super) async fn policies(State(s): State<HttpState>) -> Result<Json<PoliciesBody>, Error> {
    s.app.router.read_barrier().await?;
    Ok(Json((&s.app.driver.reader().policies()?).into()))
}
