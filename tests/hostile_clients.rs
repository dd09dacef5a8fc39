//! Hostile and slow clients against the ingest endpoints: they are refused early and cheaply, and
//! they cannot starve authenticated senders, the rest of the server, or its memory.
//! No store is involved (every request here is refused or journaled only), so one backend suffices.

mod common;

use std::time::Duration;

use common::{Binary, InProcess};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const SPLIT: &str = "/v1/split/impressions";

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
