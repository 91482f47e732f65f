//! SIGHUP: the node reads its config file again and takes what can change
//! while it runs (policies, tokens, the log level, the TLS certificate and
//! key it serves); it names the keys that changed and those that take a
//! restart.

use std::path::PathBuf;

use crate::config::Config;

/// Sets the log level; answers the one it replaced, if it changed.
type SetLogLevel = Box<dyn FnMut(&str) -> Option<String> + Send>;

/// What SIGHUP reloads: the config file's policies (the leader proposes
/// them to the cluster; a follower checks them against the cluster's), its
/// tokens and its log level. Other keys take a restart, and the log says
/// which changed.
pub struct Reload {
    path: PathBuf,
    driver: crate::driver::DriverHandle,
    auth: crate::api::auth::Auth,
    /// Sets the log level; answers the one it replaced, if it changed.
    set_log_level: SetLogLevel,
    /// The config in effect, to say what a new file changes.
    current: Config,
    /// The TLS server config new connections take; None without `[tls]`.
    certs: Option<std::sync::Arc<crate::api::certs::ServerTls>>,
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
    "tls.cert",
    "tls.key",
    "tls.ca",
];

impl Reload {
    /// A reload of the file at `path` for the node whose config in effect
    /// is `current`.
    pub fn new(
        path: PathBuf,
        driver: crate::driver::DriverHandle,
        auth: crate::api::auth::Auth,
        current: Config,
        set_log_level: impl FnMut(&str) -> Option<String> + Send + 'static,
    ) -> Reload {
        Reload {
            path,
            driver,
            auth,
            set_log_level: Box::new(set_log_level),
            current,
            certs: None,
        }
    }

    /// Reads the `[tls]` files again at each SIGHUP (their paths may be the
    /// same and their contents new: a renewed certificate) into `certs`.
    pub fn with_certs(
        mut self,
        certs: Option<std::sync::Arc<crate::api::certs::ServerTls>>,
    ) -> Reload {
        self.certs = certs;
        self
    }

    /// Reads the file again at every SIGHUP, from this call on (the
    /// signal's default would end the process), until the process ends.
    pub fn on_sighup(mut self) -> impl std::future::Future<Output = ()> + Send {
        let hup = hangup();
        async move {
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
        self.driver
            .set_policies(new.policies(), new.source_sha256.clone());
        match self.auth.reload_tokens(&new) {
            Ok(t) if t.added.is_empty() && t.removed.is_empty() => {}
            Ok(t) => {
                tracing::info!(event = "tokens_reloaded", added = ?t.added, removed = ?t.removed, tokens = new.tokens.len(), "the node checks requests against the new [[tokens]]")
            }
            Err(e) => tracing::error!(event = "tokens_reload_refused", reason = %e),
        }
        self.reload_certs(&new);
        if let Some(was) = (self.set_log_level)(&new.log.level) {
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

    /// New connections take the certificate and key the files hold now; a
    /// file that does not read keeps those in effect. Whether peers must
    /// show a certificate (`peer_mtls`) and TLS itself take a restart.
    fn reload_certs(&mut self, new: &Config) {
        let (Some(certs), Some(current), Some(files)) =
            (&self.certs, self.current.tls.as_mut(), new.tls.as_ref())
        else {
            return;
        };
        let files = crate::config::Tls {
            peer_mtls: current.peer_mtls,
            ..files.clone()
        };
        match certs.reload(&files) {
            Ok(expires) => {
                tracing::info!(event = "tls_reloaded", cert = %files.cert.display(), expires = %crate::api::certs::rfc3339(expires), "new connections get the certificate the files hold now");
                *current = files;
            }
            Err(e) => {
                tracing::error!(event = "tls_reload_failed", error = %e, "kept the certificate in effect")
            }
        }
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

/// SIGHUP, handled from this call on (its default would end the process).
fn hangup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup()).ok()
}
