//! Node spans over OTLP: a job's enqueue, its leases and its completion,
//! each a child of the W3C `traceparent` its producer gave, sent in batches
//! to `[tracing] otlp_endpoint`. Without an endpoint there is no exporter
//! and every call here returns at its first branch: no cost.

use std::time::SystemTime;

use opentelemetry::trace::{Span, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};

use crate::config::ConfigError;
use crate::job::Job;

/// How often a batch of spans goes to the collector at the latest.
const EXPORT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// What a span says of its job.
#[derive(Debug, Clone, Copy)]
pub struct SpanJob<'a> {
    /// The job's id.
    pub id: u64,
    /// Its queue.
    pub queue: &'a str,
    /// Its type.
    pub job_type: &'a str,
    /// Its tenant.
    pub tenant: &'a str,
    /// Its trace context (empty: none).
    pub traceparent: &'a str,
}

impl<'a> SpanJob<'a> {
    /// Of a job record.
    pub fn of(job: &'a Job) -> SpanJob<'a> {
        SpanJob::of_parts(job.id, &job.queue, &job.job_type, &job.tenant, &job.labels)
    }

    /// Of a new job, once the log gave it `id`.
    pub fn of_new(id: u64, job: &'a crate::job::NewJob) -> SpanJob<'a> {
        SpanJob::of_parts(id, &job.queue, &job.job_type, &job.tenant, &job.labels)
    }

    fn of_parts(
        id: u64,
        queue: &'a str,
        job_type: &'a str,
        tenant: &'a str,
        labels: &'a std::collections::BTreeMap<String, String>,
    ) -> SpanJob<'a> {
        SpanJob {
            id,
            queue,
            job_type,
            tenant,
            traceparent: labels
                .get(crate::job::TRACEPARENT_LABEL)
                .map_or("", String::as_str),
        }
    }
}

/// The node's span exporter, or nothing.
#[derive(Clone, Default)]
pub struct NodeTracer {
    inner: Option<(SdkTracerProvider, opentelemetry_sdk::trace::Tracer)>,
}

impl NodeTracer {
    /// An exporter to `endpoint` (empty: none). Must be called within the
    /// tokio runtime (the gRPC channel lives on it).
    pub fn start(endpoint: &str, node_id: u64) -> Result<NodeTracer, ConfigError> {
        if endpoint.is_empty() {
            return Ok(NodeTracer::default());
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| ConfigError::Invalid {
                key: "tracing.otlp_endpoint",
                reason: format!("{endpoint:?}: {e}; fix it, or leave it empty for no spans"),
            })?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_EVERY)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("drover")
                    .with_attribute(KeyValue::new("drover.node_id", node_id as i64))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("drover");
        Ok(NodeTracer {
            inner: Some((provider, tracer)),
        })
    }

    /// Whether spans go anywhere.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Records span `name` of `job` from `start` to now, a child of the
    /// job's trace context (none: nothing is recorded).
    pub fn job_span(
        &self,
        name: &'static str,
        kind: SpanKind,
        job: SpanJob<'_>,
        start: SystemTime,
        more: &[KeyValue],
    ) {
        let Some((_, tracer)) = &self.inner else {
            return;
        };
        let Some(parent) = crate::wire::trace::remote_parent(job.traceparent) else {
            return;
        };
        let mut attributes = vec![
            KeyValue::new("drover.job_id", job.id as i64),
            KeyValue::new("drover.queue", job.queue.to_string()),
            KeyValue::new("drover.job_type", job.job_type.to_string()),
            KeyValue::new("drover.tenant", job.tenant.to_string()),
        ];
        attributes.extend_from_slice(more);
        let mut span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        span.end();
    }

    /// Sends what is batched and stops (a node's shutdown).
    pub fn shutdown(&self) {
        if let Some((provider, _)) = &self.inner {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
    }
}
