/*!
The journal: sluice's single durability point.

Sources append validated records and answer 2xx only once [`Journal::append`] has returned,
which means the records are on stable storage. Consumers (store loader, later the lake writer
and forwarders) each read from their own offset and report progress with [`Journal::commit`];
segments are deleted only once every registered consumer is past them.

Offsets are dense: the first record ever appended has offset 0 and each record takes the next.

[`Journal`] is the interface; [`file::FileJournal`] is the embedded implementation (segment
files on local disk), [`jetstream::JetStreamJournal`] the clustered one (a NATS JetStream stream
that several sluice nodes share). [`JournalConfig`] is the `[journal]` table of both.
*/

#[cfg(test)]
mod conformance;
pub mod file;
pub mod jetstream;

use async_trait::async_trait;
use bytes::Bytes;

use crate::record::{DecodeError, RecordId, RecordKind};

/// The `[journal]` settings: the embedded journal's (used when `url` is unset), the JetStream
/// journal's (used when it is set), and the dedup window both share.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// The embedded journal starts a new segment once the active one holds this many bytes.
    pub segment_bytes: u64,
    /// Disk budget of the journal (the embedded journal's segments, or the JetStream stream's
    /// `max_bytes` on each server holding a replica); ingest answers 503 above it.
    pub max_bytes: u64,
    /// How long the embedded journal keeps fully consumed segments after their last write.
    pub replay_window_secs: u64,
    /// How long a record's identity is remembered at the entrance: a record sent again within
    /// it is not appended again. The JetStream stream's duplicate window.
    pub dedup_window_secs: u64,
    /// The most ids the embedded journal remembers for dedup (see
    /// [`FileJournalConfig::dedup_max_ids`](file::FileJournalConfig::dedup_max_ids)); the
    /// JetStream server bounds its own.
    pub dedup_max_ids: u64,
    /// NATS servers holding the journal, `nats://HOST:PORT` (or `tls://`), comma-separated, a
    /// user and password in the URL if the servers want them; unset: the embedded journal.
    pub url: Option<crate::nats::NatsUrls>,
    /// The JetStream stream's name (one per cluster of sluice nodes).
    pub stream: String,
    /// Copies of each record the stream keeps on different servers; unset: 3 for a new stream
    /// when the cluster has at least 3 servers, else 1, and an existing stream keeps its own.
    pub replicas: Option<usize>,
    /// Longest an append waits for JetStream's acknowledgements (retries included), in
    /// milliseconds; then the request is answered 503.
    pub publish_timeout_ms: u64,
    /// How long the stream keeps a record, in seconds, whether or not every consumer has read it.
    pub max_age_secs: u64,
    /// A NATS credentials file (JWT and seed, `.creds`).
    pub creds_file: Option<std::path::PathBuf>,
    /// A file holding an NKey seed (`SU…`).
    pub nkey_file: Option<std::path::PathBuf>,
    /// PEM file of the CA that signed the NATS servers' certificates; setting it requires TLS.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate, for servers that verify clients (with `tls_key_file`).
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM key of `tls_cert_file`.
    pub tls_key_file: Option<std::path::PathBuf>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        let file = file::FileJournalConfig::default();
        JournalConfig {
            segment_bytes: file.segment_bytes,
            max_bytes: file.max_bytes,
            replay_window_secs: file.replay_window_secs,
            dedup_window_secs: file.dedup_window_secs,
            dedup_max_ids: file.dedup_max_ids,
            url: None,
            stream: "SLUICE".to_owned(),
            replicas: None,
            publish_timeout_ms: 5_000,
            max_age_secs: 7 * 24 * 3600,
            creds_file: None,
            nkey_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl JournalConfig {
    /// The embedded journal's part.
    pub fn file(&self) -> file::FileJournalConfig {
        file::FileJournalConfig {
            segment_bytes: self.segment_bytes,
            max_bytes: self.max_bytes,
            replay_window_secs: self.replay_window_secs,
            dedup_window_secs: self.dedup_window_secs,
            dedup_max_ids: self.dedup_max_ids,
        }
    }
}

/// One record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What the payload is.
    pub kind: RecordKind,
    /// When sluice received it, epoch milliseconds.
    pub received_at_ms: i64,
    /// The record itself (for impressions: the original JSON object).
    pub payload: Bytes,
    /// Its identity: a record whose id the journal already holds (within its dedup window) is
    /// not appended again.
    pub id: RecordId,
}

impl Record {
    /// A record of `kind` received at `received_at_ms`, its id read from the payload: for
    /// tests and tools; sources give the id they parsed.
    pub fn from_payload(kind: RecordKind, received_at_ms: i64, payload: Bytes) -> Result<Record, DecodeError> {
        let id = RecordId::of_payload(kind, &payload)?;
        Ok(Record { kind, received_at_ms, payload, id })
    }
}

/// What an append did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// The offsets the new records took, in the order they were given; a duplicate takes none.
    pub offsets: Vec<u64>,
    /// How many records the journal already held (sent before, within its dedup window) and did
    /// not append again.
    pub duplicates: usize,
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
    /// For a journal on a remote log (NATS JetStream): the state of the connection to it
    /// (`connected`, `disconnected`, `pending`); `None` for the embedded journal.
    pub connection: Option<String>,
    /// Why the last group's write failed (a full disk, say), until a later group is written.
    /// The failed write was undone, so the journal is not poisoned: every append is tried again.
    pub write_error: Option<String>,
    /// Record ids held for entrance dedup.
    pub dedup_ids: u64,
    /// How far back, in seconds, a record sent again is recognised: the configured
    /// `dedup_window_secs`, less once the index reached its cap and forgot ids still inside the
    /// window; 0 with dedup off.
    pub dedup_window_secs: u64,
    /// Records left out of appends as duplicates since the journal was opened.
    pub duplicates: u64,
    /// For a journal on a remote log: why it cannot take appends now (its stream has answered
    /// nothing for seconds, or was deleted), found without an append; `None` while it can.
    pub unavailable: Option<String>,
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
    /// The remote log (NATS JetStream) did not take or give records in time: unreachable, no
    /// stream leader, or too slow. The message says what failed and what to check. An append
    /// that fails this way may have stored part of its batch; the sender's retry is deduplicated.
    #[error("{0}")]
    Unavailable(String),
    /// A record in the journal cannot be decoded (written by a newer sluice, or by another
    /// program publishing to the stream's subjects).
    #[error("the journal's record at offset {offset} cannot be read: {reason}")]
    Unreadable {
        /// Its offset.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
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
    /// Appends `records` in order, returning their offsets once they are durable; a record whose
    /// [`id`](Record::id) the journal already holds within its dedup window is left out and
    /// counted. The file journal appends a batch atomically; a distributed one may keep part of a
    /// batch it answers with an error, which is why a retry is deduplicated.
    /// Concurrent calls are group-committed: one fsync serves many callers.
    async fn append(&self, records: Vec<Record>) -> Result<Appended, JournalError>;

    /// The journal's identity: a random id written when its storage was created. A consumer
    /// keeps it beside its offset, so that it can tell its own journal from another one (a new
    /// or restored data directory) whose offsets mean different records.
    fn id(&self) -> &str;

    /// Holds consumer `name`'s place before it reads: retention keeps every record from the
    /// oldest one retained now, until the consumer registers its real offset with
    /// [`reader`](Journal::reader). For a consumer whose offset is not known yet (its store is
    /// unreachable); call it for every such consumer before accepting traffic. A held place
    /// does not count as lag, since the consumer may well be further on. Holding the place of a
    /// consumer that read here before (it runs on another node now) forgets its offset.
    fn hold(&self, name: &str);

    /// Registers consumer `name` at `from` (the offset it has committed) and returns a reader
    /// positioned there. Retention keeps everything at or after the lowest registered or held offset.
    fn reader(&self, name: &str, from: u64) -> Result<Box<dyn JournalReader>, JournalError>;

    /// Records that consumer `name` has durably processed every offset below `offset`.
    fn commit(&self, name: &str, offset: u64);

    /// Current figures.
    fn stats(&self) -> JournalStats;

    /// Whether several nodes may share this journal (JetStream's): a destination then keeps its
    /// consumers' offsets per journal id, beside those of any journal it was loaded from before,
    /// rather than one per consumer that a new data directory's journal must adopt.
    fn shared(&self) -> bool {
        false
    }
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
