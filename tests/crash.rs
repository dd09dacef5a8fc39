//! Crash safety of the real binary: SIGKILL under concurrent load, restart, and every
//! acknowledged impression is in the store exactly once; a hand-corrupted journal tail is repaired.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Binary, gzip, impression, wait_loaded};
use rand::Rng as _;
use serde_json::Value;

/// Every key in the store with how many times it is there.
async fn stored_keys(client: &reqwest::Client, b: &Binary) -> HashMap<String, usize> {
    let body = client.get(b.url("/api/impressions?format=ndjson")).send().await.unwrap().text().await.unwrap();
    let mut counts = HashMap::new();
    for line in body.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        *counts.entry(row["key"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    counts
}

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
    let stored = stored_keys(&client, &b).await;
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
    let mut segments: Vec<_> =
        std::fs::read_dir(dir.path().join("journal")).unwrap().map(|e| e.unwrap().path()).collect();
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
    let stored = stored_keys(&client, &b).await;
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
