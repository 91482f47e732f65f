//! Payloads, results and error messages sealed at rest (`[storage]
//! encryption_key_file`): sealed where they enter the node (an enqueue, a
//! worker's result or failure) before they are proposed, and opened where
//! they leave it (a lease, a job read). So the raft log, the machine's
//! records, snapshots and backups hold them sealed, and every node stores
//! the same bytes: the state machine never sees a key or a nonce.
//!
//! ChaCha20-Poly1305 (ring), a random 96-bit nonce per record, and the
//! field's name as associated data, so a sealed payload cannot be passed
//! off as a result. A sealed record names its key by id (the first four
//! bytes of the key's SHA-256): a rotated key stays readable as long as it
//! is listed in `encryption_old_keys`. Records written before a key was set
//! stay in clear and are read as they are.
//!
//! What stays in clear: queue, tenant, run and type names, ids, labels,
//! idempotency keys, error classes, progress messages, timings, and the
//! payloads of schedules (they come from the config file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Marks a sealed binary record: a NUL, "drs" and the format version.
const MAGIC: &[u8; 5] = b"\0drs1";
/// Marks a sealed text (an error message), base64 after it.
const TEXT_MAGIC: &str = "\u{0}drs1:";
/// Key ids are this many bytes of the key's SHA-256.
const ID_LEN: usize = 4;
/// The file in the data dir naming the keys its records were sealed with.
pub const KEYS_FILE: &str = "encryption-keys";

/// What a sealed value is: bound into its seal, so one cannot stand for
/// another.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    /// A job's payload.
    Payload,
    /// A job's result.
    Result,
    /// A failure's message.
    Error,
}

impl Field {
    fn aad(self) -> &'static [u8] {
        match self {
            Field::Payload => b"payload",
            Field::Result => b"result",
            Field::Error => b"error",
        }
    }
}

/// Why keys could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    /// A key file could not be read or does not hold a key.
    #[error("encryption key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The data dir holds records sealed with keys the config does not give.
    #[error("the data dir {data_dir} holds records sealed with key id(s) {missing}, which neither [storage] encryption_key_file nor encryption_old_keys gives (configured: {configured}). Nothing was changed. Give the key(s) the data was written with (a rotated key goes in encryption_old_keys)")]
    MissingKeys {
        /// The data dir.
        data_dir: PathBuf,
        /// The ids the data dir names that no configured key has.
        missing: String,
        /// The ids of the keys configured.
        configured: String,
    },
    /// A sealed record names a key this node was not given.
    #[error("a sealed {field} names key id {id}, which this node was not given: add its file to [storage] encryption_old_keys")]
    UnknownKey {
        /// Which field.
        field: &'static str,
        /// The key id, hex.
        id: String,
    },
    /// A sealed record does not open with its key: damaged, or not drover's.
    #[error("a sealed {field} does not open with key id {id}: the record is damaged")]
    Damaged {
        /// Which field.
        field: &'static str,
        /// The key id, hex.
        id: String,
    },
    /// The data dir's list of keys could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error (not a `source`: the message says it once).
        error: std::io::Error,
    },
}

/// The keys a node seals and opens with. Without any, `seal` passes values
/// through and `open` reads clear records (and refuses sealed ones).
pub struct Keys {
    /// The key new records are sealed with.
    current: Option<([u8; ID_LEN], LessSafeKey)>,
    /// Every key, by id: the current one and the old ones.
    all: BTreeMap<[u8; ID_LEN], LessSafeKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field(
                "current",
                &self.current.as_ref().map(|(id, _)| hex::encode(id)),
            )
            .field("all", &self.all.keys().map(hex::encode).collect::<Vec<_>>())
            .finish()
    }
}

/// A fresh key as a key file holds it: 64 hex characters and a newline.
pub fn new_key_text() -> Result<String, SealingError> {
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| SealingError::KeyFile {
            path: PathBuf::new(),
            reason: "the system gave no random bytes".into(),
        })?;
    Ok(format!("{}\n", hex::encode(key)))
}

fn read_key(path: &Path) -> Result<([u8; ID_LEN], Vec<u8>), SealingError> {
    let bad = |reason: String| SealingError::KeyFile {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let bytes = hex::decode(text.trim()).map_err(|e| {
        bad(format!(
            "not hex ({e}); make one with `drover key new FILE`"
        ))
    })?;
    if bytes.len() != 32 {
        return Err(bad(format!(
            "holds {} bytes, a key is 32 (64 hex characters); make one with `drover key new FILE`",
            bytes.len()
        )));
    }
    Ok((key_id(&bytes), bytes))
}

fn aead_key(bytes: &[u8]) -> LessSafeKey {
    // 32 bytes, checked by `read_key`: the one length ChaCha20 takes.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte key"))
}

fn key_id(key: &[u8]) -> [u8; ID_LEN] {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key);
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&digest[..ID_LEN]);
    id
}

impl Keys {
    /// No keys: nothing is sealed.
    pub fn none() -> Keys {
        Keys {
            current: None,
            all: BTreeMap::new(),
            rng: SystemRandom::new(),
        }
    }

    /// The keys of `[storage]`: `current` seals, `old` only open.
    pub fn load(current: Option<&Path>, old: &[PathBuf]) -> Result<Keys, SealingError> {
        let mut keys = Keys::none();
        for path in old {
            let (id, bytes) = read_key(path)?;
            keys.all.insert(id, aead_key(&bytes));
        }
        if let Some(path) = current {
            let (id, bytes) = read_key(path)?;
            keys.all.insert(id, aead_key(&bytes));
            keys.current = Some((id, aead_key(&bytes)));
        }
        Ok(keys)
    }

    /// Whether new records are sealed.
    pub fn seals(&self) -> bool {
        self.current.is_some()
    }

    /// The current key's id, hex.
    pub fn current_id(&self) -> Option<String> {
        self.current.as_ref().map(|(id, _)| hex::encode(id))
    }

    /// Checks the data dir's list of the keys its records were sealed with
    /// against these, before anything else opens the data dir: a key it
    /// names that is not here stops the node with nothing changed. Then
    /// adds the current key to the list.
    pub fn check_data_dir(&self, data_dir: &Path) -> Result<(), SealingError> {
        let path = data_dir.join(KEYS_FILE);
        let io = |error| SealingError::Io {
            path: path.clone(),
            error,
        };
        let listed: Vec<String> = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let have: Vec<String> = self.all.keys().map(hex::encode).collect();
        let missing: Vec<&String> = listed.iter().filter(|id| !have.contains(id)).collect();
        if !missing.is_empty() {
            let join = |ids: Vec<&String>| match ids.is_empty() {
                true => "none".to_string(),
                false => ids
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            return Err(SealingError::MissingKeys {
                data_dir: data_dir.to_path_buf(),
                missing: join(missing),
                configured: join(have.iter().collect()),
            });
        }
        let Some(id) = self.current_id() else {
            return Ok(());
        };
        if listed.contains(&id) {
            return Ok(());
        }
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let mut text: String = listed.iter().map(|l| format!("{l}\n")).collect();
        text.push_str(&format!("{id}\n"));
        let tmp = data_dir.join(format!("{KEYS_FILE}.tmp"));
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// `plain` sealed with the current key; as it is without one.
    pub fn seal(&self, field: Field, plain: Bytes) -> Bytes {
        match self.seal_bytes(field, &plain) {
            Some(sealed) => Bytes::from(sealed),
            None => plain,
        }
    }

    /// `plain` sealed, as text (base64 after a marker); as it is without a
    /// key.
    pub fn seal_text(&self, field: Field, plain: String) -> String {
        use base64::Engine;
        match self.seal_bytes(field, plain.as_bytes()) {
            Some(sealed) => format!(
                "{TEXT_MAGIC}{}",
                base64::engine::general_purpose::STANDARD.encode(&sealed[MAGIC.len()..])
            ),
            None => plain,
        }
    }

    fn seal_bytes(&self, field: Field, plain: &[u8]) -> Option<Vec<u8>> {
        let (id, key) = self.current.as_ref()?;
        let mut nonce = [0u8; NONCE_LEN];
        // SystemRandom reads getrandom(2); it does not fail on Linux once
        // the pool is up, and a zero nonce is never used if it did.
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(MAGIC.len() + ID_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(field.aad()),
            &mut body,
        )
        .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    /// A stored value opened: a sealed one with its key, a clear one (from
    /// before a key was set) as it is.
    pub fn open(&self, field: Field, stored: Bytes) -> Result<Bytes, SealingError> {
        if !stored.starts_with(MAGIC) {
            return Ok(stored);
        }
        self.open_sealed(field, &stored[MAGIC.len()..])
            .map(Bytes::from)
    }

    /// A stored text opened (see [`Keys::seal_text`]).
    pub fn open_text(&self, field: Field, stored: String) -> Result<String, SealingError> {
        use base64::Engine;
        let Some(b64) = stored.strip_prefix(TEXT_MAGIC) else {
            return Ok(stored);
        };
        let damaged = || SealingError::Damaged {
            field: field_name(field),
            id: "?".into(),
        };
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| damaged())?;
        let plain = self.open_sealed(field, &sealed)?;
        String::from_utf8(plain).map_err(|_| damaged())
    }

    fn open_sealed(&self, field: Field, sealed: &[u8]) -> Result<Vec<u8>, SealingError> {
        let name = field_name(field);
        if sealed.len() < ID_LEN + NONCE_LEN {
            return Err(SealingError::Damaged {
                field: name,
                id: "?".into(),
            });
        }
        let (id, rest) = sealed.split_at(ID_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let id_hex = hex::encode(id);
        let key = self
            .all
            .iter()
            .find(|(k, _)| k[..] == id[..])
            .map(|(_, key)| key)
            .ok_or_else(|| SealingError::UnknownKey {
                field: name,
                id: id_hex.clone(),
            })?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealingError::Damaged {
            field: name,
            id: id_hex.clone(),
        })?;
        let mut body = body.to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(field.aad()),
                &mut body,
            )
            .map_err(|_| SealingError::Damaged {
                field: name,
                id: id_hex,
            })?;
        Ok(plain.to_vec())
    }
}

fn field_name(field: Field) -> &'static str {
    match field {
        Field::Payload => "payload",
        Field::Result => "result",
        Field::Error => "error message",
    }
}

/// Whether a payload a producer sends could be taken for a sealed one:
/// such a payload is refused at enqueue, so a stored value is sealed
/// exactly when it starts with the marker.
pub fn looks_sealed(payload: &[u8]) -> bool {
    payload.starts_with(MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, new_key_text().unwrap()).unwrap();
        path
    }

    #[test]
    fn sealed_values_open_with_their_key_and_field_only() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = key_file(dir.path(), "k1");
        let keys = Keys::load(Some(&k1), &[]).unwrap();
        let sealed = keys.seal(Field::Payload, Bytes::from_static(b"secret-marker"));
        assert!(!sealed.windows(13).any(|w| w == b"secret-marker"));
        assert_eq!(
            &keys.open(Field::Payload, sealed.clone()).unwrap()[..],
            b"secret-marker"
        );
        // Two seals of one value differ (a nonce each).
        assert_ne!(
            sealed,
            keys.seal(Field::Payload, Bytes::from_static(b"secret-marker"))
        );
        assert!(matches!(
            keys.open(Field::Result, sealed.clone()),
            Err(SealingError::Damaged { .. })
        ));
        let text = keys.seal_text(Field::Error, "it broke: secret".into());
        assert!(!text.contains("secret"));
        assert_eq!(
            keys.open_text(Field::Error, text).unwrap(),
            "it broke: secret"
        );
        // Clear records from before the key read as they are.
        assert_eq!(
            &keys
                .open(Field::Payload, Bytes::from_static(b"old"))
                .unwrap()[..],
            b"old"
        );

        // Rotated: the old key only opens; without it, the record names it.
        let k2 = key_file(dir.path(), "k2");
        let rotated = Keys::load(Some(&k2), std::slice::from_ref(&k1)).unwrap();
        assert_eq!(
            &rotated.open(Field::Payload, sealed.clone()).unwrap()[..],
            b"secret-marker"
        );
        let without = Keys::load(Some(&k2), &[]).unwrap();
        let err = without
            .open(Field::Payload, sealed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("encryption_old_keys"), "{err}");
        // No keys: nothing sealed.
        assert_eq!(
            &Keys::none().seal(Field::Payload, Bytes::from_static(b"x"))[..],
            b"x"
        );
    }

    #[test]
    fn a_data_dir_sealed_with_another_key_is_refused_with_nothing_changed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let k1 = key_file(dir.path(), "k1");
        let k2 = key_file(dir.path(), "k2");
        Keys::load(Some(&k1), &[])
            .unwrap()
            .check_data_dir(&data)
            .unwrap();
        let listed = std::fs::read_to_string(data.join(KEYS_FILE)).unwrap();
        for keys in [Keys::load(Some(&k2), &[]).unwrap(), Keys::none()] {
            let err = keys.check_data_dir(&data).unwrap_err().to_string();
            assert!(err.contains("Nothing was changed"), "{err}");
            assert_eq!(
                std::fs::read_to_string(data.join(KEYS_FILE)).unwrap(),
                listed
            );
        }
        // Rotation: the old key kept, the new one listed too.
        Keys::load(Some(&k2), &[k1])
            .unwrap()
            .check_data_dir(&data)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(data.join(KEYS_FILE))
                .unwrap()
                .lines()
                .count(),
            2
        );
        // A key file that is not one.
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "not hex").unwrap();
        let err = Keys::load(Some(&bad), &[]).unwrap_err().to_string();
        assert!(err.contains("drover key new"), "{err}");
    }
}
