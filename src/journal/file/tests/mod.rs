/*!
Behaviour tests of [`FileJournal`] against real files in temporary directories, one module per concern.
*/

mod append;
mod dedup;
mod identity;
mod props;
mod reader;
mod recovery;
mod repair;
mod retention;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::{FileJournal, FileJournalConfig};
use crate::journal::{Entry, Journal, Record};
use crate::record::{RecordId, RecordKind};

/// A record that looks like an impression and is recognisable by `i`.
fn record(i: u64) -> Record {
    let payload = format!(r#"{{"key":"user-{i}","split":"checkout_v2","treatment":"on","time":{i}}}"#);
    Record {
        kind: RecordKind::SplitImpression,
        received_at_ms: 1_700_000_000_000 + i as i64,
        payload: Bytes::from(payload),
        id: RecordId(u128::from(i)),
    }
}

fn records(numbers: Range<u64>) -> Vec<Record> {
    numbers.map(record).collect()
}

/// Segments of half a KiB (about eight records), so a few dozen records span several of them.
fn small_segments() -> FileJournalConfig {
    FileJournalConfig { segment_bytes: 512, ..FileJournalConfig::default() }
}

/// Reads every entry from `from` to the durable end, as consumer `name`.
async fn read_to_end(journal: &FileJournal, name: &str, from: u64) -> Vec<Entry> {
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

/// Asserts that `entries` are `expected`, in order, at offsets from `first`.
fn assert_entries(entries: &[Entry], first: u64, expected: &[Record]) {
    assert_eq!(entries.len(), expected.len(), "number of entries");
    for ((entry, record), offset) in entries.iter().zip(expected).zip(first..) {
        let Entry { offset: found, kind, received_at_ms, payload } = entry;
        assert_eq!(
            (*found, *kind, *received_at_ms, payload),
            (offset, record.kind, record.received_at_ms, &record.payload)
        );
    }
}

/// The segment files in `dir`, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

/// Base offsets of the segment files in `dir`, oldest first.
fn bases_on_disk(dir: &Path) -> Vec<u64> {
    let base = |path: &PathBuf| path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    segment_files(dir).iter().map(base).collect()
}

/// How the property tests damage a segment's bytes (shared by recovery's and repair's).
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// XOR every byte of the range with a non-zero byte: bit rot.
    Flip(u8),
    /// Overwrite the range with one byte value, zeros included (a sector the disk gave back blank).
    Fill(u8),
    /// Cut the file at the range's start and append the range's length of this byte.
    CutAndAppend(u8),
}

impl Damage {
    /// Any damage.
    fn any() -> impl proptest::strategy::Strategy<Value = Damage> {
        use proptest::prelude::*;
        prop_oneof![
            (1u8..=255).prop_map(Damage::Flip),
            any::<u8>().prop_map(Damage::Fill),
            any::<u8>().prop_map(Damage::CutAndAppend),
        ]
    }

    /// Damages `len` bytes of `bytes` from `start` (the range is cut at the end of the file).
    fn apply(self, bytes: &mut Vec<u8>, start: usize, len: usize) {
        let end = (start + len).min(bytes.len());
        match self {
            Damage::Flip(mask) => bytes[start..end].iter_mut().for_each(|byte| *byte ^= mask),
            Damage::Fill(value) => bytes[start..end].fill(value),
            Damage::CutAndAppend(value) => {
                bytes.truncate(start);
                bytes.resize(start + len, value);
            }
        }
    }
}
