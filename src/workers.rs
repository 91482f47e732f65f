//! Soft state of the workers connected to this node: who they are, what they
//! serve and how much they hold. Lost on restart by design; the leases
//! themselves are in the machine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub queues: Vec<String>,
    pub capacity: u32,
    pub in_flight: u32,
    pub connected_at_ms: u64,
    pub draining: bool,
}

/// One connected worker's live counters, shared with its session.
#[derive(Debug)]
pub struct WorkerEntry {
    pub worker_id: String,
    pub queues: Vec<String>,
    pub capacity: u32,
    pub connected_at_ms: u64,
    pub in_flight: AtomicU32,
    pub draining: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Default)]
pub struct WorkerRegistry {
    inner: Arc<Mutex<HashMap<u64, Arc<WorkerEntry>>>>,
    next: Arc<AtomicU64>,
}

/// Removes the worker from the registry when its session ends, however it ends.
pub struct Registration {
    registry: WorkerRegistry,
    id: u64,
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

    pub fn list(&self) -> Vec<WorkerInfo> {
        let map = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let mut out: Vec<WorkerInfo> = map
            .values()
            .map(|e| WorkerInfo {
                worker_id: e.worker_id.clone(),
                queues: e.queues.clone(),
                capacity: e.capacity,
                in_flight: e.in_flight.load(Ordering::Relaxed),
                connected_at_ms: e.connected_at_ms,
                draining: e.draining.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        out
    }

    pub fn count(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }
}
