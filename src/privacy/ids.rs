/*!
Hashed ids: how the ledger, the suppression list and the audit log name a person without
keeping their ids.

An id is hashed with HMAC-SHA-256 keyed by a random salt made once per installation
(`<data-dir>/privacy/salt`, 0600). Plain SHA-256 of an e-mail address is reversed by hashing a
list of addresses; without the salt, the hashes are worthless to whoever reads them. The salt
must therefore stay with the data directory: a new salt makes every stored hash unrecognisable
(suppressed people would be accepted again), so a missing salt file beside existing privacy
files is an error, not a reason to make a new one.
*/

use std::path::Path;

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use super::PrivacyError;

/// Hashes ids with this installation's salt.
#[derive(Clone)]
pub struct IdHasher {
    /// HMAC already keyed with the salt: each id then costs a clone and its own bytes, not the
    /// key's two extra SHA-256 blocks (ingest hashes every id of every record while a
    /// suppression exists).
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for IdHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdHasher { salt: <hidden> }")
    }
}

impl IdHasher {
    /// Reads the salt at `path`, creating it (random, 0600) when the directory has no privacy
    /// files yet.
    pub fn open(path: &Path) -> Result<IdHasher, PrivacyError> {
        let damaged = |reason: &str| PrivacyError::Damaged { path: path.to_owned(), reason: reason.to_owned() };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = decode_hex(text.trim()).ok_or_else(|| damaged("not 64 hexadecimal digits"))?;
                let salt: [u8; 32] = bytes.try_into().map_err(|_| damaged("not 64 hexadecimal digits"))?;
                Ok(IdHasher::keyed_with(&salt))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = path.parent().unwrap_or(Path::new("."));
                let others = std::fs::read_dir(dir)
                    .map_err(|e| PrivacyError::Io { path: dir.to_owned(), source: e })?
                    .filter_map(Result::ok)
                    .any(|e| e.file_name() != "salt.tmp");
                if others {
                    return Err(damaged(
                        "it is missing while erasures or suppressions were recorded with it, whose hashed ids it alone can match",
                    ));
                }
                let salt: [u8; 32] = rand::random();
                super::write_atomically(path, format!("{}\n", hex(&salt)).as_bytes())?;
                Ok(IdHasher::keyed_with(&salt))
            }
            Err(e) => Err(PrivacyError::Io { path: path.to_owned(), source: e }),
        }
    }

    fn keyed_with(salt: &[u8; 32]) -> IdHasher {
        // HMAC accepts keys of any length: this cannot fail.
        IdHasher { keyed: Hmac::<Sha256>::new_from_slice(salt).expect("HMAC takes keys of any length") }
    }

    /// The hash of `id`: 64 lowercase hexadecimal digits.
    pub fn hash(&self, id: &str) -> String {
        hex(&self.digest(id))
    }

    /// The hash of `id` as bytes, for the sets looked up on the hot path.
    pub fn digest(&self, id: &str) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hexadecimal, if it is some.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_hashes_to_python_hmac_sha256_of_it_under_the_salt() {
        // python3 -c "import hmac,hashlib; print(hmac.new(bytes(range(32)), b'ann@example.com', hashlib.sha256).hexdigest())"
        let salt: [u8; 32] = std::array::from_fn(|i| i as u8);
        let hasher = IdHasher::keyed_with(&salt);
        let expected = "7fd723e36b1c9108cdb7920372eed4450ff2050f2cda0bd65d71e5d09de0079c";
        assert_eq!(hasher.hash("ann@example.com"), expected);
        assert_eq!(hasher.hash("ann@example.com"), expected, "the keyed state is not used up");
    }

    #[test]
    fn hashes_are_keyed_by_the_installations_salt_and_stable_across_opens() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = IdHasher::open(&one.path().join("salt")).unwrap();
        let again = IdHasher::open(&one.path().join("salt")).unwrap();
        let b = IdHasher::open(&two.path().join("salt")).unwrap();
        assert_eq!(a.hash("ann@example.com"), again.hash("ann@example.com"));
        assert_ne!(a.hash("ann@example.com"), b.hash("ann@example.com"));
        assert_eq!(a.hash("x").len(), 64);
        assert_eq!(decode_hex(&a.hash("x")).unwrap(), a.digest("x"));
    }

    #[test]
    fn a_lost_salt_beside_recorded_erasures_is_an_error_not_a_new_salt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("erasure-ledger.json"), "[]").unwrap();
        let err = IdHasher::open(&dir.path().join("salt")).unwrap_err();
        assert!(err.to_string().contains("restore it from a backup"), "{err}");
    }
}
