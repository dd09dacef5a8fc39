//! A journal damaged in the middle of its segments, with the real binary: `sluice serve` refuses
//! and names `sluice journal repair`; the repair quarantines the damage and records the offsets
//! lost; served again, every other record reaches the store exactly once, and the loss is
//! reported (the lost-offsets file, the metric). On both store backends.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, Binary, TestSchema, impression, sluice, wait_loaded};
use serde_json::Value;

/// Segments of 4 KiB, so a few hundred impressions span several.
const SMALL_SEGMENTS: (&str, &str) = ("SLUICE_JOURNAL__SEGMENT_BYTES", "4096");

/// The segment files of the journal in `data_dir`, oldest first.
fn segment_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(data_dir.join("journal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

/// Flips a payload byte of the middle entry of the segment file `path` (layout: the journal's
/// module docs); returns the key of the impression it held.
fn damage_middle_entry(path: &Path) -> String {
    let mut bytes = std::fs::read(path).unwrap();
    let mut entries = Vec::new();
    let mut at = 16;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        entries.push(at);
        at += 17 + len;
    }
    assert!(entries.len() >= 3, "{} entries in {}", entries.len(), path.display());
    let middle = entries[entries.len() / 2];
    let len = u32::from_le_bytes(bytes[middle..middle + 4].try_into().unwrap()) as usize;
    let payload: Value = serde_json::from_slice(&bytes[middle + 17..middle + 17 + len]).unwrap();
    bytes[middle + 17 + 1] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
    payload["key"].as_str().unwrap().to_owned()
}

/// An empty store for one run of the server.
struct EmptyStore {
    /// The environment that points sluice at it (and makes segments small).
    env: Vec<(&'static str, String)>,
    /// The PostgreSQL schema holding it, dropped with it.
    _schema: Option<TestSchema>,
}

impl EmptyStore {
    /// An empty store on `backend`; `None` when PostgreSQL is unreachable (skip announced).
    fn on(backend: Backend) -> Option<EmptyStore> {
        let mut env = vec![(SMALL_SEGMENTS.0, SMALL_SEGMENTS.1.to_owned())];
        let schema = match backend {
            // The data directory's own store.sqlite; the test deletes it to start over.
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestSchema::create()?),
        };
        if let Some(schema) = &schema {
            env.push(("SLUICE_STORE__URL", schema.url.clone()));
        }
        Some(EmptyStore { env, _schema: schema })
    }

    fn env(&self) -> Vec<(&'static str, &str)> {
        self.env.iter().map(|(name, value)| (*name, value.as_str())).collect()
    }
}

/// Runs `sluice serve` on `data_dir` and expects it to exit with an error within 20 s; returns its stderr.
fn serve_must_refuse(data_dir: &Path, env: &[(&str, &str)]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("sluice serve started on a journal damaged in the middle of its newest segment");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_journal_damaged_mid_segment_is_refused_then_repaired_and_every_intact_record_is_stored_once_sqlite() {
    refused_then_repaired_then_every_intact_record_stored_once(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_journal_damaged_mid_segment_is_refused_then_repaired_and_every_intact_record_is_stored_once_postgres() {
    refused_then_repaired_then_every_intact_record_stored_once(Backend::Postgres).await;
}

async fn refused_then_repaired_then_every_intact_record_stored_once(backend: Backend) {
    let Some(first_store) = EmptyStore::on(backend) else { return };
    let Some(second_store) = EmptyStore::on(backend) else { return };
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let b = Binary::start(dir.path(), &first_store.env()).await;
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    for chunk in keys.chunks(10) {
        let batch = Value::Array(chunk.iter().map(|key| impression(key, "f", "P", "on", "r", 1)).collect());
        let resp = client.post(b.url("/v1/split/impressions")).body(batch.to_string()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(b.terminate(), Some(0));

    let segments = segment_files(dir.path());
    assert!(segments.len() >= 3, "{} segments", segments.len());
    let lost_keys = [damage_middle_entry(&segments[1]), damage_middle_entry(segments.last().unwrap())];
    // An empty store (a new PostgreSQL schema, or no store.sqlite), so that the loader reads
    // the whole journal again, past the damage.
    for name in ["store.sqlite", "store.sqlite-wal", "store.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    let env = second_store.env();

    let refused = serve_must_refuse(dir.path(), &env);
    assert!(refused.contains("sluice journal repair"), "{refused}");

    let data_dir = dir.path().to_str().unwrap();
    let (status, out, err) = sluice(&["journal", "repair", "--data-dir", data_dir], &[]);
    assert_eq!(status, 0, "{out}{err}");
    assert_eq!(out.matches("LOST offsets").count(), 2, "{out}");
    assert!(out.contains(&dir.path().join("journal").join("quarantine").display().to_string()), "{out}");
    let recorded = std::fs::read_to_string(dir.path().join("journal").join("lost-offsets.txt")).unwrap();
    assert_eq!(recorded.lines().filter(|line| !line.starts_with('#')).count(), 2, "{recorded}");

    let b = Binary::start(dir.path(), &env).await;
    wait_loaded(&client, &format!("http://{}", b.addr)).await;
    let stored = common::stored_keys(&client, &b.url("")).await;
    for key in &keys {
        let expected = if lost_keys.contains(key) { None } else { Some(&1) };
        assert_eq!(stored.get(key), expected, "impression {key}");
    }
    assert_eq!(stored.len(), keys.len() - 2);
    let metrics = client.get(b.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let skipped: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("sluice_journal_lost_records_total "))
        .unwrap_or_else(|| panic!("no sluice_journal_lost_records_total in {metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(skipped >= 2, "the loader skipped two lost offsets: {skipped}");
    let (status, _, err) = sluice(&["journal", "repair", "--data-dir", data_dir], &[]);
    assert!(status != 0 && err.contains("another sluice is already serving"), "repair beside a server: {err}");
    assert_eq!(b.terminate(), Some(0));

    let (status, out, _) = sluice(&["journal", "repair", "--data-dir", data_dir], &[]);
    assert_eq!((status, out.contains("no damage found")), (0, true), "{out}");
}
