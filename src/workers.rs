//! Soft state of the workers connected to this node: who they are, what they
//! serve and how much they hold. Lost on restart by design; the leases
//! themselves are in the machine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// A connected worker, as `drover workers list` and the admin API show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    /// The id it registered with.
    pub worker_id: String,
    /// The queues it takes jobs from.
    pub queues: Vec<String>,
    /// Its version label (empty if it gave none).
    pub version: String,
    /// Most jobs it holds at once.
    pub capacity: u32,
    /// Jobs it holds now.
    pub in_flight: u32,
    /// Completions and failures it reported in this session.
    pub completed: u64,
    /// Failures it reported in this session (`completed` counts successes).
    pub failed: u64,
    /// When it connected: log time, ms since the epoch.
    pub connected_at_ms: u64,
    /// When it last sent anything (heartbeats included).
    pub last_seen_ms: u64,
    /// Taking no new leases: it said it is stopping, an operator asked it to
    /// stop, or its node is shutting down.
    pub draining: bool,
    /// The node it is connected to.
    pub node_id: u64,
    /// Completions and failures it reported in the last `recent_window_ms`
    /// (its queues' `quarantine_window`, else 5 minutes).
    #[serde(default)]
    pub recent_completed: u64,
    /// Failures it reported in the last `recent_window_ms`.
    #[serde(default)]
    pub recent_failed: u64,
    /// The window `recent_completed` and `recent_failed` count over, in ms.
    #[serde(default)]
    pub recent_window_ms: u64,
    /// Until when it is kept from new leases, if it is quarantined (it
    /// finishes what it holds; reconnecting after this, or
    /// `drover workers release`, lifts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined_until_ms: Option<u64>,
}

/// A worker's (completed, failed) over a sliding window.
pub type RecentResults = crate::window::Sliding<2>;

/// One connected worker's live counters, shared with its session.
#[derive(Debug)]
pub struct WorkerEntry {
    /// The id it registered with.
    pub worker_id: String,
    /// The queues it takes jobs from.
    pub queues: Vec<String>,
    /// Most jobs it holds at once, as it registered.
    pub capacity: u32,
    /// When it connected: log time, ms since the epoch.
    pub connected_at_ms: u64,
    /// Its version label (empty if it gave none).
    pub version: String,
    /// Jobs it holds now, as its session last counted.
    pub in_flight: AtomicU32,
    /// Taking no new leases (see [`WorkerInfo::draining`]).
    pub draining: std::sync::atomic::AtomicBool,
    /// Completions it reported in this session.
    pub completed: AtomicU64,
    /// Failures it reported in this session.
    pub failed: AtomicU64,
    /// When it last sent anything, heartbeats included: log time, ms since the
    /// epoch.
    pub last_seen_ms: AtomicU64,
    /// Its results over the quarantine window.
    pub recent: Mutex<RecentResults>,
    /// Set when an operator asks it to stop (`drover workers shutdown`).
    pub stop: tokio::sync::Notify,
}

/// The workers connected to this node, shared by their sessions and the admin
/// API.
#[derive(Clone, Default)]
pub struct WorkerRegistry {
    inner: Arc<Mutex<HashMap<u64, Arc<WorkerEntry>>>>,
    next: Arc<AtomicU64>,
}

/// Removes the worker from the registry when its session ends, however it ends.
pub struct Registration {
    registry: WorkerRegistry,
    id: u64,
    /// The worker's counters, which its session keeps up to date.
    pub entry: Arc<WorkerEntry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.inner.lock() {
            map.remove(&self.id);
        }
    }
}

impl WorkerRegistry {
    /// Lists a worker as its session starts; it stays listed until the returned
    /// [`Registration`] is dropped.
    pub fn register(&self, entry: WorkerEntry) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(entry);
        if let Ok(mut map) = self.inner.lock() {
            map.insert(id, entry.clone());
        }
        Registration {
            registry: self.clone(),
            id,
            entry,
        }
    }

    fn entries(&self) -> Vec<Arc<WorkerEntry>> {
        let map = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.values().cloned().collect()
    }

    /// The workers connected to this node (`node_id`); `quarantined` says
    /// which workers of the cluster are, until when.
    pub fn list(
        &self,
        node_id: u64,
        now: u64,
        quarantined: &std::collections::BTreeMap<String, crate::machine::quarantine::Quarantined>,
    ) -> Vec<WorkerInfo> {
        let mut out: Vec<WorkerInfo> = self
            .entries()
            .iter()
            .map(|e| {
                let recent = e.recent.lock().unwrap_or_else(|p| p.into_inner());
                let [recent_completed, recent_failed] = recent.counts(now);
                WorkerInfo {
                    worker_id: e.worker_id.clone(),
                    queues: e.queues.clone(),
                    version: e.version.clone(),
                    capacity: e.capacity,
                    in_flight: e.in_flight.load(Ordering::Relaxed),
                    completed: e.completed.load(Ordering::Relaxed),
                    failed: e.failed.load(Ordering::Relaxed),
                    connected_at_ms: e.connected_at_ms,
                    last_seen_ms: e.last_seen_ms.load(Ordering::Relaxed),
                    draining: e.draining.load(Ordering::Relaxed),
                    node_id,
                    recent_completed,
                    recent_failed,
                    recent_window_ms: recent.window_ms(),
                    quarantined_until_ms: quarantined.get(&e.worker_id).map(|q| q.until_ms),
                }
            })
            .collect();
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        out
    }

    /// Asks workers to finish what they hold and disconnect: the one named
    /// `worker_id`, or all when `all`. Returns how many were asked.
    pub fn stop(&self, worker_id: &str, all: bool) -> usize {
        let mut asked = 0;
        for e in self.entries() {
            if all || e.worker_id == worker_id {
                e.stop.notify_one();
                asked += 1;
            }
        }
        asked
    }

    /// How many workers are connected to this node.
    pub fn count(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }
}
