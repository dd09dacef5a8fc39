/*!
The embedded journal: segment files in one local directory, written by one thread with group commit.

# Durability
[`FileJournal::append`] returns only after its records were written and `fdatasync`ed. Appends
that arrive while the writer is busy are committed together: one `write` and one `fdatasync`
serve every request queued at that moment. A group that fails is answered with an error as a
whole, and nothing of it is ever acknowledged; what happens next depends on what failed:
- the *write* (a full disk, `ENOSPC`, or a quota, `EDQUOT`, often after part of the group was
  written): the writer truncates the active segment back to its length before the group and
  fsyncs it. The earlier groups were synced and the kernel reported no loss, so the file is then
  exactly what was acknowledged: the group gets [`JournalError::Unwritten`] (which says when the
  disk is full), [`JournalStats::write_error`](crate::journal::JournalStats::write_error) holds
  the reason until a group is written again, and every later append is tried again, so ingest
  recovers by itself once space is freed. Starting a new segment that fails the same way
  removes the half-created file, so the next attempt can create it. If the truncation (or its
  fsync, or removing the half-created segment) fails too, the journal is poisoned as below;
- the *fsync*: the journal is poisoned: that group and every later append fail with
  [`JournalError::Poisoned`] until a restart re-reads the disk, because after a failed fsync the
  kernel may have dropped the dirty pages and marked them clean, and a later fsync can succeed
  without writing them (fsyncgate), so nothing written since the last good fsync can be
  trusted. The writer still cuts the group off the segment, but only on a best-effort basis: a
  successful truncation proves nothing about the disk either, so records of such a group may
  be found after the restart. They were never acknowledged, so the sender retried them
  (at-least-once).

# On-disk format
The directory holds segment files named after the offset of their first entry, written as
20 zero-padded decimal digits: `00000000000000001024.seg`. Other files are ignored, except
`lost-offsets.txt` and the repair's temporary files (see below); `quarantine/` holds damaged
segment files moved aside by repair. A segment starts with a 16-byte header:

| bytes   | field                                                      |
|---------|------------------------------------------------------------|
| `0..8`  | magic `SLUICEJ1` (ASCII)                                   |
| `8..16` | base offset, `u64` little-endian (equals the file name)    |

then entries back to back, with no padding. Entry `i` of a segment has offset `base + i`;
offsets are not stored. Each entry is:

| bytes        | field                                                                 |
|--------------|-----------------------------------------------------------------------|
| `0..4`       | payload length `n`, `u32` little-endian, at most [`MAX_RECORD_BYTES`] |
| `4..8`       | CRC-32C (Castagnoli), `u32` little-endian, of bytes `8..17 + n`       |
| `8`          | record kind tag ([`RecordKind::tag`](crate::record::RecordKind::tag)) |
| `9..17`      | `received_at_ms`, `i64` little-endian                                 |
| `17..17 + n` | payload                                                               |

An entry is *broken* when fewer than 17 header bytes or fewer than `n` payload bytes remain,
when `n` is over the limit, or when the checksum does not match. A well-formed entry with an
unknown kind tag is not broken (a newer sluice may have written it) but cannot be read.

# Recovery (RocksDB's `kTolerateCorruptedTailRecords`)
A crash can only tear the end of the newest segment, so on open:
- the newest segment is read in full; from its first broken entry on, the file is truncated
  (with a warning saying how many bytes were dropped and where), but only if nothing intact
  follows: the bytes after the break are scanned for an entry whose length is allowed, whose
  kind is known and whose checksum matches, and finding one means the disk damaged the middle
  of the file (a crash only tears the end), so opening fails with [`JournalError::Corrupt`]
  rather than drop acknowledged records. (A crash that wrote the pages of the last group out
  of order can leave a hole before intact entries too; those were never acknowledged, but
  nothing tells the two apart, so that refuses as well and repair handles it.) A newest
  segment shorter than its header holds no entry and gets its header rewritten;
- older segments only have their header checked for recovery: reading them whole would make
  start-up proportional to the retained data. A broken entry in an older segment is found by
  the reader that reaches it, which fails with [`JournalError::Corrupt`]; so does a reader that
  reaches the end of a segment before the offset where the next one begins (a missing segment).
  The entrance dedup index (below) is the one exception: it reads the segments last written
  within the dedup window, so start-up is proportional to the records of that window (not to
  all retained data), and stops at a broken entry with a warning, leaving it to the reader;
- nothing is ever repaired outside the newest segment's tail. The `Corrupt` error names
  `sluice journal repair`, which does the rest, offline.

# Damage and repair (`sluice journal repair`, see [`repair`])
Repair reads every segment whole. Where an entry is broken it resyncs: it looks, byte by byte,
for the next position where an entry of a known kind with an allowed length and a matching
checksum is followed by another such entry or by the end of the file (two chance checksum
matches in a row are needed to invent a record). The intact runs of entries found that way keep
their bytes, but offsets are implicit, so a run is kept only where its offsets are certain:
- the run from the start of the segment starts at its base;
- a run after a gap where exactly one entry is broken (its own length field points at the run)
  starts one past the run before it;
- in a sealed segment, the run that reaches the end of the file ends where the next segment
  begins, and runs before it across one-entry gaps follow from that;
- any other run (after a gap whose damaged length fields make the number of lost entries
  unknowable) is not kept: guessing its offsets could give two records one offset, or a
  consumer one record twice. Its bytes stay in quarantine.

The damaged file is moved, whole, to `quarantine/` inside the journal directory (nothing is
deleted); each kept run is written back as a segment file named after its first offset, the
first one under the original name (possibly holding no entry, so the base stays known). The
offsets in between are recorded as lost. In the newest segment nothing says how many entries
followed the last kept one: if anything intact follows, the lost range is the most there can
have been (each entry takes at least 17 bytes), and appends continue after it in a new, empty
segment, so no offset a consumer has seen is ever reused. A broken tail with nothing intact
after it is a torn write and is dropped without recording a loss, as opening does. A sealed
segment that ends before the next one starts (a file removed by hand) has that gap recorded.
Repair refuses, changing nothing, when kept runs would not fit between their neighbours.

Repair writes the replacements under the name `<segment name>.repair`, syncs them, records the
lost ranges, then moves the damaged file (the commit point) and renames the replacements, the
one taking the original name last. Run again after an interruption, it deletes the temporary
files if the damaged file is still there and renames them otherwise; opening refuses while
they exist.

# Lost offsets (`lost-offsets.txt`)
A text file in the journal directory, written by repair (replaced atomically, never edited in
place). Lines starting with `#` and blank lines are ignored; every other line is
`FIRST..END NOTE`: the offsets from `FIRST` up to `END` (excluded), in decimal, were lost, and
the free text after the first space says what happened and where the damaged bytes went.
Ranges may repeat or overlap. A reader that reaches a recorded offset skips to the end of its
range and does not return those entries; it logs an error naming the range and adds the number
of offsets skipped to the `sluice_journal_lost_records_total` counter, every time (after a
restart, a consumer that had not committed past a range skips it again, loudly again).

# Rotation and retention
Between groups, once the active segment holds at least
[`segment_bytes`](FileJournalConfig::segment_bytes), the writer starts a new one. A segment
other than the active one is deleted once every registered consumer has committed past its
last entry, and either it was last written more than
[`replay_window_secs`](FileJournalConfig::replay_window_secs) ago or the journal is over half
its [`max_bytes`](FileJournalConfig::max_bytes). With no consumer registered nothing is deleted, and no segment holding a record some
registered consumer has not committed is ever deleted, however full the disk: ingest answers 503
at [`max_bytes`](FileJournalConfig::max_bytes) instead.
Consumers are registered in memory only, by [`Journal::reader`], or held at the oldest retained
offset by [`Journal::hold`] while their offset is unknown; after a restart, register or hold
every consumer before accepting traffic, or retention may delete what a late one still needs.

# Entrance dedup
Every [`Record`] carries an id; an append leaves out a record whose id was appended within
[`dedup_window_secs`](FileJournalConfig::dedup_window_secs) (by the records' `received_at_ms`),
or that an earlier record of the same group has. Such a record takes no offset and is counted in
[`Appended::duplicates`]. The ids are held in memory by the writer thread, at most
[`dedup_max_ids`](FileJournalConfig::dedup_max_ids) of them (the oldest are forgotten first),
kept only once their group is durable, and gathered again from the segments written within the
window when the journal opens. Ids are not stored in the segments: they are computed again from
the payloads. How it works and what it costs is in the `dedup` module.

# Identity
The file `journal.id` holds a random id (32 hex digits), written and fsynced with its directory
when the journal is created (or first opened by a sluice that has identities). Consumers store
it beside their offsets, so that an offset is never applied to another journal's records.
*/

mod dedup;
mod format;
mod lost;
mod reader;
mod recovery;
mod repair;
mod retention;
mod segment;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};

use super::{Appended, Journal, JournalError, JournalReader, JournalStats, Record};
pub use repair::{Interrupted, LOST_OFFSETS_FILE, QUARANTINE_DIR, RepairError, RepairReport, Repaired, repair};
use segment::Segment;
use writer::{AppendRequest, Command};

/// The largest payload one record may have (16 MiB); larger appends are refused.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// The file holding the journal's identity.
const ID_FILE: &str = "journal.id";

/// Append requests that may wait for the writer before `append` itself waits (backpressure).
const COMMAND_QUEUE: usize = 1024;

/// Settings of the embedded journal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileJournalConfig {
    /// Start a new segment once the active one holds at least this many bytes. A segment can
    /// exceed it by one group commit, since a group is never split across segments.
    pub segment_bytes: u64,
    /// Disk budget for the whole journal, for backpressure against `stats().disk_bytes`. Above
    /// half of it, fully consumed segments are deleted without waiting for the replay window.
    pub max_bytes: u64,
    /// How long fully consumed segments are kept after their last write, so an operator can
    /// replay recent records.
    pub replay_window_secs: u64,
    /// How long a record's [`id`](crate::journal::Record::id) is remembered at the entrance: a
    /// record sent again within it (a client's retry) is not appended again. Longer than Split's
    /// and Segment's retries. The JetStream journal sets its stream's duplicate window to it.
    /// 0 turns entrance dedup off.
    pub dedup_window_secs: u64,
    /// The most ids the file journal remembers for dedup; past it the oldest are forgotten
    /// first, shrinking the window really covered. The default, 1.8 million ids, takes about
    /// 105 MB (58 bytes per id: the sizing is in the `dedup` module's docs) and covers the
    /// whole day at 20 records a second on average, half an hour at 1,000 a second.
    pub dedup_max_ids: u64,
}

impl Default for FileJournalConfig {
    fn default() -> Self {
        FileJournalConfig {
            segment_bytes: 64 << 20,
            max_bytes: 8 << 30,
            replay_window_secs: 3600,
            dedup_window_secs: 24 * 3600,
            dedup_max_ids: 1_800_000,
        }
    }
}

/// The embedded [`Journal`]: segment files in one directory, written by a dedicated thread.
pub struct FileJournal {
    id: String,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
}

/// State shared by the handle, the writer thread and the readers.
struct Shared {
    dir: PathBuf,
    config: FileJournalConfig,
    /// Retained segments, oldest first; the last one is the active segment. Only the writer
    /// thread adds or removes entries.
    segments: Mutex<VecDeque<Segment>>,
    /// Registered (or held) consumers and their places.
    consumers: Mutex<BTreeMap<String, Place>>,
    /// One past the newest durable offset; readers wait on it.
    durable: watch::Sender<u64>,
    /// True until the writer thread has ended.
    writer_running: watch::Sender<bool>,
    /// Why the journal stopped accepting appends, once an fsync failed or a failed write could
    /// not be undone.
    poisoned: OnceLock<String>,
    /// Why the last group's write failed, if it did (it was undone; appends go on being tried).
    write_error: Mutex<Option<String>>,
    /// Data fsyncs done for appends since open.
    syncs: AtomicU64,
    /// Ids the dedup index holds, as of the last group.
    dedup_ids: AtomicU64,
    /// Milliseconds back that dedup covers, as of the last group (less than the window once the
    /// index was full).
    dedup_covered_ms: AtomicU64,
    /// Records left out as duplicates since open.
    duplicates: AtomicU64,
    /// A retention pass is already queued for the writer, so commits need not queue another.
    retention_queued: AtomicBool,
    /// Makes the writer's next fsync fail, to test poisoning.
    #[cfg(test)]
    fail_next_sync: AtomicBool,
    /// Makes the writer's next group write half of its bytes, then fail as a full disk does.
    #[cfg(test)]
    fail_next_write: AtomicBool,
    /// Makes the writer's next attempt to cut a failed write off the segment fail.
    #[cfg(test)]
    fail_next_truncate: AtomicBool,
    /// Makes the writer's next new segment fail half-way through its header, as a full disk does.
    #[cfg(test)]
    fail_next_rotation: AtomicBool,
}

/// Where a consumer is in the journal.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// Everything below it is processed (or, held, may be: retention keeps it all).
    offset: u64,
    /// False while the place is only held, the consumer's real offset not yet known.
    known: bool,
}

impl FileJournal {
    /// Opens (creating if needed) the journal in `dir`, repairs a torn tail and starts the writer thread.
    pub fn open(dir: &Path, config: FileJournalConfig) -> Result<FileJournal, JournalError> {
        let created = !dir.exists();
        crate::files::create_dir_all(dir).map_err(io_error(dir))?;
        if created && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The new directory's entry must be durable before anything in it is acknowledged.
            sync_dir(parent)?;
        }
        let id = read_or_create_id(dir)?;
        let recovered = recovery::recover(dir)?;
        let next_offset = recovered.next_offset;
        let active = recovered.active;
        let (file, path, bytes) = (active.open_for_append()?, active.path.clone(), active.bytes);
        let mut segments = recovered.sealed;
        segments.push_back(active);
        let mut index = dedup::DedupIndex::new(config.dedup_window_secs, config.dedup_max_ids);
        dedup::rebuild(&mut index, &segments);

        let (commands, queue) = mpsc::channel(COMMAND_QUEUE);
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            config,
            segments: Mutex::new(segments),
            consumers: Mutex::new(BTreeMap::new()),
            durable: watch::Sender::new(next_offset),
            writer_running: watch::Sender::new(true),
            poisoned: OnceLock::new(),
            write_error: Mutex::new(None),
            syncs: AtomicU64::new(0),
            dedup_ids: AtomicU64::new(0),
            dedup_covered_ms: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            retention_queued: AtomicBool::new(false),
            #[cfg(test)]
            fail_next_sync: AtomicBool::new(false),
            #[cfg(test)]
            fail_next_write: AtomicBool::new(false),
            #[cfg(test)]
            fail_next_truncate: AtomicBool::new(false),
            #[cfg(test)]
            fail_next_rotation: AtomicBool::new(false),
        });
        shared.publish_dedup(&index, dedup::now_ms());
        writer::Writer::new(Arc::clone(&shared), queue, (file, path, bytes), next_offset, index).spawn()?;
        Ok(FileJournal { id, shared, commands })
    }

    /// Stops accepting appends, completes every append already queued, and waits for the writer thread to end.
    ///
    /// Dropping the journal also ends the writer once the queue is drained, but without waiting.
    pub async fn close(&self) {
        // A refused send means the writer is already shutting down, which is what we ask for.
        let _ = self.commands.send(Command::Close).await;
        // `Shared` owns the sender, so this can only end by the writer reporting it stopped.
        let _ = self.shared.writer_running.subscribe().wait_for(|running| !running).await;
    }

    /// Number of data fsyncs done for appends since open: one per group commit, so far fewer than appends under load.
    pub fn sync_count(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Journal for FileJournal {
    async fn append(&self, records: Vec<Record>) -> Result<Appended, JournalError> {
        if let Some(record) = records.iter().find(|record| record.payload.len() > MAX_RECORD_BYTES) {
            return Err(JournalError::RecordTooLarge { size: record.payload.len(), max: MAX_RECORD_BYTES });
        }
        let (reply, answer) = oneshot::channel();
        let request = Command::Append(AppendRequest { records, reply });
        self.commands.send(request).await.map_err(|_| self.shared.stopped())?;
        let stored = answer.await.map_err(|_| self.shared.stopped())??;
        Ok(Appended { offsets: stored.offsets.collect(), duplicates: stored.duplicates })
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn hold(&self, name: &str) {
        let mut consumers = lock(&self.shared.consumers);
        let first = self.shared.first_offset();
        consumers.insert(name.to_owned(), Place { offset: first, known: false });
    }

    fn reader(&self, name: &str, from: u64) -> Result<Box<dyn JournalReader>, JournalError> {
        let first = self.shared.first_offset();
        if from < first {
            return Err(JournalError::OffsetGone { requested: from, first });
        }
        lock(&self.shared.consumers).insert(name.to_owned(), Place { offset: from, known: true });
        Ok(Box::new(reader::FileReader::new(Arc::clone(&self.shared), from)))
    }

    fn commit(&self, name: &str, offset: u64) {
        lock(&self.shared.consumers).insert(name.to_owned(), Place { offset, known: true });
        // Wake the writer for a retention pass even when no append is coming. If the queue is
        // full the writer is busy with appends and runs retention after each group anyway.
        if !self.shared.retention_queued.swap(true, Ordering::AcqRel)
            && self.commands.try_send(Command::Retain).is_err()
        {
            self.shared.retention_queued.store(false, Ordering::Release);
        }
    }

    fn stats(&self) -> JournalStats {
        let consumers = lock(&self.shared.consumers)
            .iter()
            .filter(|(_, place)| place.known)
            .map(|(name, place)| (name.clone(), place.offset))
            .collect();
        let write_error = lock(&self.shared.write_error).clone();
        let segments = lock(&self.shared.segments);
        JournalStats {
            first_offset: segments.front().map_or(0, |segment| segment.base),
            next_offset: *self.shared.durable.borrow(),
            disk_bytes: segments.iter().map(|segment| segment.bytes).sum(),
            segments: segments.len(),
            consumers,
            poisoned: self.shared.poisoned.get().is_some(),
            connection: None,
            write_error,
            dedup_ids: self.shared.dedup_ids.load(Ordering::Relaxed),
            dedup_window_secs: self.shared.dedup_covered_ms.load(Ordering::Relaxed) / 1000,
            duplicates: self.shared.duplicates.load(Ordering::Relaxed),
            unavailable: None,
        }
    }
}

impl Shared {
    /// The base offset of the oldest retained segment.
    fn first_offset(&self) -> u64 {
        lock(&self.segments).front().map_or(0, |segment| segment.base)
    }

    /// Publishes the dedup index's figures at `now_ms` for [`Journal::stats`].
    fn publish_dedup(&self, index: &dedup::DedupIndex, now_ms: i64) {
        self.dedup_ids.store(index.len() as u64, Ordering::Relaxed);
        self.dedup_covered_ms.store(u64::try_from(index.covered_ms(now_ms)).unwrap_or(0), Ordering::Relaxed);
    }

    /// The error for an append that the writer thread will not answer.
    fn stopped(&self) -> JournalError {
        match self.poisoned.get() {
            Some(reason) => JournalError::Poisoned(reason.clone()),
            None => JournalError::Closed,
        }
    }
}

/// Locks one of the journal's mutexes. Their critical sections only copy plain values, so a
/// panic inside one cannot leave the data half-updated: a poisoned mutex is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads the journal's id from `dir`, creating it (durably) if the journal has none yet.
fn read_or_create_id(dir: &Path) -> Result<String, JournalError> {
    let path = dir.join(ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        // An empty file is a creation cut short by a crash: nothing can have used it yet.
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&path)(e)),
    }
    let id = format!("{:032x}", rand::random::<u128>());
    crate::files::replace(&path, format!("{id}\n").as_bytes()).map_err(io_error(&path))?;
    tracing::info!(journal = %dir.display(), id, "journal: created its identity");
    Ok(id)
}

/// Makes the entries of directory `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

/// Wraps an I/O error with the path it happened on.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_owned(), source }
}
