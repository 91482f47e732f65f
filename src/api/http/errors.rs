//! How an [`Error`] reads over HTTP: the admin API's one error shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// The admin API's one error shape (`{"error": {"code", "message",
/// "details"}}`). A 5xx says only that something failed inside: what failed
/// goes to the node's log, not to whoever sent the request.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let mut details = std::collections::BTreeMap::new();
        if let Error::InvalidArgument { field, .. } = &self {
            details.insert("field".to_string(), serde_json::json!(field));
        }
        if let Error::InvalidJob(e) = &self {
            details.insert("field".to_string(), serde_json::json!(e.field()));
        }
        let retry_after = self.retry_after_ms();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            details.insert(
                "retry_safe".to_string(),
                serde_json::json!(self.retry_safe()),
            );
            details.insert(
                "retry_after_ms".to_string(),
                serde_json::json!(retry_after.unwrap_or(1000)),
            );
        }
        let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(event = "request_failed", code = self.code(), error = %self, "request failed inside the node");
            "the request failed inside the node; its log has the details (event request_failed)"
                .to_string()
        } else {
            self.to_string()
        };
        let body = crate::api::types::ErrorBody {
            error: crate::api::types::ErrorInfo {
                code: self.code().to_string(),
                message,
                details,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            // Whole seconds, rounded up: at least 1.
            let secs = retry_after.unwrap_or(1000).div_ceil(1000).max(1);
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        response
    }
}
