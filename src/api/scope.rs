//! What a token may touch: its tenants, its queues, and the ids its
//! workers take (`[[tokens]]` `tenants`, `queues`, `worker_prefix`). A
//! token without them reaches everything its role does.

use crate::config::TokenConfig;
use crate::error::Error;

/// One token's scope. Patterns are names, or a prefix and `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    token: String,
    tenants: Vec<String>,
    queues: Vec<String>,
    /// What its workers' ids start with; None: anything (an unscoped token).
    worker_prefix: Option<String>,
}

fn matches(patterns: &[String], name: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|p| crate::config::pattern_matches(p, name))
}

impl Scope {
    /// The scope of a `[[tokens]]` entry; None when it has none. Once a
    /// token is scoped at all, its workers' ids start with its
    /// `worker_prefix`, or else its name, so one worker token cannot claim
    /// another's worker (and the leases it holds).
    pub fn of(t: &TokenConfig) -> Option<Scope> {
        if t.tenants.is_empty() && t.queues.is_empty() && t.worker_prefix.is_none() {
            return None;
        }
        Some(Scope {
            token: t.name.clone(),
            tenants: t.tenants.clone(),
            queues: t.queues.clone(),
            worker_prefix: Some(t.worker_prefix.clone().unwrap_or_else(|| t.name.clone())),
        })
    }

    /// Whether jobs of `tenant` are this token's to see and act on.
    pub fn admits_tenant(&self, tenant: &str) -> bool {
        matches(&self.tenants, tenant)
    }

    /// Whether the token is limited to some tenants.
    pub fn has_tenants(&self) -> bool {
        !self.tenants.is_empty()
    }

    /// Refuses a job of `tenant` in `queue` outside this scope, naming the
    /// scope.
    pub fn check_job(&self, tenant: &str, queue: &str) -> Result<(), Error> {
        if !matches(&self.tenants, tenant) {
            return Err(Error::PermissionDenied(format!(
                "token {:?} may act only for tenants {:?} (its tenants scope), not tenant {tenant:?}",
                self.token, self.tenants
            )));
        }
        self.check_queue(queue)
    }

    /// Refuses a queue outside this scope, naming the scope.
    pub fn check_queue(&self, queue: &str) -> Result<(), Error> {
        if !matches(&self.queues, queue) {
            return Err(Error::PermissionDenied(format!(
                "token {:?} may use only queues {:?} (its queues scope), not queue {queue:?}",
                self.token, self.queues
            )));
        }
        Ok(())
    }

    /// Refuses a worker id this token may not take.
    pub fn check_worker_id(&self, worker_id: &str) -> Result<(), Error> {
        match &self.worker_prefix {
            Some(prefix) if !worker_id.starts_with(prefix.as_str()) => {
                Err(Error::PermissionDenied(format!(
                    "token {:?} registers only workers whose worker_id starts with {prefix:?} (its worker_prefix, else its name), not {worker_id:?}",
                    self.token
                )))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Role;

    fn token(role: Role, tenants: &[&str], queues: &[&str]) -> TokenConfig {
        TokenConfig {
            name: "t1".into(),
            role,
            hash: String::new(),
            rate_limit: 0,
            burst: 0,
            tenant_rate_limit: 0,
            tenant_burst: 0,
            tenants: tenants.iter().map(|s| s.to_string()).collect(),
            queues: queues.iter().map(|s| s.to_string()).collect(),
            worker_prefix: None,
        }
    }

    #[test]
    fn patterns_are_names_or_prefixes_and_refusals_name_the_scope() {
        assert_eq!(Scope::of(&token(Role::Producer, &[], &[])), None);
        let s = Scope::of(&token(Role::Producer, &["acme"], &["emails", "render-*"])).unwrap();
        assert!(s.check_job("acme", "emails").is_ok());
        assert!(s.check_job("acme", "render-thumbs").is_ok());
        let e = s.check_job("globex", "emails").unwrap_err().to_string();
        assert!(e.contains("tenants scope") && e.contains("globex"), "{e}");
        let e = s.check_job("acme", "billing").unwrap_err().to_string();
        assert!(e.contains("queues scope") && e.contains("billing"), "{e}");
        assert!(s.admits_tenant("acme") && !s.admits_tenant("acme2"));
        let w = Scope::of(&token(Role::Worker, &[], &["emails"])).unwrap();
        assert!(w.check_worker_id("t1-host-3").is_ok());
        assert!(w.check_worker_id("other-1").is_err());
    }

    fn token_ok(t: &TokenConfig) -> Result<(), String> {
        t.check_scope()
    }

    #[test]
    fn a_scope_a_role_cannot_use_is_refused() {
        assert!(token_ok(&token(Role::Producer, &["acme", "team-*"], &["q"])).is_ok());
        assert!(token_ok(&token(Role::Worker, &["acme"], &[])).is_err());
        assert!(token_ok(&token(Role::Operate, &[], &["q"])).is_err());
        assert!(token_ok(&token(Role::Producer, &["a*b"], &[])).is_err());
        assert!(token_ok(&token(Role::Producer, &["bad name"], &[])).is_err());
        assert!(token_ok(&token(Role::Producer, &[""], &[])).is_err());
        let mut t = token(Role::Producer, &[], &[]);
        t.worker_prefix = Some("w-".into());
        assert!(t.check_scope().is_err());
    }
}
