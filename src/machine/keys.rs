//! The tree's key layout and record codec: one byte of prefix per record
//! kind (`f` format, `m` meta, `j`+id job with its payload if small, `p`+id
//! large payload, `r`+id result, `i`+scope idempotency; retention and audit
//! add their own), bincode values, the layout mark, and the digest's hash.

use super::*;

pub(super) const META_KEY: &[u8] = b"m";
/// The replicated policies.
pub(super) const POLICIES_KEY: &[u8] = b"P";
/// `S`+queue: the tenants' fair-share clocks of a queue.
pub(super) const CLOCKS: u8 = b'S';

pub(super) fn clocks_key(queue: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + queue.len());
    k.push(CLOCKS);
    k.extend_from_slice(queue.as_bytes());
    k
}
pub(super) const FORMAT_KEY: &[u8] = b"f";
/// Layout of the tree; a tree of another layout is refused, not misread.
/// 1 kept payloads under their own `p` keys; 2 kept timelines as text and
/// no cost, usage or dependencies (see `migrate`).
pub(super) const FORMAT: u8 = 3;
pub(super) const JOB: u8 = b'j';
pub(super) const PAYLOAD: u8 = b'p';
/// Largest payload kept inside its job's record.
pub const INLINE_PAYLOAD_MAX: usize = 4096;
pub(super) const RESULT: u8 = b'r';
pub(super) const IDEMPOTENCY: u8 = b'i';

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
        tree.insert(FORMAT_KEY, &[FORMAT])?;
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
        Some(v) if v.as_ref() == [FORMAT] || v.as_ref() == [super::migrate::FROM] => Ok(()),
        Some(v) => Err(MachineError::Format {
            found: format!("{:?}", v.as_ref()),
        }),
        None => Err(MachineError::Format {
            found: "1 (no layout mark)".into(),
        }),
    }
}

/// An order-sensitive hash of records in key order: equal trees, equal hashes.
pub(super) fn hash_records<'a>(records: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    let mut h = 0u64;
    for (k, v) in records {
        for b in k.iter().chain(v.iter()) {
            h = mix(h ^ u64::from(*b));
        }
        h = mix(h ^ 0xff);
    }
    h
}

pub(super) use crate::mix::mix;
