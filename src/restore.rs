//! `drover snapshot restore`: seeds a new node's data dir from a snapshot
//! file, with the voters it is given: every member of a cluster restored
//! from the same file starts with the same state and membership and elects
//! a leader as a new cluster would (etcd's way); or one voter, to which
//! the others are added with `drover cluster add`.

use std::path::Path;

use raft::eraftpb::ConfState;

use crate::error::Error;
use crate::snapshot::{self, SnapshotMeta};
use crate::store::{self, RaftStore, DEFAULT_MACHINE_TREE};

/// Restores `file` into the empty `data_dir`, with `voters` as the
/// cluster's members.
pub fn restore(
    file: &Path,
    data_dir: &Path,
    voters: Vec<u64>,
    cache_capacity_bytes: u64,
) -> Result<SnapshotMeta, Error> {
    let not_empty = std::fs::read_dir(data_dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if not_empty {
        return Err(Error::DataDir {
            path: data_dir.to_path_buf(),
            source: std::io::Error::other(
                "it is not empty; a restore seeds a new node: give it an empty or new directory",
            ),
        });
    }
    std::fs::create_dir_all(data_dir).map_err(|source| Error::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let meta = snapshot::verify(file)?;
    let db = store::open_db(data_dir, cache_capacity_bytes)?;
    let name = format!("{DEFAULT_MACHINE_TREE}.{}", meta.index);
    let tree = db.open_tree(&name).map_err(store::StoreError::from)?;
    let files = db.spill().dir(&name);
    snapshot::load(file, &tree, |k, v| {
        crate::machine::stored_form(&files, k, v)
    })?;
    crate::machine::check_layout(&tree)?;
    let seeded = SnapshotMeta {
        conf_state: ConfState {
            voters,
            ..Default::default()
        },
        ..meta.clone()
    };
    let mut store = RaftStore::open(&db)?;
    store.apply_snapshot(&seeded, &name)?;
    // A new incarnation: not the cluster the backup came from, so nodes of
    // that one (or bootstrapped anew) cannot mix with it.
    store.set_incarnation(crate::cluster::identity::for_restore(
        meta.index,
        meta.term,
        &seeded.conf_state.voters,
    ))?;
    Ok(meta)
}
