/*!
One conformance suite for every implementation of [`Journal`]: each case is a generic function
run against the embedded [`FileJournal`] and the [`JetStreamJournal`] (a stream of its own on the
local NATS server at 127.0.0.1:4222, deleted at the end).

What only one implementation does is tested beside it: the file journal's torn tails, repair,
segments and fsyncs in `file::tests`; the JetStream journal's stream settings, cluster failures
and NATS outages in `jetstream::tests`.
*/

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::file::{FileJournal, FileJournalConfig, MAX_RECORD_BYTES};
use super::jetstream::test_servers::{LOCAL_NATS, local_nats};
use super::jetstream::{JetStreamJournal, JetStreamSettings};
use super::{Entry, Journal, JournalError, MAX_BATCH_BYTES, Record};
use crate::record::{RecordId, RecordKind};

/// A future that closes a journal.
type Closing = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A journal under test, with what closes it.
struct Opened {
    journal: Arc<dyn Journal>,
    closer: Box<dyn Fn() -> Closing + Send + Sync>,
    /// The largest payload it takes.
    max_record_bytes: usize,
}

impl Opened {
    async fn close(&self) {
        (self.closer)().await;
    }
}

impl std::ops::Deref for Opened {
    type Target = dyn Journal;
    fn deref(&self) -> &Self::Target {
        self.journal.as_ref()
    }
}

/// How a case gets at the implementation under test.
#[async_trait]
trait Harness: Send + Sync {
    /// Opens the journal; every call opens the same storage (a second one reopens it).
    async fn open(&self) -> Opened;
    /// Drops every record below about `offset`, as retention would (the file journal drops
    /// whole segments, so possibly fewer), and reopens; the caller has closed the journal.
    async fn drop_before(&self, offset: u64) -> Opened;
    /// Opens another journal, on storage of its own.
    async fn other(&self) -> Opened;
}

/// The embedded journal in a temporary directory, with small segments.
struct FileHarness {
    dir: tempfile::TempDir,
}

impl FileHarness {
    fn new() -> FileHarness {
        FileHarness { dir: tempfile::tempdir().unwrap() }
    }

    fn open_at(path: &std::path::Path, config: FileJournalConfig) -> Opened {
        let journal = Arc::new(FileJournal::open(path, config).unwrap());
        let closing = Arc::clone(&journal);
        Opened {
            journal,
            closer: Box::new(move || {
                let journal = Arc::clone(&closing);
                Box::pin(async move { journal.close().await })
            }),
            max_record_bytes: MAX_RECORD_BYTES,
        }
    }

    /// Segments of half a KiB (about eight records), so that retention has something to drop.
    fn config() -> FileJournalConfig {
        FileJournalConfig { segment_bytes: 512, ..FileJournalConfig::default() }
    }
}

#[async_trait]
impl Harness for FileHarness {
    async fn open(&self) -> Opened {
        FileHarness::open_at(&self.dir.path().join("journal"), FileHarness::config())
    }

    async fn drop_before(&self, offset: u64) -> Opened {
        let config = FileJournalConfig { replay_window_secs: 0, ..FileHarness::config() };
        let journal = FileHarness::open_at(&self.dir.path().join("journal"), config);
        journal.reader("retention", 0).unwrap();
        journal.commit("retention", offset);
        // Close waits for the retention pass the commit queued.
        journal.close().await;
        self.open().await
    }

    async fn other(&self) -> Opened {
        FileHarness::open_at(&self.dir.path().join("other"), FileHarness::config())
    }
}

/// Streams of their own on the local NATS server, deleted when the harness is dropped.
struct JetStreamHarness {
    stream: String,
    other: String,
}

impl JetStreamHarness {
    fn new() -> JetStreamHarness {
        let unique = format!("{}_{:08x}", std::process::id(), rand::random::<u32>());
        JetStreamHarness { stream: format!("TEST_{unique}"), other: format!("TEST_{unique}_OTHER") }
    }

    async fn open_stream(stream: &str) -> Opened {
        local_nats().await;
        let settings = JetStreamSettings { replicas: Some(1), ..JetStreamSettings::new(LOCAL_NATS, stream) };
        let journal = Arc::new(JetStreamJournal::open(&settings).await.unwrap());
        let max_record_bytes = journal.max_record_bytes();
        let closing = Arc::clone(&journal);
        Opened {
            journal,
            closer: Box::new(move || {
                let journal = Arc::clone(&closing);
                Box::pin(async move { journal.close().await })
            }),
            max_record_bytes,
        }
    }
}

#[async_trait]
impl Harness for JetStreamHarness {
    async fn open(&self) -> Opened {
        JetStreamHarness::open_stream(&self.stream).await
    }

    async fn drop_before(&self, offset: u64) -> Opened {
        let client = local_nats().await;
        let stream = async_nats::jetstream::new(client).get_stream(&self.stream).await.unwrap();
        // Keeps sequence `offset + 1` (offset `offset`) and everything after it.
        stream.purge().sequence(offset + 1).await.unwrap();
        self.open().await
    }

    async fn other(&self) -> Opened {
        JetStreamHarness::open_stream(&self.other).await
    }
}

impl Drop for JetStreamHarness {
    fn drop(&mut self) {
        let streams = [self.stream.clone(), self.other.clone()];
        // Drop cannot await, and the test's runtime may be shutting down: a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(client) = async_nats::connect(LOCAL_NATS).await {
                    let jetstream = async_nats::jetstream::new(client);
                    for stream in streams {
                        let _ = jetstream.delete_stream(stream).await;
                    }
                }
            });
        })
        .join();
    }
}

/// A record that looks like an impression and is recognisable by `i` (its identity too).
fn record(i: u64) -> Record {
    let payload = format!(r#"{{"key":"user-{i}","split":"checkout_v2","treatment":"on","time":{i}}}"#);
    Record {
        kind: if i % 5 == 4 { RecordKind::SegmentEvent } else { RecordKind::SplitImpression },
        received_at_ms: 1_700_000_000_000 + i as i64,
        payload: Bytes::from(payload),
        id: RecordId(u128::from(i) + 1),
    }
}

fn records(numbers: Range<u64>) -> Vec<Record> {
    numbers.map(record).collect()
}

/// Reads every entry from `from` to the journal's end, as consumer `name`.
async fn read_to_end(journal: &dyn Journal, name: &str, from: u64) -> Vec<Entry> {
    let end = journal.stats().next_offset;
    let mut reader = journal.reader(name, from).unwrap();
    let mut entries = Vec::new();
    while (entries.len() as u64) < end - from {
        let batch = reader.next_batch(7, Duration::from_secs(5)).await.unwrap();
        assert!(!batch.is_empty(), "the reader stopped at offset {} of {end}", from + entries.len() as u64);
        entries.extend(batch);
    }
    entries
}

/// Asserts that `entries` are `expected`, in order, at offsets from `first`, and that their
/// fingerprints are those of what was appended.
fn assert_entries(entries: &[Entry], first: u64, expected: &[Record]) {
    assert_eq!(entries.len(), expected.len(), "number of entries");
    for ((entry, record), offset) in entries.iter().zip(expected).zip(first..) {
        let Entry { offset: found, kind, received_at_ms, payload } = entry;
        assert_eq!(
            (*found, *kind, *received_at_ms, payload),
            (offset, record.kind, record.received_at_ms, &record.payload)
        );
        let appended =
            Entry { offset, kind: record.kind, received_at_ms: record.received_at_ms, payload: record.payload.clone() };
        assert_eq!(entry.fingerprint(), appended.fingerprint());
    }
}

async fn appended_records_read_back_in_order_with_dense_offsets_and_reopen_continues(harness: &dyn Harness) {
    let journal = harness.open().await;
    assert_eq!(journal.stats().next_offset, 0, "a new journal starts at offset 0");
    assert_eq!(journal.append(records(0..3)).await.unwrap().offsets, [0, 1, 2]);
    assert_eq!(journal.append(records(3..4)).await.unwrap().offsets, [3]);
    let empty = journal.append(Vec::new()).await.unwrap();
    assert_eq!((empty.offsets.len(), empty.duplicates), (0, 0), "an empty append takes no offset");
    assert_eq!(journal.append(records(4..10)).await.unwrap().offsets, (4..10).collect::<Vec<_>>());
    assert_eq!(journal.stats().next_offset, 10);
    assert_entries(&read_to_end(&*journal, "loader", 0).await, 0, &records(0..10));
    journal.close().await;

    let journal = harness.open().await;
    assert_eq!(journal.stats().next_offset, 10);
    assert_eq!(journal.append(records(10..12)).await.unwrap().offsets, [10, 11]);
    assert_entries(&read_to_end(&*journal, "loader", 4).await, 4, &records(4..12));
    journal.close().await;
}

async fn concurrent_appenders_get_distinct_offsets_covering_every_offset(harness: &dyn Harness) {
    const TASKS: u64 = 8;
    const APPENDS: u64 = 25;
    let journal = harness.open().await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let journal = Arc::clone(&journal.journal);
            tokio::spawn(async move {
                let mut written = Vec::new();
                for i in 0..APPENDS {
                    let first = (task * APPENDS + i) * 3;
                    let batch = records(first..first + 1 + (task + i) % 3);
                    let offsets = journal.append(batch.clone()).await.unwrap().offsets;
                    assert!(
                        offsets.windows(2).all(|w| w[0] < w[1]),
                        "one append's offsets follow its order: {offsets:?}"
                    );
                    written.extend(offsets.into_iter().zip(batch));
                }
                written
            })
        })
        .collect();
    let mut written = Vec::new();
    for task in tasks {
        written.extend(task.await.unwrap());
    }
    written.sort_by_key(|(offset, _)| *offset);
    let offsets: Vec<u64> = written.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(offsets, (0..written.len() as u64).collect::<Vec<_>>(), "every offset taken once, none skipped");
    let all: Vec<Record> = written.into_iter().map(|(_, record)| record).collect();
    assert_entries(&read_to_end(&*journal, "loader", 0).await, 0, &all);
    journal.close().await;
}

async fn a_reader_starts_at_any_offset_and_several_read_independently(harness: &dyn Harness) {
    let journal = harness.open().await;
    journal.append(records(0..30)).await.unwrap();
    assert_entries(&read_to_end(&*journal, "late", 17).await, 17, &records(17..30));
    assert_entries(&read_to_end(&*journal, "loader", 0).await, 0, &records(0..30));
    assert_entries(&read_to_end(&*journal, "last", 29).await, 29, &records(29..30));
    journal.close().await;
}

async fn a_waiting_reader_wakes_when_records_are_appended_not_after_idle(harness: &dyn Harness) {
    let journal = harness.open().await;
    journal.append(records(0..2)).await.unwrap();
    let mut reader = journal.reader("loader", 2).unwrap();
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        let batch = reader.next_batch(100, Duration::from_secs(60)).await;
        (reader, batch)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    journal.append(records(2..5)).await.unwrap();
    let (mut reader, batch) = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    // Woken by the first record; a stream's reader may not have the others yet.
    let mut entries = batch.unwrap();
    while entries.len() < 3 {
        let batch = reader.next_batch(100, Duration::from_secs(5)).await.unwrap();
        assert!(!batch.is_empty(), "the reader stopped at offset {}", 2 + entries.len());
        entries.extend(batch);
    }
    assert_entries(&entries, 2, &records(2..5));
    assert!(started.elapsed() < Duration::from_secs(10));
    journal.close().await;
}

async fn a_caught_up_reader_returns_an_empty_batch_after_idle(harness: &dyn Harness) {
    let journal = harness.open().await;
    journal.append(records(0..3)).await.unwrap();
    let mut reader = journal.reader("loader", 0).unwrap();
    // A stream's reader hands over what has reached it, which may be less than was appended.
    let mut entries = reader.next_batch(2, Duration::from_secs(5)).await.unwrap();
    assert!((1..=2).contains(&entries.len()), "a batch of at most 2 holds {}", entries.len());
    while entries.len() < 3 {
        let batch = reader.next_batch(100, Duration::from_secs(5)).await.unwrap();
        assert!(!batch.is_empty(), "the reader stopped at offset {}", entries.len());
        entries.extend(batch);
    }
    assert_entries(&entries, 0, &records(0..3));

    let started = Instant::now();
    assert!(reader.next_batch(100, Duration::from_millis(300)).await.unwrap().is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(5), "{waited:?}");
    journal.close().await;
}

async fn a_reader_starting_past_the_end_waits_for_that_offset(harness: &dyn Harness) {
    let journal = harness.open().await;
    let mut reader = journal.reader("loader", 3).unwrap();
    journal.append(records(0..2)).await.unwrap();
    assert!(reader.next_batch(100, Duration::from_millis(100)).await.unwrap().is_empty());
    journal.append(records(2..5)).await.unwrap();
    let mut entries = Vec::new();
    while entries.len() < 2 {
        entries.extend(reader.next_batch(100, Duration::from_secs(5)).await.unwrap());
    }
    assert_entries(&entries, 3, &records(3..5));
    journal.close().await;
}

async fn a_cancelled_batch_is_returned_again_by_the_next_call(harness: &dyn Harness) {
    let journal = harness.open().await;
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
    journal.close().await;
}

async fn a_batch_of_large_records_stops_once_it_holds_max_batch_bytes(harness: &dyn Harness) {
    let journal = harness.open().await;
    let size = journal.max_record_bytes.min(5 << 20);
    let count = 2 * MAX_BATCH_BYTES.div_ceil(size) as u64 + 2;
    let big = |i: u64| Record { payload: Bytes::from(vec![b'a' + (i % 26) as u8; size]), ..record(i) };
    let all: Vec<Record> = (0..count).map(big).collect();
    for chunk in all.chunks(4) {
        journal.append(chunk.to_vec()).await.unwrap();
    }
    let mut reader = journal.reader("loader", 0).unwrap();
    let mut entries = Vec::new();
    let mut batches = 0;
    while (entries.len() as u64) < count {
        let batch = reader.next_batch(1000, Duration::from_secs(5)).await.unwrap();
        let bytes: usize = batch.iter().map(|entry| entry.payload.len()).sum();
        assert!(bytes < MAX_BATCH_BYTES + size, "a batch of {bytes} bytes: past the limit by more than one entry");
        entries.extend(batch);
        batches += 1;
    }
    assert!(batches >= 3, "{count} records of {size} bytes came in {batches} batches");
    assert_entries(&entries, 0, &all);
    journal.close().await;
}

async fn a_record_over_the_limit_is_refused_before_anything_is_written(harness: &dyn Harness) {
    let journal = harness.open().await;
    let max = journal.max_record_bytes;
    let mut batch = records(0..2);
    batch[1].payload = Bytes::from(vec![b'x'; max + 1]);
    let refused = journal.append(batch).await;
    assert!(
        matches!(refused, Err(JournalError::RecordTooLarge { size, max: limit }) if size == max + 1 && limit == max),
        "{refused:?}"
    );
    assert_eq!(journal.stats().next_offset, 0, "nothing of the batch was written");

    let largest = Record { payload: Bytes::from(vec![b'x'; max]), ..record(0) };
    assert_eq!(journal.append(vec![largest.clone()]).await.unwrap().offsets, [0]);
    assert_entries(&read_to_end(&*journal, "loader", 0).await, 0, &[largest]);
    journal.close().await;
}

async fn commits_and_registered_readers_show_in_stats_but_held_places_do_not(harness: &dyn Harness) {
    let journal = harness.open().await;
    journal.append(records(0..10)).await.unwrap();
    journal.hold("loader");
    assert_eq!(journal.stats().consumers, [], "a held place is not an offset, and not lag");
    journal.reader("lake", 0).unwrap();
    assert_eq!(journal.stats().consumers, [("lake".to_owned(), 0)]);
    journal.commit("lake", 5);
    journal.reader("loader", 2).unwrap();
    let stats = journal.stats();
    assert_eq!(stats.consumers, [("lake".to_owned(), 5), ("loader".to_owned(), 2)]);
    assert_eq!((stats.first_offset, stats.next_offset), (0, 10));
    journal.close().await;
}

async fn an_offset_retention_dropped_is_gone_for_a_new_reader(harness: &dyn Harness) {
    let journal = harness.open().await;
    for i in 0..20 {
        journal.append(records(i * 2..i * 2 + 2)).await.unwrap();
    }
    journal.close().await;
    let journal = harness.drop_before(20).await;
    let first = journal.stats().first_offset;
    assert!(first > 0 && first <= 20, "first offset {first}");
    assert_eq!(journal.stats().next_offset, 40);
    let gone = journal.reader("replay", first - 1).err().unwrap();
    assert!(
        matches!(gone, JournalError::OffsetGone { requested, first: oldest } if requested == first - 1 && oldest == first),
        "{gone:?}"
    );
    assert_entries(&read_to_end(&*journal, "replay", first).await, first, &records(first..40));
    journal.close().await;
}

async fn a_batch_appended_again_is_stored_once_and_its_duplicates_counted(harness: &dyn Harness) {
    // Received now, with the ids their payloads give (impressions all): the embedded journal
    // remembers only what arrived within its window, and rebuilds its index from the payloads.
    let now = chrono::Utc::now().timestamp_millis();
    let records = |numbers: Range<u64>| -> Vec<Record> {
        records(numbers)
            .into_iter()
            .map(|r| Record::from_payload(RecordKind::SplitImpression, now, r.payload).expect("an impression"))
            .collect()
    };
    let journal = harness.open().await;
    assert_eq!(journal.append(records(0..5)).await.unwrap().offsets, [0, 1, 2, 3, 4]);
    let overlapping = journal.append(records(3..8)).await.unwrap();
    assert_eq!((overlapping.offsets, overlapping.duplicates), (vec![5, 6, 7], 2));
    let again = journal.append(records(0..5)).await.unwrap();
    assert_eq!((again.offsets.len(), again.duplicates), (0, 5));
    assert_eq!(journal.stats().next_offset, 8);
    assert_entries(&read_to_end(&*journal, "loader", 0).await, 0, &records(0..8));
    journal.close().await;

    let journal = harness.open().await;
    let after_reopen = journal.append(records(6..9)).await.unwrap();
    assert_eq!((after_reopen.offsets, after_reopen.duplicates), (vec![8], 2), "the window outlives a reopen");
    journal.close().await;
}

async fn the_id_is_stable_across_reopening_and_another_journal_has_another(harness: &dyn Harness) {
    let journal = harness.open().await;
    let id = journal.id().to_owned();
    assert!(!id.is_empty());
    journal.append(records(0..3)).await.unwrap();
    journal.close().await;
    let reopened = harness.open().await;
    assert_eq!(reopened.id(), id);
    let other = harness.other().await;
    assert_ne!(other.id(), id);
    reopened.close().await;
    other.close().await;
}

async fn a_closed_journal_refuses_appends(harness: &dyn Harness) {
    let journal = harness.open().await;
    journal.append(records(0..2)).await.unwrap();
    journal.close().await;
    assert!(matches!(journal.append(records(2..3)).await, Err(JournalError::Closed)));
}

/// One test per case for a harness.
macro_rules! cases {
    ($harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                super::$case(&harness).await;
            }
        )*
    };
}

/// The embedded journal.
mod file {
    use super::FileHarness;

    cases!(FileHarness::new();
        appended_records_read_back_in_order_with_dense_offsets_and_reopen_continues,
        concurrent_appenders_get_distinct_offsets_covering_every_offset,
        a_reader_starts_at_any_offset_and_several_read_independently,
        a_waiting_reader_wakes_when_records_are_appended_not_after_idle,
        a_caught_up_reader_returns_an_empty_batch_after_idle,
        a_reader_starting_past_the_end_waits_for_that_offset,
        a_cancelled_batch_is_returned_again_by_the_next_call,
        a_batch_of_large_records_stops_once_it_holds_max_batch_bytes,
        a_record_over_the_limit_is_refused_before_anything_is_written,
        commits_and_registered_readers_show_in_stats_but_held_places_do_not,
        an_offset_retention_dropped_is_gone_for_a_new_reader,
        the_id_is_stable_across_reopening_and_another_journal_has_another,
        a_closed_journal_refuses_appends,
        a_batch_appended_again_is_stored_once_and_its_duplicates_counted,
    );
}

/// The JetStream journal on the local NATS server.
mod jetstream {
    use super::JetStreamHarness;

    cases!(JetStreamHarness::new();
        appended_records_read_back_in_order_with_dense_offsets_and_reopen_continues,
        concurrent_appenders_get_distinct_offsets_covering_every_offset,
        a_reader_starts_at_any_offset_and_several_read_independently,
        a_waiting_reader_wakes_when_records_are_appended_not_after_idle,
        a_caught_up_reader_returns_an_empty_batch_after_idle,
        a_reader_starting_past_the_end_waits_for_that_offset,
        a_cancelled_batch_is_returned_again_by_the_next_call,
        a_batch_of_large_records_stops_once_it_holds_max_batch_bytes,
        a_record_over_the_limit_is_refused_before_anything_is_written,
        commits_and_registered_readers_show_in_stats_but_held_places_do_not,
        an_offset_retention_dropped_is_gone_for_a_new_reader,
        a_batch_appended_again_is_stored_once_and_its_duplicates_counted,
        the_id_is_stable_across_reopening_and_another_journal_has_another,
        a_closed_journal_refuses_appends,
    );
}
