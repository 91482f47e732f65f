//! When the loop takes a snapshot, what it does once one is written, and
//! installing one a leader sent.

use super::*;

impl Driver {
    /// Takes a snapshot every `snapshot_every` applied entries, and when raft
    /// wanted one to send that we did not have.
    pub(super) fn maybe_take_snapshot(&mut self) {
        let applied = self.machine.meta().applied_index;
        let store = self.raw.store();
        let latest = store.latest_snapshot().map_or(0, |(m, _)| m.index);
        if self.snapshots.due(applied, store.snapshot_wanted(), latest) {
            self.take_snapshot(None);
        }
    }

    /// Starts writing a snapshot of the machine's committed state off the
    /// loop (see [`snapshots`]), or answers `waiter` with the newest file
    /// if nothing was applied since. Runs between Readies, when nothing is
    /// staged, so the read starts at exactly the applied state.
    pub(super) fn take_snapshot(&mut self, waiter: Option<snapshots::Waiter>) {
        let meta = self.machine.meta();
        if let Some((m, p)) = self.raw.store().latest_snapshot() {
            if m.index == meta.applied_index && p.exists() {
                if let Some(w) = waiter {
                    let _ = w.send(Ok(p.clone()));
                }
                return;
            }
        }
        let snap = SnapshotMeta {
            index: meta.applied_index,
            term: meta.applied_term,
            conf_state: self.raw.raft.prs().conf().to_conf_state(),
            addrs: self.addrs.clone(),
        };
        if let Err(e) = self.snapshots.start(&mut self.machine, snap) {
            tracing::error!(event = "snapshot_failed", error = %e, "could not start a snapshot");
            if let Some(w) = waiter {
                let _ = w.send(Err(Error::Driver(format!("snapshot failed: {e}"))));
            }
            return;
        }
        if let Some(w) = waiter {
            // Joins the snapshot just started, or the one already running.
            self.snapshots.wait(w);
        }
    }

    /// A snapshot the writer thread finished: offered to raft (and the log
    /// compacted behind it) unless an installed one is newer.
    pub(super) fn on_snapshot_written(&mut self, written: snapshots::Written) {
        let Some(taken) = self.snapshots.finished(written) else {
            return;
        };
        let newer = self
            .raw
            .store()
            .latest_snapshot()
            .is_some_and(|(m, _)| m.index >= taken.meta.index);
        if !newer {
            self.raw
                .mut_store()
                .set_latest_snapshot(taken.meta, taken.path);
        }
        self.snapshots.prune();
    }

    /// Replaces this node's state with a snapshot the leader sent: loads it
    /// into a fresh tree, then switches the machine and moves the log past
    /// it in one flushed batch, so a crash leaves the old state or the new.
    pub(super) fn install_snapshot(
        &mut self,
        snap: &raft::eraftpb::Snapshot,
    ) -> Result<(), DriverError> {
        let received = PathBuf::from(String::from_utf8_lossy(&snap.data).into_owned());
        let md = snap.get_metadata();
        let name = format!("{DEFAULT_MACHINE_TREE}.{}", md.index);
        let started = std::time::Instant::now();
        self.db
            .drop_tree(name.as_bytes())
            .map_err(StoreError::from)?;
        let files = self.db.spill().dir(&name);
        files.sweep(|_, _| false).map_err(StoreError::from)?;
        let tree = self.db.open_tree(&name).map_err(StoreError::from)?;
        let meta = snapshot::load(&received, &tree, |k, v| {
            crate::machine::stored_form(&files, k, v)
        })?;
        crate::machine::check_layout(&tree)?;
        if meta.index != md.index || meta.term != md.term {
            return Err(DriverError::Snapshot(SnapshotError::Corrupt {
                path: received,
                reason: format!(
                    "file is at ({}, {}) but raft installs ({}, {})",
                    meta.index, meta.term, md.index, md.term
                ),
            }));
        }
        self.db.flush().map_err(StoreError::from)?;
        let old = self.raw.store().machine_tree()?;
        self.raw.mut_store().apply_snapshot(&meta, &name)?;
        self.machine.replace_tree(tree, Some(files))?;
        for (id, addr) in &meta.addrs {
            if self.addrs.get(id) != Some(addr) {
                self.addrs.insert(*id, addr.clone());
                if *id != self.node_id {
                    self.transport.add_peer(*id, addr);
                }
            }
        }
        self.raw.mut_store().set_addresses(&self.addrs)?;
        // The replaced tree stays until the next start (see
        // drop_stale_machine_trees): readers may still hold it.
        let _ = old;
        // The received file becomes ours to offer if this node leads later.
        let kept = snapshot::path_for(self.snapshots.dir(), meta.index, meta.term);
        match std::fs::rename(&received, &kept) {
            Ok(()) => {
                self.raw.mut_store().set_latest_snapshot(meta.clone(), kept);
                self.snapshots.prune();
            }
            Err(e) => tracing::warn!(error = %e, "cannot keep the installed snapshot file"),
        }
        self.snapshots.installed(meta.index);
        // Proposals this node made as leader that the snapshot jumped over:
        // whether they committed is not known here.
        self.pending.covered_by_snapshot(meta.index);
        tracing::info!(
            event = "snapshot_installed",
            index = meta.index,
            term = meta.term,
            ms = started.elapsed().as_millis() as u64,
            "installed a snapshot from the leader"
        );
        Ok(())
    }
}
