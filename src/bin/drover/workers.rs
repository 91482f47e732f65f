//! `drover workers list|shutdown|release|wait|restart`: the workers of the
//! whole cluster.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use drover::api::types::{ReleasedWorkerBody, WorkerBody, WorkersBody};

use crate::target::{table, Target};

#[derive(Subcommand)]
pub enum WorkersCmd {
    /// Every connected worker: queues, version, jobs held, what it has done
    /// (in all and recently), when it was last heard from, the node it is
    /// connected to, and whether it is quarantined.
    List(Target),
    /// Let a quarantined worker lease again.
    Release {
        /// The worker id (see `drover workers list`).
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Ask a worker (or --all) to finish what it holds and exit.
    Shutdown {
        /// The worker id (see `drover workers list`).
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Wait until at least --count workers serve --queue (of --version, if
    /// given), not draining: for deploy scripts. Fails after --timeout
    /// naming who is there.
    Wait {
        #[command(flatten)]
        select: Select,
        /// How many must be connected.
        #[arg(long)]
        count: usize,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
        timeout: Duration,
        #[command(flatten)]
        target: Target,
    },
    /// Restart the workers of --queue (of --version, if given) a few at a
    /// time: each is asked to finish what it holds and exit, and the next
    /// ones only once as many workers serve the queue as before (its
    /// supervisor, `Restart=always`, starts a fresh one). Stops, saying
    /// which, when no replacement comes within --timeout.
    Restart {
        #[command(flatten)]
        select: Select,
        /// Most workers away at once.
        #[arg(long, default_value_t = 1)]
        max_unavailable: usize,
        /// Also wait for the last ones' replacements before returning.
        #[arg(long)]
        wait: bool,
        /// How long each step may take to get its replacements.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
        timeout: Duration,
        #[command(flatten)]
        target: Target,
    },
}

/// Which workers a `wait` or `restart` is about.
#[derive(Args)]
pub struct Select {
    /// Workers that serve this queue.
    #[arg(long)]
    queue: String,
    /// Only workers of this version (`drover worker --version`).
    #[arg(long)]
    version: Option<String>,
}

impl Select {
    /// A worker this selects, not draining.
    fn takes(&self, w: &WorkerBody) -> bool {
        !w.draining
            && w.queues.contains(&self.queue)
            && self.version.as_ref().is_none_or(|v| *v == w.version)
    }

    fn describe(&self) -> String {
        match &self.version {
            Some(v) => format!("queue {} (version {v})", self.queue),
            None => format!("queue {}", self.queue),
        }
    }
}

/// How often `wait` and `restart` look at the workers.
const POLL: Duration = Duration::from_millis(250);

/// Asks for the workers until `check` answers, or `timeout` passes (then
/// fails with what `check` said last).
async fn poll_workers<T>(
    target: &Target,
    timeout: Duration,
    mut check: impl FnMut(&WorkersBody) -> Result<T, String>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        // A node restarting refuses for a moment: ask again.
        let last = match target.admin()?.get::<WorkersBody>("/api/v1/workers").await {
            Ok(w) => match check(&w) {
                Ok(t) => return Ok(t),
                Err(why) => why,
            },
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("after {}: {last}", humantime::format_duration(timeout));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The ids of the workers `select` takes, sorted.
fn taken(select: &Select, w: &WorkersBody) -> Vec<String> {
    let mut ids: Vec<String> = w
        .workers
        .iter()
        .filter(|x| select.takes(x))
        .map(|x| x.worker_id.clone())
        .collect();
    ids.sort();
    ids
}

async fn wait(select: Select, count: usize, timeout: Duration, target: Target) -> Result<()> {
    let ids = poll_workers(&target, timeout, |w| {
        let ids = taken(&select, w);
        match ids.len() >= count {
            true => Ok(ids),
            false => Err(format!(
                "{} of {count} workers of {} connected: {}",
                ids.len(),
                select.describe(),
                if ids.is_empty() {
                    "none".into()
                } else {
                    ids.join(", ")
                }
            )),
        }
    })
    .await?;
    println!(
        "{} workers of {} connected: {}",
        ids.len(),
        select.describe(),
        ids.join(", ")
    );
    Ok(())
}

async fn restart(
    select: Select,
    max_unavailable: usize,
    wait: bool,
    timeout: Duration,
    target: Target,
) -> Result<()> {
    if max_unavailable == 0 {
        bail!("--max-unavailable must be at least 1");
    }
    let first: WorkersBody = target.admin()?.get("/api/v1/workers").await?;
    // Each worker as it is now: one that reconnects under the same id is a
    // new connection, so (id, connected at) tells the old from the new.
    let old: Vec<(String, u64)> = {
        let mut v: Vec<(String, u64)> = first
            .workers
            .iter()
            .filter(|x| select.takes(x))
            .map(|x| (x.worker_id.clone(), x.connected_at_ms))
            .collect();
        v.sort();
        v
    };
    if old.is_empty() {
        bail!(
            "no worker of {} is connected: nothing to restart",
            select.describe()
        );
    }
    // Replacements may be of any version: count the queue's workers.
    let queue = Select {
        queue: select.queue.clone(),
        version: None,
    };
    let want = first.workers.iter().filter(|x| queue.takes(x)).count();
    let steps: Vec<&[(String, u64)]> = old.chunks(max_unavailable).collect();
    println!(
        "restarting {} workers of {}, {max_unavailable} at a time ({want} serve the queue)",
        old.len(),
        select.describe()
    );
    for (i, step) in steps.iter().enumerate() {
        let admin = target.admin()?;
        for (id, _) in step.iter() {
            let _: WorkersBody = admin
                .post_empty(&format!("/api/v1/workers/{id}/shutdown"))
                .await?;
            println!("draining {id}");
        }
        let last = i + 1 == steps.len();
        if last && !wait {
            break;
        }
        let gone_and_replaced = |w: &WorkersBody| {
            let still: Vec<&String> = step
                .iter()
                .filter(|(id, at)| {
                    w.workers
                        .iter()
                        .any(|x| x.worker_id == *id && x.connected_at_ms == *at)
                })
                .map(|(id, _)| id)
                .collect();
            let serving = w
                .workers
                .iter()
                .filter(|x| queue.takes(x))
                .filter(|x| {
                    !step
                        .iter()
                        .any(|(id, at)| x.worker_id == *id && x.connected_at_ms == *at)
                })
                .count();
            if still.is_empty() && serving >= want {
                return Ok(serving);
            }
            let waiting: Vec<&str> = step.iter().map(|(id, _)| id.as_str()).collect();
            let left: Vec<&str> = steps[i + 1..]
                .iter()
                .flat_map(|s| s.iter().map(|(id, _)| id.as_str()))
                .collect();
            Err(match still.is_empty() {
                false => format!(
                    "{} still finishing what they hold ({serving} of {want} serve the queue)",
                    still.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
                true => format!(
                    "{serving} of {want} workers serve queue {} again: no replacement registered for {}; check their supervisor (systemctl status drover-worker@...). Not restarted: {}",
                    select.queue,
                    waiting.join(", "),
                    if left.is_empty() { "none".into() } else { left.join(", ") }
                ),
            })
        };
        let serving = poll_workers(&target, timeout, gone_and_replaced).await?;
        println!("replaced: {serving} workers serve queue {}", select.queue);
    }
    println!("restarted {} workers of {}", old.len(), select.describe());
    Ok(())
}

pub async fn run(cmd: WorkersCmd) -> Result<()> {
    match cmd {
        WorkersCmd::List(target) => {
            let w: WorkersBody = target.admin()?.get("/api/v1/workers").await?;
            target.print(&w, print)
        }
        WorkersCmd::Release { id, target } => {
            let r: ReleasedWorkerBody = target
                .admin()?
                .post_empty(&format!("/api/v1/workers/{id}/release"))
                .await?;
            target.print(&r, |r| {
                println!("released worker {}: it may lease again", r.worker_id);
            })
        }
        WorkersCmd::Shutdown { id, all, target } => {
            let path = match (&id, all) {
                (Some(id), false) => format!("/api/v1/workers/{id}/shutdown"),
                (None, true) => "/api/v1/workers/shutdown".to_string(),
                _ => bail!("name a worker id, or --all"),
            };
            let w: WorkersBody = target.admin()?.post_empty(&path).await?;
            target.print(&w, |w| {
                println!(
                    "asked {} worker(s) to finish what they hold and exit",
                    w.asked_to_stop
                );
                print(w);
            })
        }
        WorkersCmd::Wait {
            select,
            count,
            timeout,
            target,
        } => wait(select, count, timeout, target).await,
        WorkersCmd::Restart {
            select,
            max_unavailable,
            wait,
            timeout,
            target,
        } => restart(select, max_unavailable, wait, timeout, target).await,
    }
}

fn print(w: &WorkersBody) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut t = table(&[
        "ID",
        "QUEUES",
        "VERSION",
        "HELD",
        "DONE",
        "FAILED",
        "RECENT OK/FAILED",
        "LAST SEEN",
        "NODE",
        "",
    ]);
    for x in &w.workers {
        let ago = std::time::Duration::from_secs(now.saturating_sub(x.last_seen_ms) / 1000);
        t.add_row(vec![
            x.worker_id.clone(),
            x.queues.join(","),
            if x.version.is_empty() {
                "-".into()
            } else {
                x.version.clone()
            },
            format!("{}/{}", x.in_flight, x.capacity),
            x.completed.to_string(),
            x.failed.to_string(),
            format!(
                "{}/{} in {}",
                x.recent_completed,
                x.recent_failed,
                humantime::format_duration(std::time::Duration::from_secs(
                    x.recent_window_ms / 1000
                ))
            ),
            format!("{} ago", humantime::format_duration(ago)),
            x.node_id.to_string(),
            match (x.quarantined_until_ms, x.draining) {
                (Some(_), _) => "quarantined".into(),
                (None, true) => "draining".into(),
                (None, false) => String::new(),
            },
        ]);
    }
    println!("{t}");
    for (id, q) in &w.quarantined {
        let left = std::time::Duration::from_secs(q.until_ms.saturating_sub(now) / 1000);
        println!(
            "quarantined: {id} ({} failed of {}); reconnecting after {} lifts it, or: drover workers release {id}",
            q.failed,
            q.completed + q.failed,
            if left.is_zero() { "now".to_string() } else { humantime::format_duration(left).to_string() }
        );
    }
    for (node, why) in &w.unreachable {
        println!("node {node} did not answer ({why}): its workers are not listed");
    }
}
