//! The node's sled database: the raft log, raft's hard and conf state, and the
//! tree the state machine owns. Implements raft's [`Storage`] over sled.
//!
//! Key layout of the `raft` tree: `e`+index entries (protobuf), `h` hard
//! state, `c` conf state, `s` the (index, term) the log was compacted to.
//! A Ready's entries and hard state are written as single inserts, in an
//! order whose every prefix is a valid log (see [`RaftStore::write`]); one
//! flush covers every write before it, so group commit costs one fsync
//! however many proposals it carries.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::snapshot::SnapshotMeta;
use crate::spill::{value_len as stored_len, Marker, Spill, SpillDir, SpillError, SPILL_MIN};

const ENTRY: u8 = b'e';
const HARD_STATE: &[u8] = b"h";
const CONF_STATE: &[u8] = b"c";
const COMPACTED: &[u8] = b"s";
/// The name of the tree that holds the machine's state; a snapshot install
/// loads a new tree and switches this name in the same batch that moves the
/// log past the snapshot, so a crash leaves one or the other, never a mix.
const ACTIVE_MACHINE: &[u8] = b"a";
/// The machine's tree in a new database, until a snapshot install switches
/// to another.
pub const DEFAULT_MACHINE_TREE: &str = "machine";
/// Index (and term) a new cluster's log starts after; see [`RaftStore::bootstrap`].
pub const INIT_INDEX: u64 = 5;
/// Addresses of members added at run time (bincode map of id to address).
const ADDRESSES: &[u8] = b"p";
/// The newest log entry format this node has applied (one byte).
const FORMAT_FLOOR: &[u8] = b"F";
/// Members removed, by the index of the change that removed them (bincode
/// map), so their messages are refused with the reason.
const REMOVED: &[u8] = b"R";
/// The cluster's incarnation (bincode u64; see `cluster::identity`).
const INCARNATION: &[u8] = b"N";

/// Why the raft store failed; a node cannot go on without it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled could not open the database; the message says what to do.
    #[error("cannot open the database in {path}: {source}; {}", open_advice(.source))]
    Open {
        /// The data dir.
        path: String,
        /// What sled said.
        source: sled::Error,
    },
    /// The data dir's filesystem has too little free space for sled to open the
    /// database; nothing was changed.
    #[error("cannot start on data dir {path}: its filesystem has {} free, and opening the database needs about {} (sled rewrites its snapshot file at every open). Nothing was changed. Free space on that filesystem or grow it, then start again (docs/operations.md, \"A disk fills\")", size(*.free), size(*.needs))]
    NoSpaceToOpen {
        /// The data dir.
        path: String,
        /// Free bytes on its filesystem.
        free: u64,
        /// Bytes opening needs: the size of sled's snapshot file, and headroom.
        needs: u64,
    },
    /// sled failed to read or write the raft tree.
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A log entry kept in a file of its own could not be written or read.
    #[error(transparent)]
    Spill(#[from] SpillError),
    /// A raft record does not decode: the data dir is damaged.
    #[error("raft record {key} is corrupt ({reason}); the data dir is damaged: restore it from a backup or re-sync this node from its peers")]
    Corrupt {
        /// The record's key: `raft/h`, `raft/e/INDEX`...
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

fn open_advice(e: &sled::Error) -> &'static str {
    match disk_fault(e) {
        Some(DiskFault::NoSpace) => "the disk is full: free space on that filesystem or grow it, then start again (docs/operations.md, \"A disk fills\")",
        Some(DiskFault::Io) => "the disk failed a read or write: check the device (dmesg); if it is sound, start again, else rebuild this node from its peers (docs/operations.md, \"Rebuild a node\")",
        None => "check that the directory exists, is writable and is not used by another drover process",
    }
}

/// A failure of the disk under the data dir, as opposed to a bug or bad
/// data: what an operator fixes by hand before the node can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// ENOSPC or EDQUOT: the filesystem (or the quota) is full.
    NoSpace,
    /// EIO: the device failed a write, a read or an fsync.
    Io,
}

/// The disk fault somewhere in `e`'s chain of causes, if there is one.
/// sled keeps only an io error's kind and text when it hands an error on
/// (its errors are cloned), so the text is read as well.
pub fn disk_fault(e: &(dyn std::error::Error + 'static)) -> Option<DiskFault> {
    fn of_io(e: &std::io::Error) -> Option<DiskFault> {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => return Some(DiskFault::NoSpace),
            Some(libc::EIO) => return Some(DiskFault::Io),
            _ => {}
        }
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Some(DiskFault::NoSpace)
            }
            _ => None,
        }
    }
    let mut next = Some(e);
    while let Some(e) = next {
        let found = e
            .downcast_ref::<std::io::Error>()
            .and_then(of_io)
            .or_else(|| match e.downcast_ref::<sled::Error>() {
                Some(sled::Error::Io(io)) => of_io(io),
                _ => None,
            });
        if found.is_some() {
            return found;
        }
        next = e.source();
    }
    let text = e.to_string();
    if text.contains("os error 28") || text.contains("No space left on device") {
        Some(DiskFault::NoSpace)
    } else if text.contains("os error 5)") || text.contains("Input/output error") {
        Some(DiskFault::Io)
    } else {
        None
    }
}

/// The node's sled database. The vendored sled's flush ends with an
/// `fdatasync` of its log (see vendor/sled/DROVER.md), so
/// [`Database::flush`] is durable.
#[derive(Clone)]
pub struct Database {
    db: sled::Db,
    spill: Arc<Spill>,
}

impl std::ops::Deref for Database {
    type Target = sled::Db;
    fn deref(&self) -> &sled::Db {
        &self.db
    }
}

impl Database {
    /// Makes everything written so far durable, then unlinks the spilled
    /// values whose markers that dropped.
    pub fn flush(&self) -> Result<(), sled::Error> {
        let dropped = self.spill.before_flush();
        if let Err(e) = self.db.flush() {
            self.spill.flush_failed(dropped);
            return Err(e);
        }
        self.spill.after_flush(dropped);
        Ok(())
    }

    /// Where values too large for sled go (see [`crate::spill`]).
    pub fn spill(&self) -> &Arc<Spill> {
        &self.spill
    }
}

/// Opens (or creates) the node's database.
pub fn open_db(path: &Path, cache_capacity_bytes: u64) -> Result<Database, StoreError> {
    check_can_open(path)?;
    let open_error = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity_bytes)
        // Durability comes from our explicit flush per Ready; sled's own
        // periodic flush would only add fsyncs on the hot path.
        .flush_every_ms(None)
        .open()
        .map_err(open_error)?;
    Ok(Database {
        db,
        spill: Spill::new(path),
    })
}

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn corrupt(key: impl Into<String>, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: key.into(),
        reason: reason.to_string(),
    }
}

fn to_raft(e: StoreError) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

/// The raft log and state in sled, with the bounds cached in memory.
pub struct RaftStore {
    db: Database,
    tree: sled::Tree,
    /// Entries of [`SPILL_MIN`] bytes or more, one file each (`log/INDEX-TERM`).
    files: SpillDir,
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the last compacted entry (0, 0 for a new log).
    compacted: (u64, u64),
    last_index: u64,
    /// The newest snapshot file on disk, offered to followers that fell
    /// behind the compacted log.
    latest_snapshot: Option<(SnapshotMeta, PathBuf)>,
    /// Raft asked for a snapshot newer than the one we have; the driver
    /// takes one after the current Ready.
    snapshot_wanted: AtomicBool,
    /// The newest entries, ending at `last_index`: raft reads entries back
    /// right after they are written, to send them and to apply them, and
    /// reading and parsing them out of sled cost ~5% of a leader's CPU.
    recent: EntryCache,
    /// The encoded size of every entry in the log, oldest first, and their
    /// sum: lets compaction keep the log under a byte bound as well as a
    /// count, since entries range from a few bytes to 256 KiB.
    sizes: std::collections::VecDeque<(u64, u32)>,
    log_bytes: u64,
}

/// Most bytes of entry data [`EntryCache`] keeps...
const CACHE_BYTES: usize = 8 << 20;
/// ...unless fewer entries than this are that large.
const CACHE_MIN_ENTRIES: usize = 3;

/// A contiguous run of the newest log entries, in memory.
#[derive(Default)]
struct EntryCache {
    entries: std::collections::VecDeque<Entry>,
    bytes: usize,
}

impl EntryCache {
    /// Its encoded size, which is what sled holds and what raft limits.
    fn size(e: &Entry) -> usize {
        e.compute_size() as usize
    }

    /// Adds what was just written (replacing any suffix it overwrites).
    fn append(&mut self, written: &[Entry]) {
        let Some(first) = written.first() else { return };
        while self.entries.back().is_some_and(|e| e.index >= first.index) {
            self.pop_back();
        }
        if self
            .entries
            .back()
            .is_some_and(|e| e.index + 1 != first.index)
        {
            self.clear();
        }
        for e in written {
            self.bytes += Self::size(e);
            self.entries.push_back(e.clone());
        }
        // At least the newest few, however large: raft reads an entry back
        // to apply it after the next ones are appended, and an entry of
        // large payloads read from its file costs a read and a checksum.
        while self.bytes > CACHE_BYTES && self.entries.len() > CACHE_MIN_ENTRIES {
            self.pop_front();
        }
    }

    /// Forgets entries up to `index` (compacted).
    fn drop_through(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            self.pop_front();
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= Self::size(&e);
        }
    }

    fn pop_back(&mut self) {
        if let Some(e) = self.entries.pop_back() {
            self.bytes -= Self::size(&e);
        }
    }

    fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.entries.front()?.index;
        let offset = usize::try_from(index.checked_sub(first)?).ok()?;
        self.entries.get(offset)
    }

    /// Entries `low..high` if all are here, at most `max_size` bytes (but
    /// at least one), as raft's `entries` asks.
    fn range(&self, low: u64, high: u64, max_size: u64) -> Option<Vec<Entry>> {
        if low >= high || self.get(low).is_none() || self.get(high - 1).is_none() {
            return None;
        }
        let entries = (low..high)
            .filter_map(|i| self.get(i))
            .map(|e| Ok::<_, std::convert::Infallible>((e.clone(), Self::size(e) as u64)));
        let Ok(out) = within_size(entries, max_size);
        Some(out)
    }
}

/// Entries in order while their encoded sizes add up to at most `max_size`,
/// but always the first, as raft's `entries` requires.
fn within_size<E>(
    entries: impl Iterator<Item = Result<(Entry, u64), E>>,
    max_size: u64,
) -> Result<Vec<Entry>, E> {
    let mut out = Vec::new();
    let mut size = 0u64;
    for item in entries {
        let (e, len) = item?;
        size += len;
        if !out.is_empty() && size > max_size {
            break;
        }
        out.push(e);
    }
    Ok(out)
}

impl RaftStore {
    /// Opens the raft tree of `db` and loads the hard state, membership and the
    /// log's bounds.
    pub fn open(db: &Database) -> Result<RaftStore, StoreError> {
        let tree = db.open_tree("raft")?;
        let hard_state = match tree.get(HARD_STATE)? {
            Some(b) => HardState::parse_from_bytes(&b).map_err(|e| corrupt("raft/h", e))?,
            None => HardState::default(),
        };
        let conf_state = match tree.get(CONF_STATE)? {
            Some(b) => ConfState::parse_from_bytes(&b).map_err(|e| corrupt("raft/c", e))?,
            None => ConfState::default(),
        };
        let compacted = match tree.get(COMPACTED)? {
            Some(b) if b.len() == 16 => (
                u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
                u64::from_be_bytes(b[8..].try_into().expect("8 bytes")),
            ),
            Some(_) => return Err(corrupt("raft/s", "expected 16 bytes")),
            None => (0, 0),
        };
        let last_index = match tree.scan_prefix([ENTRY]).next_back() {
            Some(item) => {
                let (k, _) = item?;
                u64::from_be_bytes(
                    k[1..]
                        .try_into()
                        .map_err(|_| corrupt("raft/e", "entry key is not 9 bytes"))?,
                )
            }
            None => compacted.0,
        };
        // Entries a compaction interrupted by a crash left behind.
        let below = entry_key(compacted.0 + 1);
        for item in tree.range(entry_key(0)..below) {
            let (k, _) = item?;
            tree.remove(k)?;
        }
        let mut sizes = std::collections::VecDeque::new();
        let mut log_bytes = 0u64;
        let mut spilled = std::collections::HashSet::new();
        for item in tree.range(below..entry_key(u64::MAX)) {
            let (k, v) = item?;
            let index = u64::from_be_bytes(
                k[1..]
                    .try_into()
                    .map_err(|_| corrupt("raft/e", "entry key is not 9 bytes"))?,
            );
            if let Some(m) = Marker::decode(&v) {
                spilled.insert((index, m.name));
            }
            let len = stored_len(&v).min(u64::from(u32::MAX));
            sizes.push_back((index, len as u32));
            log_bytes = log_bytes.saturating_add(len);
        }
        // Files of entries compacted or overwritten before a crash let their
        // removal happen, and of entries whose marker never became durable.
        let files = db.spill().dir("log");
        files.sweep(|index, term| spilled.contains(&(index, term)))?;
        Ok(RaftStore {
            db: db.clone(),
            tree,
            files,
            hard_state,
            conf_state,
            compacted,
            last_index,
            latest_snapshot: None,
            snapshot_wanted: AtomicBool::new(false),
            recent: EntryCache::default(),
            sizes,
            log_bytes,
        })
    }

    /// Bytes of the entries in the log.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// The index through which entries must be dropped to keep at most
    /// `max` bytes in the log (the compacted index when it is under).
    pub fn index_keeping_bytes(&self, max: u64) -> u64 {
        let mut over = self.log_bytes.saturating_sub(max);
        let mut upto = self.compacted.0;
        for &(index, bytes) in &self.sizes {
            if over == 0 {
                break;
            }
            over = over.saturating_sub(u64::from(bytes));
            upto = index;
        }
        upto
    }

    fn forget_sizes_through(&mut self, index: u64) {
        while let Some(&(i, bytes)) = self.sizes.front() {
            if i > index {
                break;
            }
            self.log_bytes -= u64::from(bytes);
            self.sizes.pop_front();
        }
    }

    fn forget_sizes_from(&mut self, index: u64) {
        while let Some(&(i, bytes)) = self.sizes.back() {
            if i < index {
                break;
            }
            self.log_bytes -= u64::from(bytes);
            self.sizes.pop_back();
        }
    }

    /// Addresses of the members added since the cluster started.
    /// The bincode record at `key` (its default if there is none).
    fn record<T: serde::de::DeserializeOwned + Default>(
        &self,
        key: &[u8],
    ) -> Result<T, StoreError> {
        let name = || format!("raft/{}", String::from_utf8_lossy(key));
        match self.tree.get(key)? {
            Some(b) => bincode::serde::decode_from_slice(&b, bincode::config::standard())
                .map(|(m, _)| m)
                .map_err(|e| corrupt(name(), e)),
            None => Ok(T::default()),
        }
    }

    fn set_record<T: serde::Serialize>(&mut self, key: &[u8], value: &T) -> Result<(), StoreError> {
        let bytes = bincode::serde::encode_to_vec(value, bincode::config::standard())
            .map_err(|e| corrupt(format!("raft/{}", String::from_utf8_lossy(key)), e))?;
        self.tree.insert(key, bytes)?;
        Ok(())
    }

    /// Members' gRPC addresses by node id, as the log's membership changes left
    /// them (empty in a new store); the config's `peers` fill in the rest.
    pub fn addresses(&self) -> Result<std::collections::BTreeMap<u64, String>, StoreError> {
        self.record(ADDRESSES)
    }

    /// Stores the members' addresses; durable with the next flush.
    pub fn set_addresses(
        &mut self,
        addrs: &std::collections::BTreeMap<u64, String>,
    ) -> Result<(), StoreError> {
        self.set_record(ADDRESSES, addrs)
    }

    /// The cluster incarnation this node belongs to (0: none known yet).
    pub fn incarnation(&self) -> Result<u64, StoreError> {
        self.record(INCARNATION)
    }

    /// Stores the cluster incarnation this node belongs to; durable with the next
    /// flush.
    pub fn set_incarnation(&mut self, value: u64) -> Result<(), StoreError> {
        self.set_record(INCARNATION, &value)
    }

    /// Members removed from the cluster, with the log index of the
    /// configuration change that removed each (until one adds it again).
    pub fn removed(&self) -> Result<std::collections::BTreeMap<u64, u64>, StoreError> {
        self.record(REMOVED)
    }

    /// Stores the removed members and the index that removed each; durable with
    /// the next flush.
    pub fn set_removed(
        &mut self,
        removed: &std::collections::BTreeMap<u64, u64>,
    ) -> Result<(), StoreError> {
        self.set_record(REMOVED, removed)
    }

    /// The newest entry format this node applied (1 if none recorded):
    /// once every voter applied a format, a leader never writes below it.
    pub fn format_floor(&self) -> Result<u8, StoreError> {
        Ok(self
            .tree
            .get(FORMAT_FLOOR)?
            .and_then(|b| b.first().copied())
            .unwrap_or(1))
    }

    /// Stores the newest entry format this node applied; durable with the next
    /// flush.
    pub fn set_format_floor(&mut self, format: u8) -> Result<(), StoreError> {
        self.tree.insert(FORMAT_FLOOR, vec![format])?;
        Ok(())
    }

    /// The tree the machine lives in.
    pub fn machine_tree(&self) -> Result<String, StoreError> {
        Ok(match self.tree.get(ACTIVE_MACHINE)? {
            Some(name) => String::from_utf8(name.to_vec()).map_err(|e| corrupt("raft/a", e))?,
            None => DEFAULT_MACHINE_TREE.to_string(),
        })
    }

    /// Offers the snapshot at `path` to followers that fall behind the compacted
    /// log, and clears raft's wish for one.
    pub fn set_latest_snapshot(&mut self, meta: SnapshotMeta, path: PathBuf) {
        self.latest_snapshot = Some((meta, path));
        self.snapshot_wanted.store(false, Ordering::Relaxed);
    }

    /// The newest snapshot followers are offered, and its file; None while
    /// this node has none (the newest on disk is taken at start).
    pub fn latest_snapshot(&self) -> Option<&(SnapshotMeta, PathBuf)> {
        self.latest_snapshot.as_ref()
    }

    /// Whether raft asked for a snapshot we did not have.
    pub fn snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.load(Ordering::Relaxed)
    }

    /// Replaces the log with a snapshot's position: drops every entry, moves
    /// the compacted point, membership and commit to the snapshot, and makes
    /// `machine_tree` the machine's tree, in one batch, flushed.
    pub fn apply_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        machine_tree: &str,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for i in self.compacted.0 + 1..=self.last_index {
            batch.remove(&entry_key(i)[..]);
        }
        batch.insert(ACTIVE_MACHINE, machine_tree.as_bytes());
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&meta.index.to_be_bytes());
        s[8..].copy_from_slice(&meta.term.to_be_bytes());
        batch.insert(COMPACTED, &s[..]);
        let cs = meta
            .conf_state
            .write_to_bytes()
            .map_err(|e| corrupt("raft/c", e))?;
        batch.insert(CONF_STATE, cs);
        let mut hs = self.hard_state.clone();
        hs.commit = hs.commit.max(meta.index);
        hs.term = hs.term.max(meta.term);
        batch.insert(
            HARD_STATE,
            hs.write_to_bytes().map_err(|e| corrupt("raft/h", e))?,
        );
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        // The log is empty now, and that is durable.
        self.files.sweep(|_, _| false)?;
        self.recent.clear();
        self.sizes.clear();
        self.log_bytes = 0;
        self.compacted = (meta.index, meta.term);
        self.last_index = meta.index;
        self.conf_state = meta.conf_state.clone();
        self.hard_state = hs;
        Ok(())
    }

    /// True when this node has never been part of a cluster.
    pub fn is_new(&self) -> bool {
        self.conf_state.voters.is_empty() && self.conf_state.learners.is_empty()
    }

    /// Writes the first configuration of a new cluster.
    ///
    /// The log starts as if compacted at [`INIT_INDEX`]: a node that joins
    /// later has an empty log, so the leader must send it a snapshot, which
    /// carries the membership. (Replaying from index 1 would not: the first
    /// membership is in no entry.)
    pub fn bootstrap(&mut self, voters: Vec<u64>) -> Result<(), StoreError> {
        let meta = SnapshotMeta {
            index: INIT_INDEX,
            term: INIT_INDEX,
            conf_state: ConfState {
                voters,
                ..Default::default()
            },
            addrs: Default::default(),
        };
        self.apply_snapshot(&meta, DEFAULT_MACHINE_TREE)
    }

    /// Stores the membership a configuration change left; durable with the next
    /// flush.
    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<(), StoreError> {
        let bytes = cs.write_to_bytes().map_err(|e| corrupt("raft/c", e))?;
        self.tree.insert(CONF_STATE, bytes)?;
        self.conf_state = cs;
        Ok(())
    }

    /// Raft's term, vote and commit index as last stored.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Appends entries (replacing any conflicting suffix) and stores the hard
    /// state, in an order safe to cut short, without flushing: the caller makes it
    /// durable with [`RaftStore::flush`] (or the driver's flusher thread)
    /// before it counts as persisted.
    pub fn write(&mut self, entries: &[Entry], hs: Option<&HardState>) -> Result<(), StoreError> {
        if let Some(last) = entries.last() {
            // A new leader may overwrite an uncommitted suffix of ours.
            // Removed from the end backwards and written forwards, so any
            // prefix of these writes that survives a crash is a gap-free log
            // that matches the leader's wherever it has entries.
            // Everything from the first new index is removed first, so a
            // crash midway never leaves old entries after new ones.
            let first = entries[0].index;
            for stale in (first..=self.last_index).rev() {
                if let Some(old) = self.tree.remove(entry_key(stale))? {
                    self.drop_stored(stale, &old);
                }
            }
            self.forget_sizes_from(first);
            let mut encoded = Vec::with_capacity(entries.len());
            for e in entries {
                encoded.push(e.write_to_bytes().map_err(|err| corrupt("raft/e", err))?);
            }
            // Large entries go to files first, synced: a marker must never
            // reach the disk before what it stands for.
            let large: Vec<(u64, u64, &[u8])> = entries
                .iter()
                .zip(&encoded)
                .filter(|(_, b)| b.len() >= SPILL_MIN)
                .map(|(e, b)| (e.index, e.term, &b[..]))
                .collect();
            let mut markers = self.files.write(&large)?.into_iter();
            for (e, bytes) in entries.iter().zip(encoded) {
                self.sizes.push_back((e.index, bytes.len() as u32));
                self.log_bytes += bytes.len() as u64;
                let stored = if bytes.len() >= SPILL_MIN {
                    markers.next().map(|m| m.encode()).unwrap_or(bytes)
                } else {
                    bytes
                };
                self.tree.insert(entry_key(e.index), stored)?;
            }
            self.recent.append(entries);
            self.last_index = last.index;
        }
        if let Some(hs) = hs {
            let bytes = hs.write_to_bytes().map_err(|e| corrupt("raft/h", e))?;
            self.tree.insert(HARD_STATE, bytes)?;
            self.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Records a commit index learned from a light ready. Not flushed: raft
    /// recomputes the commit index after a restart.
    pub fn set_commit(&mut self, commit: u64) -> Result<(), StoreError> {
        self.hard_state.commit = commit;
        let bytes = self
            .hard_state
            .write_to_bytes()
            .map_err(|e| corrupt("raft/h", e))?;
        self.tree.insert(HARD_STATE, bytes)?;
        Ok(())
    }

    /// Drops entries up to and including `index`, which must be applied.
    /// Drops the log up to `index`. The new compaction point is written
    /// first and the entries removed one by one after it (not in one sled
    /// batch: a batch that size holds far more memory, and stalls the
    /// driver): a crash midway leaves entries below the point, which
    /// [`RaftStore::open`] removes, never a gap above it.
    pub fn compact(&mut self, index: u64) -> Result<(), StoreError> {
        if index <= self.compacted.0 || index > self.last_index {
            return Ok(());
        }
        let term = self.term(index).map_err(|e| corrupt("raft/e", e))?;
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&index.to_be_bytes());
        s[8..].copy_from_slice(&term.to_be_bytes());
        self.tree.insert(COMPACTED, &s[..])?;
        let old = self.compacted.0;
        self.compacted = (index, term);
        self.recent.drop_through(index);
        self.forget_sizes_through(index);
        for i in old + 1..=index {
            if let Some(stored) = self.tree.remove(entry_key(i))? {
                self.drop_stored(i, &stored);
            }
        }
        Ok(())
    }

    /// Queues the file of a removed entry's marker for removal once the
    /// removal is durable.
    fn drop_stored(&self, index: u64, stored: &[u8]) {
        if let Some(m) = Marker::decode(stored) {
            self.files.remove_later(index, m.name);
        }
    }

    /// An entry from its stored form: its protobuf, or the marker of the
    /// file that holds it.
    fn parse_entry(&self, index: u64, stored: &[u8]) -> Result<Entry, StoreError> {
        let spilled;
        let proto = match Marker::decode(stored) {
            Some(m) => {
                spilled = self.files.read(index, &m)?;
                &spilled[..]
            }
            None => stored,
        };
        Entry::parse_from_bytes(proto).map_err(|e| corrupt(format!("raft/e/{index}"), e))
    }

    /// Index of the last entry compacted away (0 in a new log); the log holds
    /// the entries after it.
    pub fn compacted_index(&self) -> u64 {
        self.compacted.0
    }

    /// The term of a stored entry; a spilled one's marker names it, so its
    /// file is not read.
    fn stored_term(&self, index: u64) -> Result<u64, StoreError> {
        match self.tree.get(entry_key(index))? {
            Some(b) => match Marker::decode(&b) {
                Some(m) => Ok(m.name),
                None => self.parse_entry(index, &b).map(|e| e.term),
            },
            None => Err(corrupt(
                format!("raft/e/{index}"),
                "entry is missing from the log",
            )),
        }
    }
}

impl Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.compacted.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        if let Some(cached) = self.recent.range(low, high, max_size) {
            return Ok(cached);
        }
        let stored = self
            .tree
            .range(entry_key(low)..entry_key(high))
            .map(|item| {
                let (k, v) = item.map_err(|e| to_raft(e.into()))?;
                let index = k
                    .get(1..)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| to_raft(corrupt("raft/e", "entry key is not 9 bytes")))?;
                let e = self.parse_entry(index, &v).map_err(to_raft)?;
                Ok::<_, raft::Error>((e, stored_len(&v)))
            });
        let out = within_size(stored, max_size)?;
        if out.is_empty() && low < high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.compacted.0 {
            return Ok(self.compacted.1);
        }
        if idx < self.compacted.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(e) = self.recent.get(idx) {
            return Ok(e.term);
        }
        self.stored_term(idx).map_err(to_raft)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.compacted.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    /// The newest snapshot file, if it is recent enough. Its data is the
    /// file's path: the transport streams the file itself. Raft treats any
    /// error but "temporarily unavailable" as fatal, so that is the only one.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // A snapshot from before `to` joined would be refused by it.
        let names = |cs: &ConfState| cs.voters.contains(&to) || cs.learners.contains(&to);
        match &self.latest_snapshot {
            Some((meta, path))
                if meta.index >= request_index
                    && meta.index >= self.compacted.0
                    && names(&meta.conf_state) =>
            {
                let mut snap = Snapshot {
                    data: path.to_string_lossy().into_owned().into_bytes().into(),
                    ..Default::default()
                };
                let md = snap.mut_metadata();
                md.index = meta.index;
                md.term = meta.term;
                md.set_conf_state(meta.conf_state.clone());
                Ok(snap)
            }
            _ => {
                self.snapshot_wanted.store(true, Ordering::Relaxed);
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

/// Refuses to open a data dir whose filesystem has too little space to
/// open the database without failing part way (sled rewrites its snapshot
/// file at every open). Checked before anything is written, so a node that
/// a supervisor restarts on a full disk changes nothing, however often.
pub fn check_can_open(data_dir: &Path) -> Result<(), StoreError> {
    let Some(free) = crate::resources::free_space(data_dir) else {
        return Ok(());
    };
    let snapshot = std::fs::read_dir(data_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("snap.") && !name.ends_with(".generating")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    let needs = snapshot + crate::resources::OPEN_HEADROOM;
    if free < needs {
        return Err(StoreError::NoSpaceToOpen {
            path: data_dir.display().to_string(),
            free,
            needs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_without_room_to_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_can_open(dir.path()).is_ok());
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 4].into(),
            ..Default::default()
        }
    }

    #[test]
    fn large_entries_live_in_files_until_dropped_and_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path(), 1 << 20).unwrap();
        let mut s = RaftStore::open(&db).unwrap();
        let big = |index: u64, term: u64| Entry {
            index,
            term,
            data: vec![index as u8; SPILL_MIN + 10].into(),
            ..Default::default()
        };
        let files = |s: &RaftStore| {
            // Unlinks happen on a thread of their own, after the flush.
            s.db.spill().settle();
            let mut names: Vec<String> = std::fs::read_dir(dir.path().join("spill/log"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        s.write(&[big(1, 1), entry(2, 1), big(3, 1), big(4, 1)], None)
            .unwrap();
        s.flush().unwrap();
        assert_eq!(files(&s).len(), 3);
        // Sizes count the entries, not their markers.
        assert!(s.log_bytes() > 3 * SPILL_MIN as u64);
        // Read back through sled (not the cache) after a reopen.
        drop(s);
        let mut s = RaftStore::open(&db).unwrap();
        let got = s
            .entries(1, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got[0], big(1, 1));
        assert_eq!(got[2], big(3, 1));
        // A new leader overwrites 4; the old file goes at the next flush,
        // not before: until then the removal may not be durable.
        s.write(&[big(4, 2)], None).unwrap();
        assert_eq!(files(&s).len(), 4);
        s.flush().unwrap();
        assert!(files(&s).iter().any(|n| n.ends_with("-2")));
        assert_eq!(files(&s).len(), 3);
        s.compact(3).unwrap();
        s.flush().unwrap();
        assert_eq!(files(&s), vec![format!("{:020}-2", 4)]);
        assert_eq!(s.term(4).unwrap(), 2);
        // A file whose marker never became durable is swept at open; one
        // whose contents are damaged is an error, not a wrong entry.
        std::fs::write(
            dir.path().join("spill/log").join(format!("{:020}-9", 7)),
            b"x",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("spill/log").join(format!("{:020}-2", 4)),
            b"x",
        )
        .unwrap();
        drop(s);
        let s = RaftStore::open(&db).unwrap();
        assert_eq!(files(&s).len(), 1);
        let err = s
            .entries(4, 5, None, GetEntriesContext::empty(false))
            .unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn persists_truncates_compacts_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path(), 1 << 20).unwrap();
        let mut s = RaftStore::open(&db).unwrap();
        assert!(s.is_new());
        s.set_conf_state(ConfState {
            voters: vec![1],
            ..Default::default()
        })
        .unwrap();
        let entries: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
        let hs = HardState {
            term: 1,
            commit: 3,
            ..Default::default()
        };
        s.write(&entries, Some(&hs)).unwrap();
        s.flush().unwrap();
        assert_eq!(s.last_index().unwrap(), 5);
        // A new leader overwrites 4..=5 with 4 only.
        s.write(&[entry(4, 2)], None).unwrap();
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(s.term(4).unwrap(), 2);
        let got = s
            .entries(1, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 4);
        let limited = s
            .entries(1, 5, Some(1), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(limited.len(), 1);
        s.compact(2).unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1);
        assert!(s
            .entries(2, 4, None, GetEntriesContext::empty(false))
            .is_err());
        drop(s);
        let s = RaftStore::open(&db).unwrap();
        assert!(!s.is_new());
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (3, 4));
        assert_eq!(s.hard_state().commit, 3);
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1]);
    }

    /// What raft reads from the in-memory run of recent entries must be what
    /// sled holds, through overwrites by a new leader and compaction.
    #[test]
    fn cached_entries_match_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path(), 1 << 20).unwrap();
        let mut s = RaftStore::open(&db).unwrap();
        s.write(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>(), None)
            .unwrap();
        s.write(&[entry(7, 2), entry(8, 2)], None).unwrap();
        s.write(&[entry(9, 3)], None).unwrap();
        s.compact(3).unwrap();
        let all = |s: &RaftStore| {
            let entries = s
                .entries(4, 10, None, GetEntriesContext::empty(false))
                .unwrap();
            let terms: Vec<u64> = (3..=9).map(|i| s.term(i).unwrap()).collect();
            (entries, terms)
        };
        let cached = all(&s);
        assert_eq!(cached.1, vec![1, 1, 1, 1, 2, 2, 3]);
        assert_eq!(s.recent.get(3), None, "compacted entries leave the cache");
        drop(s);
        let reopened = RaftStore::open(&db).unwrap();
        assert!(reopened.recent.entries.is_empty());
        assert_eq!(all(&reopened), cached);
    }

    #[test]
    fn corrupt_hard_state_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path(), 1 << 20).unwrap();
        db.open_tree("raft")
            .unwrap()
            .insert(HARD_STATE, &[0xff, 0xff, 0xff][..])
            .unwrap();
        let err = RaftStore::open(&db).err().unwrap().to_string();
        assert!(err.contains("raft/h"), "{err}");
    }

    #[test]
    fn entries_a_crashed_compaction_left_behind_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path(), 1 << 20).unwrap();
        let mut s = RaftStore::open(&db).unwrap();
        s.set_conf_state(ConfState {
            voters: vec![1],
            ..Default::default()
        })
        .unwrap();
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
        s.write(&entries, None).unwrap();
        s.compact(6).unwrap();
        // As if the process died after writing the compaction point but
        // before removing every entry below it.
        s.tree.insert(entry_key(3), vec![1u8]).unwrap();
        drop(s);
        let s = RaftStore::open(&db).unwrap();
        assert_eq!(s.first_index().unwrap(), 7);
        assert_eq!(s.last_index().unwrap(), 10);
        assert!(s.tree.get(entry_key(3)).unwrap().is_none());
        assert_eq!(s.term(8).unwrap(), 1);
    }
}
