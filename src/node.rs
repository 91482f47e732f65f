//! A running node: opens the data dir, starts the raft driver, serves gRPC
//! and HTTP, and shuts all of it down in order.
//!
//! Shutdown: stop accepting connections, tell connected workers to finish
//! what they hold (they may complete it within `shutdown_grace`), then stop
//! the driver, which answers anything still waiting and flushes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::api::{self, App};
use crate::cluster::router::Router;
use crate::config::Config;
use crate::driver::{self, DriverError};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::proto::v1::peer_service_server::PeerServiceServer;
use crate::proto::v1::producer_service_server::ProducerServiceServer;
use crate::proto::v1::worker_service_server::WorkerServiceServer;
use crate::store;
use crate::workers::WorkerRegistry;

/// A running node, from [`Node::start`] until [`Node::wait`] returns.
pub struct Node {
    /// The address it serves gRPC on, with the port it got when `grpc_addr`
    /// asked for port 0.
    pub grpc_addr: SocketAddr,
    /// The address it serves HTTP on, with the port it got when `http_addr`
    /// asked for port 0.
    pub http_addr: SocketAddr,
    /// What its APIs share: the driver handle, config, workers and router.
    pub app: App,
    /// Who may call what; its tokens may be reloaded (SIGHUP).
    pub auth: api::auth::Auth,
    /// The TLS server config new connections take (SIGHUP may replace it);
    /// None without `[tls]`.
    pub server_tls: Option<Arc<api::certs::ServerTls>>,
    /// Set to ask the node to stop; `shutdown_tx` follows once a leader
    /// has handed its lead over (its peers must still reach it for that).
    stop_tx: watch::Sender<bool>,
    shutdown_tx: watch::Sender<bool>,
    grpc: JoinHandle<()>,
    http: JoinHandle<()>,
    driver_done: oneshot::Receiver<Result<(), DriverError>>,
    driver_stop: watch::Sender<bool>,
    grace: Duration,
}

/// How long a stopping leader waits for its lead to move.
const HANDOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { key, addr, source })
}

impl Node {
    /// Starts a node; returns once it listens on both addresses.
    pub async fn start(config: Config) -> Result<Node, Error> {
        config.validate()?;
        config.peer_credentials()?;
        let keys = config.sealing_keys()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        // Before anything opens the data dir: keys that do not fit it stop
        // the node with nothing changed.
        keys.check_data_dir(&config.data_dir)?;
        let db = store::open_db(&config.data_dir, config.storage.cache_capacity_bytes)?;
        let grpc_listener = bind("grpc_addr", config.grpc_addr).await?;
        let http_listener = bind("http_addr", config.http_addr).await?;
        let grpc_addr = grpc_listener.local_addr().map_err(|source| Error::Bind {
            key: "grpc_addr",
            addr: config.grpc_addr,
            source,
        })?;
        let http_addr = http_listener.local_addr().map_err(|source| Error::Bind {
            key: "http_addr",
            addr: config.http_addr,
            source,
        })?;

        // Two signals: `shutdown` tells the APIs and workers; `driver_stop`
        // comes later so completions sent during the grace period still commit.
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (driver_stop, driver_stop_rx) = watch::channel(false);
        let (handle, driver_done) = driver::start(&config, &db, driver_stop_rx)?;
        let grace = config.shutdown_grace;
        let router = Router::new(&config, handle.clone());
        let worker_labels = crate::metrics::WorkerLabels::new(
            config
                .metrics
                .worker_series
                .unwrap_or(crate::metrics::DEFAULT_WORKER_SERIES),
        );
        let tracer = crate::otlp::NodeTracer::start(&config.tracing.otlp_endpoint, config.node_id)?;
        let app = App {
            worker_labels: worker_labels.clone(),
            chaos: Default::default(),
            router,
            driver: handle,
            config: Arc::new(config),
            workers: WorkerRegistry::default(),
            shutdown: shutdown.clone(),
            keys: Arc::new(keys),
            workers_cache: Default::default(),
            tracer,
        };
        let metrics = Metrics::install().with_worker_labels(worker_labels);
        tokio::spawn(crate::resources::watch(
            app.driver.pressure().clone(),
            shutdown.clone(),
        ));
        tokio::spawn(api::canary::watch(app.clone(), shutdown.clone()));

        // Clients may send gzip (large payloads; the client decides per
        // connection). Leases, which carry payloads, go back gzipped to a
        // worker that says it takes gzip; producer answers (ids) never.
        use tonic::codec::CompressionEncoding::Gzip;
        let producer = ProducerServiceServer::new(api::producer::Producer { app: app.clone() })
            .max_decoding_message_size(crate::wire::MAX_GRPC_MESSAGE)
            .accept_compressed(Gzip);
        let worker = WorkerServiceServer::new(api::worker::Worker { app: app.clone() })
            .max_decoding_message_size(crate::wire::MAX_GRPC_MESSAGE)
            .accept_compressed(Gzip)
            .send_compressed(Gzip);
        let peer = PeerServiceServer::new(api::peer::Peer { app: app.clone() })
            .max_decoding_message_size(crate::wire::MAX_GRPC_MESSAGE)
            .max_encoding_message_size(crate::wire::MAX_GRPC_MESSAGE);
        // Both ports serve the same: gRPC and the admin API, behind one auth
        // middleware. One address per node is enough for every client;
        // `http_addr` stays for the scrapers and load balancers set up on it.
        let http_routes = api::http::router(app.clone(), metrics);
        let auth = api::auth::Auth::new(&app.config, &api::http::rules());
        let router = tonic::service::Routes::from(http_routes)
            .add_service(producer)
            .add_service(worker)
            .add_service(peer)
            .prepare()
            .into_axum_router()
            .layer(tower::util::MapResponseLayer::new(
                crate::wire::framing_errors_as_invalid_argument::<axum::body::Body>,
            ));
        let router = api::http::with_auth(router, auth.clone())
            // Outside auth, so refusals count too.
            .layer(axum::middleware::from_fn(api::request_metrics::track));
        let server_tls = match &app.config.tls {
            Some(t) => Some(Arc::new(api::certs::ServerTls::new(t)?)),
            None => None,
        };
        if server_tls.is_some() {
            tokio::spawn(api::certs::watch_peers(
                app.driver.clone(),
                shutdown.clone(),
            ));
        }
        let tls = server_tls.as_ref().map(|t| t.subscribe());
        let grpc = tokio::spawn(api::listen::serve(
            grpc_listener,
            router.clone(),
            tls.clone(),
            shutdown.clone(),
            grace,
        ));
        let http = tokio::spawn(api::listen::serve(
            http_listener,
            router,
            tls,
            shutdown.clone(),
            grace,
        ));
        tracing::info!(event = "node_started", node_id = app.config.node_id, %grpc_addr, %http_addr, "node started");
        Ok(Node {
            grpc_addr,
            http_addr,
            app,
            auth,
            server_tls,
            stop_tx: watch::channel(false).0,
            shutdown_tx,
            grpc,
            http,
            driver_done,
            driver_stop,
            grace,
        })
    }

    /// A leader that stops hands its lead to its most caught-up reachable
    /// voter first, so writes move on at once instead of after an election
    /// timeout; results its workers send while they finish are forwarded
    /// there.
    async fn hand_over_leadership(&self) {
        let status = self.app.driver.status();
        if !status.is_leader() {
            return;
        }
        let Some(to) = status
            .members
            .iter()
            .filter(|m| m.id != status.node_id && m.voter && m.reachable == Some(true))
            .max_by_key(|m| m.match_index.unwrap_or(0))
            .map(|m| m.id)
        else {
            return;
        };
        let moved = tokio::time::timeout(
            HANDOVER_WAIT,
            crate::cluster::admin::transfer_leader(&self.app.router, to),
        )
        .await;
        match moved {
            Ok(Ok(_)) => {
                tracing::info!(
                    event = "leadership_transferred",
                    to,
                    "handed the lead over before stopping"
                )
            }
            Ok(Err(e)) => {
                tracing::warn!(event = "leadership_transfer_failed", to, error = %e, "stopping as leader: the others elect one")
            }
            Err(_) => {
                tracing::warn!(
                    event = "leadership_transfer_failed",
                    to,
                    "the lead did not move in time; stopping as leader: the others elect one"
                )
            }
        }
    }

    /// Asks the node to stop; [`Node::wait`] returns when it has.
    pub fn shutdown(&self) {
        self.stop_tx.send_replace(true);
    }

    /// A handle that can ask the node to stop from elsewhere.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.stop_tx.clone()
    }

    /// Runs until shutdown is asked for or the driver fails, then stops
    /// everything in order: a leader hands its lead over, then the APIs
    /// and workers stop within the grace, then the driver.
    pub async fn wait(mut self) -> Result<(), Error> {
        let mut stop = self.stop_tx.subscribe();
        let mut removed_rx = self.app.driver.removed_watch();
        let wait_when_removed = self.app.config.wait_when_removed;
        let mut removed = None;
        let driver_failed = tokio::select! {
            _ = stop.wait_for(|s| *s) => None,
            r = &mut self.driver_done => Some(r),
            r = removed_rx.wait_for(|r| r.is_some()), if !wait_when_removed => {
                removed = r.ok().and_then(|r| r.clone());
                None
            }
        };
        if let Some(r) = driver_failed {
            self.shutdown_tx.send_replace(true);
            return Err(match r {
                Ok(Err(e)) => Error::driver_stopped(&self.app.config.data_dir, &e),
                _ => Error::Driver("the driver thread ended unexpectedly".into()),
            });
        }
        tracing::info!(
            event = "node_stopping",
            grace_ms = self.grace.as_millis() as u64,
            "stopping: workers finish held jobs"
        );
        self.hand_over_leadership().await;
        self.shutdown_tx.send_replace(true);
        // Both listeners stop within the grace (streams end when their
        // workers finish; what is left is closed), and at the same time.
        let _ = tokio::join!(&mut self.grpc, &mut self.http);
        if self.app.tracer.is_on() {
            // The spans still batched go out; a collector that does not
            // answer holds the stop up for a few seconds at most.
            let tracer = self.app.tracer.clone();
            let flush = tokio::task::spawn_blocking(move || tracer.shutdown());
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), flush).await;
        }
        self.driver_stop.send_replace(true);
        if let Ok(Err(e)) = self.driver_done.await {
            return Err(Error::driver_stopped(&self.app.config.data_dir, &e));
        }
        tracing::info!(event = "node_stopped", "node stopped");
        match removed {
            Some(reason) => Err(Error::Removed {
                node_id: self.app.config.node_id,
                reason,
            }),
            None => Ok(()),
        }
    }
}
