//! Runs: a run's jobs and budgets, the runs of a tenant, overrides;
//! tenants' budgets; what jobs cost.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;

use super::dead::parse_since;
use super::{body, query, require_reason, HttpState};
use crate::api::auth::Caller;
use crate::api::types::{
    BudgetUseBody, CancelRunBody, CostsBody, OverrideBody, ReplayRunBody, RunBody, RunBudgetBody,
    RunCancelledBody, RunEventBody, RunJobsBody, RunReplayedBody, RunTimelineBody, RunsBody,
    TenantBudgetsBody,
};
use crate::api::ErrorResponses;
use crate::command::{Audited, Outcome};
use crate::error::Error;
use crate::job::{Job, JobKeys, JobRequest, JobState, DEFAULT_NAME};
use crate::machine::runs::RunRecord;
use crate::policies::{check_usd, usd_to_micros, Budgets};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantQuery {
    /// The run's tenant (default `default`).
    tenant: Option<String>,
}

fn tenant_of(tenant: Option<String>) -> Result<String, Error> {
    let tenant = tenant.unwrap_or_else(|| DEFAULT_NAME.to_string());
    crate::job::validate_name("tenant", &tenant)?;
    Ok(tenant)
}

fn run_body(s: &HttpState, rec: RunRecord) -> Result<RunBody, Error> {
    let (uses, held_by) = s.app.driver.reader().run_budget(&rec)?;
    let state = if held_by.is_some() {
        "held"
    } else if rec.unfinished() == 0 {
        "done"
    } else {
        "active"
    };
    Ok(RunBody {
        jobs: RunJobsBody {
            enqueued: rec.enqueued,
            unfinished: rec.unfinished(),
            succeeded: rec.succeeded,
            dead: rec.dead,
            cancelled: rec.cancelled,
        },
        budget: RunBudgetBody {
            tenant: rec.tenant.clone(),
            run: rec.run.clone(),
            state: state.into(),
            held_by,
            budgets: uses.into_iter().map(BudgetUseBody::from).collect(),
            cost_usd: crate::policies::micros_to_usd(rec.usage.cost_micros),
            lease_ms: rec.usage.lease_ms,
            attempts: rec.usage.attempts,
            usage: rec.usage.named.clone(),
        },
        replay_of: rec.replay_of.clone(),
        tenant: rec.tenant,
        run: rec.run,
        first_at_ms: rec.first_at_ms,
        last_at_ms: rec.last_at_ms,
    })
}

async fn find_run(s: &HttpState, tenant: &str, run: &str) -> Result<RunRecord, Error> {
    crate::job::validate_name("run", run)?;
    s.app.router.read_barrier().await?;
    s.app.driver.reader().run(tenant, run)?.ok_or_else(|| {
        Error::Refused(crate::command::Refusal::UnknownRun {
            tenant: tenant.to_string(),
            run: run.to_string(),
        })
    })
}

/// A run: its jobs by how they ended, its budgets and what it used.
#[utoipa::path(get, path = "/api/v1/runs/{run}", tag = "runs",
    params(("run" = String, Path), TenantQuery),
    responses((status = 200, body = RunBody), ErrorResponses))]
pub(super) async fn get_run(
    State(s): State<HttpState>,
    Path(run): Path<String>,
    q: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Json<RunBody>, Error> {
    let tenant = tenant_of(query(q)?.tenant)?;
    let rec = find_run(&s, &tenant, &run).await?;
    Ok(Json(run_body(&s, rec)?))
}

/// A run's budgets: limits, use, what is left, and whether it is held.
#[utoipa::path(get, path = "/api/v1/runs/{run}/budget", tag = "runs",
    params(("run" = String, Path), TenantQuery),
    responses((status = 200, body = RunBudgetBody), ErrorResponses))]
pub(super) async fn budget(
    State(s): State<HttpState>,
    Path(run): Path<String>,
    q: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Json<RunBudgetBody>, Error> {
    let tenant = tenant_of(query(q)?.tenant)?;
    let rec = find_run(&s, &tenant, &run).await?;
    Ok(Json(run_body(&s, rec)?.budget))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct RunsQuery {
    tenant: Option<String>,
    /// `active`, `held` or `done`.
    state: Option<String>,
    /// The `next` of the page before.
    after: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// Runs, by tenant then run id, a page at a time.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunsQuery),
    responses((status = 200, body = RunsBody), ErrorResponses))]
pub(super) async fn list(
    State(s): State<HttpState>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<RunsBody>, Error> {
    let q = query(q)?;
    if let Some(t) = &q.tenant {
        crate::job::validate_name("tenant", t)?;
    }
    if let Some(state) = &q.state {
        if !["active", "held", "done"].contains(&state.as_str()) {
            return Err(Error::invalid(
                "state",
                format!("{state:?} is not active, held or done"),
            ));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("limit", format!("{limit} is not 1 to 1000")));
    }
    let after = match &q.after {
        Some(a) => Some(a.split_once('/').ok_or_else(|| {
            Error::invalid(
                "after",
                format!("{a:?} is not a cursor this API gave out (tenant/run)"),
            )
        })?),
        None => None,
    };
    s.app.router.read_barrier().await?;
    let reader = s.app.driver.reader();
    // A page examines a bounded number of runs, whatever the filter.
    let scanned = reader.runs(q.tenant.as_deref(), after, limit * 10)?;
    let mut runs = Vec::new();
    let mut next = None;
    for rec in scanned.iter() {
        let cursor = format!("{}/{}", rec.tenant, rec.run);
        let body = run_body(&s, rec.clone())?;
        if q.state.as_deref().is_none_or(|st| st == body.budget.state) {
            runs.push(body);
        }
        if runs.len() == limit {
            next = Some(cursor);
            break;
        }
    }
    if next.is_none() && scanned.len() == limit * 10 {
        next = scanned.last().map(|r| format!("{}/{}", r.tenant, r.run));
    }
    Ok(Json(RunsBody { runs, next }))
}

fn usd(field: &'static str, v: Option<f64>) -> Result<Option<u64>, Error> {
    v.map(|usd| {
        check_usd(usd)
            .map(|()| usd_to_micros(usd))
            .map_err(|e| Error::invalid(field, format!("{usd} {e}")))
    })
    .transpose()
}

fn duration(field: &'static str, v: &Option<String>) -> Result<Option<u64>, Error> {
    v.as_deref()
        .map(|d| {
            crate::wire::parse_duration_ms(d, crate::wire::MAX_DELAY)
                .map_err(|reason| Error::invalid(field, reason))
        })
        .transpose()
}

/// Raise one run's limits (those given), with a reason for the audit log;
/// its held jobs are released if it is under its limits now.
#[utoipa::path(post, path = "/api/v1/runs/{run}/override", tag = "runs",
    params(("run" = String, Path)), request_body = OverrideBody,
    responses((status = 200, body = RunBudgetBody), ErrorResponses))]
pub(super) async fn override_run(
    State(s): State<HttpState>,
    Extension(mut caller): Extension<Caller>,
    Path(run): Path<String>,
    b: Result<super::body::Object<OverrideBody>, Error>,
) -> Result<Json<RunBudgetBody>, Error> {
    let b = body(b)?;
    crate::job::validate_name("run", &run)?;
    let tenant = tenant_of(b.tenant)?;
    require_reason(&mut caller, b.reason, "an override")?;
    let limits = Budgets {
        cost_micros: usd("cost_usd", b.cost_usd)?,
        time_ms: duration("time", &b.time)?,
        attempts: b.attempts,
        daily_cost_cap_micros: None,
    };
    if limits == Budgets::default() {
        return Err(Error::invalid(
            "limits",
            "name a limit to raise: cost_usd, time or attempts",
        ));
    }
    let outcome = s
        .app
        .audited(
            &caller,
            "runs.override",
            format!("run {run} of tenant {tenant}"),
            Audited::OverrideRun(crate::command::OverrideRun {
                tenant: tenant.clone(),
                run: run.clone(),
                limits: Box::new(limits),
            }),
        )
        .await?;
    match outcome {
        Outcome::RunBudget { over } => {
            tracing::info!(event = "budget_override", %tenant, %run, still_over = ?over, who = %caller.name, reason = %caller.reason, "a run's limits were raised");
        }
        Outcome::Rejected(refusal) => return Err(Error::Refused(refusal)),
        other => return Err(Error::Driver(format!("unexpected outcome {other:?}"))),
    }
    let rec = find_run(&s, &tenant, &run).await?;
    Ok(Json(run_body(&s, rec)?.budget))
}

/// Set a tenant's run limits and daily cost cap, in place of its config's;
/// its held runs and its cap are weighed again.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/budgets", tag = "runs",
    params(("tenant" = String, Path)), request_body = TenantBudgetsBody,
    responses((status = 200, body = TenantBudgetsBody), ErrorResponses))]
pub(super) async fn set_tenant_budgets(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
    b: Result<super::body::Object<TenantBudgetsBody>, Error>,
) -> Result<Json<TenantBudgetsBody>, Error> {
    let b = body(b)?;
    crate::job::validate_name("tenant", &tenant)?;
    let budgets = Budgets {
        cost_micros: usd("cost_usd", b.cost_usd)?,
        time_ms: duration("time", &b.time)?,
        attempts: b.attempts,
        daily_cost_cap_micros: usd("daily_cost_cap_usd", b.daily_cost_cap_usd)?,
    };
    let outcome = s
        .app
        .audited(
            &caller,
            "budgets.set",
            format!("tenant {tenant}"),
            Audited::SetTenantBudgets(crate::command::SetTenantBudgets {
                tenant: tenant.clone(),
                budgets: Box::new(budgets),
            }),
        )
        .await?;
    if let Outcome::Rejected(refusal) = outcome {
        return Err(Error::Refused(refusal));
    }
    Ok(Json(budgets.into()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct CostsQuery {
    tenant: Option<String>,
    /// A duration ago (`24h`) or a time (RFC 3339); default 24h.
    since: Option<String>,
}

/// What the jobs that finished since a time cost, with their named usage,
/// by tenant, run, queue and job type.
#[utoipa::path(get, path = "/api/v1/costs", tag = "runs", params(CostsQuery),
    responses((status = 200, body = CostsBody), ErrorResponses))]
pub(super) async fn costs(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<CostsQuery>, QueryRejection>,
) -> Result<Json<CostsBody>, Error> {
    let q = query(q)?;
    if let Some(t) = &q.tenant {
        crate::job::validate_name("tenant", t)?;
    }
    let since = parse_since("since", q.since.as_deref().unwrap_or("24h"))?;
    Ok(Json(s.app.costs(&caller, q.tenant, since).await?))
}

/// Most jobs of a run a timeline merges or a replay copies.
const RUN_JOBS_MAX: usize = 10_000;

/// The run's jobs (the first [`RUN_JOBS_MAX`]), with whether there are more.
fn run_jobs(s: &HttpState, tenant: &str, run: &str) -> Result<(Vec<Job>, bool), Error> {
    let reader = s.app.driver.reader();
    let ids = reader.run_job_ids(tenant, run, 0, RUN_JOBS_MAX + 1)?;
    let more = ids.len() > RUN_JOBS_MAX;
    let mut jobs = Vec::with_capacity(ids.len().min(RUN_JOBS_MAX));
    for id in ids.into_iter().take(RUN_JOBS_MAX) {
        if let Some(job) = reader.job(id)? {
            jobs.push(job);
        }
    }
    Ok((jobs, more))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct TimelineQuery {
    tenant: Option<String>,
    /// The `next` of the page before.
    after: Option<usize>,
    /// 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// The run's timeline: its jobs' events merged in time order, a page at a
/// time.
#[utoipa::path(get, path = "/api/v1/runs/{run}/timeline", tag = "runs",
    params(("run" = String, Path), TimelineQuery),
    responses((status = 200, body = RunTimelineBody), ErrorResponses))]
pub(super) async fn timeline(
    State(s): State<HttpState>,
    Path(run): Path<String>,
    q: Result<Query<TimelineQuery>, QueryRejection>,
) -> Result<Json<RunTimelineBody>, Error> {
    let q = query(q)?;
    let tenant = tenant_of(q.tenant)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("limit", format!("{limit} is not 1 to 1000")));
    }
    find_run(&s, &tenant, &run).await?;
    let (jobs, truncated) = run_jobs(&s, &tenant, &run)?;
    let mut events: Vec<RunEventBody> = jobs
        .iter()
        .flat_map(|j| {
            j.events.iter().map(|e| RunEventBody {
                job_id: j.id,
                event: e.into(),
            })
        })
        .collect();
    // Stable: a job's events keep their order within one millisecond.
    events.sort_by_key(|e| (e.event.at_ms, e.job_id));
    let from = q.after.unwrap_or(0);
    let page: Vec<RunEventBody> = events.iter().skip(from).take(limit).cloned().collect();
    let next = (from + page.len() < events.len()).then(|| (from + page.len()).to_string());
    Ok(Json(RunTimelineBody {
        tenant,
        run,
        events: page,
        next,
        truncated,
    }))
}

/// Takes the reason from the body or the header; an operator's change to
/// a whole run needs one.
/// Cancel every unfinished job of a run (their waiters follow), with a
/// reason for the audit log.
#[utoipa::path(post, path = "/api/v1/runs/{run}/cancel", tag = "runs",
    params(("run" = String, Path)), request_body = CancelRunBody,
    responses((status = 200, body = RunCancelledBody), ErrorResponses))]
pub(super) async fn cancel(
    State(s): State<HttpState>,
    Extension(mut caller): Extension<Caller>,
    Path(run): Path<String>,
    b: Result<super::body::Object<CancelRunBody>, Error>,
) -> Result<Json<RunCancelledBody>, Error> {
    let b = body(b)?;
    let tenant = tenant_of(b.tenant)?;
    require_reason(&mut caller, b.reason, "cancelling a run")?;
    find_run(&s, &tenant, &run).await?;
    let mut cancelled = 0;
    let mut after = 0;
    // Slices, so one command stays small however big the run.
    loop {
        let outcome = s
            .app
            .audited(
                &caller,
                "runs.cancel",
                format!("run {run} of tenant {tenant}"),
                Audited::CancelRun(crate::command::CancelRun {
                    tenant: tenant.clone(),
                    run: run.clone(),
                    after,
                    limit: 500,
                }),
            )
            .await?;
        match outcome {
            Outcome::RunCancelled { cancelled: n, next } => {
                cancelled += n;
                match next {
                    Some(next) => after = next,
                    None => break,
                }
            }
            Outcome::Rejected(refusal) => return Err(Error::Refused(refusal)),
            other => return Err(Error::Driver(format!("unexpected outcome {other:?}"))),
        }
    }
    tracing::info!(event = "run_cancelled", %tenant, %run, cancelled, who = %caller.name, reason = %caller.reason, "a run's unfinished jobs were cancelled");
    Ok(Json(RunCancelledBody {
        tenant,
        run,
        cancelled,
    }))
}

/// The request that enqueues `job` again: same queue, type, payload,
/// priority, limits and labels (drover's own left out).
fn request_again(job: &Job, payload: bytes::Bytes, run: &str) -> JobRequest {
    let keys = JobKeys::of(&job.labels);
    JobRequest {
        queue: job.queue.clone(),
        job_type: job.job_type.clone(),
        tenant: job.tenant.clone(),
        run_id: run.to_string(),
        priority: u32::from(job.priority),
        payload,
        labels: job
            .labels
            .iter()
            .filter(|(k, _)| !k.starts_with(crate::job::RESERVED_LABEL_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        concurrency_key: keys
            .concurrency
            .map(|(k, _)| k.to_string())
            .unwrap_or_default(),
        concurrency_limit: keys.concurrency.and_then(|(_, l)| l).unwrap_or(0),
        rate_key: keys.rate.map(|(k, _)| k.to_string()).unwrap_or_default(),
        rate_limit: keys
            .rate
            .and_then(|(_, r)| r)
            .map(|r| r.to_string())
            .unwrap_or_default(),
        timeout_ms: job
            .labels
            .get(crate::job::TIMEOUT_LABEL)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        on_dependency_failure: job
            .labels
            .get(crate::job::ON_DEPENDENCY_FAILURE_LABEL)
            .cloned()
            .unwrap_or_default(),
        traceparent: job
            .labels
            .get(crate::job::TRACEPARENT_LABEL)
            .cloned()
            .unwrap_or_default(),
        ..JobRequest::default()
    }
}

/// Enqueue a run's jobs again (all, or those that ended dead or cancelled)
/// as a new run whose view links back: same payloads, types, priorities
/// and dependencies among the jobs copied.
#[utoipa::path(post, path = "/api/v1/runs/{run}/replay", tag = "runs",
    params(("run" = String, Path)), request_body = ReplayRunBody,
    responses((status = 200, body = RunReplayedBody), ErrorResponses))]
pub(super) async fn replay(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(run): Path<String>,
    b: Result<super::body::Object<ReplayRunBody>, Error>,
) -> Result<Json<RunReplayedBody>, Error> {
    let b = body(b)?;
    let tenant = tenant_of(b.tenant)?;
    find_run(&s, &tenant, &run).await?;
    let reader = s.app.driver.reader();
    // Checked here for a clear answer before the work of copying; the
    // machine checks again as it applies, and picks a free name if none
    // was given.
    if let Some(into) = &b.into {
        crate::job::validate_name("into", into)?;
        if reader.run(&tenant, into)?.is_some() {
            return Err(Error::invalid(
                "into",
                format!("run {into:?} exists already; name a new one"),
            ));
        }
    }
    let (jobs, more) = run_jobs(&s, &tenant, &run)?;
    if more {
        return Err(Error::invalid(
            "run",
            format!("run {run:?} has more than {RUN_JOBS_MAX} jobs: too many to replay at once"),
        ));
    }
    let chosen: Vec<&Job> = jobs
        .iter()
        .filter(|j| !b.failed_only || matches!(j.state, JobState::Dead | JobState::Cancelled))
        .collect();
    // One request, so dependencies can name the copies by position.
    let max = s.app.config.limits.max_jobs_per_request;
    if chosen.len() > max {
        return Err(Error::invalid(
            "run",
            format!(
                "a replay enqueues its {} jobs in one request, over limits.max_jobs_per_request ({max}); replay --failed-only, or raise the limit",
                chosen.len()
            ),
        ));
    }
    if chosen.is_empty() {
        return Err(Error::invalid(
            "failed_only",
            format!("run {run:?} has no jobs to replay"),
        ));
    }
    let position: std::collections::HashMap<u64, usize> =
        chosen.iter().enumerate().map(|(i, j)| (j.id, i)).collect();
    let mut requests = Vec::with_capacity(chosen.len());
    for job in &chosen {
        let (_, payload) = reader
            .job_and_payload(job.id)?
            .ok_or(Error::JobNotFound(job.id))?;
        // Opened: enqueuing the copy seals it again.
        let payload = s.app.keys.open(crate::sealing::Field::Payload, payload)?;
        // The machine puts the copies in the new run it names.
        let mut r = request_again(job, payload, &run);
        // Dependencies among the copied jobs point at the copies; one on a
        // job not copied (it succeeded) is met already.
        r.after = job
            .after
            .iter()
            .filter_map(|d| position.get(d).map(|p| format!("@{p}")))
            .collect();
        if r.after.is_empty() {
            r.on_dependency_failure.clear();
        }
        requests.push(r);
    }
    let (into, ids) = s
        .app
        .replay_run(&caller, &tenant, &run, b.into, requests)
        .await?;
    let replay_of = format!("{tenant}/{run}");
    tracing::info!(event = "run_replayed", %tenant, %run, into = %into, jobs = ids.len(), who = %caller.name, "a run was enqueued again");
    Ok(Json(RunReplayedBody {
        tenant,
        run: into,
        replay_of,
        jobs: ids.into_iter().map(|e| e.id).collect(),
    }))
}
