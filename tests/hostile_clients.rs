//! Hostile and slow clients against the ingest endpoints: they are refused early and cheaply, and
//! they cannot starve authenticated senders, the rest of the server, or its memory.
//! No store is involved (every request here is refused or journaled only), so one backend suffices.

mod common;

use common::InProcess;
use serde_json::json;

const SPLIT: &str = "/v1/split/impressions";

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
