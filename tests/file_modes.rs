//! Everything `sluice serve` writes under its data directory is private to its user: directories
//! `0700`, files `0600` (the journal, the SQLite store with its `-wal` and `-shm`, dead letters,
//! the lake writer's checkpoint, a local lake's objects and their directories); a data directory
//! left looser by an older sluice is tightened at start.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use common::{Binary, impression};
use serde_json::json;

/// Every directory and file under `dir` (itself included), with its permission bits.
fn modes(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue }; // gone meanwhile
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
        }
        found.push((path, meta.is_dir(), meta.permissions().mode() & 0o7777));
    }
    found
}

/// Asserts every directory under `dir` is `0700` and every file `0600`, and that each of
/// `expected` (paths relative to `dir`) is among them.
fn assert_private(dir: &Path, expected: &[&str]) {
    let found = modes(dir);
    for (path, is_dir, mode) in &found {
        let wanted = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, wanted, "{} has mode {mode:o}", path.display());
    }
    for name in expected {
        assert!(found.iter().any(|(path, _, _)| path.ends_with(name)), "no {name} under {}", dir.display());
    }
}

/// Something in every place: valid and refused impressions (journal, store, dead letters), a
/// Segment event; then waits until the store has them.
async fn ingest_everywhere(b: &Binary) {
    let client = reqwest::Client::new();
    let batch = json!([impression("k", "s", "P", "on", "r", 1_700_000_000_000i64), {"split": "no key"}]);
    let resp = client.post(b.url("/v1/split/impressions")).body(batch.to_string()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let event = json!({"type": "track", "event": "E", "userId": "u", "context": {"ip": "203.0.113.77"}});
    let resp = client.post(b.url("/v1/track")).body(event.to_string()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    common::wait_loaded(&client, &b.url("")).await;
}

#[tokio::test]
async fn every_directory_sluice_creates_is_0700_and_every_file_0600() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = Binary::start(&data, &[]).await;
    ingest_everywhere(&b).await;
    // While it runs: the SQLite write-ahead log and its index exist only while it is open.
    assert_private(
        &data,
        &["journal", "store.sqlite", "store.sqlite-wal", "store.sqlite-shm", "dead-letter/current.ndjson"],
    );
    assert_eq!(b.terminate(), Some(0));
    // Stopped: the lake's buffers were flushed into objects, and the writer's checkpoint saved.
    assert_private(
        &data,
        &["journal", "store.sqlite", "dead-letter/current.ndjson", "lake-writer.json", "lake/_sluice-writer.json"],
    );
    let objects =
        modes(&data.join("lake")).into_iter().filter(|(p, _, _)| p.to_string_lossy().ends_with(".json.gz")).count();
    assert!(objects >= 2, "an object per record kind in the lake");
}

#[tokio::test]
async fn a_data_directory_left_open_by_an_older_sluice_is_made_private_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("dead-letter")).unwrap();
    std::fs::write(data.join("dead-letter/current.ndjson"), "").unwrap();
    std::fs::write(data.join("README.txt"), "not sluice's").unwrap();
    let set = |path: &Path, mode: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    set(&data, 0o755);
    set(&data.join("dead-letter"), 0o777);
    set(&data.join("dead-letter/current.ndjson"), 0o644);
    set(&data.join("README.txt"), 0o644);
    let b = Binary::start(&data, &[]).await;
    ingest_everywhere(&b).await;
    assert_eq!(b.terminate(), Some(0));
    let mode = |name: &str| std::fs::metadata(data.join(name)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(""), mode("dead-letter"), mode("dead-letter/current.ndjson")), (0o700, 0o700, 0o600));
    assert_eq!(mode("README.txt"), 0o644, "a file that is not sluice's is left alone");
}
