//! Tenants: their ready jobs, weights and state; pause (their jobs are not
//! leased), drain (their new jobs are refused) and resume; erasure of all
//! a tenant's data.

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::queues::control;
use super::{body, require_reason, HttpState};
use crate::api::auth::Caller;
use crate::api::types::{
    ControlledBody, EraseTenantBody, TenantErasedBody, TenantStatusBody, TenantsBody,
};
use crate::api::ErrorResponses;
use crate::command::{Command, Control, EraseTenant, EraseTenantJobs, Outcome};
use crate::command::{QueueAction, QueueScope};
use crate::error::Error;

/// Job records one erase slice looks at, and runs one removes: an entry
/// of a few hundred KB of writes at most.
const ERASE_SLICE: u32 = 1000;

/// Every tenant with ready jobs, a weight or a state.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants",
    responses((status = 200, body = TenantsBody), ErrorResponses))]
pub(super) async fn list(State(s): State<HttpState>) -> Result<Json<TenantsBody>, Error> {
    s.app.router.read_barrier().await?;
    let stats = s.app.driver.stats();
    let policies = s.app.driver.reader().policies()?;
    let ready = s.app.driver.ready_by_tenant().await?;
    let mut names: std::collections::BTreeSet<&String> = ready.keys().collect();
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
            ready: ready.get(t).copied().unwrap_or(0),
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

/// Erase a tenant: its jobs (unfinished ones cancelled first) with their
/// payloads, results and idempotency keys, its runs, costs, budgets,
/// breakers and state, on every node; audited without the data. New jobs
/// of the tenant are refused while it runs. Backups taken before keep it.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/erase", tag = "tenants",
    params(("tenant" = String, Path)), request_body = EraseTenantBody,
    responses((status = 200, body = TenantErasedBody), ErrorResponses))]
pub(super) async fn erase(
    State(s): State<HttpState>,
    Extension(mut caller): Extension<Caller>,
    Path(tenant): Path<String>,
    b: Result<super::body::Object<EraseTenantBody>, Error>,
) -> Result<Json<TenantErasedBody>, Error> {
    let b = body(b)?;
    crate::job::validate_name("tenant", &tenant)?;
    if caller.scoped() {
        return Err(Error::PermissionDenied(format!(
            "token {:?} is scoped (tenants, queues or workers): erasing a tenant reads every queue's jobs and takes an admin token without a scope",
            caller.name
        )));
    }
    require_reason(&mut caller, b.reason, "erasing a tenant")?;
    tracing::warn!(event = "tenant_erase_started", %tenant, who = %caller.name, reason = %caller.reason, "erasing a tenant's data on every node");
    let propose = |command: Command| s.app.router.propose(command);
    let was_draining = s.app.driver.stats().draining_tenants.contains(&tenant);
    // Drained first, so no job of it arrives behind the slices; the drain
    // goes with the rest of its records at the end.
    propose(Command::Control(Control {
        scope: QueueScope::Tenant(tenant.clone()),
        action: QueueAction::Drain,
    }))
    .await?;
    let mut erased = TenantErasedBody {
        tenant: tenant.clone(),
        jobs: 0,
        runs: 0,
        breakers: 0,
        clocks: 0,
        other: 0,
        slices: 1,
    };
    let mut after = 0;
    loop {
        erased.slices += 1;
        let slice = EraseTenantJobs {
            tenant: tenant.clone(),
            after,
            limit: ERASE_SLICE,
        };
        match propose(Command::EraseTenantJobs(slice)).await? {
            Outcome::TenantJobsErased { jobs, next } => {
                erased.jobs += u64::from(jobs);
                match next {
                    Some(n) => after = n,
                    None => break,
                }
            }
            other => return Err(unexpected(other)),
        }
    }
    loop {
        erased.slices += 1;
        let rest = EraseTenant {
            tenant: tenant.clone(),
            limit: ERASE_SLICE,
        };
        match propose(Command::EraseTenant(rest)).await? {
            Outcome::TenantErased(r) => {
                erased.runs += u64::from(r.runs);
                erased.breakers += u64::from(r.breakers);
                erased.clocks += u64::from(r.clocks);
                erased.other += u64::from(r.other);
                if !r.more {
                    break;
                }
            }
            other => return Err(unexpected(other)),
        }
    }
    if !was_draining {
        // The drain the erasure set is not the tenant's record.
        erased.other = erased.other.saturating_sub(1);
    }
    let e = &erased;
    let target = format!(
        "tenant {tenant}: {} jobs, {} runs, {} breakers, {} other records erased",
        e.jobs, e.runs, e.breakers, e.other
    );
    tracing::warn!(event = "tenant_erased", %tenant, jobs = e.jobs, runs = e.runs, breakers = e.breakers, clocks = e.clocks, other = e.other, slices = e.slices, who = %caller.name, "erased a tenant's data on every node");
    s.app
        .record(&caller, "tenants.erase", target, Ok(()))
        .await?;
    Ok(Json(erased))
}

fn unexpected(outcome: Outcome) -> Error {
    Error::Driver(format!("unexpected outcome {outcome:?}"))
}
