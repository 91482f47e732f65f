//! Values too large for sled, each in a file of its own beside the database,
//! with a small marker in sled where the value would be.
//!
//! Why: sled 0.34 stores a page fragment over about 128 KiB as a blob file,
//! and a fragment is a whole leaf when sled consolidates it, so a leaf of
//! large values is written out again with all of them each time a key is
//! added near it. With 1 MB payloads the data dir held 6.6 copies of every
//! byte and the node's memory followed the payload bytes that had passed
//! through (sled counts a blob in its cache by the pointer, not the bytes).
//! Here a value is written once, read when asked for, and unlinked once the
//! change that dropped it is durable.
//!
//! The raft log (`log/INDEX-TERM`) and the machine's payloads
//! (`TREE/ID-0`, one directory per machine tree) use it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Values at least this long are spilled: what sled would write as a blob
/// anyway (a fragment over a quarter of its 512 KiB segment), so spilling
/// never costs more syncs than sled did. Raft entries of small jobs are
/// batched up to 256 KiB, so only a rare one of them is spilled.
pub const SPILL_MIN: usize = 128 << 10;

/// What sled holds in a spilled value's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Tells apart files of one key written at different times (the raft
    /// term of a log entry; 0 for a payload, whose id is never reused).
    pub name: u64,
    /// The value's length in bytes.
    pub len: u64,
    /// CRC32 of the value, checked on every read.
    pub crc: u32,
}

impl Marker {
    /// A protobuf message never starts with a zero byte, and a payload kept
    /// apart is longer than a marker, so a marker is never mistaken for a
    /// value.
    const TAG: &'static [u8; 4] = b"\0SPL";
    /// Its encoded length.
    pub const LEN: usize = 24;

    /// The marker of `value`, to be filed under `name`.
    pub fn of(name: u64, value: &[u8]) -> Marker {
        Marker {
            name,
            len: value.len() as u64,
            crc: crc32fast::hash(value),
        }
    }

    /// Its stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(Self::TAG);
        out.extend_from_slice(&self.name.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&self.crc.to_be_bytes());
        out
    }

    /// The marker `stored` is, or None when it is a value.
    pub fn decode(stored: &[u8]) -> Option<Marker> {
        if stored.len() != Self::LEN || !stored.starts_with(Self::TAG) {
            return None;
        }
        let u64_at =
            |at: usize| u64::from_be_bytes(stored[at..at + 8].try_into().unwrap_or_default());
        Some(Marker {
            name: u64_at(4),
            len: u64_at(12),
            crc: u32::from_be_bytes(stored[20..24].try_into().unwrap_or_default()),
        })
    }
}

/// The length of the value a stored record stands for: a marker's, or the
/// record's own.
pub fn value_len(stored: &[u8]) -> u64 {
    Marker::decode(stored).map_or(stored.len() as u64, |m| m.len)
}

/// Asks the kernel to start writing a range of `file` back, without
/// waiting. Only pacing: durability comes from a sync after it.
#[cfg(target_os = "linux")]
pub fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: sync_file_range on an open fd we own; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
pub fn start_writeback(_file: &std::fs::File, _offset: u64, _len: u64) {}

/// Why a spilled value could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// The OS refused a read or write of the file.
    #[error("spilled value {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is missing or does not hold what its marker says.
    #[error("spilled value {path} is damaged ({reason}); the data dir is damaged: restore it from a backup or re-sync this node from its peers")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(Default)]
struct Removals {
    /// Files whose markers were dropped, to unlink once that is durable.
    paths: Vec<PathBuf>,
    /// Consistent reads running that may still read dropped files.
    holds: usize,
}

/// The spill root of one database (`DATA_DIR/spill`).
pub struct Spill {
    root: PathBuf,
    removals: Mutex<Removals>,
    /// Hands flushed removals to a thread of their own, so a flush reports
    /// durability without waiting for unlinks. Made at the first removal.
    unlinker: Mutex<Option<std::sync::mpsc::Sender<Unlink>>>,
}

/// What the unlinker thread is asked.
enum Unlink {
    Paths(Vec<PathBuf>),
    /// Answer once everything sent before is unlinked.
    Settled(std::sync::mpsc::SyncSender<()>),
}

impl Spill {
    /// The spill root under `data_dir`; directories are made when written to.
    pub fn new(data_dir: &Path) -> Arc<Spill> {
        Arc::new(Spill {
            root: data_dir.join("spill"),
            removals: Mutex::default(),
            unlinker: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Removals> {
        // Every change under the lock is one push, swap or count.
        self.removals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The directory for one kind of value (`log`, a machine tree's name).
    pub fn dir(self: &Arc<Self>, name: &str) -> SpillDir {
        SpillDir {
            spill: self.clone(),
            dir: self.root.join(name),
        }
    }

    /// The names of the directories under the root.
    pub fn dir_names(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// Removes directory `name` and everything in it (a dropped tree's).
    pub fn remove_dir(&self, name: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.root.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Takes the removals a flush about to start will make durable: those
    /// queued before it, unless a consistent read may still want them.
    pub fn before_flush(&self) -> Vec<PathBuf> {
        let mut r = self.lock();
        if r.holds > 0 {
            return Vec::new();
        }
        std::mem::take(&mut r.paths)
    }

    /// Has what [`Spill::before_flush`] took unlinked, now that the flush
    /// that dropped their markers is done: by a thread of its own, or here
    /// if it cannot be started.
    pub fn after_flush(&self, taken: Vec<PathBuf>) {
        if taken.is_empty() {
            return;
        }
        let mut unlinker = self.unlinker.lock().unwrap_or_else(|e| e.into_inner());
        if unlinker.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<Unlink>();
            let spawned = std::thread::Builder::new()
                .name("spill-unlinker".into())
                .spawn(move || {
                    while let Ok(asked) = rx.recv() {
                        match asked {
                            Unlink::Paths(paths) => unlink(paths),
                            Unlink::Settled(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                });
            if spawned.is_ok() {
                *unlinker = Some(tx);
            }
        }
        match unlinker.as_ref() {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(Unlink::Paths(back))) =
                    tx.send(Unlink::Paths(taken))
                {
                    unlink(back);
                }
            }
            None => unlink(taken),
        }
    }

    /// Waits until every removal handed on so far is unlinked (tests, and
    /// whoever must see the disk settle).
    pub fn settle(&self) {
        let tx = self
            .unlinker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(tx) = tx {
            let (done_tx, done) = std::sync::mpsc::sync_channel(1);
            if tx.send(Unlink::Settled(done_tx)).is_ok() {
                let _ = done.recv();
            }
        }
    }

    /// Queues again what a failed flush took.
    pub fn flush_failed(&self, taken: Vec<PathBuf>) {
        self.lock().paths.extend(taken);
    }

    /// Keeps dropped files while the returned guard lives.
    pub fn hold(self: &Arc<Self>) -> SpillHold {
        self.lock().holds += 1;
        SpillHold(self.clone())
    }
}

fn unlink(paths: Vec<PathBuf>) {
    {
        for path in paths {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(event = "spill_unlink_failed", path = %path.display(), error = %e, "cannot remove a spilled value no longer used; it stays until the node's next start");
                }
            }
        }
    }
}

/// Keeps files whose markers were dropped, for a consistent read that
/// started before.
pub struct SpillHold(Arc<Spill>);

impl Drop for SpillHold {
    fn drop(&mut self) {
        let mut r = self.0.lock();
        r.holds = r.holds.saturating_sub(1);
    }
}

/// One directory of spilled values, named by key and marker name.
#[derive(Clone)]
pub struct SpillDir {
    spill: Arc<Spill>,
    dir: PathBuf,
}

impl SpillDir {
    fn path(&self, id: u64, name: u64) -> PathBuf {
        self.dir.join(format!("{id:020}-{name}"))
    }

    /// The root this directory is in.
    pub fn spill(&self) -> &Arc<Spill> {
        &self.spill
    }

    /// Writes each (id, name, value) durably (synced, renamed into place,
    /// the directory synced once) and returns their markers in order. A
    /// marker may be stored only after this returns. Every file's writeback
    /// starts before the first sync waits, so the disk takes them as one
    /// stream.
    pub fn write(&self, values: &[(u64, u64, &[u8])]) -> Result<Vec<Marker>, SpillError> {
        use std::io::Write as _;
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SpillError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let mut markers = Vec::with_capacity(values.len());
        let mut written = Vec::with_capacity(values.len());
        for &(id, name, value) in values {
            let path = self.path(id, name);
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(value).map_err(io(&tmp))?;
            start_writeback(&f, 0, value.len() as u64);
            written.push((f, tmp, path));
            markers.push(Marker::of(name, value));
        }
        for (f, tmp, _) in &written {
            f.sync_data().map_err(io(tmp))?;
        }
        for (_, tmp, path) in written {
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
            // Written again under a name queued for removal (never by raft's
            // rules, but cheap to make safe): it is in use again.
            self.spill.lock().paths.retain(|p| p != &path);
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(markers)
    }

    /// The value `marker` stands for, checked against it.
    pub fn read(&self, id: u64, marker: &Marker) -> Result<Vec<u8>, SpillError> {
        let path = self.path(id, marker.name);
        // The size first: a damaged marker must not make us read gigabytes.
        match std::fs::metadata(&path) {
            Ok(m) if m.len() != marker.len => {
                return Err(SpillError::Corrupt {
                    reason: format!(
                        "it holds {} bytes where its record says {}",
                        m.len(),
                        marker.len
                    ),
                    path,
                })
            }
            _ => {}
        }
        let value = match std::fs::read(&path) {
            Ok(v) => v,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SpillError::Corrupt {
                    path,
                    reason: "the file is missing".into(),
                })
            }
            Err(source) => return Err(SpillError::Io { path, source }),
        };
        let reason = if value.len() as u64 != marker.len {
            format!(
                "it holds {} bytes where its record says {}",
                value.len(),
                marker.len
            )
        } else if crc32fast::hash(&value) != marker.crc {
            "its checksum does not match its record".to_string()
        } else {
            return Ok(value);
        };
        Err(SpillError::Corrupt { path, reason })
    }

    /// Queues the file of (id, name) for removal after the next flush.
    pub fn remove_later(&self, id: u64, name: u64) {
        let path = self.path(id, name);
        self.spill.lock().paths.push(path);
    }

    /// Removes every file for which `keep(id, name)` is false, and leftover
    /// temp files: what a crash left between a file and its marker.
    pub fn sweep(&self, mut keep: impl FnMut(u64, u64) -> bool) -> Result<usize, SpillError> {
        let io = |source| SpillError::Io {
            path: self.dir.clone(),
            source,
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(io)?;
            if entry.file_type().map_err(io)?.is_dir() {
                continue;
            }
            let name = entry.file_name();
            let parsed = name.to_str().and_then(|n| {
                let (id, name) = n.split_once('-')?;
                Some((id.parse::<u64>().ok()?, name.parse::<u64>().ok()?))
            });
            if parsed.is_none_or(|(id, name)| !keep(id, name)) {
                std::fs::remove_file(entry.path()).map_err(io)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_round_trips_and_is_never_a_value() {
        let m = Marker::of(7, &[1u8; 200_000]);
        assert_eq!(Marker::decode(&m.encode()), Some(m));
        assert_eq!(Marker::decode(&[8u8; Marker::LEN]), None);
        assert_eq!(Marker::decode(&[0u8; 4097]), None);
    }

    #[test]
    fn values_are_written_read_checked_and_removed_after_a_flush() {
        let tmp = tempfile::tempdir().unwrap();
        let spill = Spill::new(tmp.path());
        let dir = spill.dir("log");
        let big = vec![5u8; SPILL_MIN];
        let m = dir.write(&[(9, 2, &big)]).unwrap();
        assert_eq!(dir.read(9, &m[0]).unwrap(), big);
        // A damaged file is refused, not returned.
        let path = tmp.path().join("spill/log").join(format!("{:020}-2", 9));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            dir.read(9, &m[0]),
            Err(SpillError::Corrupt { .. })
        ));
        dir.write(&[(9, 2, &big)]).unwrap();
        // Held by a consistent read: a flush keeps the file.
        dir.remove_later(9, 2);
        let hold = spill.hold();
        spill.after_flush(spill.before_flush());
        spill.settle();
        assert!(path.exists());
        drop(hold);
        spill.after_flush(spill.before_flush());
        spill.settle();
        assert!(!path.exists());
        assert!(matches!(
            dir.read(9, &m[0]),
            Err(SpillError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_sweep_removes_what_no_marker_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Spill::new(tmp.path()).dir("machine");
        dir.write(&[(1, 0, b"a"), (2, 0, b"b")]).unwrap();
        std::fs::write(tmp.path().join("spill/machine/x.tmp"), b"").unwrap();
        assert_eq!(dir.sweep(|id, _| id == 1).unwrap(), 2);
        assert!(dir.read(1, &Marker::of(0, b"a")).is_ok());
    }
}
