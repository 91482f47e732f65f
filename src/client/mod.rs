//! The Rust client: a producer over the gRPC producer service and a worker
//! runtime over the worker stream. The CLI and the benchmark use these, so
//! they are exercised by every integration test.

pub mod worker;

use tonic::transport::{Channel, Endpoint};

use crate::proto::v1 as pb;
use crate::proto::v1::producer_service_client::ProducerServiceClient;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url:?} is not a usable server address: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot connect to {url}: {source}; is a drover node running there?")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("the server refused the request: {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Builds a lazily connecting channel to `url` (`http://host:port`; a bare
/// `host:port` is taken as http).
pub fn endpoint(url: &str) -> Result<Endpoint, ClientError> {
    let full = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    Endpoint::from_shared(full)
        .map(|e| e.tcp_nodelay(true))
        .map_err(|e| ClientError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })
}

pub async fn connect(url: &str) -> Result<Channel, ClientError> {
    endpoint(url)?
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            url: url.to_string(),
            source,
        })
}

/// A producer: enqueues, reads and cancels jobs.
#[derive(Clone)]
pub struct Producer {
    inner: ProducerServiceClient<Channel>,
}

impl Producer {
    pub async fn connect(url: &str) -> Result<Producer, ClientError> {
        Ok(Producer::new(connect(url).await?))
    }

    pub fn new(channel: Channel) -> Producer {
        Producer {
            inner: ProducerServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024),
        }
    }

    /// Enqueues a batch; returns once every job in it is durable.
    pub async fn enqueue(
        &mut self,
        jobs: Vec<pb::NewJob>,
    ) -> Result<Vec<pb::EnqueuedJob>, ClientError> {
        Ok(self
            .inner
            .enqueue(pb::EnqueueRequest { jobs })
            .await?
            .into_inner()
            .jobs)
    }

    pub async fn get(&mut self, id: u64) -> Result<pb::Job, ClientError> {
        Ok(self
            .inner
            .get_job(pb::GetJobRequest { id })
            .await?
            .into_inner())
    }

    pub async fn cancel(&mut self, id: u64) -> Result<String, ClientError> {
        Ok(self
            .inner
            .cancel(pb::CancelRequest { id })
            .await?
            .into_inner()
            .state)
    }

    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.inner.ping(pb::PingRequest {}).await?;
        Ok(())
    }
}
