//! The library's error type. Every error a request can meet ends here, and
//! here alone decides its gRPC code and HTTP status, so the two APIs always
//! agree on what a failure means.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::command::Refusal;
use crate::config::ConfigError;
use crate::job::{InvalidJob, JobId};
use crate::machine::MachineError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidJob(#[from] InvalidJob),
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("job {0} not found")]
    JobNotFound(JobId),
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error(
        "no leader is known right now (election in progress?); retry in about {retry_after_ms} ms"
    )]
    NoLeader { retry_after_ms: u64 },
    #[error("the request's log entry was replaced by a new leader before it committed, so it did not take effect; retry it")]
    Superseded,
    #[error("the node is shutting down; retry on another node")]
    ShuttingDown,
    #[error("the node stopped after the request entered its log, so it may or may not take effect: retry, with an idempotency key if it must not run twice")]
    OutcomeUnknown,
    #[error("leader (node {leader}) answered {}: {}", .status.code(), .status.message())]
    Forward { leader: u64, status: tonic::Status },
    #[error("another membership change is in progress; wait for it to finish (see `drover cluster members`) and retry")]
    MembershipBusy,
    #[error("{0}")]
    MembershipRefused(String),
    #[error("lost contact with the leader (node {leader}) while it handled the request ({reason}); it may or may not have taken effect: retry, with an idempotency key if it must not run twice")]
    ForwardLost { leader: u64, reason: String },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} (config key `{key}`): {source}; pick a free port or stop what uses it")]
    Bind {
        key: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("data dir {path} is not usable (config key `data_dir`): {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the raft driver stopped: {0}")]
    Driver(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Machine(#[from] MachineError),
    #[error("{0}")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
}

impl Error {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::InvalidJob(_) | Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::JobNotFound(_) => Code::NotFound,
            Error::Refused(Refusal::UnknownJob(_)) => Code::NotFound,
            Error::Refused(_) | Error::MembershipBusy | Error::MembershipRefused(_) => {
                Code::FailedPrecondition
            }
            Error::NoLeader { .. }
            | Error::Superseded
            | Error::ShuttingDown
            | Error::OutcomeUnknown => Code::Unavailable,
            Error::Forward { status, .. } => status.code(),
            Error::ForwardLost { .. } => Code::Unavailable,
            Error::Config(_)
            | Error::Bind { .. }
            | Error::DataDir { .. }
            | Error::Driver(_)
            | Error::Store(_)
            | Error::Machine(_)
            | Error::Snapshot(_) => Code::Internal,
        }
    }

    fn http_status(&self) -> StatusCode {
        match self.grpc_code() {
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Metadata on a status whose request certainly did not take effect, so a
/// client may send it again as it is.
const RETRY_SAFE: &str = "drover-retry-safe";
/// Metadata with a hint, in milliseconds, of when to retry.
const RETRY_AFTER: &str = "drover-retry-after-ms";

impl Error {
    /// The request was refused before it could take effect.
    pub fn retry_safe(&self) -> bool {
        match self {
            Error::NoLeader { .. } | Error::Superseded | Error::ShuttingDown => true,
            Error::Forward { status, .. } => retry_safe(status),
            _ => false,
        }
    }
}

/// Whether a status says its request did not take effect (see [`RETRY_SAFE`]).
pub fn retry_safe(status: &tonic::Status) -> bool {
    status.metadata().contains_key(RETRY_SAFE)
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        let mut status = tonic::Status::new(e.grpc_code(), e.to_string());
        if e.retry_safe() {
            status
                .metadata_mut()
                .insert(RETRY_SAFE, tonic::metadata::MetadataValue::from_static("1"));
        }
        if let Error::NoLeader { retry_after_ms } = e {
            status.metadata_mut().insert(
                RETRY_AFTER,
                tonic::metadata::MetadataValue::from(retry_after_ms),
            );
        }
        status
    }
}

/// A failed request's status as a stream reply carries it.
pub fn request_error(status: &tonic::Status) -> crate::proto::v1::RequestError {
    crate::proto::v1::RequestError {
        code: status.code() as i32,
        message: status.message().to_string(),
        retry_safe: retry_safe(status),
        retry_after_ms: status
            .metadata()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

/// The status a stream reply's error stands for, with the metadata a unary
/// call's status would carry, so clients treat both alike.
pub fn status_of(e: crate::proto::v1::RequestError) -> tonic::Status {
    let mut status = tonic::Status::new(tonic::Code::from(e.code), e.message);
    if e.retry_safe {
        status
            .metadata_mut()
            .insert(RETRY_SAFE, tonic::metadata::MetadataValue::from_static("1"));
    }
    if e.retry_after_ms > 0 {
        status.metadata_mut().insert(
            RETRY_AFTER,
            tonic::metadata::MetadataValue::from(e.retry_after_ms),
        );
    }
    status
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let body = serde_json::json!({
            "error": self.to_string(),
            "code": format!("{:?}", self.grpc_code()),
        });
        (status, axum::Json(body)).into_response()
    }
}
