//! Start-up: opening raft and the machine on the database, bootstrapping
//! a new cluster, and spawning the loop.

use super::*;

/// Forwards raft-rs's slog records to tracing, so one log stream shows both.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            slog::Level::Info => tracing::info!(target: "raft", "{}", record.msg()),
            _ => tracing::debug!(target: "raft", "{}", record.msg()),
        }
        Ok(())
    }
}

/// Drops machine trees left by a snapshot install that a crash interrupted.
fn drop_stale_machine_trees(db: &Database, active: &str) {
    for name in db.tree_names() {
        let name = String::from_utf8_lossy(&name).into_owned();
        if name.starts_with(DEFAULT_MACHINE_TREE) && name != active {
            tracing::info!(tree = %name, "dropping a machine tree left by an interrupted snapshot install");
            let _ = db.drop_tree(name.as_bytes());
        }
    }
    // And the payload files of trees no longer in use.
    for name in db.spill().dir_names() {
        if name.starts_with(DEFAULT_MACHINE_TREE) && name != active {
            let _ = db.spill().remove_dir(&name);
        }
    }
}

/// Opens raft and the machine on `db`, bootstraps a new cluster if the store
/// is empty, and starts the driver thread. The returned receiver yields once
/// the driver has stopped, with its error if it failed.
pub fn start(
    cfg: &Config,
    db: &Database,
    shutdown: watch::Receiver<bool>,
) -> Result<(DriverHandle, oneshot::Receiver<Result<(), DriverError>>), Error> {
    let mut store = RaftStore::open(db)?;
    let bootstrapping = store.is_new() && !cfg.join;
    if store.is_new() && cfg.join {
        tracing::info!(
            event = "waiting_to_join",
            node_id = cfg.node_id,
            "joining an existing cluster: waiting for its leader to add this node (drover cluster add)"
        );
    }
    if bootstrapping {
        let voters = cfg.initial_voters();
        tracing::info!(
            event = "cluster_bootstrapped",
            node_id = cfg.node_id,
            ?voters,
            "bootstrapped a new cluster"
        );
        let incarnation = crate::peers::identity::for_bootstrap(&cfg.cluster_id, &voters);
        store.bootstrap(voters)?;
        store.set_incarnation(incarnation)?;
    }
    let incarnation = crate::peers::identity::Incarnation::new(store.incarnation()?);
    let snap_dir = cfg.data_dir.join("snapshots");
    std::fs::create_dir_all(&snap_dir).map_err(|source| Error::DataDir {
        path: snap_dir.clone(),
        source,
    })?;
    // Snapshots received but never installed, or not finished writing
    // (the node stopped first).
    for e in std::fs::read_dir(&snap_dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("recv-") || name.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let tree_name = store.machine_tree()?;
    let format_floor = store.format_floor()?;
    drop_stale_machine_trees(db, &tree_name);
    for path in snapshot::list(&snap_dir) {
        match snapshot::read_meta(&path) {
            Ok(meta) => {
                store.set_latest_snapshot(meta, path);
                break;
            }
            Err(e) => {
                tracing::warn!(event = "snapshot_unreadable", error = %e, "ignoring a damaged snapshot file")
            }
        }
    }
    let mut machine = Machine::open_spilling(
        db.open_tree(&tree_name).map_err(StoreError::from)?,
        db.spill().dir(&tree_name),
    )?;
    if bootstrapping {
        // The machine starts where the bootstrapped log does.
        machine.apply_noop(INIT_INDEX, INIT_INDEX);
        machine.commit()?;
    }
    let meta = machine.meta();
    // The machine only ever applies committed entries, so its applied index
    // is committed even if the hard state's commit did not reach the disk.
    if store.hard_state().commit < meta.applied_index {
        store.set_commit(meta.applied_index)?;
    }
    let raft_cfg = raft::Config {
        id: cfg.node_id,
        election_tick: cfg.raft.election_ticks,
        heartbeat_tick: cfg.raft.heartbeat_ticks,
        applied: meta.applied_index,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    raft_cfg.validate().map_err(|e| {
        Error::Config(crate::config::ConfigError::Invalid {
            key: "raft",
            reason: e.to_string(),
        })
    })?;
    let store_snapshot_index = store.latest_snapshot().map_or(0, |(m, _)| m.index);
    let logger = slog::Logger::root(TracingDrain, slog::o!());
    let mut raw = RawNode::new(&raft_cfg, store, &logger).map_err(|e| {
        Error::Store(StoreError::Corrupt {
            key: "raft".into(),
            reason: e.to_string(),
        })
    })?;
    let single_voter = raw.raft.prs().conf().voters().ids().len() == 1;
    if single_voter {
        // Nobody to wait for: become leader now instead of after an election timeout.
        let _ = raw.campaign();
    }

    let (tx, rx) = mpsc::channel(MAX_PROPOSALS_PER_READY * 4);
    let (control_tx, control) = mpsc::channel(CONTROL_QUEUE);
    let mut addrs: std::collections::BTreeMap<u64, String> =
        cfg.peers.iter().map(|p| (p.id, p.addr.clone())).collect();
    addrs.extend(raw.store().addresses()?);
    let raw_removed = raw.store().removed()?;
    let pressure = cfg.pressure();
    pressure.sample();
    let log_time = Arc::new(LogTime::new(
        machine.meta().last_at_ms,
        std::time::Instant::now(),
    ));
    let clocks = Arc::new(crate::peers::clocks::Clocks::new(
        cfg.node_id,
        cfg.cluster.max_clock_offset,
    ));
    let transport = Transport::start(
        cfg,
        &addrs,
        control_tx.clone(),
        pressure.clone(),
        incarnation.clone(),
        log_time.clone(),
    );
    let (status_tx, status) = watch::channel(NodeStatus::default());
    let (removed_tx, removed_rx) = watch::channel(None);
    let (stats_tx, stats) = watch::channel(Arc::new(machine.stats()));
    let history = Arc::new(std::sync::Mutex::new(
        crate::history::History::new(now_ms()),
    ));
    sample_history(history.clone(), stats.clone(), shutdown.clone());
    // Rare (timeouts and expiries); a session that lags behind learns of
    // its lost leases from its next heartbeat instead.
    let (revoked_tx, _) = tokio::sync::broadcast::channel(64);
    let turned_at = Arc::new(std::sync::atomic::AtomicU64::new(mono_ms()));
    let peer_formats = PeerFormats::default();
    let handle = DriverHandle {
        peer_formats: peer_formats.clone(),
        tx,
        control: control_tx,
        status,
        stats,
        history: history.clone(),
        revoked: revoked_tx.clone(),
        turned_at: turned_at.clone(),
        reader: machine.reader(),
        retry_after_ms: (cfg.raft.tick_interval * cfg.raft.election_ticks as u32).as_millis()
            as u64,
        pressure: pressure.clone(),
        incarnation: incarnation.clone(),
        removed: removed_rx,
        log_time: log_time.clone(),
        clocks: clocks.clone(),
    };
    let persist = Persistence::start(db.clone()).map_err(|e| {
        Error::Store(StoreError::Corrupt {
            key: "thread".into(),
            reason: e.to_string(),
        })
    })?;
    let last_snapshot_index = store_snapshot_index.max(meta.applied_index);
    // Entries already in the log (replayed after a restart) were set before
    // this node was asked for its config's policies.
    let asked_at = raw.raft.raft_log.last_index();
    let driver = Driver {
        reads: ReadWaiters::default(),
        addrs,
        db: db.clone(),
        snapshots: Snapshots::new(snap_dir, cfg.raft.snapshot_every, last_snapshot_index),
        persist,
        raw,
        machine,
        rx,
        control,
        transport,
        pending: Pending::default(),
        status_tx,
        stats_tx,
        revoked_tx,
        job_times: crate::metrics::JobTimes::new(&cfg.metrics.job_types),
        history,
        entry_version: cfg.entry_version,
        peer_formats,
        writing_version: crate::command::ENTRY_VERSION.min(cfg.entry_version),
        format_floor,
        turned_at,
        shutdown,
        tick_interval: cfg.raft.tick_interval,
        log_keep: cfg.raft.log_keep_entries,
        log_keep_bytes: cfg.raft.log_keep_bytes.as_u64(),
        max_inflight: cfg.raft.max_inflight_entries,
        tick_in_flight: None,
        fire_in_flight: None,
        crons: std::collections::HashMap::new(),
        upkeep_in_flight: None,
        policies: cfg
            .policies()
            .for_format(crate::command::ENTRY_VERSION.min(cfg.entry_version)),
        policies_whole: cfg.policies(),
        policies_source: cfg.source_sha256.clone(),
        policies_warned: None,
        policies_asked: Some(asked_at),
        policies_checked: None,
        retention: cfg.jobs.retention(),
        audit_keep_ms: u64::try_from(cfg.jobs.audit_retention.as_millis()).unwrap_or(u64::MAX),
        purge_check_at: std::time::Instant::now(),
        node_id: cfg.node_id,
        pressure,
        fires_held: false,
        removed: None,
        removed_members: raw_removed,
        removal_seen: None,
        incarnation,
        removed_tx,
        log_time,
        clocks,
        leading: false,
        skew: None,
        skew_transfer_at: None,
        wall_offset_ms: 0,
        renewed_term: 0,
    };
    let (done_tx, done) = oneshot::channel();
    // The driver never blocks on the disk (the flusher thread does), so it
    // runs as a task among the API's: waking a request's task on the same
    // runtime is far cheaper than waking another thread per reply.
    tokio::spawn(async move {
        let result = driver.run().await;
        if let Err(e) = &result {
            tracing::error!(event = "raft_driver_failed", error = %e, "raft driver stopped");
        }
        let _ = done_tx.send(result);
    });
    Ok((handle, done))
}

/// Every second, adds what each queue's event totals grew by to the
/// history (the machine's published stats carry them, so the apply path
/// pays nothing for it); stops with the node.
fn sample_history(
    history: Arc<std::sync::Mutex<crate::history::History>>,
    stats: watch::Receiver<Arc<MachineStats>>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let stats = stats.borrow().clone();
            let totals = stats.by_type.iter().map(|(queue, types)| {
                let mut c = crate::history::Counts::default();
                for t in types.values() {
                    c.enqueued = c.enqueued.saturating_add(t.enqueued);
                    c.completed = c.completed.saturating_add(t.completed);
                    let failed = t.failed.values().fold(0u64, |a, n| a.saturating_add(*n));
                    c.failed = c.failed.saturating_add(failed);
                }
                (queue.as_str(), c)
            });
            let mut history = history.lock().unwrap_or_else(|e| e.into_inner());
            let now = history.now_ms();
            history.sample(now, totals);
        }
    });
}
