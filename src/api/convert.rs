//! Translations between protobuf messages and domain types.

use crate::api::JobView;
use crate::command::LeasedJob;
use crate::job::JobRequest;
use crate::proto::v1 as pb;

impl From<pb::NewJob> for JobRequest {
    fn from(j: pb::NewJob) -> JobRequest {
        JobRequest {
            queue: j.queue,
            job_type: j.job_type,
            tenant: j.tenant,
            run_id: j.run_id,
            priority: j.priority,
            payload: j.payload,
            idempotency_key: j.idempotency_key,
            delay_ms: j.delay_ms,
            labels: j.labels.into_iter().collect(),
            concurrency_key: j.concurrency_key,
            concurrency_limit: j.concurrency_limit,
            rate_key: j.rate_key,
            rate_limit: j.rate_limit,
            timeout_ms: j.timeout_ms,
            after: j.after,
            on_dependency_failure: j.on_dependency_failure,
            traceparent: j.traceparent,
        }
    }
}

impl From<JobView> for pb::Job {
    fn from(v: JobView) -> pb::Job {
        let JobView {
            job,
            payload,
            result,
            waiting,
            holds: _,
        } = v;
        pb::Job {
            waiting: waiting.unwrap_or_default(),
            id: job.id,
            state: job.state.as_str().to_string(),
            attempts: job.attempts,
            payload,
            result,
            enqueued_at_ms: job.enqueued_at_ms,
            run_at_ms: job.run_at_ms,
            worker_id: job
                .lease
                .as_ref()
                .map(|l| l.worker.clone())
                .unwrap_or_default(),
            events: job
                .events
                .iter()
                .map(|e| pb::JobEvent {
                    at_ms: e.at_ms,
                    what: e.kind.to_string(),
                    kind: e.kind.name().to_string(),
                    worker: e.kind.worker().unwrap_or_default().to_string(),
                    attempt: e.kind.attempt().unwrap_or_default(),
                    error_class: e.kind.error_class().unwrap_or_default().to_string(),
                })
                .collect(),
            labels: job.labels.clone().into_iter().collect(),
            priority: u32::from(job.priority),
            last_error_class: job.last_error_class,
            last_error: job.last_error,
            idempotency_key: job.idempotency_key,
            queue: job.queue,
            job_type: job.job_type,
            tenant: job.tenant,
            run_id: job.run_id,
            cost_usd: crate::policies::micros_to_usd(job.cost_micros),
            usage: job.usage.into_iter().collect(),
            lease_ms: job.lease_ms,
            after: job.after,
        }
    }
}

/// A leased job as pushed to a worker.
pub fn leased_job(LeasedJob { job, payload }: LeasedJob) -> pb::LeasedJob {
    let lease = job.lease.as_ref();
    pb::LeasedJob {
        job_id: job.id,
        attempt: lease.map_or(job.attempts, |l| l.attempt),
        queue: job.queue.clone(),
        job_type: job.job_type.clone(),
        tenant: job.tenant.clone(),
        run_id: job.run_id.clone(),
        priority: u32::from(job.priority),
        payload,
        traceparent: job
            .labels
            .get(crate::job::TRACEPARENT_LABEL)
            .cloned()
            .unwrap_or_default(),
        labels: job.labels.clone().into_iter().collect(),
        lease_deadline_ms: lease.map_or(0, |l| l.deadline_ms),
    }
}
