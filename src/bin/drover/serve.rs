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
        let reload = Reload {
            path,
            driver: node.app.driver.clone(),
            auth: node.auth.clone(),
            log_level,
            current: (*node.app.config).clone(),
        };
        tokio::spawn(reload.on_sighup(hangup()));
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

/// What SIGHUP reloads: the config file's policies (the leader proposes
/// them to the cluster; a follower checks them against the cluster's), its
/// tokens and its log level. Other keys take a restart, and the log says
/// which changed.
struct Reload {
    path: PathBuf,
    driver: drover::driver::DriverHandle,
    auth: drover::api::auth::Auth,
    log_level: LogLevel,
    /// The config in effect, to say what a new file changes.
    current: Config,
}

/// Keys SIGHUP takes at run time: policies, tokens and the log level.
const RELOADED: &[&str] = &[
    "jobs",
    "queues",
    "retry",
    "tenants",
    "budgets",
    "schedules",
    "limits.keys",
    "limits.max_pending",
    "tokens",
    "log.level",
];

impl Reload {
    async fn on_sighup(mut self, hup: Option<tokio::signal::unix::Signal>) {
        let Some(mut hup) = hup else {
            return;
        };
        while hup.recv().await.is_some() {
            match Config::from_file(&self.path).and_then(|c| c.validate().map(|()| c)) {
                Ok(c) => self.apply(c),
                Err(e) => {
                    tracing::error!(event = "config_reload_failed", path = %self.path.display(), error = %e, "kept the config in effect: the file is not valid")
                }
            }
        }
    }

    fn apply(&mut self, mut new: Config) {
        // Set on the command line, not in the file.
        new.data_dir = self.current.data_dir.clone();
        new.grpc_addr = self.current.grpc_addr;
        new.http_addr = self.current.http_addr;
        new.node_id = self.current.node_id;
        new.entry_version = self.current.entry_version;
        let changed = changed_keys(&self.current, &new);
        tracing::info!(event = "config_reloaded", path = %self.path.display(), changed = ?changed, "read the config file again");
        self.driver.set_policies(new.policies());
        match self.auth.reload_tokens(&new) {
            Ok(t) if t.added.is_empty() && t.removed.is_empty() => {}
            Ok(t) => {
                tracing::info!(event = "tokens_reloaded", added = ?t.added, removed = ?t.removed, tokens = new.tokens.len(), "the node checks requests against the new [[tokens]]")
            }
            Err(e) => tracing::error!(event = "tokens_reload_refused", reason = %e),
        }
        if let Some(was) = self.log_level.set(&new.log.level) {
            tracing::info!(event = "log_level_changed", from = %was, to = %new.log.level, "log level changed");
        }
        let restart: Vec<&String> = changed
            .iter()
            .filter(|k| {
                !RELOADED
                    .iter()
                    .any(|r| k.as_str() == *r || k.starts_with(&format!("{r}.")))
            })
            .collect();
        if !restart.is_empty() {
            tracing::warn!(event = "config_restart_needed", keys = ?restart, "these keys changed in the file and take effect only at a restart");
        }
        // What is in effect now: the reloaded parts of the file.
        self.current.jobs = new.jobs;
        self.current.queues = new.queues;
        self.current.retry = new.retry;
        self.current.tenants = new.tenants;
        self.current.budgets = new.budgets;
        self.current.schedules = new.schedules;
        self.current.limits.keys = new.limits.keys;
        self.current.limits.max_pending = new.limits.max_pending;
        if !new.tokens.is_empty() {
            self.current.tokens = new.tokens;
        }
        self.current.log.level = new.log.level;
    }
}

/// The keys (two levels deep: `limits.max_pending`) whose values differ.
fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    diff("", &a, &b, 2, &mut out);
    out
}

fn diff(
    prefix: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
    depth: u32,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) if depth > 0 => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let null = Value::Null;
                diff(
                    &path,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    depth - 1,
                    out,
                );
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

pub use drover::shutdown::terminated as wait_for_signal;

/// SIGHUP, handled from this call on (its default would end the process).
fn hangup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup()).ok()
}
