//! What the API adapters, the cluster and the clients share about the wire:
//! the gRPC codec, status metadata conventions and limits, and checks of
//! values that arrive from the network (addresses, durations). A leaf: it
//! imports nothing of drover's but the generated protocol.

mod admin_http;
mod backoff;
pub mod codec;
mod credentials;
mod status;
pub mod trace;

pub use admin_http::{ErrorBody, ErrorInfo, REASON_HEADER};
pub use backoff::{jittered, Backoff};
pub use credentials::{Bearer, ClientTls, Conn, Credentials};
pub use status::{
    backoff, ca_in_use, code_name, connection_hint, drover_code, error_chain, mark_code,
    mark_retry, removed_at, removed_status, request_error, retry_after_ms, retry_safe, retryable,
    status_of, LEADER_HINT, MAX_GRPC_MESSAGE,
};

use std::time::Duration;

/// The revision of the gRPC protocol (`drover.v1`) this build speaks; see
/// `Register.protocol_version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest delay a request may ask for. Anything longer is almost
/// certainly a unit mistake (seconds sent as milliseconds, an overflowed
/// value), and refusing it says so instead of scheduling it somewhere odd.
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration taken from a request, as whole milliseconds, checked against
/// `max` without wrapping: `Err` says what was wrong, for the field's name.
pub fn duration_ms(d: Duration, max: Duration) -> Result<u64, String> {
    if d > max {
        return Err(format!("longer than the limit of {}", describe(max)));
    }
    // `max` fits in u64 milliseconds for every limit we use; the check above
    // keeps the conversion exact.
    u64::try_from(d.as_millis()).map_err(|_| "does not fit in 64-bit milliseconds".to_string())
}

/// Parses a duration written as text ("30s", "5m 10s") from a request and
/// checks it as [`duration_ms`] does.
pub fn parse_duration_ms(text: &str, max: Duration) -> Result<u64, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like \"30s\": {e}"))?;
    duration_ms(d, max).map_err(|reason| format!("{text:?} is {reason}"))
}

/// A limit as an operator would write it: whole days as days.
fn describe(d: Duration) -> String {
    config_duration(d).replace("days", " days")
}

/// A duration as a config file writes it: whole days as `30days`, the rest
/// as humantime does ("90s", "5m"); what `humantime::parse_duration` reads.
pub fn config_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 86_400 && secs % 86_400 == 0 && d.subsec_nanos() == 0 {
        format!("{}days", secs / 86_400)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// Checks a peer address as an operator gives it (`host:port`, optionally
/// with an `http://` or `https://` scheme): a host that is an IP address or a
/// DNS name, and a port from 1 to 65535. `Err` says what is wrong.
pub fn check_peer_addr(addr: &str) -> Result<(), String> {
    let rest = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    if rest.contains("://") {
        return Err(format!(
            "{addr:?}: only http:// or https:// addresses are supported"
        ));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not host:port (for example 10.0.0.2:7070)"))?;
    if !port.parse::<u16>().is_ok_and(|p| p > 0) {
        return Err(format!(
            "{addr:?}: port {port:?} is not a number from 1 to 65535"
        ));
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(host)
    };
    if !host_ok {
        return Err(format!(
            "{addr:?}: host {host:?} is neither an IP address (IPv6 in brackets) nor a DNS name"
        ));
    }
    Ok(())
}

/// A DNS name of letters, digits and hyphens in dot-separated labels (RFC 1123).
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // A name of digits and dots only is a malformed IPv4 address.
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// Turns an error read off an inbound request stream into the status the
/// stream ends with. tonic reports a message it could not decode or frame as
/// INTERNAL; it is the client's input that was wrong, so say INVALID_ARGUMENT.
/// Size limits (OUT_OF_RANGE) and cancellations keep their code.
pub fn inbound_stream_error(status: tonic::Status) -> tonic::Status {
    if status.code() == tonic::Code::Internal {
        tonic::Status::invalid_argument(format!(
            "malformed request stream: {}; the stream is closed, open a new one",
            status.message()
        ))
    } else {
        status
    }
}

/// What tonic says, as INTERNAL and before any handler runs, of a request
/// whose framing is broken (no message, a bad compression flag, a message
/// cut short). See [`framing_errors_as_invalid_argument`].
const TONIC_FRAMING_ERRORS: [&str; 4] = [
    "Missing request message",
    "Unexpected EOF decoding stream",
    "protocol error: received message with",
    "Error decompressing:",
];

/// Answers a request tonic could not frame with INVALID_ARGUMENT instead of
/// INTERNAL: the sender's bytes were wrong, not the node. Applied to every
/// gRPC response (a `tower` map); only trailers-only answers carrying one
/// of tonic's framing messages change.
pub fn framing_errors_as_invalid_argument<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let framing = headers.get("grpc-status").is_some_and(|s| s == "13")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .map(|m| m.replace("%20", " "))
            .is_some_and(|m| TONIC_FRAMING_ERRORS.iter().any(|e| m.starts_with(e)));
    if framing {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_that_overflow_are_refused() {
        assert_eq!(parse_duration_ms("5s", MAX_DELAY), Ok(5000));
        assert!(parse_duration_ms("18446744073709552s 616ms", MAX_DELAY).is_err());
        assert!(parse_duration_ms("400days", MAX_DELAY).is_err());
        assert!(parse_duration_ms("soon", MAX_DELAY).is_err());
        assert_eq!(
            duration_ms(MAX_DELAY, MAX_DELAY),
            Ok(MAX_DELAY.as_millis() as u64)
        );
        assert!(duration_ms(Duration::MAX, Duration::MAX).is_err());
    }

    #[test]
    fn peer_addresses() {
        for ok in [
            "127.0.0.1:7070",
            "http://127.0.0.1:7070",
            "https://node-2.example.com:443/",
            "[::1]:7070",
            "localhost:1",
        ] {
            assert_eq!(check_peer_addr(ok), Ok(()), "{ok}");
        }
        for bad in [
            "127.0.0.1:99999",
            "127.0.0.1:0",
            "http://[zz]:1",
            "-1:-1",
            "127.0.0.1",
            "",
            "ftp://a:1",
            "a b:1",
            "999.1.1.1:80",
            ":80",
        ] {
            assert!(check_peer_addr(bad).is_err(), "{bad} was accepted");
        }
    }
}
