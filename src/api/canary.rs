//! Ending a canary, by an operator (`drover canary promote|abort`) or by
//! the leader when the queue's judge says so (`[queues.NAME.canary]`
//! `abort_on`, `promote_after`), and the leader's watch that judges.
//!
//! A rule set at run time is removed when it ends. A rule of the config
//! file cannot be removed from here, so it is ended by a run-time rule for
//! the same version that goes first: at 0% after an abort (the version
//! takes none of the queue's jobs) and at 100% with no wait after a
//! promotion (every worker takes every job). Both are plain canary rules,
//! so the machine needs nothing new; the watch clears such an end once the
//! config names another version, so a new canary in the file starts.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::auth::Caller;
use crate::api::App;
use crate::command::{Audited, CanaryRule, Outcome, SetCanary, SwitchVersion, VersionSwitch};
use crate::error::Error;
use crate::machine::canary::Judged;
use crate::policies::CanaryJudge;

/// How a canary ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The version takes jobs like any other.
    Promote,
    /// The version is switched off for the queue.
    Abort,
}

/// Ends the queue's canary `rule` as `how` says, audited as `caller`: an
/// abort switches the version off for the queue first, so between the two
/// its jobs wait rather than go to the version being aborted.
pub async fn end(
    app: &App,
    caller: &Caller,
    queue: &str,
    rule: &CanaryRule,
    how: End,
) -> Result<(), Error> {
    let target = format!("queue {queue}: {}", rule.version);
    if how == End::Abort {
        let switch = VersionSwitch {
            version: rule.version.clone(),
            queue: Some(queue.to_string()),
            tenant: None,
        };
        let outcome = app
            .audited(
                caller,
                "versions.disable",
                switch.describe(),
                Audited::SwitchVersion(SwitchVersion {
                    switch,
                    enabled: false,
                }),
            )
            .await?;
        if let Outcome::Rejected(r) = outcome {
            return Err(Error::Refused(r));
        }
    }
    let of_config = app.driver.stats().policies.queue(queue).canary.is_some();
    let replacement = of_config.then(|| CanaryRule {
        version: rule.version.clone(),
        percent: if how == End::Abort { 0 } else { 100 },
        max_wait_ms: if how == End::Abort {
            rule.max_wait_ms
        } else {
            0
        },
    });
    let action = match how {
        End::Promote => "canary.promote",
        End::Abort => "canary.abort",
    };
    set_rule(app, caller, action, target, queue, replacement).await
}

/// Sets (or with None removes) the queue's run-time canary rule, audited.
pub async fn set_rule(
    app: &App,
    caller: &Caller,
    action: &str,
    target: String,
    queue: &str,
    rule: Option<CanaryRule>,
) -> Result<(), Error> {
    let outcome = app
        .audited(
            caller,
            action,
            target,
            Audited::SetCanary(SetCanary {
                queue: queue.to_string(),
                rule,
            }),
        )
        .await?;
    match outcome {
        Outcome::Noop => Ok(()),
        Outcome::Rejected(r) => Err(Error::Refused(r)),
        other => Err(Error::Driver(format!("unexpected outcome {other:?}"))),
    }
}

/// What the judge decided for one canary.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing to do yet.
    Wait,
    /// Abort: this measure was worse for the whole hold.
    Abort(Judged),
    /// Promote: every measure was ok for `promote_after`.
    Promote,
}

/// One canary's standing verdicts over time, as the leader watches it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// Since when (log ms) a measure of `abort_on` has been worse.
    worse_since: Option<u64>,
    /// Since when (log ms) every measure has been ok.
    ok_since: Option<u64>,
}

impl Standing {
    /// Takes the verdicts of `now` and says what to do.
    pub fn step(&mut self, judged: &[Judged], judge: &CanaryJudge, now: u64) -> Decision {
        let worse = judged.iter().find(|j| {
            j.verdict == "worse" && judge.abort_on.iter().any(|m| m.judged_name() == j.metric)
        });
        match worse {
            Some(j) => {
                self.ok_since = None;
                let since = *self.worse_since.get_or_insert(now);
                if now.saturating_sub(since) >= judge.hold_ms {
                    return Decision::Abort(j.clone());
                }
                return Decision::Wait;
            }
            None => self.worse_since = None,
        }
        if judged.is_empty() || judged.iter().any(|j| j.verdict != "ok") {
            self.ok_since = None;
            return Decision::Wait;
        }
        let since = *self.ok_since.get_or_insert(now);
        match judge.promote_after_ms {
            Some(after) if now.saturating_sub(since) >= after => Decision::Promote,
            _ => Decision::Wait,
        }
    }
}

/// How often the leader judges its canaries.
const EVERY: Duration = Duration::from_secs(1);

/// The leader's watch over every queue's canary: aborts or promotes as the
/// queue's judge says, and clears a config canary's end once the file
/// names another version. Verdicts are held in memory: a new leader starts
/// each hold afresh, so it acts later, never sooner.
pub async fn watch(app: App, mut shutdown: watch::Receiver<bool>) {
    let caller = Caller::node_itself(app.config.node_id, "canary judge");
    let mut standing: BTreeMap<(String, String), Standing> = BTreeMap::new();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if !app.driver.status().is_leader() {
            standing.clear();
            continue;
        }
        let stats = app.driver.stats();
        let now = app.driver.log_now_ms();
        let mut seen = Vec::new();
        for (queue, rule) in &stats.canaries {
            let configured = stats.policies.queue(queue).canary;
            if rule.is_end_of_config() {
                if let Some(c) = configured.filter(|c| c.version != rule.version) {
                    clear_end(&app, &caller, queue, rule, &c).await;
                }
                continue;
            }
            let judge = stats.policies.canary_judge(queue);
            if judge.abort_on.is_empty() && judge.promote_after_ms.is_none() {
                continue;
            }
            let (canary, control) = stats
                .canary_arms
                .get(queue)
                .map(|a| a.at(now))
                .unwrap_or_default();
            let judged = crate::machine::canary::compare(&canary, &control, &judge);
            let key = (queue.clone(), rule.version.clone());
            seen.push(key.clone());
            let decision = standing
                .entry(key.clone())
                .or_default()
                .step(&judged, &judge, now);
            if decision != Decision::Wait {
                act(&app, &caller, queue, rule, decision).await;
                // Acted, or failed to: either way the verdict must hold
                // again before the next try, so a failure is not retried
                // (and audited) every second.
                standing.remove(&key);
            }
        }
        standing.retain(|k, _| seen.contains(k));
    }
}

async fn act(app: &App, caller: &Caller, queue: &str, rule: &CanaryRule, decision: Decision) {
    let (how, why) = match &decision {
        Decision::Wait => return,
        Decision::Abort(j) => (End::Abort, format!("{} {:.3} worse", j.metric, j.value)),
        Decision::Promote => (End::Promote, "every measure ok".to_string()),
    };
    let caller = caller.clone().with_reason(why.clone());
    match end(app, &caller, queue, rule, how).await {
        Ok(()) if how == End::Abort => {
            tracing::warn!(event = "canary_auto_aborted", %queue, version = %rule.version, reason = %why, "the canary was worse for its hold time: aborted, its version switched off for the queue");
        }
        Ok(()) => {
            tracing::info!(event = "canary_auto_promoted", %queue, version = %rule.version, "the canary was as good as the control for promote_after: promoted");
        }
        Err(e) => {
            tracing::warn!(event = "canary_auto_failed", %queue, version = %rule.version, error = %e, "could not end the canary; trying again once the verdict held again");
        }
    }
}

/// Removes a config canary's end once the file names `configured`
/// instead, so that canary starts.
async fn clear_end(
    app: &App,
    caller: &Caller,
    queue: &str,
    ended: &CanaryRule,
    configured: &CanaryRule,
) {
    let target = format!(
        "queue {queue}: {} ended, the config names {}",
        ended.version, configured.version
    );
    let caller = caller
        .clone()
        .with_reason("a new canary in the config".into());
    if let Err(e) = set_rule(app, &caller, "canary.clear", target, queue, None).await {
        tracing::warn!(event = "canary_auto_failed", %queue, version = %configured.version, error = %e, "could not clear the ended canary for the config's new one");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::CanaryMetric;

    fn judged(verdicts: [&'static str; 3]) -> Vec<Judged> {
        ["success_rate_delta", "duration_ratio", "cost_ratio"]
            .iter()
            .zip(verdicts)
            .map(|(m, v)| Judged {
                metric: m,
                value: 0.5,
                verdict: v,
            })
            .collect()
    }

    #[test]
    fn a_worse_verdict_aborts_only_after_it_held() {
        let judge = CanaryJudge {
            abort_on: vec![CanaryMetric::SuccessRate],
            hold_ms: 10_000,
            ..CanaryJudge::default()
        };
        let mut s = Standing::default();
        let bad = judged(["worse", "ok", "ok"]);
        assert_eq!(s.step(&bad, &judge, 1_000), Decision::Wait);
        assert_eq!(s.step(&bad, &judge, 10_999), Decision::Wait);
        // A good second starts the hold again.
        assert_eq!(s.step(&judged(["ok"; 3]), &judge, 11_000), Decision::Wait);
        assert_eq!(s.step(&bad, &judge, 12_000), Decision::Wait);
        assert!(
            matches!(s.step(&bad, &judge, 22_000), Decision::Abort(j) if j.metric == "success_rate_delta")
        );
        // A measure not in abort_on only reports.
        let mut s = Standing::default();
        let slow = judged(["ok", "worse", "ok"]);
        assert_eq!(s.step(&slow, &judge, 0), Decision::Wait);
        assert_eq!(s.step(&slow, &judge, 100_000), Decision::Wait);
    }

    #[test]
    fn a_good_canary_is_promoted_after_a_clean_window_and_not_before() {
        let judge = CanaryJudge {
            promote_after_ms: Some(30_000),
            ..CanaryJudge::default()
        };
        let mut s = Standing::default();
        let ok = judged(["ok"; 3]);
        assert_eq!(s.step(&ok, &judge, 0), Decision::Wait);
        // Too few results break the window.
        assert_eq!(
            s.step(&judged(["not enough data"; 3]), &judge, 20_000),
            Decision::Wait
        );
        assert_eq!(s.step(&ok, &judge, 25_000), Decision::Wait);
        assert_eq!(s.step(&ok, &judge, 54_999), Decision::Wait);
        assert_eq!(s.step(&ok, &judge, 55_000), Decision::Promote);
        // Without promote_after, never.
        let mut s = Standing::default();
        let judge = CanaryJudge::default();
        assert_eq!(s.step(&ok, &judge, 0), Decision::Wait);
        assert_eq!(s.step(&ok, &judge, u64::MAX / 2), Decision::Wait);
    }
}
