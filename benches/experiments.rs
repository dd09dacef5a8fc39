//! What an experiment read-out costs, against the cheapest question one can ask of the same
//! impressions, in the same run on the same store:
//!
//! - read-out: `query::experiments::readout` of one split with 1,000,000 exposed units and
//!   1,000,000 `Order Completed` track events (plus 200,000 identifies linking the units keyed by
//!   an anonymousId to their userIds), metrics `conversion:` and `sum:…:revenue`, 72 h window;
//! - baseline: `SELECT treatment, count(*) FROM impressions WHERE environment = … AND split = …
//!   GROUP BY treatment` over the same impressions.
//!
//! `cargo bench --bench experiments` runs both on SQLite and, when it is reachable, PostgreSQL
//! (`TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`); `UNITS`, `EVENTS`
//! and `RUNS` change the size; `RUST_LOG=sluice::query::experiments=debug` shows each pass's
//! time. Under `cargo test` it runs once on a few rows as a smoke test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use postgres::NoTls;
use sluice::experiments::ExperimentSettings;
use sluice::journal::Entry;
use sluice::query::experiments::{ReadoutRequest, readout};
use sluice::record::{DedupMode, RecordKind};
use sluice::store::where_clause::WhereClause;
use sluice::store::{Store, StoreTarget};

const T0: i64 = 1_793_491_200_000;

/// The system allocator, counting the bytes in use and their peak: what a read-out holds in
/// memory, without the store's page cache or memory map that a process's RSS also counts.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes straight to `System`; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// An event row: messageId, type, event, userId, anonymousId, timestamp, raw.
type EventRow = (String, &'static str, Option<&'static str>, Option<String>, Option<String>, i64, String);

/// The impression rows (key, treatment, time) and event rows, as the loader would have written them.
struct Rows {
    impressions: Vec<(String, String, i64)>,
    events: Vec<EventRow>,
}

fn make_rows(units: usize, events: usize) -> Rows {
    let mut impressions = Vec::with_capacity(units);
    let mut rows = Vec::with_capacity(events + units / 5);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift: deterministic data without a dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..units {
        let key = if i % 5 == 0 { format!("anon-{i}") } else { format!("user-{i}") };
        let treatment = if next() % 2 == 0 { "on" } else { "off" };
        impressions.push((key, treatment.to_owned(), T0 + i as i64));
        if i % 5 == 0 {
            rows.push((
                format!("id-{i}"),
                "identify",
                None,
                Some(format!("user-{i}")),
                Some(format!("anon-{i}")),
                T0 + i as i64 - 1,
                format!(r#"{{"type":"identify","userId":"user-{i}","anonymousId":"anon-{i}"}}"#),
            ));
        }
    }
    for e in 0..events {
        let unit = (next() % units as u64) as i64;
        let at = T0 + unit + (next() % (100 * 3_600_000)) as i64;
        let revenue = (next() % 50_000) as f64 / 100.0;
        rows.push((
            format!("ev-{e}"),
            "track",
            Some("Order Completed"),
            Some(format!("user-{unit}")),
            None,
            at,
            format!(r#"{{"type":"track","event":"Order Completed","userId":"user-{unit}","properties":{{"revenue":{revenue}}}}}"#),
        ));
    }
    Rows { impressions, events: rows }
}

fn fill_sqlite(path: &std::path::Path, rows: &Rows) {
    let mut db = rusqlite::Connection::open(path).unwrap();
    let tx = db.transaction().unwrap();
    {
        let mut imp = tx
            .prepare(
                "INSERT INTO impressions (key, split, environment, environment_id, treatment, label, time, \
                 received_at, journal_offset, identity) VALUES (?1, 'checkout_v2', 'Production', 'id-prod', ?2, \
                 'default rule', ?3, ?3, ?4, ?5)",
            )
            .unwrap();
        for (i, (key, treatment, time)) in rows.impressions.iter().enumerate() {
            imp.execute(rusqlite::params![key, treatment, time, i as i64, (i as u64).to_le_bytes().to_vec()]).unwrap();
        }
        let mut ev = tx
            .prepare(
                "INSERT INTO events (message_id, type, event, user_id, anonymous_id, timestamp, arrived_at, \
                 timestamp_clamped, raw, journal_offset) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 0, ?7, ?8)",
            )
            .unwrap();
        for (i, (id, kind, event, user, anonymous, at, raw)) in rows.events.iter().enumerate() {
            ev.execute(rusqlite::params![id, kind, event, user, anonymous, at, raw, i as i64]).unwrap();
        }
    }
    tx.commit().unwrap();
    db.execute_batch("ANALYZE").unwrap();
}

fn fill_postgres(client: &mut postgres::Client, schema: &str, rows: &Rows) {
    use std::io::Write as _;
    let escape = |s: &str| s.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n");
    let mut w = client
        .copy_in(&format!(
            "COPY {schema}.impressions (key, split, environment, environment_id, treatment, label, time, \
             received_at, journal_offset, identity) FROM STDIN"
        ))
        .unwrap();
    for (i, (key, treatment, time)) in rows.impressions.iter().enumerate() {
        writeln!(
            w,
            "{key}\tcheckout_v2\tProduction\tid-prod\t{treatment}\tdefault rule\t{time}\t{time}\t{i}\t\\\\x{i:016x}"
        )
        .unwrap();
    }
    w.finish().unwrap();
    let mut w = client
        .copy_in(&format!(
            "COPY {schema}.events (message_id, type, event, user_id, anonymous_id, timestamp, arrived_at, \
             timestamp_clamped, raw, journal_offset) FROM STDIN"
        ))
        .unwrap();
    for (i, (id, kind, event, user, anonymous, at, raw)) in rows.events.iter().enumerate() {
        let opt = |v: Option<&str>| v.map_or_else(|| "\\N".to_owned(), escape);
        writeln!(
            w,
            "{id}\t{kind}\t{}\t{}\t{}\t{at}\t{at}\tfalse\t{}\t{i}",
            opt(*event),
            opt(user.as_deref()),
            opt(anonymous.as_deref()),
            escape(raw)
        )
        .unwrap();
    }
    w.finish().unwrap();
    client.batch_execute(&format!("ANALYZE {schema}.impressions; ANALYZE {schema}.events")).unwrap();
}

fn request() -> ReadoutRequest {
    let pairs: Vec<(String, String)> = [
        ("environment", "Production"),
        ("metric", "conversion:Order Completed"),
        ("metric", "sum:Order Completed:revenue"),
        ("window", "72h"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    ReadoutRequest::from_pairs(&pairs).unwrap()
}

/// Median of the runs of both sides, read-out first, the units the read-out counted, and the
/// most memory one read-out allocated beyond what was in use before it.
fn measure(store: &mut Store, runs: usize) -> (Duration, Duration, u64, usize) {
    let request = request();
    let settings = ExperimentSettings::default();
    let (mut readouts, mut baselines, mut units, mut memory) = (Vec::new(), Vec::new(), 0, 0);
    for _ in 0..runs {
        let before = IN_USE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let started = Instant::now();
        let answer = readout(store, "checkout_v2", &request, &settings, 1_000).unwrap();
        readouts.push(started.elapsed());
        memory = memory.max(PEAK.load(Ordering::Relaxed) - before);
        units = answer.analysis.top.units;
        let started = Instant::now();
        let mut counted = 0;
        store
            .rows::<2>(
                "SELECT treatment, count(*) FROM impressions WHERE environment = 'Production' AND split = 'checkout_v2' \
                 GROUP BY treatment",
                &WhereClause::default(),
                &mut |_| {
                    counted += 1;
                    Ok(())
                },
            )
            .unwrap();
        baselines.push(started.elapsed());
        assert_eq!(counted, 2);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    (median(readouts), median(baselines), units, memory)
}

fn report(backend: &str, (readout, baseline, units, memory): (Duration, Duration, u64, usize), events: usize) {
    println!(
        "{backend}: read-out of {units} units and {events} track events {:.3} s ({:.0} units/s, peak {:.0} MB \
         allocated, {:.0} bytes a unit); baseline count GROUP BY treatment {:.3} s; ratio {:.2}",
        readout.as_secs_f64(),
        units as f64 / readout.as_secs_f64(),
        memory as f64 / 1e6,
        memory as f64 / units as f64,
        baseline.as_secs_f64(),
        readout.as_secs_f64() / baseline.as_secs_f64()
    );
}

/// `n` Segment track events of 20 names with growing timestamps, as the journal holds them.
fn event_entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let at = chrono::DateTime::from_timestamp_millis(T0 + i as i64 * 10)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            let json = serde_json::json!({
                "type": "track", "event": format!("Event {}", i % 20), "messageId": format!("m-{i}"),
                "userId": format!("user-{}", (i * 7919) % 200_000), "anonymousId": format!("anon-{}", (i * 104_729) % 300_000),
                "timestamp": at, "properties": {"revenue": (i % 50_000) as f64 / 100.0},
            });
            Entry {
                offset: i as u64,
                kind: RecordKind::SegmentEvent,
                received_at_ms: T0 + i as i64 * 10,
                payload: Bytes::from(json.to_string()),
            }
        })
        .collect()
}

/// Migration 6's cost: the store loader's rate for `entries` into a new SQLite store without the
/// `events_track` index and into one with it, alternated `runs` times; medians of each.
fn index_upkeep(entries: &[Entry], runs: usize) -> (f64, f64) {
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for keep_index in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store.sqlite");
            drop(Store::open(&StoreTarget::Sqlite(path.clone())).unwrap());
            if !keep_index {
                rusqlite::Connection::open(&path).unwrap().execute_batch("DROP INDEX events_track").unwrap();
            }
            let mut store = Store::open(&StoreTarget::Sqlite(path)).unwrap();
            let started = Instant::now();
            for batch in entries.chunks(10_000) {
                store.load("store", batch, DedupMode::Exact).unwrap();
            }
            let rate = entries.len() as f64 / started.elapsed().as_secs_f64();
            if keep_index { with.push(rate) } else { without.push(rate) }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(without), median(with))
}

fn main() {
    // RUST_LOG=sluice::query::experiments=debug shows the time of each pass.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let benching = std::env::args().any(|a| a == "--bench");
    let env_num = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (units, events, runs) = if benching {
        (env_num("UNITS", 1_000_000), env_num("EVENTS", 1_000_000), env_num("RUNS", 5))
    } else {
        (2_000, 2_000, 1)
    };
    let entries = event_entries(if benching { env_num("LOAD_EVENTS", 500_000) } else { 2_000 });
    let (without, with) = index_upkeep(&entries, if benching { 3 } else { 1 });
    println!(
        "SQLite store loader, {} track events: without events_track {without:.0} rows/s, with it {with:.0} rows/s; \
         with/without {:.2}",
        entries.len(),
        with / without
    );
    drop(entries);
    let rows = make_rows(units, events);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite");
    drop(Store::open(&StoreTarget::Sqlite(path.clone())).unwrap());
    let started = Instant::now();
    fill_sqlite(&path, &rows);
    eprintln!("filled SQLite in {:.1} s", started.elapsed().as_secs_f64());
    let mut store = Store::open_read_only(&StoreTarget::Sqlite(path)).unwrap();
    report("SQLite", measure(&mut store, runs), events);

    let admin = std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut client = match postgres::Client::connect(&admin, NoTls) {
        Ok(c) => c,
        Err(e) => {
            assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "cannot reach {admin}: {e}");
            eprintln!("*** SKIPPED the PostgreSQL read-out: cannot reach {admin}: {e} ***");
            return;
        }
    };
    let schema = format!("sluice_bench_experiments_{}", std::process::id());
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).unwrap();
    let url = format!("{admin}?options=-csearch_path%3D{schema}");
    let target = StoreTarget::parse(Some(&url), Default::default(), 0).unwrap();
    drop(Store::open(&target).unwrap());
    let started = Instant::now();
    fill_postgres(&mut client, &schema, &rows);
    eprintln!("filled PostgreSQL in {:.1} s", started.elapsed().as_secs_f64());
    let mut store = Store::open_read_only(&target).unwrap();
    report("PostgreSQL", measure(&mut store, runs), events);
    drop(store);
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).unwrap();
}
