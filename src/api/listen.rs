//! One listener for everything: gRPC (producers, workers, peers) and HTTP
//! (admin API, probes) on the same port, plain or TLS, as etcd serves both
//! on its client port. Each connection is sniffed by hyper (HTTP/2 preface
//! or HTTP/1.1) and every request goes through one router, so the auth
//! middleware sees all of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;
use tower::ServiceExt;

use crate::config::{ConfigError, Tls};

/// What the connection a request came on says about its sender.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer address of the TCP connection (a proxy's, behind one).
    pub remote: SocketAddr,
    /// The client presented a certificate the cluster CA signed (only
    /// asked for when `tls.peer_mtls` is on).
    pub verified_client_cert: bool,
}

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_error(key: &'static str, path: &std::path::Path, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: format!("{}: {e}", path.display()),
    }
}

fn read_certs(
    key: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
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

/// Serves `router` on `listener` until `shutdown`; then stops accepting,
/// lets open connections finish for up to `grace` (worker streams end once
/// their workers have reported what they hold), and closes the rest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        // Finds connections of peers and clients that died without closing
        // them, which long-lived streams would keep.
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (tcp, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait, not spin.
                tracing::warn!(event = "accept_failed", error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without it, Nagle held the second write of an answer until the
        // peer's delayed ACK (40 ms) came.
        let _ = tcp.set_nodelay(true);
        let (router, builder, acceptor, watcher) = (
            router.clone(),
            builder.clone(),
            acceptor.clone(),
            graceful.watcher(),
        );
        conns.spawn(async move {
            match acceptor {
                None => {
                    let info = ConnInfo {
                        remote,
                        verified_client_cert: false,
                    };
                    let tonic_info = tcp.connect_info();
                    let service = with_conn_info(router, info, tonic_info);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(event = "tls_handshake_failed", %remote, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => return,
                    };
                    let info = ConnInfo {
                        remote,
                        verified_client_cert: stream.get_ref().1.peer_certificates().is_some(),
                    };
                    let tonic_info = stream.connect_info();
                    let service = with_conn_info(router, info, tonic_info);
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!(
            event = "connections_closed",
            open = conns.len(),
            "closing connections still open after the shutdown grace"
        );
    }
    conns.abort_all();
}

/// The router with the connection's facts in every request's extensions
/// (ours for the auth middleware, tonic's for `Request::remote_addr`).
fn with_conn_info<T: Clone + Send + Sync + 'static>(
    router: Router,
    info: ConnInfo,
    tonic_info: T,
) -> hyper_util::service::TowerToHyperService<
    impl tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone,
> {
    hyper_util::service::TowerToHyperService::new(router.map_request(
        move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(info.clone());
            req.extensions_mut().insert(tonic_info.clone());
            req
        },
    ))
}
