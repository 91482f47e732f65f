//! Recurring jobs: list them; pause, resume, or run one now.

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::HttpState;
use crate::api::auth::Caller;
use crate::api::types::{ScheduleActionBody, ScheduleBody, SchedulesBody};
use crate::api::ErrorResponses;
use crate::command::{Audited, Outcome, ScheduleAction};
use crate::error::Error;

/// Every schedule in the policies in effect, with its last and next slots.
#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules",
    responses((status = 200, body = SchedulesBody), ErrorResponses))]
pub(super) async fn list(State(s): State<HttpState>) -> Result<Json<SchedulesBody>, Error> {
    s.app.router.read_barrier().await?;
    let reader = s.app.driver.reader();
    let policies = reader.policies()?;
    let states = reader.schedules()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let schedules = policies
        .schedules
        .iter()
        .map(|(name, p)| {
            let state = states.get(name).cloned().unwrap_or_default();
            let next = crate::schedules::parse(&p.cron, &p.timezone)
                .ok()
                .and_then(|c| c.next_after(now.max(state.last_slot_ms)));
            ScheduleBody {
                name: name.clone(),
                cron: p.cron.clone(),
                timezone: p.timezone.clone(),
                misfire: if p.run_once { "run_once" } else { "skip" }.into(),
                queue: p.job.queue.clone(),
                paused: state.paused,
                last_slot_ms: state.last_slot_ms,
                next_slot_ms: next,
                fired: state.fired,
            }
        })
        .collect();
    Ok(Json(SchedulesBody { schedules }))
}

async fn act(
    s: &HttpState,
    caller: &Caller,
    name: String,
    action: ScheduleAction,
) -> Result<Json<ScheduleActionBody>, Error> {
    crate::job::validate_name("schedule", &name)?;
    let change = Audited::Schedule(crate::command::Schedule {
        schedule: name.clone(),
        action,
    });
    let target = format!("schedule {name}");
    let verb = format!("schedules.{}", action.as_str());
    let (job_id, changed) = match s.app.audited(caller, &verb, target, change).await? {
        Outcome::Enqueued(ids) => (ids.first().map(|e| e.id), true),
        Outcome::Controlled(names) => (None, !names.is_empty()),
        Outcome::Rejected(refusal) => return Err(Error::Refused(refusal)),
        other => return Err(crate::api::unexpected(other)),
    };
    Ok(Json(ScheduleActionBody {
        schedule: name,
        action: action.as_str().into(),
        job_id,
        changed,
    }))
}

macro_rules! schedule_action {
    ($name:ident, $action:expr, $path:literal, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "schedules",
                            params(("name" = String, Path)),
                            responses((status = 200, body = ScheduleActionBody), ErrorResponses))]
        pub(super) async fn $name(
            State(s): State<HttpState>,
            Extension(caller): Extension<Caller>,
            Path(name): Path<String>,
        ) -> Result<Json<ScheduleActionBody>, Error> {
            act(&s, &caller, name, $action).await
        }
    };
}

schedule_action!(
    pause,
    ScheduleAction::Pause,
    "/api/v1/schedules/{name}/pause",
    "Pause a schedule: its slots pass without jobs until it is resumed."
);
schedule_action!(
    resume,
    ScheduleAction::Resume,
    "/api/v1/schedules/{name}/resume",
    "Resume a schedule from its next slot (missed slots are not run)."
);
schedule_action!(
    trigger,
    ScheduleAction::Trigger,
    "/api/v1/schedules/{name}/trigger",
    "Enqueue the schedule's job now, outside its slots."
);
