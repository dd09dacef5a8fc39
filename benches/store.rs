/*!
What loading and exporting cost in the SQLite store, each next to its physical limit in the same run.

- `load/store_loader`: `Store::load` of 10,000-entry journal batches of unique impressions (parse,
  identity hash, `INSERT OR IGNORE`, offset commit, `synchronous=FULL`) into a store that grows
  as the benchmark runs. `load/raw_insert` is the floor: the same rows, already parsed and
  hashed, inserted with one prepared statement into an identical table with identical indexes
  and pragmas.
- `export/csv` and `export/ndjson`: `write_impressions` of 200,000 rows into `io::sink()`.
  `export/raw_select` is the floor: the same `SELECT … ORDER BY time` stepping every column.

Run with `cargo bench --bench store`. Throughput is in rows.
*/

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, params};
use sluice::journal::Entry;
use sluice::query::{ImpressionQuery, OutputFormat, write_impressions};
use sluice::record::{DedupMode, FieldLimits, Impression, RecordKind};
use sluice::store::{Store, StoreTarget};

const BATCH_ROWS: u64 = 10_000;
const EXPORT_ROWS: u64 = 200_000;
const SPLITS: [&str; 4] = ["checkout_v2", "new_onboarding", "pricing_page", "search_ranking"];
const TREATMENTS: [&str; 3] = ["on", "off", "control"];

/// A realistic Split impression, unique per `i`, arriving roughly in time order as Split sends them.
fn impression(i: u64) -> String {
    serde_json::json!({
        "key": format!("user-{:08}", i * 7919 % 10_000_000),
        "split": SPLITS[(i % 4) as usize],
        "environmentId": "194da2f0-3e22-11ea-b3c4-b2e0a5e4c5c5",
        "environmentName": "Production",
        "treatment": TREATMENTS[(i % 3) as usize],
        "time": 1_700_000_000_000_i64 + (i as i64) * 3,
        "bucketingKey": null,
        "label": "default rule",
        "machineName": "ip-10-0-3-17",
        "machineIp": "10.0.3.17",
        "splitVersionNumber": 1_699_000_000_000_i64,
        "sdk": "javascript",
        "sdkVersion": "10.22.1",
        "properties": "{}",
    })
    .to_string()
}

/// Journal entries `first..first + n`, one impression each.
fn entries(first: u64, n: u64) -> Vec<Entry> {
    (first..first + n)
        .map(|offset| Entry {
            offset,
            kind: RecordKind::SplitImpression,
            received_at_ms: 1_700_000_000_000 + offset as i64,
            payload: Bytes::from(impression(offset)),
        })
        .collect()
}

fn load(c: &mut Criterion, dir: &Path) {
    let mut group = c.benchmark_group("load");
    group.sample_size(10).measurement_time(Duration::from_secs(10)).throughput(Throughput::Elements(BATCH_ROWS));

    let mut store = Store::open(&StoreTarget::Sqlite(dir.join("load.db"))).expect("open the store");
    let mut next = 0;
    group.bench_function("store_loader", |b| {
        b.iter_custom(|iterations| {
            let batches: Vec<_> = (0..iterations).map(|i| entries(next + i * BATCH_ROWS, BATCH_ROWS)).collect();
            next += iterations * BATCH_ROWS;
            let started = Instant::now();
            for batch in &batches {
                let outcome = store.load("bench", batch, DedupMode::Exact).expect("load");
                assert_eq!(outcome.inserted, BATCH_ROWS, "every bench row is unique");
            }
            started.elapsed()
        });
    });

    let raw = raw_table(dir, &dir.join("load.db"));
    let mut next = 0;
    group.bench_function("raw_insert", |b| {
        b.iter_custom(|iterations| {
            let payloads: Vec<_> = (next..next + iterations * BATCH_ROWS).map(impression).collect();
            let rows: Vec<_> = payloads
                .iter()
                .map(|json| {
                    let imp = Impression::parse(json, &FieldLimits::NONE).expect("bench impression parses");
                    let identity = imp.identity(DedupMode::Exact);
                    (imp, identity)
                })
                .collect();
            let first = next;
            next += iterations * BATCH_ROWS;
            let started = Instant::now();
            for (n, chunk) in rows.chunks(BATCH_ROWS as usize).enumerate() {
                insert_raw(&raw, first + n as u64 * BATCH_ROWS, chunk);
            }
            started.elapsed()
        });
    });
    group.finish();
}

/// A connection to a database with the store's own impressions schema and pragmas, empty.
fn raw_table(dir: &Path, store_db: &Path) -> Connection {
    let schema: Vec<String> = {
        let store = Connection::open(store_db).expect("open the store file");
        let mut stmt = store
            .prepare(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'impressions' AND sql IS NOT NULL ORDER BY type DESC",
            )
            .expect("read the schema");
        stmt.query_map([], |r| r.get(0)).expect("read the schema").map(|s| s.expect("schema row")).collect()
    };
    let raw = Connection::open(dir.join("raw.db")).expect("open the raw database");
    let page_size: i64 = Connection::open(store_db)
        .and_then(|c| c.query_row("PRAGMA page_size", [], |r| r.get(0)))
        .expect("read page_size");
    raw.pragma_update(None, "page_size", page_size).expect("page_size");
    raw.pragma_update(None, "journal_mode", "WAL").expect("WAL");
    raw.pragma_update(None, "synchronous", "FULL").expect("synchronous");
    raw.pragma_update(None, "cache_size", -16 * 1024).expect("cache_size");
    for sql in schema {
        raw.execute_batch(&sql).expect("create the raw table");
    }
    raw
}

fn insert_raw(raw: &Connection, first_offset: u64, rows: &[(Impression<'_>, impl AsRef<[u8]>)]) {
    let tx = raw.unchecked_transaction().expect("begin");
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO impressions (key, split, environment, environment_id, treatment, label, time, \
                 bucketing_key, machine_name, machine_ip, split_version_number, sdk, sdk_version, properties, \
                 extra, received_at, journal_offset, identity) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            )
            .expect("prepare");
        for (n, (imp, identity)) in rows.iter().enumerate() {
            let offset = first_offset + n as u64;
            insert
                .execute(params![
                    imp.key.as_ref(),
                    imp.split.as_ref(),
                    imp.environment_name.as_deref(),
                    imp.environment_id.as_deref(),
                    imp.treatment.as_ref(),
                    imp.label.as_deref(),
                    imp.time,
                    imp.bucketing_key.as_deref(),
                    imp.machine_name.as_deref(),
                    imp.machine_ip.as_deref(),
                    imp.split_version_number,
                    imp.sdk.as_deref(),
                    imp.sdk_version.as_deref(),
                    imp.properties.as_deref(),
                    None::<&str>,
                    1_700_000_000_000 + offset as i64,
                    offset,
                    identity.as_ref(),
                ])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

fn export(c: &mut Criterion, dir: &Path) {
    let path = dir.join("export.db");
    let mut store = Store::open(&StoreTarget::Sqlite(path.clone())).expect("open the store");
    for first in (0..EXPORT_ROWS).step_by(BATCH_ROWS as usize) {
        store.load("bench", &entries(first, BATCH_ROWS), DedupMode::Exact).expect("load");
    }
    drop(store);
    let mut store = Store::open_read_only(&StoreTarget::Sqlite(path.clone())).expect("open the store read-only");
    let q = ImpressionQuery::default();

    let mut group = c.benchmark_group("export");
    group.sample_size(10).throughput(Throughput::Elements(EXPORT_ROWS));
    for (name, format) in [
        ("csv", OutputFormat::Csv { all_columns: false }),
        ("csv_all_columns", OutputFormat::Csv { all_columns: true }),
        ("ndjson", OutputFormat::Ndjson),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let rows =
                    write_impressions(&mut store, &q, &format, &mut std::io::sink(), &mut |_| {}).expect("export");
                assert_eq!(rows, EXPORT_ROWS);
            });
        });
    }

    let raw = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open read-only");
    raw.pragma_update(None, "cache_size", -2 * 1024).expect("cache_size");
    raw.pragma_update(None, "mmap_size", 1 << 30).expect("mmap_size");
    group.bench_function("raw_select", |b| {
        b.iter(|| {
            let mut stmt = raw
                .prepare_cached(
                    "SELECT key, split, environment, environment_id, treatment, label, time, bucketing_key, \
                     machine_name, machine_ip, split_version_number, sdk, sdk_version, properties, extra, received_at \
                     FROM impressions ORDER BY time, rowid",
                )
                .expect("prepare");
            let mut rows = stmt.query([]).expect("query");
            let mut bytes = 0usize;
            let mut n = 0;
            while let Some(r) = rows.next().expect("step") {
                for i in 0..16 {
                    bytes += match r.get_ref(i).expect("column") {
                        rusqlite::types::ValueRef::Text(t) => t.len(),
                        _ => 8,
                    };
                }
                n += 1;
            }
            assert_eq!(n, EXPORT_ROWS);
            std::hint::black_box(bytes)
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    load(c, dir.path());
    export(c, dir.path());
}

criterion_group!(store, benches);
criterion_main!(store);
