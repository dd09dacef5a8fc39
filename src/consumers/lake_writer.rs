/*!
The lake writer: journal → objects in the lake, exactly once per record.

Records are routed to a buffer per folder (kind and event-time partition, see [`crate::lake`]).
Each record is parsed once, when it is routed, and appended to its buffer already in its final
form (an NDJSON line, or a row of Arrow columns). A buffer is flushed as one object when it
reaches `lake.flush_bytes`, when its oldest record has waited `lake.flush_secs`, when all buffers
together pass `lake.max_buffered_bytes` (the oldest goes first), and on shutdown. Flushing hands
the buffer to an upload task that compresses it on a blocking thread and uploads it, so several
objects are compressed in parallel and uploaded while the writer goes on routing; a folder has at
most one upload in flight, because its objects must land in offset order (see [`crate::lake`]).
The writer's committed offset is the lowest offset still in a buffer or an upload; it is saved to `<data-dir>/lake-writer.json` (at most once a second, and when stopping) and only then committed to the journal, so
the journal never deletes what the checkpoint would re-read. How re-read records are recognised
as already archived is described in [`crate::lake`].

A store that is down or refusing uploads never stops ingestion: the upload is retried with
backoff and jitter until it succeeds, reading the journal waits meanwhile (the journal keeps
accepting), `/readyz` and `/metrics` show the failure and the growing lag, and the writer catches
up once the store is back.
*/

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Backoff, ConsumerStatus, NeedsOperator};
use crate::journal::{Entry, Journal, JournalError, JournalReader};
use crate::lake::encode::{self, Pending};
use crate::lake::objects::{WRITER_MARK, object_name};
use crate::lake::{Lake, LakeConfig, LakeError, LakeSettings, Layout};
use crate::privacy::Privacy;
use crate::record::RecordKind;

/// The writer's consumer name in the journal.
pub const CONSUMER: &str = "lake";

/// Most journal entries read at once.
const READ_BATCH: usize = 10_000;
/// How long a stopping writer waits for more entries before it flushes and returns.
const SHUTDOWN_IDLE: Duration = Duration::from_millis(20);
/// Most folders the writer keeps rendered.
const FOLDER_CACHE: usize = 4_096;
/// Least time between two checkpoint saves when no flush forces one.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The writer's live state, for `/readyz` and metrics: a consumer's, plus what it holds in buffers.
#[derive(Debug)]
pub struct LakeStatus {
    consumer: ConsumerStatus,
    buffered_bytes: AtomicU64,
}

impl Default for LakeStatus {
    fn default() -> Self {
        LakeStatus { consumer: ConsumerStatus::new(CONSUMER), buffered_bytes: AtomicU64::new(0) }
    }
}

impl std::ops::Deref for LakeStatus {
    type Target = ConsumerStatus;

    fn deref(&self) -> &ConsumerStatus {
        &self.consumer
    }
}

impl LakeStatus {
    /// Bytes of records waiting in buffers.
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered_bytes.load(Ordering::Acquire)
    }

    fn buffered(&self, bytes: u64) {
        self.buffered_bytes.store(bytes, Ordering::Release);
        metrics::gauge!("sluice_lake_buffered_bytes").set(bytes as f64);
    }
}

/// What the writer keeps in `<data-dir>/lake-writer.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    /// The lake the offset belongs to.
    lake: String,
    /// Every journal offset below it is in the lake.
    offset: u64,
    /// The id of the journal the offset is in; absent in checkpoints written before journals had
    /// one (adopted if the offset fits in the journal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    journal: Option<String>,
}

/// What the writer keeps in the lake itself ([`WRITER_MARK`]), raised before any object that
/// holds an offset at or past it: no object in the lake holds an offset of `journal` at or past
/// `offset`, and `last` is the fingerprint ([`Entry::fingerprint`]) of the record at `offset - 1`.
/// The checkpoint lives in the data directory and is restored with it; the mark lives with the
/// objects, so the writer can tell its own lake from one that another copy of its data directory
/// wrote to (see [`crate::lake`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Mark {
    journal: String,
    offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<u32>,
    /// The writer's committed offset when it raised the mark: every record of `journal` below it
    /// is in the lake. A writer of the same journal with no checkpoint of its own (another node
    /// of a cluster taking the lake over) resumes there rather than at the oldest record retained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    committed: Option<u64>,
}

/// A lake writer registered with the journal, ready to [`run`](LakeWriter::run).
pub struct LakeWriter {
    journal: Arc<dyn Journal>,
    reader: Box<dyn JournalReader>,
    lake: Lake,
    config: LakeConfig,
    layout: Layout,
    checkpoint_path: PathBuf,
    /// No checkpoint for this lake: it must be empty, or it belongs to another journal.
    fresh: bool,
    committed: u64,
    /// The journal's end when the writer started: records below it may already be in the lake.
    restart_horizon: u64,
    /// The erasure ledger of records not to archive (none: archive everything).
    privacy: Option<Arc<Privacy>>,
}

impl LakeWriter {
    /// Reads the checkpoint and registers with the journal at it, so that retention keeps what
    /// the lake has not archived yet. Call before the server accepts traffic.
    pub fn register(journal: Arc<dyn Journal>, lake: Lake, settings: &LakeSettings) -> anyhow::Result<LakeWriter> {
        let checkpoint_path = settings.checkpoint.as_path();
        let saved = read_checkpoint(checkpoint_path)?;
        let stats = journal.stats();
        if let Some(c) = &saved {
            let what = if let Some(other) = c.journal.as_deref().filter(|other| *other != journal.id()) {
                Some(format!("belongs to journal {other}, but this data directory's journal is {}", journal.id()))
            } else if c.offset > stats.next_offset {
                Some(format!(
                    "is at offset {}, past the end of this data directory's journal (offset {}), which lost records or is not the one the lake was written from",
                    c.offset, stats.next_offset
                ))
            } else {
                None
            };
            if let Some(what) = what {
                return Err(NeedsOperator(format!(
                    "the lake writer will not start: the lake checkpoint {} {what}, so the lake's object names would clash with this journal's offsets. Point lake.url at an empty prefix and delete the checkpoint, or restore the data directory that wrote the lake",
                    checkpoint_path.display()
                ))
                .into());
            }
        }
        let (fresh, from) = match saved {
            Some(c) if c.lake == lake.description() => (false, c.offset),
            Some(c) => {
                tracing::warn!(
                    old = c.lake,
                    new = lake.description(),
                    "lake.url changed: the new lake starts from the oldest record the journal still has"
                );
                (true, stats.first_offset)
            }
            None => (true, stats.first_offset),
        };
        let (reader, committed) = match journal.reader(CONSUMER, from) {
            Ok(reader) => (reader, from),
            // A shared journal deletes by age and size, not by what its consumers read: records
            // gone before this writer archived them are lost to the lake, and every node must
            // see that, not only the one that found it first.
            Err(JournalError::OffsetGone { first, .. }) if journal.shared() => {
                return Err(NeedsOperator(format!(
                    "the lake writer will not start: the lake checkpoint {} says records of this journal from offset {from} on were never archived, but the journal's oldest record is at offset {first}: records {from}..{first} were deleted before they were archived and cannot be archived any more. Archive into an empty prefix (lake.url) and delete the checkpoint, or restore the records",
                    checkpoint_path.display()
                ))
                .into());
            }
            Err(JournalError::OffsetGone { first, .. }) => {
                tracing::warn!(
                    from,
                    first,
                    "the journal deleted records before the lake archived them (was the lake turned off?); they are not in the lake"
                );
                (journal.reader(CONSUMER, first).context("lake writer: opening the journal")?, first)
            }
            Err(e) => return Err(e).context("lake writer: opening the journal"),
        };
        Ok(LakeWriter {
            journal,
            reader,
            lake,
            config: settings.config.clone(),
            layout: settings.layout.clone(),
            checkpoint_path: checkpoint_path.to_owned(),
            fresh,
            committed,
            restart_horizon: stats.next_offset,
            privacy: None,
        })
    }

    /// Skips the records the erasure ledger of `privacy` names, and flushes every buffer when an
    /// erasure is recorded, so that the erasure waits for no buffer filled before it.
    pub fn with_privacy(mut self, privacy: Arc<Privacy>) -> LakeWriter {
        self.privacy = Some(privacy);
        self
    }

    /// Archives the journal until `shutdown` is cancelled, then archives what the journal already
    /// holds, flushes every buffer and returns.
    pub async fn run(self, shutdown: CancellationToken, status: Arc<LakeStatus>) -> anyhow::Result<()> {
        status.committed(self.committed);
        // One upload per core compressing, and one more uploading meanwhile.
        let max_uploads = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
        let mut run = Run {
            flush_age: Duration::from_secs(self.config.flush_secs),
            ledger_seen: self.privacy.as_ref().map(|p| p.ledger.generation()),
            writer: self,
            buffers: HashMap::new(),
            folders: HashMap::new(),
            buffered_bytes: 0,
            uploads: JoinSet::new(),
            uploading: HashMap::new(),
            max_uploads,
            watermarks: HashMap::new(),
            next: 0,
            marked: 0,
            mark_seen: None,
            check: None,
            read_ahead: None,
            last_save: Instant::now(),
            shutdown,
            status,
        };
        run.next = run.writer.committed;
        remove_staging_files(run.writer.lake.clone()).await;
        run.start().await?;
        run.main_loop().await
    }
}

/// Records of one folder waiting to become an object.
struct Buffer {
    pending: Pending,
    /// Offsets of the first and last record in it.
    first: u64,
    last: u64,
    records: u64,
    /// Bytes of the records as received.
    bytes: u64,
    opened: Instant,
    errors: bool,
}

/// The writer's state while running.
struct Run {
    /// The writer as registered: its journal reader, lake, settings and checkpoint.
    writer: LakeWriter,
    buffers: HashMap<String, Buffer>,
    /// Folders rendered so far, by record kind, error or not, and the layout's period the
    /// record's time falls in: rendering a template costs more than parsing a small record.
    folders: HashMap<(RecordKind, bool, i64), Arc<str>>,
    buffered_bytes: u64,
    /// Flushed buffers being compressed and uploaded; each returns its folder.
    uploads: JoinSet<anyhow::Result<String>>,
    /// The folders in `uploads`, with the first offset of each one's object.
    uploading: HashMap<String, u64>,
    max_uploads: usize,
    /// For folders of re-read records: the highest offset already in an object (listed once).
    watermarks: HashMap<String, Option<u64>>,
    /// One past the last offset read.
    next: u64,
    /// The offset in the lake's mark: objects may hold offsets below it.
    marked: u64,
    /// The mark as this writer last read or wrote it; it must not change behind its back.
    mark_seen: Option<Mark>,
    /// The offset and fingerprint the mark found at start-up gives for the record before it,
    /// checked when the writer reads that record again.
    check: Option<(u64, u32)>,
    /// The last entry of the batch being added (or last added), whose offset and fingerprint a
    /// raised mark carries: raising it past the whole batch at once covers the objects of every
    /// folder that flushes within the batch with one raise, not one per object.
    read_ahead: Option<Entry>,
    last_save: Instant,
    flush_age: Duration,
    /// The erasure ledger's generation last seen: a new erasure flushes every buffer.
    ledger_seen: Option<u64>,
    shutdown: CancellationToken,
    status: Arc<LakeStatus>,
}

impl Run {
    /// Checks that a fresh lake is empty and saves the first checkpoint before any upload.
    async fn start(&mut self) -> anyhow::Result<()> {
        self.check_mark().await?;
        let ours = self.mark_seen.as_ref().is_some_and(|mark| mark.journal == self.writer.journal.id());
        if self.writer.fresh && !ours {
            let lake = self.writer.lake.clone();
            let empty = until_ok(
                &self.status,
                &self.shutdown,
                self.writer.committed,
                "checking that the lake is empty",
                || lake.is_empty(),
            )
            .await?;
            if !empty {
                return Err(self.refuse(format!(
                    "it already holds objects, but this data directory has no checkpoint for it ({}) and the lake's mark does not name this journal: they were written from another journal and their offsets would clash. Point lake.url at an empty prefix, or restore the data directory that wrote them",
                    self.writer.checkpoint_path.display()
                )));
            }
        } else if self.writer.fresh {
            // A lake this journal wrote before (lake.url was changed and changed back, or
            // another node of the cluster wrote it): from what the mark says was committed (else
            // the oldest record retained), what the lake already holds is recognised and skipped
            // as after a crash, and what it lacks is archived.
            // Offsets from the mark on were never read by a writer that uploaded: if the journal
            // no longer holds them, they were deleted unarchived (a stream purged, or its age
            // limit passed while no node held the lake), and going on would skip them unsaid.
            if self.marked < self.writer.committed {
                return Err(self.refuse(format!(
                    "its mark says records of this journal from offset {} on were never archived, but the journal's oldest record is at offset {}: records {}..{} were deleted before they were archived and cannot be archived any more. Archive into an empty prefix (lake.url; the lake starts again from the oldest record the journal holds), or restore the records",
                    self.marked, self.writer.committed, self.marked, self.writer.committed
                )));
            }
            let committed = self.mark_seen.as_ref().and_then(|mark| mark.committed);
            if let Some(from) = committed.filter(|c| *c > self.writer.committed && *c <= self.writer.restart_horizon) {
                self.writer.reader = self
                    .writer
                    .journal
                    .reader(CONSUMER, from)
                    .context("lake writer: opening the journal where the lake's mark says it was committed")?;
                (self.writer.committed, self.next) = (from, from);
                self.status.committed(from);
            }
            tracing::info!(
                lake = self.writer.lake.description(),
                offset = self.writer.committed,
                "the lake was written from this journal before; archiving what it lacks"
            );
        }
        self.save_checkpoint(self.writer.committed).await?;
        tracing::info!(lake = self.writer.lake.description(), offset = self.writer.committed, "lake writer started");
        Ok(())
    }

    /// Reads the lake's mark and refuses a lake that holds offsets this journal has not reached
    /// (this data directory is an older copy of the one that wrote them) or that another journal
    /// writes too.
    async fn check_mark(&mut self) -> anyhow::Result<()> {
        let Some(mark) = self.read_mark().await? else { return Ok(()) };
        let (journal, end) = (self.writer.journal.id(), self.writer.restart_horizon);
        if mark.journal == journal && mark.offset > end {
            return Err(self.refuse(format!(
                "it holds records of this journal (id {journal}) up to offset {}, but this data directory's journal ends at offset {end}: the data directory is an older copy of the one that wrote the lake (restored from a backup?), and its new records would take offsets the lake already holds. Start sluice with the newest copy of the data directory, or point lake.url at an empty prefix and delete {}",
                mark.offset - 1,
                self.writer.checkpoint_path.display()
            )));
        }
        if mark.journal == journal {
            self.marked = mark.offset;
            self.check = mark.last.filter(|_| mark.offset > 0).map(|last| (mark.offset - 1, last));
        } else if !self.writer.fresh {
            return Err(self.refuse(format!(
                "it is written from another journal too (id {}; this data directory's is {journal}), so two data directories write one lake and their offsets clash. Give each sluice its own lake.url",
                mark.journal
            )));
        }
        // A new lake that holds nothing but another journal's mark: that writer never uploaded,
        // and this one takes over.
        self.mark_seen = Some(mark);
        Ok(())
    }

    /// The lake's mark; a refusal when it is not one of ours.
    async fn read_mark(&mut self) -> anyhow::Result<Option<Mark>> {
        let lake = self.writer.lake.clone();
        let read = until_ok(&self.status, &self.shutdown, self.writer.committed, "reading the writer's mark", || {
            lake.read(WRITER_MARK)
        })
        .await?;
        let Some(bytes) = read else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            self.refuse(format!(
                "its mark {WRITER_MARK} is not sluice's ({e}), so nothing tells which offsets it holds. Point lake.url at another prefix, or delete the mark only if no other sluice writes this lake"
            ))
        })
    }

    /// Stops the writer for an operator to act: `why` the lake cannot be written.
    fn refuse(&self, why: String) -> anyhow::Error {
        let message =
            format!("the lake writer will not go on with the lake at {}: {why}", self.writer.lake.description());
        self.status.failing(&LakeError::Config(message.clone()));
        NeedsOperator(message).into()
    }

    /// Raises the lake's mark past every offset read so far (the batch being added included),
    /// before an object holding offsets up to `last` is uploaded. The mark must be as this writer last saw it: if it moved, another
    /// sluice writes this lake (a second data directory, or a copy of this one running beside it).
    async fn mark(&mut self, last: u64) -> anyhow::Result<()> {
        if last < self.marked {
            return Ok(());
        }
        let now = self.read_mark().await?;
        if now != self.mark_seen {
            let now = now.map_or("gone".to_owned(), |m| format!("journal {} offset {}", m.journal, m.offset));
            return Err(self.refuse(format!(
                "its mark {WRITER_MARK} changed behind this writer's back (now: {now}), so another sluice writes this lake: a second data directory, or a copy of this one. Give each sluice its own lake.url; objects written meanwhile may clash (see `sluice lake ls`)"
            )));
        }
        let mark = Mark {
            journal: self.writer.journal.id().to_owned(),
            offset: self.read_ahead.as_ref().map_or(self.next, |entry| entry.offset + 1),
            last: self.read_ahead.as_ref().map(Entry::fingerprint),
            committed: Some(self.status.committed_offset()),
        };
        let bytes = Bytes::from(serde_json::to_vec(&mark)?);
        let (lake, path) = (self.writer.lake.clone(), self.writer.lake.path(WRITER_MARK));
        until_ok(&self.status, &self.shutdown, self.writer.committed, "writing the writer's mark", || {
            lake.put(&path, bytes.clone(), usize::MAX)
        })
        .await?;
        self.marked = mark.offset;
        self.mark_seen = Some(mark);
        Ok(())
    }

    async fn main_loop(&mut self) -> anyhow::Result<()> {
        loop {
            // Wake at least every second to flush by age; once stopping, only wait long enough
            // to see that the journal has nothing more.
            let idle =
                if self.shutdown.is_cancelled() { SHUTDOWN_IDLE } else { self.flush_age.min(Duration::from_secs(1)) };
            let batch = self
                .writer
                .reader
                .next_batch(READ_BATCH, idle)
                .await
                .with_context(|| format!("lake writer: reading the journal at offset {}", self.next))?;
            if batch.is_empty() && self.shutdown.is_cancelled() {
                // Checked only between reads: everything journaled before shutdown is archived.
                let mut folders: Vec<_> = self.buffers.iter().map(|(f, b)| (b.first, f.clone())).collect();
                folders.sort();
                for (_, folder) in folders {
                    self.flush(&folder).await?;
                }
                while !self.uploads.is_empty() {
                    self.finish_upload().await?;
                }
                self.commit(true).await?;
                tracing::info!(offset = self.status.committed_offset(), "lake writer flushed everything; stopping");
                return Ok(());
            }
            if let Some(last) = batch.last() {
                self.read_ahead = Some(last.clone());
            }
            for entry in batch {
                self.add(entry).await?;
            }
            if self.next >= self.writer.restart_horizon && !self.watermarks.is_empty() {
                self.watermarks = HashMap::new();
            }
            let generation = self.writer.privacy.as_ref().map(|p| p.ledger.generation());
            let erasure = generation != self.ledger_seen;
            self.ledger_seen = generation;
            let stale: Vec<String> = self
                .buffers
                .iter()
                .filter(|(_, b)| erasure || b.opened.elapsed() >= self.flush_age)
                .map(|(f, _)| f.clone())
                .collect();
            for folder in stale {
                self.flush(&folder).await?;
            }
            while self.buffered_bytes > self.writer.config.max_buffered_bytes {
                let oldest = self.buffers.iter().min_by_key(|(_, b)| b.first).map(|(f, _)| f.clone());
                let Some(folder) = oldest else { break };
                self.flush(&folder).await?;
            }
            while let Some(done) = self.uploads.try_join_next() {
                self.finished(done)?;
            }
            self.status.buffered(self.buffered_bytes);
            self.commit(false).await?;
        }
    }

    /// Parses one entry, routes it to its buffer (or skips it if a previous run archived it) and
    /// appends it there; flushes the buffer if it is full.
    async fn add(&mut self, entry: Entry) -> anyhow::Result<()> {
        if let Some((offset, expected)) = self.check
            && entry.offset >= offset
        {
            self.check = None;
            if entry.offset == offset && entry.fingerprint() != expected {
                return Err(self.refuse(format!(
                    "its mark says the record at offset {offset} is another one than this journal's: a copy of this data directory wrote its own records there (a backup that was started while this one was down?). The lake's objects from offset {offset} on may hold that copy's records instead of these; point lake.url at an empty prefix and delete {} to archive this journal afresh",
                    self.writer.checkpoint_path.display()
                )));
            }
        }
        self.next = entry.offset + 1;
        if self.writer.privacy.as_ref().is_some_and(|p| p.erased(&entry)) {
            return Ok(());
        }
        let parsed = encode::parse(entry.kind, &entry.payload);
        let folder = match &parsed {
            Ok((time, _)) => self.folder(entry.kind, false, *time),
            Err(_) => self.folder(entry.kind, true, encode::arrival_time(entry.received_at_ms)),
        };
        let folder = &*folder;
        if entry.offset < self.writer.restart_horizon {
            let mark = match self.watermarks.get(folder) {
                Some(mark) => *mark,
                None => {
                    let lake = self.writer.lake.clone();
                    let mark =
                        until_ok(&self.status, &self.shutdown, self.writer.committed, "listing a partition", || {
                            lake.watermark(folder)
                        })
                        .await?;
                    self.watermarks.insert(folder.to_owned(), mark);
                    mark
                }
            };
            if mark.is_some_and(|mark| entry.offset <= mark) {
                metrics::counter!("sluice_lake_records_total", "result" => "already_archived").increment(1);
                return Ok(());
            }
        }
        let size = entry.payload.len() as u64;
        let format = self.writer.config.format;
        // Looked up by reference: a new key is allocated once per buffer, not once per record.
        if !self.buffers.contains_key(folder) {
            let buffer = Buffer {
                pending: if parsed.is_ok() { Pending::data(format, entry.kind) } else { Pending::errors(format) },
                first: entry.offset,
                last: entry.offset,
                records: 0,
                bytes: 0,
                opened: Instant::now(),
                errors: parsed.is_err(),
            };
            self.buffers.insert(folder.to_owned(), buffer);
        }
        let Some(buffer) = self.buffers.get_mut(folder) else { unreachable!("inserted above") };
        match &parsed {
            Ok((_, record)) => buffer.pending.push(record, entry.received_at_ms),
            Err(reason) => {
                buffer.pending.push_error(entry.offset, entry.kind, entry.received_at_ms, reason, &entry.payload);
            }
        }
        buffer.last = entry.offset;
        buffer.records += 1;
        buffer.bytes += size;
        self.buffered_bytes += size;
        if buffer.bytes >= self.writer.config.flush_bytes {
            self.flush(folder).await?;
        }
        Ok(())
    }

    /// The folder of a record of `kind` at `time`: `<kind>/<partition>`, or under `errors/` for
    /// a record that cannot be encoded (`time` is then its arrival). Rendered once per period of
    /// the layout while the cache holds it.
    fn folder(&mut self, kind: RecordKind, error: bool, time: DateTime<Utc>) -> Arc<str> {
        let layout = &self.writer.layout;
        let render = || -> Arc<str> {
            let prefix = if error { "errors/" } else { "" };
            format!("{prefix}{}/{}", kind.name(), layout.render(time)).into()
        };
        let Some(period) = layout.period_secs() else { return render() };
        // Records arrive near each other in time, so a bound only matters for pathological ones.
        if self.folders.len() >= FOLDER_CACHE {
            self.folders.clear();
        }
        self.folders.entry((kind, error, time.timestamp().div_euclid(period))).or_insert_with(render).clone()
    }

    /// Hands folder `folder`'s buffer to an upload task, which compresses it and uploads it as
    /// one object, retrying until it is stored. Waits first for the folder's previous upload (its
    /// objects must land in offset order) and for a free upload slot.
    async fn flush(&mut self, folder: &str) -> anyhow::Result<()> {
        let Some(buffer) = self.buffers.remove(folder) else { return Ok(()) };
        self.buffered_bytes -= buffer.bytes;
        while self.uploading.contains_key(folder) || self.uploading.len() >= self.max_uploads {
            self.finish_upload().await?;
        }
        self.mark(buffer.last).await?;
        let extension = if buffer.errors {
            self.writer.config.format.error_extension()
        } else {
            self.writer.config.format.extension()
        };
        let upload = Upload {
            path: self.writer.lake.path(&object_name(folder, buffer.first, buffer.last, extension)),
            folder: folder.to_owned(),
            buffer,
            lake: self.writer.lake.clone(),
            part_bytes: self.writer.config.part_bytes,
            status: self.status.clone(),
            shutdown: self.shutdown.clone(),
            committed: self.writer.committed,
        };
        self.uploading.insert(upload.folder.clone(), upload.buffer.first);
        self.uploads.spawn(upload.run());
        Ok(())
    }

    /// Waits for one upload to finish.
    async fn finish_upload(&mut self) -> anyhow::Result<()> {
        match self.uploads.join_next().await {
            Some(done) => self.finished(done),
            None => Ok(()),
        }
    }

    /// Takes note of a finished upload; its error (shutdown while the lake fails, an encoding
    /// failure) stops the writer.
    fn finished(&mut self, done: Result<anyhow::Result<String>, tokio::task::JoinError>) -> anyhow::Result<()> {
        let folder = done.context("a lake upload task panicked")??;
        self.uploading.remove(&folder);
        Ok(())
    }

    /// Saves and commits the lowest offset still buffered or uploading, if it moved: when
    /// `stopping`, otherwise at most every [`CHECKPOINT_EVERY`]. Not after every upload: each save
    /// is an fsync the writer waits for, and a checkpoint that lags only means that a restart
    /// re-reads a little more, which the watermarks skip.
    async fn commit(&mut self, stopping: bool) -> anyhow::Result<()> {
        let buffered = self.buffers.values().map(|b| b.first);
        let low = buffered.chain(self.uploading.values().copied()).min().unwrap_or(self.next);
        if low > self.writer.committed && (stopping || self.last_save.elapsed() >= CHECKPOINT_EVERY) {
            self.save_checkpoint(low).await?;
            // Only after the checkpoint is durable: the journal may then delete what lies below.
            self.writer.journal.commit(CONSUMER, low);
            self.writer.committed = low;
            self.status.committed(low);
        }
        Ok(())
    }

    async fn save_checkpoint(&mut self, offset: u64) -> anyhow::Result<()> {
        let checkpoint = Checkpoint {
            lake: self.writer.lake.description().to_owned(),
            offset,
            journal: Some(self.writer.journal.id().to_owned()),
        };
        let path = self.writer.checkpoint_path.clone();
        tokio::task::spawn_blocking(move || write_checkpoint(&path, &checkpoint))
            .await
            .context("the lake writer's checkpoint task panicked")??;
        self.last_save = Instant::now();
        Ok(())
    }
}

/// Deletes what uploads killed mid-way left in a local lake; a failure is only logged, since
/// the leftovers are invisible to readers of the lake and to `sluice lake ls`.
async fn remove_staging_files(lake: Lake) {
    match tokio::task::spawn_blocking(move || lake.remove_staging_files()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => tracing::info!(removed, "lake: removed files of uploads a previous run did not finish"),
        Ok(Err(e)) => tracing::warn!(error = %e, "lake: leftover upload files stay"),
        Err(e) => tracing::warn!(error = %e, "lake: the cleanup of leftover upload files panicked"),
    }
}

/// A flushed buffer on its way to the lake.
struct Upload {
    folder: String,
    path: object_store::path::Path,
    buffer: Buffer,
    lake: Lake,
    part_bytes: usize,
    status: Arc<LakeStatus>,
    shutdown: CancellationToken,
    /// The writer's committed offset when the upload started, for the message if it gives up.
    committed: u64,
}

impl Upload {
    /// Compresses the buffer on a blocking thread, uploads it until the lake takes it and returns
    /// the folder.
    async fn run(self) -> anyhow::Result<String> {
        let Upload { folder, path, buffer, lake, part_bytes, status, shutdown, committed } = self;
        let Buffer { pending, first, last, records, errors, .. } = buffer;
        let started = Instant::now();
        let bytes = tokio::task::spawn_blocking(move || pending.finish())
            .await
            .context("the lake writer's encoding task panicked")?
            .with_context(|| format!("lake writer: encoding offsets {first}..={last} of {folder}"))?;
        let bytes = Bytes::from(bytes);
        let size = bytes.len() as u64;
        until_ok(&status, &shutdown, committed, "uploading an object", || lake.put(&path, bytes.clone(), part_bytes))
            .await?;
        let kind = if errors { "error" } else { "data" };
        metrics::histogram!("sluice_lake_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("sluice_lake_objects_total", "kind" => kind).increment(1);
        metrics::counter!("sluice_lake_bytes_total", "kind" => kind).increment(size);
        metrics::counter!("sluice_lake_records_total", "result" => kind).increment(records);
        if errors {
            tracing::warn!(object = %path, records, "lake: records that could not be encoded were written to the error prefix");
        } else {
            tracing::debug!(object = %path, records, bytes = size, "lake: object written");
        }
        Ok(folder)
    }
}

/// Runs `op` until it succeeds, with exponential backoff and jitter between tries. Gives up only
/// when shutdown is requested while the lake is failing: what was not archived (from `committed`
/// on) stays in the journal and is archived on the next start.
async fn until_ok<T, F, Fut>(
    status: &LakeStatus,
    shutdown: &CancellationToken,
    committed: u64,
    what: &str,
    mut op: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, LakeError>>,
{
    let mut backoff = Backoff::default();
    loop {
        match op().await {
            Ok(value) => {
                if status.recovered() {
                    tracing::info!("lake writer reached the lake again; catching up");
                }
                return Ok(value);
            }
            Err(e) => {
                if status.failing(&e) {
                    tracing::error!(error = %e, "lake writer: {what} failed; retrying with backoff until the lake answers (ingest goes on)");
                }
                if !backoff.sleep(shutdown).await {
                    anyhow::bail!(
                        "lake writer stopped while the lake was failing ({e}); records from offset {committed} stay in the journal and are archived on the next start"
                    );
                }
            }
        }
    }
}

fn read_checkpoint(path: &Path) -> anyhow::Result<Option<Checkpoint>> {
    let Some(bytes) = crate::files::read_if_exists(path)
        .with_context(|| format!("cannot read the lake checkpoint {}", path.display()))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).with_context(|| {
        format!("the lake checkpoint {} is damaged; delete it only together with the lake's objects", path.display())
    })
}

fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> anyhow::Result<()> {
    crate::files::replace(path, &serde_json::to_vec(checkpoint)?)
        .with_context(|| format!("cannot save the lake checkpoint {}; check the data directory", path.display()))
}
