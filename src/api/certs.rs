//! The node's certificates: the TLS server config its listeners hand each
//! new connection, read again from the files at SIGHUP (a file that does
//! not read keeps the config in effect), and when each certificate the node
//! depends on stops being valid: its own, its CA's, and what each peer
//! serves, as `drover_tls_cert_expiry_timestamp_seconds{cert}`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::sync::watch;

use crate::config::{ConfigError, Tls};

/// How often the peers' certificates are looked at once each has answered.
const PEER_CHECK_EVERY: Duration = Duration::from_secs(600);
/// How soon a peer that did not answer is tried again.
const PEER_RETRY: Duration = Duration::from_secs(10);
/// How long a look at a peer's certificate may take.
const PEER_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

fn tls_error(key: &'static str, path: &Path, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: format!("{}: {e}", path.display()),
    }
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(key, path, e))?;
    if certs.is_empty() {
        return Err(tls_error(key, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The CA certificates of `tls.ca`, as a root store.
pub fn ca_roots(tls: &Tls) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for c in read_certs("tls.ca", &tls.ca)? {
        roots.add(c).map_err(|e| tls_error("tls.ca", &tls.ca, e))?;
    }
    Ok(roots)
}

/// The node's TLS server config from its PEM files: errors name the key and
/// the file. With `peer_mtls`, clients are asked for a certificate; one the
/// CA did not sign fails the handshake, and none at all is allowed here (a
/// CLI or a worker has none) and refused later for peer traffic.
pub fn server_config(tls: &Tls) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs("tls.cert", &tls.cert)?;
    let key =
        PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| tls_error("tls.key", &tls.key, e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("tls", &tls.cert, e))?;
    let roots = ca_roots(tls)?;
    let builder = if tls.peer_mtls {
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls_error("tls.ca", &tls.ca, e))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        tls_error(
            "tls.key",
            &tls.key,
            format!("does not go with tls.cert: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// When a DER certificate stops being valid, as Unix seconds.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// When the files' certificates stop being valid: the node's own (the
/// first of `tls.cert`, the leaf) and the earliest of `tls.ca`.
pub fn file_expiry(tls: &Tls) -> Result<(i64, i64), ConfigError> {
    let unreadable = |key, path: &Path| tls_error(key, path, "is not an X.509 certificate");
    let node = read_certs("tls.cert", &tls.cert)?;
    let node = not_after(&node[0]).ok_or_else(|| unreadable("tls.cert", &tls.cert))?;
    let ca = read_certs("tls.ca", &tls.ca)?
        .iter()
        .map(not_after)
        .collect::<Option<Vec<i64>>>()
        .and_then(|all| all.into_iter().min())
        .ok_or_else(|| unreadable("tls.ca", &tls.ca))?;
    Ok((node, ca))
}

/// A Unix time as RFC 3339 in UTC, for the log and the CLI.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map_or_else(|| secs.to_string(), |d| d.to_rfc3339())
}

fn set_expiry(cert: String, at: i64) {
    metrics::gauge!(crate::metrics::TLS_CERT_EXPIRY, "cert" => cert).set(at as f64);
}

/// The server config new connections take, which SIGHUP may replace.
pub struct ServerTls {
    current: watch::Sender<Arc<ServerConfig>>,
}

impl ServerTls {
    /// The config from the files, and their expiry in the gauge.
    pub fn new(tls: &Tls) -> Result<ServerTls, ConfigError> {
        let config = server_config(tls)?;
        let expiry = file_expiry(tls)?;
        record(expiry);
        Ok(ServerTls {
            current: watch::channel(config).0,
        })
    }

    /// What listeners read the config in effect from, once per connection.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ServerConfig>> {
        self.current.subscribe()
    }

    /// Reads the files again: new connections get the new certificate;
    /// connections already open keep theirs. On an error nothing changes.
    /// Answers when the node's certificate now expires.
    pub fn reload(&self, tls: &Tls) -> Result<i64, ConfigError> {
        let config = server_config(tls)?;
        let expiry = file_expiry(tls)?;
        self.current.send_replace(config);
        record(expiry);
        Ok(expiry.0)
    }
}

fn record((node, ca): (i64, i64)) {
    set_expiry("node".to_string(), node);
    set_expiry("ca".to_string(), ca);
}

/// Looks at what each peer serves, as a client would at a handshake, and
/// keeps its expiry in the gauge as `peer-N`: every 10 minutes once each
/// has answered, every 10 seconds until then. Runs until `shutdown`.
pub async fn watch_peers(driver: crate::driver::DriverHandle, mut shutdown: watch::Receiver<bool>) {
    let Some(config) = probe_config() else {
        tracing::warn!(
            event = "peer_cert_unchecked",
            "cannot set up TLS to look at the peers' certificates"
        );
        return;
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    loop {
        let status = driver.members_status();
        let mut all_answered = true;
        for m in status
            .members
            .iter()
            .filter(|m| m.id != status.node_id && !m.addr.is_empty())
        {
            match peer_expiry(&connector, &m.addr).await {
                Ok(at) => set_expiry(format!("peer-{}", m.id), at),
                Err(e) => {
                    all_answered = false;
                    tracing::debug!(event = "peer_cert_unchecked", peer = m.id, addr = %m.addr, error = %e, "could not look at a peer's certificate");
                }
            }
        }
        let wait = if all_answered {
            PEER_CHECK_EVERY
        } else {
            PEER_RETRY
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// When the certificate the node at `addr` (host:port, or a URL) serves
/// stops being valid, read from a TLS handshake that trusts whatever it is
/// shown and sends nothing.
pub async fn served_expiry(addr: &str) -> Result<i64, String> {
    let config = probe_config().ok_or("cannot set up TLS")?;
    peer_expiry(&tokio_rustls::TlsConnector::from(config), addr).await
}

async fn peer_expiry(connector: &tokio_rustls::TlsConnector, addr: &str) -> Result<i64, String> {
    let hostport = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    let host = match hostport.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => hostport,
    };
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let look = async {
        let tcp = tokio::net::TcpStream::connect(hostport)
            .await
            .map_err(|e| e.to_string())?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        conn.peer_certificates()
            .and_then(|c| c.first())
            .and_then(not_after)
            .ok_or_else(|| "served no X.509 certificate".to_string())
    };
    tokio::time::timeout(PEER_CHECK_TIMEOUT, look)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// A client config that takes whatever certificate a peer serves: the
/// look only reads it and sends nothing, and an expired or wrongly signed
/// certificate is exactly what it must still see.
fn probe_config() -> Option<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Some(Arc::new(config))
}

#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
