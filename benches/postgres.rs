//! The PostgreSQL store against PostgreSQL's own bulk paths, in the same run on the same rows:
//!
//! - load: the store loader's `Store::load` (parse the journal entries, binary `COPY` into
//!   staging, `INSERT … ON CONFLICT DO NOTHING`, offset, commit) vs `psql \copy` of the same rows
//!   as CSV into an identical table with identical indexes (the physical limit);
//! - export: `Store::query_impressions` written as the seed's CSV vs
//!   `psql \copy (SELECT …) TO '/dev/null'`.
//!
//! `cargo bench --bench postgres` (needs `psql` and the server at `TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`); `ROWS` and `RUNS` change the size. Under
//! `cargo test` it runs once on a few rows as a smoke test.

use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use postgres::NoTls;
use sluice::journal::Entry;
use sluice::query::{ImpressionQuery, OutputFormat, write_impressions};
use sluice::record::{DedupMode, FieldLimits, Impression, RecordKind};
use sluice::store::{Store, StoreTarget};

/// What both sides load, in the same order as the loader's columns.
const COLUMNS: &str = "key, split, environment, environment_id, treatment, label, time, bucketing_key, \
    machine_name, machine_ip, split_version_number, sdk, sdk_version, properties, extra, received_at, \
    journal_offset, identity";

const EXPORT_COLUMNS: &str = "key, split, environment, environment_id, treatment, label, time, bucketing_key, \
    machine_name, machine_ip, split_version_number, sdk, sdk_version, properties, extra, received_at";

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let env_num = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (rows, runs) = if benching { (env_num("ROWS", 200_000), env_num("RUNS", 5)) } else { (2_000, 1) };
    let admin = std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut client = match postgres::Client::connect(&admin, NoTls) {
        Ok(c) => c,
        Err(e) => {
            assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "cannot reach {admin}: {e}");
            eprintln!("*** SKIPPED the PostgreSQL benchmark: cannot reach {admin}: {e} ***");
            return;
        }
    };
    let entries = make_entries(rows);
    let csv_file = tempfile::NamedTempFile::new().unwrap();
    write_csv(&entries, csv_file.path());

    let mut schema = |name: &str| -> (String, String) {
        let name = format!("sluice_bench_{name}_{}", std::process::id());
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")).unwrap();
        (name.clone(), format!("{admin}?options=-csearch_path%3D{name}"))
    };
    let (loader_schema, loader_url) = schema("loader");
    let (copy_schema, copy_url) = schema("copy");
    let loader_target = StoreTarget::parse(Some(&loader_url), Default::default(), 0).unwrap();
    // The same migration makes both tables, so the indexes are identical.
    let mut store = Store::open(&loader_target).unwrap();
    drop(Store::open(&StoreTarget::parse(Some(&copy_url), Default::default(), 0).unwrap()).unwrap());

    let (mut load_s, mut copy_s, mut export_s, mut copy_out_s) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        for s in [&loader_schema, &copy_schema] {
            client.batch_execute(&format!("TRUNCATE {s}.impressions, {s}.consumer_offsets")).unwrap();
        }
        client.batch_execute("CHECKPOINT").unwrap();
        let started = Instant::now();
        for batch in entries.chunks(10_000) {
            let outcome = store.load("store", batch, DedupMode::Exact).unwrap();
            assert_eq!(outcome.inserted as usize, batch.len());
        }
        load_s.push(started.elapsed());

        client.batch_execute("CHECKPOINT").unwrap();
        let copy = format!("\\copy impressions ({COLUMNS}) FROM '{}' (FORMAT csv)", csv_file.path().display());
        copy_s.push(psql(&copy_url, &copy));

        let started = Instant::now();
        let exported = write_impressions(
            &mut store,
            &ImpressionQuery::default(),
            &OutputFormat::Csv { all_columns: true },
            &mut std::io::sink(),
            &mut |_| {},
        )
        .unwrap();
        export_s.push(started.elapsed());
        assert_eq!(exported as usize, rows);
        let copy_out = format!(
            "\\copy (SELECT {EXPORT_COLUMNS} FROM impressions ORDER BY time, journal_offset) TO '/dev/null' (FORMAT csv)"
        );
        copy_out_s.push(psql(&loader_url, &copy_out));
    }
    for s in [&loader_schema, &copy_schema] {
        client.batch_execute(&format!("DROP SCHEMA {s} CASCADE")).unwrap();
    }

    let rate = |times: &mut Vec<Duration>| {
        times.sort();
        rows as f64 / times[times.len() / 2].as_secs_f64()
    };
    let (load, copy, export, copy_out) =
        (rate(&mut load_s), rate(&mut copy_s), rate(&mut export_s), rate(&mut copy_out_s));
    println!("PostgreSQL store, {rows} impressions, median of {runs} runs:");
    println!(
        "  load    sluice loader {load:>10.0} rows/s   psql \\copy FROM {copy:>10.0} rows/s   ratio {:.0}%",
        100.0 * load / copy
    );
    println!(
        "  export  sluice CSV    {export:>10.0} rows/s   psql \\copy TO   {copy_out:>10.0} rows/s   ratio {:.0}%",
        100.0 * export / copy_out
    );
}

/// Unique impressions with every field, as journal entries.
fn make_entries(rows: usize) -> Vec<Entry> {
    (0..rows)
        .map(|i| {
            let json = serde_json::json!({
                "key": format!("user-{i}"), "split": format!("flag_{}", i % 50), "environmentId": "env-1",
                "environmentName": "Production", "treatment": if i % 2 == 0 { "on" } else { "off" },
                "time": 1_700_000_000_000i64 + (i as i64 * 37) % 86_400_000, "bucketingKey": format!("b-{i}"),
                "label": "default rule", "machineName": "ip-10-0-0-1", "machineIp": "10.0.0.1",
                "splitVersionNumber": 1_699_000_000_000i64, "sdk": "java", "sdkVersion": "4.1.0", "properties": "{}"
            });
            Entry {
                offset: i as u64,
                kind: RecordKind::SplitImpression,
                received_at_ms: 1_700_000_000_000 + i as i64,
                payload: Bytes::from(json.to_string()),
            }
        })
        .collect()
}

/// The rows the loader would store, as CSV for `COPY … (FORMAT csv)` (NULL is an empty field).
fn write_csv(entries: &[Entry], path: &std::path::Path) {
    let mut w = csv::Writer::from_writer(std::io::BufWriter::new(std::fs::File::create(path).unwrap()));
    for e in entries {
        let imp = Impression::parse(std::str::from_utf8(&e.payload).unwrap(), &FieldLimits::NONE).unwrap();
        let opt = |v: &Option<std::borrow::Cow<'_, str>>| v.as_deref().unwrap_or_default().to_owned();
        let identity: String = imp.identity(DedupMode::Exact).iter().map(|b| format!("{b:02x}")).collect();
        w.write_record([
            imp.key.to_string(),
            imp.split.to_string(),
            opt(&imp.environment_name),
            opt(&imp.environment_id),
            imp.treatment.to_string(),
            opt(&imp.label),
            imp.time.to_string(),
            opt(&imp.bucketing_key),
            opt(&imp.machine_name),
            opt(&imp.machine_ip),
            imp.split_version_number.map(|v| v.to_string()).unwrap_or_default(),
            opt(&imp.sdk),
            opt(&imp.sdk_version),
            opt(&imp.properties),
            imp.extra_json().unwrap_or_default(),
            e.received_at_ms.to_string(),
            e.offset.to_string(),
            format!("\\x{identity}"),
        ])
        .unwrap();
    }
    w.into_inner().unwrap().flush().unwrap();
}

/// Runs one psql meta-command against `url` and returns how long it took.
fn psql(url: &str, command: &str) -> Duration {
    let started = Instant::now();
    let out = Command::new("psql").args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command]).output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "psql {command} failed: {}", String::from_utf8_lossy(&out.stderr));
    took
}
