//! Bearer tokens: making one, and the hash the config keeps instead of it.
//! A token is 256 random bits, so a plain SHA-256 of it is as good as a slow
//! password hash: there is nothing to guess from a dictionary.

use sha2::{Digest, Sha256};

/// What a token looks like in front: says what it is when it turns up in a
/// log or a paste.
const PREFIX: &str = "drv_";

/// A token's SHA-256.
pub type TokenHash = [u8; 32];

/// A fresh token and the `hash` value its `[[tokens]]` entry needs.
pub fn generate() -> Result<(String, String), getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let token = format!("{PREFIX}{}", hex::encode(secret));
    let hash = format!("sha256:{}", hex::encode(hash(&token)));
    Ok((token, hash))
}

/// A token's SHA-256: what a `[[tokens]]` entry's `hash` holds, decoded.
pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Reads a config `hash` value: `sha256:` and 64 hex digits.
pub fn parse_hash(text: &str) -> Result<TokenHash, String> {
    let hex_part = text
        .strip_prefix("sha256:")
        .ok_or("must start with `sha256:` (copy it from `drover token new`)")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out)
        .map_err(|_| "must be `sha256:` and 64 hex digits (copy it from `drover token new`)")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_matches_its_hash_and_no_other() {
        let (token, h) = generate().unwrap();
        assert!(token.starts_with(PREFIX) && token.len() == PREFIX.len() + 64);
        assert_eq!(parse_hash(&h).unwrap(), hash(&token));
        let (other, _) = generate().unwrap();
        assert_ne!(parse_hash(&h).unwrap(), hash(&other));
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in [
            "",
            "sha256:",
            "md5:00",
            "sha256:zz",
            &format!("sha256:{}", "0".repeat(62)),
        ] {
            assert!(parse_hash(bad).is_err(), "{bad}");
        }
    }
}
