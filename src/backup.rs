//! Scheduled backups (`[backup] every, dir, keep`): every `every`, the node
//! that leads takes a snapshot (written off the raft loop, as any snapshot)
//! and copies it into `dir` as `drover-backup-<unix seconds>-<index>.bin`,
//! synced, then keeps the newest `keep` there. `drover snapshot restore
//! FILE --data-dir DIR` seeds a node from one. Followers skip their turn:
//! one copy per interval is enough, and the leader's state is the newest.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use crate::driver::DriverHandle;
use crate::error::Error;

/// Copies the snapshot at `from` into `dir` under a backup name, synced.
async fn copy_in(from: &Path, dir: &Path, index: u64) -> std::io::Result<PathBuf> {
    tokio::fs::create_dir_all(dir).await?;
    let secs = crate::driver::now_ms() / 1000;
    let name = format!("drover-backup-{secs:012}-{index:020}.bin");
    let partial = dir.join(format!("{name}.partial"));
    let done = dir.join(name);
    let copied = async {
        tokio::fs::copy(from, &partial).await?;
        tokio::fs::File::open(&partial).await?.sync_all().await?;
        // Renamed only once whole, so a listed backup is never half a file.
        tokio::fs::rename(&partial, &done).await
    }
    .await;
    if let Err(e) = copied {
        // A full disk must not keep the half copy that filled it.
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    Ok(done)
}

/// Backups in `dir`, newest first (names sort by time).
pub fn list(dir: &Path) -> Vec<PathBuf> {
    crate::snapshot::list_named(dir, "drover-backup-")
}

/// Where this node writes its scheduled backups: `[backup] dir`, else
/// `DATA_DIR/backups`.
pub fn dir(cfg: &crate::config::Config) -> PathBuf {
    cfg.backup
        .dir
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join("backups"))
}

/// A backup file, as its name and size tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The backup file.
    pub path: PathBuf,
    /// Its size in bytes (0 if it could not be read).
    pub bytes: u64,
    /// When it was taken, in seconds since the epoch.
    pub taken_at_secs: u64,
    /// The log index it holds the state at.
    pub index: u64,
}

/// The backups in `dir`, newest first, with what their names say.
pub fn listing(dir: &Path) -> Vec<Listed> {
    list(dir)
        .into_iter()
        .map(|path| {
            let name = path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut parts = name
                .trim_start_matches("drover-backup-")
                .split('-')
                .map(|p| p.parse::<u64>().unwrap_or(0));
            let taken_at_secs = parts.next().unwrap_or(0);
            let index = parts.next().unwrap_or(0);
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            Listed {
                path,
                bytes,
                taken_at_secs,
                index,
            }
        })
        .collect()
}

/// Takes one backup now, if this node leads; prunes to `keep`.
pub async fn take(
    driver: &DriverHandle,
    dir: &Path,
    keep: usize,
) -> Result<Option<PathBuf>, Error> {
    if !driver.status_ref().is_leader() {
        return Ok(None);
    }
    let snapshot = driver.snapshot_now().await?;
    let index = crate::snapshot::read_meta(&snapshot)
        .map(|m| m.index)
        .unwrap_or_default();
    let io = |source| Error::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    let path = copy_in(&snapshot, dir, index).await.map_err(io)?;
    for old in list(dir).into_iter().skip(keep.max(1)) {
        if let Err(e) = tokio::fs::remove_file(&old).await {
            tracing::warn!(event = "backup_prune_failed", path = %old.display(), error = %e, "could not remove an old backup");
        }
    }
    Ok(Some(path))
}

/// Runs the schedule until `stopping`.
pub async fn schedule(
    driver: DriverHandle,
    every: Duration,
    dir: PathBuf,
    keep: usize,
    mut stopping: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        match take(&driver, &dir, keep).await {
            Ok(Some(path)) => {
                let now = crate::driver::now_ms() as f64 / 1000.0;
                crate::metrics::LAST_BACKUP_SECS
                    .store(now as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(event = "backup_written", path = %path.display(), "scheduled backup written");
            }
            Ok(None) => {}
            Err(e) => {
                metrics::counter!("drover_backup_failures_total").increment(1);
                tracing::error!(event = "backup_failed", dir = %dir.display(), error = %e, "scheduled backup failed");
            }
        }
    }
}
