/*!
The store: where journaled records become queryable rows.

[`Store`] is one interface over two backends: embedded SQLite (the default, one file in the data
directory) and PostgreSQL (chosen by a `postgres://` URL). The store loader
(`consumers::store_loader`) writes batches into it together with its journal offset; queries
(`query`) stream rows out of it. What differs between the backends is kept small: the SQL that
depends only on what a user asked ([`where_clause`]) and the migrations ([`migrations`], both
dialects side by side) are shared, and each backend module holds only its connection handling,
its bulk-load path and its row decoding.
*/

mod filter;
mod load_rows;
mod migrations;
#[cfg(test)]
mod pg_test_db;
pub mod postgres;
mod query_pool;
mod sqlite;
#[cfg(test)]
mod tests;
pub mod where_clause;

use std::fmt;
use std::path::PathBuf;

pub(crate) use self::load_rows::unparseable;
pub use self::postgres::{PgSettings, PgStore};
pub use filter::{AnyOf, EventQuery, ImpressionQuery};
pub use query_pool::{PooledStore, QueryPool};
pub use sqlite::SqliteStore;

use crate::journal::Entry;
pub use crate::record::impression::ImpressionView;
use crate::record::schema::{self, Column, RowError};
pub use crate::record::segment_columns::EventView;

use crate::record::{DedupMode, RecordKind};

/// Which database holds the store, resolved once at start-up from `--store` / `[store] url`.
#[derive(Debug, Clone)]
pub enum StoreTarget {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PgSettings),
}

impl StoreTarget {
    /// Reads a store URL: `sqlite://PATH` or `postgres[ql]://…`; `None` is the SQLite file
    /// `default_sqlite`.
    pub fn parse(url: Option<&str>, default_sqlite: PathBuf, statement_timeout_ms: u64) -> Result<Self, StoreError> {
        let Some(url) = url.filter(|u| !u.is_empty()) else {
            return Ok(StoreTarget::Sqlite(default_sqlite));
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Ok(StoreTarget::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreTarget::Postgres(PgSettings::from_url(url, statement_timeout_ms)?));
        }
        Err(StoreError::BadUrl {
            reason: "it starts with neither `postgres://`, `postgresql://` nor `sqlite://`".into(),
        })
    }

    /// The backend's name, for `/readyz` and logs.
    pub fn backend(&self) -> &'static str {
        match self {
            StoreTarget::Sqlite(_) => "sqlite",
            StoreTarget::Postgres(_) => "postgres",
        }
    }
}

impl fmt::Display for StoreTarget {
    /// Where the store is, safe to log: never shows a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreTarget::Sqlite(path) => write!(f, "{}", path.display()),
            StoreTarget::Postgres(pg) => write!(f, "{pg}"),
        }
    }
}

/// A consumer's place as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerPosition {
    /// Every journal offset below it is loaded.
    pub offset: u64,
    /// The id of the journal those offsets are in; `None` when written before journals had one.
    pub journal_id: Option<String>,
}

/// An open store, on either backend.
#[derive(Debug)]
pub enum Store {
    /// The embedded SQLite file (boxed too: with its connection's statement cache it is large,
    /// and a store moves between threads with every batch).
    Sqlite(Box<SqliteStore>),
    /// A PostgreSQL database (boxed: its connection is much larger than SQLite's).
    Postgres(Box<PgStore>),
}

impl Store {
    /// Opens the store for writing, creating it if needed and bringing its schema up to date.
    pub fn open(target: &StoreTarget) -> Result<Store, StoreError> {
        Ok(match target {
            StoreTarget::Sqlite(path) => Store::Sqlite(Box::new(SqliteStore::open(path)?)),
            StoreTarget::Postgres(pg) => Store::Postgres(Box::new(PgStore::open(pg)?)),
        })
    }

    /// Opens an existing, migrated store for queries; works while `sluice serve` writes to it.
    pub fn open_read_only(target: &StoreTarget) -> Result<Store, StoreError> {
        Ok(match target {
            StoreTarget::Sqlite(path) => Store::Sqlite(Box::new(SqliteStore::open_read_only(path)?)),
            StoreTarget::Postgres(pg) => Store::Postgres(Box::new(PgStore::open_read_only(pg)?)),
        })
    }

    /// The offset `consumer` committed with its last load (0 if it never loaded).
    pub fn consumer_offset(&mut self, consumer: &str) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.consumer_offset(consumer),
            Store::Postgres(s) => s.consumer_offset(consumer),
        }
    }

    /// Where `consumer` is: its offset and the journal it belongs to; `None` if it never loaded.
    pub fn consumer_position(&mut self, consumer: &str) -> Result<Option<ConsumerPosition>, StoreError> {
        match self {
            Store::Sqlite(s) => s.consumer_position(consumer),
            Store::Postgres(s) => s.consumer_position(consumer),
        }
    }

    /// Sets `consumer`'s offset and the journal it belongs to (a load keeps the journal and
    /// moves the offset).
    pub fn set_consumer_position(&mut self, consumer: &str, position: &ConsumerPosition) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.set_consumer_position(consumer, position),
            Store::Postgres(s) => s.set_consumer_position(consumer, position),
        }
    }

    /// Creates the optional filter indexes asked for that do not exist yet (it never drops one:
    /// `DROP INDEX impressions_key` by hand undoes it). Building one over a large table takes a
    /// while, during which loading waits.
    pub fn ensure_filter_indexes(&mut self, which: FilterIndexes) -> Result<(), StoreError> {
        for sql in which.statements() {
            match self {
                Store::Sqlite(s) => s.conn.execute_batch(sql)?,
                Store::Postgres(s) => s.client()?.batch_execute(sql)?,
            }
        }
        Ok(())
    }

    /// From now on, commits `consumer` offsets only while the store's row names journal `id`:
    /// should another journal take the store over (`sluice store adopt-journal` for another data
    /// directory), a commit fails with [`StoreError::JournalChanged`] instead of moving that
    /// journal's offset with this one's.
    pub fn bind_journal(&mut self, id: &str) {
        match self {
            Store::Sqlite(s) => s.bind_journal(id),
            Store::Postgres(s) => s.bind_journal(id),
        }
    }

    /// Stores the impressions among `entries` and commits `consumer`'s offset past the last entry,
    /// all in one durable transaction: either both happen or neither does.
    pub fn load(&mut self, consumer: &str, entries: &[Entry], mode: DedupMode) -> Result<LoadOutcome, StoreError> {
        match self {
            Store::Sqlite(s) => s.load(consumer, entries, mode),
            Store::Postgres(s) => s.load(consumer, entries, mode),
        }
    }

    /// Commits `consumer`'s offset past `entry` without storing anything: how the loader moves
    /// past a record the store refused, once that record is in the dead-letter area.
    pub fn skip_past(&mut self, consumer: &str, entry: &Entry) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.skip_past(consumer, entry),
            Store::Postgres(s) => s.skip_past(consumer, entry),
        }
    }

    /// The fingerprint ([`Entry::fingerprint`]) of the last entry `consumer` committed, when
    /// known: the loader checks on start that the journal still holds that entry there.
    pub fn consumer_fingerprint(&mut self, consumer: &str) -> Result<Option<u32>, StoreError> {
        match self {
            Store::Sqlite(s) => s.consumer_fingerprint(consumer),
            Store::Postgres(s) => s.consumer_fingerprint(consumer),
        }
    }

    /// Deletes at most `limit` rows of `kind` whose own time (an impression's `time`, an event's
    /// `timestamp`: what queries filter on) is before `before_ms`, in one short statement of
    /// its own, and returns how many went. The time indexes of migrations 1 and 2 find them.
    pub fn delete_older_than(&mut self, kind: RecordKind, before_ms: i64, limit: u64) -> Result<u64, StoreError> {
        let (table, time) = match kind {
            RecordKind::SplitImpression => ("impressions", "time"),
            RecordKind::SegmentEvent => ("events", "timestamp"),
        };
        // Neither backend has `DELETE … LIMIT`: the rows are picked by a bounded subquery on the
        // time index, by SQLite's rowid or PostgreSQL's ctid (rows are never updated, so a ctid
        // read in the statement still names its row when the statement deletes it).
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(match self {
            Store::Sqlite(s) => s.conn.execute(
                &format!("DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {time} < ?1 LIMIT ?2)"),
                (before_ms, limit),
            )? as u64,
            Store::Postgres(s) => s.client()?.execute(
                &format!(
                    "DELETE FROM {table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {table} WHERE {time} < $1 LIMIT $2))"
                ),
                &[&before_ms, &limit],
            )?,
        })
    }

    /// Streams the impressions matching `q` to `row`, ordered by time then arrival, and returns
    /// how many there were. Rows are read one at a time, so memory stays flat for any result size.
    pub fn query_impressions(
        &mut self,
        q: &ImpressionQuery,
        row: &mut dyn FnMut(&ImpressionView<'_>) -> Result<(), QueryError>,
    ) -> Result<u64, QueryError> {
        match self {
            Store::Sqlite(s) => s.query_impressions(q, row),
            Store::Postgres(s) => s.query_impressions(q, row),
        }
    }

    /// Streams the Segment events matching `q` to `row`, ordered by timestamp then arrival, and
    /// returns how many there were.
    pub fn query_events(
        &mut self,
        q: &EventQuery,
        row: &mut dyn FnMut(&EventView<'_>) -> Result<(), QueryError>,
    ) -> Result<u64, QueryError> {
        match self {
            Store::Sqlite(s) => s.query_events(q, row),
            Store::Postgres(s) => s.query_events(q, row),
        }
    }

    /// The ids reached from userId `start` through alias links, followed only through userIds
    /// (the rules are in `attribution::identity`), each with whether it is a userId: `start`
    /// first, at most `limit` in all. One recursive query, however long the chain.
    pub fn alias_reach(&mut self, start: &str, limit: usize) -> Result<Vec<(String, bool)>, QueryError> {
        match self {
            Store::Sqlite(s) => s.alias_reach(start, limit),
            Store::Postgres(s) => s.alias_reach(start, limit),
        }
    }

    /// Streams the rows of `sql` (one text for both backends, `$N` placeholders bound from
    /// `clause`) as their first `N` columns, one row at a time.
    pub fn rows<const N: usize>(
        &mut self,
        sql: &str,
        clause: &where_clause::WhereClause<'_>,
        row: &mut dyn FnMut([schema::Value<'_>; N]) -> Result<(), QueryError>,
    ) -> Result<u64, QueryError> {
        match self {
            Store::Sqlite(s) => s.rows(sql, clause, row),
            Store::Postgres(s) => s.rows(sql, clause, row),
        }
    }

    /// The distinct anonymousIds seen on an event with one of `user_ids`, sorted, at most `limit`.
    /// An empty `user_ids` has none.
    pub fn devices_of(&mut self, user_ids: &[String], limit: usize) -> Result<Vec<String>, QueryError> {
        let q = EventQuery { user_ids: Some(user_ids.to_vec()), ..EventQuery::default() };
        let mut clause = where_clause::WhereClause::for_events(&q);
        let limit = clause.limit(Some(limit as u64));
        let sql = format!(
            "SELECT DISTINCT anonymous_id FROM events{} AND anonymous_id IS NOT NULL ORDER BY anonymous_id{limit}",
            clause.sql
        );
        match self {
            Store::Sqlite(s) => s.strings(&sql, &clause),
            Store::Postgres(s) => s.strings(&sql, &clause),
        }
    }

    /// Deletes every event whose userId, anonymousId or previousId is one of `ids` and every
    /// impression keyed by one of them, in one transaction, and says how many of each: what an
    /// erasure does to the store. Deleting again finds nothing, so a resumed erasure may repeat
    /// it. On SQLite the deleted rows' bytes are overwritten (`secure_delete`), the file is
    /// rebuilt (`VACUUM`) and the write-ahead log, which still holds the pages as they were, is
    /// checkpointed and emptied: anyone who can read the file must not find the person in it.
    pub fn erase(&mut self, ids: &[String]) -> Result<ErasedRows, StoreError> {
        // One bound value whatever the number of ids: a JSON array on SQLite, a text[] on
        // PostgreSQL. Each id column gets its own statement so that its partial index is used.
        const SQLITE: [&str; 4] = [
            "DELETE FROM events WHERE user_id IS NOT NULL AND user_id IN (SELECT value FROM json_each(?1))",
            "DELETE FROM events WHERE anonymous_id IS NOT NULL AND anonymous_id IN (SELECT value FROM json_each(?1))",
            "DELETE FROM events WHERE previous_id IS NOT NULL AND previous_id IN (SELECT value FROM json_each(?1))",
            "DELETE FROM impressions WHERE key IN (SELECT value FROM json_each(?1))",
        ];
        const POSTGRES: [&str; 4] = [
            "DELETE FROM events WHERE user_id IS NOT NULL AND user_id = ANY($1)",
            "DELETE FROM events WHERE anonymous_id IS NOT NULL AND anonymous_id = ANY($1)",
            "DELETE FROM events WHERE previous_id IS NOT NULL AND previous_id = ANY($1)",
            "DELETE FROM impressions WHERE key = ANY($1)",
        ];
        let mut counts = [0u64; 4];
        match self {
            Store::Sqlite(s) => {
                let list = serde_json::Value::from(ids).to_string();
                // This connection only: the loader's inserts need not pay for it.
                s.conn.pragma_update(None, "secure_delete", true)?;
                let tx = s.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                for (sql, count) in SQLITE.iter().zip(&mut counts) {
                    *count = tx.execute(sql, [&list])? as u64;
                }
                tx.commit()?;
                // secure_delete zeroes the deleted cells, but page splits of earlier loads left
                // copies of cells in pages' free space that no delete touches: VACUUM rebuilds
                // every page from the live rows. It costs a pass over the file and holds the
                // write lock meanwhile (the loader waits; ingest goes on into the journal), once
                // per erasure, even one that found nothing now (a resumed erasure whose delete
                // was done before a crash has not vacuumed yet).
                s.conn.execute_batch("VACUUM")?;
                s.empty_the_wal()?;
            }
            Store::Postgres(s) => {
                let mut tx = s.client()?.transaction()?;
                for (sql, count) in POSTGRES.iter().zip(&mut counts) {
                    *count = tx.execute(*sql, &[&ids])?;
                }
                tx.commit()?;
            }
        }
        Ok(ErasedRows { events: counts[0] + counts[1] + counts[2], impressions: counts[3] })
    }

    /// Runs `read` so that its statements all see one state of the store: in one read
    /// transaction on SQLite (the loader goes on writing meanwhile; WAL readers block nobody).
    /// On PostgreSQL each statement sees its own snapshot, which for data that only grows
    /// differs by what arrived meanwhile.
    pub fn in_one_snapshot<T, E: From<StoreError>>(
        &mut self,
        read: impl FnOnce(&mut Store) -> Result<T, E>,
    ) -> Result<T, E> {
        let Store::Sqlite(s) = self else { return read(self) };
        s.conn.execute_batch("BEGIN DEFERRED").map_err(StoreError::from)?;
        let result = read(self);
        if let Store::Sqlite(s) = self {
            let ended = s.conn.execute_batch("COMMIT").map_err(StoreError::from);
            if result.is_ok() {
                ended?;
            }
        }
        result
    }

    /// Runs `query` bounded by `timeout` (`None`: unbounded) — on SQLite the whole call, on
    /// PostgreSQL each statement (`statement_timeout`); what runs longer is cancelled and the call
    /// answers [`QueryError::TimedOut`]. For answers computed before they are sent: a streamed
    /// export is bounded by its client instead.
    pub fn with_timeout<T>(
        &mut self,
        timeout: Option<std::time::Duration>,
        query: impl FnOnce(&mut Store) -> Result<T, QueryError>,
    ) -> Result<T, QueryError> {
        let Some(timeout) = timeout else { return query(self) };
        let result = match self {
            Store::Sqlite(s) => {
                // SQLite has no statement timeout: a progress handler, called every few thousand
                // virtual machine steps of any statement, interrupts once the deadline passed.
                let deadline = std::time::Instant::now() + timeout;
                s.conn.progress_handler(PROGRESS_STEPS, Some(move || std::time::Instant::now() >= deadline));
                let result = query(self);
                if let Store::Sqlite(s) = self {
                    s.conn.progress_handler(0, None::<fn() -> bool>);
                }
                result
            }
            Store::Postgres(p) => {
                p.set_statement_timeout(timeout)?;
                let result = query(self);
                if let Store::Postgres(p) = self {
                    p.set_statement_timeout(std::time::Duration::ZERO)?;
                }
                result
            }
        };
        result.map_err(|e| if e.is_cancelled() { QueryError::TimedOut(timeout) } else { e })
    }

    /// False once the connection is known to be broken, so a pool drops it instead of reusing it.
    fn is_reusable(&self) -> bool {
        match self {
            Store::Sqlite(_) => true,
            Store::Postgres(s) => s.is_connected(),
        }
    }

    /// Asks the database whether the connection still works (a round trip for PostgreSQL, whose
    /// server may have restarted since; nothing for an SQLite file).
    fn is_alive(&mut self, timeout: std::time::Duration) -> bool {
        match self {
            Store::Sqlite(_) => true,
            Store::Postgres(s) => s.is_alive(timeout),
        }
    }
}

/// Optional indexes for the impression filters (`store.filter_indexes`). They make `?key=` and
/// `?split=` lookups index scans instead of table scans, at a cost to loading that BENCHMARKS.md
/// measures (a key index is inserted at random places: heavy once it outgrows the cache), so
/// they are the operator's choice rather than part of the schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterIndexes {
    /// `impressions (key, time)`.
    pub key: bool,
    /// `impressions (split, time)`.
    pub split: bool,
}

impl FilterIndexes {
    /// The statements creating the indexes asked for; both backends read them alike.
    fn statements(self) -> impl Iterator<Item = &'static str> {
        [
            (self.key, "CREATE INDEX IF NOT EXISTS impressions_key ON impressions (key, time)"),
            (self.split, "CREATE INDEX IF NOT EXISTS impressions_split ON impressions (split, time)"),
        ]
        .into_iter()
        .filter_map(|(wanted, sql)| wanted.then_some(sql))
    }
}

/// What [`Store::erase`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErasedRows {
    /// Segment events.
    pub events: u64,
    /// Split impressions.
    pub impressions: u64,
}

/// What one [`Store::load`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOutcome {
    /// New rows written (impressions and events).
    pub inserted: u64,
    /// Impressions and events already in the store under the same identity (re-deliveries).
    pub duplicates: u64,
    /// Entries whose payload could not be parsed; logged with their offset and skipped.
    pub unparseable: u64,
    /// The consumer offset committed with the rows: one past the last entry loaded.
    pub next_offset: u64,
}

/// The SQL list of the columns of `table` that queries read back into its view, in table order.
fn view_list(table: &[Column]) -> String {
    schema::store_list(table.iter().filter(|c| c.view))
}

/// How many SQLite virtual machine steps pass between two checks of a query's deadline.
const PROGRESS_STEPS: std::ffi::c_int = 1_000;

/// The alias search of [`Store::alias_reach`], with `$1` the start and `$2` the bound; the
/// `{inner}`/`{outer}` slots take the LIMIT, which SQLite wants inside the recursion (it then
/// stops adding rows) and PostgreSQL outside (it refuses it inside, and stops evaluating the
/// recursion once the outer query has its rows). `is_user` of a reached id: it is the userId of
/// the alias that reached it, or some event carries it as userId.
fn alias_reach_sql(inner: &str, outer: &str) -> String {
    format!(
        "WITH RECURSIVE reach(id, is_user) AS (
            SELECT CAST($1 AS TEXT), EXISTS (SELECT 1 FROM events WHERE user_id = $1)
            UNION
            SELECT CASE WHEN e.user_id = r.id THEN e.previous_id ELSE e.user_id END,
                   e.user_id <> r.id OR EXISTS (SELECT 1 FROM events u WHERE u.user_id = e.previous_id)
            FROM reach r JOIN events e ON e.user_id = r.id OR e.previous_id = r.id
            WHERE (r.is_user OR r.id = $1) AND e.type = 'alias' AND e.user_id <> e.previous_id{inner}
        )
        SELECT id, is_user FROM reach{outer}"
    )
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
    /// The store URL cannot be used.
    #[error("the store URL is not valid: {reason}; use postgres://USER[:PASSWORD]@HOST[:PORT]/DB or sqlite://PATH")]
    BadUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// PostgreSQL could not be reached or refused the login.
    #[error(
        "cannot connect to PostgreSQL at {store}: {}; check the URL given to --store / SLUICE_STORE, that the server is up, and the user's password (URL or PGPASSWORD)",
        PgMessage(.source)
    )]
    Connect {
        /// The database, without its password.
        store: String,
        /// What the driver said.
        source: ::postgres::Error,
    },
    /// The server's TLS did not pass the checks the URL's `sslmode` asks for.
    #[error(
        "cannot connect to PostgreSQL at {store} over TLS: {reason}; check that the server has ssl = on, that sslrootcert= names the CA that signed its certificate, and (for verify-full) that the URL's host is one the certificate names, or use sslmode=require to encrypt without checking the certificate"
    )]
    Tls {
        /// The database, without its password.
        store: String,
        /// Why TLS refused the server.
        reason: String,
    },
    /// A `sslmode` that checks certificates, with no CA to check them against.
    #[error(
        "sslmode={mode} checks the PostgreSQL server's certificate against a CA, but none is given; add sslrootcert=/path/to/ca.pem to the store URL (or sslrootcert=system for the operating system's CAs), or use sslmode=require to encrypt without checking"
    )]
    NoTlsRoots {
        /// The `sslmode` asked for.
        mode: String,
    },
    /// The CA certificates named by `sslrootcert` cannot be used.
    #[error(
        "cannot read the CA certificates in {path}: {reason}; point sslrootcert= at a PEM file holding the CA that signed the PostgreSQL server's certificate"
    )]
    TlsRoots {
        /// The file (or trust store) they were read from.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The database was written by a newer sluice.
    #[error(
        "the store at {store} has schema version {found}, but this sluice knows only up to {supported}; run a newer sluice or point --data-dir / --store elsewhere"
    )]
    TooNew {
        /// Where the store is.
        store: String,
        /// The version found in the database.
        found: u32,
        /// The newest version this binary knows.
        supported: u32,
    },
    /// A read-only open found a database that still needs migrating.
    #[error(
        "the store at {store} has schema version {found}, this sluice needs {expected}; run `sluice migrate` (or `sluice serve` once) to migrate it"
    )]
    Outdated {
        /// Where the store is.
        store: String,
        /// The version found in the database.
        found: u32,
        /// The version this binary needs.
        expected: u32,
    },
    /// An SQLite schema migration failed; it was rolled back.
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
    /// A PostgreSQL schema migration failed; it was rolled back.
    #[error("store migration {version} ({description}) failed and was rolled back: {}", PgMessage(.source))]
    PostgresMigration {
        /// The migration that failed.
        version: u32,
        /// What the migration does.
        description: &'static str,
        /// What PostgreSQL said.
        source: ::postgres::Error,
    },
    /// Every query connection stayed in use for as long as a query may wait for one.
    #[error(
        "all {pool_size} store connections for queries are in use (waited {} ms); retry later, or raise store.pool_size (or store.pool_wait_ms) if this is the normal load",
        waited.as_millis()
    )]
    PoolBusy {
        /// `store.pool_size`.
        pool_size: usize,
        /// `store.pool_wait_ms`.
        waited: std::time::Duration,
    },
    /// The store's offset row was taken over by another journal while this loader ran.
    #[error(
        "the store's offset for `{consumer}` now belongs to another journal than this one ({journal}): `sluice store adopt-journal` was run for another data directory, or another sluice with another data directory loads this store. This loader stopped rather than mix the two journals' offsets; run one sluice per store, with the data directory the store now follows"
    )]
    JournalChanged {
        /// The consumer whose offset was taken over.
        consumer: String,
        /// This loader's journal.
        journal: String,
    },
    /// A stored row does not fit the column table (a required column is NULL or of another type).
    #[error("a row read from the store does not fit sluice's schema: {0}")]
    Row(#[from] RowError),
    /// A journal offset is beyond what the store's signed 64-bit columns hold.
    #[error("journal offset {0} is too large for the store; the journal is damaged or was not written by sluice")]
    OffsetTooLarge(u64),
    /// The thread running a store call panicked (a bug); the call did not complete.
    #[error("a store task failed: {0}")]
    Join(String),
    /// A statement failed (busy, disk full, I/O error…); the transaction was rolled back.
    #[error("store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL statement failed or the connection broke; the transaction was rolled back.
    #[error("PostgreSQL error: {}", PgMessage(.0))]
    Postgres(#[from] ::postgres::Error),
}

/// A PostgreSQL error as the server reported it. The driver's own `Display` says only "db error"
/// for everything the server answers, and hides the cause of a failed connection; this shows the
/// severity, SQLSTATE, message, detail, hint and context (none of which hold the connection URL).
pub struct PgMessage<'a>(pub &'a ::postgres::Error);

impl fmt::Display for PgMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(db) = self.0.as_db_error() else {
            write!(f, "{}", self.0)?;
            let mut cause = std::error::Error::source(self.0);
            while let Some(e) = cause {
                write!(f, ": {e}")?;
                cause = e.source();
            }
            return Ok(());
        };
        write!(f, "{} {}: {}", db.severity(), db.code().code(), db.message())?;
        for (label, part) in [("DETAIL", db.detail()), ("HINT", db.hint()), ("CONTEXT", db.where_())] {
            if let Some(part) = part {
                write!(f, "; {label}: {part}")?;
            }
        }
        Ok(())
    }
}

impl StoreError {
    /// True when the database refused the rows themselves — a value it cannot hold, a constraint
    /// they break, a size over one of its limits — so that loading the same rows again fails the
    /// same way: PostgreSQL's SQLSTATE classes 22 (data exception), 23 (integrity constraint) and
    /// 54 (program limit exceeded), SQLite's constraint, type-mismatch and too-big errors. Lost
    /// connections, timeouts, locks, full disks and everything else are worth retrying.
    pub fn is_refusal_of_data(&self) -> bool {
        match self {
            StoreError::Postgres(e) => {
                e.as_db_error().is_some_and(|db| matches!(db.code().code().get(..2), Some("22" | "23" | "54")))
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
                failure.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TypeMismatch
                    | rusqlite::ErrorCode::TooBig
            ),
            _ => false,
        }
    }

    /// True when the database could not be reached (down, restarting, refusing connections):
    /// worth waiting for, unlike a bad URL or a schema from a newer sluice.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Connect { .. } => true,
            StoreError::Postgres(e) | StoreError::PostgresMigration { source: e, .. } => {
                e.is_closed() || e.as_db_error().is_none()
            }
            _ => false,
        }
    }
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

    /// A journal entry holding the Segment event `json` at `offset`.
    pub fn event_entry(offset: u64, json: &str) -> Entry {
        Entry { kind: RecordKind::SegmentEvent, ..entry(offset, json) }
    }

    /// A processed Segment event (as `record::segment::accept` journals it) at `ts_ms`.
    pub fn segment_event(
        message_id: &str,
        kind: &str,
        anonymous_id: Option<&str>,
        user_id: Option<&str>,
        ts_ms: i64,
    ) -> String {
        let mut e = serde_json::json!({
            "type": kind, "messageId": message_id,
            "timestamp": chrono::DateTime::from_timestamp_millis(ts_ms).unwrap().to_rfc3339(),
            "properties": {"n": 1}, "sluice": {"arrivedAt": ts_ms + 5, "via": "webhook"},
        });
        if let Some(a) = anonymous_id {
            e["anonymousId"] = a.into();
        }
        if let Some(u) = user_id {
            e["userId"] = u.into();
        }
        if kind == "track" {
            e["event"] = "Clicked".into();
        }
        if kind == "group" {
            e["groupId"] = "g".into();
        }
        if kind == "alias" {
            e["previousId"] = anonymous_id.unwrap_or("old").into();
            e.as_object_mut().unwrap().remove("anonymousId");
        }
        e.to_string()
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

/// Why a query or an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The store could not be read.
    #[error("reading from the store failed: {0}")]
    Store(#[from] StoreError),
    /// The output could not be written (disk full, client disconnected…).
    #[error("writing the export failed: {0}")]
    Write(#[from] std::io::Error),
    /// A statement ran longer than `store.query_timeout_ms` and was cancelled.
    #[error(
        "the query took longer than {} ms and was cancelled; raise store.query_timeout_ms if such answers are expected",
        .0.as_millis()
    )]
    TimedOut(std::time::Duration),
}

impl QueryError {
    /// True when the database cancelled the statement (a timeout or an interrupt).
    pub fn is_cancelled(&self) -> bool {
        match self {
            QueryError::Store(StoreError::Sqlite(e)) => {
                e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted)
            }
            QueryError::Store(StoreError::Postgres(e)) => {
                e.code() == Some(&::postgres::error::SqlState::QUERY_CANCELED)
            }
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> Self {
        QueryError::Store(e.into())
    }
}
