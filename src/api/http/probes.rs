//! The probes: `/health` (the process answers), `/ready` (worth sending
//! traffic to) and `/metrics`, and the answer to an unknown path.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::HttpState;
use crate::api::types::{ErrorBody, ErrorInfo, Health, Ready};

/// What a gRPC client is told of a path no gRPC service serves.
fn grpc_unimplemented() -> Response {
    tonic::Status::unimplemented(
        "no such gRPC service or method on this node; see proto/drover/v1/drover.proto",
    )
    .into_http()
}

/// A gRPC call to a path the admin API serves with other methods (`/`,
/// `/api/v1/...`): UNIMPLEMENTED, as a plain gRPC server answers, not
/// HTTP 405 (which a gRPC client reports as an unknown error).
pub(super) async fn grpc_method_not_allowed(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let grpc = crate::api::auth::is_grpc(req.headers());
    let response = next.run(req).await;
    if grpc && response.status() == StatusCode::METHOD_NOT_ALLOWED {
        return grpc_unimplemented();
    }
    response
}

/// An unknown path: UNIMPLEMENTED to a gRPC client (an unknown service or
/// method), 404 in the API's shape to anyone else.
pub(super) async fn not_found(headers: axum::http::HeaderMap) -> Response {
    if crate::api::auth::is_grpc(&headers) {
        return grpc_unimplemented();
    }
    (
        StatusCode::NOT_FOUND,
        Json(ErrorBody {
            error: ErrorInfo {
                code: "not_found".into(),
                message:
                    "no such endpoint; the admin API lives under /api/v1 (see /api/v1/openapi.json)"
                        .into(),
                details: Default::default(),
            },
        }),
    )
        .into_response()
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "probes", security(()),
    responses((status = 200, body = Health)))]
pub(super) async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Ready when a leader is known and this node has applied everything it
/// knows to be committed, so a load balancer sends traffic only to useful
/// nodes.
#[utoipa::path(get, path = "/ready", tag = "probes", security(()),
    responses((status = 200, body = Ready), (status = 503, body = Ready)))]
pub(super) async fn ready(State(s): State<HttpState>) -> Response {
    let st = s.app.driver.status();
    let reason = if st.leader_id == 0 {
        Some("no leader is known")
    } else if st.applied_index < st.commit_index {
        Some("applying the log (catching up)")
    } else {
        None
    };
    let body = Ready {
        ready: reason.is_none(),
        leader_id: st.leader_id,
        reason: reason.map(str::to_string),
    };
    match reason {
        None => Json(body).into_response(),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response(),
    }
}

/// Prometheus metrics, text format.
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub(super) async fn metrics_text(State(s): State<HttpState>) -> Response {
    // A node shutting down has none to give: its series stay as they were.
    let run_totals = s.app.driver.run_totals().await.unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        {
            let stats = s.app.driver.stats();
            let status = s.app.driver.status();
            let now_ms = s.app.driver.log_now_ms();
            let workers = s
                .app
                .workers
                .list(status.node_id, now_ms, &stats.quarantined);
            s.metrics.render(crate::metrics::Scrape {
                stats: &stats,
                status: &status,
                workers: &workers,
                now_ms,
                data_dir: &s.app.config.data_dir,
                resources: s.app.driver.pressure().local(),
                clock_offsets: s.app.driver.clocks().offsets(std::time::Instant::now()),
                run_totals: &run_totals,
            })
        },
    )
        .into_response()
}
