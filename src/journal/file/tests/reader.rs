/*!
Readers: waiting at the end, batch limits, cancellation, and segments deleted under them.
*/

use std::sync::Arc;
use std::time::Instant;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_wakes_when_records_are_appended_not_after_idle() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap());
    journal.append(records(0..2)).await.unwrap();
    let mut reader = journal.reader("loader", 2).unwrap();
    let started = Instant::now();
    let waiting = tokio::spawn(async move { reader.next_batch(100, Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    journal.append(records(2..5)).await.unwrap();

    let batch = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap().unwrap();
    assert_entries(&batch, 2, &records(2..5));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_caught_up_reader_returns_an_empty_batch_after_idle() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    journal.append(records(0..3)).await.unwrap();
    let mut reader = journal.reader("loader", 0).unwrap();
    assert_entries(&reader.next_batch(2, Duration::ZERO).await.unwrap(), 0, &records(0..2));
    assert_entries(&reader.next_batch(100, Duration::ZERO).await.unwrap(), 2, &records(2..3));

    let started = Instant::now();
    assert!(reader.next_batch(100, Duration::from_millis(100)).await.unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn a_reader_starting_past_the_end_waits_for_that_offset() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    let mut reader = journal.reader("loader", 3).unwrap();
    journal.append(records(0..2)).await.unwrap();
    assert!(reader.next_batch(100, Duration::from_millis(20)).await.unwrap().is_empty());
    journal.append(records(2..5)).await.unwrap();
    assert_entries(&reader.next_batch(100, Duration::ZERO).await.unwrap(), 3, &records(3..5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batch_is_returned_again_by_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    journal.append(records(0..30)).await.unwrap();
    let mut reader = journal.reader("loader", 0).unwrap();
    let mut entries = Vec::new();
    while entries.len() < 30 {
        // A zero timeout drops the call after its first poll, mid-read: as a `select!` would.
        if let Ok(batch) = tokio::time::timeout(Duration::ZERO, reader.next_batch(4, Duration::ZERO)).await {
            entries.extend(batch.unwrap());
        }
        entries.extend(reader.next_batch(4, Duration::ZERO).await.unwrap());
    }
    assert_entries(&entries, 0, &records(0..30));
}

#[tokio::test]
async fn a_reader_keeps_reading_a_segment_deleted_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = FileJournalConfig { segment_bytes: 2 << 20, replay_window_secs: 0, ..FileJournalConfig::default() };
    let journal = FileJournal::open(dir.path(), config).unwrap();
    // 100 KiB records: the first segment outgrows the reader's 1 MiB buffer, so the rest of it
    // must really come from the deleted file.
    let big = |i: u64| Record { payload: Bytes::from(vec![i as u8; 100 << 10]), ..record(i) };
    let all: Vec<_> = (0..30).map(big).collect();
    for group in all.chunks(3) {
        journal.append(group.to_vec()).await.unwrap();
    }
    let (first_segment, second_base) = (segment_files(dir.path()).remove(0), bases_on_disk(dir.path())[1]);
    let mut reader = journal.reader("loader", 0).unwrap();
    let mut entries = reader.next_batch(1, Duration::ZERO).await.unwrap();

    // The consumer commits past the first segment before reading it all (say it rewound).
    journal.commit("loader", second_base);
    journal.close().await;
    assert!(!first_segment.exists(), "retention deleted the segment being read");
    while entries.len() < all.len() {
        entries.extend(reader.next_batch(4, Duration::from_secs(1)).await.unwrap());
    }
    assert_entries(&entries, 0, &all);
}

#[tokio::test]
async fn a_batch_of_large_records_stops_once_it_holds_max_batch_bytes() {
    use crate::journal::MAX_BATCH_BYTES;
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    let big = |i: u8| Record {
        kind: RecordKind::SplitImpression,
        received_at_ms: 1,
        payload: Bytes::from(vec![b'a' + i; 5 << 20]),
        id: crate::record::RecordId(u128::from(i)),
    };
    journal.append((0..6).map(big).collect()).await.unwrap();
    let mut reader = journal.reader("loader", 0).unwrap();
    let first = reader.next_batch(100, Duration::ZERO).await.unwrap();
    // 5 MiB each: the fourth crosses 16 MiB, and the batch stops there.
    assert_eq!(first.len(), 4);
    assert!(first.iter().map(|e| e.payload.len()).sum::<usize>() < MAX_BATCH_BYTES + (5 << 20));
    let rest = reader.next_batch(100, Duration::ZERO).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.offset).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(rest[1].payload[0], b'f');
}
