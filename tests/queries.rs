//! Queries and exports under a client that stops reading, a busy pool and a slow statement, on
//! both backends: a stalled export must not hold its connection (and, on SQLite, its read
//! transaction) for ever, queries that cannot get a connection answer 503, and attribution
//! statements are bounded.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, InProcess};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Loads `n` impressions (about 400 bytes each as NDJSON), in batches of 10,000.
async fn load_impressions(s: &InProcess, n: usize) {
    for start in (0..n).step_by(10_000) {
        let batch: Vec<Value> = (start..n.min(start + 10_000))
            .map(|i| common::impression(&format!("user-{i}"), "big_export", "Production", "on", "rule", i as i64))
            .collect();
        let (status, body) = s.post_gzip(&Value::Array(batch)).await;
        assert_eq!(status, 200, "{body}");
    }
    s.wait_loaded().await;
}

/// Starts an export of every impression on a raw connection that never reads; returns the
/// connection, to keep it open (and stalled) for as long as the caller holds it.
async fn stalled_export(s: &InProcess) -> TcpStream {
    let mut socket = TcpStream::connect(s.server.addr).await.unwrap();
    socket.write_all(b"GET /api/impressions?format=ndjson HTTP/1.1\r\nHost: sluice\r\n\r\n").await.unwrap();
    // Until the export holds the pool's only connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket
}

/// Closes the stalled client, then stops the server, before the test's PostgreSQL schema is
/// dropped: the test runtime has one thread, so a schema dropped (blocking) while the export's
/// session still holds its lock would wait for a server that cannot run.
async fn stop(s: InProcess, socket: TcpStream) {
    drop(socket);
    let _held_until_stopped = s.stop().await;
}

/// `GET path` with a bound, so that a hang fails the test instead of stalling it.
async fn get_within(s: &InProcess, path: &str, bound: Duration) -> reqwest::Response {
    let sent = s.client.get(s.url(path)).timeout(bound).send().await;
    sent.unwrap_or_else(|e| panic!("GET {path} did not answer within {bound:?}: {e}"))
}

async fn a_stalled_export_gives_its_connection_back_within_the_write_timeout(b: Backend) {
    let Some(s) = InProcess::start_on(b, |c| {
        c.store.pool_size = 1;
        c.store.pool_wait_ms = 60_000;
        c.store.export_write_timeout_ms = 1_000;
    })
    .await
    else {
        return;
    };
    // ~16 MB: far more than the socket buffers and the response channel hold.
    load_impressions(&s, 40_000).await;
    let mut socket = stalled_export(&s).await;

    let started = Instant::now();
    let answer = get_within(&s, "/api/user/someone", Duration::from_secs(20)).await;
    assert_eq!(answer.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(15), "answered after {:?}", started.elapsed());
    if b == Backend::Sqlite {
        // The export's read transaction is over: a checkpoint can empty the WAL again.
        let db = rusqlite::Connection::open(s.dir.path().join("store.sqlite")).unwrap();
        db.busy_timeout(Duration::from_secs(5)).unwrap();
        let (busy, _, _): (i64, i64, i64) =
            db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        assert_eq!(busy, 0, "a reader still pins the WAL");
    }

    // The stalled client gets a broken download, never a short one that looks complete.
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut received))
        .await
        .expect("the server closes the stalled export's connection")
        .ok();
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&received[..received.len().min(100)])
    );
    assert!(!received.ends_with(b"\r\n0\r\n\r\n"), "the aborted export must not end like a complete one");
    let lines = received.split(|b| *b == b'\n').filter(|l| l.starts_with(b"{\"key\"")).count();
    assert!(lines < 40_000, "the export was stopped, not finished ({lines} rows)");
    stop(s, socket).await;
}

async fn a_query_that_cannot_get_a_connection_answers_503_naming_the_pool_size(b: Backend) {
    let Some(s) = InProcess::start_on(b, |c| {
        c.store.pool_size = 1;
        c.store.pool_wait_ms = 300;
        c.store.export_write_timeout_ms = 60_000;
    })
    .await
    else {
        return;
    };
    load_impressions(&s, 40_000).await;
    let socket = stalled_export(&s).await;
    for path in ["/api/user/someone", "/api/anonymous/someone", "/api/events", "/api/impressions?key=user-1"] {
        let answer = get_within(&s, path, Duration::from_secs(10)).await;
        assert_eq!(answer.status(), 503, "{path}");
        assert_eq!(answer.headers()["retry-after"], "5", "{path}");
        let body: Value = answer.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("store.pool_size"), "{path}: {body}");
    }
    stop(s, socket).await;
}

async fn an_attribution_statement_over_the_query_timeout_is_cancelled_and_the_connection_stays_usable(b: Backend) {
    let Some(s) = InProcess::start_on(b, |c| {
        c.store.pool_size = 1;
        c.store.query_timeout_ms = 1;
    })
    .await
    else {
        return;
    };
    let events: Vec<Value> = (0..5_000)
        .map(|i| {
            json!({"type": "identify", "userId": "big", "anonymousId": format!("device-{i}"),
                   "messageId": format!("i{i}"), "timestamp": "2026-11-01T09:00:00.000Z"})
        })
        .collect();
    // Segment's limit is 500 KB per batch.
    for chunk in events.chunks(2_000) {
        let (status, body) = s.post("/v1/batch", json!({"batch": chunk}).to_string().into_bytes(), &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    s.wait_loaded().await;

    let answer = get_within(&s, "/api/user/big", Duration::from_secs(20)).await;
    assert_eq!(answer.status(), 503);
    let body: Value = answer.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("store.query_timeout_ms"), "{body}");
    // The same (only) connection then serves an export, which the timeout does not bound.
    let export = get_within(&s, "/api/events", Duration::from_secs(20)).await;
    assert_eq!(export.status(), 200);
    assert_eq!(export.text().await.unwrap().lines().count(), 5_000);
}

common::on_both_backends!(
    a_stalled_export_gives_its_connection_back_within_the_write_timeout,
    a_query_that_cannot_get_a_connection_answers_503_naming_the_pool_size,
    an_attribution_statement_over_the_query_timeout_is_cancelled_and_the_connection_stays_usable,
);

/// The export's own timeout ends its query, but a client that reads nothing keeps hyper waiting
/// to write what is already buffered: the connection itself must be dropped, or stalled clients
/// pile up until `http.max_connections` is reached and nobody else gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_disconnected_at_the_write_timeout() {
    let s = InProcess::start_with(|c| {
        c.http.max_connections = 2;
        c.http.header_read_timeout_ms = 500;
        c.http.write_timeout_ms = 1_000;
        c.store.pool_size = 2;
        c.store.export_write_timeout_ms = 1_000;
    })
    .await;
    load_impressions(&s, 40_000).await;
    // The test client's idle keep-alive connections are closed by the header timeout.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stalled = [stalled_export(&s).await, stalled_export(&s).await];
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fresh = reqwest::Client::new();
    let answer = fresh.get(s.url("/healthz")).timeout(Duration::from_secs(5)).send().await;
    assert!(answer.is_ok_and(|a| a.status() == 200), "both connections are still held by clients that read nothing");
    drop(stalled);
}

#[tokio::test]
async fn the_loader_creates_the_filter_indexes_the_configuration_asks_for() {
    let s = InProcess::start_with(|c| {
        c.store.filter_indexes = vec![sluice::config::FilterIndex::Key, sluice::config::FilterIndex::Split];
    })
    .await;
    load_impressions(&s, 10).await;
    let db = rusqlite::Connection::open(s.dir.path().join("store.sqlite")).unwrap();
    let indexes: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name IN ('impressions_key', 'impressions_split') ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(indexes, ["impressions_key", "impressions_split"]);
    let answer = get_within(&s, "/api/impressions?key=user-3&format=ndjson", Duration::from_secs(10)).await;
    assert_eq!(answer.text().await.unwrap().lines().count(), 1);
    s.stop().await;
}
