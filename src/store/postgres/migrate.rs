/*!
Applies the PostgreSQL side of [`super::super::migrations`] under an advisory lock.

Several sluice processes may start against one database at once: `pg_advisory_lock` makes them
take turns, and each re-reads the applied version once it holds the lock, so every step is
applied exactly once. Each step runs in its own transaction with its `schema_migrations` row
(PostgreSQL's DDL is transactional), so a failed step leaves nothing behind.
*/

use ::postgres::Client;

use crate::store::StoreError;
use crate::store::migrations::{MIGRATIONS, latest};

/// The advisory lock key that serialises sluice migrations (any fixed number; this is "sluice" in ASCII).
const MIGRATION_LOCK: i64 = 0x736c_7569_6365;

/// Applies every migration the database lacks.
pub(super) fn migrate(client: &mut Client, store: &str) -> Result<(), StoreError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = migrate_locked(client, store);
    // A broken connection releases the lock by itself; an explicit unlock is for the healthy case.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result?;
    unlocked?;
    Ok(())
}

fn migrate_locked(client: &mut Client, store: &str) -> Result<(), StoreError> {
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            applied_at bigint NOT NULL
        )",
    )?;
    let found = applied_version(client)?;
    if found > latest() {
        return Err(StoreError::TooNew { store: store.to_owned(), found, supported: latest() });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        let apply = |client: &mut Client| -> Result<(), ::postgres::Error> {
            let mut tx = client.transaction()?;
            tx.batch_execute(m.postgres)?;
            let version = i32::try_from(m.version).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                &[&version, &chrono::Utc::now().timestamp_millis()],
            )?;
            tx.commit()
        };
        apply(client).map_err(|source| StoreError::PostgresMigration {
            version: m.version,
            description: m.description,
            source,
        })?;
        tracing::info!(version = m.version, description = m.description, store, "applied a store migration");
    }
    Ok(())
}

/// Refuses a database whose schema differs from [`latest`]; used where migrating is not allowed.
pub(super) fn check_current(client: &mut Client, store: &str) -> Result<(), StoreError> {
    let found = applied_version(client)?;
    let expected = latest();
    if found > expected {
        return Err(StoreError::TooNew { store: store.to_owned(), found, supported: expected });
    }
    if found < expected {
        return Err(StoreError::Outdated { store: store.to_owned(), found, expected });
    }
    Ok(())
}

/// The highest migration applied; 0 for a database (or schema) sluice never touched.
fn applied_version(client: &mut Client) -> Result<u32, ::postgres::Error> {
    // to_regclass follows search_path, so a store in its own schema is looked for there.
    let exists: bool = client.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?.get(0);
    if !exists {
        return Ok(0);
    }
    let version: i32 = client.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])?.get(0);
    Ok(version.unsigned_abs())
}
