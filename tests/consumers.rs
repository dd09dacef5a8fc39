//! Consumers that cannot go on are refused or stopped visibly: an offset from another journal,
//! a consumer that stops on an error, and a shutdown that cannot finish.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use common::{Backend, Binary, TestSchema, on_both_backends, store_scalar, test_config};
use serde_json::Value;
use sluice::cli::serve::Server;

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

/// A store outside both data directories: a PostgreSQL schema, or an SQLite file in `dir`.
fn shared_store(backend: Backend, dir: &Path) -> Option<(String, Option<TestSchema>)> {
    match backend {
        Backend::Sqlite => Some((format!("sqlite://{}", dir.join("store.sqlite").display()), None)),
        Backend::Postgres => {
            let schema = TestSchema::create()?;
            Some((schema.url.clone(), Some(schema)))
        }
    }
}

async fn a_store_offset_from_another_journal_is_refused_until_the_journal_is_adopted(backend: Backend) {
    let (d1, d2, store_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some((url, schema)) = shared_store(backend, store_dir.path()) else { return };
    let client = reqwest::Client::new();
    let config = |dir: &Path| {
        let mut c = test_config(dir);
        c.store.url = Some(url.clone());
        c
    };

    let first = Server::start(config(d1.path())).await.unwrap();
    common::post_keys(&client, &format!("http://{}", first.addr), 0..5).await;
    common::wait_loaded(&client, &format!("http://{}", first.addr)).await;
    first.stop().await.unwrap();

    // A new data directory (lost, or started elsewhere) with the same store.
    let second = Server::start(config(d2.path())).await.unwrap();
    common::post_keys(&client, &format!("http://{}", second.addr), 5..8).await;
    let (status, body) = wait_store_stopped(&client, second.addr).await;
    assert_eq!(status, 503, "a store loader that refused to start makes sluice unready: {body}");
    let reason = body["store"]["stopped"].as_str().unwrap_or_default();
    assert!(
        reason.contains("belongs to journal") && reason.contains("sluice store adopt-journal"),
        "the reason says what happened and what to do: {body}"
    );
    assert!(second.stop().await.is_err(), "shutdown reports the stopped loader");

    let d2_arg = d2.path().display().to_string();
    let (code, out, err) = common::sluice(&["store", "adopt-journal", "--data-dir", &d2_arg, "--store", &url], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("from offset 0"), "{out}");

    let third = Server::start(config(d2.path())).await.unwrap();
    common::wait_loaded(&client, &format!("http://{}", third.addr)).await;
    let stored = store_scalar(store_dir.path(), schema.as_ref(), "SELECT COUNT(*) FROM impressions").await;
    assert_eq!(stored, 8, "the records of both journals are stored, each once");
    let (status, body) = readyz(&client, third.addr).await;
    assert_eq!(status, 200, "{body}");
    third.stop().await.unwrap();
}

async fn a_store_offset_past_the_end_of_its_journal_is_refused(backend: Backend) {
    let (d1, store_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Held to the end: dropping it drops the PostgreSQL schema.
    let Some((url, _schema)) = shared_store(backend, store_dir.path()) else { return };
    let client = reqwest::Client::new();
    let mut config = test_config(d1.path());
    config.store.url = Some(url.clone());
    let first = Server::start(config.clone()).await.unwrap();
    common::post_keys(&client, &format!("http://{}", first.addr), 0..5).await;
    common::wait_loaded(&client, &format!("http://{}", first.addr)).await;
    first.stop().await.unwrap();
    // The journal restored from an older copy: same identity, fewer records.
    let journal = d1.path().join("journal");
    for entry in std::fs::read_dir(&journal).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let second = Server::start(config).await.unwrap();
    let (status, body) = wait_store_stopped(&client, second.addr).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["store"]["stopped"].as_str().unwrap_or_default().contains("ends at offset 0"), "{body}");
    assert!(second.stop().await.is_err());
}

async fn a_running_loader_stops_when_another_journal_adopts_its_store(backend: Backend) {
    let (d1, d2, store_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some((url, schema)) = shared_store(backend, store_dir.path()) else { return };
    let client = reqwest::Client::new();
    let config = |dir: &Path| {
        let mut c = test_config(dir);
        c.store.url = Some(url.clone());
        c
    };
    let running = Server::start(config(d1.path())).await.unwrap();
    common::post_keys(&client, &format!("http://{}", running.addr), 0..5).await;
    common::wait_loaded(&client, &format!("http://{}", running.addr)).await;

    // Another data directory takes 7 records; its loader refuses the store, which is not its own.
    let other = Server::start(config(d2.path())).await.unwrap();
    common::post_keys(&client, &format!("http://{}", other.addr), 5..12).await;
    wait_store_stopped(&client, other.addr).await;
    assert!(other.stop().await.is_err());
    let d2_arg = d2.path().display().to_string();
    let (code, out, err) = common::sluice(&["store", "adopt-journal", "--data-dir", &d2_arg, "--store", &url], &[]);
    assert_eq!(code, 0, "{out}{err}");

    // The first server, still running, must not move the adopted journal's offset.
    common::post_keys(&client, &format!("http://{}", running.addr), 12..15).await;
    let (status, body) = wait_store_stopped(&client, running.addr).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["store"]["stopped"].as_str().unwrap_or_default().contains("adopt-journal"),
        "the reason says another journal took the store: {body}"
    );
    assert!(running.stop().await.is_err(), "shutdown reports the stopped loader");

    let adopted = Server::start(config(d2.path())).await.unwrap();
    common::wait_loaded(&client, &format!("http://{}", adopted.addr)).await;
    let sql = "SELECT COUNT(*) FROM impressions WHERE key IN ('k5','k6','k7','k8','k9','k10','k11')";
    assert_eq!(
        store_scalar(store_dir.path(), schema.as_ref(), sql).await,
        7,
        "every record of the adopted journal is stored"
    );
    adopted.stop().await.unwrap();
}

/// A journal restored from an older copy, whose new records then pass the store's offset: the
/// offset now names other records, and a plain restart must not make the loader resume there.
async fn a_restored_journal_stays_refused_after_its_new_records_pass_the_stores_offset(backend: Backend) {
    let (dir, backup, store_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some((url, schema)) = shared_store(backend, store_dir.path()) else { return };
    let client = reqwest::Client::new();
    let mut config = test_config(dir.path());
    config.store.url = Some(url.clone());
    let base = |s: &Server| format!("http://{}", s.addr);

    let server = Server::start(config.clone()).await.unwrap();
    common::post_keys(&client, &base(&server), 0..5).await;
    common::wait_loaded(&client, &base(&server)).await;
    server.stop().await.unwrap();
    common::copy_journal(dir.path(), backup.path());
    let server = Server::start(config.clone()).await.unwrap();
    common::post_keys(&client, &base(&server), 5..10).await;
    common::wait_loaded(&client, &base(&server)).await;
    server.stop().await.unwrap();

    // The older copy comes back: refused, but it keeps acknowledging into the journal, past the
    // store's offset (10).
    common::copy_journal(backup.path(), dir.path());
    let server = Server::start(config.clone()).await.unwrap();
    wait_store_stopped(&client, server.addr).await;
    common::post_keys(&client, &base(&server), 10..18).await;
    assert!(server.stop().await.is_err());

    let config_again = config.clone();
    let server = Server::start(config).await.unwrap();
    let (status, body) = wait_store_stopped(&client, server.addr).await;
    assert_eq!(status, 503, "the restart must still refuse: {body}");
    assert!(body["store"]["stopped"].as_str().unwrap_or_default().contains("sluice store adopt-journal"), "{body}");
    let stored = store_scalar(store_dir.path(), schema.as_ref(), "SELECT COUNT(*) FROM impressions").await;
    assert_eq!(stored, 10, "nothing was loaded from the reused offsets");
    assert!(server.stop().await.is_err());

    // The way forward it names loads every acknowledged record, each once.
    let dir_arg = dir.path().display().to_string();
    let (code, out, err) = common::sluice(&["store", "adopt-journal", "--data-dir", &dir_arg, "--store", &url], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let server = Server::start(config_again).await.unwrap();
    common::wait_loaded(&client, &base(&server)).await;
    let stored = store_scalar(store_dir.path(), schema.as_ref(), "SELECT COUNT(DISTINCT key) FROM impressions").await;
    assert_eq!(stored, 18, "k0..k17 are all stored");
    let total = store_scalar(store_dir.path(), schema.as_ref(), "SELECT COUNT(*) FROM impressions").await;
    assert_eq!(total, 18, "and each once");
    server.stop().await.unwrap();
}

on_both_backends!(
    a_store_offset_from_another_journal_is_refused_until_the_journal_is_adopted,
    a_store_offset_past_the_end_of_its_journal_is_refused,
    a_running_loader_stops_when_another_journal_adopts_its_store,
    a_restored_journal_stays_refused_after_its_new_records_pass_the_stores_offset,
);

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
    common::post_keys(&client, &format!("http://{}", b.addr), 0..6).await;
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

/// Opens a request whose body never arrives, which a graceful shutdown waits for.
fn stalled_request(b: &Binary) -> std::net::TcpStream {
    let mut socket = std::net::TcpStream::connect(b.addr).unwrap();
    socket
        .write_all(b"POST /v1/split/impressions HTTP/1.1\r\nHost: sluice\r\nContent-Length: 100000\r\n\r\n[")
        .unwrap();
    socket
}

#[tokio::test]
async fn a_second_signal_ends_a_stuck_shutdown_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Binary::start(dir.path(), &[]).await;
    let _socket = stalled_request(&b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.signal(libc::SIGTERM);
    assert_eq!(b.exited_within(Duration::from_millis(700)).await, None, "the first signal waits for the request");
    b.signal(libc::SIGINT);
    let code = b.exited_within(Duration::from_secs(3)).await;
    assert!(code.is_some_and(|c| c != 0), "the second signal exits at once, non-zero: {code:?}");
}

#[tokio::test]
async fn a_graceful_shutdown_gives_up_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Binary::start(dir.path(), &[("SLUICE_SHUTDOWN_DEADLINE_SECS", "1")]).await;
    let _socket = stalled_request(&b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.signal(libc::SIGTERM);
    let code = b.exited_within(Duration::from_secs(5)).await;
    assert!(code.is_some_and(|c| c != 0), "the deadline ends the shutdown, non-zero: {code:?}");
}

/// This machine's first non-loopback address, if it has one.
fn outside_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

#[tokio::test]
async fn readyz_shows_the_store_address_in_errors_only_to_local_requests() {
    let Some(outside) = outside_address() else {
        eprintln!("\n*** SKIPPED the /readyz redaction test: this machine has no non-loopback address ***\n");
        return;
    };
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.listen = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    // Other machines may reach /readyz only when told so (and reads must be opened to listen there).
    config.auth.open_operations = true;
    config.auth.allow_open_reads = true;
    config.store.url = Some(format!("postgres://secretuser@127.0.0.1:{dead_port}/secretdb"));
    let server = Server::start(config).await.unwrap();
    let port = server.addr.port();
    let client = reqwest::Client::new();
    let error_seen_from = |host: String| {
        let client = client.clone();
        async move {
            let started = std::time::Instant::now();
            loop {
                let body: Value =
                    client.get(format!("http://{host}:{port}/readyz")).send().await.unwrap().json().await.unwrap();
                if let Some(error) = body["store"]["lastError"].as_str() {
                    return error.to_owned();
                }
                assert!(started.elapsed() < Duration::from_secs(10), "no store error shown: {body}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let local = error_seen_from("127.0.0.1".to_owned()).await;
    assert!(local.contains("secretuser") && local.contains("secretdb"), "local requests see the address: {local}");
    let remote = error_seen_from(outside.to_string()).await;
    assert!(
        !remote.contains("secretuser") && !remote.contains("secretdb") && !remote.contains(&dead_port.to_string()),
        "others do not: {remote}"
    );
    server.stop().await.unwrap();
}

/// A store loader restarted with nothing new to load reads its last loaded entry again to check
/// it; it must then say it is caught up (lag 0), not one record behind until the next record
/// arrives (operators and scripts wait for lag 0).
#[tokio::test]
async fn a_restarted_store_loader_with_nothing_new_reports_no_lag() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let config = test_config(dir.path());
    let server = Server::start(config.clone()).await.unwrap();
    let base = format!("http://{}", server.addr);
    common::post_keys(&client, &base, 0..3).await;
    common::wait_loaded(&client, &base).await;
    server.stop().await.unwrap();

    let server = Server::start(config).await.unwrap();
    let base = format!("http://{}", server.addr);
    let started = std::time::Instant::now();
    let lag = loop {
        let ready: Value = client.get(format!("{base}/readyz")).send().await.unwrap().json().await.unwrap();
        let lag = ready["consumers"]["store"]["lag"].as_u64();
        if lag == Some(0) || started.elapsed() > Duration::from_secs(10) {
            break (lag, ready);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lag.0, Some(0), "the restarted loader is caught up: {}", lag.1);
    server.stop().await.unwrap();
}
