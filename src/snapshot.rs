//! Snapshot files: every record of the machine's tree at one applied index,
//! with the raft index, term and membership they stand for.
//!
//! One format serves three uses: a leader sends it to a follower that fell
//! behind the compacted log, `drover snapshot save` writes it as a backup,
//! and `drover snapshot restore` seeds a new node from it.
//!
//! Layout: `DROVSNP1`, index u64, term u64, conf state (u32 length +
//! protobuf), member addresses (u32 length + bincode), then records (u32 key length, u32 value length, key, value),
//! then an end marker (u32::MAX), the record count (u64) and a CRC32 of
//! everything before it. Integers are big-endian. A file is written to a
//! temp name, synced and renamed, so a reader never sees half of one.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use protobuf::Message as _;
use raft::eraftpb::ConfState;

const MAGIC: &[u8; 8] = b"DROVSNP1";
const END: u32 = u32::MAX;
/// Records written per sled batch when loading; see `Machine::wants_commit`.
const LOAD_BATCH: usize = 1000;
/// Longest key or value accepted from a file: a corrupt length must not
/// make us allocate gigabytes.
const MAX_RECORD: u32 = 256 * 1024 * 1024;

/// Why a snapshot file could not be written, read or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("snapshot file {path}: {source}")]
    Io {
        /// The snapshot file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a whole drover snapshot: truncated, damaged, or another
    /// program's.
    #[error("snapshot file {path} is not a valid drover snapshot ({reason}); it may be truncated or from another program: take a new one")]
    Corrupt {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it, such as "it ends early".
        reason: String,
    },
    /// sled failed while the machine's tree was read or loaded.
    #[error("while reading the machine tree for a snapshot: {0}")]
    Sled(#[from] sled::Error),
    /// The consistent read of the machine stopped, or could not start.
    #[error("while reading the machine for a snapshot: {0}")]
    Capture(String),
    /// A record of the snapshot could not be stored (a payload's file).
    #[error("while storing a record of the snapshot: {0}")]
    Store(String),
}

impl From<crate::machine::capture::CaptureError> for SnapshotError {
    fn from(e: crate::machine::capture::CaptureError) -> SnapshotError {
        SnapshotError::Capture(e.to_string())
    }
}

/// What a snapshot stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotMeta {
    /// The log index of the last entry the state includes.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The voters and learners as of that entry.
    pub conf_state: ConfState,
    /// Where each member is reached, so a node caught up by snapshot can
    /// talk to members added while it was away.
    pub addrs: BTreeMap<u64, String>,
}

/// Computes the CRC of everything that passes through.
struct Crc<T> {
    inner: T,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes `records` (in key order) as a snapshot at `path`; returns its size.
pub fn write<E: Into<SnapshotError>>(
    path: &Path,
    meta: &SnapshotMeta,
    records: impl Iterator<Item = Result<(sled::IVec, sled::IVec), E>>,
) -> Result<u64, SnapshotError> {
    let tmp = path.with_extension("tmp");
    let written = write_via(&tmp, path, meta, records);
    if written.is_err() {
        // A half-written file is of no use, and a full disk needs the room.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn write_via<E: Into<SnapshotError>>(
    tmp: &Path,
    path: &Path,
    meta: &SnapshotMeta,
    records: impl Iterator<Item = Result<(sled::IVec, sled::IVec), E>>,
) -> Result<u64, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(tmp).map_err(io)?;
    let mut w = Crc {
        inner: BufWriter::with_capacity(1 << 20, Paced::new(file)),
        crc: crc32fast::Hasher::new(),
    };
    let conf = meta
        .conf_state
        .write_to_bytes()
        .map_err(|e| io(std::io::Error::other(e)))?;
    w.write_all(MAGIC).map_err(io)?;
    w.write_all(&meta.index.to_be_bytes()).map_err(io)?;
    w.write_all(&meta.term.to_be_bytes()).map_err(io)?;
    w.write_all(&(conf.len() as u32).to_be_bytes())
        .map_err(io)?;
    w.write_all(&conf).map_err(io)?;
    let addrs = bincode::serde::encode_to_vec(&meta.addrs, bincode::config::standard())
        .map_err(|e| io(std::io::Error::other(e)))?;
    w.write_all(&(addrs.len() as u32).to_be_bytes())
        .map_err(io)?;
    w.write_all(&addrs).map_err(io)?;
    let mut count = 0u64;
    for item in records {
        let (k, v) = item.map_err(Into::into)?;
        w.write_all(&(k.len() as u32).to_be_bytes()).map_err(io)?;
        w.write_all(&(v.len() as u32).to_be_bytes()).map_err(io)?;
        w.write_all(&k).map_err(io)?;
        w.write_all(&v).map_err(io)?;
        count += 1;
    }
    w.write_all(&END.to_be_bytes()).map_err(io)?;
    w.write_all(&count.to_be_bytes()).map_err(io)?;
    let crc = w.crc.clone().finalize();
    let mut inner = w.inner;
    inner.write_all(&crc.to_be_bytes()).map_err(io)?;
    let file = inner.into_inner().map_err(|e| io(e.into_error()))?.file;
    file.sync_all().map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    std::fs::rename(tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(size)
}

/// Starts writeback of a file every few MiB as it is written, so the final
/// sync has little left to do: a sync of hundreds of MiB at once holds the
/// disk long enough to stall the raft log's fdatasyncs behind it.
struct Paced {
    file: File,
    written: u64,
    started_to: u64,
}

/// How much of a snapshot file may be written before its writeback starts.
const WRITEBACK_EVERY: u64 = 8 << 20;

impl Paced {
    fn new(file: File) -> Paced {
        Paced {
            file,
            written: 0,
            started_to: 0,
        }
    }
}

impl Write for Paced {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started_to >= WRITEBACK_EVERY {
            start_writeback(&self.file, self.started_to, self.written - self.started_to);
            self.started_to = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

use crate::spill::start_writeback;

struct Reader {
    r: Crc<BufReader<File>>,
    path: PathBuf,
}

impl Reader {
    fn open(path: &Path) -> Result<(Reader, SnapshotMeta), SnapshotError> {
        let file = File::open(path).map_err(|source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut r = Reader {
            r: Crc {
                inner: BufReader::with_capacity(1 << 20, file),
                crc: crc32fast::Hasher::new(),
            },
            path: path.to_path_buf(),
        };
        let mut magic = [0u8; 8];
        r.exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(r.corrupt("it does not start with DROVSNP1"));
        }
        let index = r.u64()?;
        let term = r.u64()?;
        let len = r.u32()?;
        let conf = r.bytes(len)?;
        let conf_state = ConfState::parse_from_bytes(&conf)
            .map_err(|e| r.corrupt(format!("membership does not decode: {e}")))?;
        let len = r.u32()?;
        let raw = r.bytes(len)?;
        let addrs = bincode::serde::decode_from_slice(&raw, bincode::config::standard())
            .map(|(a, _)| a)
            .map_err(|e| r.corrupt(format!("member addresses do not decode: {e}")))?;
        Ok((
            r,
            SnapshotMeta {
                index,
                term,
                conf_state,
                addrs,
            },
        ))
    }

    fn corrupt(&self, reason: impl Into<String>) -> SnapshotError {
        SnapshotError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        self.r.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.corrupt("it ends early")
            } else {
                SnapshotError::Io {
                    path: self.path.clone(),
                    source: e,
                }
            }
        })
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn bytes(&mut self, len: u32) -> Result<Vec<u8>, SnapshotError> {
        if len > MAX_RECORD {
            return Err(self.corrupt(format!("a record claims {len} bytes")));
        }
        let mut v = vec![0u8; len as usize];
        self.exact(&mut v)?;
        Ok(v)
    }
}

/// Reads only the header of a snapshot file.
pub fn read_meta(path: &Path) -> Result<SnapshotMeta, SnapshotError> {
    Reader::open(path).map(|(_, meta)| meta)
}

/// Reads a whole snapshot, handing each record to `on_record`, and checks
/// its record count and CRC.
fn scan(
    path: &Path,
    mut on_record: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), SnapshotError>,
) -> Result<SnapshotMeta, SnapshotError> {
    let (mut r, meta) = Reader::open(path)?;
    let mut count = 0u64;
    loop {
        let klen = r.u32()?;
        if klen == END {
            break;
        }
        let vlen = r.u32()?;
        let k = r.bytes(klen)?;
        let v = r.bytes(vlen)?;
        on_record(k, v)?;
        count += 1;
    }
    let expected = r.u64()?;
    if expected != count {
        return Err(r.corrupt(format!("it holds {count} records but says {expected}")));
    }
    let crc = r.r.crc.clone().finalize();
    let mut stored = [0u8; 4];
    r.r.inner
        .read_exact(&mut stored)
        .map_err(|_| r.corrupt("it ends before its checksum"))?;
    if u32::from_be_bytes(stored) != crc {
        return Err(r.corrupt("its checksum does not match its contents"));
    }
    Ok(meta)
}

/// Reads a snapshot end to end and checks it, loading nothing.
pub fn verify(path: &Path) -> Result<SnapshotMeta, SnapshotError> {
    scan(path, |_, _| Ok(()))
}

/// Loads every record of a snapshot into `tree`, which should be empty, and
/// checks the file's CRC. On error the tree holds part of the snapshot and
/// must be thrown away.
/// `store_as` gives each record's stored form (the machine puts a large
/// payload in a file of its own).
pub fn load<E: std::fmt::Display>(
    path: &Path,
    tree: &sled::Tree,
    mut store_as: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), E>,
) -> Result<SnapshotMeta, SnapshotError> {
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    let meta = scan(path, |k, v| {
        let (k, v) = store_as(k, v).map_err(|e| SnapshotError::Store(e.to_string()))?;
        batch.insert(k, v);
        in_batch += 1;
        if in_batch == LOAD_BATCH {
            tree.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
        Ok(())
    })?;
    tree.apply_batch(batch)?;
    Ok(meta)
}

/// Snapshot files in `dir` (named `snap-INDEX-TERM.bin`), newest first.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    list_named(dir, "snap-")
}

/// Files `PREFIX*.bin` in `dir`, newest first: their names carry a
/// zero-padded index or time, so they sort by it.
pub fn list_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".bin"))
        })
        .collect();
    files.sort();
    files.reverse();
    files
}

/// The file name of the snapshot at (index, term) in `dir`.
pub fn path_for(dir: &Path, index: u64, term: u64) -> PathBuf {
    dir.join(format!("snap-{index:020}-{term}.bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_is(k: Vec<u8>, v: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), std::convert::Infallible> {
        Ok((k, v))
    }

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            index: 42,
            term: 7,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            },
            addrs: [
                (1, "127.0.0.1:1".to_string()),
                (4, "127.0.0.1:4".to_string()),
            ]
            .into(),
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .unwrap();
        let src = db.open_tree("src").unwrap();
        for i in 0u32..2500 {
            src.insert(i.to_be_bytes(), vec![i as u8; (i % 300) as usize])
                .unwrap();
        }
        let path = dir.path().join("s.bin");
        write(&path, &meta(), src.iter()).unwrap();
        assert_eq!(read_meta(&path).unwrap(), meta());
        let dst = db.open_tree("dst").unwrap();
        assert_eq!(load(&path, &dst, as_is).unwrap(), meta());
        let a: Vec<_> = src.iter().map(|r| r.unwrap()).collect();
        let b: Vec<_> = dst.iter().map(|r| r.unwrap()).collect();
        assert_eq!(a, b);

        // A flipped byte, a truncation and a foreign file are all refused.
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let err = load(&path, &db.open_tree("x").unwrap(), as_is).unwrap_err();
        assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
        std::fs::write(&path, &good[..good.len() - 10]).unwrap();
        let err = load(&path, &db.open_tree("y").unwrap(), as_is).unwrap_err();
        assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
        std::fs::write(&path, b"hello world, not a snapshot").unwrap();
        let err = read_meta(&path).unwrap_err();
        assert!(err.to_string().contains("DROVSNP1"), "{err}");
    }
}
