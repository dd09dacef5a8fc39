//! PostgreSQL going away under load: ingest keeps acknowledging into the journal, the loader
//! reports the outage and retries, and once the database is back every acknowledged impression
//! is in it exactly once.
//!
//! The test runs its own throwaway cluster (see `common::pg_cluster`), so stopping it disturbs
//! nothing else.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg_cluster::Cluster;
use common::{InProcess, gzip, impression};
use serde_json::Value;

/// Posts unique impressions from `writers` concurrent clients until `stop` is set; returns the
/// keys that were acknowledged with 200.
async fn load(s: &InProcess, writers: usize, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<String> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (client, url, stop, acked) =
            (s.client.clone(), s.url("/v1/split/impressions"), stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let keys: Vec<String> = (0..200).map(|i| format!("w{w}-b{n}-i{i}")).collect();
                let batch =
                    Value::Array(keys.iter().map(|k| impression(k, "outage", "P", "on", "r", n as i64)).collect());
                let resp = client.post(&url).body(gzip(batch.to_string().as_bytes())).send().await.unwrap();
                assert_eq!(resp.status().as_u16(), 200, "ingest must keep acknowledging while the store is down");
                acked.lock().unwrap().extend(keys);
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

async fn store_healthy(s: &InProcess) -> bool {
    let (_, body) = s.get("/readyz").await;
    serde_json::from_str::<Value>(&body).unwrap()["store"]["healthy"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_impression_is_stored_once_across_a_postgres_outage() {
    let Some(cluster) = tokio::task::spawn_blocking(|| Cluster::start("the PostgreSQL outage test")).await.unwrap()
    else {
        return;
    };
    let cluster = Arc::new(cluster);
    let url = cluster.url();
    let s = InProcess::start_with(|c| {
        c.store.url = Some(url);
        c.store.batch_rows = 500;
    })
    .await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outage = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.pg_ctl_stop()).await.unwrap();
        let down = Instant::now();
        let mut reported = false;
        while down.elapsed() < Duration::from_secs(5) {
            reported |= !store_healthy(&s).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.pg_ctl_start()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reported
    };
    let (acked, reported) = tokio::join!(load(&s, 4, stop.clone()), outage);
    assert!(reported, "/readyz should report the store unhealthy while PostgreSQL is down");
    assert!(acked.len() >= 4 * 200 * 5, "the load generator sent too little to mean anything: {}", acked.len());

    s.wait_loaded().await;
    assert!(store_healthy(&s).await, "the loader should report recovery");
    let (_, metrics) = s.get("/metrics").await;
    assert!(
        metrics.contains("sluice_consumer_errors_total{consumer=\"store\"}"),
        "the outage should be counted in /metrics"
    );
    let stored = {
        let url = cluster.url();
        tokio::task::spawn_blocking(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let rows = client.query("SELECT key FROM impressions", &[]).unwrap();
            rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>()
        })
        .await
        .unwrap()
    };
    let acked_set: HashSet<&String> = acked.iter().collect();
    assert_eq!(acked_set.len(), acked.len(), "the generator sends every key once");
    let stored_set: HashSet<&String> = stored.iter().collect();
    assert_eq!(stored_set.len(), stored.len(), "an impression was stored twice");
    let missing: Vec<_> = acked_set.difference(&stored_set).take(5).collect();
    assert!(missing.is_empty(), "acknowledged but not stored (first 5): {missing:?}");
    assert_eq!(stored.len(), acked.len(), "stored impressions nobody acknowledged");
    s.stop().await;
}
