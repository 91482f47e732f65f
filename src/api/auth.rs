//! Who may call what: bearer tokens with roles, checked in one place for
//! HTTP and gRPC alike (a middleware in front of both), and a rate limit per
//! token. Every route names its [`Access`] where it is declared; a path no
//! rule names needs an admin token, so a route added without thought is
//! closed, not open.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultDirectRateLimiter, Quota};

use crate::config::{Config, Role};
use crate::error::Error;
use crate::token::TokenHash;

pub use crate::wire::REASON_HEADER;
/// Characters of a reason kept.
const MAX_REASON: usize = 1024;

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: the probes.
    Open,
    /// `/metrics`: open unless `protect_metrics`, then a read token.
    Metrics,
    /// Any valid token (`Ping`).
    Any,
    /// The read role or above (`GET` views).
    Read,
    /// The operate role or admin (pause, drain, replay, clear stuck jobs).
    Operate,
    /// Admin only (membership, policies, backups, restore).
    Admin,
    /// Enqueue: producers (and admins).
    Produce,
    /// Read one job: the read roles and producers.
    ReadJob,
    /// Cancel a job: operate and admin, and a producer for the jobs it
    /// enqueued (the handler checks whose job it is).
    Cancel,
    /// The worker stream.
    Work,
    /// Raft traffic and forwarding between nodes.
    Peer,
}

impl Access {
    /// Whether a caller with `role` passes. [`Access::Open`] needs no
    /// caller at all; see [`Auth::check`].
    pub fn allows(self, role: Role) -> bool {
        use Role as R;
        match self {
            Access::Open | Access::Any => true,
            Access::Metrics | Access::Read => matches!(role, R::Read | R::Operate | R::Admin),
            Access::Operate => matches!(role, R::Operate | R::Admin),
            Access::Admin => role == R::Admin,
            Access::Produce => matches!(role, R::Producer | R::Admin),
            Access::ReadJob => matches!(role, R::Read | R::Operate | R::Admin | R::Producer),
            Access::Cancel => matches!(role, R::Operate | R::Admin | R::Producer),
            Access::Work => role == R::Worker,
            Access::Peer => role == R::Peer,
        }
    }
}

/// The gRPC methods and what they need. `tests/auth.rs` checks that every
/// `rpc` of the proto is here.
pub const GRPC_ROUTES: &[(&str, Access)] = &[
    ("/drover.v1.ProducerService/Enqueue", Access::Produce),
    ("/drover.v1.ProducerService/EnqueueStream", Access::Produce),
    ("/drover.v1.ProducerService/GetJob", Access::ReadJob),
    ("/drover.v1.ProducerService/Cancel", Access::Cancel),
    ("/drover.v1.ProducerService/Ping", Access::Any),
    ("/drover.v1.WorkerService/Work", Access::Work),
    ("/drover.v1.PeerService/Raft", Access::Peer),
    ("/drover.v1.PeerService/Forward", Access::Peer),
    ("/drover.v1.PeerService/Members", Access::Peer),
    ("/drover.v1.PeerService/InstallSnapshot", Access::Peer),
    ("/drover.v1.PeerService/Workers", Access::Peer),
];

/// An HTTP route and what it needs.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The HTTP method the rule is for.
    pub method: Method,
    /// axum's syntax: `/api/v1/jobs/{id}`.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

/// Who made a request, put in its extensions for handlers (whose job,
/// who to write in the audit log).
#[derive(Clone)]
pub struct Caller {
    /// The token's name; `anonymous` when the node has no tokens.
    pub name: String,
    /// None when the node has no tokens (loopback only: all may do all).
    pub role: Option<Role>,
    /// Why, as the request's `x-drover-reason` header said (for the audit
    /// log); empty if it said nothing.
    pub reason: String,
    /// The token's limit per tenant it enqueues for, if it has one.
    tenants: Option<Arc<TenantLimiter>>,
    /// The token's own rate limit, if it has one: the middleware counts
    /// each request, and an enqueue stream each message on it.
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// The tenants, queues and worker ids it is limited to; None: all.
    scope: Option<Arc<super::scope::Scope>>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish()
    }
}

type TenantLimiter = governor::DefaultKeyedRateLimiter<String>;
/// Tenants tracked per token before idle ones are dropped.
const MAX_TENANT_KEYS: usize = 10_000;

fn quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    Some(Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate)))
}

/// The wait a limiter's refusal asks for, in whole milliseconds (at least 1).
fn wait_ms(not_until: &governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
    let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
    u64::try_from(not_until.wait_time_from(now).as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Caller {
    /// Anyone, on a node without tokens.
    pub fn anonymous() -> Caller {
        Caller {
            name: "anonymous".into(),
            role: None,
            reason: String::new(),
            tenants: None,
            limiter: None,
            scope: None,
        }
    }

    /// The node itself, acting by a rule of its config (the audit log names
    /// it and what acted: `node 1 (canary judge)`).
    pub fn node_itself(node_id: u64, what: &str) -> Caller {
        Caller {
            name: format!("node {node_id} ({what})"),
            role: Some(Role::Admin),
            ..Caller::anonymous()
        }
    }

    /// The same caller, giving `reason` for what it does next.
    pub fn with_reason(mut self, reason: String) -> Caller {
        self.reason = reason;
        self
    }

    /// Refuses a job of `tenant` in `queue` outside the token's scope.
    pub fn check_job_scope(&self, tenant: &str, queue: &str) -> Result<(), Error> {
        match &self.scope {
            Some(s) => s.check_job(tenant, queue),
            None => Ok(()),
        }
    }

    /// Refuses a worker outside the token's scope: an id it may not take,
    /// or a queue it may not serve.
    pub fn check_worker_scope(&self, worker_id: &str, queues: &[String]) -> Result<(), Error> {
        let Some(s) = &self.scope else {
            return Ok(());
        };
        s.check_worker_id(worker_id)?;
        queues.iter().try_for_each(|q| s.check_queue(q))
    }

    /// Whether jobs of `tenant` are this caller's to see and act on.
    pub fn sees_tenant(&self, tenant: &str) -> bool {
        self.scope.as_ref().is_none_or(|s| s.admits_tenant(tenant))
    }

    /// Whether the token is limited in any way (tenants, queues, worker
    /// ids).
    pub fn scoped(&self) -> bool {
        self.scope.is_some()
    }

    /// Whether the token is limited to some tenants.
    pub fn tenant_scoped(&self) -> bool {
        self.scope.as_ref().is_some_and(|s| s.has_tenants())
    }

    /// Counts one request against the token's rate limit, if it has one.
    pub fn check_rate(&self) -> Result<(), Error> {
        match &self.limiter {
            Some(limiter) => limiter.check().map_err(|not_until| Error::RateLimited {
                token: self.name.clone(),
                retry_after_ms: wait_ms(&not_until),
            }),
            None => Ok(()),
        }
    }

    /// Counts one request for `tenant` against the token's per-tenant
    /// limit (`tenant_rate_limit`), if it has one.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), Error> {
        let Some(limiter) = &self.tenants else {
            return Ok(());
        };
        // Keys of tenants not seen for a while are dropped, so the map
        // stays as small as the set of active tenants.
        if limiter.len() > MAX_TENANT_KEYS {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter
            .check_key(&tenant.to_string())
            .map_err(|not_until| Error::RateLimited {
                token: format!("{} (tenant {tenant:?})", self.name),
                retry_after_ms: wait_ms(&not_until),
            })
    }

    /// The audit record of an action this caller takes.
    pub fn audit(&self, action: &str, target: String) -> crate::command::AuditRecord {
        crate::command::AuditRecord {
            who: self.name.clone(),
            role: self
                .role
                .map(|r| r.as_str().to_string())
                .unwrap_or_default(),
            action: action.to_string(),
            target,
            reason: self.reason.clone(),
            outcome: String::new(),
        }
    }

    /// The label a producer's jobs carry, so it may cancel them later.
    pub const OWNER_LABEL: &'static str = crate::job::OWNER_LABEL;

    /// Whether this caller is a producer, which acts only on the jobs it
    /// enqueued.
    pub fn is_producer(&self) -> bool {
        self.role == Some(Role::Producer)
    }
}

/// The caller the middleware put in a gRPC request. Its absence means the
/// service runs without the middleware: refuse rather than guess.
pub fn caller_of<T>(req: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
    req.extensions().get::<Caller>().cloned().ok_or_else(|| {
        tonic::Status::unauthenticated(
            "the request passed no authentication (a bug: the auth layer is missing)",
        )
    })
}

struct Token {
    caller: Caller,
    role: Role,
}

/// The node's tokens and rules, shared by every request.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    /// Replaced whole by [`Auth::reload_tokens`] (SIGHUP).
    tokens: std::sync::RwLock<HashMap<TokenHash, Token>>,
    http: matchit::Router<Vec<(Method, Access)>>,
    grpc: HashMap<&'static str, Access>,
    protect_metrics: bool,
    /// Peer traffic needs a client certificate the cluster CA signed.
    peer_mtls: bool,
}

/// What a token reload changed, by token name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TokenChange {
    /// Tokens now taken that were not before (new or changed).
    pub added: Vec<String>,
    /// Tokens no longer taken (gone or changed).
    pub removed: Vec<String>,
}

/// The callers of a config's `[[tokens]]`, by hash.
fn tokens_of(config: &Config) -> HashMap<TokenHash, Token> {
    config
        .tokens
        .iter()
        .filter_map(|t| {
            // Validated at start; a bad hash cannot match anything anyway.
            let hash = crate::token::parse_hash(&t.hash).ok()?;
            let caller = Caller {
                name: t.name.clone(),
                role: Some(t.role),
                reason: String::new(),
                tenants: quota(t.tenant_rate_limit, t.tenant_burst)
                    .map(|q| Arc::new(governor::RateLimiter::keyed(q))),
                limiter: quota(t.rate_limit, t.burst)
                    .map(|q| Arc::new(governor::RateLimiter::direct(q))),
                scope: super::scope::Scope::of(t).map(Arc::new),
            };
            Some((
                hash,
                Token {
                    caller,
                    role: t.role,
                },
            ))
        })
        .collect()
}

impl Auth {
    /// The checks of `config`'s tokens, for the gRPC services and the HTTP
    /// routes `http_rules` lists.
    pub fn new(config: &Config, http_rules: &[Rule]) -> Auth {
        let tokens = std::sync::RwLock::new(tokens_of(config));
        let mut by_path: HashMap<&'static str, Vec<(Method, Access)>> = HashMap::new();
        for r in http_rules {
            by_path
                .entry(r.path)
                .or_default()
                .push((r.method.clone(), r.access));
        }
        let mut http = matchit::Router::new();
        for (path, methods) in by_path {
            // The router took the same paths, so they are valid here too.
            let _ = http.insert(path, methods);
        }
        Auth {
            inner: Arc::new(Inner {
                tokens,
                http,
                grpc: GRPC_ROUTES.iter().copied().collect(),
                protect_metrics: config.protect_metrics,
                peer_mtls: config.tls.as_ref().is_some_and(|t| t.peer_mtls),
            }),
        }
    }

    /// What a request needs: its rule, or admin when no rule names it.
    pub fn access(&self, method: &Method, path: &str) -> Access {
        if let Some(a) = self.inner.grpc.get(path) {
            return *a;
        }
        let rule = self.inner.http.at(path).ok().and_then(|m| {
            m.value
                .iter()
                .find(|(rm, _)| rm == method || (method == Method::HEAD && rm == Method::GET))
                .map(|(_, a)| *a)
        });
        match rule {
            Some(Access::Metrics) if !self.inner.protect_metrics => Access::Open,
            Some(a) => a,
            None => Access::Admin,
        }
    }

    /// Takes the `[[tokens]]` of `config` (validated) in place of the
    /// current ones: requests from now on are checked against them. A node
    /// with tokens is not opened to anyone by a config without any: that
    /// takes a restart, where the start checks its addresses.
    pub fn reload_tokens(&self, config: &Config) -> Result<TokenChange, String> {
        let fresh = tokens_of(config);
        let mut tokens = self.inner.tokens.write().unwrap_or_else(|e| e.into_inner());
        if fresh.is_empty() && !tokens.is_empty() {
            return Err("the config has no [[tokens]]: a node is opened to anyone only by a restart; the tokens in effect stay".into());
        }
        if !fresh.is_empty() && tokens.is_empty() {
            // Its peers' traffic would need the peer token, which this
            // node's own peer connections were not set up with.
            return Err("the node started without [[tokens]]: turning tokens on takes a restart (with peer_token), or its peers' traffic would be refused; it stays open".into());
        }
        let names = |m: &HashMap<TokenHash, Token>| -> std::collections::BTreeSet<String> {
            m.values().map(|t| t.caller.name.clone()).collect()
        };
        let (before, after) = (names(&tokens), names(&fresh));
        *tokens = fresh;
        Ok(TokenChange {
            added: after.difference(&before).cloned().collect(),
            removed: before.difference(&after).cloned().collect(),
        })
    }

    /// Checks a request's `authorization` value against what it needs.
    pub fn check(&self, access: Access, authorization: Option<&str>) -> Result<Caller, Error> {
        let tokens = self.inner.tokens.read().unwrap_or_else(|e| e.into_inner());
        if tokens.is_empty() || access == Access::Open {
            return Ok(Caller::anonymous());
        }
        let presented = authorization
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| {
                Error::Unauthenticated(
                    "this needs a token: send `Authorization: Bearer TOKEN` (the CLI: --token or DROVER_TOKEN)".into(),
                )
            })?;
        let token = tokens
            .get(&crate::token::hash(presented))
            .ok_or_else(|| {
                Error::Unauthenticated(
                    "the token is not one this node knows; check it against the [[tokens]] in its config".into(),
                )
            })?;
        let role = token.role;
        if !access.allows(role) {
            return Err(Error::PermissionDenied(format!(
                "token {:?} has role {}, which may not do this (it needs {})",
                token.caller.name,
                role.as_str(),
                access.needs()
            )));
        }
        token.caller.check_rate()?;
        Ok(token.caller.clone())
    }
}

impl Access {
    /// The roles that pass, for an error message.
    fn needs(self) -> &'static str {
        match self {
            Access::Open | Access::Any => "any token",
            Access::Metrics | Access::Read => "read, operate or admin",
            Access::Operate => "operate or admin",
            Access::Admin => "admin",
            Access::Produce => "producer or admin",
            Access::ReadJob => "read, operate, admin or producer",
            Access::Cancel => "operate, admin, or the producer that enqueued the job",
            Access::Work => "worker",
            Access::Peer => "peer",
        }
    }
}

/// Whether a request is a gRPC call (its errors are statuses, not JSON).
pub fn is_grpc(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The middleware: refuses a request its caller may not make (HTTP 401,
/// 403, 429 in the admin API's error shape; gRPC UNAUTHENTICATED,
/// PERMISSION_DENIED, RESOURCE_EXHAUSTED), and hands the [`Caller`] on.
pub async fn middleware(State(auth): State<Auth>, mut req: Request, next: Next) -> Response {
    let access = auth.access(req.method(), req.uri().path());
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let certified = req
        .extensions()
        .get::<crate::api::listen::ConnInfo>()
        .is_some_and(|c| c.verified_client_cert);
    let checked = if access == Access::Peer && auth.inner.peer_mtls && !certified {
        Err(Error::Unauthenticated(
            "peer traffic needs a client certificate signed by the cluster CA (tls.peer_mtls is on)".into(),
        ))
    } else {
        auth.check(access, header)
    };
    match checked {
        Ok(mut caller) => {
            if let Some(r) = req
                .headers()
                .get(REASON_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                caller.reason = r.chars().take(MAX_REASON).collect();
            }
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            // Counted, and logged at debug: unauthenticated traffic must not
            // be able to flood the log.
            metrics::counter!("drover_requests_refused_total", "code" => e.code()).increment(1);
            tracing::debug!(event = "request_refused", path = %req.uri().path(), code = e.code(), reason = %e, "request refused");
            if is_grpc(req.headers()) {
                tonic::Status::from(e).into_http()
            } else {
                e.into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_reach_what_their_access_names_and_nothing_else() {
        use Role as R;
        let table = [
            (Access::Read, vec![R::Read, R::Operate, R::Admin]),
            (Access::Operate, vec![R::Operate, R::Admin]),
            (Access::Admin, vec![R::Admin]),
            (Access::Produce, vec![R::Producer, R::Admin]),
            (
                Access::ReadJob,
                vec![R::Read, R::Operate, R::Admin, R::Producer],
            ),
            (Access::Cancel, vec![R::Operate, R::Admin, R::Producer]),
            (Access::Work, vec![R::Worker]),
            (Access::Peer, vec![R::Peer]),
        ];
        for (access, allowed) in table {
            for role in Role::ALL {
                assert_eq!(
                    access.allows(role),
                    allowed.contains(&role),
                    "{access:?} {role:?}"
                );
            }
        }
    }
}
