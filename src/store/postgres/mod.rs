/*!
The PostgreSQL store: the production backend, chosen with a `postgres://` store URL.

Loading is bulk, with the consumer offset written in the same transaction. A batch is first
`COPY`'d in binary straight into `impressions` (and `events`), inside a savepoint. `COPY` cannot
skip rows that conflict, so when the batch holds a row already stored (a re-delivery) the
savepoint is rolled back and the batch goes through a per-connection temporary staging table
instead, moved with `INSERT … SELECT … ON CONFLICT DO NOTHING`. New data, the common case, thus costs
one `COPY`; re-deliveries cost a second pass. Queries stream rows through the
extended protocol: the driver stops reading the socket while the caller is busy with a row, so
memory stays flat whatever the result size.

A connection that breaks (server restart, network) is dropped and re-opened on the next call, so
the store loader's retries are all it takes to ride out an outage.
*/

mod connect;
mod migrate;

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::postgres::binary_copy::BinaryCopyInWriter;
use ::postgres::error::SqlState;
use ::postgres::fallible_iterator::FallibleIterator as _;
use ::postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use ::postgres::{Client, Row, Transaction};

use self::connect::{Tls, TlsMode};
use super::load_rows::{self, EventRow, ImpressionRow, LoadRow};
use super::where_clause::{SqlValue, WhereClause};
use super::{ConsumerPosition, EventView, ImpressionView, LoadOutcome, StoreError, view_list};
use crate::journal::Entry;
use crate::record::schema::{self, Column, Kind, Value};
use crate::record::{DedupMode, impression, segment_columns};
use crate::store::{EventQuery, ImpressionQuery, QueryError};

/// How long a connection attempt may take before it counts as a failure (and is retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A table the loader `COPY`s into, with its column table.
struct CopyTarget {
    table: &'static str,
    columns: &'static [Column],
}

const IMPRESSIONS: CopyTarget = CopyTarget { table: "impressions", columns: &impression::COLUMNS };
const EVENTS: CopyTarget = CopyTarget { table: "events", columns: &segment_columns::COLUMNS };

impl CopyTarget {
    /// The exact type of each column, in table order: binary `COPY` needs them.
    fn types(&self) -> Vec<Type> {
        self.columns.iter().map(|c| pg_type(c.kind)).collect()
    }
}

/// The PostgreSQL type of a column of `kind`, as the migrations create it.
fn pg_type(kind: Kind) -> Type {
    match kind {
        Kind::Text | Kind::Extra => Type::TEXT,
        Kind::Int | Kind::Millis => Type::INT8,
        Kind::Bool => Type::BOOL,
        Kind::Bytes => Type::BYTEA,
        Kind::Json => Type::JSON,
    }
}

static SELECT_IMPRESSIONS: LazyLock<String> = LazyLock::new(|| view_list(&impression::COLUMNS));
static SELECT_EVENTS: LazyLock<String> = LazyLock::new(|| view_list(&segment_columns::COLUMNS));

/// Moves a consumer's offset, but only within the journal the row names (see
/// [`Store::bind_journal`](super::Store::bind_journal)): no row changes when another journal took it over.
const UPSERT_OFFSET: &str = "INSERT INTO consumer_offsets (consumer, next_offset, journal_id, last_entry_crc)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (consumer) DO UPDATE SET next_offset = excluded.next_offset, last_entry_crc = excluded.last_entry_crc
    WHERE consumer_offsets.journal_id IS NOT DISTINCT FROM excluded.journal_id";

const SET_POSITION: &str = "INSERT INTO consumer_offsets (consumer, next_offset, journal_id, last_entry_crc)
    VALUES ($1, $2, $3, NULL)
    ON CONFLICT (consumer) DO UPDATE SET next_offset = excluded.next_offset, journal_id = excluded.journal_id,
        last_entry_crc = NULL";

/// How to reach the database: parsed once from the store URL.
#[derive(Clone)]
pub struct PgSettings {
    config: Arc<::postgres::Config>,
    tls: Tls,
    /// Applied to the loader's connection only: exports stream for as long as the client reads.
    statement_timeout_ms: u64,
}

impl PgSettings {
    /// Reads a `postgres://` URL (libpq's URL syntax, including `?sslmode=`, `?sslrootcert=` and
    /// `?options=`). When the URL has no password, `PGPASSWORD` supplies it, as it would for `psql`.
    pub fn from_url(url: &str, statement_timeout_ms: u64) -> Result<PgSettings, StoreError> {
        let (tls, url) = Tls::from_url(url)?;
        let mut config: ::postgres::Config =
            url.parse().map_err(|e: ::postgres::Error| StoreError::BadUrl { reason: e.to_string() })?;
        config.ssl_mode(tls.driver_mode());
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("sluice");
        }
        Ok(PgSettings { config: Arc::new(config), tls, statement_timeout_ms })
    }
}

impl fmt::Display for PgSettings {
    /// `postgres://user@host:port/db`, without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        write!(f, "postgres://")?;
        if let Some(user) = c.get_user() {
            write!(f, "{user}@")?;
        }
        for (i, host) in c.get_hosts().iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            match host {
                ::postgres::config::Host::Tcp(h) => write!(f, "{h}")?,
                ::postgres::config::Host::Unix(p) => write!(f, "{}", p.display())?,
            }
            // libpq's rules: one port for every host, or one per host; 5432 when none is given.
            let port = c.get_ports().get(i).or(c.get_ports().first()).copied().unwrap_or(5432);
            write!(f, ":{port}")?;
        }
        write!(f, "/{}", c.get_dbname().or(c.get_user()).unwrap_or_default())?;
        // The default says nothing; any other mode matters when a connection fails.
        if self.tls.mode != TlsMode::Prefer {
            write!(f, "?sslmode={}", self.tls.mode)?;
        }
        Ok(())
    }
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgSettings({self})")
    }
}

/// A PostgreSQL store: one connection, re-opened when it breaks.
pub struct PgStore {
    settings: PgSettings,
    /// Whether this is the loader's connection (which gets the statement timeout and staging table).
    writer: bool,
    client: Option<Client>,
    /// The journal whose offsets this connection commits, once bound.
    journal: Option<String>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore").field("store", &self.settings.to_string()).finish()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The driver closes a connection by blocking on its own small runtime, which tokio forbids
        // on an async worker thread (where the loader and the server drop their stores); a
        // short-lived thread closes it instead.
        if let Some(client) = self.client.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            std::thread::spawn(move || drop(client));
        }
    }
}

impl PgStore {
    /// Connects and brings the schema up to date; several processes may do this at once.
    pub fn open(settings: &PgSettings) -> Result<PgStore, StoreError> {
        let mut store = PgStore { settings: settings.clone(), writer: true, client: None, journal: None };
        migrate::migrate(store.client()?, &settings.to_string())?;
        Ok(store)
    }

    /// Connects for queries and checks that the schema is the one this binary reads.
    pub fn open_read_only(settings: &PgSettings) -> Result<PgStore, StoreError> {
        let mut store = PgStore { settings: settings.clone(), writer: false, client: None, journal: None };
        migrate::check_current(store.client()?, &settings.to_string())?;
        Ok(store)
    }

    /// False once the connection has broken.
    pub fn is_connected(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// True when an empty query round-trips within `timeout`: a connection whose server
    /// restarted looks open until it is used.
    pub fn is_alive(&mut self, timeout: Duration) -> bool {
        self.client.as_mut().is_some_and(|c| c.is_valid(timeout).is_ok())
    }

    /// The live connection, re-opened first if there is none or it broke.
    pub(super) fn client(&mut self) -> Result<&mut Client, StoreError> {
        let client = match self.client.take() {
            Some(client) if !client.is_closed() => client,
            _ => {
                let mut client = self.settings.tls.connect(&self.settings.config).map_err(|source| {
                    let store = self.settings.to_string();
                    match connect::tls_refusal(&source) {
                        Some(reason) => StoreError::Tls { store, reason },
                        None => StoreError::Connect { store, source },
                    }
                })?;
                if self.writer {
                    // A statement that hangs (a lock, a half-dead server) must fail and be retried.
                    // "Offset committed" must mean "rows durable", even on a server (or a role, or a
                    // URL's options) configured with synchronous_commit off.
                    client.batch_execute(&format!(
                        "SET statement_timeout = {}; SET synchronous_commit = on",
                        self.settings.statement_timeout_ms
                    ))?;
                }
                client
            }
        };
        Ok(self.client.insert(client))
    }

    /// The offset `consumer` committed with its last load (0 if it never loaded).
    pub fn consumer_offset(&mut self, consumer: &str) -> Result<u64, StoreError> {
        let row =
            self.client()?.query_opt("SELECT next_offset FROM consumer_offsets WHERE consumer = $1", &[&consumer])?;
        // Offsets are written from u64 values that fit i64, so they are never negative.
        Ok(row.map_or(0, |r| r.get::<_, i64>(0).unsigned_abs()))
    }

    /// Where `consumer` is: its offset and the journal it belongs to; `None` if it never loaded.
    pub fn consumer_position(&mut self, consumer: &str) -> Result<Option<ConsumerPosition>, StoreError> {
        let row = self
            .client()?
            .query_opt("SELECT next_offset, journal_id FROM consumer_offsets WHERE consumer = $1", &[&consumer])?;
        // Offsets are written from u64 values that fit i64, so they are never negative.
        Ok(row.map(|r| ConsumerPosition { offset: r.get::<_, i64>(0).unsigned_abs(), journal_id: r.get(1) }))
    }

    /// Sets `consumer`'s offset and the journal it belongs to.
    pub fn set_consumer_position(&mut self, consumer: &str, position: &ConsumerPosition) -> Result<(), StoreError> {
        let offset = i64::try_from(position.offset).map_err(|_| StoreError::OffsetTooLarge(position.offset))?;
        self.client()?.execute(SET_POSITION, &[&consumer, &offset, &position.journal_id])?;
        Ok(())
    }

    /// Stores the impressions among `entries` and commits `consumer`'s offset past the last entry,
    /// all in one transaction: either both happen or neither does.
    pub fn load(&mut self, consumer: &str, entries: &[Entry], mode: DedupMode) -> Result<LoadOutcome, StoreError> {
        let Some(last) = entries.last() else {
            return Ok(LoadOutcome { next_offset: self.consumer_offset(consumer)?, ..LoadOutcome::default() });
        };
        let next_offset = last.offset + 1;
        let next_offset_sql = i64::try_from(next_offset).map_err(|_| StoreError::OffsetTooLarge(next_offset))?;
        let mut outcome = LoadOutcome { next_offset, ..LoadOutcome::default() };
        // Parsed once, before the transaction: the staging path re-copies the same rows.
        let mut impressions = Vec::new();
        let mut events = Vec::new();
        for row in load_rows::rows(entries, mode) {
            match row {
                Some(LoadRow::Impression(row)) => impressions.push(row),
                Some(LoadRow::Event(row)) => events.push(row),
                None => outcome.unparseable += 1,
            }
        }
        let journal = self.journal.clone();
        let mut tx = self.client()?.transaction()?;
        for inserted in [
            load_table(&mut tx, &IMPRESSIONS, &impressions, write_impression)?,
            load_table(&mut tx, &EVENTS, &events, write_event)?,
        ] {
            outcome.inserted += inserted;
        }
        outcome.duplicates = (impressions.len() + events.len()) as u64 - outcome.inserted;
        let crc = i64::from(last.fingerprint());
        if tx.execute(UPSERT_OFFSET, &[&consumer, &next_offset_sql, &journal, &crc])? == 0 {
            return Err(journal_changed(consumer, journal));
        }
        tx.commit()?;
        Ok(outcome)
    }

    /// Commits `consumer`'s offset past `entry` without storing anything.
    pub fn skip_past(&mut self, consumer: &str, entry: &Entry) -> Result<(), StoreError> {
        let next_offset = entry.offset + 1;
        let next_offset_sql = i64::try_from(next_offset).map_err(|_| StoreError::OffsetTooLarge(next_offset))?;
        let (journal, crc) = (self.journal.clone(), i64::from(entry.fingerprint()));
        if self.client()?.execute(UPSERT_OFFSET, &[&consumer, &next_offset_sql, &journal, &crc])? == 0 {
            return Err(journal_changed(consumer, journal));
        }
        Ok(())
    }

    /// The fingerprint of the last entry `consumer` committed, when known.
    pub fn consumer_fingerprint(&mut self, consumer: &str) -> Result<Option<u32>, StoreError> {
        let row = self
            .client()?
            .query_opt("SELECT last_entry_crc FROM consumer_offsets WHERE consumer = $1", &[&consumer])?;
        Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).and_then(|crc| u32::try_from(crc).ok()))
    }

    /// Binds this connection's offset commits to the journal `id`.
    pub fn bind_journal(&mut self, id: &str) {
        self.journal = Some(id.to_owned());
    }

    /// Streams the impressions matching `q` to `row`, ordered by time then arrival, and returns
    /// how many there were.
    pub fn query_impressions(
        &mut self,
        q: &ImpressionQuery,
        row: &mut dyn FnMut(&ImpressionView<'_>) -> Result<(), QueryError>,
    ) -> Result<u64, QueryError> {
        let mut clause = WhereClause::for_impressions(q);
        let limit = clause.limit(q.limit);
        // `time, journal_offset` is exactly the key of the time index, so rows come out without a sort.
        let sql = format!(
            "SELECT {} FROM impressions{} ORDER BY time, journal_offset{limit}",
            *SELECT_IMPRESSIONS, clause.sql
        );
        self.stream(&sql, &clause, &mut |r| row(&ImpressionView::from_values(values(r)?).map_err(StoreError::from)?))
    }

    /// Streams the events matching `q` to `row`, ordered by timestamp then arrival.
    pub fn query_events(
        &mut self,
        q: &EventQuery,
        row: &mut dyn FnMut(&EventView<'_>) -> Result<(), QueryError>,
    ) -> Result<u64, QueryError> {
        let mut clause = WhereClause::for_events(q);
        let limit = clause.limit(q.limit);
        let sql =
            format!("SELECT {} FROM events{} ORDER BY timestamp, journal_offset{limit}", *SELECT_EVENTS, clause.sql);
        self.stream(&sql, &clause, &mut |r| row(&EventView::from_values(values(r)?).map_err(StoreError::from)?))
    }

    /// See [`super::Store::alias_reach`].
    pub fn alias_reach(&mut self, start: &str, limit: usize) -> Result<Vec<(String, bool)>, QueryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()?
            .query(&super::alias_reach_sql("", " LIMIT $2"), &[&start, &limit])
            .map_err(StoreError::from)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Streams the rows of `sql` (with `clause`'s values) as their first `N` columns.
    pub fn rows<const N: usize>(
        &mut self,
        sql: &str,
        clause: &WhereClause<'_>,
        row: &mut dyn FnMut([Value<'_>; N]) -> Result<(), QueryError>,
    ) -> Result<u64, QueryError> {
        self.stream(sql, clause, &mut |r| row(values(r)?))
    }

    /// The text of each row's first column.
    pub fn strings(&mut self, sql: &str, clause: &WhereClause<'_>) -> Result<Vec<String>, QueryError> {
        let mut out = Vec::new();
        self.stream(sql, clause, &mut |r| {
            out.push(r.try_get(0).map_err(StoreError::from)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Sets this session's `statement_timeout` (zero: none). Resetting a connection that broke
    /// meanwhile is skipped: its replacement starts without one.
    pub fn set_statement_timeout(&mut self, timeout: Duration) -> Result<(), QueryError> {
        let sql = format!("SET statement_timeout = {}", timeout.as_millis());
        if timeout.is_zero() {
            if let Some(client) = self.client.as_mut().filter(|c| !c.is_closed()) {
                client.batch_execute(&sql).map_err(StoreError::from)?;
            }
            return Ok(());
        }
        self.client()?.batch_execute(&sql).map_err(StoreError::from)?;
        Ok(())
    }

    /// Runs `sql` with `clause`'s values and hands each row to `row`, reading the socket only as
    /// fast as `row` returns, so memory stays flat.
    fn stream(
        &mut self,
        sql: &str,
        clause: &WhereClause<'_>,
        row: &mut dyn FnMut(&Row) -> Result<(), QueryError>,
    ) -> Result<u64, QueryError> {
        let params = clause.params.iter().map(|v| -> &(dyn ToSql + Sync) {
            match v {
                SqlValue::Text(s) => s,
                SqlValue::Integer(i) => i,
            }
        });
        let result = (|| {
            let mut rows = self.client()?.query_raw(sql, params).map_err(StoreError::from)?;
            let mut count = 0;
            while let Some(r) = rows.next().map_err(StoreError::from)? {
                row(&r)?;
                count += 1;
            }
            Ok(count)
        })();
        if result.is_err() {
            // The rest of the result may still be on its way; a fresh connection is cheaper than
            // draining it, and a pool must not hand out a connection in that state.
            self.client = None;
        }
        result
    }
}

/// Writes `rows` into `target` and returns how many were new. Fast path: most batches hold only
/// new rows, so they are copied straight into the table inside a savepoint. A unique violation
/// (a re-delivery) rolls back just that attempt, and the batch goes through a per-connection
/// temporary staging table instead, moved with `INSERT … ON CONFLICT DO NOTHING`. New data, the
/// common case, thus costs one `COPY`; re-deliveries cost a second pass.
fn load_table<R>(
    tx: &mut Transaction<'_>,
    target: &CopyTarget,
    rows: &[R],
    write: fn(&mut BinaryCopyInWriter<'_>, &R) -> Result<(), ::postgres::Error>,
) -> Result<u64, ::postgres::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let table = target.table;
    let columns = schema::store_list(target.columns);
    let mut direct = tx.savepoint("direct")?;
    match copy_rows(&mut direct, table, target, rows, write) {
        Ok(()) => {
            direct.commit()?;
            Ok(rows.len() as u64)
        }
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            direct.rollback()?;
            // Inside the transaction: on a fresh connection this creates the table, otherwise
            // it is a no-op. Temporary tables are private to their session; emptied at commit.
            tx.batch_execute(&format!(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {table}_staging (LIKE {table}) ON COMMIT DELETE ROWS"
            ))?;
            copy_rows(tx, &format!("{table}_staging"), target, rows, write)?;
            // In journal order, so that among duplicates the first one delivered is the one
            // kept, exactly as SQLite's INSERT OR IGNORE does.
            tx.execute(
                &format!(
                    "INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_staging \
                     ORDER BY journal_offset ON CONFLICT DO NOTHING"
                ),
                &[],
            )
        }
        Err(e) => Err(e),
    }
}

/// Binary-`COPY`s `rows` into `table`, which has `target`'s columns.
fn copy_rows<R>(
    tx: &mut Transaction<'_>,
    table: &str,
    target: &CopyTarget,
    rows: &[R],
    write: fn(&mut BinaryCopyInWriter<'_>, &R) -> Result<(), ::postgres::Error>,
) -> Result<(), ::postgres::Error> {
    let columns = schema::store_list(target.columns);
    let sink = tx.copy_in(&format!("COPY {table} ({columns}) FROM STDIN (FORMAT binary)"))?;
    let mut writer = BinaryCopyInWriter::new(sink, &target.types());
    for row in rows {
        write(&mut writer, row)?;
    }
    writer.finish()?;
    Ok(())
}

fn write_impression(writer: &mut BinaryCopyInWriter<'_>, row: &ImpressionRow<'_>) -> Result<(), ::postgres::Error> {
    // Offsets beyond i64 were refused before the transaction began (the last one is the largest).
    let values = row.values();
    writer.write(&values.each_ref().map(|v| v as &(dyn ToSql + Sync)))
}

fn write_event(writer: &mut BinaryCopyInWriter<'_>, row: &EventRow<'_>) -> Result<(), ::postgres::Error> {
    let values = row.values();
    writer.write(&values.each_ref().map(|v| v as &(dyn ToSql + Sync)))
}

impl ToSql for Value<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            // A `json` column's binary wire format is the text itself, so no parse and
            // re-serialise is needed (the driver's own JSON support goes through `serde_json::Value`).
            Value::Text(s) if *ty == Type::JSON => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            Value::Text(s) => s.to_sql(ty, out),
            Value::Int(n) => n.to_sql(ty, out),
            Value::Bool(b) => b.to_sql(ty, out),
            Value::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        [Type::TEXT, Type::INT8, Type::BOOL, Type::BYTEA, Type::JSON].contains(ty)
    }

    to_sql_checked!();
}

/// The text of a `json` column, read without parsing it (its binary wire format is the text).
#[derive(Debug)]
struct Json<'a>(&'a str);

impl<'a> ::postgres::types::FromSql<'a> for Json<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Json(std::str::from_utf8(raw)?))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON
    }
}

/// The first `N` columns of a row as values, without copying text: a view's columns as
/// [`view_list`] selects them.
fn values<const N: usize>(r: &Row) -> Result<[Value<'_>; N], StoreError> {
    let mut values = [Value::Null; N];
    for (i, value) in values.iter_mut().enumerate() {
        let ty = r.columns()[i].type_();
        *value = if *ty == Type::JSON {
            Value::text(r.try_get::<_, Option<Json<'_>>>(i)?.map(|j| j.0))
        } else if *ty == Type::INT8 {
            Value::int(r.try_get(i)?)
        } else if *ty == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?.map_or(Value::Null, Value::Bool)
        } else if *ty == Type::BYTEA {
            r.try_get::<_, Option<&[u8]>>(i)?.map_or(Value::Null, Value::Bytes)
        } else {
            Value::text(r.try_get(i)?)
        };
    }
    Ok(values)
}

/// The error for an offset commit that found its row taken over by another journal.
fn journal_changed(consumer: &str, journal: Option<String>) -> StoreError {
    StoreError::JournalChanged { consumer: consumer.to_owned(), journal: journal.unwrap_or_default() }
}
