//! Fault injection (`drover chaos set|list|off`), refused unless the node
//! allows it (`[chaos] allowed = true`); only nodes that allow it inject.
//! Faults touch worker streams only, never the log: a dropped or revoked
//! lease expires and its job runs again.

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::{body, HttpState};
use crate::api::auth::Caller;
use crate::api::types::{ChaosBody, ChaosInjectedBody, ChaosRuleBody};
use crate::api::ErrorResponses;
use crate::command::{Audited, ChaosRule, Outcome};
use crate::error::Error;

fn list_body(s: &HttpState) -> ChaosBody {
    ChaosBody {
        allowed: s.app.config.chaos.allowed,
        rules: s
            .app
            .driver
            .stats()
            .chaos
            .iter()
            .map(|(q, r)| (q.clone(), ChaosRuleBody::from(r)))
            .collect(),
        injected: s
            .app
            .chaos
            .snapshot()
            .into_iter()
            .map(|((queue, kind), count)| ChaosInjectedBody {
                queue,
                kind: kind.into(),
                count,
            })
            .collect(),
    }
}

/// What is injected where, and how often this node did.
#[utoipa::path(get, path = "/api/v1/chaos", tag = "chaos",
    responses((status = 200, body = ChaosBody), ErrorResponses))]
pub(super) async fn list(State(s): State<HttpState>) -> Result<Json<ChaosBody>, Error> {
    s.app.router.read_barrier().await?;
    Ok(Json(list_body(&s)))
}

/// Injects faults into a queue's leases and results.
#[utoipa::path(post, path = "/api/v1/chaos/{queue}", tag = "chaos",
    params(("queue" = String, Path)),
    request_body = ChaosRuleBody,
    responses((status = 200, body = ChaosBody), ErrorResponses))]
pub(super) async fn set(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
    b: Result<super::body::Object<ChaosRuleBody>, Error>,
) -> Result<Json<ChaosBody>, Error> {
    let b = body(b)?;
    if !s.app.config.chaos.allowed {
        return Err(Error::invalid(
            "chaos",
            "chaos is not allowed on this node: set [chaos] allowed = true in every node's config and restart them",
        ));
    }
    crate::job::validate_queue(&queue)?;
    for (name, v) in [
        ("drop_leases", b.drop_leases),
        ("revoke", b.revoke),
        ("fail", b.fail),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(Error::invalid(
                name,
                format!("{v} is not a share in 0 to 1"),
            ));
        }
    }
    if b.delay_ms > 60_000 {
        return Err(Error::invalid("delay_ms", "at most 60000 ms"));
    }
    if b.fail_class.len() > 128 {
        return Err(Error::invalid("fail_class", "at most 128 bytes"));
    }
    let rule = ChaosRule {
        drop_leases: b.drop_leases,
        delay_ms: b.delay_ms,
        revoke: b.revoke,
        fail: b.fail,
        fail_class: b.fail_class,
    };
    change(
        &s,
        &caller,
        "chaos.set",
        format!("queue {queue}"),
        Some(queue),
        Some(rule),
    )
    .await?;
    Ok(Json(list_body(&s)))
}

/// Ends every fault at once.
#[utoipa::path(post, path = "/api/v1/chaos/off", tag = "chaos",
    responses((status = 200, body = ChaosBody), ErrorResponses))]
pub(super) async fn off(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ChaosBody>, Error> {
    change(&s, &caller, "chaos.off", "every queue".into(), None, None).await?;
    tracing::warn!(event = "chaos_off", who = %caller.name, "every injected fault ended");
    Ok(Json(list_body(&s)))
}

async fn change(
    s: &HttpState,
    caller: &Caller,
    action: &str,
    target: String,
    queue: Option<String>,
    rule: Option<ChaosRule>,
) -> Result<(), Error> {
    let outcome = s
        .app
        .audited(
            caller,
            action,
            target,
            Audited::SetChaos(crate::command::SetChaos { queue, rule }),
        )
        .await?;
    match outcome {
        Outcome::Noop => Ok(()),
        Outcome::Rejected(r) => Err(Error::Refused(r)),
        other => Err(Error::Driver(format!("unexpected outcome {other:?}"))),
    }
}
