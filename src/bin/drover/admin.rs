//! The typed admin client: requests and answers are the structs of
//! `drover::api::types`; an error answer becomes its code and message.

use anyhow::{bail, Context, Result};
use drover::api::types::ErrorBody;
use drover::client::Credentials;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

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
    pub fn new(servers: &str, credentials: &Credentials, reason: &str) -> Result<AdminClient> {
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        if let Some(tls) = credentials.tls() {
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_pem(&tls.ca).context("--ca is not a PEM certificate")?,
            );
        }
        let urls: Vec<String> = drover::client::server_list(servers)
            .iter()
            .map(|s| credentials.url(s).trim_end_matches('/').to_string())
            .collect();
        if urls.is_empty() {
            bail!("--server names no address");
        }
        Ok(AdminClient {
            http: builder.build().context("cannot set up the HTTP client")?,
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
    ) -> Result<reqwest::Response> {
        let mut last = None;
        for base in &self.urls {
            let url = format!("{base}{path}");
            let mut req = self.http.request(method.clone(), &url);
            if let Some(a) = &self.authorization {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            if !self.reason.is_empty() {
                req = req.header(drover::api::auth::REASON_HEADER, &self.reason);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(resp)
                    if resp.status() == StatusCode::SERVICE_UNAVAILABLE && self.urls.len() > 1 =>
                {
                    last = Some(error_of(resp, &url).await);
                }
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => return Err(error_of(resp, &url).await),
                Err(e) => {
                    let chain = drover::wire::error_chain(&e);
                    last = Some(
                        match drover::wire::connection_hint(Some(base), &chain, self.has_ca) {
                            Some(fix) => anyhow::anyhow!("cannot reach {url}: {fix} ({chain})"),
                            None => anyhow::anyhow!(
                                "cannot reach {url}: {chain}; is a drover node running there?"
                            ),
                        },
                    )
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no server to send to")))
    }

    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let resp = self.send(method, path, body).await?;
        let url = resp.url().to_string();
        resp.json().await.with_context(|| {
            format!("{url} did not answer the JSON this drover expects (a different version?)")
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call::<(), T>(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call::<(), T>(Method::DELETE, path, None).await
    }

    /// A raw answer, for downloads.
    pub async fn download(&self, path: &str) -> Result<reqwest::Response> {
        self.send::<()>(Method::GET, path, None).await
    }
}

/// An error answer as the operator should read it: status, code, message.
async fn error_of(resp: reqwest::Response, url: &str) -> anyhow::Error {
    let status = resp.status();
    match resp.json::<ErrorBody>().await {
        Ok(b) => anyhow::anyhow!("{status} ({}): {}", b.error.code, b.error.message),
        Err(_) => {
            anyhow::anyhow!("{url} answered {status} without an error body; is it a drover node?")
        }
    }
}
