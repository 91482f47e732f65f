//! The library's error type. Every error a request can meet ends here, and
//! here alone decides its gRPC code and HTTP status, so the two APIs always
//! agree on what a failure means.

use axum::http::StatusCode;

use crate::command::Refusal;
use crate::config::ConfigError;
use crate::job::{InvalidJob, JobId};
use crate::machine::MachineError;
use crate::store::StoreError;

/// What went wrong, for a request or for the node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A new job breaks a validation rule.
    #[error("invalid argument: {0}")]
    InvalidJob(#[from] InvalidJob),
    /// A request field is wrong.
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument {
        /// The field, as the request names it.
        field: std::borrow::Cow<'static, str>,
        /// What is wrong with it.
        reason: String,
    },
    /// No job has this id (none ever had, or it was purged).
    #[error("job {0} not found")]
    JobNotFound(JobId),
    /// A dead-letter action named a job that is not dead.
    #[error("job {id} is {state}, not dead: only dead jobs are replayed or purged from the dead letters")]
    NotDead {
        /// The job named.
        id: JobId,
        /// The state it is in.
        state: crate::job::JobState,
    },
    /// Something else the request named (a worker, a version...) does not
    /// exist; the text says what.
    #[error("{0}")]
    NotFound(String),
    /// The state machine refused the command; it changed nothing.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// No leader is known (an election is under way?), so the request
    /// could be neither proposed nor forwarded.
    #[error(
        "no leader is known right now (election in progress?); retry in about {retry_after_ms} ms"
    )]
    NoLeader {
        /// How long (ms) to wait before sending it again.
        retry_after_ms: u64,
    },
    /// A new leader's entries replaced the request's before it committed:
    /// it did not take effect.
    #[error("the request's log entry was replaced by a new leader before it committed, so it did not take effect; retry it")]
    Superseded,
    /// The node is stopping and takes no more requests.
    #[error("the node is shutting down; retry on another node")]
    ShuttingDown,
    /// The command needs a log entry format the cluster does not write
    /// yet: some voter runs an older drover.
    #[error("this needs log entry format {needs}, and the cluster writes format {writing} until every voter runs a drover that applies {needs}: finish upgrading every node (`entry_version_changed` in the leader's log says when), then retry")]
    Upgrading {
        /// The format the command needs.
        needs: u8,
        /// The format the cluster writes now.
        writing: u8,
    },
    /// The request entered the log, but the node stopped (or a snapshot
    /// jumped over its entry) before it learnt the outcome: it may or may
    /// not take effect.
    #[error("the node stopped after the request entered its log, so it may or may not take effect: retry, with an idempotency key if it must not run twice")]
    OutcomeUnknown,
    /// The leader this node forwarded the request to answered with an error.
    #[error("leader (node {leader}) answered {}: {}", .status.code(), .status.message())]
    Forward {
        /// The leader's node id.
        leader: u64,
        /// Its answer.
        status: tonic::Status,
    },
    /// A membership change was asked for while another is under way.
    #[error("another membership change is in progress; wait for it to finish (see `drover cluster members`) and retry")]
    MembershipBusy,
    /// The cluster refused a membership change; the text says why.
    #[error("{0}")]
    MembershipRefused(String),
    /// Contact with the leader was lost while it handled a forwarded
    /// request: it may or may not have taken effect.
    #[error("lost contact with the leader (node {leader}) while it handled the request ({reason}); it may or may not have taken effect: retry, with an idempotency key if it must not run twice")]
    ForwardLost {
        /// The leader's node id.
        leader: u64,
        /// What the transport said.
        reason: String,
    },
    /// The config is not valid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A listener could not bind its address at start.
    #[error("cannot listen on {addr} (config key `{key}`): {source}; pick a free port or stop what uses it")]
    Bind {
        /// The config key that names the address.
        key: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why it could not.
        source: std::io::Error,
    },
    /// A directory or file the node keeps data in (the data dir, a
    /// snapshot, the backups) could not be created, read or written; also
    /// a restore into a data dir that is not empty.
    #[error("data dir {path} is not usable (config key `data_dir`): {source}")]
    DataDir {
        /// The directory or file.
        path: std::path::PathBuf,
        /// Why it could not be used.
        source: std::io::Error,
    },
    /// The raft driver stopped, or failed a request it took (a snapshot,
    /// an outcome the caller did not expect); the text says what.
    #[error("the raft driver stopped: {0}")]
    Driver(String),
    /// The disk under the data dir failed: the node stopped rather than
    /// acknowledge what it may not have written.
    #[error("{}", disk_fault_message(.data_dir, *.fault, .detail))]
    DiskFault {
        /// The node's data dir.
        data_dir: std::path::PathBuf,
        /// Whether the disk was full or failed.
        fault: crate::store::DiskFault,
        /// What the store reported.
        detail: String,
    },
    /// The raft log's store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The state machine's storage failed, or holds a record it cannot
    /// read.
    #[error("{0}")]
    Machine(#[from] MachineError),
    /// Writing or reading a snapshot failed, or a file is not a valid
    /// snapshot.
    #[error("{0}")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// A sealed value does not open, or the keys do not fit the data dir
    /// (`[storage] encryption_key_file`).
    #[error("{0}")]
    Sealing(#[from] crate::sealing::SealingError),
    /// The request carried no token, or one the node does not know (or a
    /// peer came without the client certificate `tls.peer_mtls` asks for).
    #[error("{0}")]
    Unauthenticated(String),
    /// The token's role or scope does not allow the request.
    #[error("{0}")]
    PermissionDenied(String),
    /// The token is over its rate limit, or its limit for one tenant.
    #[error("token {token:?} is over its rate limit; retry in {retry_after_ms} ms")]
    RateLimited {
        /// The token's name (and the tenant, for a per-tenant limit).
        token: String,
        /// How long (ms) until it may send again.
        retry_after_ms: u64,
    },
    /// This node was removed from its cluster, and stopped.
    #[error("node {node_id} was removed from the cluster ({reason}), so it stopped. To bring it back: empty its data dir, start it with join = true, and run `drover cluster add {node_id} ADDR` on a member (docs/operations.md, \"Rebuild a node\"); `wait_when_removed = true` keeps a removed node running instead")]
    Removed {
        /// This node's id.
        node_id: u64,
        /// Why it was removed, as the removal said.
        reason: String,
    },
    /// A node's disk or memory alarm stands: the leader takes no new work.
    #[error("{0}")]
    Pressure(#[from] crate::resources::Refusal),
}

/// How long a refusal for a disk or memory alarm asks clients to wait:
/// nodes sample twice a second, and alarms clear with some margin.
const PRESSURE_RETRY_MS: u64 = 1000;

fn disk_fault_message(
    data_dir: &std::path::Path,
    fault: crate::store::DiskFault,
    detail: &str,
) -> String {
    let dir = data_dir.display();
    match fault {
        crate::store::DiskFault::NoSpace => format!(
            "the filesystem of data dir {dir} is full ({detail}). The node stopped before \
             acknowledging anything it could not write: nothing acknowledged is lost. Free \
             space on that filesystem or grow it, then start the node again; until then it \
             refuses to start and changes nothing (docs/operations.md, \"A disk fills\")"
        ),
        crate::store::DiskFault::Io => format!(
            "the disk of data dir {dir} failed a write or a sync ({detail}). The node stopped: \
             what the kernel failed to write cannot be trusted to be on disk, and a failed \
             fsync is never retried. Check the device (dmesg); if it is sound, start the node \
             again and it recovers from its log, else rebuild it on a new disk from its peers \
             (docs/operations.md, \"Rebuild a node\")"
        ),
    }
}

impl Error {
    /// What a stopped driver's error tells an operator: a disk fault names
    /// the data dir and the way back.
    pub fn driver_stopped(
        data_dir: &std::path::Path,
        e: &(dyn std::error::Error + 'static),
    ) -> Error {
        match crate::store::disk_fault(e) {
            Some(fault) => Error::DiskFault {
                data_dir: data_dir.to_path_buf(),
                fault,
                detail: e.to_string(),
            },
            None => Error::Driver(e.to_string()),
        }
    }

    /// An [`Error::InvalidArgument`] about `field`.
    pub fn invalid(
        field: impl Into<std::borrow::Cow<'static, str>>,
        reason: impl Into<String>,
    ) -> Error {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::InvalidJob(_) | Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::JobNotFound(_) | Error::NotFound(_) => Code::NotFound,
            Error::Refused(r) if r.is_not_found() => Code::NotFound,
            Error::Refused(Refusal::BadDependency { .. }) => Code::InvalidArgument,
            Error::Refused(Refusal::Shed { .. }) => Code::ResourceExhausted,
            Error::Refused(_)
            | Error::NotDead { .. }
            | Error::MembershipBusy
            | Error::Upgrading { .. }
            | Error::MembershipRefused(_) => Code::FailedPrecondition,
            Error::NoLeader { .. }
            | Error::Superseded
            | Error::ShuttingDown
            | Error::OutcomeUnknown => Code::Unavailable,
            Error::Forward { status, .. } => status.code(),
            Error::ForwardLost { .. } => Code::Unavailable,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::RateLimited { .. } | Error::Pressure(_) => Code::ResourceExhausted,
            Error::Config(_)
            | Error::Bind { .. }
            | Error::DataDir { .. }
            | Error::Driver(_)
            | Error::DiskFault { .. }
            | Error::Removed { .. }
            | Error::Store(_)
            | Error::Machine(_)
            | Error::Sealing(_)
            | Error::Snapshot(_) => Code::Internal,
        }
    }

    /// The HTTP status the admin API answers it with (its gRPC code's).
    pub fn http_status(&self) -> StatusCode {
        match self.grpc_code() {
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, snake_case name of what went wrong, for scripts: the
    /// `code` of the admin API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidJob(_) | Error::InvalidArgument { .. } => "invalid_argument",
            Error::JobNotFound(_) | Error::NotFound(_) => "not_found",
            Error::Refused(r) => r.code(),
            Error::NotDead { .. } => "not_dead",
            Error::MembershipBusy => "membership_busy",
            Error::MembershipRefused(_) => "membership_refused",
            Error::NoLeader { .. } => "no_leader",
            Error::Superseded => "superseded",
            Error::ShuttingDown => "shutting_down",
            Error::Upgrading { .. } => "cluster_upgrading",
            Error::OutcomeUnknown | Error::ForwardLost { .. } => "outcome_unknown",
            Error::Forward { status, .. } => crate::wire::drover_code(status)
                .and_then(crate::resources::Alarm::from_code)
                .map(crate::resources::Alarm::code)
                .unwrap_or_else(|| crate::wire::code_name(status.code())),
            Error::Unauthenticated(_) => "unauthenticated",
            Error::PermissionDenied(_) => "permission_denied",
            Error::RateLimited { .. } => "rate_limited",
            Error::Pressure(r) => r.alarm.code(),
            Error::Config(_)
            | Error::Bind { .. }
            | Error::DataDir { .. }
            | Error::Driver(_)
            | Error::Store(_)
            | Error::Machine(_)
            | Error::Snapshot(_) => "internal",
            Error::Sealing(_) => "sealed",
            Error::Removed { .. } => "removed",
            Error::DiskFault { fault, .. } => match fault {
                crate::store::DiskFault::NoSpace => "disk_full",
                crate::store::DiskFault::Io => "disk_failed",
            },
        }
    }

    /// How long to wait before sending the request again, when known.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Error::NoLeader { retry_after_ms } | Error::RateLimited { retry_after_ms, .. } => {
                Some(*retry_after_ms)
            }
            Error::Pressure(_) => Some(PRESSURE_RETRY_MS),
            Error::Forward { status, .. } => crate::wire::retry_after_ms(status),
            _ => None,
        }
    }
}

impl Error {
    /// The request failed for a passing reason (no leader yet, the node or
    /// the leader going away): it did not take effect, or its outcome is
    /// not known, and sending it again later can succeed. What a worker
    /// resends a result on (`Ack.transient`).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::NoLeader { .. }
            | Error::Superseded
            | Error::ShuttingDown
            | Error::OutcomeUnknown
            | Error::ForwardLost { .. } => true,
            Error::Forward { status, .. } => crate::wire::retry_safe(status),
            _ => false,
        }
    }

    /// The request was refused before it could take effect.
    pub fn retry_safe(&self) -> bool {
        match self {
            Error::NoLeader { .. }
            | Error::Superseded
            | Error::ShuttingDown
            | Error::RateLimited { .. }
            | Error::Pressure(_)
            | Error::Refused(Refusal::Shed { .. }) => true,
            Error::Forward { status, .. } => crate::wire::retry_safe(status),
            _ => false,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        let mut status = tonic::Status::new(e.grpc_code(), e.to_string());
        let retry_after_ms = e.retry_after_ms().unwrap_or(0);
        crate::wire::mark_retry(&mut status, e.retry_safe(), retry_after_ms);
        crate::wire::mark_code(&mut status, e.code());
        status
    }
}
