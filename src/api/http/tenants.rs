//! Tenants: their ready jobs, weights and state; pause (their jobs are not
//! leased), drain (their new jobs are refused) and resume.

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::queues::control;
use super::HttpState;
use crate::api::auth::Caller;
use crate::api::types::{ControlledBody, TenantStatusBody, TenantsBody};
use crate::api::ErrorResponses;
use crate::command::{QueueAction, QueueScope};
use crate::error::Error;

/// Every tenant with ready jobs, a weight or a state.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants",
    responses((status = 200, body = TenantsBody), ErrorResponses))]
pub(super) async fn list(State(s): State<HttpState>) -> Result<Json<TenantsBody>, Error> {
    s.app.router.read_barrier().await?;
    let stats = s.app.driver.stats();
    let policies = s.app.driver.reader().policies()?;
    let mut names: std::collections::BTreeSet<&String> = stats.ready_by_tenant.keys().collect();
    names.extend(
        stats
            .paused_tenants
            .iter()
            .chain(stats.draining_tenants.iter()),
    );
    names.extend(
        policies
            .tenants
            .keys()
            .filter(|t| *t != crate::policies::DEFAULTS),
    );
    let tenants = names
        .into_iter()
        .map(|t| TenantStatusBody {
            name: t.clone(),
            ready: stats.ready_by_tenant.get(t).copied().unwrap_or(0),
            weight: policies.weight(t),
            paused: stats.paused_tenants.contains(t),
            draining: stats.draining_tenants.contains(t),
        })
        .collect();
    Ok(Json(TenantsBody { tenants }))
}

macro_rules! tenant_action {
    ($name:ident, $action:expr, $path:literal, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "tenants",
                            params(("tenant" = String, Path)),
                            responses((status = 200, body = ControlledBody), ErrorResponses))]
        pub(super) async fn $name(
            State(s): State<HttpState>,
            Extension(caller): Extension<Caller>,
            Path(tenant): Path<String>,
        ) -> Result<Json<ControlledBody>, Error> {
            control(&s, &caller, QueueScope::Tenant(tenant), $action).await
        }
    };
}

tenant_action!(
    pause,
    QueueAction::Pause,
    "/api/v1/tenants/{tenant}/pause",
    "Pause a tenant: its jobs are not leased, in any queue; enqueues go on."
);
tenant_action!(
    drain,
    QueueAction::Drain,
    "/api/v1/tenants/{tenant}/drain",
    "Drain a tenant: its new jobs are refused; leases go on."
);
tenant_action!(
    resume,
    QueueAction::Resume,
    "/api/v1/tenants/{tenant}/resume",
    "Resume a tenant: end a pause or a drain."
);
