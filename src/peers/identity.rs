//! Which cluster a node belongs to, beyond its `cluster_id`: an incarnation
//! number made when a cluster begins (bootstrapped from its config, or
//! restored from a snapshot), kept in the raft tree, carried in every peer
//! header and checked on every peer request. A cluster restored from a
//! backup and nodes that bootstrapped anew beside it have different
//! incarnations, so they refuse each other's messages, votes and joins
//! instead of mixing two logs under one `cluster_id`.
//!
//! Every initial member must agree without talking, so the numbers are
//! derived, not drawn: a bootstrap's from the `cluster_id` and the initial
//! voters (what every member's config already shares), a restore's from the
//! snapshot's index, term and the restored voters (so every member restored
//! from one file agrees). A node that joins takes its leader's. 0 means
//! unknown (a joining node before its first contact, or a data dir from
//! before incarnations): it is accepted, and never sent as a claim.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// This node's incarnation, shared by the driver (which keeps it), the
/// transport and router (which send it) and the peer service (which
/// checks it).
#[derive(Clone, Default)]
pub struct Incarnation(Arc<AtomicU64>);

impl Incarnation {
    /// Starts at `value` (0: unknown yet).
    pub fn new(value: u64) -> Incarnation {
        Incarnation(Arc::new(AtomicU64::new(value)))
    }

    /// The incarnation now; 0 while unknown.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Takes `value` if this node has none yet; whether it did.
    pub fn adopt(&self, value: u64) -> bool {
        value != 0
            && self
                .0
                .compare_exchange(0, value, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

fn derive(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b).max(1)
}

fn ids(voters: &[u64]) -> Vec<u8> {
    let mut v = voters.to_vec();
    v.sort_unstable();
    v.iter().flat_map(|id| id.to_be_bytes()).collect()
}

/// The incarnation of a cluster bootstrapped as `cluster_id` with `voters`.
pub fn for_bootstrap(cluster_id: &str, voters: &[u64]) -> u64 {
    derive(&[b"bootstrap", cluster_id.as_bytes(), &ids(voters)])
}

/// The incarnation of a cluster restored from the snapshot at (`index`,
/// `term`) with `voters`.
pub fn for_restore(index: u64, term: u64, voters: &[u64]) -> u64 {
    derive(&[
        b"restore",
        &index.to_be_bytes(),
        &term.to_be_bytes(),
        &ids(voters),
    ])
}

/// As people read it: 16 hex digits (or "unknown").
pub fn show(value: u64) -> String {
    if value == 0 {
        "unknown".into()
    } else {
        format!("{value:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_agree_and_restores_differ() {
        assert_eq!(
            for_bootstrap("c", &[1, 2, 3]),
            for_bootstrap("c", &[3, 1, 2])
        );
        assert_ne!(
            for_bootstrap("c", &[1, 2, 3]),
            for_bootstrap("d", &[1, 2, 3])
        );
        assert_ne!(for_restore(10, 2, &[1]), for_restore(10, 2, &[1, 2, 3]));
        assert_ne!(
            for_restore(10, 2, &[1, 2, 3]),
            for_bootstrap("c", &[1, 2, 3])
        );
        let i = Incarnation::default();
        assert!(i.adopt(7) && !i.adopt(8));
        assert_eq!((i.get(), show(7)), (7, "0000000000000007".to_string()));
    }
}
