//! The store contract, run against every backend: one suite, parameterised by backend (the
//! `suite!` list at the bottom makes a `sqlite::…` and a `postgres::…` test of each function).
//! Each PostgreSQL test gets its own schema on the test server (see `pg_test_db`).

use super::pg_test_db::TestSchema;
use super::test_support::{entry, event_entry, impression, segment_event};
use super::*;
use crate::query::{EventQuery, OutputFormat, write_impressions};

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Keeps a test's database alive: a temporary directory or a PostgreSQL schema.
enum Guard {
    Dir(#[expect(dead_code, reason = "held only to delete the directory on drop")] tempfile::TempDir),
    Schema(#[expect(dead_code, reason = "held only to drop the schema on drop")] TestSchema),
}

/// A fresh, empty store location on one backend.
struct Fixture {
    target: StoreTarget,
    _guard: Guard,
}

impl Fixture {
    /// `None` when PostgreSQL is unreachable outside CI (the skip was announced).
    fn new(backend: Backend) -> Option<Fixture> {
        Some(match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                Fixture { target: StoreTarget::Sqlite(dir.path().join("sluice.db")), _guard: Guard::Dir(dir) }
            }
            Backend::Postgres => {
                let schema = TestSchema::create()?;
                let target = StoreTarget::parse(Some(&schema.url), PathBuf::new(), 10_000).unwrap();
                Fixture { target, _guard: Guard::Schema(schema) }
            }
        })
    }

    fn open(&self) -> Store {
        Store::open(&self.target).unwrap()
    }
}

/// One integer from raw SQL, straight from the backend.
fn scalar(store: &mut Store, sql: &str) -> i64 {
    match store {
        Store::Sqlite(s) => s.conn.query_row(sql, [], |r| r.get(0)).unwrap(),
        Store::Postgres(p) => p.client().unwrap().query_one(sql, &[]).unwrap().get(0),
    }
}

fn count(store: &mut Store) -> i64 {
    scalar(store, "SELECT COUNT(*) FROM impressions")
}

/// Keys of the rows `q` returns, in order.
fn keys(store: &mut Store, q: &ImpressionQuery) -> Vec<String> {
    let mut out = Vec::new();
    let n = store
        .query_impressions(q, &mut |v| {
            out.push(v.key.to_owned());
            Ok(())
        })
        .unwrap();
    assert_eq!(n as usize, out.len());
    out
}

/// Four impressions loaded out of time order, covering name-only, id-only and missing labels.
fn loaded(f: &Fixture) -> Store {
    let mut store = f.open();
    let mut dave = impression("dave", "sample_feature", "", "off", "", 400);
    dave = dave.replace(r#""environmentName":"""#, r#""environmentId":"env3""#).replace(r#","label":"""#, "");
    let entries = [
        entry(0, &impression("alphonso", "sample_feature", "Production", "off", "default rule", 300)),
        entry(1, &impression("bob", "sample_feature", "Production", "on", "whitelisted", 100)),
        entry(2, &impression("carol", "other", "Staging", "on", "default rule", 200)),
        entry(3, &dave),
    ];
    let outcome = store.load("store", &entries, DedupMode::Exact).unwrap();
    assert_eq!(outcome.inserted, 4);
    store
}

fn strings(v: &[&str]) -> crate::store::AnyOf {
    Some(v.iter().map(|s| s.to_string()).collect())
}

fn open_creates_the_schema_and_reopening_changes_nothing(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = f.open();
    store.load("store", &[entry(0, &impression("k", "s", "Production", "on", "r", 1))], DedupMode::Exact).unwrap();
    drop(store);
    let mut store = f.open();
    assert_eq!(count(&mut store), 1);
    assert_eq!(scalar(&mut store, "SELECT COUNT(*) FROM schema_migrations"), i64::from(migrations::latest()));
    // The seed's own check query, unchanged.
    let row = match &mut store {
        Store::Sqlite(s) => s
            .conn
            .query_row("select key, split, environment, treatment, label, time from impressions;", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .unwrap(),
        Store::Postgres(p) => {
            let r = p
                .client()
                .unwrap()
                .query_one("select key, split, environment, treatment, label, time from impressions;", &[])
                .unwrap();
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
        }
    };
    let row: (String, String, String, String, String, i64) = row;
    assert_eq!(row, ("k".into(), "s".into(), "Production".into(), "on".into(), "r".into(), 1));
}

fn concurrent_opens_migrate_once(b: Backend) {
    // Several rounds on fresh stores: a race in creating the file (switching it to WAL) shows
    // only now and then.
    let rounds = match b {
        Backend::Sqlite => 20,
        Backend::Postgres => 1,
    };
    for _ in 0..rounds {
        let Some(f) = Fixture::new(b) else { return };
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| drop(f.open()));
            }
        });
        assert_eq!(scalar(&mut f.open(), "SELECT COUNT(*) FROM schema_migrations"), i64::from(migrations::latest()));
    }
}

fn read_only_open_refuses_a_store_that_was_never_migrated(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    if let StoreTarget::Sqlite(path) = &f.target {
        rusqlite::Connection::open(path).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
    }
    let err = Store::open_read_only(&f.target).unwrap_err();
    assert!(matches!(err, StoreError::Outdated { found: 0, .. }), "{err}");
    assert!(err.to_string().contains("run `sluice migrate`"), "{err}");
}

fn read_only_store_reads_while_the_writer_loads(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut writer = f.open();
    writer.load("store", &[entry(0, &impression("a", "s", "P", "on", "r", 1))], DedupMode::Exact).unwrap();
    let mut reader = Store::open_read_only(&f.target).unwrap();
    assert_eq!(keys(&mut reader, &ImpressionQuery::default()), ["a"]);
    writer.load("store", &[entry(1, &impression("b", "s", "P", "on", "r", 2))], DedupMode::Exact).unwrap();
    assert_eq!(keys(&mut reader, &ImpressionQuery::default()), ["a", "b"]);
    assert_eq!(reader.consumer_offset("store").unwrap(), 2);
}

fn load_stores_every_field_and_commits_the_offset(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = f.open();
    assert_eq!(store.consumer_offset("store").unwrap(), 0);
    let json = r#"{"key":"alphonso","split":"sample_feature","environmentId":"env1","environmentName":"Production","treatment":"off","time":1572632114350,"bucketingKey":"b","label":"default rule","machineName":"m","machineIp":"10.0.0.1","splitVersionNumber":1572632100000,"sdk":"java","sdkVersion":"4.1.0","properties":"{}","newField":[1]}"#;
    let outcome = store.load("store", &[entry(41, json)], DedupMode::Exact).unwrap();
    assert_eq!(outcome, LoadOutcome { inserted: 1, duplicates: 0, unparseable: 0, next_offset: 42 });
    assert_eq!(store.consumer_offset("store").unwrap(), 42);
    assert_eq!(store.consumer_offset("someone-else").unwrap(), 0);
    let mut seen = Vec::new();
    store
        .query_impressions(&ImpressionQuery::default(), &mut |v| {
            seen.push(format!("{v:?}"));
            Ok(())
        })
        .unwrap();
    let expected = ImpressionView {
        key: "alphonso",
        split: "sample_feature",
        environment: Some("Production"),
        environment_id: Some("env1"),
        treatment: "off",
        label: Some("default rule"),
        time: 1572632114350,
        bucketing_key: Some("b"),
        machine_name: Some("m"),
        machine_ip: Some("10.0.0.1"),
        split_version_number: Some(1572632100000),
        sdk: Some("java"),
        sdk_version: Some("4.1.0"),
        properties: Some("{}"),
        extra: Some(r#"{"newField":[1]}"#),
        received_at: 1041,
    };
    assert_eq!(seen, [format!("{expected:?}")]);
    assert_eq!(scalar(&mut store, "SELECT journal_offset FROM impressions"), 41);
}

fn loading_the_same_entries_again_inserts_nothing_and_keeps_the_offset(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = f.open();
    let entries: Vec<_> = (0..5).map(|i| entry(i, &impression(&format!("k{i}"), "s", "P", "on", "r", 1))).collect();
    let first = store.load("store", &entries, DedupMode::Exact).unwrap();
    assert_eq!((first.inserted, first.duplicates, first.next_offset), (5, 0, 5));
    let again = store.load("store", &entries, DedupMode::Exact).unwrap();
    assert_eq!((again.inserted, again.duplicates, again.next_offset), (0, 5, 5));
    assert_eq!(store.consumer_offset("store").unwrap(), 5);
    assert_eq!(count(&mut store), 5);
}

fn an_empty_load_reports_the_committed_offset(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = f.open();
    store.load("store", &[entry(6, &impression("k", "s", "P", "on", "r", 1))], DedupMode::Exact).unwrap();
    assert_eq!(
        store.load("store", &[], DedupMode::Exact).unwrap(),
        LoadOutcome { next_offset: 7, ..Default::default() }
    );
}

fn an_offset_beyond_the_store_fails_the_load_and_stores_nothing(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = f.open();
    let entries = [
        entry(i64::MAX as u64 - 1, &impression("a", "s", "P", "on", "r", 1)),
        entry(i64::MAX as u64, &impression("k", "s", "P", "on", "r", 1)),
    ];
    store.load("store", &entries, DedupMode::Exact).unwrap_err();
    assert_eq!(count(&mut store), 0);
    assert_eq!(store.consumer_offset("store").unwrap(), 0);
}

fn a_consumer_position_keeps_its_journal_while_loads_move_the_offset(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = f.open();
    assert_eq!(store.consumer_position("store").unwrap(), None);
    store.load("store", &[entry(0, &impression("a", "s", "P", "on", "r", 1))], DedupMode::Exact).unwrap();
    let before_ids = ConsumerPosition { offset: 1, journal_id: None };
    assert_eq!(store.consumer_position("store").unwrap(), Some(before_ids), "an offset without a journal id");
    let adopted = ConsumerPosition { offset: 1, journal_id: Some("j1".into()) };
    store.set_consumer_position("store", &adopted).unwrap();
    store.bind_journal("j1");
    assert_eq!(store.consumer_fingerprint("store").unwrap(), None, "a position set anew has no fingerprint");
    let second = entry(1, &impression("b", "s", "P", "on", "r", 1));
    store.load("store", std::slice::from_ref(&second), DedupMode::Exact).unwrap();
    assert_eq!(store.consumer_fingerprint("store").unwrap(), Some(second.fingerprint()), "the last entry's");
    let moved = ConsumerPosition { offset: 2, journal_id: Some("j1".into()) };
    assert_eq!(store.consumer_position("store").unwrap(), Some(moved.clone()));
    assert_eq!(store.consumer_offset("store").unwrap(), 2);

    // Another loader, bound to the journal the store followed before, moves nothing any more.
    let mut stale = f.open();
    stale.bind_journal("j0");
    let refused = stale.load("store", &[entry(2, &impression("c", "s", "P", "on", "r", 1))], DedupMode::Exact);
    assert!(matches!(refused, Err(StoreError::JournalChanged { .. })), "{refused:?}");
    let skipped = entry(8, &impression("d", "s", "P", "on", "r", 1));
    assert!(matches!(stale.skip_past("store", &skipped), Err(StoreError::JournalChanged { .. })));
    assert_eq!(store.consumer_position("store").unwrap(), Some(moved), "the offset and journal are untouched");
    assert_eq!(count(&mut store), 2, "the refused batch rolled back");
}

#[test]
fn the_postgres_loader_session_commits_synchronously_whatever_the_connection_default() {
    let Some(schema) = TestSchema::create() else { return };
    // As a server, role or URL configured with synchronous_commit off would have it.
    let url = format!("{}%20-csynchronous_commit%3Doff", schema.url);
    let target = StoreTarget::parse(Some(&url), PathBuf::new(), 10_000).unwrap();
    let show = |store: Store| match store {
        Store::Postgres(mut pg) => {
            pg.client().unwrap().query_one("SHOW synchronous_commit", &[]).unwrap().get::<_, String>(0)
        }
        Store::Sqlite(_) => unreachable!("a postgres:// target"),
    };
    assert_eq!(show(Store::open(&target).unwrap()), "on", "the loader's session");
    assert_eq!(show(Store::open_read_only(&target).unwrap()), "off", "the URL's setting reaches other sessions");
}

fn exact_dedup_stores_identical_impressions_once(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = f.open();
    let same = impression("k", "s", "P", "on", "r", 1);
    let later = impression("k", "s", "P", "on", "r", 2);
    let outcome = store.load("store", &[entry(0, &same), entry(1, &same), entry(2, &later)], DedupMode::Exact).unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (2, 1));
    // Field order and unknown fields do not change an impression's identity.
    let reordered = r#"{"time":1,"label":"r","treatment":"on","environmentName":"P","split":"s","key":"k","x":1}"#;
    let outcome = store.load("store", &[entry(3, reordered)], DedupMode::Exact).unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (0, 1));
}

fn per_version_dedup_keeps_the_first_impression(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = f.open();
    let entries = [
        entry(0, &impression("k", "s", "P", "on", "r", 300)),
        entry(1, &impression("k", "s", "P", "on", "r", 100)),
        entry(2, &impression("k", "s", "P", "off", "r", 200)),
    ];
    let outcome = store.load("store", &entries[..2], DedupMode::PerVersion).unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (1, 1));
    let outcome = store.load("store", &entries[2..], DedupMode::PerVersion).unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (1, 0));
    let mut times = Vec::new();
    store
        .query_impressions(&ImpressionQuery::default(), &mut |v| {
            times.push((v.treatment.to_owned(), v.time));
            Ok(())
        })
        .unwrap();
    assert_eq!(times, [("off".to_owned(), 200), ("on".to_owned(), 300)]);
}

fn unparseable_entries_are_counted_and_the_rest_load(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = f.open();
    let mut bad_utf8 = entry(1, "");
    bad_utf8.payload = bytes::Bytes::from_static(b"{\"key\":\"\xff\"}");
    let entries = [
        entry(0, &impression("a", "s", "P", "on", "r", 1)),
        bad_utf8,
        entry(2, r#"{"key":"k","split":"s","time":1}"#),
        entry(3, &impression("b", "s", "P", "on", "r", 2)),
    ];
    let outcome = store.load("store", &entries, DedupMode::Exact).unwrap();
    assert_eq!(outcome, LoadOutcome { inserted: 2, duplicates: 0, unparseable: 2, next_offset: 4 });
}

fn rows_come_out_ordered_by_time_then_arrival(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    assert_eq!(keys(&mut loaded(&f), &ImpressionQuery::default()), ["bob", "carol", "alphonso", "dave"]);
    let Some(f) = Fixture::new(b) else { return };
    let mut store = f.open();
    let entries: Vec<_> = ["c", "a", "b"]
        .iter()
        .enumerate()
        .map(|(i, k)| entry(i as u64, &impression(k, "s", "P", "on", "r", 5)))
        .collect();
    store.load("store", &entries, DedupMode::Exact).unwrap();
    assert_eq!(keys(&mut store, &ImpressionQuery::default()), ["c", "a", "b"]);
}

fn each_filter_alone(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = loaded(&f);
    let mut q = |f: fn(&mut ImpressionQuery)| {
        let mut q = ImpressionQuery::default();
        f(&mut q);
        keys(&mut store, &q)
    };
    assert_eq!(q(|q| q.environments = strings(&["Production"])), ["bob", "alphonso"]);
    assert_eq!(q(|q| q.environments = strings(&["env3"])), ["dave"], "environment also matches the id");
    assert_eq!(q(|q| q.splits = strings(&["other"])), ["carol"]);
    assert_eq!(q(|q| q.keys = strings(&["alphonso", "dave"])), ["alphonso", "dave"]);
    assert_eq!(q(|q| q.treatments = strings(&["on"])), ["bob", "carol"]);
    assert_eq!(q(|q| q.labels = strings(&["default rule"])), ["carol", "alphonso"]);
    assert_eq!(q(|q| q.from = Some(300)), ["alphonso", "dave"]);
    assert_eq!(q(|q| q.to = Some(300)), ["bob", "carol"]);
    assert_eq!(q(|q| q.limit = Some(2)), ["bob", "carol"]);
    assert_eq!(q(|q| q.keys = strings(&["nobody"])), Vec::<String>::new());
}

fn from_is_inclusive_and_to_exclusive(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = loaded(&f);
    let q = ImpressionQuery { from: Some(200), to: Some(400), ..Default::default() };
    assert_eq!(keys(&mut store, &q), ["carol", "alphonso"]);
    let q = ImpressionQuery { from: Some(201), to: Some(401), ..Default::default() };
    assert_eq!(keys(&mut store, &q), ["alphonso", "dave"]);
}

fn filters_combine_with_and(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = loaded(&f);
    let q = ImpressionQuery {
        environments: strings(&["Production", "Staging"]),
        splits: strings(&["sample_feature", "other"]),
        treatments: strings(&["on"]),
        labels: strings(&["whitelisted", "default rule"]),
        from: Some(100),
        to: Some(1_000),
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(keys(&mut store, &q), ["bob"]);
    let q = ImpressionQuery { environments: strings(&["Staging"]), splits: strings(&["sample_feature"]), ..q };
    assert_eq!(keys(&mut store, &q), Vec::<String>::new());
}

fn a_row_callback_error_stops_the_query_and_the_store_stays_usable(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = loaded(&f);
    let mut calls = 0;
    let err = store
        .query_impressions(&ImpressionQuery::default(), &mut |_| {
            calls += 1;
            Err(QueryError::Write(std::io::Error::other("client went away")))
        })
        .unwrap_err();
    assert!(matches!(err, QueryError::Write(_)));
    assert_eq!(calls, 1);
    assert_eq!(keys(&mut store, &ImpressionQuery::default()).len(), 4);
}

fn the_csv_report_is_byte_exact(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = loaded(&f);
    let mut out = Vec::new();
    let q = ImpressionQuery::default();
    write_impressions(&mut store, &q, &OutputFormat::default(), &mut out, &mut |_| {}).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "User Key, Split, Environment, Treatment, Rule, Time\r\n\
         bob,sample_feature,Production,on,whitelisted,100\r\n\
         carol,other,Staging,on,default rule,200\r\n\
         alphonso,sample_feature,Production,off,default rule,300\r\n\
         dave,sample_feature,env3,off,,400\r\n"
    );
}

/// Message ids of the events `q` returns, in order.
fn message_ids(store: &mut Store, q: &EventQuery) -> Vec<String> {
    let mut out = Vec::new();
    store
        .query_events(q, &mut |e| {
            out.push(e.message_id.to_owned());
            Ok(())
        })
        .unwrap();
    out
}

fn events_loaded(f: &Fixture) -> Store {
    let mut store = f.open();
    let entries = [
        event_entry(0, &segment_event("m-page2", "page", Some("anon-1"), None, 2_000)),
        entry(1, &impression("k", "s", "P", "on", "r", 1)),
        event_entry(2, &segment_event("m-page1", "page", Some("anon-1"), None, 1_000)),
        event_entry(3, &segment_event("m-ident", "identify", Some("anon-1"), Some("user-1"), 3_000)),
        event_entry(4, &segment_event("m-alias", "alias", Some("anon-2"), Some("user-1"), 4_000)),
        event_entry(5, &segment_event("m-track", "track", Some("anon-3"), Some("user-2"), 5_000)),
    ];
    let outcome = store.load("store", &entries, DedupMode::Exact).unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates, outcome.next_offset), (6, 0, 6));
    store
}

fn erase_deletes_the_ids_events_and_impressions_and_nothing_else_and_again_nothing(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = events_loaded(&f);
    let more = [
        entry(6, &impression("anon-1", "s", "P", "on", "r", 2)),
        entry(7, &impression("kept", "s", "P", "on", "r", 3)),
    ];
    store.load("store", &more, DedupMode::Exact).unwrap();
    // user-1's events (m-ident, m-alias), anon-1's (m-page1, m-page2, m-ident again): four rows.
    let ids = strings_of(&["user-1", "anon-1"]);
    assert_eq!(store.erase(&ids).unwrap(), crate::store::ErasedRows { events: 4, impressions: 1 });
    assert_eq!(message_ids(&mut store, &EventQuery::default()), ["m-track"]);
    assert_eq!(keys(&mut store, &ImpressionQuery::default()), ["k", "kept"]);
    assert_eq!(store.erase(&ids).unwrap(), crate::store::ErasedRows::default());
    assert_eq!(store.erase(&[]).unwrap(), crate::store::ErasedRows::default());
}

#[test]
fn an_erasure_leaves_no_byte_of_the_ids_in_the_sqlite_files() {
    let Some(f) = Fixture::new(Backend::Sqlite) else { return };
    let StoreTarget::Sqlite(path) = f.target.clone() else { unreachable!("a SQLite fixture") };
    let mut store = f.open();
    // Enough rows, loaded in many batches, for the indexes' pages to split: a split leaves old
    // copies of cells in the pages' free space, which deleting the rows does not touch.
    let mut offset = 0;
    for batch in 0..40 {
        let entries: Vec<_> = (0..50)
            .map(|i| {
                let (anon, user) = if i % 2 == 0 { ("dev-erased", "ann-erased") } else { ("dev-kept", "bob-kept") };
                offset += 1;
                event_entry(
                    offset - 1,
                    &segment_event(&format!("m-{batch}-{i}"), "track", Some(anon), Some(user), offset as i64),
                )
            })
            .collect();
        store.load("store", &entries, DedupMode::Exact).unwrap();
    }
    let held = |needle: &str| {
        ["", "-wal"].iter().any(|suffix| {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            std::fs::read(&file).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
    };
    assert!(held("ann-erased"), "the fixture holds the id before");
    let erased = store.erase(&strings_of(&["ann-erased", "dev-erased"])).unwrap();
    assert_eq!(erased.events, 1000);
    // Deleted rows' bytes, and copies of them that page splits left behind, would stay in the
    // file (and in the write-ahead log) for anyone who can read it.
    assert!(!held("ann-erased") && !held("dev-erased"), "an erased id is still in {}", path.display());
    assert!(held("bob-kept"), "others stay");
    assert_eq!(scalar(&mut store, "SELECT COUNT(*) FROM events WHERE user_id = 'bob-kept'"), 1000);
}

fn strings_of(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn events_and_impressions_load_together_with_every_typed_column(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = events_loaded(&f);
    assert_eq!(count(&mut store), 1);
    assert_eq!(scalar(&mut store, "SELECT COUNT(*) FROM events"), 5);
    assert_eq!(scalar(&mut store, "SELECT timestamp FROM events WHERE message_id = 'm-ident'"), 3_000);
    assert_eq!(scalar(&mut store, "SELECT arrived_at FROM events WHERE message_id = 'm-ident'"), 1_003);
    assert_eq!(
        scalar(
            &mut store,
            "SELECT COUNT(*) FROM events WHERE type = 'alias' AND previous_id = 'anon-2' AND user_id = 'user-1'"
        ),
        1
    );
    assert_eq!(scalar(&mut store, "SELECT COUNT(*) FROM events WHERE type = 'track' AND event = 'Clicked'"), 1);
    let mut raw = Vec::new();
    store
        .query_events(&EventQuery { message_ids: strings(&["m-ident"]), ..EventQuery::default() }, &mut |e| {
            raw.push(e.raw.to_owned());
            Ok(())
        })
        .unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&segment_event("m-ident", "identify", Some("anon-1"), Some("user-1"), 3_000)).unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&raw[0]).unwrap(), expected, "the raw event comes back whole");
}

fn a_resent_event_is_stored_once_for_ever(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = events_loaded(&f);
    // The same messageId again, later, even with other content: the first one stays.
    let again = [
        event_entry(6, &segment_event("m-page1", "page", Some("anon-1"), None, 1_000)),
        event_entry(7, &segment_event("m-track", "track", Some("anon-9"), None, 9_000)),
        event_entry(8, &segment_event("m-new", "page", Some("anon-1"), None, 6_000)),
        event_entry(9, &segment_event("m-new", "page", Some("anon-1"), None, 6_000)),
    ];
    let outcome = store.load("store", &again, DedupMode::Exact).unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates, outcome.next_offset), (1, 3, 10));
    assert_eq!(scalar(&mut store, "SELECT COUNT(*) FROM events"), 6);
    assert_eq!(scalar(&mut store, "SELECT COUNT(*) FROM events WHERE anonymous_id = 'anon-9'"), 0);
}

fn event_queries_filter_by_ids_type_and_time_in_timestamp_order(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = events_loaded(&f);
    let q = |f: fn(&mut EventQuery)| {
        let mut q = EventQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        message_ids(&mut store, &EventQuery::default()),
        ["m-page1", "m-page2", "m-ident", "m-alias", "m-track"]
    );
    assert_eq!(
        message_ids(&mut store, &q(|q| q.anonymous_ids = strings(&["anon-1"]))),
        ["m-page1", "m-page2", "m-ident"]
    );
    assert_eq!(
        message_ids(&mut store, &q(|q| q.user_ids = strings(&["user-1", "user-2"]))),
        ["m-ident", "m-alias", "m-track"]
    );
    assert_eq!(message_ids(&mut store, &q(|q| q.types = strings(&["page"]))), ["m-page1", "m-page2"]);
    assert_eq!(message_ids(&mut store, &q(|q| q.events = strings(&["Clicked"]))), ["m-track"]);
    assert_eq!(
        message_ids(
            &mut store,
            &q(|q| {
                q.from = Some(2_000);
                q.to = Some(4_000)
            })
        ),
        ["m-page2", "m-ident"]
    );
    assert_eq!(message_ids(&mut store, &q(|q| q.limit = Some(2))), ["m-page1", "m-page2"]);
}

fn an_empty_set_matches_nothing_in_every_filter_while_no_filter_matches_everything(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = loaded(&f);
    assert_eq!(keys(&mut store, &ImpressionQuery::default()).len(), 4);
    let fields: [fn(&mut ImpressionQuery) -> &mut crate::store::AnyOf; 5] =
        [|q| &mut q.environments, |q| &mut q.splits, |q| &mut q.keys, |q| &mut q.treatments, |q| &mut q.labels];
    for field in fields {
        let mut q = ImpressionQuery::default();
        *field(&mut q) = Some(Vec::new());
        assert_eq!(keys(&mut store, &q), Vec::<String>::new(), "{q:?}");
    }
    let Some(f) = Fixture::new(b) else { return };
    let mut store = events_loaded(&f);
    assert_eq!(message_ids(&mut store, &EventQuery::default()).len(), 5);
    let fields: [fn(&mut EventQuery) -> &mut crate::store::AnyOf; 5] =
        [|q| &mut q.message_ids, |q| &mut q.types, |q| &mut q.events, |q| &mut q.user_ids, |q| &mut q.anonymous_ids];
    for field in fields {
        let mut q = EventQuery::default();
        *field(&mut q) = Some(Vec::new());
        assert_eq!(message_ids(&mut store, &q), Vec::<String>::new(), "{q:?}");
    }
}

fn the_identity_search_finds_what_the_full_graph_finds_and_stops_at_the_bound(b: Backend) {
    use crate::attribution::{Links, user_cluster};
    use crate::query::attribution::cluster;
    let Some(f) = Fixture::new(b) else { return };
    let mut store = f.open();
    // (messageId, type, anonymousId — the previousId of an alias —, userId)
    let mut events = vec![
        ("i1", "identify", "a1", "old@x"),
        ("l1", "alias", "old@x", "new@x"),
        ("i2", "identify", "a2", "new@x"),
        ("l2", "alias", "kiosk", "new@x"),
        ("l3", "alias", "kiosk", "stranger"),
        ("i3", "identify", "s1", "stranger"),
        ("i4", "identify", "a2", "other"),
        ("p1", "page", "a1", ""),
    ]
    .into_iter()
    .map(|(m, t, a, u)| (m.to_owned(), t, a.to_owned(), u.to_owned()))
    .collect::<Vec<_>>();
    // A long alias chain with a device at its start.
    events.push(("c-dev".into(), "identify", "chain-dev".into(), "chain0".into()));
    for i in 0..300 {
        events.push((format!("c{i}"), "alias", format!("chain{i}"), format!("chain{}", i + 1)));
    }
    let raw: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(i, (m, t, a, u))| segment_event(m, t, Some(a), (!u.is_empty()).then_some(u.as_str()), i as i64))
        .collect();
    let entries: Vec<_> = raw.iter().enumerate().map(|(i, e)| event_entry(i as u64, e)).collect();
    store.load("store", &entries, DedupMode::Exact).unwrap();
    let all: Vec<crate::attribution::Event> =
        raw.iter().map(|e| crate::attribution::Event::from_json(e).unwrap()).collect();
    let links = Links::from_events(&all);
    for start in ["new@x", "old@x", "stranger", "kiosk", "other", "a2", "nobody", "chain0", "chain150", "chain300"] {
        assert_eq!(cluster(&mut store, start, 10_000).unwrap(), (user_cluster(start, &links), false), "{start}");
    }
    let (cut, truncated) = cluster(&mut store, "chain150", 20).unwrap();
    assert!(truncated);
    assert_eq!(cut.user_ids.len() + cut.anonymous_ids.len(), 20);
    assert!(cut.user_ids.contains(&"chain150".to_owned()), "the id asked for is kept: {cut:?}");
}

/// Whether the store has an index called `name`.
fn has_index(store: &mut Store, name: &str) -> bool {
    let sql = match store {
        Store::Sqlite(_) => format!("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = '{name}'"),
        Store::Postgres(_) => {
            format!("SELECT COUNT(*) FROM pg_indexes WHERE indexname = '{name}' AND schemaname = current_schema()")
        }
    };
    scalar(store, &sql) == 1
}

fn filter_indexes_exist_only_when_asked_for_and_serve_their_filter(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = f.open();
    store.ensure_filter_indexes(FilterIndexes::default()).unwrap();
    assert!(!has_index(&mut store, "impressions_key") && !has_index(&mut store, "impressions_split"));
    store.ensure_filter_indexes(FilterIndexes { key: true, split: false }).unwrap();
    assert!(has_index(&mut store, "impressions_key") && !has_index(&mut store, "impressions_split"));
    let both = FilterIndexes { key: true, split: true };
    store.ensure_filter_indexes(both).unwrap();
    store.ensure_filter_indexes(both).unwrap();
    assert!(has_index(&mut store, "impressions_key") && has_index(&mut store, "impressions_split"));
    if let Store::Sqlite(s) = &store {
        for (filter, index) in [("key", "impressions_key"), ("split", "impressions_split")] {
            let plan: String = s
                .conn
                .query_row(&format!("EXPLAIN QUERY PLAN SELECT * FROM impressions WHERE {filter} = 'x'"), [], |r| {
                    r.get(3)
                })
                .unwrap();
            assert!(plan.contains(index), "{filter}: {plan}");
        }
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(super::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(super::Backend::Postgres) } )*
        }
    };
}

/// Each column of `table_name` as the migrations created it: name, type as `kind` would have it
/// on this backend, and whether it may be NULL; sorted by name (physical order is history).
fn migrated_columns(store: &mut Store, table_name: &str) -> Vec<(String, String, bool)> {
    let mut columns: Vec<(String, String, bool)> = match store {
        Store::Sqlite(s) => {
            let mut stmt = s.conn.prepare(&format!("PRAGMA table_info({table_name})")).unwrap();
            stmt.query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? == 0)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }
        Store::Postgres(p) => p
            .client()
            .unwrap()
            .query(
                "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[&table_name],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
    };
    columns.sort();
    columns
}

/// The same, from a column table.
fn table_columns(b: Backend, table: &[crate::record::schema::Column]) -> Vec<(String, String, bool)> {
    use crate::record::schema::Kind;
    let mut columns: Vec<_> = table
        .iter()
        .map(|c| {
            let ty = match (b, c.kind) {
                (Backend::Sqlite, Kind::Text | Kind::Json | Kind::Extra) => "TEXT",
                (Backend::Sqlite, Kind::Int | Kind::Millis | Kind::Bool) => "INTEGER",
                (Backend::Sqlite, Kind::Bytes) => "BLOB",
                (Backend::Postgres, Kind::Text | Kind::Extra) => "text",
                (Backend::Postgres, Kind::Json) => "json",
                (Backend::Postgres, Kind::Int | Kind::Millis) => "bigint",
                (Backend::Postgres, Kind::Bool) => "boolean",
                (Backend::Postgres, Kind::Bytes) => "bytea",
            };
            (c.store.to_owned(), ty.to_owned(), c.nullable)
        })
        .collect();
    columns.sort();
    columns
}

fn the_migrated_tables_hold_exactly_the_column_tables(b: Backend) {
    let Some(f) = Fixture::new(b) else { return };
    let mut store = f.open();
    for (name, table) in [
        ("impressions", &crate::record::impression::COLUMNS[..]),
        ("events", &crate::record::segment_columns::COLUMNS[..]),
    ] {
        assert_eq!(migrated_columns(&mut store, name), table_columns(b, table), "{name} on {b:?}");
    }
}

suite!(
    open_creates_the_schema_and_reopening_changes_nothing,
    concurrent_opens_migrate_once,
    read_only_open_refuses_a_store_that_was_never_migrated,
    read_only_store_reads_while_the_writer_loads,
    load_stores_every_field_and_commits_the_offset,
    loading_the_same_entries_again_inserts_nothing_and_keeps_the_offset,
    an_empty_load_reports_the_committed_offset,
    an_offset_beyond_the_store_fails_the_load_and_stores_nothing,
    exact_dedup_stores_identical_impressions_once,
    a_consumer_position_keeps_its_journal_while_loads_move_the_offset,
    per_version_dedup_keeps_the_first_impression,
    unparseable_entries_are_counted_and_the_rest_load,
    rows_come_out_ordered_by_time_then_arrival,
    each_filter_alone,
    from_is_inclusive_and_to_exclusive,
    filters_combine_with_and,
    a_row_callback_error_stops_the_query_and_the_store_stays_usable,
    the_csv_report_is_byte_exact,
    events_and_impressions_load_together_with_every_typed_column,
    a_resent_event_is_stored_once_for_ever,
    event_queries_filter_by_ids_type_and_time_in_timestamp_order,
    an_empty_set_matches_nothing_in_every_filter_while_no_filter_matches_everything,
    the_identity_search_finds_what_the_full_graph_finds_and_stops_at_the_bound,
    filter_indexes_exist_only_when_asked_for_and_serve_their_filter,
    the_migrated_tables_hold_exactly_the_column_tables,
    erase_deletes_the_ids_events_and_impressions_and_nothing_else_and_again_nothing,
);
