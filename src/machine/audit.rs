//! The audit log: one record per change made through the admin API, under
//! `A` + time + (index, position), so records sort by time and every node
//! writes the same keys. Purged by age with [`Command::PurgeAudit`].

use super::keys::AUDIT;
use super::{decode, encode, retention, Machine, MachineError};
use crate::command::{AuditRecord, Audited, Outcome};

/// A record as stored and read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// When the change was applied: log time, ms since the epoch.
    pub at_ms: u64,
    /// Who changed what, and why.
    pub record: AuditRecord,
}

/// Why an applied command changed nothing, if it did not.
fn refusal(outcome: &Outcome) -> Option<&crate::command::Refusal> {
    match outcome {
        Outcome::Cancelled(Err(r)) | Outcome::Rejected(r) => Some(r),
        Outcome::Acks(acks) => acks.iter().find_map(|a| a.as_ref().err()),
        _ => None,
    }
}

/// Changes named in full in one record; more are counted.
const CHANGES_NAMED: usize = 40;
/// Characters of a value kept in the record (a schedule's payload is a
/// value too); the rest is cut, marked with `...`.
const VALUE_CHARS: usize = 120;

fn cut(value: &Option<String>) -> String {
    match value {
        None => "(not set)".into(),
        Some(v) if v.chars().count() > VALUE_CHARS => {
            format!("{}...", v.chars().take(VALUE_CHARS).collect::<String>())
        }
        Some(v) => v.clone(),
    }
}

/// The record of a change of policies from a node's config: every value
/// it changed, and which file on which node it came from.
pub(super) fn policies_record(
    node: u64,
    file_sha256: &str,
    changes: &[crate::policies::PolicyChange],
) -> AuditRecord {
    let mut target: Vec<String> = changes
        .iter()
        .take(CHANGES_NAMED)
        .map(|c| format!("{}: {} -> {}", c.key, cut(&c.old), cut(&c.new)))
        .collect();
    if changes.len() > CHANGES_NAMED {
        target.push(format!("and {} more", changes.len() - CHANGES_NAMED));
    }
    let source = if file_sha256.is_empty() {
        format!("node {node}'s embedded defaults")
    } else {
        format!("node {node}'s config file, sha256 {file_sha256}")
    };
    AuditRecord {
        who: "config".into(),
        role: String::new(),
        action: "policies.set".into(),
        target: target.join("; "),
        reason: source,
        outcome: "ok".into(),
    }
}

impl Machine {
    /// Applies a [`Command::Audit`]: its command, then the record, if
    /// the command took effect. A refused request changes nothing, the
    /// audit log included; the node that refused it logs it.
    pub(super) fn audit(
        &mut self,
        now: u64,
        record: &AuditRecord,
        command: Option<&Audited>,
    ) -> Result<Outcome, MachineError> {
        let mut record = record.clone();
        let outcome = match command {
            Some(c) => {
                let o = self.apply_command(now, &c.command())?;
                match refusal(&o) {
                    Some(_) => return Ok(o),
                    None => record.outcome = "ok".into(),
                }
                o
            }
            None => Outcome::Noop,
        };
        // Unique within the entry (an entry of at most 256 KiB holds far
        // fewer than 65,536 commands); the applied index makes it unique in
        // the log.
        let seq = u64::from(self.audit_seq.min(u16::MAX as u32));
        self.audit_seq += 1;
        let id = (self.meta.applied_index << 16) | seq;
        let entry = AuditEntry { at_ms: now, record };
        self.put(retention::time_key(AUDIT, now, id), encode(&entry));
        Ok(outcome)
    }

    /// Whether the oldest audit record is older than `keep_ms`.
    pub fn audit_purge_due(&self, now: u64, keep_ms: u64) -> Result<bool, MachineError> {
        match self.tree.scan_prefix([AUDIT]).next() {
            Some(item) => {
                let (at, _) = retention::parse_time_key(&item?.0)?;
                Ok(at.saturating_add(keep_ms) <= now)
            }
            None => Ok(false),
        }
    }

    /// Applies a [`Command::PurgeAudit`].
    pub(super) fn purge_audit(
        &mut self,
        now: u64,
        keep_ms: u64,
        limit: u32,
    ) -> Result<Outcome, MachineError> {
        let mut expired = Vec::new();
        for (k, _) in self.scan_merged(&[AUDIT], limit as usize + 1)? {
            let (at, _) = retention::parse_time_key(&k)?;
            if at.saturating_add(keep_ms) > now {
                break;
            }
            expired.push(k);
        }
        let more = expired.len() > limit as usize;
        for k in expired.into_iter().take(limit as usize) {
            self.delete(k);
        }
        Ok(Outcome::Purged {
            jobs: 0,
            idempotency_records: 0,
            more,
        })
    }
}

/// A page of the audit log, newest first.
#[derive(Debug, Default)]
pub struct AuditPage {
    /// Each record with its cursor.
    pub records: Vec<(String, AuditEntry)>,
    /// The cursor to pass as `before` for the next page, if there is one.
    pub next: Option<String>,
}

/// The records before `before` (a cursor from an earlier page), at most
/// `limit`, newest first.
pub fn page(
    tree: &sled::Tree,
    before: Option<&str>,
    limit: usize,
) -> Result<AuditPage, MachineError> {
    let end = match before {
        Some(c) => hex::decode(c)
            .ok()
            .filter(|k| k.first() == Some(&AUDIT))
            .ok_or_else(|| MachineError::Corrupt {
                key: c.to_string(),
                reason: "not a cursor this node gave out".into(),
            })?,
        None => vec![AUDIT + 1],
    };
    let mut out = Vec::new();
    let mut next = None;
    for item in tree.range(vec![AUDIT]..end).rev() {
        let (k, v) = item?;
        if out.len() == limit {
            next = out.last().map(|(c, _): &(String, AuditEntry)| c.clone());
            break;
        }
        out.push((hex::encode(&k), decode(&k, &v)?));
    }
    Ok(AuditPage { records: out, next })
}
