//! Circuit breakers per (queue, tenant, error class). `threshold` failures
//! of one class within `window` open the class's breaker, and while it is
//! open the scope's ready jobs are held (the pick skips the tenant in that
//! queue). After `cooldown` it is half-open: one job is let through; its
//! success closes the breaker, its failure opens it again. Breakers are
//! replicated (`K`+queue\0tenant\0class), timed by the log.

use super::*;
use crate::policies::BreakerPolicy;

/// (queue, tenant, error class).
pub type Scope = (String, String, String);

/// Where a circuit breaker is in its cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerState {
    /// Jobs flow; failures of its class are counted in the window.
    #[default]
    Closed,
    /// The cooldown passed: one job is let through as a probe.
    HalfOpen,
    /// The scope's ready jobs are held until the cooldown ends.
    Open,
}

impl BreakerState {
    /// `drover_breaker_state`: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    /// Its name in the API and CLI: `closed`, `half-open` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half-open",
            BreakerState::Open => "open",
        }
    }
}

/// One scope's breaker, as replicated under `K`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    /// Closed, open or half-open.
    pub state: BreakerState,
    /// Times of the class's failures within the window (closed only).
    pub failures: Vec<u64>,
    /// When it last opened.
    pub opened_at_ms: u64,
    /// The job let through while half-open.
    pub probe: Option<JobId>,
}

pub(super) fn breaker_key(scope: &Scope) -> Vec<u8> {
    let (q, t, c) = scope;
    let mut k = Vec::with_capacity(3 + q.len() + t.len() + c.len());
    k.push(BREAKER);
    k.extend_from_slice(q.as_bytes());
    k.push(0);
    k.extend_from_slice(t.as_bytes());
    k.push(0);
    k.extend_from_slice(c.as_bytes());
    k
}

fn parse_key(k: &[u8]) -> Option<Scope> {
    let text = std::str::from_utf8(k.get(1..)?).ok()?;
    let mut parts = text.split('\0');
    let scope = (
        parts.next()?.to_string(),
        parts.next()?.to_string(),
        parts.next()?.to_string(),
    );
    parts.next().is_none().then_some(scope)
}

impl Breaker {
    /// A failure of the breaker's class at `now`; true when it opened.
    fn failed(&mut self, now: u64, job: JobId, p: &BreakerPolicy) -> bool {
        match self.state {
            BreakerState::Closed => {
                let since = now.saturating_sub(p.window_ms);
                self.failures.retain(|t| *t > since);
                self.failures.push(now);
                if self.failures.len() >= p.threshold as usize {
                    self.open(now);
                    return true;
                }
                false
            }
            BreakerState::HalfOpen if self.probe == Some(job) => {
                self.open(now);
                true
            }
            _ => false,
        }
    }

    fn open(&mut self, now: u64) {
        self.state = BreakerState::Open;
        self.opened_at_ms = now;
        self.failures.clear();
        self.probe = None;
    }

    /// Whether it keeps its scope's jobs from being leased.
    fn holds(&self) -> bool {
        match self.state {
            BreakerState::Closed => false,
            BreakerState::Open => true,
            BreakerState::HalfOpen => self.probe.is_some(),
        }
    }
}

/// The breakers one (queue, tenant) has, in a map keyed by scope.
fn of<'a>(
    breakers: &'a BTreeMap<Scope, Breaker>,
    queue: &str,
    tenant: &str,
) -> impl Iterator<Item = (&'a Scope, &'a Breaker)> + 'a {
    let start = (queue.to_string(), tenant.to_string(), String::new());
    let (queue, tenant) = (queue.to_string(), tenant.to_string());
    breakers
        .range(start..)
        .take_while(move |((q, t, _), _)| *q == queue && *t == tenant)
}

/// Whether a breaker holds (queue, tenant).
pub(super) fn holds(breakers: &BTreeMap<Scope, Breaker>, queue: &str, tenant: &str) -> bool {
    of(breakers, queue, tenant).any(|(_, b)| b.holds())
}

/// The first breaker that holds (queue, tenant), if any.
pub(super) fn holding<'a>(
    breakers: &'a BTreeMap<Scope, Breaker>,
    queue: &str,
    tenant: &str,
) -> Option<&'a Scope> {
    of(breakers, queue, tenant)
        .find(|(_, b)| b.holds())
        .map(|(s, _)| s)
}

/// The tenants a breaker holds in `queue`.
pub(super) fn held_tenants<'a>(
    breakers: &'a BTreeMap<Scope, Breaker>,
    queue: &str,
) -> Vec<&'a str> {
    if breakers.is_empty() {
        return Vec::new();
    }
    let start = (queue.to_string(), String::new(), String::new());
    let mut out: Vec<&str> = breakers
        .range(start..)
        .take_while(|((q, _, _), _)| q == queue)
        .filter(|(_, b)| b.holds())
        .map(|((_, t, _), _)| t.as_str())
        .collect();
    out.dedup();
    out
}

impl Machine {
    pub(super) fn load_breakers(&mut self) -> Result<(), MachineError> {
        for item in self.tree.scan_prefix([BREAKER]) {
            let (k, v) = item?;
            let scope = parse_key(&k).ok_or_else(|| MachineError::Corrupt {
                key: describe_key(&k),
                reason: "a breaker's key is not K and queue, tenant, class".into(),
            })?;
            self.breakers.insert(scope, decode(&k, &v)?);
        }
        Ok(())
    }

    fn store_breaker(&mut self, scope: &Scope) {
        match self.breakers.get(scope) {
            Some(b) => {
                let bytes = encode(b);
                self.put(breaker_key(scope), bytes);
            }
            None => self.delete(breaker_key(scope)),
        }
    }

    /// Removes every breaker of `tenant` (an erasure); answers how many.
    pub(super) fn erase_tenant_breakers(&mut self, tenant: &str) -> u32 {
        let scopes: Vec<Scope> = self
            .breakers
            .keys()
            .filter(|(_, t, _)| t == tenant)
            .cloned()
            .collect();
        for scope in &scopes {
            self.breakers.remove(scope);
            self.store_breaker(scope);
        }
        scopes.len() as u32
    }

    /// A job of (queue, tenant) failed with `class`.
    pub(super) fn breaker_failed(&mut self, now: u64, job: &Job, class: &str) {
        let Some(policy) = self.policies.breaker(&job.queue) else {
            return;
        };
        let scope = (job.queue.clone(), job.tenant.clone(), class.to_string());
        let breaker = self.breakers.entry(scope.clone()).or_default();
        breaker.failed(now, job.id, &policy);
        self.store_breaker(&scope);
    }

    /// A job of (queue, tenant) succeeded: a half-open breaker it probed
    /// closes.
    pub(super) fn breaker_succeeded(&mut self, job: &Job) {
        let probed: Vec<Scope> = of(&self.breakers, &job.queue, &job.tenant)
            .filter(|(_, b)| b.state == BreakerState::HalfOpen && b.probe == Some(job.id))
            .map(|(s, _)| s.clone())
            .collect();
        for scope in probed {
            self.breakers.remove(&scope);
            self.store_breaker(&scope);
        }
    }

    /// A job of (queue, tenant) was leased: half-open breakers there take
    /// it as their probe.
    pub(super) fn breaker_leased(&mut self, job: &Job) {
        let waiting: Vec<Scope> = of(&self.breakers, &job.queue, &job.tenant)
            .filter(|(_, b)| b.state == BreakerState::HalfOpen && b.probe.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        for scope in waiting {
            if let Some(b) = self.breakers.get_mut(&scope) {
                b.probe = Some(job.id);
            }
            self.store_breaker(&scope);
        }
    }

    /// On a tick: open breakers past their cooldown turn half-open; a
    /// probe no longer leased (its lease expired, it was cancelled) frees
    /// the breaker to let another through; closed breakers whose failures
    /// have all left the window are forgotten.
    pub(super) fn breakers_tick(&mut self, now: u64) -> Result<(), MachineError> {
        let mut changed = Vec::new();
        for (scope, b) in &self.breakers {
            let Some(p) = self.policies.breaker(&scope.0) else {
                // Breakers turned off for the queue: forgotten.
                changed.push((scope.clone(), None));
                continue;
            };
            match b.state {
                BreakerState::Open if b.opened_at_ms.saturating_add(p.cooldown_ms) <= now => {
                    let mut b = b.clone();
                    b.state = BreakerState::HalfOpen;
                    changed.push((scope.clone(), Some(b)));
                }
                BreakerState::HalfOpen => {
                    if let Some(id) = b.probe {
                        let leased = self
                            .load(id)?
                            .is_some_and(|(j, _)| j.state == JobState::Leased);
                        if !leased {
                            let mut b = b.clone();
                            b.probe = None;
                            changed.push((scope.clone(), Some(b)));
                        }
                    }
                }
                BreakerState::Closed
                    if b.failures
                        .iter()
                        .all(|t| t.saturating_add(p.window_ms) <= now) =>
                {
                    changed.push((scope.clone(), None));
                }
                _ => {}
            }
        }
        for (scope, b) in changed {
            match b {
                Some(b) => self.breakers.insert(scope.clone(), b),
                None => self.breakers.remove(&scope),
            };
            self.store_breaker(&scope);
        }
        Ok(())
    }

    /// When the next open breaker's cooldown ends.
    pub(super) fn next_breaker_ms(&self) -> Option<u64> {
        self.breakers
            .iter()
            .filter(|(_, b)| b.state == BreakerState::Open)
            .filter_map(|((q, _, _), b)| {
                let p = self.policies.breaker(q)?;
                Some(b.opened_at_ms.saturating_add(p.cooldown_ms))
            })
            .min()
    }

    /// Applies a [`Command::ResetBreakers`]: closes one breaker, or all;
    /// answers how many it closed.
    pub(super) fn reset_breakers(&mut self, scope: Option<&Scope>) -> Outcome {
        let scopes: Vec<Scope> = match scope {
            Some(s) if self.breakers.contains_key(s) => vec![s.clone()],
            Some((queue, tenant, class)) => {
                return Outcome::Rejected(Refusal::UnknownBreaker {
                    queue: queue.clone(),
                    tenant: tenant.clone(),
                    class: class.clone(),
                })
            }
            None => self.breakers.keys().cloned().collect(),
        };
        for s in &scopes {
            self.breakers.remove(s);
            self.store_breaker(s);
        }
        Outcome::Removed(scopes.len() as u32)
    }
}

/// Breakers for the APIs, from the committed tree.
impl JobReader {
    /// Every stored breaker by scope: those not closed, or closed with failures
    /// in their window.
    pub fn breakers(&self) -> Result<BTreeMap<Scope, Breaker>, MachineError> {
        let tree = self.tree();
        let mut out = BTreeMap::new();
        for item in tree.scan_prefix([BREAKER]) {
            let (k, v) = item?;
            if let Some(scope) = parse_key(&k) {
                out.insert(scope, decode(&k, &v)?);
            }
        }
        Ok(out)
    }

    /// The breaker that holds (queue, tenant) now, if one does.
    pub fn breaker_holding(
        &self,
        queue: &str,
        tenant: &str,
    ) -> Result<Option<Scope>, MachineError> {
        let tree = self.tree();
        let mut prefix = vec![BREAKER];
        prefix.extend_from_slice(queue.as_bytes());
        prefix.push(0);
        prefix.extend_from_slice(tenant.as_bytes());
        prefix.push(0);
        for item in tree.scan_prefix(prefix) {
            let (k, v) = item?;
            if decode::<Breaker>(&k, &v)?.holds() {
                return Ok(parse_key(&k));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_failures_in_the_window_open_it_and_its_probe_decides() {
        let p = BreakerPolicy {
            threshold: 3,
            window_ms: 1_000,
            cooldown_ms: 500,
        };
        let mut b = Breaker::default();
        assert!(!b.failed(0, 1, &p));
        assert!(!b.failed(100, 1, &p));
        // The first failure left the window: two within it.
        assert!(!b.failed(1_050, 1, &p));
        assert!(b.failed(1_060, 2, &p), "three within a second");
        assert!(b.holds());
        b.state = BreakerState::HalfOpen;
        assert!(!b.holds(), "half-open lets one through");
        b.probe = Some(9);
        assert!(b.holds(), "and only one");
        assert!(
            !b.failed(2_000, 8, &p),
            "another job's failure is not the probe's"
        );
        assert!(b.failed(2_000, 9, &p), "the probe failed: open again");
        assert_eq!((b.state, b.opened_at_ms), (BreakerState::Open, 2_000));
    }
}
