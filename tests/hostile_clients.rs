//! Hostile and slow clients against the ingest endpoints: they are refused early and cheaply, and
//! they cannot starve authenticated senders, the rest of the server, or its memory.
//! No store is involved (every request here is refused or journaled only), so one backend suffices.

mod common;

use std::time::{Duration, Instant};

use common::{Binary, InProcess, gzip, impression};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const SPLIT: &str = "/v1/split/impressions";
const WEBHOOK: &str = "/v1/segment/webhook";

/// `[0,0,0,…]` of at most `bytes`, gzipped hard: ~100 KB on the wire for 100 MiB.
fn zeros_bomb(bytes: usize) -> Vec<u8> {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write as _;
    let mut json = Vec::with_capacity(bytes);
    json.push(b'[');
    while json.len() + 4 <= bytes {
        json.extend_from_slice(b"0,");
    }
    json.extend_from_slice(b"0]");
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&json).unwrap();
    gz.finish().unwrap()
}

/// The peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Polls `/healthz` until `done`, returning the slowest answer.
async fn slowest_healthz(base: String, done: tokio::sync::watch::Receiver<bool>) -> Duration {
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    while !*done.borrow() {
        let started = Instant::now();
        let answer = client.get(format!("{base}/healthz")).timeout(Duration::from_secs(30)).send().await;
        assert!(answer.is_ok(), "/healthz failed: {answer:?}");
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    slowest
}

/// Opens a connection and sends a request's head (with `Content-Length: declared`) and `first`
/// bytes of its body, leaving the rest unsent.
async fn start_request(addr: &str, path: &str, headers: &[(&str, &str)], declared: usize, first: &[u8]) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {declared}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(first).await.unwrap();
    socket
}

/// Reads whatever the server sends until it closes or `within` passes; `None` on the timeout.
async fn read_answer(socket: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut chunk = [0u8; 4096];
        loop {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    read.ok().map(|()| String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_bombs_with_a_bad_signature_are_refused_before_inflating_while_healthz_stays_fast() {
    let dir = tempfile::tempdir().unwrap();
    let sluice = Binary::start(dir.path(), &[("SLUICE_SEGMENT__WEBHOOK_SECRET", "the-shared-secret")]).await;
    let bomb = zeros_bomb(100 * 1024 * 1024);
    assert!(bomb.len() < 200 * 1024, "the bomb is small on the wire: {} bytes", bomb.len());
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let healthz = tokio::spawn(slowest_healthz(sluice.url(""), done_rx));
    let client = reqwest::Client::new();
    let started = Instant::now();
    let sends = (0..2).map(|_| {
        client
            .post(sluice.url(WEBHOOK))
            .header("content-encoding", "gzip")
            .header("x-signature", "00".repeat(20))
            .timeout(Duration::from_secs(60))
            .body(bomb.clone())
            .send()
    });
    let answers = futures_util::future::join_all(sends).await;
    let refused_in = started.elapsed();
    done_tx.send(true).unwrap();
    let slowest = healthz.await.unwrap();
    for answer in answers {
        assert_eq!(answer.unwrap().status().as_u16(), 401);
    }
    assert!(refused_in < Duration::from_secs(5), "refusing two bad signatures took {refused_in:?}");
    assert!(slowest < Duration::from_secs(2), "/healthz took {slowest:?} meanwhile");
    let peak = peak_rss(sluice.child.id());
    assert!(peak < 512 * 1024 * 1024, "sluice peaked at {} MiB", peak >> 20);
}

/// The resident memory of a process now, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Bursts of gzip bombs (each inflating past `limits.max_decompressed_bytes`, so refused 413 or,
/// once the shared budget is spent, 503) must cost memory near `limits.max_in_flight_bytes`
/// (256 MiB by default), not a multiple of it, and must not leave it held after the burst: the
/// heap kept the large buffers (grown by copying) and held ~1 GB after such bursts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_gzip_bombs_stay_near_the_in_flight_budget_and_give_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let sluice = Binary::start(dir.path(), &[]).await;
    let bomb = zeros_bomb(120 * 1024 * 1024);
    let client = reqwest::Client::new();
    let send = || {
        client
            .post(sluice.url(SPLIT))
            .header("content-encoding", "gzip")
            .timeout(Duration::from_secs(60))
            .body(bomb.clone())
            .send()
    };
    // Alone, a bomb is inflated to the limit and refused for its size. In a burst, which ones
    // get that far and which find the budget spent (503) depends on timing.
    assert_eq!(send().await.unwrap().status().as_u16(), 413);
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..3 {
        for answer in futures_util::future::join_all((0..40).map(|_| send())).await {
            *answers.entry(answer.unwrap().status().as_u16()).or_insert(0) += 1;
        }
    }
    assert!(answers.keys().all(|status| [413, 503].contains(status)), "{answers:?}");
    let (peak, after) = (peak_rss(sluice.child.id()), rss(sluice.child.id()));
    assert!(peak < 640 * 1024 * 1024, "sluice peaked at {} MiB for a 256 MiB budget", peak >> 20);
    assert!(after < 320 * 1024 * 1024, "sluice still held {} MiB after the bursts", after >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_over_max_batch_records_is_refused_at_the_limit_without_holding_every_element() {
    let dir = tempfile::tempdir().unwrap();
    let sluice = Binary::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let answer = client
        .post(sluice.url(SPLIT))
        .timeout(Duration::from_secs(120))
        .body(zeros_bomb(100 * 1024 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 413);
    let text = answer.text().await.unwrap();
    assert!(text.contains("limits.max_batch_records"), "{text}");
    // The body inflates to 100 MiB; holding its 50 million elements took gigabytes.
    let peak = peak_rss(sluice.child.id());
    assert!(peak < 512 * 1024 * 1024, "sluice peaked at {} MiB", peak >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_flight_share_one_byte_budget_and_the_overflow_gets_503() {
    let s = InProcess::start_with(|c| {
        c.limits.max_body_bytes = 8 << 20;
        c.limits.max_decompressed_bytes = 8 << 20;
        c.limits.max_in_flight_bytes = 16 << 20;
    })
    .await;
    let addr = s.server.addr.to_string();
    // Two senders, each 7 MiB into an 8 MiB body, hold 14 of the 16 MiB.
    let mut holders = Vec::new();
    for _ in 0..2 {
        holders.push(start_request(&addr, SPLIT, &[], 8 << 20, &vec![b' '; 7 << 20]).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Small on the wire (so it is read whole, and the refusal is not lost to a reset), 3 MiB inflated.
    let body = gzip(format!("[{}]", " ".repeat(3 << 20)).as_bytes());
    let answer = s.client.post(s.url(SPLIT)).body(body.clone()).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 503);
    assert_eq!(answer.headers()["retry-after"], "1");
    let text = answer.text().await.unwrap();
    assert!(text.contains("limits.max_in_flight_bytes"), "{text}");
    drop(holders);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.post(SPLIT, body, &[]).await, (200, json!({"accepted": 0, "rejected": 0})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_hold_no_ingest_permit_and_are_answered_408() {
    let s = InProcess::start_with(|c| {
        c.limits.max_concurrent_requests = 4;
        c.http.body_read_timeout_ms = 2_000;
    })
    .await;
    let addr = s.server.addr.to_string();
    let mut trickling = Vec::new();
    for _ in 0..4 {
        trickling.push(start_request(&addr, WEBHOOK, &[], 1000, b"[{\"type\":").await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let batch = json!([impression("k", "f", "Production", "on", "default rule", 1)]);
    let started = Instant::now();
    let (status, answer) = s.post(SPLIT, gzip(batch.to_string().as_bytes()), &[]).await;
    assert_eq!((status, answer), (200, json!({"accepted": 1, "rejected": 0})));
    assert!(started.elapsed() < Duration::from_secs(2), "the Split request took {:?}", started.elapsed());
    for socket in &mut trickling {
        let answer = read_answer(socket, Duration::from_secs(15)).await.expect("no answer within 15 s");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_keep_alive_connections_are_closed() {
    let s = InProcess::start_with(|c| c.http.header_read_timeout_ms = 500).await;
    let addr = s.server.addr.to_string();
    let mut partial = TcpStream::connect(&addr).await.unwrap();
    partial.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let first = read_answer(&mut idle, Duration::from_secs(5)).await.unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    for socket in [&mut partial, &mut idle] {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the connection was still open after 10 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_bounded_and_a_closed_one_lets_the_next_in() {
    let s = InProcess::start_with(|c| {
        c.http.max_connections = 2;
        c.http.header_read_timeout_ms = 60_000;
    })
    .await;
    let addr = s.server.addr.to_string();
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let answer = read_answer(&mut socket, Duration::from_secs(5)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        idle.push(socket);
    }
    let third = s.client.get(s.url("/healthz")).timeout(Duration::from_secs(1)).send().await;
    assert!(third.is_err(), "a third connection was served while two were open: {third:?}");
    drop(idle);
    let fourth = s.client.get(s.url("/healthz")).timeout(Duration::from_secs(5)).send().await.unwrap();
    assert_eq!(fourth.status(), 200, "once the idle connections closed, the next one is served");
}

#[tokio::test]
async fn credentials_in_headers_are_checked_before_the_body_is_read() {
    let s = InProcess::start_with(|c| {
        c.split.token = Some("a-long-shared-secret".into());
        c.segment.write_keys.insert("the-write-key".into(), "web".into());
    })
    .await;
    let addr = s.server.addr.to_string();
    let wrong_key = format!("Basic {}", base64_of("wrong-key:"));
    let cases = [
        ("/v1/batch", ("authorization", wrong_key.as_str())),
        ("/v1/track", ("authorization", wrong_key.as_str())),
        (SPLIT, ("x-sluice-token", "wrong")),
    ];
    for (path, header) in cases {
        // The body is announced and never sent: the answer cannot have waited for it.
        let mut socket = start_request(&addr, path, &[header], 1000, b"").await;
        let answer = read_answer(&mut socket, Duration::from_secs(5)).await;
        let answer = answer.unwrap_or_else(|| panic!("{path}: no answer within 5 s"));
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
    }
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn tracking_api_cors_lets_any_origin_read_answers_but_never_with_credentials() {
    let s = InProcess::start().await;
    let preflight = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("/v1/batch"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://shop.example");
    assert!(preflight.headers().get("access-control-allow-credentials").is_none(), "{:?}", preflight.headers());
    let post = s
        .client
        .post(s.url("/v1/track"))
        .header("origin", "https://shop.example")
        .body(r#"{"event":"E","userId":"u"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 200);
    assert_eq!(post.headers()["access-control-allow-origin"], "https://shop.example");
    assert!(post.headers().get("access-control-allow-credentials").is_none(), "{:?}", post.headers());
}

#[tokio::test]
async fn the_dead_letter_area_tolerates_and_keeps_what_it_did_not_write() {
    let s = InProcess::start_with(|c| c.dead_letter.max_bytes = 1024).await;
    let area = s.dir.path().join("dead-letter");
    std::fs::create_dir(area.join("saved")).unwrap();
    std::fs::write(area.join("notes.txt"), "x".repeat(4096)).unwrap();
    let refused = json!([{"key": 5, "padding": "x".repeat(2000)}]);
    for _ in 0..3 {
        let (status, answer) = s.post(SPLIT, refused.to_string().into_bytes(), &[]).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["rejected"], 1, "{answer}");
    }
    assert!(area.join("saved").is_dir());
    assert_eq!(std::fs::read_to_string(area.join("notes.txt")).unwrap().len(), 4096);
}
