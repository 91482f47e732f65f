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
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;
use tower::ServiceExt;

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

/// Serves `router` on `listener` until `shutdown`; then stops accepting,
/// lets open connections finish for up to `grace` (worker streams end once
/// their workers have reported what they hold), and closes the rest. With
/// `tls`, each connection takes the server config in effect when it comes
/// (SIGHUP may replace it: see [`super::certs::ServerTls`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<watch::Receiver<Arc<ServerConfig>>>,
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
        let acceptor = tls
            .as_ref()
            .map(|config| TlsAcceptor::from(config.borrow().clone()));
        let (router, builder, watcher) = (router.clone(), builder.clone(), graceful.watcher());
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
