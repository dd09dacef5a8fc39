//! Crash safety of the real binary: SIGKILL under concurrent load, restart, and every
//! acknowledged impression is in the store exactly once; a hand-corrupted journal tail is
//! repaired; a PostgreSQL outage under aggressive retention loses nothing.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pg_cluster::Cluster;
use common::{Binary, gzip, impression, wait_loaded};
use rand::Rng as _;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_impression_survives_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..4 {
        let b = Binary::start(dir.path(), &[]).await;
        let url = b.url("/v1/split/impressions");
        let posters: Vec<_> = (0..6)
            .map(|p| {
                let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
                tokio::spawn(async move {
                    for n in 0.. {
                        let keys: Vec<String> = (0..200).map(|i| format!("r{round}-p{p}-b{n}-i{i}")).collect();
                        let batch = Value::Array(keys.iter().map(|k| impression(k, "f", "P", "on", "r", n)).collect());
                        match client.post(&url).body(gzip(batch.to_string().as_bytes())).send().await {
                            Ok(resp) if resp.status().is_success() => acked.lock().unwrap().extend(keys),
                            // The connection died with the server: this batch was never acknowledged.
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        let delay = rand::rng().random_range(150..600);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        b.kill9();
        for p in posters {
            p.await.unwrap();
        }
    }

    let b = Binary::start(dir.path(), &[]).await;
    wait_loaded(&client, &format!("http://{}", b.addr)).await;
    let stored = common::stored_keys(&client, &b.url("")).await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 1000, "the load was too light to prove anything: {} acknowledged", acked.len());
    for key in &acked {
        assert_eq!(stored.get(key), Some(&1), "acknowledged impression {key} must be stored exactly once");
    }
    assert!(stored.values().all(|&n| n == 1), "no impression is stored twice");
    assert_eq!(b.terminate(), Some(0), "SIGTERM exits cleanly");
}

#[tokio::test]
async fn a_corrupt_journal_tail_is_cut_back_to_the_last_good_record() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let b = Binary::start(dir.path(), &[]).await;
    let batch = Value::Array((0..100).map(|i| impression(&format!("k{i}"), "f", "P", "on", "r", i)).collect());
    let resp = client.post(b.url("/v1/split/impressions")).body(batch.to_string()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(b.terminate(), Some(0));

    // A torn write: half an entry header and garbage after the last good record.
    let mut segments: Vec<_> = std::fs::read_dir(dir.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let newest = segments.last().unwrap();
    let good_len = std::fs::metadata(newest).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(newest)
        .unwrap()
        .write_all(&[0x55, 0x00, 0x00, 0x00, 0xde, 0xad, 0xbe])
        .unwrap();

    let b = Binary::start(dir.path(), &[]).await;
    assert_eq!(std::fs::metadata(newest).unwrap().len(), good_len, "the torn tail was truncated");
    let more = Value::Array((100..150).map(|i| impression(&format!("k{i}"), "f", "P", "on", "r", i)).collect());
    let resp = client.post(b.url("/v1/split/impressions")).body(more.to_string()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    wait_loaded(&client, &format!("http://{}", b.addr)).await;
    let stored = common::stored_keys(&client, &b.url("")).await;
    assert_eq!(stored.len(), 150);
    assert!(stored.values().all(|&n| n == 1));
    assert_eq!(b.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_segment_event_survives_sigkill_exactly_once_even_when_resent() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..3 {
        let b = Binary::start(dir.path(), &[]).await;
        let url = b.url("/v1/batch");
        let posters: Vec<_> = (0..4)
            .map(|p| {
                let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
                tokio::spawn(async move {
                    for n in 0.. {
                        let ids: Vec<String> = (0..100).map(|i| format!("r{round}-p{p}-b{n}-i{i}")).collect();
                        let events: Vec<Value> = ids
                            .iter()
                            .map(|id| serde_json::json!({"type": "track", "event": "E", "anonymousId": "a", "messageId": id}))
                            .collect();
                        let body = serde_json::json!({"batch": events}).to_string();
                        // Every other batch is sent twice, as a client retrying after a timeout would.
                        for _ in 0..1 + n % 2 {
                            match client.post(&url).body(body.clone()).send().await {
                                Ok(resp) if resp.status().is_success() => acked.lock().unwrap().extend(ids.clone()),
                                _ => return,
                            }
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(150..500))).await;
        b.kill9();
        for p in posters {
            p.await.unwrap();
        }
    }

    let b = Binary::start(dir.path(), &[]).await;
    wait_loaded(&client, &format!("http://{}", b.addr)).await;
    let body = client.get(b.url("/api/events")).send().await.unwrap().text().await.unwrap();
    let mut stored: HashMap<String, usize> = HashMap::new();
    for line in body.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        *stored.entry(event["messageId"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 1000, "the load was too light to prove anything: {} acknowledged", acked.len());
    for id in &acked {
        assert_eq!(stored.get(id), Some(&1), "acknowledged event {id} must be stored exactly once");
    }
    assert_eq!(b.terminate(), Some(0));
}

/// Posts batches of unique impressions named `{prefix}-p{p}-b{n}-i{i}` from `posters` clients
/// until `stop` is set or the server goes away; acknowledged keys go to `acked`.
fn post_until(
    client: &reqwest::Client,
    url: String,
    prefix: &str,
    posters: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..posters)
        .map(|p| {
            let (client, url, stop, acked, prefix) =
                (client.clone(), url.clone(), stop.clone(), acked.clone(), prefix.to_owned());
            tokio::spawn(async move {
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let keys: Vec<String> = (0..50).map(|i| format!("{prefix}-p{p}-b{n}-i{i}")).collect();
                    let batch = Value::Array(keys.iter().map(|k| impression(k, "f", "P", "on", "r", n)).collect());
                    match client.post(&url).body(gzip(batch.to_string().as_bytes())).send().await {
                        Ok(resp) if resp.status().is_success() => acked.lock().unwrap().extend(keys),
                        // The server died (never acknowledged), or pushed back: both fine here.
                        Ok(resp) if resp.status() == 503 => tokio::time::sleep(Duration::from_millis(50)).await,
                        _ => return,
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_impression_survives_a_store_outage_with_aggressive_retention_exactly_once() {
    let Some(cluster) =
        tokio::task::spawn_blocking(|| Cluster::start("the crash test's store-outage round")).await.unwrap()
    else {
        return;
    };
    let cluster = Arc::new(cluster);
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let url = cluster.url();
    // Retention deletes a segment as soon as every registered consumer is past it.
    let env = [
        ("SLUICE_STORE", url.as_str()),
        ("SLUICE_JOURNAL__REPLAY_WINDOW_SECS", "0"),
        ("SLUICE_JOURNAL__SEGMENT_BYTES", "4096"),
        ("SLUICE_LAKE__FLUSH_SECS", "1"),
    ];
    let pg = |start: bool| {
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || if start { c.pg_ctl_start() } else { c.pg_ctl_stop() })
    };
    let phase = |b: &Binary, prefix: &str, millis: u64| {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = post_until(&client, b.url("/v1/split/impressions"), prefix, 3, stop.clone(), acked.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for t in tasks {
                t.await.unwrap();
            }
        }
    };

    // Loading normally, then PostgreSQL goes away while impressions keep arriving; a crash.
    let b = Binary::start(dir.path(), &env).await;
    phase(&b, "up", 500).await;
    pg(false).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let posters = post_until(&client, b.url("/v1/split/impressions"), "down", 3, stop, acked.clone());
    tokio::time::sleep(Duration::from_millis(rand::rng().random_range(1500..2500))).await;
    b.kill9();
    for p in posters {
        p.await.unwrap();
    }
    // Restarted while PostgreSQL is still down; the lake archives and commits meanwhile.
    let b = Binary::start(dir.path(), &env).await;
    phase(&b, "restarted", 2500).await;
    pg(true).await.unwrap();
    phase(&b, "back", 1000).await;

    wait_loaded(&client, &format!("http://{}", b.addr)).await;
    let stored = common::stored_keys(&client, &b.url("")).await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 1000, "the load was too light to prove anything: {} acknowledged", acked.len());
    let missing: Vec<_> = acked.iter().filter(|k| !stored.contains_key(*k)).take(5).collect();
    assert!(missing.is_empty(), "acknowledged but never stored ({} in all): {missing:?}", acked.len());
    assert!(stored.values().all(|&n| n == 1), "no impression is stored twice");
    assert_eq!(b.terminate(), Some(0), "SIGTERM exits cleanly");
}
