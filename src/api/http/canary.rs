//! Canary rules at run time: `drover canary set|status|promote|abort`.
//! A rule sends a share of a queue's jobs only to workers of one version
//! (see `machine::canary`); every change is audited.

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::{body, HttpState};
use crate::api::auth::Caller;
use crate::api::canary::{end, set_rule, End};
use crate::api::types::{CanaryBody, CanarySetBody};
use crate::api::ErrorResponses;
use crate::command::CanaryRule;
use crate::error::Error;

/// How long a canary job waits for a canary worker when the request does
/// not say.
const DEFAULT_MAX_WAIT_MS: u64 = 5 * 60_000;

fn body_of(queue: &str, rule: &CanaryRule) -> CanaryBody {
    CanaryBody {
        queue: queue.to_string(),
        version: rule.version.clone(),
        percent: rule.percent,
        max_wait: if rule.max_wait_ms == u64::MAX {
            "never".into()
        } else {
            crate::wire::config_duration(std::time::Duration::from_millis(rule.max_wait_ms))
        },
        stats: None,
    }
}

/// The canary being tried in the queue: a config canary's end (see
/// `api::canary`) is none.
fn rule_of(s: &HttpState, queue: &str) -> Result<CanaryRule, Error> {
    let stats = s.app.driver.stats();
    let of_config = stats.policies.queue(queue).canary.is_some();
    stats
        .canaries
        .get(queue)
        .filter(|r| !(of_config && r.is_end_of_config()))
        .cloned()
        .ok_or_else(|| {
            Error::Refused(crate::command::Refusal::NoCanary {
                queue: queue.to_string(),
            })
        })
}

/// The queue's canary rule.
#[utoipa::path(get, path = "/api/v1/canary/{queue}", tag = "canary",
    params(("queue" = String, Path)),
    responses((status = 200, body = CanaryBody), ErrorResponses))]
pub(super) async fn status(
    State(s): State<HttpState>,
    Path(queue): Path<String>,
) -> Result<Json<CanaryBody>, Error> {
    crate::job::validate_queue(&queue)?;
    s.app.router.read_barrier().await?;
    let mut body = body_of(&queue, &rule_of(&s, &queue)?);
    let (canary, control) = s
        .app
        .driver
        .stats()
        .canary_arms
        .get(&queue)
        .map(|a| a.at(s.app.driver.log_now_ms()))
        .unwrap_or_default();
    body.stats = Some(crate::api::types::CanaryStatsBody {
        canary: (&canary).into(),
        control: (&control).into(),
        comparison: crate::machine::canary::compare(
            &canary,
            &control,
            &s.app.driver.stats().policies.canary_judge(&queue),
        )
        .into_iter()
        .map(|j| crate::api::types::CanaryJudgedBody {
            metric: j.metric.into(),
            value: j.value,
            verdict: j.verdict.into(),
        })
        .collect(),
    });
    Ok(Json(body))
}

/// Sets the queue's canary rule, or changes its share.
#[utoipa::path(post, path = "/api/v1/canary/{queue}", tag = "canary",
    params(("queue" = String, Path)),
    request_body = CanarySetBody,
    responses((status = 200, body = CanaryBody), ErrorResponses))]
pub(super) async fn set(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
    b: Result<super::body::Object<CanarySetBody>, Error>,
) -> Result<Json<CanaryBody>, Error> {
    crate::job::validate_queue(&queue)?;
    let b = body(b)?;
    let current = s.app.driver.stats().canaries.get(&queue).cloned();
    let version = match (b.version, &current) {
        (Some(v), _) => v,
        (None, Some(c)) => c.version.clone(),
        (None, None) => {
            return Err(Error::invalid(
                "version",
                "a new canary names its version (--version v4)",
            ))
        }
    };
    if version.is_empty() || version.len() > 128 {
        return Err(Error::invalid(
            "version",
            "a version label is 1 to 128 bytes",
        ));
    }
    let percent = b.percent.or(current.as_ref().map(|c| u32::from(c.percent)));
    let percent = match percent {
        Some(p) if p <= 100 => p as u8,
        Some(p) => {
            return Err(Error::invalid(
                "percent",
                format!("{p} is outside 0 to 100"),
            ))
        }
        None => return Err(Error::invalid("percent", "give the share: --percent 10")),
    };
    let max_wait_ms = match b.max_wait {
        // A pin (`drover versions only`): other versions never take them.
        Some(text) if text == "never" => u64::MAX,
        Some(text) => crate::wire::parse_duration_ms(&text, crate::wire::MAX_DELAY)
            .map_err(|e| Error::invalid("max_wait", format!("{text:?}: {e} (such as \"5m\")")))?,
        None => current.map_or(DEFAULT_MAX_WAIT_MS, |c| c.max_wait_ms),
    };
    let rule = CanaryRule {
        version,
        percent,
        max_wait_ms,
    };
    if rule.is_end_of_config() && s.app.driver.stats().policies.queue(&queue).canary.is_some() {
        return Err(Error::invalid(
            "percent",
            format!("queue {queue} has a canary in the config, and 0% (or 100% with no wait) is how an ended one stands: end it with drover canary abort {queue} or drover canary promote {queue}"),
        ));
    }
    let target = format!("queue {queue}: {}% to {}", rule.percent, rule.version);
    set_rule(
        &s.app,
        &caller,
        "canary.set",
        target,
        &queue,
        Some(rule.clone()),
    )
    .await?;
    tracing::info!(event = "canary_set", %queue, version = %rule.version, percent = rule.percent, who = %caller.name, "canary rule set");
    Ok(Json(body_of(&queue, &rule)))
}

/// Ends the rule: the canary version takes jobs like any other.
#[utoipa::path(post, path = "/api/v1/canary/{queue}/promote", tag = "canary",
    params(("queue" = String, Path)),
    responses((status = 200, body = CanaryBody), ErrorResponses))]
pub(super) async fn promote(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
) -> Result<Json<CanaryBody>, Error> {
    let rule = rule_to_end(&s, &queue)?;
    end(&s.app, &caller, &queue, &rule, End::Promote).await?;
    tracing::info!(event = "canary_promoted", %queue, version = %rule.version, who = %caller.name, "canary promoted: the rule ended");
    Ok(Json(body_of(&queue, &rule)))
}

/// Ends the rule and switches the canary version off for the queue.
#[utoipa::path(post, path = "/api/v1/canary/{queue}/abort", tag = "canary",
    params(("queue" = String, Path)),
    responses((status = 200, body = CanaryBody), ErrorResponses))]
pub(super) async fn abort(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
) -> Result<Json<CanaryBody>, Error> {
    let rule = rule_to_end(&s, &queue)?;
    end(&s.app, &caller, &queue, &rule, End::Abort).await?;
    tracing::warn!(event = "canary_aborted", %queue, version = %rule.version, who = %caller.name, "canary aborted: the rule ended and its version is switched off for the queue");
    Ok(Json(body_of(&queue, &rule)))
}

/// The rule promote or abort ends.
fn rule_to_end(s: &HttpState, queue: &str) -> Result<CanaryRule, Error> {
    crate::job::validate_queue(queue)?;
    rule_of(s, queue)
}
