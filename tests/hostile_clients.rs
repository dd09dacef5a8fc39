//! Hostile and slow clients against the ingest endpoints: they are refused early and cheaply, and
//! they cannot starve authenticated senders, the rest of the server, or its memory.
//! No store is involved (every request here is refused or journaled only), so one backend suffices.

mod common;

use common::InProcess;
use serde_json::json;

const SPLIT: &str = "/v1/split/impressions";

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
