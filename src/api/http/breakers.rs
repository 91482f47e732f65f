//! Circuit breakers: list them, reset one or all.

use axum::extract::State;
use axum::{Extension, Json};

use super::{body, HttpState};
use crate::api::auth::Caller;
use crate::api::types::{BreakerBody, BreakersBody, ResetBreakersBody, ResetBreakersDoneBody};
use crate::api::ErrorResponses;
use crate::command::{Audited, Outcome};
use crate::error::Error;

/// Every breaker that is open, half-open, or closed with failures in its
/// window.
#[utoipa::path(get, path = "/api/v1/breakers", tag = "breakers",
    responses((status = 200, body = BreakersBody), ErrorResponses))]
pub(super) async fn list(State(s): State<HttpState>) -> Result<Json<BreakersBody>, Error> {
    s.app.router.read_barrier().await?;
    let reader = s.app.driver.reader();
    let policies = reader.policies()?;
    let breakers = reader
        .breakers()?
        .into_iter()
        .map(|((queue, tenant, class), b)| {
            let policy = policies.breaker(&queue);
            let open = b.state == crate::machine::breaker::BreakerState::Open;
            BreakerBody {
                threshold: policy.map(|p| p.threshold),
                cooldown_until_ms: policy
                    .filter(|_| open)
                    .map(|p| b.opened_at_ms.saturating_add(p.cooldown_ms)),
                queue,
                tenant,
                class,
                state: b.state.as_str().into(),
                failures: b.failures.len() as u32,
                opened_at_ms: b.opened_at_ms,
                probe: b.probe,
            }
        })
        .collect();
    Ok(Json(BreakersBody { breakers }))
}

/// Close one breaker (queue, tenant and class), or every one (`all`).
#[utoipa::path(post, path = "/api/v1/breakers/reset", tag = "breakers",
    request_body = ResetBreakersBody,
    responses((status = 200, body = ResetBreakersDoneBody), ErrorResponses))]
pub(super) async fn reset(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    b: Result<super::body::Object<ResetBreakersBody>, Error>,
) -> Result<Json<ResetBreakersDoneBody>, Error> {
    let b = body(b)?;
    let scope = match (b.all, b.queue, b.tenant, b.class) {
        (true, None, None, None) => None,
        (false, Some(q), Some(t), Some(c)) => Some((q, t, c)),
        _ => return Err(Error::invalid(
            "scope",
            "give queue, tenant and class (one breaker; see drover breakers list), or all = true",
        )),
    };
    let target = match &scope {
        Some((q, t, c)) => format!("breaker {q}/{t}/{c}"),
        None => "every breaker".into(),
    };
    let reset = match s
        .app
        .audited(
            &caller,
            "breakers.reset",
            target.clone(),
            Audited::ResetBreakers(crate::command::ResetBreakers {
                scope: scope.clone(),
            }),
        )
        .await?
    {
        Outcome::Removed(n) => n,
        Outcome::Rejected(refusal) => return Err(Error::Refused(refusal)),
        other => return Err(Error::Driver(format!("unexpected outcome {other:?}"))),
    };
    tracing::info!(event = "breaker_reset", %target, reset, who = %caller.name, "circuit breakers reset");
    Ok(Json(ResetBreakersDoneBody { reset }))
}
