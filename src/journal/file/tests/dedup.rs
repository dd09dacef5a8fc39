/*!
Entrance dedup: a record whose id the journal appended within its dedup window is left out,
takes no offset and is counted; the index survives reopening, forgets what left the window,
stays under its cap and never keeps the ids of a group that was not written.
*/

use std::sync::Arc;
use std::sync::atomic::Ordering;

use proptest::prelude::*;

use super::*;
use crate::journal::JournalError;
use crate::journal::file::dedup::{self, DedupIndex, RUN_MS};

const HOUR_MS: i64 = 3_600_000;

/// Impression `i` as a source would journal it, arrived at `at_ms`: its id is the one its
/// payload gives, so that reopening computes the same id again.
fn arrived(i: u64, at_ms: i64) -> Record {
    let payload = format!(r#"{{"key":"user-{i}","split":"checkout_v2","treatment":"on","time":{i}}}"#);
    Record::from_payload(RecordKind::SplitImpression, at_ms, Bytes::from(payload)).unwrap()
}

/// Impressions `numbers`, arrived just now.
fn recent(numbers: Range<u64>) -> Vec<Record> {
    let now = dedup::now_ms();
    numbers.map(|i| arrived(i, now)).collect()
}

/// `batch` as its sender posts it again: the same records, arrived later.
fn resent(batch: &[Record]) -> Vec<Record> {
    let now = dedup::now_ms();
    batch.iter().map(|record| Record { received_at_ms: now, ..record.clone() }).collect()
}

fn offsets(range: Range<u64>) -> Vec<u64> {
    range.collect()
}

#[tokio::test]
async fn a_batch_appended_again_takes_no_offsets_and_reads_back_once() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    let batch = recent(0..5);
    let first = journal.append(batch.clone()).await.unwrap();
    assert_eq!((first.offsets, first.duplicates), (offsets(0..5), 0));

    let again = journal.append(resent(&batch)).await.unwrap();
    assert_eq!((again.offsets, again.duplicates), (vec![], 5), "every record of the batch was held");
    let mixed: Vec<_> = resent(&batch[3..]).into_iter().chain(recent(5..7)).collect();
    let part = journal.append(mixed).await.unwrap();
    assert_eq!((part.offsets, part.duplicates), (offsets(5..7), 2), "the new records take the next offsets, densely");

    let expected: Vec<_> = batch.iter().cloned().chain(recent(5..7)).collect();
    let entries = read_to_end(&journal, "loader", 0).await;
    assert_eq!(entries.len(), 7);
    assert_eq!(
        entries.iter().map(|e| &e.payload).collect::<Vec<_>>(),
        expected.iter().map(|r| &r.payload).collect::<Vec<_>>()
    );
    let stats = journal.stats();
    assert_eq!((stats.next_offset, stats.duplicates, stats.dedup_ids), (7, 7, 7));
    assert_eq!(stats.dedup_window_secs, 24 * 3600, "the whole window is covered");
}

#[tokio::test]
async fn duplicates_within_one_batch_are_left_out_and_the_first_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    let [a, b] = [arrived(1, dedup::now_ms()), arrived(2, dedup::now_ms())];
    // The second copy of `a` differs in its arrival: the first one is what is kept.
    let later_a = Record { received_at_ms: a.received_at_ms + 1, ..a.clone() };
    let appended = journal.append(vec![a.clone(), b.clone(), later_a, b.clone(), a.clone()]).await.unwrap();
    assert_eq!((appended.offsets, appended.duplicates), (offsets(0..2), 3));
    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &[a, b]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_batch_appended_concurrently_by_many_tasks_is_stored_once() {
    const TASKS: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap());
    let batch = recent(0..10);
    let appends: Vec<_> = (0..TASKS)
        .map(|_| {
            let (journal, batch) = (Arc::clone(&journal), resent(&batch));
            tokio::spawn(async move { journal.append(batch).await.unwrap() })
        })
        .collect();
    let mut stored = Vec::new();
    let mut duplicates = 0;
    for append in appends {
        let appended = append.await.unwrap();
        stored.extend(appended.offsets);
        duplicates += appended.duplicates;
    }
    stored.sort_unstable();
    assert_eq!(stored, offsets(0..10), "each record took one offset, in whichever append came first");
    assert_eq!(duplicates, 10 * (TASKS - 1));
    let entries = read_to_end(&journal, "loader", 0).await;
    let mut keys: Vec<_> = entries.iter().map(|e| e.payload.clone()).collect();
    keys.sort();
    let mut expected: Vec<_> = batch.iter().map(|r| r.payload.clone()).collect();
    expected.sort();
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn the_index_is_rebuilt_from_the_segments_when_the_journal_opens_again() {
    let dir = tempfile::tempdir().unwrap();
    let batch = recent(0..40);
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    for part in batch.chunks(4) {
        journal.append(part.to_vec()).await.unwrap();
    }
    assert!(journal.stats().segments >= 4, "the records span several segments");
    journal.close().await;
    drop(journal);

    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(journal.stats().dedup_ids, 40, "every id read back from the retained segments");
    let again = journal.append(resent(&batch)).await.unwrap();
    assert_eq!((again.offsets, again.duplicates), (vec![], 40));
    assert_eq!(journal.append(recent(40..41)).await.unwrap().offsets, [40]);
}

#[tokio::test]
async fn records_that_arrived_before_the_window_are_not_remembered_nor_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let config = FileJournalConfig { dedup_window_secs: 3600, ..FileJournalConfig::default() };
    let journal = FileJournal::open(dir.path(), config.clone()).unwrap();
    let old: Vec<_> = (0..3).map(|i| arrived(i, dedup::now_ms() - 2 * HOUR_MS)).collect();
    assert_eq!(journal.append(old.clone()).await.unwrap().offsets, offsets(0..3));
    assert_eq!(journal.append(old.clone()).await.unwrap().offsets, offsets(3..6), "outside the window: stored again");
    let young: Vec<_> = (3..5).map(|i| arrived(i, dedup::now_ms() - HOUR_MS / 2)).collect();
    journal.append(young.clone()).await.unwrap();
    journal.close().await;
    drop(journal);

    let journal = FileJournal::open(dir.path(), config).unwrap();
    assert_eq!(journal.stats().dedup_ids, 2, "only the records inside the window are read back");
    assert_eq!(journal.append(resent(&young)).await.unwrap().duplicates, 2);
    assert_eq!(journal.append(old).await.unwrap().offsets, offsets(8..11));
}

#[test]
fn ids_are_forgotten_once_their_arrival_leaves_the_window() {
    let mut index = DedupIndex::new(60, 1000);
    let t0 = 1_800_000_000_000;
    assert!(index.admit(RecordId(1), t0, t0));
    assert!(index.admit(RecordId(2), t0 + 30_000, t0 + 30_000));
    index.keep();
    assert!(!index.admit(RecordId(1), t0 + 59_000, t0 + 59_000), "inside the window");

    // Runs are about a second long, so an id may outlive the window by that much, not more.
    index.expire(t0 + 60_000 + RUN_MS + 1);
    assert_eq!(index.len(), 1);
    assert!(index.admit(RecordId(1), t0 + 61_500, t0 + 61_500), "forgotten after the window");
    assert!(!index.admit(RecordId(2), t0 + 61_500, t0 + 61_500), "a later arrival is still held");
    assert_eq!(index.covered_ms(t0 + 61_500), 60_000);
}

#[tokio::test]
async fn a_full_index_forgets_the_oldest_ids_first_and_says_the_window_shrank() {
    let dir = tempfile::tempdir().unwrap();
    let config = FileJournalConfig { dedup_max_ids: 3, ..FileJournalConfig::default() };
    let journal = FileJournal::open(dir.path(), config).unwrap();
    let at = dedup::now_ms() - 10_000;
    let first: Vec<_> = (0..3).map(|i| arrived(i, at)).collect();
    journal.append(first.clone()).await.unwrap();
    assert_eq!(journal.stats().dedup_window_secs, 24 * 3600, "nothing evicted yet");
    journal.append(recent(3..5)).await.unwrap();

    let stats = journal.stats();
    assert_eq!(stats.dedup_ids, 3);
    assert!((9..=11).contains(&stats.dedup_window_secs), "ids of 10 s ago were evicted: {}", stats.dedup_window_secs);
    let held = journal.append(resent(&first[2..])).await.unwrap();
    assert_eq!((held.offsets.len(), held.duplicates), (0, 1), "the newest of the first three is still held");
    let evicted = journal.append(resent(&first[..2])).await.unwrap();
    assert_eq!((evicted.offsets.len(), evicted.duplicates), (2, 0), "the two oldest were evicted");
}

#[test]
fn the_cap_evicts_in_arrival_order() {
    let mut index = DedupIndex::new(3600, 2);
    let now = 1_800_000_000_000;
    for id in 1..=3 {
        assert!(index.admit(RecordId(id), now - 10_000 + id as i64 * 2000, now));
    }
    index.keep();
    assert_eq!(index.len(), 2);
    assert!(!index.admit(RecordId(3), now, now) && !index.admit(RecordId(2), now, now));
    assert!(index.admit(RecordId(1), now, now), "the oldest went first");
}

#[tokio::test]
async fn a_failed_write_keeps_none_of_its_ids_so_the_retry_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    journal.append(recent(0..3)).await.unwrap();
    let batch = recent(3..8);
    journal.shared.fail_next_write.store(true, Ordering::Release);
    assert!(matches!(journal.append(batch.clone()).await, Err(JournalError::Unwritten { .. })));
    assert_eq!(journal.stats().dedup_ids, 3, "the refused group's ids were taken back out");

    let retry = journal.append(resent(&batch)).await.unwrap();
    assert_eq!(
        (retry.offsets, retry.duplicates),
        (offsets(3..8), 0),
        "the retry is stored, not dropped as a duplicate"
    );
    assert_eq!(journal.append(resent(&batch)).await.unwrap().duplicates, 5, "and is held from then on");
    let expected: Vec<_> = recent(0..8);
    let entries = read_to_end(&journal, "loader", 0).await;
    assert_eq!(
        entries.iter().map(|e| &e.payload).collect::<Vec<_>>(),
        expected.iter().map(|r| &r.payload).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_failed_rotation_or_fsync_keeps_none_of_its_ids_either() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    journal.append(recent(0..8)).await.unwrap();
    let batch = recent(8..10);
    journal.shared.fail_next_rotation.store(true, Ordering::Release);
    assert!(matches!(journal.append(batch.clone()).await, Err(JournalError::Unwritten { .. })));
    assert_eq!(journal.append(resent(&batch)).await.unwrap().offsets, offsets(8..10));

    let lost = recent(10..12);
    journal.shared.fail_next_sync.store(true, Ordering::Release);
    assert!(matches!(journal.append(lost.clone()).await, Err(JournalError::Poisoned(_))));
    assert_eq!(journal.stats().dedup_ids, 10, "the group whose fsync failed left no id behind");
    journal.close().await;
    drop(journal);

    // After the restart the refused group is gone (cut off), and its retry is stored.
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(journal.append(resent(&lost)).await.unwrap().offsets, offsets(10..12));
}

#[tokio::test]
async fn a_window_of_zero_turns_dedup_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = FileJournalConfig { dedup_window_secs: 0, ..FileJournalConfig::default() };
    let journal = FileJournal::open(dir.path(), config).unwrap();
    let batch = recent(0..3);
    journal.append(batch.clone()).await.unwrap();
    let again = journal.append(batch).await.unwrap();
    assert_eq!((again.offsets, again.duplicates), (offsets(3..6), 0));
    let stats = journal.stats();
    assert_eq!((stats.dedup_ids, stats.dedup_window_secs), (0, 0));
}

#[tokio::test]
async fn a_payload_that_does_not_decode_is_skipped_when_the_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    let mut garbage = arrived(100, dedup::now_ms());
    garbage.payload = Bytes::from_static(b"not json");
    let batch = recent(0..2);
    journal.append(vec![batch[0].clone(), garbage, batch[1].clone()]).await.unwrap();
    journal.close().await;
    drop(journal);

    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    assert_eq!(journal.stats().dedup_ids, 2);
    assert_eq!(journal.append(resent(&batch)).await.unwrap().duplicates, 2);
}

#[tokio::test]
async fn a_segment_last_written_before_the_window_is_not_read_when_the_journal_opens() {
    let dir = tempfile::tempdir().unwrap();
    let config = FileJournalConfig { segment_bytes: 512, dedup_window_secs: 3600, ..FileJournalConfig::default() };
    let journal = FileJournal::open(dir.path(), config.clone()).unwrap();
    let batch = recent(0..8);
    journal.append(batch.clone()).await.unwrap();
    journal.append(recent(8..9)).await.unwrap();
    journal.close().await;
    drop(journal);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2);
    // The records say they arrived now, but the file says it was last written two hours ago:
    // the file is believed, and not read.
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options().write(true).open(&files[0]).unwrap().set_modified(two_hours_ago).unwrap();

    let journal = FileJournal::open(dir.path(), config).unwrap();
    assert_eq!(journal.stats().dedup_ids, 1, "only the newer segment was read");
    assert_eq!(journal.append(recent(8..9)).await.unwrap().duplicates, 1);
}

/// Runs `future` to completion on a fresh runtime (proptest bodies are synchronous).
fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn what_reads_back_is_the_first_occurrence_of_each_id_in_order(
        batches in prop::collection::vec(prop::collection::vec(0u64..12, 0..8), 1..10),
        reopen_after in any::<prop::sample::Index>(),
    ) {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut journal = FileJournal::open(dir.path(), small_segments()).unwrap();
            let reopen_after = reopen_after.index(batches.len());
            let mut seen = std::collections::HashSet::new();
            let mut expected = Vec::new();
            for (n, batch) in batches.iter().enumerate() {
                let records: Vec<_> = batch.iter().map(|&i| arrived(i, dedup::now_ms())).collect();
                let start = expected.len() as u64;
                let new: Vec<_> = records.iter().filter(|r| seen.insert(r.id)).cloned().collect();
                let appended = journal.append(records.clone()).await.unwrap();
                prop_assert_eq!(&appended.offsets, &offsets(start..start + new.len() as u64));
                prop_assert_eq!(appended.duplicates, records.len() - new.len());
                expected.extend(new);
                if n == reopen_after {
                    journal.close().await;
                    drop(journal);
                    journal = FileJournal::open(dir.path(), small_segments()).unwrap();
                }
            }
            let entries = read_to_end(&journal, "loader", 0).await;
            prop_assert_eq!(entries.len(), expected.len());
            for (entry, record) in entries.iter().zip(&expected) {
                prop_assert_eq!(&entry.payload, &record.payload);
            }
            Ok(())
        })?;
    }
}
