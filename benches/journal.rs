/*!
What a durable append costs: 1,000-record batches of ~300-byte impressions through
`FileJournal`, from 1 and from 16 concurrent appenders, next to the floor of a plain file
`write_all` + `sync_data` of the same bytes per batch, in the same directory. The journal runs
with entrance dedup on (the default: every record's id checked and remembered) and off
(`dedup_window_secs = 0`); every append gets fresh ids, so nothing is left out as a duplicate.

`open/…` measures what opening costs with 1 million impressions retained, all arrived within
the dedup window: the index is rebuilt from them (dedup on) or not (off).

Run with `cargo bench --bench journal`. Throughput is in records; one iteration is one batch per
appender (16 batches for the 16-appender and 16-batch cases).
*/

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use sluice::journal::file::{FileJournal, FileJournalConfig};
use sluice::journal::{Journal, Record};
use sluice::record::{RecordId, RecordKind};

const BATCH_RECORDS: usize = 1000;
const RECORD_BYTES: usize = 300;
/// The fixed part of a journal entry (length, checksum, kind, received_at), so the raw baseline
/// writes exactly as many bytes as the journal does.
const ENTRY_HEADER_BYTES: usize = 17;

/// Ids given out so far, so that no two appended records share one.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// `batch` with fresh ids, arrived now: the same batch appended again would be left out whole
/// as duplicates, and the bench would measure dedup, not appends.
fn fresh(mut batch: Vec<Record>) -> Vec<Record> {
    let first = NEXT_ID.fetch_add(batch.len() as u64, Ordering::Relaxed);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    for (record, id) in batch.iter_mut().zip(first..) {
        record.id = RecordId(u128::from(id));
        record.received_at_ms = now.as_millis() as i64;
    }
    batch
}

/// Batch `number`: impression-like JSON objects of exactly `RECORD_BYTES` each, whose keys differ
/// from every other batch's (a journal that reopens computes the ids from the payloads).
fn batch(number: usize) -> Vec<Record> {
    (0..BATCH_RECORDS)
        .map(|i| {
            let head = format!(
                r#"{{"key":"user-{number:06}-{i:06}","split":"checkout_v2","environmentName":"Production","treatment":"on","time":1700000000000,"label":"default rule","machineName":"ip-10-0-0-1","sdk":"go","sdkVersion":"6.1.0","properties":""#
            );
            let padding = "x".repeat(RECORD_BYTES - head.len() - 2);
            let payload = Bytes::from(format!("{head}{padding}\"}}"));
            Record { kind: RecordKind::SplitImpression, received_at_ms: 1_700_000_000_000, payload, id: RecordId(i as u128) }
        })
        .collect()
}

/// `appenders` tasks each append one batch per iteration, all at once, with entrance dedup on
/// or off.
fn file_journal(group: &mut BenchmarkGroup<'_, WallTime>, dir: &Path, appenders: usize, dedup: bool) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    // Replay window 0 and a consumer that commits everything after each sample: retention keeps
    // the disk use of a long run to a few segments.
    let mut config = FileJournalConfig { replay_window_secs: 0, ..FileJournalConfig::default() };
    let name = if dedup { "file_journal" } else { "file_journal_no_dedup" };
    if !dedup {
        config.dedup_window_secs = 0;
    }
    let journal = Arc::new(FileJournal::open(&dir.join(format!("{name}-{appenders}")), config).expect("open journal"));
    journal.reader("bench", 0).expect("register consumer");
    let batch = batch(0);
    let mut batches = 0;
    group.throughput(Throughput::Elements((BATCH_RECORDS * appenders) as u64));
    group.bench_function(format!("{name}/{appenders}_appenders"), |bencher| {
        bencher.iter_custom(|iterations| {
            batches += iterations * appenders as u64;
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iterations {
                    let appends: Vec<_> = (0..appenders)
                        .map(|_| {
                            let (journal, batch) = (Arc::clone(&journal), fresh(batch.clone()));
                            tokio::spawn(async move {
                                let appended = journal.append(batch).await.expect("append");
                                assert_eq!(appended.duplicates, 0, "fresh ids are never duplicates");
                            })
                        })
                        .collect();
                    for append in appends {
                        append.await.expect("append task");
                    }
                }
                let elapsed = started.elapsed();
                journal.commit("bench", journal.stats().next_offset);
                elapsed
            })
        });
    });
    // Nothing ran when a filter on the command line left this case out.
    if batches > 0 {
        eprintln!(
            "{name}/{appenders}_appenders: {:.1} batches per fsync",
            batches as f64 / journal.sync_count() as f64
        );
    }
    runtime.block_on(journal.close());
}

/// The floor: `batches` times `write_all` + `sync_data` of one batch's bytes, one after the other.
fn raw_fsync(group: &mut BenchmarkGroup<'_, WallTime>, dir: &Path, batches: usize) {
    let path = dir.join(format!("raw-{batches}.bin"));
    let mut file = OpenOptions::new().create(true).append(true).open(&path).expect("open raw file");
    let mut bytes = Vec::new();
    for record in batch(0) {
        bytes.extend_from_slice(&[0; ENTRY_HEADER_BYTES]);
        bytes.extend_from_slice(&record.payload);
    }
    group.throughput(Throughput::Elements((BATCH_RECORDS * batches) as u64));
    group.bench_function(format!("raw_fsync/{batches}_batches"), |bencher| {
        bencher.iter_custom(|iterations| {
            let started = Instant::now();
            for _ in 0..iterations * batches as u64 {
                file.write_all(&bytes).expect("write");
                file.sync_data().expect("fdatasync");
            }
            let elapsed = started.elapsed();
            // Like retention for the journal: keep the file from growing across samples.
            file.set_len(0).expect("truncate");
            elapsed
        });
    });
}

/// Impressions retained for the `open` benchmark.
const RETAINED: usize = 1_000_000;

/// Opening (and closing) a journal holding `RETAINED` impressions that arrived just now.
fn open(criterion: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("journal");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        let journal = FileJournal::open(&path, FileJournalConfig::default()).expect("open journal");
        for number in 0..RETAINED / BATCH_RECORDS {
            // The ids sources give: the ones reopening computes from the payloads.
            let records = fresh(batch(number))
                .into_iter()
                .map(|record| Record::from_payload(record.kind, record.received_at_ms, record.payload))
                .collect::<Result<Vec<_>, _>>()
                .expect("impressions");
            journal.append(records).await.expect("append");
        }
        journal.close().await;
    });
    let mut group = criterion.benchmark_group("open_1m_retained");
    group.throughput(Throughput::Elements(RETAINED as u64));
    for (name, dedup_window_secs) in [("dedup_rebuilt", 24 * 3600), ("no_dedup", 0)] {
        let config = FileJournalConfig { dedup_window_secs, ..FileJournalConfig::default() };
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iterations| {
                let mut opening = Duration::ZERO;
                for _ in 0..iterations {
                    let started = Instant::now();
                    let journal = FileJournal::open(&path, config.clone()).expect("reopen journal");
                    opening += started.elapsed();
                    assert_eq!(journal.stats().dedup_ids, if dedup_window_secs > 0 { RETAINED as u64 } else { 0 });
                    runtime.block_on(journal.close());
                }
                opening
            })
        });
    }
    group.finish();
}

fn appends(criterion: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut group = criterion.benchmark_group("append_1000_records");
    for appenders in [1, 16] {
        raw_fsync(&mut group, dir.path(), appenders);
        file_journal(&mut group, dir.path(), appenders, true);
        file_journal(&mut group, dir.path(), appenders, false);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = appends, open
}
criterion_main!(benches);
