//! `drover scale --queue Q --unit drover-worker@Q-%i`: one step of a
//! scaler. It reads `drover_queue_desired_workers{queue="Q"}` from a node
//! (already clamped to the queue's `workers` bounds and held through its
//! `scale_down_after` cooldown), counts the instances of the unit template
//! systemd runs, and starts the lowest stopped instance or stops the
//! highest running one, `--step` at a time. A systemd timer runs it
//! (systemd/drover-scale@.service and .timer).

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::target::Target;

#[derive(Args)]
pub struct ScaleArgs {
    /// The queue whose desired workers to follow.
    #[arg(long)]
    queue: String,
    /// The systemd unit template; %i is the instance number (1, 2, ...).
    #[arg(long, default_value = "drover-worker@%i")]
    unit: String,
    /// Most instances to run whatever the node says (and how many are
    /// looked at).
    #[arg(long, default_value_t = 32)]
    max: u32,
    /// Instances started or stopped in one run at most.
    #[arg(long, default_value_t = 1)]
    step: u32,
    /// Say what it would do, and do nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    target: Target,
}

pub async fn run(a: ScaleArgs) -> Result<()> {
    if !a.unit.contains("%i") {
        bail!(
            "--unit {:?} has no %i for the instance number, such as drover-worker@{}-%i",
            a.unit,
            a.queue
        );
    }
    if a.step == 0 || a.max == 0 {
        bail!("--step and --max must be 1 or more");
    }
    let text = a
        .target
        .admin()?
        .download("/metrics")
        .await?
        .text()
        .await
        .context("reading the node's /metrics broke off")?;
    let Some(wanted) = desired(&text, &a.queue) else {
        bail!(
            "the node has no drover_queue_desired_workers for queue {:?}: is the name right, and has the queue had a job since the node started? (drover queues list)",
            a.queue
        );
    };
    let wanted = wanted.min(a.max);
    let unit = |n: u32| a.unit.replace("%i", &n.to_string());
    let mut running: Vec<u32> = Vec::new();
    for n in 1..=a.max {
        if systemctl(&["is-active", "--quiet", &unit(n)])? {
            running.push(n);
        }
    }
    let count = running.len() as u32;
    let queue = &a.queue;
    if count == wanted {
        println!("queue {queue}: wants {wanted}, {count} running: nothing to do");
        return Ok(());
    }
    let (verb, picked): (&str, Vec<u32>) = if count < wanted {
        let stopped = (1..=a.max).filter(|n| !running.contains(n));
        (
            "start",
            stopped
                .take((wanted - count).min(a.step) as usize)
                .collect(),
        )
    } else {
        let highest = running.iter().rev().copied();
        (
            "stop",
            highest
                .take((count - wanted).min(a.step) as usize)
                .collect(),
        )
    };
    for n in picked {
        let name = unit(n);
        println!("queue {queue}: wants {wanted}, {count} running: {verb} {name}");
        if a.dry_run {
            continue;
        }
        if !systemctl(&[verb, &name])? {
            bail!("systemctl {verb} {name} failed: see journalctl -u {name}");
        }
    }
    Ok(())
}

/// The queue's figure in a Prometheus text page.
fn desired(page: &str, queue: &str) -> Option<u32> {
    let series = format!("drover_queue_desired_workers{{queue=\"{queue}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v.max(0.0) as u32)
}

/// Runs systemctl; whether it exited 0.
fn systemctl(args: &[&str]) -> Result<bool> {
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .context("cannot run systemctl: is this a systemd host, and is it on PATH?")?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use super::desired;

    #[test]
    fn reads_the_queue_series_only() {
        let page = "# TYPE drover_queue_desired_workers gauge\n\
                    drover_queue_desired_workers{queue=\"a\"} 3\n\
                    drover_queue_desired_workers{queue=\"ab\"} 7\n";
        assert_eq!(desired(page, "a"), Some(3));
        assert_eq!(desired(page, "ab"), Some(7));
        assert_eq!(desired(page, "b"), None);
    }
}
