/*!
The journal: sluice's single durability point.

Sources append validated records and answer 2xx only once [`Journal::append`] has returned,
which means the records are on stable storage. Consumers (store loader, later the lake writer
and forwarders) each read from their own offset and report progress with [`Journal::commit`];
segments are deleted only once every registered consumer is past them.

Offsets are dense: the first record ever appended has offset 0 and each record takes the next.

[`Journal`] is the interface; [`file::FileJournal`] is the embedded implementation (segment
files on local disk). A clustered deployment plugs in a distributed log behind the same trait.
*/

pub mod file;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

use crate::record::RecordKind;

/// One record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What the payload is.
    pub kind: RecordKind,
    /// When sluice received it, epoch milliseconds.
    pub received_at_ms: i64,
    /// The record itself (for impressions: the original JSON object).
    pub payload: Bytes,
}

/// A record read back, with its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the journal.
    pub offset: u64,
    /// What the payload is.
    pub kind: RecordKind,
    /// When sluice received it, epoch milliseconds.
    pub received_at_ms: i64,
    /// The record itself.
    pub payload: Bytes,
}

impl Entry {
    /// A checksum of what the entry holds (kind, arrival time, payload). A consumer keeps the
    /// last one it processed beside its offset, to check on restart that the journal still holds
    /// that record there: a journal restored from an older copy keeps its identity, and records
    /// accepted since may hold offsets the consumer already processed.
    pub fn fingerprint(&self) -> u32 {
        let head = [&[self.kind.tag()][..], &self.received_at_ms.to_le_bytes()[..]].concat();
        crc32c::crc32c_append(crc32c::crc32c(&head), &self.payload)
    }
}

/// A point-in-time view of the journal for health checks, metrics and backpressure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Oldest offset still retained.
    pub first_offset: u64,
    /// One past the newest durable offset.
    pub next_offset: u64,
    /// Bytes on disk (all segments).
    pub disk_bytes: u64,
    /// Number of segment files.
    pub segments: usize,
    /// Each registered consumer and the offset it has committed (everything below is processed);
    /// consumers only holding their place ([`Journal::hold`]) are not listed.
    pub consumers: Vec<(String, u64)>,
    /// Set once an fsync failed (or a failed write could not be undone): the journal refuses
    /// appends until restarted.
    pub poisoned: bool,
    /// Why the last group's write failed (a full disk, say), until a later group is written.
    /// The failed write was undone, so the journal is not poisoned: every append is tried again.
    pub write_error: Option<String>,
}

/// What can go wrong in the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An I/O operation on a journal file failed.
    #[error("journal I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A segment is damaged beyond a torn tail; sluice will not guess which records to drop.
    #[error(
        "journal segment {path} is corrupt at byte {position}: {reason}. Only a torn tail of the newest segment is repaired automatically; stop sluice and run `sluice journal repair` (with the same --data-dir): it moves the damaged file to the journal's quarantine folder, keeps every intact record it can place, and records which offsets were lost so that consumers continue past them"
    )]
    Corrupt {
        /// The damaged segment.
        path: std::path::PathBuf,
        /// Byte position of the first bad entry.
        position: u64,
        /// What was found.
        reason: String,
    },
    /// Writing the batch failed (a full disk, say) and the journal cut what it had written back
    /// off: nothing of the batch is in the journal, and a later append is tried again.
    #[error("{}", unwritten_message(path, source))]
    Unwritten {
        /// The segment file (or, when starting a new segment failed, that file).
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An earlier fsync failed (or a failed write could not be undone), so nothing after it can
    /// be trusted to be durable.
    #[error("the journal stopped accepting writes after an earlier I/O failure ({0}); fix the disk and restart sluice")]
    Poisoned(String),
    /// A record is larger than one journal entry may hold.
    #[error("a record of {size} bytes is over the journal's limit of {max} bytes per record")]
    RecordTooLarge {
        /// The record's payload size.
        size: usize,
        /// The largest payload accepted.
        max: usize,
    },
    /// A consumer asked for an offset that retention already deleted.
    #[error("offset {requested} is no longer in the journal (oldest retained is {first})")]
    OffsetGone {
        /// The offset asked for.
        requested: u64,
        /// The oldest retained offset.
        first: u64,
    },
    /// The journal is shutting down.
    #[error("the journal is closed")]
    Closed,
}

/// What [`JournalError::Unwritten`] says: whether the disk is full matters to the operator,
/// who must free space (or raise a quota) before retries can succeed.
fn unwritten_message(path: &std::path::Path, source: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let path = path.display();
    if matches!(source.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) {
        format!(
            "the disk holding the journal is full ({source}, writing {path}); nothing of this batch was kept, \
             and appends succeed again once space is freed"
        )
    } else {
        format!("could not write to the journal ({source}, writing {path}); nothing of this batch was kept")
    }
}

/// The durable, ordered log that sits between sources and consumers.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Appends `records` atomically and in order, returning their offsets once they are durable.
    /// Concurrent calls are group-committed: one fsync serves many callers.
    async fn append(&self, records: Vec<Record>) -> Result<Range<u64>, JournalError>;

    /// The journal's identity: a random id written when its storage was created. A consumer
    /// keeps it beside its offset, so that it can tell its own journal from another one (a new
    /// or restored data directory) whose offsets mean different records.
    fn id(&self) -> &str;

    /// Holds consumer `name`'s place before it reads: retention keeps every record from the
    /// oldest one retained now, until the consumer registers its real offset with
    /// [`reader`](Journal::reader). For a consumer whose offset is not known yet (its store is
    /// unreachable); call it for every such consumer before accepting traffic. A held place
    /// does not count as lag, since the consumer may well be further on.
    fn hold(&self, name: &str);

    /// Registers consumer `name` at `from` (the offset it has committed) and returns a reader
    /// positioned there. Retention keeps everything at or after the lowest registered or held offset.
    fn reader(&self, name: &str, from: u64) -> Result<Box<dyn JournalReader>, JournalError>;

    /// Records that consumer `name` has durably processed every offset below `offset`.
    fn commit(&self, name: &str, offset: u64);

    /// Current figures.
    fn stats(&self) -> JournalStats;
}

/// Payload bytes one [`JournalReader::next_batch`] returns at most (plus the entry that crosses
/// the line): a count alone would let large records (up to 16 MiB each) make a consumer's batch
/// hold gigabytes.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// A consumer's sequential view of the journal.
#[async_trait]
pub trait JournalReader: Send {
    /// Returns the next entries in offset order, at most `max` of them and, past the first, at
    /// most [`MAX_BATCH_BYTES`] of payload. Waits while there are none; returns an empty batch
    /// after `idle` has passed with nothing new, so a consumer can flush or stop.
    async fn next_batch(&mut self, max: usize, idle: std::time::Duration) -> Result<Vec<Entry>, JournalError>;
}
