/*!
Versioned schema migrations: an ordered list of SQL steps, each applied once in its own transaction.

`schema_migrations(version, applied_at)` records what has been applied. A database that already
holds a version this binary does not know was written by a newer sluice and is refused rather
than guessed at. Each step carries its SQL for both backends side by side, so the two schemas
cannot drift apart in version; this module applies the SQLite side and
`store::postgres::migrate` the PostgreSQL side.
*/

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::StoreError;

/// One schema step, in each backend's dialect.
pub(super) struct Migration {
    pub(super) version: u32,
    pub(super) description: &'static str,
    sqlite: &'static str,
    pub(super) postgres: &'static str,
}

/// Every migration, oldest first; versions are 1, 2, 3… with no gaps. Never edit a released step:
/// append a new one.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "impressions and consumer offsets",
        sqlite: "
        CREATE TABLE impressions (
            key TEXT NOT NULL,
            split TEXT NOT NULL,
            environment TEXT,
            environment_id TEXT,
            treatment TEXT NOT NULL,
            label TEXT,
            time INTEGER NOT NULL,
            bucketing_key TEXT,
            machine_name TEXT,
            machine_ip TEXT,
            split_version_number INTEGER,
            sdk TEXT,
            sdk_version TEXT,
            properties TEXT,
            extra TEXT,
            received_at INTEGER NOT NULL,
            journal_offset INTEGER NOT NULL,
            identity BLOB NOT NULL UNIQUE
        );
        CREATE INDEX impressions_time ON impressions (time);
        CREATE TABLE consumer_offsets (
            consumer TEXT PRIMARY KEY,
            next_offset INTEGER NOT NULL
        );
    ",
        // Times stay epoch-ms `bigint` so the seed's check query reads the same numbers on both
        // backends. There is no rowid: `journal_offset` is unique per impression and is the arrival
        // order, so the time index ends with it and exports need no sort.
        postgres: "
        CREATE TABLE impressions (
            key text NOT NULL,
            split text NOT NULL,
            environment text,
            environment_id text,
            treatment text NOT NULL,
            label text,
            time bigint NOT NULL,
            bucketing_key text,
            machine_name text,
            machine_ip text,
            split_version_number bigint,
            sdk text,
            sdk_version text,
            properties text,
            extra text,
            received_at bigint NOT NULL,
            journal_offset bigint NOT NULL,
            identity bytea NOT NULL UNIQUE
        );
        CREATE INDEX impressions_time ON impressions (time, journal_offset);
        CREATE TABLE consumer_offsets (
            consumer text PRIMARY KEY,
            next_offset bigint NOT NULL
        );
    ",
    },
    Migration {
        version: 2,
        description: "segment events",
        // `raw` is the whole event as journaled; the other columns are what queries filter and sort
        // on. `message_id` is the event's identity: a re-sent event is stored once, for ever.
        sqlite: "
        CREATE TABLE events (
            message_id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            event TEXT,
            name TEXT,
            user_id TEXT,
            anonymous_id TEXT,
            previous_id TEXT,
            group_id TEXT,
            timestamp INTEGER NOT NULL,
            original_timestamp INTEGER,
            sent_at INTEGER,
            received_at INTEGER,
            arrived_at INTEGER NOT NULL,
            timestamp_clamped INTEGER NOT NULL,
            page_url TEXT,
            page_referrer TEXT,
            source TEXT,
            raw TEXT NOT NULL,
            journal_offset INTEGER NOT NULL
        );
        CREATE INDEX events_timestamp ON events (timestamp);
        CREATE INDEX events_anonymous_id ON events (anonymous_id, timestamp) WHERE anonymous_id IS NOT NULL;
        CREATE INDEX events_user_id ON events (user_id, timestamp) WHERE user_id IS NOT NULL;
        CREATE INDEX events_previous_id ON events (previous_id) WHERE previous_id IS NOT NULL;
    ",
        // `raw` is `json`, not `jsonb`: it keeps the text as sent (jsonb refuses `\u0000`, which
        // would wedge the loader on one odd event) and still has `->` and `->>`.
        postgres: "
        CREATE TABLE events (
            message_id text NOT NULL UNIQUE,
            type text NOT NULL,
            event text,
            name text,
            user_id text,
            anonymous_id text,
            previous_id text,
            group_id text,
            timestamp bigint NOT NULL,
            original_timestamp bigint,
            sent_at bigint,
            received_at bigint,
            arrived_at bigint NOT NULL,
            timestamp_clamped boolean NOT NULL,
            page_url text,
            page_referrer text,
            source text,
            raw json NOT NULL,
            journal_offset bigint NOT NULL
        );
        CREATE INDEX events_timestamp ON events (timestamp, journal_offset);
        CREATE INDEX events_anonymous_id ON events (anonymous_id, timestamp) WHERE anonymous_id IS NOT NULL;
        CREATE INDEX events_user_id ON events (user_id, timestamp) WHERE user_id IS NOT NULL;
        CREATE INDEX events_previous_id ON events (previous_id) WHERE previous_id IS NOT NULL;
    ",
    },
    Migration {
        version: 3,
        description: "the journal each consumer offset belongs to",
        // NULL for offsets written before journals had an identity: the loader adopts them for
        // the journal it finds, if they fit in it.
        sqlite: "ALTER TABLE consumer_offsets ADD COLUMN journal_id TEXT;",
        postgres: "ALTER TABLE consumer_offsets ADD COLUMN journal_id text;",
    },
    Migration {
        version: 4,
        description: "indexes for the alias search",
        // They hold only `alias` events, so the identity search follows links without reading a
        // user's other events, at no cost to loading impressions. Indexes for `?key=` and
        // `?split=` were measured and left out of the schema: each costs a fifth to a half of the
        // load rate, and a key index, inserted at random places, collapses it once it outgrows
        // the cache (BENCHMARKS.md, "Store migration 4"). `store.filter_indexes` adds them for
        // those who want the lookups more.
        sqlite: "
        CREATE INDEX events_alias_user_id ON events (user_id) WHERE type = 'alias';
        CREATE INDEX events_alias_previous_id ON events (previous_id) WHERE type = 'alias';
    ",
        postgres: "
        CREATE INDEX events_alias_user_id ON events (user_id) WHERE type = 'alias';
        CREATE INDEX events_alias_previous_id ON events (previous_id) WHERE type = 'alias';
    ",
    },
    Migration {
        version: 5,
        description: "a fingerprint of the last entry each consumer loaded",
        // NULL where unknown (offsets written before, or set by `adopt-journal`): not checked.
        sqlite: "ALTER TABLE consumer_offsets ADD COLUMN last_entry_crc INTEGER;",
        postgres: "ALTER TABLE consumer_offsets ADD COLUMN last_entry_crc bigint;",
    },
    Migration {
        version: 6,
        description: "an index of track events by name and time, for experiment metrics",
        // An experiment read-out reads the `track` events of a few names over a time range. Event
        // names are few and timestamps grow, so inserts land at the end of a few runs of this
        // index, not at random places (BENCHMARKS.md, "Experiment read-outs", measures the cost).
        sqlite: "CREATE INDEX events_track ON events (event, timestamp) WHERE type = 'track';",
        postgres: "CREATE INDEX events_track ON events (event, timestamp) WHERE type = 'track';",
    },
];

/// The schema version this binary writes and reads.
pub(super) fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The highest migration applied to `conn`'s database; 0 for a database sluice never touched.
pub(super) fn applied_version(conn: &Connection) -> rusqlite::Result<u32> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))
}

/// Refuses a database whose schema differs from [`latest`]; used where migrating is not allowed.
pub(super) fn check_current(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found = applied_version(conn)?;
    let expected = latest();
    if found > expected {
        return Err(StoreError::TooNew { store: path.display().to_string(), found, supported: expected });
    }
    if found < expected {
        return Err(StoreError::Outdated { store: path.display().to_string(), found, expected });
    }
    Ok(())
}

/// Applies every migration the database lacks.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            applied_at INTEGER NOT NULL
        )",
    )?;
    let found = applied_version(conn)?;
    if found > latest() {
        return Err(StoreError::TooNew { store: path.display().to_string(), found, supported: latest() });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        apply(conn, m).map_err(|source| StoreError::Migration {
            version: m.version,
            description: m.description,
            source,
        })?;
    }
    Ok(())
}

fn apply(conn: &mut Connection, m: &Migration) -> rusqlite::Result<()> {
    // IMMEDIATE takes the write lock before checking, so two processes opening a fresh store
    // at once cannot both apply the same step.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let done = tx
        .query_row("SELECT 1 FROM schema_migrations WHERE version = ?1", [m.version], |_| Ok(()))
        .optional()?
        .is_some();
    if !done {
        tx.execute_batch(m.sqlite)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            (m.version, chrono::Utc::now().timestamp_millis()),
        )?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_dense_and_start_at_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "migration {} is out of order", m.description);
        }
    }

    #[test]
    fn migrations_apply_once_and_are_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        assert_eq!(applied_version(&conn).unwrap(), 0);
        migrate(&mut conn, path).unwrap();
        assert_eq!(applied_version(&conn).unwrap(), latest());
        migrate(&mut conn, path).unwrap();
        let rows: u32 = conn.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0)).unwrap();
        assert_eq!(rows as usize, MIGRATIONS.len());
        check_current(&conn, path).unwrap();
    }

    #[test]
    fn a_database_from_a_newer_binary_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new("/data/sluice.db");
        migrate(&mut conn, path).unwrap();
        conn.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [latest() + 1]).unwrap();
        let err = migrate(&mut conn, path).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found, .. } if found == latest() + 1), "{err}");
        assert!(err.to_string().contains("run a newer sluice"), "{err}");
        assert!(matches!(check_current(&conn, path), Err(StoreError::TooNew { .. })));
    }
}
