//! `drover serve`: runs a node until SIGTERM or ctrl-c.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use drover::Config;

#[derive(Args)]
pub struct ServeArgs {
    /// TOML config file; every key is optional.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    grpc_addr: Option<std::net::SocketAddr>,
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
    #[arg(long)]
    node_id: Option<u64>,
    /// Join an existing cluster instead of bootstrapping one (as `join =
    /// true`): the node waits on its empty data dir until a member runs
    /// `drover cluster add`.
    #[arg(long)]
    join: bool,
    /// Simulates a build whose log entry format is N (it applies formats
    /// up to N and writes N once every voter does), for upgrade tests.
    #[arg(long, hide = true, value_parser = clap::value_parser!(u8).range(1..))]
    entry_version: Option<u8>,
}

/// `json`, `text`, or `auto`: JSON lines under systemd (which sets
/// JOURNAL_STREAM for a service whose stderr is the journal), text
/// otherwise. Text has colour only on a terminal, so a log written to a
/// file is not full of escapes.
/// Returns the handle that changes the level later (SIGHUP).
pub fn init_tracing(format: &str, level: &str) -> LogLevel {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, reload, EnvFilter};
    let from_env = std::env::var_os(EnvFilter::DEFAULT_ENV).is_some();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let json = match format {
        "auto" => std::env::var_os("JOURNAL_STREAM").is_some(),
        f => f == "json",
    };
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .init();
    }
    LogLevel {
        handle,
        level: level.to_string(),
        from_env,
    }
}

/// The log level in effect, and the way to change it.
pub struct LogLevel {
    handle: tracing_subscriber::reload::Handle<
        tracing_subscriber::EnvFilter,
        tracing_subscriber::Registry,
    >,
    level: String,
    /// RUST_LOG set the filter: it wins over the config file's level.
    from_env: bool,
}

impl LogLevel {
    /// Sets `level` if it differs from the one in effect; returns the one
    /// it replaced. The config was validated, so `level` parses.
    fn set(&mut self, level: &str) -> Option<String> {
        if self.from_env || level == self.level {
            return None;
        }
        let filter = tracing_subscriber::EnvFilter::try_new(level).ok()?;
        self.handle.reload(filter).ok()?;
        Some(std::mem::replace(&mut self.level, level.to_string()))
    }
}

pub async fn run(a: ServeArgs) -> Result<()> {
    let mut config = match &a.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = a.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = a.grpc_addr {
        config.grpc_addr = v;
    }
    if let Some(v) = a.http_addr {
        config.http_addr = v;
    }
    if let Some(v) = a.node_id {
        config.node_id = v;
    }
    if a.join {
        config.join = true;
    }
    if let Some(v) = a.entry_version {
        config.entry_version = v;
    }
    config.validate()?;
    let log_level = init_tracing(&config.log.format, &config.log.level);
    if config.tokens.is_empty() {
        tracing::warn!(
            event = "no_tokens",
            "no [[tokens]] configured: anyone who can reach this node's loopback ports may do anything; add tokens before exposing it"
        );
    }
    let public = !config.grpc_addr.ip().is_loopback() || !config.http_addr.ip().is_loopback();
    if public && config.tls.is_none() {
        tracing::warn!(
            event = "tokens_in_clear",
            "listening beyond loopback without [tls]: tokens and jobs cross the network in clear text"
        );
    }
    let node = drover::node::Node::start(config).await?;
    if let Some(every) = node.app.config.backup.every {
        let b = &node.app.config.backup;
        let dir = drover::backup::dir(&node.app.config);
        tracing::info!(event = "backups_scheduled", dir = %dir.display(), every = ?every, keep = b.keep, "the leader writes a backup on schedule");
        tokio::spawn(drover::backup::schedule(
            node.app.driver.clone(),
            every,
            dir,
            b.keep,
            node.app.shutdown.clone(),
        ));
    }
    tokio::spawn(drover::systemd::supervise(
        node.app.driver.clone(),
        node.app.shutdown.clone(),
    ));
    let stop = node.shutdown_handle();
    let terminated = wait_for_signal();
    tokio::spawn(async move {
        terminated.await;
        stop.send_replace(true);
    });
    if let Some(path) = a.config.clone() {
        let mut log_level = log_level;
        let reload = drover::reload::Reload::new(
            path,
            node.app.driver.clone(),
            node.auth.clone(),
            (*node.app.config).clone(),
            move |level: &str| log_level.set(level),
        )
        .with_certs(node.server_tls.clone());
        tokio::spawn(reload.on_sighup());
    }
    // One line on stdout that scripts and tests can wait for, once SIGTERM
    // and SIGHUP are handled: a signal right after it finds them in place.
    println!(
        "drover node {} ready grpc={} http={}",
        node.app.config.node_id, node.grpc_addr, node.http_addr
    );
    node.wait().await?;
    Ok(())
}

pub use drover::shutdown::terminated as wait_for_signal;
