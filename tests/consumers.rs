//! A consumer that stops on an error is visible: /readyz, /metrics, the exit status.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use common::{Binary, impression};
use serde_json::Value;

/// Posts `keys` to the Split webhook of the server at `addr`, one request each, expecting 200.
async fn post_keys(client: &reqwest::Client, addr: std::net::SocketAddr, keys: std::ops::Range<i64>) {
    for i in keys {
        let batch = Value::Array(vec![impression(&format!("k{i}"), "f", "P", "on", "r", i)]);
        let resp =
            client.post(format!("http://{addr}/v1/split/impressions")).body(batch.to_string()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}

async fn readyz(client: &reqwest::Client, addr: std::net::SocketAddr) -> (u16, Value) {
    let resp = client.get(format!("http://{addr}/readyz")).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Waits until `/readyz` says the store loader stopped; returns the body.
async fn wait_store_stopped(client: &reqwest::Client, addr: std::net::SocketAddr) -> (u16, Value) {
    let started = std::time::Instant::now();
    loop {
        let (status, body) = readyz(client, addr).await;
        if !body["store"]["stopped"].is_null() || started.elapsed() > Duration::from_secs(10) {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Flips a payload byte of the oldest journal segment's first entry.
fn corrupt_oldest_segment(data_dir: &Path) {
    let mut segments: Vec<_> = std::fs::read_dir(data_dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() > 2, "the test needs several segments: {segments:?}");
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    bytes[16 + 17 + 3] ^= 0xff;
    std::fs::File::create(&segments[0]).unwrap().write_all(&bytes).unwrap();
}

#[tokio::test]
async fn a_consumer_that_stops_makes_sluice_unready_is_counted_and_makes_shutdown_fail() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let env = [("SLUICE_JOURNAL__SEGMENT_BYTES", "256")];
    let b = Binary::start(dir.path(), &env).await;
    post_keys(&client, b.addr, 0..6).await;
    common::wait_loaded(&client, &format!("http://{}", b.addr)).await;
    assert_eq!(b.terminate(), Some(0));
    // The store is lost and the journal damaged where the new store must start reading.
    std::fs::remove_file(dir.path().join("store.sqlite")).unwrap();
    corrupt_oldest_segment(dir.path());

    let mut b = Binary::start(dir.path(), &env).await;
    let (status, body) = wait_store_stopped(&client, b.addr).await;
    assert_eq!(status, 503, "a stopped consumer makes sluice unready: {body}");
    assert!(body["store"]["stopped"].as_str().unwrap_or_default().contains("corrupt"), "{body}");
    let metrics = client.get(b.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sluice_consumer_stops_total{consumer=\"store\"} 1"), "{metrics}");
    assert!(metrics.contains("sluice_consumer_stopped{consumer=\"store\"} 1"), "{metrics}");
    b.signal(libc::SIGTERM);
    let code = b.exited_within(Duration::from_secs(30)).await;
    assert!(code.is_some_and(|c| c != 0), "shutdown with a stopped consumer exits non-zero, got {code:?}");
}
