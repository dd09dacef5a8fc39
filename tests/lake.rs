//! The lake writer against a local directory: layout, formats, flush triggers, error prefix,
//! crash safety of the real binary, and Parquet read back by pyarrow.

mod common;

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Binary, InProcess, gzip, impression};
use rand::Rng as _;
use serde_json::Value;
use sluice::lake::LakeFormat;

/// 2019-11-01T18:15:14.350Z.
const T0: i64 = 1_572_632_114_350;
const HOUR: i64 = 3_600_000;

/// Every record object under `dir`, as (path relative to `dir`, contents). Upload staging files
/// (`<name>#<n>`, renamed into place when complete) are not objects yet, and the writer's mark
/// holds no records.
fn objects(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                if !name.contains('#') && name != sluice::lake::objects::WRITER_MARK {
                    out.push((name, std::fs::read(&path).unwrap()));
                }
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// Decompresses a `.json.gz` or `.json.zst` object and parses every line; checks each line is
/// one JSON object and the text ends with a newline.
fn ndjson_lines(name: &str, bytes: &[u8]) -> Vec<Value> {
    let mut text = String::new();
    if name.ends_with(".json.gz") {
        flate2::read::MultiGzDecoder::new(bytes).read_to_string(&mut text).unwrap();
    } else {
        assert!(name.ends_with(".json.zst"), "unexpected object {name}");
        text = String::from_utf8(zstd::decode_all(bytes).unwrap()).unwrap();
    }
    assert!(text.ends_with('\n'), "{name} ends with a newline");
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).inspect(|v| assert!(v.is_object())).collect()
}

/// The offsets in an object's file name.
fn offsets(name: &str) -> (u64, u64) {
    let file = name.rsplit('/').next().unwrap();
    let (first, last) = file.split_once('.').unwrap().0.split_once('-').unwrap();
    assert_eq!((first.len(), last.len()), (20, 20), "zero-padded offsets in {name}");
    (first.parse().unwrap(), last.parse().unwrap())
}

/// Every key in the NDJSON objects of the lake at `dir` with how often it appears; also checks
/// each object's lines lie within the offsets its name claims (by count) and its folder matches
/// each record's event hour.
fn lake_keys(dir: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (name, bytes) in objects(dir) {
        if name.starts_with("errors/") {
            continue;
        }
        let (first, last) = offsets(&name);
        let lines = ndjson_lines(&name, &bytes);
        assert!(lines.len() as u64 <= last - first + 1, "{name} holds more records than its offset range");
        for line in lines {
            let time = chrono::DateTime::from_timestamp_millis(line["time"].as_i64().unwrap()).unwrap();
            let folder = format!("split_impression/{}/", time.format("%Y/%m/%d/%H"));
            assert!(name.starts_with(&folder), "{name} holds a record of {folder}");
            *counts.entry(line["key"].as_str().unwrap().to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

fn batch(keys: &[String], time: impl Fn(usize) -> i64) -> Value {
    Value::Array(keys.iter().enumerate().map(|(i, k)| impression(k, "f", "Production", "on", "r", time(i))).collect())
}

#[tokio::test]
async fn ndjson_gzip_objects_hold_every_record_once_in_its_event_hour_after_a_graceful_stop() {
    let app = InProcess::start().await;
    let mut sent = Vec::new();
    for b in 0..5 {
        let keys: Vec<String> = (0..300).map(|i| format!("b{b}-k{i}")).collect();
        // Three event hours interleaved within each batch.
        let (status, _) = app.post_gzip(&batch(&keys, |i| T0 + (i % 3) as i64 * HOUR)).await;
        assert_eq!(status, 200);
        sent.extend(keys);
    }
    let lake = app.dir.path().join("lake");
    assert!(objects(&lake).is_empty(), "nothing is flushed before the age or size limit");
    let (dir, _) = app.stop().await;

    let names: Vec<String> = objects(&lake).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 3, "one object per event hour on shutdown: {names:?}");
    assert!(names[0].starts_with("split_impression/2019/11/01/18/00000000000000000000-"), "{names:?}");
    let counts = lake_keys(&lake);
    assert_eq!(counts.len(), sent.len());
    assert!(sent.iter().all(|k| counts.get(k) == Some(&1)));
    let checkpoint: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("lake-writer.json")).unwrap()).unwrap();
    assert_eq!(checkpoint["offset"], sent.len(), "the checkpoint is past every record");

    let data_dir = dir.path().to_str().unwrap();
    let (code, out, err) = common::sluice(&["lake", "ls", "--data-dir", data_dir], &[]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<&str> = out.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert_eq!(listed[..3], names[..], "`lake ls` lists every object, sorted: {out}");
    assert!(out.lines().last().unwrap().starts_with("3 objects, "), "{out}");
    let (_, out, _) = common::sluice(&["lake", "ls", "--data-dir", data_dir, "split_impression/2019/11/01/19"], &[]);
    assert!(out.lines().last().unwrap().starts_with("1 object, "), "a prefix narrows the listing: {out}");
}

#[tokio::test]
async fn segment_events_get_their_own_kind_partitioned_by_their_timestamp() {
    let app = InProcess::start().await;
    let batch = serde_json::json!({"batch": [
        {"type": "page", "anonymousId": "a", "messageId": "e1", "timestamp": "2025-11-29T10:15:00.000Z"},
        {"type": "track", "event": "E", "userId": "u", "messageId": "e2", "timestamp": "2025-11-29T11:45:00.000Z"},
    ]});
    assert_eq!(app.post("/v1/batch", batch.to_string().into_bytes(), &[]).await.0, 200);
    assert_eq!(app.post_gzip(&batch_of_one()).await.0, 200);
    let lake = app.dir.path().join("lake");
    let _kept = app.stop().await;
    let objects = objects(&lake);
    let names: Vec<&str> = objects.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names[0].starts_with("segment_event/2025/11/29/10/"), "{names:?}");
    assert!(names[1].starts_with("segment_event/2025/11/29/11/"), "{names:?}");
    assert!(names[2].starts_with("split_impression/"), "{names:?}");
    let line = &ndjson_lines(&objects[0].0, &objects[0].1)[0];
    assert_eq!(line["messageId"], "e1");
    assert_eq!(line["sluice"]["via"], "tracking-api", "the event as journaled, with sluice's arrival");
    assert!(line["sluice"]["arrivedAt"].is_i64());
}

fn batch_of_one() -> Value {
    batch(&["k".to_owned()], |_| T0)
}

#[tokio::test]
async fn lines_are_the_webhook_fields_plus_arrival_time_in_hive_layout_with_zstd() {
    let app = InProcess::start_with(|c| {
        c.lake.layout = "hive".into();
        c.lake.format = LakeFormat::NdjsonZstd;
    })
    .await;
    let mut sent = impression("alphonso", "sample_feature", "Production", "off", "default rule", T0);
    sent["newField"] = serde_json::json!({"a": [1, 2]});
    let before = chrono::Utc::now().timestamp_millis();
    assert_eq!(app.post_gzip(&Value::Array(vec![sent.clone()])).await.0, 200);
    let (dir, _) = app.stop().await;
    let all = objects(&dir.path().join("lake"));
    assert_eq!(all.len(), 1);
    let (name, bytes) = &all[0];
    assert_eq!(name, "split_impression/dt=2019-11-01/hour=18/00000000000000000000-00000000000000000000.json.zst");
    let line = &ndjson_lines(name, bytes)[0];
    let received = line["receivedAt"].as_i64().unwrap();
    assert!(received >= before, "receivedAt is sluice's arrival time");
    let mut want = sent;
    want["receivedAt"] = received.into();
    assert_eq!(line, &want);
}

#[tokio::test]
async fn full_buffers_flush_as_consecutive_objects_and_old_ones_flush_by_age() {
    let app = InProcess::start_with(|c| {
        c.lake.flush_bytes = 20_000;
        c.lake.flush_secs = 1;
    })
    .await;
    let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
    assert_eq!(app.post_gzip(&batch(&keys, |_| T0)).await.0, 200);
    // No shutdown: the last, partial buffer goes out by age.
    let started = Instant::now();
    let lake = app.dir.path().join("lake");
    while lake_keys(&lake).len() < keys.len() {
        assert!(started.elapsed() < Duration::from_secs(20), "the age flush did not come");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ranges: Vec<(u64, u64)> = objects(&lake).iter().map(|(n, _)| offsets(n)).collect();
    assert!(ranges.len() >= 5, "size flushes cut several objects: {ranges:?}");
    for pair in ranges.windows(2) {
        assert_eq!(pair[1].0, pair[0].1 + 1, "consecutive, non-overlapping offset ranges: {ranges:?}");
    }
    assert_eq!(ranges.last().unwrap().1, 999);
    let (_, ready) = app.get("/readyz").await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["lake"]["healthy"], true);
    let (_, metrics) = app.get("/metrics").await;
    assert!(metrics.contains("sluice_lake_objects_total"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn records_that_cannot_be_partitioned_go_to_the_error_prefix_with_the_reason() {
    let app = InProcess::start().await;
    let keys = vec!["fine".to_owned(), "far-future".to_owned()];
    assert_eq!(app.post_gzip(&batch(&keys, |i| if i == 0 { T0 } else { i64::MAX })).await.0, 200);
    let (dir, _) = app.stop().await;
    let all = objects(&dir.path().join("lake"));
    let errors: Vec<_> = all.iter().filter(|(n, _)| n.starts_with("errors/split_impression/")).collect();
    assert_eq!(errors.len(), 1, "{all:?}");
    let line = &ndjson_lines(&errors[0].0, &errors[0].1)[0];
    assert_eq!(line["offset"], 1);
    assert!(line["reason"].as_str().unwrap().contains("`time`"), "{line}");
    let payload: Value = serde_json::from_str(line["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["key"], "far-future");
    assert_eq!(lake_keys(&dir.path().join("lake")).keys().collect::<Vec<_>>(), ["fine"]);
}

#[tokio::test]
async fn a_new_data_dir_refuses_a_lake_written_from_another_journal() {
    let shared = tempfile::tempdir().unwrap();
    let url = shared.path().to_str().unwrap().to_owned();
    let first = InProcess::start_with(|c| c.lake.url = Some(url.clone())).await;
    assert_eq!(first.post_gzip(&batch(&["a".to_owned()], |_| T0)).await.0, 200);
    first.stop().await;
    let second = InProcess::start_with(|c| c.lake.url = Some(url.clone())).await;
    let started = Instant::now();
    loop {
        let ready: Value = serde_json::from_str(&second.get("/readyz").await.1).unwrap();
        if !ready["lake"]["stopped"].is_null() {
            assert!(ready["lake"]["lastError"].as_str().unwrap().contains("already holds objects"), "{ready}");
            assert!(ready["lake"]["stopped"].as_str().unwrap().contains("already holds objects"), "{ready}");
            assert_eq!(ready["ready"], false, "a stopped lake writer makes sluice unready: {ready}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the clash was not reported: {ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(second.post_gzip(&batch(&["b".to_owned()], |_| T0)).await.0, 200, "ingest goes on");
    assert!(second.server.stop().await.is_err(), "shutdown reports the stopped lake writer");
}

/// Every file under `dir` whose name carries a `#`: the local store's upload staging files.
fn staging_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().unwrap().to_string_lossy().contains('#') {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_files_left_by_a_kill_are_not_listed_and_are_removed_when_the_writer_starts() {
    let dir = tempfile::tempdir().unwrap();
    let b = Binary::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let body = batch(&["a".to_owned()], |_| T0);
    let resp =
        client.post(b.url("/v1/split/impressions")).body(gzip(body.to_string().as_bytes())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(b.terminate(), Some(0));
    let lake = dir.path().join("lake");
    let folder = lake.join("split_impression/2019/11/01/18");
    // What a SIGKILL during an upload leaves: the object's name plus `#<n>`, half written.
    let leftover = folder.join("00000000000000000001-00000000000000000009.json.gz#12");
    std::fs::write(&leftover, b"half an object").unwrap();
    let foreign = [folder.join("README#1"), lake.join("notes#2")];
    for path in &foreign {
        std::fs::write(path, b"not the writer's").unwrap();
    }

    let data_dir = dir.path().to_str().unwrap();
    let (code, out, err) = common::sluice(&["lake", "ls", "--data-dir", data_dir], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("#12"), "`lake ls` does not list upload staging files: {out}");

    let b = Binary::start(dir.path(), &[]).await;
    let started = Instant::now();
    while leftover.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "the writer did not remove {}", leftover.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(foreign.iter().all(|p| p.exists()), "files that are not staging files of lake objects stay");
    assert_eq!(b.terminate(), Some(0));
    assert_eq!(lake_keys(&lake).keys().collect::<Vec<_>>(), ["a"], "the object itself is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_flushes_loses_and_duplicates_nothing_across_objects() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    // Small buffers over many hours: flushes (and so kills inside them) all the time.
    let env = [("SLUICE_LAKE__FLUSH_BYTES", "30000"), ("SLUICE_LAKE__FLUSH_SECS", "1")];
    for round in 0..4 {
        let b = Binary::start(dir.path(), &env).await;
        let url = b.url("/v1/split/impressions");
        let posters: Vec<_> = (0..4)
            .map(|p| {
                let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
                tokio::spawn(async move {
                    for n in 0.. {
                        let keys: Vec<String> = (0..200).map(|i| format!("r{round}-p{p}-b{n}-i{i}")).collect();
                        let body = batch(&keys, |i| T0 + (i % 7) as i64 * HOUR);
                        match client.post(&url).body(gzip(body.to_string().as_bytes())).send().await {
                            Ok(resp) if resp.status().is_success() => acked.lock().unwrap().extend(keys),
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(300..900))).await;
        b.kill9();
        for p in posters {
            p.await.unwrap();
        }
    }
    let b = Binary::start(dir.path(), &env).await;
    common::wait_loaded(&client, &format!("http://{}", b.addr)).await;
    assert_eq!(b.terminate(), Some(0), "a graceful stop flushes everything");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 2000, "the load was too light to prove anything: {} acknowledged", acked.len());
    let counts = lake_keys(&dir.path().join("lake"));
    for key in &acked {
        assert_eq!(counts.get(key), Some(&1), "acknowledged impression {key} is in the lake exactly once");
    }
    assert!(counts.values().all(|&n| n == 1), "no record is in two objects");
    assert_eq!(staging_files(&dir.path().join("lake")), Vec::<PathBuf>::new(), "no upload leftovers after a restart");
}

#[tokio::test]
async fn parquet_objects_read_back_by_pyarrow_match_every_posted_row() {
    let Some(python) = common::test_python("the pyarrow read-back") else { return };
    let app = InProcess::start_with(|c| c.lake.format = LakeFormat::Parquet).await;
    let mut sent: Vec<Value> = (0..500)
        .map(|i| {
            let mut imp =
                impression(&format!("k{i}"), "checkout_v2", "Production", "on", "default rule", T0 + i * 60_000);
            if i % 2 == 0 {
                imp["bucketingKey"] = format!("b{i}").into();
                imp["properties"] = r#"{"plan":"pro"}"#.into();
            }
            if i % 5 == 0 {
                imp["splitVersionNumber"] = Value::Null;
                imp["sdk"] = Value::Null;
            }
            imp
        })
        .collect();
    assert_eq!(app.post_gzip(&Value::Array(sent.clone())).await.0, 200);
    let (dir, _) = app.stop().await;
    let lake = dir.path().join("lake");
    assert!(objects(&lake).iter().all(|(n, _)| n.ends_with(".parquet")));

    let script = r#"
import glob, json, sys
import pyarrow.parquet as pq
rows = []
for path in sorted(glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True)):
    table = pq.read_table(path)
    for row in table.to_pylist():
        row["timestamp"] = int(row["timestamp"].timestamp() * 1000)
        row["receptionTimestamp"] = int(row["receptionTimestamp"].timestamp() * 1000)
        rows.append(row)
print(json.dumps({"schema": str(pq.read_schema(path)), "rows": rows}))
"#;
    let out = std::process::Command::new(python).args(["-c", script]).arg(&lake).output().unwrap();
    assert!(out.status.success(), "pyarrow failed: {}", String::from_utf8_lossy(&out.stderr));
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema = read["schema"].as_str().unwrap();
    assert!(schema.contains("timestamp: timestamp[ms, tz=UTC] not null"), "{schema}");
    assert!(schema.contains("splitVersion: int64"), "{schema}");
    let mut rows: Vec<Value> = read["rows"].as_array().unwrap().clone();
    rows.sort_by_key(|r| r["key"].as_str().unwrap()[1..].parse::<u32>().unwrap());
    sent.sort_by_key(|r| r["key"].as_str().unwrap()[1..].parse::<u32>().unwrap());
    assert_eq!(rows.len(), sent.len());
    for (row, sent) in rows.iter().zip(&sent) {
        let renamed = [
            ("key", "key"),
            ("bucketingKey", "bucketingKey"),
            ("label", "label"),
            ("treatment", "treatment"),
            ("splitName", "split"),
            ("splitVersion", "splitVersionNumber"),
            ("properties", "properties"),
            ("environmentId", "environmentId"),
            ("environmentName", "environmentName"),
            ("sdk", "sdk"),
            ("sdkVersion", "sdkVersion"),
            ("machineName", "machineName"),
            ("machineIp", "machineIp"),
            ("timestamp", "time"),
        ];
        for (column, field) in renamed {
            assert_eq!(row[column], sent[field], "column {column} of {}", sent["key"]);
        }
        assert!(row["receptionTimestamp"].as_i64().unwrap() > T0);
        assert_eq!(row["extra"], Value::Null);
    }
}

#[tokio::test]
async fn the_readme_duckdb_queries_count_every_impression_of_both_formats() {
    let Some(python) = common::test_python("the DuckDB queries") else { return };
    // The README's own queries, local ones only (the S3 one needs an extension download).
    let readme = include_str!("../README.md");
    let block = readme.split("Read it with DuckDB:").nth(1).unwrap().split("```sql").nth(1).unwrap();
    let block = block.split("```").next().unwrap();
    let queries: Vec<String> = block
        .split(';')
        .map(|q| q.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join(" "))
        .filter(|q| q.contains("sluice-data/lake"))
        .collect();
    assert_eq!(queries.len(), 2, "the README's NDJSON and Parquet queries: {queries:?}");

    let sent: Vec<Value> = (0..300)
        .map(|i| {
            let treatment = if i % 3 == 0 { "on" } else { "off" };
            impression(&format!("k{i}"), &format!("f{}", i % 2), "Production", treatment, "r", T0 + (i % 2) * HOUR)
        })
        .collect();
    let mut expected: HashMap<(String, String), i64> = HashMap::new();
    for imp in &sent {
        let group = (imp["split"].as_str().unwrap().to_owned(), imp["treatment"].as_str().unwrap().to_owned());
        *expected.entry(group).or_default() += 1;
    }
    let mut lakes = Vec::new();
    for parquet in [false, true] {
        let app = InProcess::start_with(|c| {
            if parquet {
                c.lake.format = LakeFormat::Parquet;
                c.lake.layout = "hive".into();
            }
        })
        .await;
        assert_eq!(app.post_gzip(&Value::Array(sent.clone())).await.0, 200);
        lakes.push(app.stop().await.0);
    }

    let script = r#"
import json, sys
import duckdb
print(json.dumps([duckdb.sql(q).fetchall() for q in json.loads(sys.argv[1])], default=str))
"#;
    let queries: Vec<String> = queries
        .iter()
        .zip(&lakes)
        .map(|(q, dir)| q.replace("sluice-data/lake", &dir.path().join("lake").display().to_string()))
        .collect();
    let out = std::process::Command::new(python)
        .args(["-c", script, &serde_json::to_string(&queries).unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Vec<Vec<Value>>> = serde_json::from_slice(&out.stdout).unwrap();
    let groups = |rows: &[Vec<Value>]| -> HashMap<(String, String), i64> {
        let mut out = HashMap::new();
        for row in rows {
            let group = (row[0].as_str().unwrap().to_owned(), row[1].as_str().unwrap().to_owned());
            *out.entry(group).or_default() += row[row.len() - 1].as_i64().unwrap();
        }
        out
    };
    assert_eq!(groups(&results[0]), expected, "NDJSON: every impression counted once");
    assert_eq!(groups(&results[1]), expected, "Parquet: every impression counted once");
    let dates: Vec<&str> = results[1].iter().map(|r| r[2].as_str().unwrap()).collect();
    assert!(dates.iter().all(|d| *d == "2019-11-01"), "hive partitions become a `dt` column: {dates:?}");
}

/// Copies directory `from` into `to`, recursively (a backup of a stopped server's data directory).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A data directory restored from a backup keeps its journal's id and its lake checkpoint, both
/// older than the lake outside it: its next records would take offsets the lake already holds
/// (and be skipped as archived, or clash in object names), so the writer must refuse to start.
#[tokio::test]
async fn a_data_dir_restored_from_an_older_copy_is_refused_by_a_lake_outside_it() {
    let (shared, data, backup) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = shared.path().to_str().unwrap().to_owned();
    let start = |dir: PathBuf| {
        let url = url.clone();
        InProcess::start_with(move |c| {
            c.data_dir = dir;
            c.lake.url = Some(url);
        })
    };
    let s = start(data.path().to_owned()).await;
    assert_eq!(s.post_gzip(&batch(&["a".to_owned()], |_| T0)).await.0, 200);
    s.stop().await;
    copy_dir(data.path(), backup.path());
    // A normal restart of the newest copy is not refused, and archives more.
    let s = start(data.path().to_owned()).await;
    assert_eq!(s.post_gzip(&batch(&["b".to_owned(), "c".to_owned()], |_| T0)).await.0, 200);
    s.stop().await;
    let archived = objects(shared.path());
    assert_eq!(lake_keys(shared.path()).len(), 3, "{archived:?}");

    let old = start(backup.path().to_owned()).await;
    let started = Instant::now();
    loop {
        let ready: Value = serde_json::from_str(&old.get("/readyz").await.1).unwrap();
        if let Some(stopped) = ready["lake"]["stopped"].as_str() {
            assert!(stopped.contains("older copy") && stopped.contains("up to offset 2"), "{ready}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the older copy was not refused: {ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(old.post_gzip(&batch(&["d".to_owned()], |_| T0)).await.0, 200, "ingest goes on");
    assert!(old.server.stop().await.is_err(), "shutdown reports the stopped lake writer");
    assert_eq!(objects(shared.path()), archived, "the refused writer wrote nothing to the lake");
}

/// Waits until `/readyz` shows the lake writer stopped; its reason.
async fn lake_stopped(s: &InProcess) -> String {
    let started = Instant::now();
    loop {
        let ready: Value = serde_json::from_str(&s.get("/readyz").await.1).unwrap();
        if let Some(stopped) = ready["lake"]["stopped"].as_str() {
            return stopped.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the lake writer was not stopped: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two new data directories started on one empty lake both pass the start-up check; the second
/// to upload must see that the mark moved and stop, rather than overwrite the first one's
/// objects (same offsets, same names).
#[tokio::test]
async fn a_second_data_dir_writing_the_same_lake_stops_before_overwriting_the_first_ones_objects() {
    let shared = tempfile::tempdir().unwrap();
    let url = shared.path().to_str().unwrap().to_owned();
    let start = || {
        let url = url.clone();
        InProcess::start_with(move |c| {
            c.lake.url = Some(url);
            c.lake.flush_secs = 1;
        })
    };
    let (first, second) = (start().await, start().await);
    let keys: Vec<String> = (0..5).map(|i| format!("first{i}")).collect();
    assert_eq!(first.post_gzip(&batch(&keys, |_| T0)).await.0, 200);
    let started = Instant::now();
    while lake_keys(shared.path()).len() < 5 {
        assert!(started.elapsed() < Duration::from_secs(10), "the first server did not flush");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let archived = objects(shared.path());
    let other: Vec<String> = (0..5).map(|i| format!("second{i}")).collect();
    assert_eq!(second.post_gzip(&batch(&other, |_| T0)).await.0, 200, "ingest goes on");
    let stopped = lake_stopped(&second).await;
    assert!(stopped.contains("changed behind this writer's back"), "{stopped}");
    assert_eq!(objects(shared.path()), archived, "the first server's objects are untouched");
    assert!(second.server.stop().await.is_err(), "shutdown reports the stopped lake writer");
    first.stop().await;
}

/// A backup of the data directory, started while the original was down after a crash, writes
/// its own records under offsets the original had journaled but not yet archived. The original,
/// restarted, must not take that object for its own (and skip its records as archived): the
/// mark's fingerprint of the record before its offset tells the two journals apart.
#[tokio::test]
async fn a_crashed_original_refuses_the_lake_after_its_backup_wrote_its_own_records_there() {
    let (shared, data, backup) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = shared.path().to_str().unwrap().to_owned();
    let env = [("SLUICE_LAKE__URL", url.as_str()), ("SLUICE_LAKE__FLUSH_SECS", "600")];
    let client = reqwest::Client::new();
    let post = |b: &Binary, keys: &[&str]| {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        client.post(b.url("/v1/split/impressions")).body(gzip(batch(&keys, |_| T0).to_string().as_bytes())).send()
    };
    let original = Binary::start(data.path(), &env).await;
    assert_eq!(post(&original, &["a"]).await.unwrap().status(), 200);
    assert_eq!(original.terminate(), Some(0));
    copy_dir(data.path(), backup.path());

    let original = Binary::start(data.path(), &env).await;
    assert_eq!(post(&original, &["b", "c", "d"]).await.unwrap().status(), 200);
    original.kill9();
    let copy = Binary::start(backup.path(), &env).await;
    assert_eq!(post(&copy, &["x", "y"]).await.unwrap().status(), 200);
    assert_eq!(copy.terminate(), Some(0), "the backup flushes x and y under offsets 1 and 2");

    let mut original = Binary::start(data.path(), &env).await;
    let started = Instant::now();
    loop {
        let ready: Value = client.get(original.url("/readyz")).send().await.unwrap().json().await.unwrap();
        if let Some(stopped) = ready["lake"]["stopped"].as_str() {
            assert!(stopped.contains("a copy of this data directory wrote its own records there"), "{ready}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the fork was not noticed: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    original.signal(libc::SIGTERM);
    assert_ne!(original.exited_within(Duration::from_secs(30)).await, Some(0));
    let keys = lake_keys(shared.path());
    assert!(!keys.contains_key("b") && !keys.contains_key("c"), "nothing written over the backup's: {keys:?}");
}

/// Changing `lake.url` to a new lake and back: the first lake carries this journal's mark, so
/// it is taken back rather than refused as another journal's, and ends up with every record
/// once (those it had are recognised, those archived meanwhile to the other lake are added).
#[tokio::test]
async fn a_lake_switched_away_from_and_back_to_is_taken_back_and_completed_without_duplicates() {
    let (first, second, data) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |lake: &Path| {
        let (url, dir) = (lake.to_str().unwrap().to_owned(), data.path().to_owned());
        InProcess::start_with(move |c| {
            c.data_dir = dir;
            c.lake.url = Some(url);
        })
    };
    for (lake, keys) in [(first.path(), ["a", "b"]), (second.path(), ["c", "d"]), (first.path(), ["e", "f"])] {
        let s = start(lake).await;
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        assert_eq!(s.post_gzip(&batch(&keys, |_| T0)).await.0, 200);
        let ready: Value = serde_json::from_str(&s.get("/readyz").await.1).unwrap();
        assert_eq!(ready["lake"]["stopped"], Value::Null, "{ready}");
        s.stop().await;
    }
    let keys = lake_keys(first.path());
    let expected: HashMap<String, usize> = ["a", "b", "c", "d", "e", "f"].iter().map(|k| (k.to_string(), 1)).collect();
    assert_eq!(keys, expected, "every record once in the lake switched back to");
    assert_eq!(lake_keys(second.path()).len(), 4, "the second lake got everything the journal held then");
}

/// Another node of a cluster taking the lake over has no checkpoint of its own: it resumes where
/// the lake's mark says the last writer had committed, not at the oldest record the journal
/// retains (which, on a JetStream journal, may be days of records to re-read). Pinned by
/// deleting the first records' objects before the takeover: a writer that re-read from the
/// oldest record would archive them again.
#[tokio::test]
async fn a_writer_without_a_checkpoint_resumes_where_the_lakes_mark_says_it_was_committed() {
    let (lake, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = || {
        let (url, dir) = (lake.path().to_str().unwrap().to_owned(), data.path().to_owned());
        InProcess::start_with(move |c| {
            c.data_dir = dir;
            c.lake.url = Some(url);
        })
    };
    let keys = |k: &[&str]| k.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    // Two runs, in two event hours: the second raises the mark with the first's records committed.
    for (k, time) in [(keys(&["a", "b"]), T0), (keys(&["c", "d"]), T0 + HOUR)] {
        let s = start().await;
        assert_eq!(s.post_gzip(&batch(&k, |_| time)).await.0, 200);
        s.stop().await;
    }
    let mark: Value = serde_json::from_slice(&std::fs::read(lake.path().join("_sluice-writer.json")).unwrap()).unwrap();
    assert_eq!(mark["committed"], 2, "the second run's mark says the first run's records are in the lake: {mark}");
    let first_hour = lake
        .path()
        .join(chrono::DateTime::from_timestamp_millis(T0).unwrap().format("split_impression/%Y/%m/%d/%H").to_string());
    std::fs::remove_dir_all(&first_hour).unwrap();
    std::fs::remove_file(data.path().join("lake-writer.json")).unwrap();

    let s = start().await;
    assert_eq!(s.post_gzip(&batch(&keys(&["e"]), |_| T0 + HOUR)).await.0, 200);
    let ready: Value = serde_json::from_str(&s.get("/readyz").await.1).unwrap();
    assert_eq!(ready["lake"]["stopped"], Value::Null, "{ready}");
    s.stop().await;
    let expected: HashMap<String, usize> = ["c", "d", "e"].iter().map(|k| (k.to_string(), 1)).collect();
    assert_eq!(lake_keys(lake.path()), expected, "resumed at offset 2: a and b were not read again, c and d not twice");
}
