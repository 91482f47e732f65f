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
    /// Simulates a build whose log entry format is N (it applies formats
    /// up to N and writes N once every voter does), for upgrade tests.
    #[arg(long, hide = true, value_parser = clap::value_parser!(u8).range(1..))]
    entry_version: Option<u8>,
}

/// `json`, `text`, or `auto`: JSON lines under systemd (which sets
/// JOURNAL_STREAM for a service whose stderr is the journal), text
/// otherwise. Text has colour only on a terminal, so a log written to a
/// file is not full of escapes.
pub fn init_tracing(format: &str, level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let json = match format {
        "auto" => std::env::var_os("JOURNAL_STREAM").is_some(),
        f => f == "json",
    };
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
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
    if let Some(v) = a.entry_version {
        config.entry_version = v;
    }
    config.validate()?;
    init_tracing(&config.log.format, &config.log.level);
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
    // One line on stdout that scripts and tests can wait for.
    println!(
        "drover node {} ready grpc={} http={}",
        node.app.config.node_id, node.grpc_addr, node.http_addr
    );
    if let Some(every) = node.app.config.backup.every {
        let b = &node.app.config.backup;
        let dir = b
            .dir
            .clone()
            .unwrap_or_else(|| node.app.config.data_dir.join("backups"));
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
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.send_replace(true);
    });
    if let Some(path) = a.config.clone() {
        tokio::spawn(reload_on_sighup(path, node.app.driver.clone()));
    }
    node.wait().await?;
    Ok(())
}

/// SIGHUP re-reads the config file's policies: the leader proposes them to
/// the cluster; a follower checks them against the cluster's. Other keys
/// take a restart.
async fn reload_on_sighup(path: PathBuf, driver: drover::driver::DriverHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match Config::from_file(&path).and_then(|c| c.validate().map(|()| c)) {
            Ok(c) => {
                tracing::info!(event = "config_reloaded", path = %path.display(), "read the policies of the config file again");
                driver.set_policies(c.policies());
            }
            Err(e) => {
                tracing::error!(event = "config_reload_failed", path = %path.display(), error = %e, "kept the policies in effect: the config file is not valid")
            }
        }
    }
}

pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
