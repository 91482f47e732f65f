//! What a client shows a node: a bearer token on every call, and for TLS
//! the CA it trusts (and, for mutual TLS between peers, its own
//! certificate). The CLI, the Rust clients and the peers all connect
//! through [`Credentials`], so each gets TLS and tokens the same way.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A channel whose calls carry the token.
pub type Conn = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer TOKEN` to each call.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// PEM bytes for a TLS client.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// The CA that signed the nodes' certificates.
    pub ca: Vec<u8>,
    /// This client's certificate and key, for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// What a client presents: a bearer token and TLS settings.
#[derive(Clone, Default)]
pub struct Credentials {
    token: Bearer,
    tls: Option<ClientTls>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("Credentials")
            .field("token", &self.token.0.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Credentials {
    /// A token (None or empty: send none) and TLS settings (None: plain
    /// TCP unless a URL says `https`, which then fails for want of a CA).
    pub fn new(token: Option<&str>, tls: Option<ClientTls>) -> Result<Credentials, String> {
        let token = match token.filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(
                MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| "the token holds characters a header cannot carry".to_string())?,
            ),
        };
        Ok(Credentials {
            token: Bearer(token),
            tls,
        })
    }

    /// TLS settings were given.
    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The token as an HTTP header value, for the admin API.
    pub fn authorization(&self) -> Option<&str> {
        self.token.0.as_ref().and_then(|v| v.to_str().ok())
    }

    /// The TLS settings, if any.
    pub fn tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }

    /// The URL of a node's address: as given when it has a scheme,
    /// otherwise `https://` with TLS and `http://` without.
    pub fn url(&self, addr: &str) -> String {
        if addr.contains("://") {
            addr.to_string()
        } else if self.tls.is_some() {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        }
    }

    /// The endpoint of a node's address, with TLS set up when the URL is
    /// `https`; `Err` says what is wrong.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let url = self.url(addr);
        let endpoint = Endpoint::from_shared(url.clone())
            .map(|e| e.tcp_nodelay(true))
            .map_err(|e| e.to_string())?;
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        let tls = self.tls.as_ref().ok_or_else(|| {
            format!("{url} is https, and no CA is given to check it with (--ca or DROVER_CA)")
        })?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca));
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        endpoint.tls_config(config).map_err(|e| e.to_string())
    }

    /// A channel with the token on every call.
    pub fn wrap(&self, channel: Channel) -> Conn {
        InterceptedService::new(channel, self.token.clone())
    }
}
