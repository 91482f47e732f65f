//! Workers across the cluster: list them, ask them to stop. Each node
//! knows the workers connected to it; the node asked gathers the others'
//! over the peer service.

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::HttpState;
use crate::api::auth::Caller;
use crate::api::types::{ReleasedWorkerBody, WorkerBody, WorkersBody};
use crate::api::ErrorResponses;
use crate::command::{Audited, Outcome};
use crate::error::Error;

pub(super) async fn gather(s: &HttpState, stop: &str, all: bool) -> WorkersBody {
    let mut asked = 0;
    if all || !stop.is_empty() {
        asked += s.app.workers.stop(stop, all);
    }
    let mut workers: Vec<WorkerBody> = s.app.local_workers();
    let mut unreachable = std::collections::BTreeMap::new();
    for (id, answer) in s.app.router.peer_workers(stop, all).await {
        match answer {
            Ok(peer) => {
                asked += peer.asked;
                workers.extend(peer.workers);
            }
            Err(e) => {
                unreachable.insert(id.to_string(), e);
            }
        }
    }
    workers.sort_by(|a, b| (&a.worker_id, a.node_id).cmp(&(&b.worker_id, b.node_id)));
    WorkersBody {
        workers,
        unreachable,
        asked_to_stop: asked,
        quarantined: s.app.driver.stats().quarantined.clone(),
    }
}

fn check_worker_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 128 {
        return Err(Error::invalid("id", "a worker id is 1 to 128 bytes"));
    }
    Ok(())
}

/// Every worker connected to the cluster, with what it serves, holds and
/// has done.
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers",
    responses((status = 200, body = WorkersBody), ErrorResponses))]
pub(super) async fn list(State(s): State<HttpState>) -> Json<WorkersBody> {
    Json(gather(&s, "", false).await)
}

/// Ask one worker (by id, on whichever node it is connected to) to finish
/// what it holds and exit.
#[utoipa::path(post, path = "/api/v1/workers/{id}/shutdown", tag = "workers",
    params(("id" = String, Path, min_length = 1, max_length = 128)),
    responses((status = 200, body = WorkersBody), ErrorResponses))]
pub(super) async fn shutdown_one(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<WorkersBody>, Error> {
    check_worker_id(&id)?;
    let body = gather(&s, &id, false).await;
    let result = if body.asked_to_stop == 0 {
        Err(Error::NotFound(format!(
            "no worker {id:?} is connected to the cluster (see drover workers list)"
        )))
    } else {
        Ok(body)
    };
    let target = format!("worker {id}");
    Ok(Json(
        s.app
            .record(&caller, "workers.shutdown", target, result)
            .await?,
    ))
}

/// Let a quarantined worker lease again (its failure counts start afresh).
#[utoipa::path(post, path = "/api/v1/workers/{id}/release", tag = "workers",
    params(("id" = String, Path, min_length = 1, max_length = 128)),
    responses((status = 200, body = ReleasedWorkerBody), ErrorResponses))]
pub(super) async fn release(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ReleasedWorkerBody>, Error> {
    check_worker_id(&id)?;
    let was = s.app.driver.stats().quarantined.get(&id).cloned();
    let outcome = s
        .app
        .audited(
            &caller,
            "workers.release",
            format!("worker {id}"),
            Audited::ReleaseWorker(crate::command::ReleaseWorker { worker: id.clone() }),
        )
        .await?;
    match outcome {
        Outcome::Removed(_) => {
            tracing::info!(event = "worker_released", worker_id = %id, who = %caller.name, "a quarantined worker may lease again");
            Ok(Json(ReleasedWorkerBody { worker_id: id, was }))
        }
        Outcome::Rejected(refusal) => Err(Error::Refused(refusal)),
        other => Err(Error::Driver(format!("unexpected outcome {other:?}"))),
    }
}

/// Ask every connected worker to finish what it holds and exit.
#[utoipa::path(post, path = "/api/v1/workers/shutdown", tag = "workers",
    responses((status = 200, body = WorkersBody), ErrorResponses))]
pub(super) async fn shutdown_all(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<WorkersBody>, Error> {
    let body = gather(&s, "", true).await;
    let mut target = format!("all workers ({})", body.asked_to_stop);
    if !body.unreachable.is_empty() {
        let nodes: Vec<&str> = body.unreachable.keys().map(String::as_str).collect();
        target.push_str(&format!("; nodes {} did not answer", nodes.join(", ")));
    }
    Ok(Json(
        s.app
            .record(&caller, "workers.shutdown", target, Ok(body))
            .await?,
    ))
}
