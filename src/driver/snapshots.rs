//! Taking snapshots without stopping the raft loop: when one is due (every
//! `raft.snapshot_every` applied entries, when raft wants one to send, or
//! when an operator asks for a backup), the loop starts a consistent read of
//! the machine at the applied index ([`crate::machine::capture`]) and a
//! thread of its own writes the file from it. The loop keeps ticking,
//! heartbeating, appending and applying; it learns the file is written
//! from [`Snapshots::finished`] and only then offers it to raft and lets
//! the log be compacted behind it.

use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::machine::Machine;
use crate::snapshot::{self, SnapshotError, SnapshotMeta};

/// Who waits for a snapshot file: an operator's backup.
pub type Waiter = oneshot::Sender<Result<PathBuf, Error>>;

/// How long after a failed snapshot the next is tried (a full disk, say).
const RETRY_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(10);

/// A snapshot being written.
struct Running {
    meta: SnapshotMeta,
    path: PathBuf,
    started: Instant,
    waiters: Vec<Waiter>,
}

/// How a snapshot's writing ended, as the writer thread reports it.
pub struct Written {
    index: u64,
    result: Result<u64, SnapshotError>,
}

/// The snapshot files of one node and the one being written.
pub struct Snapshots {
    dir: PathBuf,
    every: u64,
    /// Applied index of the newest snapshot taken or installed (or of the
    /// state at start, so a restart does not take one at once), or of a
    /// failed attempt, so a failing disk is tried again only `every`
    /// entries later.
    last_index: u64,
    running: Option<Running>,
    /// When the last snapshot failed, if it did.
    failed_at: Option<Instant>,
    done_tx: mpsc::UnboundedSender<Written>,
    done_rx: mpsc::UnboundedReceiver<Written>,
}

/// Gives the writer thread the lowest CPU priority: on a busy node it
/// should take what the raft loop and the API leave, not compete with them.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on this thread's own id; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// Rests the writer thread twice as long as it worked, every thousand
/// records: a third of a core at most. On a node whose cores are busy, low
/// priority alone is not enough: sled's iterator takes a shared lock that
/// every commit must wait for, and a writer preempted while holding it
/// stalls the raft loop behind it; resting often keeps it out of the way.
struct DutyCycle<I> {
    inner: I,
    count: u32,
    since: Instant,
}

/// Records read between rests.
const RECORDS_PER_REST: u32 = 1024;
/// The longest rest: a few milliseconds, so a snapshot never takes more
/// than about three times as long as it would flat out.
const MAX_REST: std::time::Duration = std::time::Duration::from_millis(10);

impl<I> DutyCycle<I> {
    fn new(inner: I) -> DutyCycle<I> {
        DutyCycle {
            inner,
            count: 0,
            since: Instant::now(),
        }
    }
}

impl<I: Iterator> Iterator for DutyCycle<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        self.count += 1;
        if self.count >= RECORDS_PER_REST {
            std::thread::sleep((self.since.elapsed() * 2).min(MAX_REST));
            self.count = 0;
            self.since = Instant::now();
        }
        self.inner.next()
    }
}

/// What the loop does with a snapshot that was written.
pub struct Taken {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
}

impl Snapshots {
    pub fn new(dir: PathBuf, every: u64, last_index: u64) -> Snapshots {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Snapshots {
            dir,
            every,
            last_index,
            running: None,
            failed_at: None,
            done_tx,
            done_rx,
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Whether a snapshot should be started now, at `applied`: `every`
    /// entries since the last, or raft wants one newer than `latest` to send
    /// (not again within [`RETRY_AFTER_FAILURE`] of a failure).
    pub fn due(&self, applied: u64, raft_wants: bool, latest: u64) -> bool {
        self.may_start()
            && (applied >= self.last_index + self.every || (raft_wants && applied > latest))
    }

    /// Whether a snapshot may start now: none is being written, and none
    /// failed within [`RETRY_AFTER_FAILURE`].
    pub fn may_start(&self) -> bool {
        self.running.is_none()
            && self
                .failed_at
                .is_none_or(|t| t.elapsed() >= RETRY_AFTER_FAILURE)
    }

    /// Starts writing a snapshot of `machine` (committed, nothing staged)
    /// as `meta` says, unless one is being written already: that one is
    /// consistent and at most a few seconds old, and serves.
    pub fn start(
        &mut self,
        machine: &mut Machine,
        meta: SnapshotMeta,
    ) -> Result<(), SnapshotError> {
        if self.running.is_some() {
            return Ok(());
        }
        let reader = machine
            .start_capture()
            .map_err(|e| SnapshotError::Capture(e.to_string()))?;
        let path = snapshot::path_for(&self.dir, meta.index, meta.term);
        let (thread_path, thread_meta, done) = (path.clone(), meta.clone(), self.done_tx.clone());
        let index = meta.index;
        std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || {
                lower_priority();
                // The loop waits for this answer: it must come even if the
                // writer panics.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    snapshot::write(&thread_path, &thread_meta, DutyCycle::new(reader))
                }))
                .unwrap_or_else(|_| {
                    Err(SnapshotError::Capture(
                        "the snapshot writer panicked".into(),
                    ))
                });
                let _ = done.send(Written { index, result });
            })
            .map_err(|source| SnapshotError::Io {
                path: path.clone(),
                source,
            })?;
        self.running = Some(Running {
            meta,
            path,
            started: Instant::now(),
            waiters: Vec::new(),
        });
        Ok(())
    }

    /// Answers `waiter` once the snapshot being written is; at once with an
    /// error if none is.
    pub fn wait(&mut self, waiter: Waiter) {
        match &mut self.running {
            Some(running) => running.waiters.push(waiter),
            None => {
                let _ = waiter.send(Err(Error::Driver("no snapshot is being written".into())));
            }
        }
    }

    /// Waits for the snapshot being written to end; pending forever while
    /// none is.
    pub async fn next_written(&mut self) -> Written {
        match self.done_rx.recv().await {
            Some(w) => w,
            // The sender lives in self: never closed while we are here.
            None => std::future::pending().await,
        }
    }

    /// Ends the snapshot `written` reports: answers its waiters and returns
    /// the file to offer to raft, or None if it failed (logged; tried again
    /// `every` entries later).
    pub fn finished(&mut self, written: Written) -> Option<Taken> {
        let running = self.running.take()?;
        if running.meta.index != written.index {
            // Not ours (cannot happen: one at a time); keep waiting.
            self.running = Some(running);
            return None;
        }
        let Running {
            meta,
            path,
            started,
            waiters,
        } = running;
        self.last_index = self.last_index.max(meta.index);
        match written.result {
            Ok(bytes) => {
                self.failed_at = None;
                metrics::histogram!(crate::metrics::SNAPSHOT_DURATION)
                    .record(started.elapsed().as_secs_f64());
                tracing::info!(
                    event = "snapshot_taken",
                    index = meta.index,
                    term = meta.term,
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "took a snapshot"
                );
                for w in waiters {
                    let _ = w.send(Ok(path.clone()));
                }
                Some(Taken { meta, path })
            }
            Err(e) => {
                self.failed_at = Some(Instant::now());
                tracing::error!(event = "snapshot_failed", index = meta.index, error = %e, "could not write a snapshot; trying again later");
                let message = e.to_string();
                for w in waiters {
                    let _ = w.send(Err(Error::Driver(format!("snapshot failed: {message}"))));
                }
                None
            }
        }
    }

    /// Records a snapshot installed from the leader as the newest.
    pub fn installed(&mut self, index: u64) {
        self.last_index = self.last_index.max(index);
    }

    /// Keeps the two newest snapshot files: one may still be streaming out.
    pub fn prune(&self) {
        for old in snapshot::list(&self.dir).into_iter().skip(2) {
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!(path = %old.display(), error = %e, "cannot remove an old snapshot");
            }
        }
    }
}
