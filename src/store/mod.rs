/*!
The store: where journaled records become queryable rows.

[`Store`] is the embedded SQLite backend. The store loader (`consumers::store_loader`) writes
batches into it together with its journal offset; queries (`query`) stream rows out of it.
The SQL that depends only on what a user asked ([`where_clause`]) is kept apart from the
SQLite specifics so that a PostgreSQL backend can reuse it.
*/

mod migrations;
mod sqlite;
pub mod where_clause;

use std::path::PathBuf;

pub use sqlite::Store;

/// What one [`Store::load`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOutcome {
    /// New rows written.
    pub inserted: u64,
    /// Impressions already in the store under the same identity (re-deliveries).
    pub duplicates: u64,
    /// Entries whose payload could not be parsed; logged with their offset and skipped.
    pub unparseable: u64,
    /// The consumer offset committed with the rows: one past the last entry loaded.
    pub next_offset: u64,
}

/// One stored impression, borrowed straight from the database row being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImpressionView<'r> {
    /// The user key.
    pub key: &'r str,
    /// The feature flag name.
    pub split: &'r str,
    /// `environmentName` as Split sent it.
    pub environment: Option<&'r str>,
    /// `environmentId` as Split sent it.
    pub environment_id: Option<&'r str>,
    /// The treatment served.
    pub treatment: &'r str,
    /// The targeting rule ("Rule" in the seed's report).
    pub label: Option<&'r str>,
    /// Evaluation time, epoch milliseconds.
    pub time: i64,
    /// The bucketing key.
    pub bucketing_key: Option<&'r str>,
    /// Host name of the SDK's machine.
    pub machine_name: Option<&'r str>,
    /// IP address of the SDK's machine.
    pub machine_ip: Option<&'r str>,
    /// The flag definition's version, epoch milliseconds.
    pub split_version_number: Option<i64>,
    /// The SDK language.
    pub sdk: Option<&'r str>,
    /// The SDK version.
    pub sdk_version: Option<&'r str>,
    /// Impression properties, a JSON document in a string.
    pub properties: Option<&'r str>,
    /// Fields sluice did not know, as one JSON object.
    pub extra: Option<&'r str>,
    /// When sluice received the impression, epoch milliseconds.
    pub received_at: i64,
}

/// What can go wrong opening or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A read-only open found no database file.
    #[error("no store at {} — run `sluice serve` first or pass --data-dir", path.display())]
    Missing {
        /// Where the store was looked for.
        path: PathBuf,
    },
    /// SQLite could not open or configure the database file.
    #[error("cannot open the store at {}: {source}; check that the directory exists and is writable", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database was written by a newer sluice.
    #[error(
        "the store at {} has schema version {found}, but this sluice knows only up to {supported}; run a newer sluice or pass another --data-dir",
        path.display()
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The version found in the database.
        found: u32,
        /// The newest version this binary knows.
        supported: u32,
    },
    /// A read-only open found a database that still needs migrating.
    #[error(
        "the store at {} has schema version {found}, this sluice needs {expected}; run `sluice serve` once to migrate it",
        path.display()
    )]
    Outdated {
        /// The database file.
        path: PathBuf,
        /// The version found in the database.
        found: u32,
        /// The version this binary needs.
        expected: u32,
    },
    /// A schema migration failed; it was rolled back.
    #[error("store migration {version} ({description}) failed and was rolled back: {source}")]
    Migration {
        /// The migration that failed.
        version: u32,
        /// What the migration does.
        description: &'static str,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The thread parsing a batch panicked (a bug); the batch was rolled back and will be retried.
    #[error("the store loader's parser thread panicked; the batch was rolled back — please report this as a bug")]
    ParserPanicked,
    /// A statement failed (busy, disk full, I/O error…); the transaction was rolled back.
    #[error("store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Builders shared by the store, query and loader tests.

    use bytes::Bytes;

    use crate::journal::Entry;
    use crate::record::RecordKind;

    /// A journal entry holding `json` at `offset`, received at `offset + 1_000`.
    pub fn entry(offset: u64, json: &str) -> Entry {
        Entry {
            offset,
            kind: RecordKind::SplitImpression,
            received_at_ms: (offset as i64).saturating_add(1_000),
            payload: Bytes::copy_from_slice(json.as_bytes()),
        }
    }

    /// A minimal impression with the fields that identify it.
    pub fn impression(key: &str, split: &str, env: &str, treatment: &str, label: &str, time: i64) -> String {
        serde_json::json!({
            "key": key, "split": split, "environmentName": env, "treatment": treatment,
            "label": label, "time": time,
        })
        .to_string()
    }
}
