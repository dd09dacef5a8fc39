/*!
Privacy requests: erasure and suppression of a person (GDPR/CCPA), as Segment's and RudderStack's
regulation APIs offer them.

A person is the identity cluster `GET /api/user/{id}` computes (`query::attribution::cluster`):
every userId and anonymousId linked to the id asked for, plus that id itself (an impression key
seen in no Segment event is still a person). What this module keeps about them never holds the
ids in clear, only their keyed hashes ([`ids::IdHasher`]), except the pending erasure job while
it runs (it must delete by the ids themselves after a crash):

- the erasure ledger ([`ledger`]): per erasure, the hashed ids and the journal offset reached
  when it ran; every consumer skips a journaled record below that offset carrying one of those
  ids, so records journaled but not yet loaded (or re-delivered later) never come back;
- the suppression list ([`suppression`]): hashed ids whose records ingest drops before the journal;
- the audit log ([`audit`]): who asked for what, when, and what it did;
- the erasure jobs ([`erase`]): persisted before anything is done, resumed after a crash.

Every file here is written whole (temporary file, fsync, rename, fsync of the directory) or
appended and fsynced, and is readable by its owner only.
*/

pub mod audit;
pub mod erase;
pub mod ids;
pub mod ledger;
pub mod suppression;

use std::path::{Path, PathBuf};

use crate::journal::Entry;
use crate::record::RecordKind;
use crate::record::json::string_members;
pub use ids::IdHasher;
pub use ledger::ErasureLedger;
pub use suppression::Suppressions;

/// The privacy state of one data directory: the hasher, the ledger, the suppressions, the audit log.
#[derive(Debug)]
pub struct Privacy {
    /// Hashes ids with this installation's salt.
    pub hasher: IdHasher,
    /// What consumers skip.
    pub ledger: ErasureLedger,
    /// What ingest drops.
    pub suppressions: Suppressions,
    /// Who did what.
    pub audit: audit::AuditLog,
    /// `<data-dir>/privacy`.
    pub dir: PathBuf,
}

impl Privacy {
    /// Opens (creating) `<data_dir>/privacy` and everything in it.
    pub fn open(data_dir: &Path) -> Result<Privacy, PrivacyError> {
        let dir = data_dir.join("privacy");
        std::fs::create_dir_all(&dir).map_err(|source| PrivacyError::io(&dir, source))?;
        restrict(&dir, 0o700)?;
        let hasher = IdHasher::open(&dir.join("salt"))?;
        Ok(Privacy {
            ledger: ErasureLedger::open(&dir.join("erasure-ledger.json"))?,
            suppressions: Suppressions::open(&dir.join("suppressions.json"))?,
            audit: audit::AuditLog::open(&dir.join("audit.log"))?,
            hasher,
            dir,
        })
    }
}

impl Privacy {
    /// True when a consumer must not deliver `entry`: an erasure after it named one of its ids.
    pub fn erased(&self, entry: &Entry) -> bool {
        self.ledger.covers(&self.hasher, entry.offset, || ids_of(entry.kind, &entry.payload))
    }
}

/// The ids a journaled record carries that a person can be erased by: an impression's key, an
/// event's userId, anonymousId and previousId (an `alias` naming an erased or suppressed id). None for a record that does not decode (the consumers
/// dead-letter those on their own).
pub fn ids_of(kind: RecordKind, payload: &[u8]) -> Vec<String> {
    // Not `record::decode`: ingest asks this of every record while a suppression exists, and a
    // scan for the id members costs a fraction of a full parse (a record reaching here was
    // validated by its parser already).
    let Ok(json) = std::str::from_utf8(payload) else { return Vec::new() };
    string_members(json, kind.person_ids()).into_iter().flatten().map(std::borrow::Cow::into_owned).collect()
}

/// What can go wrong keeping the privacy files.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// A file could not be read or written.
    #[error("{}: {source}; check that the data directory is writable and the disk not full", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A file does not hold what sluice wrote there.
    #[error("{} is damaged: {reason}; restore it from a backup (it must not be deleted: it records erasures)", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl PrivacyError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        PrivacyError::Io { path: path.to_owned(), source }
    }
}

/// Sets `path`'s permission bits (owner only, for files holding hashed or clear ids).
fn restrict(path: &Path, mode: u32) -> Result<(), PrivacyError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| PrivacyError::io(path, e))
}

/// Replaces `path` with `bytes` atomically: a temporary file beside it (0600), fsynced, renamed
/// over it, and the directory fsynced, so a crash leaves either the old or the new contents.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PrivacyError> {
    crate::files::replace(path, bytes).map_err(|e| PrivacyError::io(path, e))
}

/// Reads `path` as JSON, or `None` when it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, PrivacyError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| PrivacyError::Damaged { path: path.to_owned(), reason: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PrivacyError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_reads_an_impressions_key_and_an_events_user_and_anonymous_ids() {
        let imp = br#"{"key":"ann","split":"s","treatment":"on","time":1700000000000}"#;
        assert_eq!(ids_of(RecordKind::SplitImpression, imp), ["ann"]);
        let event =
            br#"{"type":"page","messageId":"m","userId":"u1","anonymousId":"a1","timestamp":"2026-11-01T10:00:00Z"}"#;
        assert_eq!(ids_of(RecordKind::SegmentEvent, event), ["u1", "a1"]);
        // An alias from a suppressed id to a new one carries the person only as previousId.
        let alias = br#"{"type":"alias","messageId":"m2","userId":"new","previousId":"ann","timestamp":"2026-11-01T10:00:00Z"}"#;
        assert_eq!(ids_of(RecordKind::SegmentEvent, alias), ["new", "ann"]);
        assert!(ids_of(RecordKind::SegmentEvent, b"not json").is_empty());
    }

    #[test]
    fn privacy_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let privacy = Privacy::open(dir.path()).unwrap();
        privacy.audit.append(&serde_json::json!({"what": "test"})).unwrap();
        for name in ["", "salt", "audit.log"] {
            let mode = std::fs::metadata(privacy.dir.join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{name}: {mode:o}");
        }
    }
}
