/*!
The journal's identity: created once, durable, kept across reopening, different for another journal.
*/

use super::*;

#[tokio::test]
async fn a_journal_keeps_its_id_and_another_journal_has_another() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let journal = FileJournal::open(&a.path().join("journal"), small_segments()).unwrap();
    let id = journal.id().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    journal.append(records(0..3)).await.unwrap();
    journal.close().await;
    drop(journal);

    let reopened = FileJournal::open(&a.path().join("journal"), small_segments()).unwrap();
    assert_eq!(reopened.id(), id);
    let other = FileJournal::open(&b.path().join("journal"), small_segments()).unwrap();
    assert_ne!(other.id(), id);
    assert_eq!(std::fs::read_to_string(a.path().join("journal/journal.id")).unwrap().trim(), id);
}
