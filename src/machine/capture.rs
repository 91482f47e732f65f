//! A consistent read of the machine's tree at one applied index, taken while
//! apply goes on: what a snapshot is written from, on a thread of its own,
//! so the raft loop keeps ticking, heartbeating and applying.
//!
//! sled 0.34 has no read snapshots, so this is a fuzzy copy made exact with
//! before-images. The reader walks the tree in key order, a slice at a
//! time, and remembers how far it got (the cursor). Before each commit
//! writes its batch, the machine hands the batch's keys to the capture,
//! which saves the committed value (or its absence) of every key the reader
//! has not passed yet, unless already saved. The reader takes a key's saved
//! value over the tree's, skips keys saved as absent (created after the
//! capture point) and adds saved keys the tree no longer has (removed after
//! it). Both sides do their part under one lock, so for every key the
//! reader either reads it before any later write, or reads its saved value.
//!
//! What it costs: nothing while no capture runs (one `Option` check per
//! commit); while one runs, a `get` per written key not yet passed and a
//! lock per commit and per slice, and memory for the values written during
//! the capture, bounded by the write rate times the capture's duration.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sled::IVec;

/// Keys the reader takes from the tree per turn of the lock. Small enough
/// that a commit waiting for the lock waits well under a millisecond.
const SLICE: usize = 256;

#[derive(Default)]
struct State {
    /// The last key the reader returned; None before the first.
    cursor: Option<IVec>,
    /// Committed values at the capture point of keys written since, that
    /// the reader had not passed when they were written. None: the key did
    /// not exist.
    before: BTreeMap<IVec, Option<IVec>>,
    /// The reader reached the end (or gave up): nothing more to save.
    done: bool,
    /// The tree was replaced (a snapshot installed): the read is void.
    cancelled: bool,
}

/// The capture's shared state; the machine holds one while it runs.
#[derive(Default)]
pub struct Capture {
    state: Mutex<State>,
}

impl Capture {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A reader thread that panicked leaves the state consistent: every
        // change under the lock is a single insert or assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves the committed value of each of `keys` the reader has not
    /// passed. Called by commit before it writes them; `tree` still holds
    /// the values at the capture point for every key not saved yet.
    pub fn before_write<'a>(
        &self,
        tree: &sled::Tree,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> sled::Result<()> {
        let mut s = self.lock();
        if s.done || s.cancelled {
            return Ok(());
        }
        for key in keys {
            let passed = s.cursor.as_ref().is_some_and(|c| key <= &c[..]);
            if passed || s.before.contains_key(key) {
                continue;
            }
            let value = tree.get(key)?;
            s.before.insert(IVec::from(key), value);
        }
        Ok(())
    }

    /// Whether the machine may drop its handle: the reader is finished.
    pub fn finished(&self) -> bool {
        let s = self.lock();
        s.done || s.cancelled
    }

    /// Voids the read: the tree it reads is being replaced.
    pub fn cancel(&self) {
        self.lock().cancelled = true;
    }
}

/// The records of the tree as they were at the capture point, in key
/// order. Runs on any thread; see the module doc.
pub struct CaptureReader {
    capture: Arc<Capture>,
    tree: sled::Tree,
    ready: std::collections::VecDeque<(IVec, IVec)>,
    /// Where spilled payloads are, and the hold that keeps the ones dropped
    /// during the read: records are handed out with their payloads, so a
    /// snapshot never depends on the files of the node that wrote it.
    files: Option<(crate::spill::SpillDir, crate::spill::SpillHold)>,
}

impl CaptureReader {
    /// Starts a capture of `tree` as it is now. The caller must hand every
    /// later write of the tree to [`Capture::before_write`] first.
    pub fn start(tree: sled::Tree) -> (Arc<Capture>, CaptureReader) {
        let capture = Arc::new(Capture::default());
        let reader = CaptureReader {
            capture: capture.clone(),
            tree,
            ready: Default::default(),
            files: None,
        };
        (capture, reader)
    }

    /// Hands out spilled payloads from `files` instead of their markers;
    /// files dropped from now on stay until this reader is dropped.
    pub fn with_files(mut self, files: crate::spill::SpillDir) -> CaptureReader {
        let hold = files.spill().hold();
        self.files = Some((files, hold));
        self
    }

    /// A record as a snapshot carries it: a spilled payload's bytes in
    /// place of its marker.
    fn unspilled(&self, k: IVec, v: IVec) -> Result<(IVec, IVec), CaptureError> {
        let Some((files, _)) = &self.files else {
            return Ok((k, v));
        };
        if k.first() != Some(&super::keys::SPILLED) {
            return Ok((k, v));
        }
        let spill = |e: super::MachineError| CaptureError::Spill(e.to_string());
        let id = super::keys::job_key_id(&k).map_err(spill)?;
        let bytes = super::keys::read_spilled(Some(files), id, &v).map_err(spill)?;
        // Under its key of the tree's layout, so any build reads the file.
        let payload = super::keys::with_prefix(super::keys::PAYLOAD, &k);
        Ok((IVec::from(payload), IVec::from(bytes.to_vec())))
    }

    /// Reads the next slice into `ready`; false at the end.
    ///
    /// The tree is read without the lock (a reader at low priority must
    /// never hold up a commit): a value read then is the one at the capture
    /// point unless the key was written since, and every such write saved
    /// that value first, so under the lock the saved values override.
    fn fill(&mut self) -> Result<bool, CaptureError> {
        let cursor = {
            let s = self.capture.lock();
            if s.cancelled {
                return Err(CaptureError::Cancelled);
            }
            if s.done {
                return Ok(false);
            }
            s.cursor.clone()
        };
        let range = match &cursor {
            Some(c) => self.tree.range::<&[u8], _>((
                std::ops::Bound::Excluded(&c[..]),
                std::ops::Bound::Unbounded,
            )),
            None => self.tree.iter(),
        };
        let mut from_tree = Vec::with_capacity(SLICE);
        for item in range.take(SLICE) {
            from_tree.push(item?);
        }
        // The slice covers keys up to its last one, or everything left.
        let end = if from_tree.len() < SLICE {
            None
        } else {
            from_tree.last().map(|(k, _)| k.clone())
        };
        let mut s = self.capture.lock();
        if s.cancelled {
            return Err(CaptureError::Cancelled);
        }
        let lower = match &cursor {
            Some(c) => std::ops::Bound::Excluded(c.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let upper = match &end {
            Some(e) => std::ops::Bound::Included(e.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let saved: Vec<(IVec, Option<IVec>)> = s
            .before
            .range((lower, upper))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match &end {
            Some(e) => {
                // Saved values at or before the new cursor are read here.
                s.before = s.before.split_off(&e[..]);
                s.before.remove(&e[..]);
                s.cursor = Some(e.clone());
            }
            None => {
                s.done = true;
                s.before.clear();
            }
        }
        drop(s);
        // Merge the tree's slice with the saved values, saved ones winning.
        let mut saved = saved.into_iter().peekable();
        for (k, v) in from_tree {
            while let Some((sk, sv)) = saved.next_if(|(sk, _)| *sk < k) {
                if let Some(sv) = sv {
                    self.ready.push_back((sk, sv));
                }
            }
            match saved.next_if(|(sk, _)| *sk == k) {
                Some((_, Some(sv))) => self.ready.push_back((k, sv)),
                Some((_, None)) => {} // created after the capture point
                None => self.ready.push_back((k, v)),
            }
        }
        for (sk, sv) in saved {
            if let Some(sv) = sv {
                self.ready.push_back((sk, sv));
            }
        }
        Ok(true)
    }
}

impl Iterator for CaptureReader {
    type Item = Result<(IVec, IVec), CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, v)) = self.ready.pop_front() {
                return Some(self.unspilled(k, v));
            }
            match self.fill() {
                Ok(true) => continue,
                Ok(false) => return None,
                Err(e) => {
                    // Stop saving: nobody will read what is saved.
                    self.capture.lock().done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Drop for CaptureReader {
    fn drop(&mut self) {
        // A reader that stops early (an error writing the file) must not
        // leave the machine saving values forever.
        let mut s = self.capture.lock();
        s.done = true;
        s.before.clear();
    }
}

/// Why a consistent read stopped.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// sled failed while reading the tree.
    #[error("reading the machine tree: {0}")]
    Sled(#[from] sled::Error),
    /// A snapshot was installed meanwhile; what was read is void.
    #[error("the machine's tree was replaced by an installed snapshot while it was being read")]
    Cancelled,
    /// A spilled payload could not be read.
    #[error("{0}")]
    Spill(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tree() -> sled::Tree {
        sled::Config::new()
            .temporary(true)
            .open()
            .unwrap()
            .open_tree("t")
            .unwrap()
    }

    /// Writes `batch` as the machine's commit does: capture first.
    fn commit(tree: &sled::Tree, capture: &Capture, batch: &[(Vec<u8>, Option<Vec<u8>>)]) {
        capture
            .before_write(tree, batch.iter().map(|(k, _)| &k[..]))
            .unwrap();
        let mut b = sled::Batch::default();
        for (k, v) in batch {
            match v {
                Some(v) => b.insert(&k[..], &v[..]),
                None => b.remove(&k[..]),
            }
        }
        tree.apply_batch(b).unwrap();
    }

    fn contents(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
        tree.iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect()
    }

    proptest! {
        /// Whatever is written, removed or created while the reader goes,
        /// and wherever the reader is, it returns the tree as it was when
        /// the capture started.
        #[test]
        fn reads_the_tree_as_it_was(
            initial in prop::collection::btree_map(0u16..2000, any::<u8>(), 0..1200),
            writes in prop::collection::vec(
                prop::collection::vec((0u16..2000, prop::option::of(any::<u8>())), 1..40),
                0..40,
            ),
            read_between in prop::collection::vec(0usize..400, 40),
        ) {
            let t = tree();
            for (k, v) in &initial {
                t.insert(k.to_be_bytes(), vec![*v]).unwrap();
            }
            let expected = contents(&t);
            let (capture, mut reader) = CaptureReader::start(t.clone());
            let mut got = Vec::new();
            for (batch, n) in writes.iter().zip(&read_between) {
                for _ in 0..*n {
                    match reader.next() {
                        Some(r) => {
                            let (k, v) = r.unwrap();
                            got.push((k.to_vec(), v.to_vec()));
                        }
                        None => break,
                    }
                }
                let batch: Vec<_> = batch
                    .iter()
                    .map(|(k, v)| (k.to_be_bytes().to_vec(), v.map(|v| vec![v])))
                    .collect();
                commit(&t, &capture, &batch);
            }
            for r in reader {
                let (k, v) = r.unwrap();
                got.push((k.to_vec(), v.to_vec()));
            }
            prop_assert_eq!(got, expected);
            prop_assert!(capture.finished());
        }
    }

    /// The reader on its own thread, a writer committing as fast as it can.
    #[test]
    fn reads_the_tree_as_it_was_while_another_thread_writes() {
        let t = tree();
        for k in 0u32..20_000 {
            t.insert(k.to_be_bytes(), vec![0]).unwrap();
        }
        let expected = contents(&t);
        let (capture, reader) = CaptureReader::start(t.clone());
        let reading = std::thread::spawn(move || {
            reader
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                .collect::<Vec<_>>()
        });
        let mut round = 0u32;
        while !capture.finished() && round < 100_000 {
            round += 1;
            // Rewrite, remove and create keys all over the key space.
            let batch: Vec<_> = (0..16u32)
                .map(|i| {
                    let k = (round.wrapping_mul(7919) + i * 1301) % 25_000;
                    let v = (k % 3 != 0).then(|| round.to_be_bytes().to_vec());
                    (k.to_be_bytes().to_vec(), v)
                })
                .collect();
            commit(&t, &capture, &batch);
        }
        assert!(round > 1, "the writer ran while the reader read");
        assert_eq!(reading.join().unwrap(), expected);
    }

    #[test]
    fn a_replaced_tree_voids_the_read() {
        let t = tree();
        for k in 0u32..1000 {
            t.insert(k.to_be_bytes(), vec![1]).unwrap();
        }
        let (capture, mut reader) = CaptureReader::start(t);
        assert!(reader.next().unwrap().is_ok());
        capture.cancel();
        // The slice already read may still come out; then the error.
        let err = reader.find_map(|r| r.err()).expect("an error");
        assert!(matches!(err, CaptureError::Cancelled));
    }

    #[test]
    fn a_reader_dropped_early_stops_the_saving() {
        let t = tree();
        t.insert(b"a", vec![1]).unwrap();
        let (capture, reader) = CaptureReader::start(t.clone());
        drop(reader);
        assert!(capture.finished());
        commit(&t, &capture, &[(b"a".to_vec(), Some(vec![2]))]);
        assert!(capture.lock().before.is_empty());
    }
}
