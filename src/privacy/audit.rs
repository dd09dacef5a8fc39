/*!
The audit log: one JSON line per erasure or suppression change, appended and fsynced before the
request is answered, readable by the owner only (`<data-dir>/privacy/audit.log`). It says who
asked, when, what and what it did; it names the person by hashed ids only, so it keeps none of
the erased data.
*/

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::PrivacyError;

/// The append-only audit file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    /// Opens (creating, 0600) the log at `path` for appending.
    pub fn open(path: &Path) -> Result<AuditLog, PrivacyError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| PrivacyError::io(path, e))?;
        Ok(AuditLog { path: path.to_owned(), file: Mutex::new(file) })
    }

    /// Appends `entry` as one line, with `at` (now, RFC 3339) added, and fsyncs it.
    pub fn append(&self, entry: &serde_json::Value) -> Result<(), PrivacyError> {
        let mut entry = entry.clone();
        if let Some(object) = entry.as_object_mut() {
            object.insert("at".into(), chrono::Utc::now().to_rfc3339().into());
        }
        let mut line = entry.to_string();
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(line.as_bytes()).and_then(|()| file.sync_data()).map_err(|e| PrivacyError::io(&self.path, e))
    }
}
