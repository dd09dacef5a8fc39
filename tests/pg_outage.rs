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
    let Some(cluster) = started_cluster("the PostgreSQL outage test").await else { return };
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

/// Rows in the cluster's `impressions` table (0 before the store is created).
async fn stored_in(cluster: &Cluster) -> i64 {
    let url = cluster.url();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        // Before the loader first reaches the database there is no table yet: nothing stored.
        client.query_one("SELECT COUNT(*) FROM impressions", &[]).map_or(0, |row| row.get(0))
    })
    .await
    .unwrap()
}

/// Waits until the store holds `n` impressions; false after `limit`.
async fn wait_stored(cluster: &Cluster, n: i64, limit: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let stored = stored_in(cluster).await;
        if stored >= n || started.elapsed() > limit {
            return stored;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a throwaway cluster; `None` when there is none to be had (the skip was announced).
async fn started_cluster(test: &str) -> Option<Arc<Cluster>> {
    let test = test.to_owned();
    tokio::task::spawn_blocking(move || Cluster::start(&test)).await.unwrap().map(Arc::new)
}

/// Starts a throwaway cluster and stops it, so the server under test starts without its store.
async fn stopped_cluster(test: &str) -> Option<Arc<Cluster>> {
    let cluster = started_cluster(test).await?;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.pg_ctl_stop()).await.unwrap();
    Some(cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_what_the_store_has_not_loaded_while_postgres_is_down_from_the_start() {
    let Some(cluster) = stopped_cluster("the store-outage retention test").await else { return };
    let url = cluster.url();
    let s = InProcess::start_with(|c| {
        c.store.url = Some(url);
        c.journal.replay_window_secs = 0;
        c.journal.segment_bytes = 256;
        // The lake commits (and so lets retention run) every second.
        c.lake.flush_secs = 1;
    })
    .await;
    for i in 0..40 {
        let (status, body) =
            s.post_gzip(&Value::Array(vec![impression(&format!("k{i}"), "f", "P", "on", "r", i)])).await;
        assert_eq!(status, 200, "{body}");
    }
    // Let the lake writer commit and retention run while the store is still down.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, ready) = s.get("/readyz").await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["ready"], false, "the store is down: {ready}");

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.pg_ctl_start()).await.unwrap();
    assert_eq!(
        wait_stored(&cluster, 40, Duration::from_secs(30)).await,
        40,
        "every impression acknowledged during the outage is loaded once PostgreSQL is back"
    );
    s.wait_loaded().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_with_the_store_down_answers_503_and_deletes_nothing_unloaded() {
    let Some(cluster) = stopped_cluster("the full-journal outage test").await else { return };
    let url = cluster.url();
    let s = InProcess::start_with(|c| {
        c.store.url = Some(url);
        c.journal.replay_window_secs = 0;
        c.journal.segment_bytes = 256;
        // The lake commits (and so lets retention run) every second.
        c.lake.flush_secs = 1;
        c.journal.max_bytes = 8 * 1024;
    })
    .await;
    // For a few seconds, as a sender retrying would: the lake commits every second meanwhile,
    // so retention gets every chance to make room by deleting what the store has not loaded.
    let (mut acked, mut refused) = (0, None);
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let (status, body) =
            s.post_gzip(&Value::Array(vec![impression(&format!("k{i}"), "f", "P", "on", "r", i)])).await;
        i += 1;
        match status {
            200 => acked += 1,
            _ => {
                refused.get_or_insert((status, body));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let (status, body) = refused.expect("a journal over journal.max_bytes must push back");
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("journal.max_bytes"), "{body}");

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.pg_ctl_start()).await.unwrap();
    assert_eq!(
        wait_stored(&cluster, acked, Duration::from_secs(30)).await,
        acked,
        "nothing acknowledged was deleted before it was loaded"
    );
    s.wait_loaded().await;
    s.stop().await;
}

/// A journal restored from an older copy keeps its identity but ends before the store's offset.
/// When the store is down at start, new records take those offsets before the loader can compare:
/// the journal's end must be the one it had at start, or the loader would skip the new records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_journal_is_refused_even_when_new_records_arrive_before_the_store_answers() {
    let Some(cluster) = started_cluster("the restored-journal test").await else { return };
    let (dir, backup) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let client = reqwest::Client::new();
    let mut config = common::test_config(dir.path());
    config.store.url = Some(cluster.url());

    let server = sluice::cli::serve::Server::start(config.clone()).await.unwrap();
    let base = format!("http://{}", server.addr);
    common::post_keys(&client, &base, 0..5).await;
    common::wait_loaded(&client, &base).await;
    server.stop().await.unwrap();
    common::copy_journal(dir.path(), backup.path());
    let server = sluice::cli::serve::Server::start(config.clone()).await.unwrap();
    let base = format!("http://{}", server.addr);
    common::post_keys(&client, &base, 5..10).await;
    common::wait_loaded(&client, &base).await;
    server.stop().await.unwrap();

    // The older copy comes back (journal ends at 5, the store is at 10), with the store down.
    common::copy_journal(backup.path(), dir.path());
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.pg_ctl_stop()).await.unwrap();
    let server = sluice::cli::serve::Server::start(config).await.unwrap();
    let base = format!("http://{}", server.addr);
    common::post_keys(&client, &base, 10..20).await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.pg_ctl_start()).await.unwrap();

    let started = Instant::now();
    let ready = loop {
        let ready: Value = client.get(format!("{base}/readyz")).send().await.unwrap().json().await.unwrap();
        if !ready["store"]["stopped"].is_null() || started.elapsed() > Duration::from_secs(20) {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = ready["store"]["stopped"].as_str().unwrap_or_default();
    assert!(reason.contains("ends at offset 5"), "the loader refuses the restored journal: {ready}");
    assert!(wait_stored(&cluster, 11, Duration::from_millis(500)).await <= 10, "nothing was loaded past the gap");
    assert!(server.stop().await.is_err(), "shutdown reports the stopped loader");
}

/// Pooled query connections do not survive a database restart; the pool must notice before it
/// hands one out, rather than fail (or cut short) the next query on each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_after_a_database_restart_get_fresh_connections() {
    let Some(cluster) = started_cluster("the pooled-connection test").await else { return };
    let url = cluster.url();
    let s = InProcess::start_with(|c| {
        c.store.url = Some(url);
        c.store.pool_size = 2;
    })
    .await;
    common::post_keys(&s.client, &s.base, 0..3).await;
    s.wait_loaded().await;
    // Two pooled connections, both idle once answered.
    let (a, b) = tokio::join!(s.get("/api/impressions?format=ndjson"), s.get("/api/user/someone"));
    assert_eq!((a.0, b.0), (200, 200));

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || {
        c.pg_ctl_stop();
        c.pg_ctl_start();
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for path in ["/api/impressions?format=ndjson", "/api/user/someone", "/api/impressions?format=ndjson"] {
        let (status, body) = s.get(path).await;
        assert_eq!(status, 200, "{path} after the restart: {body}");
        if path.starts_with("/api/impressions") {
            assert_eq!(body.lines().count(), 3, "{path} answered in full: {body}");
        }
    }
    s.stop().await;
}

/// With the database down, queries answer 503 with `Retry-After` (the client should retry), not
/// 500, and say nothing of where the database is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_503_while_the_database_is_down() {
    let Some(cluster) = started_cluster("the queries-while-down test").await else { return };
    let url = cluster.url();
    let s = InProcess::start_with(|c| c.store.url = Some(url)).await;
    common::post_keys(&s.client, &s.base, 0..3).await;
    s.wait_loaded().await;
    assert_eq!(s.get("/api/user/someone").await.0, 200);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.pg_ctl_stop()).await.unwrap();
    // Past the pool's liveness check, so the idle connection is found dead and a new one tried.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for path in ["/api/user/someone", "/api/anonymous/someone", "/api/impressions", "/api/events"] {
        let resp = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 503, "{path}");
        assert!(resp.headers().contains_key("retry-after"), "{path}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("127.0.0.1"), "{path}: {body}");
    }
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.pg_ctl_start()).await.unwrap();
    s.stop().await;
}

/// Records the store never got stay in the journal for the next start, but a supervisor reading
/// the exit status must learn that sluice stopped with work undone: not the "stopped cleanly" 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_with_records_the_store_could_not_take_fails_instead_of_stopping_cleanly() {
    let Some(cluster) = started_cluster("the unfinished-shutdown test").await else { return };
    let url = cluster.url();
    let s = InProcess::start_with(|c| c.store.url = Some(url)).await;
    let (status, body) = s.post_gzip(&Value::Array(vec![impression("k0", "f", "P", "on", "r", 0)])).await;
    assert_eq!(status, 200, "{body}");
    s.wait_loaded().await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.pg_ctl_stop()).await.unwrap();
    let (status, body) = s.post_gzip(&Value::Array(vec![impression("k1", "f", "P", "on", "r", 1)])).await;
    assert_eq!(status, 200, "{body}");
    let error = s.server.stop().await.expect_err("one acknowledged record was never loaded");
    let error = format!("{error:#}");
    assert!(error.contains("store loader (offsets 1..2) could not finish") && error.contains("next start"), "{error}");
}
