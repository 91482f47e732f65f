//! Worker versions: which are connected, and switches that keep a version
//! from a queue's or tenant's jobs (`drover versions disable|enable|list`).

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::{body, HttpState};
use crate::api::auth::Caller;
use crate::api::types::{VersionSeenBody, VersionSwitchBody, VersionSwitchRequest, VersionsBody};
use crate::api::ErrorResponses;
use crate::command::{Audited, Outcome, VersionSwitch};
use crate::error::Error;

/// Version switches, how many workers of each version are connected, and
/// when each version was first and last seen.
#[utoipa::path(get, path = "/api/v1/versions", tag = "versions",
    responses((status = 200, body = VersionsBody), ErrorResponses))]
pub(super) async fn list(State(s): State<HttpState>) -> Result<Json<VersionsBody>, Error> {
    s.app.router.read_barrier().await?;
    let workers = super::workers::gather(&s, "", false).await;
    let mut connected = std::collections::BTreeMap::new();
    for w in &workers.workers {
        *connected.entry(w.version.clone()).or_insert(0) += 1;
    }
    let stats = s.app.driver.stats();
    let switches = stats
        .version_switches
        .iter()
        .map(VersionSwitchBody::from)
        .collect();
    let seen = stats
        .versions_seen
        .iter()
        .map(|(v, seen)| {
            let body = VersionSeenBody {
                first_seen_ms: seen.first_ms,
                last_seen_ms: seen.last_ms,
            };
            (v.clone(), body)
        })
        .collect();
    Ok(Json(VersionsBody {
        switches,
        connected,
        unreachable: workers.unreachable,
        seen,
    }))
}

fn switch_of(version: String, b: VersionSwitchRequest) -> Result<VersionSwitch, Error> {
    if version.is_empty() || version.len() > 128 {
        return Err(Error::invalid(
            "version",
            "a version label is 1 to 128 bytes",
        ));
    }
    if let Some(q) = &b.queue {
        crate::job::validate_queue(q)?;
    }
    if let Some(t) = &b.tenant {
        crate::job::validate_name("tenant", t)?;
    }
    Ok(VersionSwitch {
        version,
        queue: b.queue,
        tenant: b.tenant,
    })
}

/// Stop leasing jobs (of a queue, of a tenant, or all) to workers of a
/// version; they go to workers of other versions, or wait.
#[utoipa::path(post, path = "/api/v1/versions/{version}/disable", tag = "versions",
    params(("version" = String, Path, min_length = 1, max_length = 128)),
    request_body = VersionSwitchRequest,
    responses((status = 200, body = VersionSwitchBody), ErrorResponses))]
pub(super) async fn disable(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(version): Path<String>,
    b: Result<super::body::Object<VersionSwitchRequest>, Error>,
) -> Result<Json<VersionSwitchBody>, Error> {
    let b = body(b)?;
    let force = b.force;
    let switch = switch_of(version, b)?;
    if caller.reason.trim().is_empty() {
        return Err(Error::invalid(
            "reason",
            "switching a version off needs a reason (--reason, or the X-Drover-Reason header)",
        ));
    }
    if !force {
        let workers = super::workers::gather(&s, "", false).await;
        if !workers.workers.iter().any(|w| w.version == switch.version) {
            return Err(Error::NotFound(format!(
                "no connected worker has version {:?} (see drover versions list); --force switches it off anyway",
                switch.version
            )));
        }
    }
    switch_version(&s, &caller, switch, false).await
}

/// Lease to workers of a version again what a switch kept from them.
#[utoipa::path(post, path = "/api/v1/versions/{version}/enable", tag = "versions",
    params(("version" = String, Path, min_length = 1, max_length = 128)),
    request_body = VersionSwitchRequest,
    responses((status = 200, body = VersionSwitchBody), ErrorResponses))]
pub(super) async fn enable(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(version): Path<String>,
    b: Result<super::body::Object<VersionSwitchRequest>, Error>,
) -> Result<Json<VersionSwitchBody>, Error> {
    let switch = switch_of(version, body(b)?)?;
    switch_version(&s, &caller, switch, true).await
}

async fn switch_version(
    s: &HttpState,
    caller: &Caller,
    switch: VersionSwitch,
    enabled: bool,
) -> Result<Json<VersionSwitchBody>, Error> {
    let action = if enabled {
        "versions.enable"
    } else {
        "versions.disable"
    };
    let outcome = s
        .app
        .audited(
            caller,
            action,
            switch.describe(),
            Audited::SwitchVersion(crate::command::SwitchVersion {
                switch: switch.clone(),
                enabled,
            }),
        )
        .await?;
    match outcome {
        Outcome::Noop => {
            if enabled {
                tracing::info!(event = "version_enabled", switch = %switch.describe(), who = %caller.name, "workers of the version get those jobs again");
            } else {
                tracing::info!(event = "version_disabled", switch = %switch.describe(), who = %caller.name, "workers of the version get none of those jobs");
            }
            Ok(Json(VersionSwitchBody::from(&switch)))
        }
        Outcome::Rejected(refusal) => Err(Error::Refused(refusal)),
        other => Err(Error::Driver(format!("unexpected outcome {other:?}"))),
    }
}
