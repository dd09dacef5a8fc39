/*!
The SQLite store: one database file in WAL mode, written by the store loader, read by queries.

WAL lets exports and queries read while the loader writes. `synchronous=FULL` makes every load
commit durable before [`SqliteStore::load`] returns, because that commit carries the loader's journal
offset and the journal may delete segments below it as soon as it is told.
*/

use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, ToSql, TransactionBehavior, params, params_from_iter};

use super::load_rows::{self, LoadRow};
use super::where_clause::{SqlValue, WhereClause};
use super::{ConsumerPosition, EventView, ImpressionView, LoadOutcome, StoreError, migrations, view_list};
use crate::files;
use crate::journal::Entry;
use crate::record::schema::{self, Column, Value};
use crate::record::{DedupMode, impression, segment_columns};
use crate::store::{EventQuery, ImpressionQuery, QueryError};

/// The loader's page cache, in KiB (SQLite reads a negative `cache_size` as KiB). Identities and
/// times both grow with time, so a load touches the right edge of each index: a modest cache
/// holds every page it needs however large the table grows.
const WRITER_CACHE_KIB: i64 = 16 * 1024;
/// A query's page cache, in KiB: small, because queries read through the memory map instead.
const READER_CACHE_KIB: i64 = 2 * 1024;

/// Entries parsed per message from the parser thread to the inserter.
const PARSE_CHUNK: usize = 512;
/// Parsed chunks waiting for the inserter: enough to keep it busy, few enough to bound memory.
const PARSED_CHUNKS_IN_FLIGHT: usize = 4;

/// How much of the store file queries read through a memory map (exports read every page once:
/// mapping saves copying each into the cache; the pages are the kernel's, reclaimable at will).
const MMAP_BYTES: i64 = 1 << 30;

/// Page size of a new store file.
const PAGE_BYTES: i64 = 16 * 1024;

/// How long a statement waits for another connection's lock before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Impressions inserted by one statement when a chunk has that many: stepping one multi-row
/// `INSERT` instead of as many one-row ones saves a statement execution per row.
const ROWS_PER_INSERT: usize = 32;

/// `INSERT OR IGNORE` of `rows` rows of every column of `table` into `name`.
fn insert_sql(name: &str, table: &[Column], rows: usize) -> String {
    let row = |r: usize| {
        let slots: Vec<String> = (1..=table.len()).map(|i| format!("?{}", r * table.len() + i)).collect();
        format!("({})", slots.join(", "))
    };
    let values: Vec<String> = (0..rows).map(row).collect();
    format!("INSERT OR IGNORE INTO {name} ({}) VALUES {}", schema::store_list(table), values.join(", "))
}

static INSERT_IMPRESSION: LazyLock<String> = LazyLock::new(|| insert_sql("impressions", &impression::COLUMNS, 1));
static INSERT_IMPRESSIONS: LazyLock<String> =
    LazyLock::new(|| insert_sql("impressions", &impression::COLUMNS, ROWS_PER_INSERT));
static INSERT_EVENT: LazyLock<String> = LazyLock::new(|| insert_sql("events", &segment_columns::COLUMNS, 1));
static SELECT_IMPRESSIONS: LazyLock<String> = LazyLock::new(|| view_list(&impression::COLUMNS));
static SELECT_EVENTS: LazyLock<String> = LazyLock::new(|| view_list(&segment_columns::COLUMNS));

/// Moves a consumer's offset, but only within the journal the row names (see
/// [`Store::bind_journal`](super::Store::bind_journal)): no row changes when another journal took it over.
const UPSERT_OFFSET: &str = "INSERT INTO consumer_offsets (consumer, next_offset, journal_id, last_entry_crc)
    VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (consumer) DO UPDATE SET next_offset = excluded.next_offset, last_entry_crc = excluded.last_entry_crc
    WHERE consumer_offsets.journal_id IS excluded.journal_id";

const SET_POSITION: &str = "INSERT INTO consumer_offsets (consumer, next_offset, journal_id, last_entry_crc)
    VALUES (?1, ?2, ?3, NULL)
    ON CONFLICT (consumer) DO UPDATE SET next_offset = excluded.next_offset, journal_id = excluded.journal_id,
        last_entry_crc = NULL";

/// The embedded SQLite store.
pub struct SqliteStore {
    pub(super) conn: Connection,
    /// The journal whose offsets this connection commits, once bound.
    journal: Option<String>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.conn.path()).finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` for writing and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |source| StoreError::Open { path: path.to_owned(), source };
        // SQLite would create the file with its own mode (0644 under the usual umask); made
        // first, 0600, it also gives its mode to the -wal and -shm files SQLite adds beside it.
        // Failing here is left to SQLite's open, whose error says more.
        if path != Path::new(":memory:") {
            let _ = files::create_private(path);
        }
        let mut conn = Connection::open(path).map_err(open_err)?;
        configure(&conn, WRITER_CACHE_KIB).map_err(open_err)?;
        // Takes effect only when the file is created. Larger pages mean fewer, shallower B-tree
        // pages per loaded batch; rows here are ~300 bytes, far from needing overflow pages.
        conn.pragma_update(None, "page_size", PAGE_BYTES).map_err(open_err)?;
        // Switching a new file to WAL takes its exclusive lock without SQLite's busy handler, so
        // several processes creating the store at once (serve, migrate, a second node) would
        // fail "database is locked": retry within the busy timeout instead.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let mode: String = loop {
            match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)) {
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.map_err(open_err)?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            // Some network file systems cannot do WAL; sluice still works, but exports then block loads.
            tracing::warn!(path = %path.display(), journal_mode = %mode, "the store could not switch to WAL mode");
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        migrations::migrate(&mut conn, path)?;
        Ok(SqliteStore { conn, journal: None })
    }

    /// Copies every page of the write-ahead log into the database and empties the log, so that
    /// no earlier version of a page (of rows just erased, say) is left in it. A reader holding an
    /// old snapshot keeps the log in use: tried a few times, then left to SQLite's own
    /// checkpoints with a warning.
    pub(super) fn empty_the_wal(&self) -> Result<(), StoreError> {
        for _ in 0..3 {
            let (busy, _, _): (i64, i64, i64) = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            if busy == 0 {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        tracing::warn!(
            path = %self.conn.path().unwrap_or_default(),
            "the store's write-ahead log could not be emptied after an erasure (a long query holds it); it still holds earlier versions of the erased rows' pages until SQLite reuses them"
        );
        Ok(())
    }

    /// Opens an existing store for queries; works while `sluice serve` is writing to it.
    pub fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Missing { path: path.to_owned() });
        }
        let open_err = |source| StoreError::Open { path: path.to_owned(), source };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        configure(&conn, READER_CACHE_KIB).map_err(open_err)?;
        conn.pragma_update(None, "mmap_size", MMAP_BYTES).map_err(open_err)?;
        migrations::check_current(&conn, path)?;
        Ok(SqliteStore { conn, journal: None })
    }

    /// The offset `consumer` committed with its last load (0 if it never loaded).
    pub fn consumer_offset(&self, consumer: &str) -> Result<u64, StoreError> {
        let offset = self
            .conn
            .query_row("SELECT next_offset FROM consumer_offsets WHERE consumer = ?1", [consumer], |r| r.get(0))
            .optional()?;
        Ok(offset.unwrap_or(0))
    }

    /// Where `consumer` is: its offset and the journal it belongs to; `None` if it never loaded.
    pub fn consumer_position(&self, consumer: &str) -> Result<Option<ConsumerPosition>, StoreError> {
        let position = self
            .conn
            .query_row("SELECT next_offset, journal_id FROM consumer_offsets WHERE consumer = ?1", [consumer], |r| {
                Ok(ConsumerPosition { offset: r.get(0)?, journal_id: r.get(1)? })
            })
            .optional()?;
        Ok(position)
    }

    /// Sets `consumer`'s offset and the journal it belongs to.
    pub fn set_consumer_position(&mut self, consumer: &str, position: &ConsumerPosition) -> Result<(), StoreError> {
        self.conn.execute(SET_POSITION, (consumer, position.offset, &position.journal_id))?;
        Ok(())
    }

    /// Stores the impressions among `entries` and commits `consumer`'s offset past the last entry,
    /// all in one durable transaction: either both happen or neither does.
    pub fn load(&mut self, consumer: &str, entries: &[Entry], mode: DedupMode) -> Result<LoadOutcome, StoreError> {
        let Some(last) = entries.last() else {
            return Ok(LoadOutcome { next_offset: self.consumer_offset(consumer)?, ..LoadOutcome::default() });
        };
        let mut outcome = LoadOutcome { next_offset: last.offset + 1, ..LoadOutcome::default() };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Parsing and hashing take about a third of a row's cost; a second thread does them for
        // the next chunk while this one inserts, so loading uses both cores.
        std::thread::scope(|scope| -> Result<(), StoreError> {
            let (send, parsed) = std::sync::mpsc::sync_channel::<Vec<Option<LoadRow<'_>>>>(PARSED_CHUNKS_IN_FLIGHT);
            let parser = scope.spawn(move || {
                for chunk in entries.chunks(PARSE_CHUNK) {
                    let rows = load_rows::rows(chunk, mode).collect();
                    if send.send(rows).is_err() {
                        return; // The inserter failed and rolls back; nothing more to do.
                    }
                }
            });
            let mut insert_impression = tx.prepare_cached(&INSERT_IMPRESSION)?;
            let mut insert_impressions = tx.prepare_cached(&INSERT_IMPRESSIONS)?;
            let mut insert_event = tx.prepare_cached(&INSERT_EVENT)?;
            let mut count = |changed: usize, rows: usize| {
                outcome.inserted += changed as u64;
                outcome.duplicates += (rows - changed) as u64;
            };
            for chunk in parsed.iter() {
                let mut pending = Vec::with_capacity(ROWS_PER_INSERT);
                // Rows stay in journal order, so of two equal impressions the first is the one kept.
                for row in &chunk {
                    match row {
                        None => outcome.unparseable += 1,
                        Some(LoadRow::Impression(row)) => {
                            pending.push(row);
                            if pending.len() == ROWS_PER_INSERT {
                                let values = pending.iter().flat_map(|r| r.values());
                                count(insert_impressions.execute(params_from_iter(values))?, ROWS_PER_INSERT);
                                pending.clear();
                            }
                        }
                        Some(LoadRow::Event(row)) => count(insert_event.execute(params_from_iter(row.values()))?, 1),
                    }
                }
                for row in pending.drain(..) {
                    count(insert_impression.execute(params_from_iter(row.values()))?, 1);
                }
            }
            // A parser that died early would have closed the channel as if it had finished: the
            // batch must not commit with rows missing.
            parser.join().map_err(|_| StoreError::ParserPanicked)
        })?;
        commit_offset(&tx, self.journal.as_deref(), consumer, last)?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Commits `consumer`'s offset as `next_offset` without storing anything.
    pub fn skip_past(&mut self, consumer: &str, entry: &Entry) -> Result<(), StoreError> {
        commit_offset(&self.conn, self.journal.as_deref(), consumer, entry)
    }

    /// The fingerprint of the last entry `consumer` committed, when known.
    pub fn consumer_fingerprint(&self, consumer: &str) -> Result<Option<u32>, StoreError> {
        let crc: Option<Option<i64>> = self
            .conn
            .query_row("SELECT last_entry_crc FROM consumer_offsets WHERE consumer = ?1", [consumer], |r| r.get(0))
            .optional()?;
        Ok(crc.flatten().and_then(|crc| u32::try_from(crc).ok()))
    }

    /// Binds this connection's offset commits to the journal `id`.
    pub fn bind_journal(&mut self, id: &str) {
        self.journal = Some(id.to_owned());
    }

    /// Streams the impressions matching `q` to `row`, ordered by time then arrival, and returns
    /// how many there were. Rows are read one at a time, so memory stays flat for any result size.
    pub fn query_impressions(
        &self,
        q: &ImpressionQuery,
        row: &mut dyn FnMut(&ImpressionView<'_>) -> Result<(), QueryError>,
    ) -> Result<u64, QueryError> {
        let mut clause = WhereClause::for_impressions(q);
        let limit = clause.limit(q.limit);
        // `time, rowid` is exactly the key of the time index, so rows come out without a sort.
        let sql = format!("SELECT {} FROM impressions{} ORDER BY time, rowid{limit}", *SELECT_IMPRESSIONS, clause.sql);
        self.stream(&sql, &clause, &mut |r| row(&ImpressionView::from_values(values(r)?).map_err(StoreError::from)?))
    }

    /// Streams the events matching `q` to `row`, ordered by timestamp then arrival.
    pub fn query_events(
        &self,
        q: &EventQuery,
        row: &mut dyn FnMut(&EventView<'_>) -> Result<(), QueryError>,
    ) -> Result<u64, QueryError> {
        let mut clause = WhereClause::for_events(q);
        let limit = clause.limit(q.limit);
        let sql = format!("SELECT {} FROM events{} ORDER BY timestamp, rowid{limit}", *SELECT_EVENTS, clause.sql);
        self.stream(&sql, &clause, &mut |r| row(&EventView::from_values(values(r)?).map_err(StoreError::from)?))
    }

    /// See [`super::Store::alias_reach`].
    pub fn alias_reach(&self, start: &str, limit: usize) -> Result<Vec<(String, bool)>, QueryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(&super::alias_reach_sql(" LIMIT $2", ""))?;
        let rows = stmt.query_map(params![start, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Streams the rows of `sql` (with `clause`'s values) as their first `N` columns.
    pub fn rows<const N: usize>(
        &self,
        sql: &str,
        clause: &WhereClause<'_>,
        row: &mut dyn FnMut([Value<'_>; N]) -> Result<(), QueryError>,
    ) -> Result<u64, QueryError> {
        self.stream(sql, clause, &mut |r| row(values(r)?))
    }

    /// The text of each row's first column.
    pub fn strings(&self, sql: &str, clause: &WhereClause<'_>) -> Result<Vec<String>, QueryError> {
        let mut out = Vec::new();
        self.stream(sql, clause, &mut |r| {
            out.push(r.get(0)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs `sql` with `clause`'s values and hands each row to `row`, one at a time.
    fn stream(
        &self,
        sql: &str,
        clause: &WhereClause<'_>,
        row: &mut dyn FnMut(&Row<'_>) -> Result<(), QueryError>,
    ) -> Result<u64, QueryError> {
        // Cached: answers of one shape (a device's events, say) repeat the same text, and parsing
        // and planning it anew was ~6% of the CPU time of a sessions benchmark.
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params_from_iter(clause.params.iter()))?;
        let mut count = 0;
        while let Some(r) = rows.next()? {
            row(r)?;
            count += 1;
        }
        Ok(count)
    }
}

/// Settings every connection gets.
fn configure(conn: &Connection, cache_kib: i64) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "cache_size", -cache_kib)
}

/// The first `N` columns of a row as values, without copying text: a view's columns as
/// [`view_list`] selects them.
fn values<'r, const N: usize>(r: &'r Row<'_>) -> rusqlite::Result<[Value<'r>; N]> {
    let mut values = [Value::Null; N];
    for (i, value) in values.iter_mut().enumerate() {
        *value = match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::Int(n),
            ValueRef::Real(_) => {
                return Err(rusqlite::Error::InvalidColumnType(i, "real".into(), rusqlite::types::Type::Real));
            }
            text @ ValueRef::Text(_) => Value::Text(text.as_str()?),
            ValueRef::Blob(b) => Value::Bytes(b),
        };
    }
    Ok(values)
}

impl ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Int(n) => ValueRef::Integer(n),
            Value::Bool(b) => ValueRef::Integer(i64::from(b)),
            Value::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

impl ToSql for SqlValue<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            SqlValue::Text(s) => ValueRef::Text(s.as_bytes()),
            SqlValue::Integer(i) => ValueRef::Integer(i),
        }))
    }
}

/// Moves `consumer`'s offset past `last` on `conn` (a transaction, or the store's connection),
/// keeping `last`'s fingerprint, and refusing when the row belongs to another journal than
/// `journal`, the bound one.
fn commit_offset(conn: &Connection, journal: Option<&str>, consumer: &str, last: &Entry) -> Result<(), StoreError> {
    let params = params![consumer, last.offset + 1, journal, i64::from(last.fingerprint())];
    if conn.prepare_cached(UPSERT_OFFSET)?.execute(params)? == 0 {
        return Err(StoreError::JournalChanged {
            consumer: consumer.to_owned(),
            journal: journal.unwrap_or_default().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! What only SQLite has: the file, its pragmas, and read-only opens. Everything a store must
    //! do on either backend is in the shared suite (`store::tests`).

    use super::*;
    use crate::store::test_support::{entry, impression};

    #[test]
    fn open_uses_wal_and_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("sluice.db")).unwrap();
        let mode: String = store.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store.conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "synchronous must be FULL");
    }

    #[test]
    fn read_only_open_of_a_missing_store_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.db");
        let err = SqliteStore::open_read_only(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no store at {} — run `sluice serve` first or pass --data-dir", path.display())
        );
        assert!(!path.exists(), "a read-only open must not create the file");
    }

    #[test]
    fn read_only_open_refuses_a_database_that_is_not_a_migrated_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        let err = SqliteStore::open_read_only(&path).unwrap_err();
        assert!(matches!(err, StoreError::Outdated { found: 0, .. }), "{err}");
        assert!(err.to_string().contains("run `sluice migrate`"), "{err}");
    }

    #[test]
    fn read_only_open_works_after_the_writer_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.db");
        let mut writer = SqliteStore::open(&path).unwrap();
        writer.load("store", &[entry(0, &impression("a", "s", "P", "on", "r", 1))], DedupMode::Exact).unwrap();
        drop(writer);
        let reader = SqliteStore::open_read_only(&path).unwrap();
        let mut keys = Vec::new();
        reader
            .query_impressions(&ImpressionQuery::default(), &mut |v| {
                keys.push(v.key.to_owned());
                Ok(())
            })
            .unwrap();
        assert_eq!(keys, ["a"]);
    }

    #[test]
    fn a_failed_offset_commit_rolls_back_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("sluice.db")).unwrap();
        // The next offset (i64::MAX + 1) does not fit SQLite's INTEGER: the upsert fails after the
        // row was inserted, and the row must go with it.
        let err = store
            .load("store", &[entry(i64::MAX as u64, &impression("k", "s", "P", "on", "r", 1))], DedupMode::Exact)
            .unwrap_err();
        assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
        let count: i64 = store.conn.query_row("SELECT COUNT(*) FROM impressions", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 0);
        assert_eq!(store.consumer_offset("store").unwrap(), 0);
    }

    #[test]
    fn a_multi_row_insert_keeps_the_first_of_equal_impressions_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("sluice.db")).unwrap();
        // Three keys, each repeated with a later time: equal under per-version dedup.
        let n = ROWS_PER_INSERT as u64 * 2 + 5;
        let entries: Vec<_> = (0..n)
            .map(|i| entry(i, &impression(&format!("k{}", i % 3), "s", "P", "on", "r", 100 + i as i64)))
            .collect();
        let outcome = store.load("store", &entries, DedupMode::PerVersion).unwrap();
        assert_eq!((outcome.inserted, outcome.duplicates), (3, n - 3));
        let mut stmt = store.conn.prepare("SELECT time FROM impressions ORDER BY key").unwrap();
        let times: Vec<i64> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        assert_eq!(times, [100, 101, 102]);
    }

    #[test]
    fn a_batch_spanning_many_parse_chunks_loads_every_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("sluice.db")).unwrap();
        let n = PARSE_CHUNK * 3 + 7;
        let entries: Vec<_> = (0..n as u64)
            .map(|i| {
                if i % 100 == 50 {
                    entry(i, "not json")
                } else {
                    entry(i, &impression(&format!("user-{i}"), "s", "P", "on", "r", i as i64))
                }
            })
            .collect();
        let outcome = store.load("store", &entries, DedupMode::Exact).unwrap();
        let bad = entries.iter().filter(|e| e.payload.as_ref() == b"not json").count() as u64;
        assert_eq!(outcome.inserted + outcome.unparseable, n as u64);
        assert_eq!(outcome.unparseable, bad);
        let count: i64 = store.conn.query_row("SELECT COUNT(*) FROM impressions", [], |r| r.get(0)).unwrap();
        assert_eq!(count, (n as u64 - bad) as i64);
        assert_eq!(store.consumer_offset("store").unwrap(), n as u64);
    }
}
