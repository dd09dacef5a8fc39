/*!
What a durable append costs: 1,000-record batches of ~300-byte impressions through
`FileJournal`, from 1 and from 16 concurrent appenders, next to the floor of a plain file
`write_all` + `sync_data` of the same bytes per batch, in the same directory.

Run with `cargo bench --bench journal`. Throughput is in records; one iteration is one batch per
appender (16 batches for the 16-appender and 16-batch cases).
*/

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use sluice::journal::file::{FileJournal, FileJournalConfig};
use sluice::journal::{Journal, Record};
use sluice::record::RecordKind;

const BATCH_RECORDS: usize = 1000;
const RECORD_BYTES: usize = 300;
/// The fixed part of a journal entry (length, checksum, kind, received_at), so the raw baseline
/// writes exactly as many bytes as the journal does.
const ENTRY_HEADER_BYTES: usize = 17;

/// A batch of impression-like JSON objects of exactly `RECORD_BYTES` each.
fn batch() -> Vec<Record> {
    (0..BATCH_RECORDS)
        .map(|i| {
            let head = format!(
                r#"{{"key":"user-{i:06}","split":"checkout_v2","environmentName":"Production","treatment":"on","time":1700000000000,"label":"default rule","machineName":"ip-10-0-0-1","sdk":"go","sdkVersion":"6.1.0","properties":""#
            );
            let padding = "x".repeat(RECORD_BYTES - head.len() - 2);
            let payload = Bytes::from(format!("{head}{padding}\"}}"));
            Record { kind: RecordKind::SplitImpression, received_at_ms: 1_700_000_000_000, payload }
        })
        .collect()
}

/// `appenders` tasks each append one batch per iteration, all at once.
fn file_journal(group: &mut BenchmarkGroup<'_, WallTime>, dir: &Path, appenders: usize) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    // Replay window 0 and a consumer that commits everything after each sample: retention keeps
    // the disk use of a long run to a few segments.
    let config = FileJournalConfig { replay_window_secs: 0, ..FileJournalConfig::default() };
    let journal = Arc::new(FileJournal::open(&dir.join(format!("journal-{appenders}")), config).expect("open journal"));
    journal.reader("bench", 0).expect("register consumer");
    let batch = batch();
    let mut batches = 0;
    group.throughput(Throughput::Elements((BATCH_RECORDS * appenders) as u64));
    group.bench_function(format!("file_journal/{appenders}_appenders"), |bencher| {
        bencher.iter_custom(|iterations| {
            batches += iterations * appenders as u64;
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iterations {
                    let appends: Vec<_> = (0..appenders)
                        .map(|_| {
                            let (journal, batch) = (Arc::clone(&journal), batch.clone());
                            tokio::spawn(async move { journal.append(batch).await.expect("append") })
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
    eprintln!(
        "file_journal/{appenders}_appenders: {:.1} batches per fsync",
        batches as f64 / journal.sync_count() as f64
    );
    runtime.block_on(journal.close());
}

/// The floor: `batches` times `write_all` + `sync_data` of one batch's bytes, one after the other.
fn raw_fsync(group: &mut BenchmarkGroup<'_, WallTime>, dir: &Path, batches: usize) {
    let path = dir.join(format!("raw-{batches}.bin"));
    let mut file = OpenOptions::new().create(true).append(true).open(&path).expect("open raw file");
    let mut bytes = Vec::new();
    for record in batch() {
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

fn appends(criterion: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut group = criterion.benchmark_group("append_1000_records");
    for appenders in [1, 16] {
        raw_fsync(&mut group, dir.path(), appenders);
        file_journal(&mut group, dir.path(), appenders);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = appends
}
criterion_main!(benches);
