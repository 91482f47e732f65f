//! The dashboard: web/ (plain HTML, CSS and JavaScript) built into the
//! binary and served at `/`, nothing to install. It calls the same
//! `/api/v1` endpoints as the CLI, with the token the person signs in with.
//! A Content-Security-Policy forbids inline script and any other origin.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::ErrorResponses;

/// (name, content type, body) of every file of the dashboard.
const FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/style.css"),
    ),
];
const INDEX: &str = include_str!("../../../web/index.html");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A node upgraded in place serves its new dashboard at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The dashboard.
#[utoipa::path(get, path = "/", tag = "dashboard", security(()),
    responses((status = 200, content_type = "text/html", body = String)))]
pub(super) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// A file of the dashboard (its script and style sheet).
#[utoipa::path(get, path = "/ui/{file}", tag = "dashboard", security(()),
    params(("file" = String, Path)),
    responses((status = 200, content_type = "text/plain", body = String), ErrorResponses))]
pub(super) async fn file(Path(file): Path<String>, headers: axum::http::HeaderMap) -> Response {
    match FILES.iter().find(|(name, ..)| *name == file) {
        Some((_, content_type, body)) => page(content_type, body),
        None => super::probes::not_found(headers).await,
    }
}

/// Who the request's token is: its name and role; `auth` false on a node
/// without tokens (everyone may do everything). The dashboard shows action
/// buttons by it; the server checks every action anyway.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "auth",
    responses((status = 200, body = crate::api::types::WhoAmIBody), ErrorResponses))]
pub(super) async fn whoami(
    axum::Extension(caller): axum::Extension<crate::api::auth::Caller>,
) -> axum::Json<crate::api::types::WhoAmIBody> {
    axum::Json(crate::api::types::WhoAmIBody {
        name: caller.name.clone(),
        role: caller.role.map(|r| r.as_str().to_string()),
        auth: caller.role.is_some(),
    })
}
