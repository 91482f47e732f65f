//! The conventions a drover status and its metadata follow on the wire,
//! shared by the servers that set them and the clients that read them.

use tonic::metadata::MetadataValue;

use crate::proto::v1 as pb;

/// Largest gRPC message a node sends or accepts.
pub const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;

/// Response metadata naming the leader's address, set by followers.
pub const LEADER_HINT: &str = "drover-leader";

/// Metadata on a status whose request certainly did not take effect, so a
/// client may send it again as it is.
const RETRY_SAFE: &str = "drover-retry-safe";
/// Metadata with a hint, in milliseconds, of when to retry.
const RETRY_AFTER: &str = "drover-retry-after-ms";

/// Metadata with the error's `code` as the admin API names it, for codes
/// a gRPC code alone does not tell apart (RESOURCE_EXHAUSTED is a shed
/// queue, a rate limit, a full disk or high memory).
const CODE: &str = "drover-code";

/// Names `status`'s drover code (see [`CODE`]).
pub fn mark_code(status: &mut tonic::Status, code: &str) {
    if let Ok(v) = code.parse() {
        status.metadata_mut().insert(CODE, v);
    }
}

/// The drover code a status carries, if any.
pub fn drover_code(status: &tonic::Status) -> Option<&str> {
    status.metadata().get(CODE).and_then(|v| v.to_str().ok())
}

/// Metadata on a peer's refusal of a removed member: the log index of the
/// change that removed it.
const REMOVED_AT: &str = "drover-removed-at";

/// A peer's refusal of member `id`, removed at log index `at`.
pub fn removed_status(id: u64, at: u64) -> tonic::Status {
    let mut status = tonic::Status::permission_denied(format!(
        "node {id} was removed from this cluster by the configuration change at index {at}; to bring it back, empty its data dir, start it with join = true and run `drover cluster add {id} ADDR`"
    ));
    mark_code(&mut status, "removed");
    status
        .metadata_mut()
        .insert(REMOVED_AT, MetadataValue::from(at));
    status
}

/// The index a removed member's refusal names (see [`removed_status`]).
pub fn removed_at(status: &tonic::Status) -> Option<u64> {
    if drover_code(status) != Some("removed") {
        return None;
    }
    status
        .metadata()
        .get(REMOVED_AT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Marks `status` as retry-safe and with a retry hint, as its error says.
pub fn mark_retry(status: &mut tonic::Status, retry_safe: bool, retry_after_ms: u64) {
    if retry_safe {
        status
            .metadata_mut()
            .insert(RETRY_SAFE, MetadataValue::from_static("1"));
    }
    if retry_after_ms > 0 {
        status
            .metadata_mut()
            .insert(RETRY_AFTER, MetadataValue::from(retry_after_ms));
    }
}

/// A gRPC code as the admin API's error codes are written: snake_case,
/// stable (tonic's Debug names are neither).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "ok",
        C::Cancelled => "cancelled",
        C::Unknown => "unknown",
        C::InvalidArgument => "invalid_argument",
        C::DeadlineExceeded => "deadline_exceeded",
        C::NotFound => "not_found",
        C::AlreadyExists => "already_exists",
        C::PermissionDenied => "permission_denied",
        C::ResourceExhausted => "resource_exhausted",
        C::FailedPrecondition => "failed_precondition",
        C::Aborted => "aborted",
        C::OutOfRange => "out_of_range",
        C::Unimplemented => "unimplemented",
        C::Internal => "internal",
        C::Unavailable => "unavailable",
        C::DataLoss => "data_loss",
        C::Unauthenticated => "unauthenticated",
    }
}

/// Whether a status says its request did not take effect (see [`mark_retry`]).
pub fn retry_safe(status: &tonic::Status) -> bool {
    status.metadata().contains_key(RETRY_SAFE)
}

/// The retry hint a status carries, if any.
pub fn retry_after_ms(status: &tonic::Status) -> Option<u64> {
    status
        .metadata()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A failed request's status as a stream reply carries it.
pub fn request_error(status: &tonic::Status) -> pb::RequestError {
    pb::RequestError {
        code: status.code() as i32,
        message: status.message().to_string(),
        retry_safe: retry_safe(status),
        retry_after_ms: retry_after_ms(status).unwrap_or(0),
    }
}

/// The status a stream reply's error stands for, with the metadata a unary
/// call's status would carry, so clients treat both alike.
pub fn status_of(e: pb::RequestError) -> tonic::Status {
    let mut status = tonic::Status::new(tonic::Code::from(e.code), e.message);
    mark_retry(&mut status, e.retry_safe, e.retry_after_ms);
    status
}

/// Whether a failed call certainly did not take effect, so it may be sent
/// again (to this node or another): the node said so, or it was never reached.
pub fn retryable(status: &tonic::Status) -> bool {
    retry_safe(status) || never_sent(status)
}

/// Whether the call failed before reaching the node (it is down or
/// restarting), so nothing can have been done.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// Backoff before retry `attempt` (0-based): the server's hint if it gave
/// one (at most 1 s), else jittered exponential from 50 ms to 1 s.
pub fn backoff(status: &tonic::Status, attempt: u32) -> std::time::Duration {
    use std::time::Duration;
    match retry_after_ms(status) {
        Some(ms) => Duration::from_millis(ms.min(1000)),
        None => super::jittered(attempt, Duration::from_millis(50), Duration::from_secs(1)),
    }
}

/// What to do about a connection that failed for a reason the address
/// can fix, read from the error's text (with its causes): a TLS node called
/// over http://, a plain node over https://, or a certificate the given CA
/// does not vouch for. `url` is the address called, when known.
pub fn connection_hint(url: Option<&str>, text: &str, has_ca: bool) -> Option<String> {
    let t = text.to_lowercase();
    let at = url.map(|u| format!(" at {u}")).unwrap_or_default();
    let https = url.is_some_and(|u| u.starts_with("https://"));
    let plain = url.is_some_and(|u| !u.starts_with("https://"));
    if t.contains("unknownissuer")
        || t.contains("invalid peer certificate")
        || t.contains("certificate verify failed")
    {
        return Some(if has_ca {
            format!("the node{at} presents a certificate that the CA given with --ca (or DROVER_CA) did not sign: give the cluster's CA")
        } else {
            format!("the node{at} presents a certificate this client cannot check: give the cluster's CA with --ca FILE (or DROVER_CA)")
        });
    }
    if https
        && (t.contains("corrupt message")
            || t.contains("invalidcontenttype")
            || t.contains("wrong version number")
            || t.contains("invalid content type"))
    {
        return Some(format!(
            "the node{at} does not speak TLS: use an http:// address"
        ));
    }
    let broke_at_once = t.contains("h2 protocol error")
        || t.contains("connection closed")
        || t.contains("incompletemessage")
        || t.contains("invalid http version")
        || t.contains("connection reset")
        || t.contains("broken pipe");
    if broke_at_once && !https && (plain || url.is_none()) {
        return Some(format!(
            "the node{at} dropped the connection at once: if it uses TLS, use an https:// address and --ca FILE (or DROVER_CA)"
        ));
    }
    None
}

/// Whether this process was given a CA (--ca or DROVER_CA), for hints that
/// depend on it.
pub fn ca_in_use() -> bool {
    std::env::var_os("DROVER_CA").is_some_and(|v| !v.is_empty())
        || std::env::args().any(|a| a == "--ca" || a.starts_with("--ca="))
}

/// An error with its chain of causes, as one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_mismatches_get_the_fix() {
        let h = |url: &str, text: &str, ca: bool| {
            connection_hint(Some(url), text, ca).unwrap_or_default()
        };
        assert!(h(
            "http://n:1",
            "error sending request: connection closed before message completed",
            false
        )
        .contains("use an https:// address"));
        assert!(h(
            "https://n:1",
            "invalid peer certificate: UnknownIssuer",
            true
        )
        .contains("did not sign"));
        assert!(h(
            "https://n:1",
            "invalid peer certificate: UnknownIssuer",
            false
        )
        .contains("--ca FILE"));
        assert!(h(
            "https://n:1",
            "received corrupt message of type InvalidContentType",
            true
        )
        .contains("does not speak TLS"));
        assert!(connection_hint(
            None,
            "status: Unknown, message: \"h2 protocol error: http2 error\"",
            false
        )
        .is_some());
        assert_eq!(
            connection_hint(Some("http://n:1"), "connection refused", false),
            None
        );
    }
}
