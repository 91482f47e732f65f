//! Request bodies: every body the admin API takes is one JSON object.
//! axum's `Json` fills a struct from a JSON array too (serde reads a
//! sequence into a struct field by field), so `[]` would be an empty job.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::Json;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A JSON object body, read into `T`; anything else is a 400 naming it.
pub(super) struct Object<T>(pub T);

impl<T, S> FromRequest<S> for Object<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        if !json_content_type(req.headers()) {
            return Err(Error::invalid(
                "body",
                "expected a JSON object: send it with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| Error::invalid("body", e.body_text()))?;
        let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
        if first != Some(b'{') {
            return Err(Error::invalid(
                "body",
                format!(
                    "the body must be a JSON object ({{\"field\": ...}}), not {}",
                    what(first)
                ),
            ));
        }
        Json::<T>::from_bytes(&bytes)
            .map(|Json(t)| Object(t))
            .map_err(|e| {
                let text = e.body_text();
                Error::invalid(json_field(&text).unwrap_or_else(|| "body".into()), text)
            })
    }
}

/// What a JSON text that is not an object is, from its first byte.
fn what(first: Option<u8>) -> &'static str {
    match first {
        None => "an empty body",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'-' | b'0'..=b'9') => "a number",
        Some(_) => "something that is not JSON",
    }
}

fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

/// The field a JSON rejection is about, from axum's text: it puts the
/// path in front of serde's message ("...target type: priority: invalid
/// type"), and serde names an unknown field in backquotes.
fn json_field(text: &str) -> Option<String> {
    if let Some(rest) = text.split("unknown field `").nth(1) {
        return rest.split('`').next().map(str::to_string);
    }
    let rest = text.split("target type: ").nth(1)?;
    let (path, _) = rest.split_once(": ")?;
    let plain = !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'));
    plain.then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_object_is_a_body() {
        assert_eq!(what(Some(b'[')), "an array");
        assert_eq!(what(None), "an empty body");
        assert_eq!(what(Some(b'7')), "a number");
        let mut h = axum::http::HeaderMap::new();
        assert!(!json_content_type(&h));
        h.insert(
            "content-type",
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(json_content_type(&h));
        h.insert(
            "content-type",
            "application/merge-patch+json".parse().unwrap(),
        );
        assert!(json_content_type(&h));
        h.insert("content-type", "text/plain".parse().unwrap());
        assert!(!json_content_type(&h));
    }
}
