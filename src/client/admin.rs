//! The typed admin client over HTTP: a request body and an answer are any
//! serde types (the CLI and the tests use `drover::api::types`, a script's
//! own mirror works as well); an error answer becomes its code and message.
//! It tries each of several nodes while one cannot be reached or has no
//! leader, as the gRPC clients do.

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::{Credentials, ErrorBody, ErrorInfo, REASON_HEADER};

/// Why an admin call failed, with what an operator needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The server list was empty.
    #[error("--server names no address")]
    NoServer,
    /// The CA given for TLS could not be read as a certificate.
    #[error("--ca is not a PEM certificate: {0}")]
    BadCa(#[source] reqwest::Error),
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
    /// No node answered: the message names the last address tried and,
    /// where the cause is known (TLS mismatch, refused connection), the fix.
    #[error("cannot reach {url}: {hint}")]
    Unreachable {
        /// The last URL tried.
        url: String,
        /// What went wrong and what to do.
        hint: String,
    },
    /// A node answered with an error body: the request was refused or
    /// failed, as `error.code` says.
    #[error("{status} ({}): {}", .error.code, .error.message)]
    Refused {
        /// The HTTP status of the answer.
        status: StatusCode,
        /// The answer's error: its code, message and details.
        error: ErrorInfo,
    },
    /// Something answered an error without drover's error body.
    #[error("{url} answered {status} without an error body; is it a drover node?")]
    NotDrover {
        /// The URL called.
        url: String,
        /// The HTTP status of the answer.
        status: StatusCode,
    },
    /// A success answer whose body is not the type asked for.
    #[error("{url} did not answer the JSON this drover expects (a different version?): {source}")]
    BadAnswer {
        /// The URL called.
        url: String,
        /// The decoding error.
        source: reqwest::Error,
    },
}

impl AdminError {
    /// The error code of a refusal (`not_found`, `invalid_argument`...).
    pub fn code(&self) -> Option<&str> {
        match self {
            AdminError::Refused { error, .. } => Some(&error.code),
            _ => None,
        }
    }
}

/// A client of one cluster's admin API.
pub struct AdminClient {
    http: reqwest::Client,
    /// Base URLs, tried in order while a node cannot be reached.
    urls: Vec<String>,
    authorization: Option<String>,
    reason: String,
    /// A CA was given (--ca): what a certificate error means depends on it.
    has_ca: bool,
}

impl AdminClient {
    /// A client of the nodes in `servers` (comma-separated addresses, as
    /// `--server` takes them) with `credentials`; `reason`, when not empty,
    /// goes with every request into the audit log.
    pub fn new(
        servers: &str,
        credentials: &Credentials,
        reason: &str,
    ) -> Result<AdminClient, AdminError> {
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        if let Some(tls) = credentials.tls() {
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_pem(&tls.ca).map_err(AdminError::BadCa)?,
            );
        }
        let urls: Vec<String> = super::server_list(servers)
            .iter()
            .map(|s| credentials.url(s).trim_end_matches('/').to_string())
            .collect();
        if urls.is_empty() {
            return Err(AdminError::NoServer);
        }
        Ok(AdminClient {
            http: builder.build().map_err(AdminError::Setup)?,
            urls,
            authorization: credentials.authorization().map(String::from),
            reason: reason.to_string(),
            has_ca: credentials.tls().is_some(),
        })
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response, AdminError> {
        let mut last = None;
        for base in &self.urls {
            let url = format!("{base}{path}");
            let mut req = self.http.request(method.clone(), &url);
            if let Some(a) = &self.authorization {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            if !self.reason.is_empty() {
                req = req.header(REASON_HEADER, &self.reason);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                // No leader here: another node may have one.
                Ok(resp)
                    if resp.status() == StatusCode::SERVICE_UNAVAILABLE && self.urls.len() > 1 =>
                {
                    last = Some(error_of(resp, &url).await);
                }
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => return Err(error_of(resp, &url).await),
                Err(e) => {
                    let chain = crate::wire::error_chain(&e);
                    let hint = match crate::wire::connection_hint(Some(base), &chain, self.has_ca) {
                        Some(fix) => format!("{fix} ({chain})"),
                        None => format!("{chain}; is a drover node running there?"),
                    };
                    last = Some(AdminError::Unreachable { url, hint });
                }
            }
        }
        Err(last.unwrap_or(AdminError::NoServer))
    }

    /// Sends `body` (if any) with `method` to `path` (`/api/v1/...`) and
    /// decodes the answer as `T`.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, AdminError> {
        let resp = self.send(method, path, body).await?;
        let url = resp.url().to_string();
        resp.json()
            .await
            .map_err(|source| AdminError::BadAnswer { url, source })
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        self.call::<(), T>(Method::GET, path, None).await
    }

    /// `POST path` with `body`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, AdminError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `POST path` with an empty object: an action that takes no arguments.
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        self.post(path, &serde_json::Map::new()).await
    }

    /// `PUT path` with `body`.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, AdminError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        self.call::<(), T>(Method::DELETE, path, None).await
    }

    /// A raw answer, for downloads (a backup's bytes).
    pub async fn download(&self, path: &str) -> Result<reqwest::Response, AdminError> {
        self.send::<()>(Method::GET, path, None).await
    }
}

/// An error answer as the operator should read it: status, code, message.
async fn error_of(resp: reqwest::Response, url: &str) -> AdminError {
    let status = resp.status();
    match resp.json::<ErrorBody>().await {
        Ok(b) => AdminError::Refused {
            status,
            error: b.error,
        },
        Err(_) => AdminError::NotDrover {
            url: url.to_string(),
            status,
        },
    }
}
