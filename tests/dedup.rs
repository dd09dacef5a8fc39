//! Entrance dedup through the real router and the real binary: a Split batch or a Segment
//! `/v1/batch` posted twice is answered as accepted both times, and is journaled, archived in
//! the lake and stored once, also when the second post reaches a restarted sluice.

mod common;

use common::{Binary, InProcess, gzip, impression, lake_ids, store_scalar};
use serde_json::Value;

/// 2019-11-01T18:15:14.350Z.
const T0: i64 = 1_572_632_114_350;

/// A Split batch of `n` impressions keyed `{prefix}0`, `{prefix}1`, ….
fn split_batch(prefix: &str, n: usize) -> Value {
    Value::Array(
        (0..n).map(|i| impression(&format!("{prefix}{i}"), "f", "Production", "on", "r", T0 + i as i64)).collect(),
    )
}

#[tokio::test]
async fn a_batch_posted_twice_is_answered_accepted_and_archived_and_stored_once() {
    let app = InProcess::start().await;
    let impressions = split_batch("k", 50);
    let events = serde_json::json!({"batch": [
        {"type": "track", "event": "E", "userId": "u", "messageId": "e1", "timestamp": "2025-11-29T10:15:00.000Z"},
        {"type": "page", "anonymousId": "a", "messageId": "e2", "timestamp": "2025-11-29T11:45:00.000Z"},
    ]});
    for attempt in ["first", "second"] {
        let (status, answer) = app.post_gzip(&impressions).await;
        assert_eq!((status, &answer["accepted"]), (200, &Value::from(50)), "{attempt} Split post: {answer}");
        let (status, answer) = app.post("/v1/batch", events.to_string().into_bytes(), &[]).await;
        assert_eq!((status, &answer["success"]), (200, &Value::Bool(true)), "{attempt} Segment post: {answer}");
    }
    app.wait_loaded().await;
    let (_, metrics) = app.get("/metrics").await;
    let has = |name: &str, labels: &[&str], value: &str| {
        metrics.lines().any(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)) && l.ends_with(value))
    };
    assert!(has("sluice_journal_next_offset", &[], " 52"), "each record took one offset: {metrics}");
    assert!(has("sluice_source_records_total", &["source=\"split\"", "result=\"duplicate\""], " 50"), "{metrics}");
    assert!(has("sluice_source_records_total", &["source=\"segment\"", "result=\"duplicate\""], " 2"), "{metrics}");
    assert!(has("sluice_journal_duplicates_total", &[], " 52"), "{metrics}");
    assert!(has("sluice_journal_dedup_ids", &[], " 52"), "{metrics}");
    assert!(has("sluice_journal_dedup_window_seconds", &[], " 86400"), "{metrics}");

    let (dir, schema) = app.stop().await;
    let lake = lake_ids(&dir.path().join("lake"));
    assert_eq!(lake.len(), 52, "{lake:?}");
    assert!(lake.values().all(|&n| n == 1), "every record is in the lake exactly once: {lake:?}");
    assert_eq!(store_scalar(dir.path(), schema.as_ref(), "SELECT COUNT(*) FROM impressions").await, 50);
    assert_eq!(store_scalar(dir.path(), schema.as_ref(), "SELECT COUNT(*) FROM events").await, 2);
}

#[tokio::test]
async fn a_batch_posted_again_after_a_restart_is_archived_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let body = gzip(split_batch("r", 100).to_string().as_bytes());
    let events = serde_json::json!({"batch": [
        {"type": "track", "event": "E", "userId": "u", "messageId": "m1", "timestamp": "2025-11-29T10:15:00.000Z"},
    ]})
    .to_string();
    for round in 0..2 {
        let b = Binary::start(dir.path(), &[]).await;
        let split = client.post(b.url("/v1/split/impressions")).body(body.clone()).send().await.unwrap();
        assert_eq!(split.status(), 200, "round {round}");
        let segment = client.post(b.url("/v1/batch")).body(events.clone()).send().await.unwrap();
        assert_eq!(segment.status(), 200, "round {round}");
        common::wait_loaded(&client, &format!("http://{}", b.addr)).await;
        assert_eq!(b.terminate(), Some(0));
    }
    let lake = lake_ids(&dir.path().join("lake"));
    assert_eq!(lake.len(), 101, "{lake:?}");
    assert!(lake.values().all(|&n| n == 1), "the restarted sluice rebuilt its index from the journal: {lake:?}");
    assert_eq!(store_scalar(dir.path(), None, "SELECT COUNT(*) FROM impressions").await, 100);
    assert_eq!(store_scalar(dir.path(), None, "SELECT COUNT(*) FROM events").await, 1);
}
