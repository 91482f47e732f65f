//! systemd's `Type=notify` protocol: READY=1 once the node listens and has
//! applied the log it had committed when it started, STATUS= with its role,
//! term and leader as they change, WATCHDOG=1 while the raft loop turns (a
//! loop stuck for half the watchdog interval stops feeding it, and systemd
//! restarts the node), and STOPPING=1 when it stops. Not under systemd (no
//! `NOTIFY_SOCKET`) it does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;

use crate::driver::{DriverHandle, NodeStatus};

/// How long READY waits for the log to be applied before it is sent anyway
/// (a node must come up to help a cluster without a quorum).
const REPLAY_PATIENCE: Duration = Duration::from_secs(60);

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(event = "sd_notify_failed", error = %e, "could not notify systemd");
    }
}

/// `role follower, term 3, leader 1, applied 1234`.
fn describe(s: &NodeStatus) -> String {
    format!(
        "role {}, term {}, leader {}, applied {}",
        s.role.as_str(),
        s.term,
        s.leader_id,
        s.applied_index
    )
}

/// Tells systemd how the node is until `stopping` turns true.
pub async fn supervise(driver: DriverHandle, mut stopping: watch::Receiver<bool>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut status = driver.status_watch();
    let replayed = status.borrow().commit_index;
    let caught_up = status.wait_for(|s| s.applied_index >= replayed);
    if tokio::time::timeout(REPLAY_PATIENCE, caught_up)
        .await
        .is_err()
    {
        tracing::warn!(
            event = "ready_before_replayed",
            "the log is not applied yet; telling systemd the node is ready anyway"
        );
    }
    let mut shown = describe(&status.borrow());
    send(&[NotifyState::Ready, NotifyState::Status(&shown)]);
    tracing::info!(event = "systemd_ready", status = %shown, "told systemd the node is ready");
    let mut usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
        .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(100)));
    let mut feed = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                // The applied index moves all the time; the status line
                // changes with role, term or leader.
                let now = describe(&status.borrow_and_update());
                let key = |s: &str| s.rsplit_once(", applied").map(|(k, _)| k.to_string());
                if key(&now) != key(&shown) {
                    shown = now;
                    send(&[NotifyState::Status(&shown)]);
                }
            }
            _ = feed.tick(), if watchdog.is_some() => {
                let interval = watchdog.unwrap_or_default().as_millis() as u64;
                let idle = driver.loop_idle_ms();
                if idle <= interval {
                    send(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!(event = "raft_loop_stuck", idle_ms = idle, "the raft loop has not turned; not feeding the systemd watchdog");
                }
            }
            _ = stopping.wait_for(|s| *s) => break,
        }
    }
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}
