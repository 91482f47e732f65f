//! The HTTP admin API (JSON under `/api/v1`) and the probes `/health`,
//! `/ready` and `/metrics`. Every route is declared once, in [`routes`], with
//! the [`Access`] it needs: the router, the auth middleware, the OpenAPI
//! document's test and the auth test all read that one list. Handlers take
//! and answer the typed bodies of [`crate::api::types`]; errors take their
//! shape from [`Error`]'s `IntoResponse`.

mod body;
mod breakers;
mod canary;
mod chaos;
mod cluster;
mod dead;
mod errors;
mod jobs;
pub mod openapi;
mod probes;
mod queues;
mod runs;
mod schedules;
mod tenants;
mod ui;
mod versions;
mod workers;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query};
use axum::http::Method;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;

use crate::api::auth::{Access, Auth, Rule};
use crate::api::App;
use crate::error::Error;
use crate::metrics::Metrics;

#[derive(Clone)]
pub(crate) struct HttpState {
    app: App,
    metrics: Metrics,
}

fn route(
    method: Method,
    path: &'static str,
    access: Access,
    handler: MethodRouter<HttpState>,
) -> (Rule, MethodRouter<HttpState>) {
    (
        Rule {
            method,
            path,
            access,
        },
        handler,
    )
}

/// Every HTTP route: method, path, who may call it, and its handler.
fn routes() -> Vec<(Rule, MethodRouter<HttpState>)> {
    use Access::*;
    vec![
        route(Method::GET, "/health", Open, get(probes::health)),
        route(Method::GET, "/", Open, get(ui::index)),
        route(Method::GET, "/ui/{file}", Open, get(ui::file)),
        route(Method::GET, "/api/v1/whoami", Any, get(ui::whoami)),
        route(Method::GET, "/ready", Open, get(probes::ready)),
        route(Method::GET, "/metrics", Metrics, get(probes::metrics_text)),
        route(
            Method::GET,
            "/api/v1/openapi.json",
            Open,
            get(openapi::document),
        ),
        route(Method::GET, "/api/v1/stats", Read, get(cluster::stats)),
        route(
            Method::POST,
            "/api/v1/queues/{queue}/jobs",
            Produce,
            post(jobs::enqueue),
        ),
        route(Method::GET, "/api/v1/jobs", ReadJob, get(jobs::list)),
        route(
            Method::GET,
            "/api/v1/jobs/{id}/timeline",
            ReadJob,
            get(jobs::timeline),
        ),
        route(
            Method::GET,
            "/api/v1/queues/{queue}/jobs/by-key/{key}",
            ReadJob,
            get(jobs::by_key),
        ),
        route(Method::GET, "/api/v1/dead", Read, get(dead::list)),
        route(Method::GET, "/api/v1/breakers", Read, get(breakers::list)),
        route(Method::GET, "/api/v1/runs", Read, get(runs::list)),
        route(Method::GET, "/api/v1/runs/{run}", Read, get(runs::get_run)),
        route(
            Method::GET,
            "/api/v1/runs/{run}/budget",
            Read,
            get(runs::budget),
        ),
        route(Method::GET, "/api/v1/costs", Read, get(runs::costs)),
        route(
            Method::GET,
            "/api/v1/runs/{run}/timeline",
            Read,
            get(runs::timeline),
        ),
        route(
            Method::POST,
            "/api/v1/runs/{run}/cancel",
            Operate,
            post(runs::cancel),
        ),
        route(
            Method::POST,
            "/api/v1/runs/{run}/replay",
            Operate,
            post(runs::replay),
        ),
        route(
            Method::POST,
            "/api/v1/runs/{run}/override",
            Operate,
            post(runs::override_run),
        ),
        route(
            Method::PUT,
            "/api/v1/tenants/{tenant}/budgets",
            Admin,
            put(runs::set_tenant_budgets),
        ),
        route(
            Method::POST,
            "/api/v1/breakers/reset",
            Operate,
            post(breakers::reset),
        ),
        route(
            Method::POST,
            "/api/v1/dead/replay",
            Operate,
            post(dead::replay_many),
        ),
        route(
            Method::POST,
            "/api/v1/dead/purge",
            Operate,
            post(dead::purge),
        ),
        route(Method::GET, "/api/v1/dead/{id}", Read, get(dead::show)),
        route(
            Method::POST,
            "/api/v1/dead/{id}/replay",
            Operate,
            post(dead::replay_one),
        ),
        route(
            Method::POST,
            "/api/v1/queues/{queue}/clear-stuck",
            Operate,
            post(queues::clear_stuck),
        ),
        route(
            Method::GET,
            "/api/v1/jobs/{id}",
            ReadJob,
            get(jobs::get_job),
        ),
        route(
            Method::POST,
            "/api/v1/jobs/{id}/cancel",
            Cancel,
            post(jobs::cancel),
        ),
        route(
            Method::GET,
            "/api/v1/cluster/members",
            Read,
            get(cluster::members),
        ),
        route(
            Method::POST,
            "/api/v1/cluster/members",
            Admin,
            post(cluster::add_member),
        ),
        route(
            Method::DELETE,
            "/api/v1/cluster/members/{id}",
            Admin,
            delete(cluster::remove_member),
        ),
        route(
            Method::POST,
            "/api/v1/cluster/transfer-leader",
            Admin,
            post(cluster::transfer_leader),
        ),
        route(
            Method::GET,
            "/api/v1/debug/digest",
            Read,
            get(cluster::digest),
        ),
        route(
            Method::GET,
            "/api/v1/snapshot",
            Admin,
            get(cluster::snapshot),
        ),
        route(Method::GET, "/api/v1/backups", Read, get(cluster::backups)),
        route(Method::GET, "/api/v1/audit", Read, get(cluster::audit)),
        route(Method::GET, "/api/v1/workers", Read, get(workers::list)),
        route(
            Method::GET,
            "/api/v1/policies",
            Read,
            get(cluster::policies),
        ),
        route(
            Method::POST,
            "/api/v1/policies/diff",
            Read,
            post(cluster::policies_diff),
        ),
        route(Method::GET, "/api/v1/queues", Read, get(queues::list)),
        route(
            Method::GET,
            "/api/v1/queues/{queue}/history",
            Read,
            get(queues::history),
        ),
        route(
            Method::GET,
            "/api/v1/queues/{queue}/why",
            Read,
            get(queues::why),
        ),
        route(
            Method::GET,
            "/api/v1/history",
            Read,
            get(queues::history_all),
        ),
        route(
            Method::POST,
            "/api/v1/queues/{queue}/purge",
            Operate,
            post(queues::purge),
        ),
        route(Method::GET, "/api/v1/tenants", Read, get(tenants::list)),
        route(Method::GET, "/api/v1/schedules", Read, get(schedules::list)),
        route(
            Method::POST,
            "/api/v1/schedules/{name}/pause",
            Operate,
            post(schedules::pause),
        ),
        route(
            Method::POST,
            "/api/v1/schedules/{name}/resume",
            Operate,
            post(schedules::resume),
        ),
        route(
            Method::POST,
            "/api/v1/schedules/{name}/trigger",
            Operate,
            post(schedules::trigger),
        ),
        route(
            Method::POST,
            "/api/v1/tenants/{tenant}/pause",
            Operate,
            post(tenants::pause),
        ),
        route(
            Method::POST,
            "/api/v1/tenants/{tenant}/drain",
            Operate,
            post(tenants::drain),
        ),
        route(
            Method::POST,
            "/api/v1/tenants/{tenant}/resume",
            Operate,
            post(tenants::resume),
        ),
        route(
            Method::POST,
            "/api/v1/tenants/{tenant}/erase",
            Admin,
            post(tenants::erase),
        ),
        route(
            Method::POST,
            "/api/v1/queues/pause",
            Operate,
            post(queues::pause_all),
        ),
        route(
            Method::POST,
            "/api/v1/queues/drain",
            Operate,
            post(queues::drain_all),
        ),
        route(
            Method::POST,
            "/api/v1/queues/resume",
            Operate,
            post(queues::resume_all),
        ),
        route(
            Method::POST,
            "/api/v1/queues/{queue}/pause",
            Operate,
            post(queues::pause),
        ),
        route(
            Method::POST,
            "/api/v1/queues/{queue}/drain",
            Operate,
            post(queues::drain),
        ),
        route(
            Method::POST,
            "/api/v1/queues/{queue}/resume",
            Operate,
            post(queues::resume),
        ),
        route(
            Method::POST,
            "/api/v1/workers/shutdown",
            Operate,
            post(workers::shutdown_all),
        ),
        route(
            Method::POST,
            "/api/v1/workers/{id}/shutdown",
            Operate,
            post(workers::shutdown_one),
        ),
        route(
            Method::POST,
            "/api/v1/workers/{id}/release",
            Operate,
            post(workers::release),
        ),
        route(Method::GET, "/api/v1/versions", Read, get(versions::list)),
        route(Method::GET, "/api/v1/chaos", Read, get(chaos::list)),
        route(Method::POST, "/api/v1/chaos/off", Operate, post(chaos::off)),
        route(
            Method::POST,
            "/api/v1/chaos/{queue}",
            Admin,
            post(chaos::set),
        ),
        route(
            Method::GET,
            "/api/v1/canary/{queue}",
            Read,
            get(canary::status),
        ),
        route(
            Method::POST,
            "/api/v1/canary/{queue}",
            Operate,
            post(canary::set),
        ),
        route(
            Method::POST,
            "/api/v1/canary/{queue}/promote",
            Operate,
            post(canary::promote),
        ),
        route(
            Method::POST,
            "/api/v1/canary/{queue}/abort",
            Operate,
            post(canary::abort),
        ),
        route(
            Method::POST,
            "/api/v1/versions/{version}/disable",
            Operate,
            post(versions::disable),
        ),
        route(
            Method::POST,
            "/api/v1/versions/{version}/enable",
            Operate,
            post(versions::enable),
        ),
    ]
}

/// The rules of every HTTP route, for the auth middleware and the tests.
pub fn rules() -> Vec<Rule> {
    routes().into_iter().map(|(rule, _)| rule).collect()
}

/// The admin API's router, without auth (the node puts the auth middleware
/// in front of it and the gRPC services together).
pub fn router(app: App, metrics: Metrics) -> Router {
    // Room for the largest payload base64-encoded plus the other fields.
    let body_limit = app.config.limits.max_payload_bytes * 4 / 3 + 64 * 1024;
    let mut router = Router::new();
    for (rule, handler) in routes() {
        router = router.route(rule.path, handler);
    }
    router
        .fallback(probes::not_found)
        .layer(axum::middleware::from_fn(probes::grpc_method_not_allowed))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(HttpState { app, metrics })
}

/// The auth middleware over a router.
pub fn with_auth(router: Router, auth: Auth) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        auth,
        crate::api::auth::middleware,
    ))
}

/// A body as [`body::Object`] read it, or the error saying what was wrong.
fn body<T>(body: Result<body::Object<T>, Error>) -> Result<T, Error> {
    body.map(|body::Object(b)| b)
}

/// Takes the body's reason (or keeps the header's) for the audit log, and
/// refuses `what` without one.
pub(super) fn require_reason(
    caller: &mut crate::api::auth::Caller,
    reason: Option<String>,
    what: &str,
) -> Result<(), Error> {
    if let Some(reason) = reason.filter(|r| !r.trim().is_empty()) {
        caller.reason = reason.chars().take(1024).collect();
    }
    if caller.reason.trim().is_empty() {
        return Err(Error::invalid(
            "reason",
            format!("{what} needs a reason (--reason TEXT, or the X-Drover-Reason header): it goes into the audit log"),
        ));
    }
    Ok(())
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Error> {
    q.map(|Query(q)| q)
        .map_err(|e| Error::invalid("query", e.body_text()))
}

fn id_param(name: &'static str, raw: &str, what: &str) -> Result<u64, Error> {
    raw.parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| Error::invalid(name, format!("{raw:?} is not {what} (a positive integer)")))
}
