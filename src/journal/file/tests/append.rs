/*!
Appending: offsets, group commit, rotation, limits, shutdown and poisoning.
*/

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::*;
use crate::journal::JournalError;
use crate::journal::file::MAX_RECORD_BYTES;

#[tokio::test]
async fn appended_records_read_back_in_order_with_dense_offsets_and_reopen_continues() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    assert_eq!(journal.stats().next_offset, 0, "an empty directory starts at offset 0");
    assert_eq!(journal.append(records(0..3)).await.unwrap().offsets, (0..3).collect::<Vec<_>>());
    assert_eq!(journal.append(records(3..4)).await.unwrap().offsets, (3..4).collect::<Vec<_>>());
    assert_eq!(
        journal.append(Vec::new()).await.unwrap().offsets,
        (4..4).collect::<Vec<_>>(),
        "an empty append takes no offset"
    );
    assert_eq!(journal.append(records(4..10)).await.unwrap().offsets, (4..10).collect::<Vec<_>>());
    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &records(0..10));
    journal.close().await;

    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    assert_eq!(journal.stats().next_offset, 10);
    assert_eq!(journal.append(records(10..12)).await.unwrap().offsets, (10..12).collect::<Vec<_>>());
    assert_entries(&read_to_end(&journal, "loader", 4).await, 4, &records(4..12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_disjoint_ranges_covering_every_offset_with_few_fsyncs() {
    const TASKS: u64 = 32;
    const APPENDS: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap());
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let journal = Arc::clone(&journal);
            tokio::spawn(async move {
                let mut ranges = Vec::new();
                for i in 0..APPENDS {
                    // 1 to 3 records, numbered so each payload says which task and append wrote it.
                    let first = (task * APPENDS + i) * 3;
                    let batch = records(first..first + 1 + (task + i) % 3);
                    ranges.push((journal.append(batch.clone()).await.unwrap().offsets, batch));
                }
                ranges
            })
        })
        .collect();
    let mut written = Vec::new();
    for task in tasks {
        written.extend(task.await.unwrap());
    }

    written.sort_by_key(|(offsets, _)| offsets[0]);
    let mut expected_start = 0;
    for (offsets, batch) in &written {
        let range: Vec<u64> = (expected_start..expected_start + batch.len() as u64).collect();
        assert_eq!(offsets, &range, "each append's offsets are consecutive, disjoint from the others', with no gap");
        expected_start += batch.len() as u64;
    }
    let all: Vec<_> = written.into_iter().flat_map(|(_, batch)| batch).collect();
    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &all);

    let (appends, syncs) = (TASKS * APPENDS, journal.sync_count());
    assert!(syncs * 4 <= appends, "{syncs} fsyncs for {appends} appends: commits were not grouped");
}

#[tokio::test]
async fn rotation_spreads_records_over_segments_that_readers_cross_and_reopen_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    for i in 0..40 {
        journal.append(records(i * 2..i * 2 + 2)).await.unwrap();
    }
    let stats = journal.stats();
    assert!(stats.segments >= 5, "{} segments", stats.segments);
    assert_eq!(stats.segments, segment_files(dir.path()).len());
    let on_disk: u64 = segment_files(dir.path()).iter().map(|path| path.metadata().unwrap().len()).sum();
    assert_eq!(stats.disk_bytes, on_disk);
    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &records(0..80));
    assert_entries(&read_to_end(&journal, "late", 33).await, 33, &records(33..80));
    journal.close().await;

    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(journal.stats().segments, stats.segments);
    assert_eq!(journal.append(records(80..81)).await.unwrap().offsets, (80..81).collect::<Vec<_>>());
    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &records(0..81));
}

#[tokio::test]
async fn a_payload_over_16_mib_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    let mut batch = records(0..2);
    batch[1].payload = Bytes::from(vec![b'x'; MAX_RECORD_BYTES + 1]);
    let refused = journal.append(batch).await;
    assert!(
        matches!(refused, Err(JournalError::RecordTooLarge { size, max }) if size == MAX_RECORD_BYTES + 1 && max == MAX_RECORD_BYTES)
    );
    assert_eq!(journal.stats().next_offset, 0);

    let mut largest = record(0);
    largest.payload = Bytes::from(vec![b'x'; MAX_RECORD_BYTES]);
    assert_eq!(journal.append(vec![largest.clone()]).await.unwrap().offsets, [0]);
    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &[largest]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_completes_queued_appends_then_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap());
    let appends: Vec<_> = (0..50)
        .map(|i| {
            let journal = Arc::clone(&journal);
            tokio::spawn(async move { journal.append(records(i * 10..i * 10 + 10)).await })
        })
        .collect();
    journal.close().await;
    assert!(!*journal.shared.writer_running.borrow(), "close returns once the writer thread has ended");
    assert!(matches!(journal.append(records(0..1)).await, Err(JournalError::Closed)));

    // Each append either completed or was refused whole; every completed one is on disk.
    let mut acknowledged = 0;
    for append in appends {
        match append.await.unwrap() {
            Ok(appended) => acknowledged += appended.offsets.len() as u64,
            Err(error) => assert!(matches!(error, JournalError::Closed), "{error}"),
        }
    }
    let reopened = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    assert_eq!(reopened.stats().next_offset, acknowledged);
}

#[tokio::test]
async fn a_failed_fsync_poisons_the_group_and_every_later_append() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    journal.append(records(0..3)).await.unwrap();
    journal.shared.fail_next_sync.store(true, Ordering::Release);

    assert!(
        matches!(journal.append(records(3..5)).await, Err(JournalError::Poisoned(reason)) if reason.contains("injected"))
    );
    assert!(matches!(journal.append(records(5..6)).await, Err(JournalError::Poisoned(_))));
    let stats = journal.stats();
    assert!(stats.poisoned);
    assert_eq!(stats.next_offset, 3, "the failed group never became durable for readers");
    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &records(0..3));
}

#[tokio::test]
async fn a_failed_write_leaves_nothing_of_its_group_and_later_appends_carry_on_densely() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    assert_eq!(journal.append(records(0..3)).await.unwrap().offsets, (0..3).collect::<Vec<_>>());
    let size_before = segment_files(dir.path()).iter().map(|path| path.metadata().unwrap().len()).sum::<u64>();
    journal.shared.fail_next_write.store(true, Ordering::Release);

    let refused = journal.append(records(3..8)).await;
    assert!(matches!(refused, Err(JournalError::Unwritten { .. })), "{refused:?}");
    assert!(refused.unwrap_err().to_string().contains("disk holding the journal is full"));
    let on_disk = segment_files(dir.path()).iter().map(|path| path.metadata().unwrap().len()).sum::<u64>();
    assert_eq!(on_disk, size_before, "the half-written group was cut off the segment");
    let stats = journal.stats();
    assert!(!stats.poisoned, "a write that was undone does not poison the journal");
    assert!(stats.write_error.as_deref().is_some_and(|error| error.contains("full")), "{:?}", stats.write_error);
    assert_eq!(stats.next_offset, 3);

    // The next append is tried again, and takes the offsets the refused one did not.
    assert_eq!(journal.append(records(8..10)).await.unwrap().offsets, (3..5).collect::<Vec<_>>());
    assert_eq!(journal.stats().write_error, None, "a successful group clears the error");
    let acknowledged: Vec<_> = records(0..3).into_iter().chain(records(8..10)).collect();
    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &acknowledged);
    journal.close().await;

    // After a restart, exactly the acknowledged records: nothing of the refused batch.
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    assert_eq!(journal.stats().next_offset, 5);
    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &acknowledged);
}

#[tokio::test]
async fn a_failed_write_that_cannot_be_undone_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    journal.append(records(0..3)).await.unwrap();
    journal.shared.fail_next_write.store(true, Ordering::Release);
    journal.shared.fail_next_truncate.store(true, Ordering::Release);

    let refused = journal.append(records(3..5)).await;
    assert!(
        matches!(&refused, Err(JournalError::Poisoned(reason)) if reason.contains("injected truncate")),
        "{refused:?}"
    );
    assert!(matches!(journal.append(records(5..6)).await, Err(JournalError::Poisoned(_))));
    assert!(journal.stats().poisoned);
    assert_eq!(journal.stats().next_offset, 3);
}

#[tokio::test]
async fn a_new_segment_that_cannot_be_created_is_removed_and_a_later_append_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    // One group over the segment size, so the next group starts a new segment.
    assert_eq!(journal.append(records(0..8)).await.unwrap().offsets, (0..8).collect::<Vec<_>>());
    journal.shared.fail_next_rotation.store(true, Ordering::Release);

    let refused = journal.append(records(8..10)).await;
    assert!(matches!(&refused, Err(JournalError::Unwritten { .. })), "{refused:?}");
    assert!(refused.unwrap_err().to_string().contains("full"));
    assert_eq!(bases_on_disk(dir.path()), [0], "the half-created segment was removed");
    assert!(!journal.stats().poisoned);

    assert_eq!(journal.append(records(10..12)).await.unwrap().offsets, (8..10).collect::<Vec<_>>());
    assert_eq!(bases_on_disk(dir.path()), [0, 8]);
    journal.close().await;

    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    let acknowledged: Vec<_> = records(0..8).into_iter().chain(records(10..12)).collect();
    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &acknowledged);
}
