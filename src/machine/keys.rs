//! The tree's key layout and record codec: one byte of prefix per record
//! kind, all of them in the table below with the file that owns each,
//! bincode values, the layout mark, and the digest's hash.

use super::*;

// Every prefix of the tree, one byte each, with its record and the file
// that owns it: a new record kind takes a byte no row has
// (`every_prefix_names_one_record_kind` checks).

/// `f`: the layout mark ([`FORMAT`]).
pub(super) const FORMAT_KEY: &[u8] = b"f";
/// `m`: the machine's meta (applied index, log time, counters).
pub(super) const META_KEY: &[u8] = b"m";
/// `P`: the replicated policies.
pub(super) const POLICIES_KEY: &[u8] = b"P";
/// `j`+id: a job, with its payload when small (jobs.rs, leases.rs).
pub(super) const JOB: u8 = b'j';
/// `p`+id: a payload too large to share its job's record.
pub(super) const PAYLOAD: u8 = b'p';
/// `q`+id: the marker of a payload of [`SPILL_MIN`] bytes or more, kept in
/// a file of its own (`DATA_DIR/spill/TREE/ID-0`). Not under `p`: a build
/// from before spilling finds no payload there and stops with an error,
/// where it would hand out the marker as the payload.
pub(super) const SPILLED: u8 = b'q';
/// `r`+id: a job's result.
pub(super) const RESULT: u8 = b'r';
/// `i`+scope: an idempotency key's job (jobs.rs).
pub(super) const IDEMPOTENCY: u8 = b'i';
/// `S`+queue: a queue's fair-share clocks; in layout 4 only the queue's
/// own (scheduler.rs, fair_clocks.rs).
pub(super) const CLOCKS: u8 = b'S';
/// `s`+queue+`\0`+sequence: what a lease changed of a queue's clocks,
/// layout 4 (fair_clocks.rs).
pub(super) const CLOCK_DELTA: u8 = b's';
/// `A`+index: an audit record (audit.rs).
pub(super) const AUDIT: u8 = b'A';
/// `K`+scope: one circuit breaker (breaker.rs).
pub(super) const BREAKER: u8 = b'K';
/// `N`+queue: a queue's canary rule and results (canary.rs).
pub(super) const CANARY: u8 = b'N';
/// `c`: the chaos rules, replicated so every node that allows chaos
/// injects the same faults (chaos.rs).
pub(super) const CHAOS_KEY: &[u8] = b"c";
/// `C`: paused and draining queues and tenants (controls.rs).
pub(super) const CONTROLS_KEY: &[u8] = b"C";
/// `E`+id: the jobs waiting for a job (dependencies.rs).
pub(super) const DEPENDENT: u8 = b'E';
/// `W`+id: a parked job's hold (limits.rs).
pub(super) const PARKED: u8 = b'W';
/// `R`+key: a rate key's state (limits.rs).
pub(super) const RATE: u8 = b'R';
/// `M`: the last job key a layout migration rewrote, written with each
/// chunk, so a migration a crash stopped goes on after it (migrate.rs).
pub(super) const PROGRESS_KEY: &[u8] = b"M";
/// `Q`+worker: a quarantined worker (quarantine.rs).
pub(super) const QUARANTINE: u8 = b'Q';
/// `F`+time+id: finished jobs by when they finished (retention.rs).
pub(super) const FINISHED_AT: u8 = b'F';
/// `D`+time+id: dead jobs by when they died (retention.rs).
pub(super) const DEAD_AT: u8 = b'D';
/// `T`+time+scope: idempotency keys by when they expire (retention.rs).
pub(super) const IDEMPOTENT_AT: u8 = b'T';
/// `b`: the total bytes of finished jobs, a u64 (retention.rs).
pub(super) const FINISHED_BYTES_KEY: &[u8] = b"b";
/// `U`+tenant\0run: a run (runs.rs).
pub(super) const RUN: u8 = b'U';
/// `G`+tenant\0run: a run held over its budget (runs.rs).
pub(super) const HELD_RUN: u8 = b'G';
/// `V`+tenant+day: a tenant's cost on one UTC day (runs.rs).
pub(super) const TENANT_DAY: u8 = b'V';
/// `B`+tenant: a tenant's budgets set by an operator (runs.rs).
pub(super) const TENANT_BUDGETS: u8 = b'B';
/// `X`+tenant\0run\0+id: the jobs of a run, for its view, cancel and
/// replay (runs.rs).
pub(super) const RUN_JOB: u8 = b'X';
/// `Z`: the last slot each schedule fired (schedules.rs).
pub(super) const SCHEDULES_KEY: &[u8] = b"Z";
/// `v`: worker versions switched off (versions.rs).
pub(super) const VERSIONS_KEY: &[u8] = b"v";
/// `y`: when each worker version was first and last seen leasing, layout 4
/// (versions.rs).
pub(super) const VERSIONS_SEEN_KEY: &[u8] = b"y";

/// `O`+queue: a queue's results over its `shed_when` window (shedding.rs).
pub(super) const SHED_RESULTS: u8 = b'O';

/// Every prefix above, by name: what the uniqueness test reads.
#[cfg(test)]
pub(super) const PREFIXES: &[(&str, u8)] = &[
    ("FORMAT_KEY", FORMAT_KEY[0]),
    ("META_KEY", META_KEY[0]),
    ("POLICIES_KEY", POLICIES_KEY[0]),
    ("JOB", JOB),
    ("PAYLOAD", PAYLOAD),
    ("SPILLED", SPILLED),
    ("RESULT", RESULT),
    ("IDEMPOTENCY", IDEMPOTENCY),
    ("CLOCKS", CLOCKS),
    ("CLOCK_DELTA", CLOCK_DELTA),
    ("AUDIT", AUDIT),
    ("BREAKER", BREAKER),
    ("CANARY", CANARY),
    ("CHAOS_KEY", CHAOS_KEY[0]),
    ("CONTROLS_KEY", CONTROLS_KEY[0]),
    ("DEPENDENT", DEPENDENT),
    ("PARKED", PARKED),
    ("RATE", RATE),
    ("PROGRESS_KEY", PROGRESS_KEY[0]),
    ("QUARANTINE", QUARANTINE),
    ("FINISHED_AT", FINISHED_AT),
    ("DEAD_AT", DEAD_AT),
    ("IDEMPOTENT_AT", IDEMPOTENT_AT),
    ("FINISHED_BYTES_KEY", FINISHED_BYTES_KEY[0]),
    ("RUN", RUN),
    ("HELD_RUN", HELD_RUN),
    ("TENANT_DAY", TENANT_DAY),
    ("TENANT_BUDGETS", TENANT_BUDGETS),
    ("RUN_JOB", RUN_JOB),
    ("SCHEDULES_KEY", SCHEDULES_KEY[0]),
    ("VERSIONS_KEY", VERSIONS_KEY[0]),
    ("VERSIONS_SEEN_KEY", VERSIONS_SEEN_KEY[0]),
    ("SHED_RESULTS", SHED_RESULTS),
];

/// `prefix`+`name`: the key of a record kept per queue, worker or tenant.
pub(super) fn named_key(prefix: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(prefix);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Every record kept under `prefix`+name in `tree`, by name: what a
/// machine opening its tree loads into memory.
pub(super) fn load_named<T: for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
    prefix: u8,
) -> Result<Vec<(String, T)>, MachineError> {
    let mut out = Vec::new();
    for item in tree.scan_prefix([prefix]) {
        let (k, v) = item?;
        let name = String::from_utf8_lossy(&k[1..]).into_owned();
        out.push((name, decode(&k, &v)?));
    }
    Ok(out)
}

pub(super) fn clocks_key(queue: &str) -> Vec<u8> {
    named_key(CLOCKS, queue)
}
/// Layout of the tree; a tree of another layout is refused, not misread.
/// 1 kept payloads under their own `p` keys; 2 kept timelines as text and
/// no cost, usage or dependencies (see `migrate`); 3 kept a queue's tenant
/// clocks in one record rewritten after each lease (see `fair_clocks`).
pub(super) const FORMAT: u8 = 4;
/// The layout a tree starts with, and keeps until the cluster writes
/// entries of format 4 (see `fair_clocks`).
pub(super) const FORMAT_BEFORE_CLOCK_KEYS: u8 = 3;
/// Largest payload kept inside its job's record.
pub const INLINE_PAYLOAD_MAX: usize = 4096;

/// Where a job's payload is, as its record says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum Payload {
    Inline(bytes::Bytes),
    /// Under `p`+id.
    Apart,
}

impl Payload {
    /// The payload's bytes; `read` fetches a record by key (from the staged
    /// writes or the tree) for one kept apart.
    pub(super) fn bytes(
        self,
        id: JobId,
        read: impl FnOnce(&[u8]) -> Result<Option<bytes::Bytes>, MachineError>,
    ) -> Result<bytes::Bytes, MachineError> {
        match self {
            Payload::Inline(bytes) => Ok(bytes),
            Payload::Apart => read(&key(PAYLOAD, id))?.ok_or_else(|| missing_payload(id)),
        }
    }
}

/// A job record from its stored bytes without its payload, which follows
/// the job in the record and is left unread.
pub(super) fn decode_job(k: &[u8], bytes: &[u8]) -> Result<Job, MachineError> {
    decode(k, bytes)
}

pub(super) fn key(prefix: u8, id: JobId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

pub(super) fn idempotency_key(tenant: &str, queue: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + tenant.len() + queue.len() + key.len());
    k.push(IDEMPOTENCY);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(queue.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// The id of a job record's key (`j`+id), or why it has none.
pub(super) fn job_key_id(k: &[u8]) -> Result<JobId, MachineError> {
    k.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| MachineError::Corrupt {
            key: describe_key(k),
            reason: "a job key is not j and an id".into(),
        })
}

pub(super) fn describe_key(k: &[u8]) -> String {
    match (k.first(), k.len()) {
        (Some(&p), 9) => format!(
            "{}/{}",
            p as char,
            u64::from_be_bytes(k[1..9].try_into().unwrap_or_default())
        ),
        _ => String::from_utf8_lossy(k).into_owned(),
    }
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("bincode encoding of in-memory values cannot fail")
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    k: &[u8],
    bytes: &[u8],
) -> Result<T, MachineError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| MachineError::Corrupt {
            key: describe_key(k),
            reason: e.to_string(),
        })
}

/// The marker record of a payload spilled to a file (`q`+id), from the
/// form a snapshot carries it in (`p`+id with its bytes), or None for any
/// other record: a payload of [`SPILL_MIN`] bytes or more is kept in a file.
pub(super) fn spilled_form(k: &[u8], v: &[u8]) -> Option<(Vec<u8>, Marker)> {
    (k.first() == Some(&PAYLOAD) && k.len() == 9 && v.len() >= SPILL_MIN)
        .then(|| (with_prefix(SPILLED, k), Marker::of(0, v)))
}

/// A spilled payload's bytes, from its marker record (`q`+id).
pub(super) fn read_spilled(
    files: Option<&SpillDir>,
    id: JobId,
    stored: &[u8],
) -> Result<bytes::Bytes, MachineError> {
    let corrupt = |reason: &str| MachineError::Corrupt {
        key: describe_key(&key(SPILLED, id)),
        reason: reason.into(),
    };
    let marker =
        Marker::decode(stored).ok_or_else(|| corrupt("it is not a spilled payload's marker"))?;
    let files = files.ok_or_else(|| {
        corrupt("the payload was spilled to a file, and this machine was opened without its files")
    })?;
    Ok(files.read(id, &marker)?.into())
}

/// The same key under another prefix.
pub(super) fn with_prefix(prefix: u8, k: &[u8]) -> Vec<u8> {
    let mut out = k.to_vec();
    if let Some(first) = out.first_mut() {
        *first = prefix;
    }
    out
}

/// The form a machine record is stored in: a payload of [`SPILL_MIN`]
/// bytes or more goes to its own file, and its marker to the tree under
/// `q`+id. Snapshot loads store records through this.
pub fn stored_form(
    files: &SpillDir,
    k: Vec<u8>,
    v: Vec<u8>,
) -> Result<(Vec<u8>, Vec<u8>), MachineError> {
    let Some((spilled, _)) = spilled_form(&k, &v) else {
        return Ok((k, v));
    };
    let id = job_key_id(&k)?;
    let marker = files.write(&[(id, 0, &v)])?;
    Ok(match marker.first() {
        Some(m) => (spilled, m.encode()),
        None => (k, v),
    })
}

/// A record's share of a digest, which is the sum of every record's (so
/// the order records are read in does not matter, and a node's tree is
/// digested in one pass without copying it). A large payload counts by its
/// marker whether it is kept in a file or (written before spilling, or
/// staged) in the tree, so nodes that hold the same state agree however
/// each stored it.
pub(super) fn digest_record(k: &[u8], v: &[u8]) -> u64 {
    match spilled_form(k, v) {
        Some((spilled, marker)) => hash_record(&spilled, &marker.encode()),
        None => hash_record(k, v),
    }
}

pub(super) fn missing_payload(id: JobId) -> MachineError {
    MachineError::Corrupt {
        key: describe_key(&key(PAYLOAD, id)),
        reason: "the job's record keeps its payload here, but there is none".into(),
    }
}

/// Refuses a tree of another layout; marks an empty one with this layout.
/// Every node starts empty or from a snapshot (which carries the mark), so
/// the mark is the same on all of them.
pub(super) fn check_format(tree: &sled::Tree) -> Result<(), MachineError> {
    if tree.is_empty() {
        tree.insert(FORMAT_KEY, &[FORMAT_BEFORE_CLOCK_KEYS])?;
        return Ok(());
    }
    check_layout(tree)?;
    if tree.get(FORMAT_KEY)?.as_deref() == Some(&[super::migrate::FROM][..]) {
        super::migrate::migrate(tree)?;
    }
    Ok(())
}

/// Refuses a tree, such as one just loaded from a snapshot, that is not of
/// this layout or the one before (which opening migrates). Call it before anything depends on the tree: a snapshot
/// installed or restored and only then refused would leave a node that
/// cannot start.
pub fn check_layout(tree: &sled::Tree) -> Result<(), MachineError> {
    match tree.get(FORMAT_KEY)? {
        Some(v)
            if v.len() == 1
                && [FORMAT, FORMAT_BEFORE_CLOCK_KEYS, super::migrate::FROM].contains(&v[0]) =>
        {
            Ok(())
        }
        Some(v) => Err(MachineError::Format {
            found: format!("{:?}", v.as_ref()),
        }),
        None => Err(MachineError::Format {
            found: "1 (no layout mark)".into(),
        }),
    }
}

/// An order-sensitive hash of records in key order: equal trees, equal hashes.
fn hash_record(k: &[u8], v: &[u8]) -> u64 {
    let mut h = 0u64;
    for b in k.iter().chain(v.iter()) {
        h = mix(h ^ u64::from(*b));
    }
    mix(h ^ 0xff)
}

pub(super) use crate::mix::mix;
