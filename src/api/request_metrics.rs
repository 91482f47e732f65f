//! Request metrics for both APIs on one port: how many requests and how
//! long they took, by HTTP route template and status code, or by gRPC
//! method and status code. Labels come from fixed sets (the route table,
//! the gRPC methods drover serves), so a client sending random paths adds
//! no series: unknown paths count as `unmatched` or `unknown`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tonic::Code;

use crate::metrics::{GRPC_DURATION, GRPC_REQUESTS, HTTP_DURATION, HTTP_REQUESTS};

/// Counts a request when its answer is known: an HTTP one at its head, a
/// gRPC one at its status, which comes after the body.
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    if crate::api::auth::is_grpc(req.headers()) {
        let method = grpc_method(req.uri().path());
        let response = next.run(req).await;
        let status = response.headers().get("grpc-status").and_then(code_of);
        return response.map(|inner| {
            Body::new(Counted {
                inner,
                method,
                start,
                status,
                recorded: false,
            })
        });
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let response = next.run(req).await;
    let code = response.status().as_u16().to_string();
    metrics::histogram!(HTTP_DURATION, "route" => route.clone())
        .record(start.elapsed().as_secs_f64());
    metrics::counter!(HTTP_REQUESTS, "route" => route, "code" => code).increment(1);
    response
}

/// The method's path if drover serves it, else `unknown`.
fn grpc_method(path: &str) -> &'static str {
    crate::api::auth::GRPC_ROUTES
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("unknown", |(p, _)| p)
}

fn code_of(v: &http::HeaderValue) -> Option<Code> {
    let n: i32 = v.to_str().ok()?.trim().parse().ok()?;
    Some(Code::from_i32(n))
}

/// The name a gRPC status code goes by in metrics, as other gRPC servers
/// label it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A gRPC answer's body, passed through, that counts the call when its
/// status goes by in the trailers (or the body ends or is dropped).
struct Counted {
    inner: Body,
    method: &'static str,
    start: Instant,
    /// The status seen so far: the head's (an answer with no body), then
    /// the trailers'.
    status: Option<Code>,
    recorded: bool,
}

impl Counted {
    /// Counts the call once; `ended`: the body ran to its end (a call
    /// dropped before its status was cancelled by the client).
    fn record(&mut self, ended: bool) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let fallback = if ended {
            Code::Unknown
        } else {
            Code::Cancelled
        };
        let code = code_name(self.status.unwrap_or(fallback));
        metrics::histogram!(GRPC_DURATION, "method" => self.method)
            .record(self.start.elapsed().as_secs_f64());
        metrics::counter!(GRPC_REQUESTS, "method" => self.method, "code" => code).increment(1);
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame
                    .trailers_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .and_then(code_of)
                {
                    this.status = Some(code);
                    this.record(true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.status.get_or_insert(Code::Internal);
                this.record(true);
            }
            Poll::Ready(None) => this.record(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // A head-only answer (an error before any message) ends here.
        let ended = self.status.is_some() || self.inner.is_end_stream();
        self.record(ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_get_their_own_label() {
        assert_eq!(
            grpc_method("/drover.v1.ProducerService/Enqueue"),
            "/drover.v1.ProducerService/Enqueue"
        );
        assert_eq!(grpc_method("/drover.v1.ProducerService/Nope123"), "unknown");
        assert_eq!(grpc_method("/x"), "unknown");
    }

    #[test]
    fn status_headers_read_as_codes() {
        let v = http::HeaderValue::from_static("5");
        assert_eq!(code_of(&v), Some(Code::NotFound));
        assert_eq!(code_name(Code::NotFound), "NotFound");
        assert_eq!(code_of(&http::HeaderValue::from_static("x")), None);
    }
}
