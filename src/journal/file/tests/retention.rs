/*!
Retention against real segments: what consumers' commits, the replay window and the disk budget delete.
*/

use std::time::Instant;

use super::*;
use crate::journal::JournalError;

/// A journal of records 0..40 over several small segments, with the given retention settings.
async fn journal_with_segments(dir: &Path, replay_window_secs: u64, max_bytes: u64) -> FileJournal {
    let config = FileJournalConfig { replay_window_secs, max_bytes, ..small_segments() };
    let journal = FileJournal::open(dir, config).unwrap();
    for i in 0..20 {
        journal.append(records(i * 2..i * 2 + 2)).await.unwrap();
    }
    assert!(journal.stats().segments >= 4, "{} segments", journal.stats().segments);
    journal
}

#[tokio::test]
async fn segments_every_consumer_is_past_go_once_out_of_the_replay_window() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_with_segments(dir.path(), 0, u64::MAX).await;
    let bases = bases_on_disk(dir.path());
    journal.reader("loader", 0).unwrap();
    journal.reader("lake", 0).unwrap();
    journal.commit("loader", 40);
    journal.commit("lake", bases[2]);
    // Close waits for the queued retention pass.
    journal.close().await;

    assert_eq!(bases_on_disk(dir.path()), bases[2..], "only segments below both consumers went");
    let stats = journal.stats();
    assert_eq!((stats.first_offset, stats.segments), (bases[2], bases.len() - 2));
    assert_eq!(stats.consumers, [("lake".to_owned(), bases[2]), ("loader".to_owned(), 40)]);
    let gone = journal.reader("replay", bases[2] - 1).err().unwrap();
    assert!(
        matches!(gone, JournalError::OffsetGone { requested, first } if requested == bases[2] - 1 && first == bases[2])
    );
    assert_entries(&read_to_end(&journal, "replay", bases[2]).await, bases[2], &records(bases[2]..40));
}

#[tokio::test]
async fn a_consumer_behind_keeps_every_segment_it_has_not_finished() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_with_segments(dir.path(), 0, u64::MAX).await;
    let bases = bases_on_disk(dir.path());
    journal.reader("loader", 0).unwrap();
    journal.commit("loader", bases[1] - 1);
    journal.close().await;
    assert_eq!(bases_on_disk(dir.path()), bases);
}

#[tokio::test]
async fn without_consumers_nothing_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_with_segments(dir.path(), 0, 0).await;
    let bases = bases_on_disk(dir.path());
    journal.append(records(40..41)).await.unwrap(); // retention runs after every group
    journal.close().await;
    assert_eq!(bases_on_disk(dir.path())[..bases.len()], bases);
}

#[tokio::test]
async fn the_replay_window_keeps_consumed_segments_unless_the_journal_is_over_half_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_with_segments(dir.path(), 3600, u64::MAX).await;
    let bases = bases_on_disk(dir.path());
    journal.reader("loader", 40).unwrap();
    journal.commit("loader", 40);
    journal.close().await;
    assert_eq!(bases_on_disk(dir.path()), bases, "within the replay window");

    let disk_bytes = journal.stats().disk_bytes;
    let config = FileJournalConfig { max_bytes: disk_bytes, ..small_segments() };
    let journal = FileJournal::open(dir.path(), config).unwrap();
    journal.reader("loader", 40).unwrap();
    journal.commit("loader", 40);
    journal.close().await;
    let stats = journal.stats();
    assert!(stats.segments < bases.len(), "over half the budget, consumed segments go");
    assert!(stats.disk_bytes <= disk_bytes / 2, "down to half the budget: {} of {disk_bytes}", stats.disk_bytes);
}

#[tokio::test]
async fn a_commit_alone_wakes_retention_on_an_idle_journal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_with_segments(dir.path(), 0, u64::MAX).await;
    journal.reader("loader", 0).unwrap();
    journal.commit("loader", 40);
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal.stats().segments > 1 {
        assert!(Instant::now() < deadline, "retention did not run after the commit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bases_on_disk(dir.path()).len(), 1);
    assert_eq!(journal.stats().first_offset, bases_on_disk(dir.path())[0]);
}

#[tokio::test]
async fn a_held_consumer_keeps_every_segment_and_does_not_count_as_lag_until_it_registers() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_with_segments(dir.path(), 0, 0).await;
    journal.hold("loader");
    journal.reader("lake", 0).unwrap();
    journal.commit("lake", 40);
    journal.append(records(40..41)).await.unwrap(); // retention runs after every group
    let bases = bases_on_disk(dir.path());
    assert_eq!(bases[0], 0, "over budget, yet nothing the held consumer may need went");
    assert_eq!(journal.stats().consumers, [("lake".to_owned(), 40)], "a held place is not an offset");
    journal.reader("loader", bases[2]).unwrap();
    journal.close().await;
    assert_eq!(bases_on_disk(dir.path()), bases[2..], "once registered, the consumer's real offset counts");
}
