/*!
The lake writer: journal → objects in the lake, exactly once per record.

Records are routed to a buffer per folder (kind and event-time partition, see [`crate::lake`]).
A buffer is flushed as one object when it reaches `lake.flush_bytes`, when its oldest record has
waited `lake.flush_secs`, when all buffers together pass `lake.max_buffered_bytes` (the oldest
goes first), and on shutdown. The writer's committed offset is the lowest offset still in a
buffer; it is saved to `<data-dir>/lake-writer.json` and only then committed to the journal, so
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
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Backoff, ConsumerStatus};
use crate::journal::{Entry, Journal, JournalError, JournalReader};
use crate::lake::encode::{self, Row};
use crate::lake::store::object_name;
use crate::lake::{Lake, LakeConfig, LakeError, Layout};

/// The writer's consumer name in the journal.
pub const CONSUMER: &str = "lake";

/// Most journal entries read at once.
const READ_BATCH: usize = 10_000;
/// How long a stopping writer waits for more entries before it flushes and returns.
const SHUTDOWN_IDLE: Duration = Duration::from_millis(20);
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
}

impl LakeWriter {
    /// Reads the checkpoint and registers with the journal at it, so that retention keeps what
    /// the lake has not archived yet. Call before the server accepts traffic.
    pub fn register(
        journal: Arc<dyn Journal>,
        lake: Lake,
        config: &LakeConfig,
        checkpoint_path: &Path,
    ) -> anyhow::Result<LakeWriter> {
        let layout = Layout::parse(&config.layout)?;
        let saved = read_checkpoint(checkpoint_path)?;
        let stats = journal.stats();
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
            config: config.clone(),
            layout,
            checkpoint_path: checkpoint_path.to_owned(),
            fresh,
            committed,
            restart_horizon: stats.next_offset,
        })
    }

    /// Archives the journal until `shutdown` is cancelled, then archives what the journal already
    /// holds, flushes every buffer and returns.
    pub async fn run(self, shutdown: CancellationToken, status: Arc<LakeStatus>) -> anyhow::Result<()> {
        status.committed(self.committed);
        let mut run = Run {
            flush_age: Duration::from_secs(self.config.flush_secs),
            w: self,
            buffers: HashMap::new(),
            buffered_bytes: 0,
            watermarks: HashMap::new(),
            next: 0,
            last_save: Instant::now(),
            shutdown,
            status,
        };
        run.next = run.w.committed;
        run.start().await?;
        run.main_loop().await
    }
}

/// Records of one folder waiting to become an object.
struct Buffer {
    rows: Vec<Row>,
    bytes: u64,
    opened: Instant,
    errors: bool,
}

/// The writer's state while running.
struct Run {
    w: LakeWriter,
    buffers: HashMap<String, Buffer>,
    buffered_bytes: u64,
    /// For folders of re-read records: the highest offset already in an object (listed once).
    watermarks: HashMap<String, Option<u64>>,
    /// One past the last offset read.
    next: u64,
    last_save: Instant,
    flush_age: Duration,
    shutdown: CancellationToken,
    status: Arc<LakeStatus>,
}

impl Run {
    /// Checks that a fresh lake is empty and saves the first checkpoint before any upload.
    async fn start(&mut self) -> anyhow::Result<()> {
        if self.w.fresh {
            let lake = self.w.lake.clone();
            let empty =
                until_ok(&self.status, &self.shutdown, self.w.committed, "checking that the lake is empty", || {
                    lake.is_empty()
                })
                .await?;
            if !empty {
                let message = format!(
                    "the lake at {} already holds objects, but this data directory has no lake checkpoint ({}): they were written from another journal and their offsets would clash. Point lake.url at an empty prefix, or restore the data directory that wrote them",
                    lake.description(),
                    self.w.checkpoint_path.display()
                );
                self.status.failing(&LakeError::Config(message.clone()));
                anyhow::bail!(message);
            }
        }
        self.save_checkpoint(self.w.committed).await?;
        tracing::info!(lake = self.w.lake.description(), offset = self.w.committed, "lake writer started");
        Ok(())
    }

    async fn main_loop(&mut self) -> anyhow::Result<()> {
        loop {
            // Wake at least every second to flush by age; once stopping, only wait long enough
            // to see that the journal has nothing more.
            let idle =
                if self.shutdown.is_cancelled() { SHUTDOWN_IDLE } else { self.flush_age.min(Duration::from_secs(1)) };
            let batch = self
                .w
                .reader
                .next_batch(READ_BATCH, idle)
                .await
                .with_context(|| format!("lake writer: reading the journal at offset {}", self.next))?;
            let mut flushed = false;
            if batch.is_empty() && self.shutdown.is_cancelled() {
                // Checked only between reads: everything journaled before shutdown is archived.
                let mut folders: Vec<_> = self.buffers.iter().map(|(f, b)| (b.rows[0].offset, f.clone())).collect();
                folders.sort();
                for (_, folder) in folders {
                    self.flush(&folder).await?;
                }
                self.commit(true).await?;
                tracing::info!(offset = self.status.committed_offset(), "lake writer flushed everything; stopping");
                return Ok(());
            }
            for entry in batch {
                flushed |= self.add(entry).await?;
            }
            if self.next >= self.w.restart_horizon && !self.watermarks.is_empty() {
                self.watermarks = HashMap::new();
            }
            let stale: Vec<String> = self
                .buffers
                .iter()
                .filter(|(_, b)| b.opened.elapsed() >= self.flush_age)
                .map(|(f, _)| f.clone())
                .collect();
            for folder in stale {
                self.flush(&folder).await?;
                flushed = true;
            }
            while self.buffered_bytes > self.w.config.max_buffered_bytes {
                let oldest = self.buffers.iter().min_by_key(|(_, b)| b.rows[0].offset).map(|(f, _)| f.clone());
                let Some(folder) = oldest else { break };
                self.flush(&folder).await?;
                flushed = true;
            }
            self.status.buffered(self.buffered_bytes);
            self.commit(flushed).await?;
        }
    }

    /// Routes one entry to its buffer (or skips it if a previous run archived it); flushes the
    /// buffer if it is full. Returns whether it flushed.
    async fn add(&mut self, entry: Entry) -> anyhow::Result<bool> {
        self.next = entry.offset + 1;
        let kind = entry.kind.name();
        let (folder, error) = match encode::event_time(entry.kind, &entry.payload) {
            Ok(time) => (format!("{kind}/{}", self.w.layout.render(time)), None),
            Err(reason) => {
                let arrival = encode::arrival_time(entry.received_at_ms);
                (format!("errors/{kind}/{}", self.w.layout.render(arrival)), Some(reason))
            }
        };
        if entry.offset < self.w.restart_horizon {
            let mark = match self.watermarks.get(&folder) {
                Some(mark) => *mark,
                None => {
                    let lake = self.w.lake.clone();
                    let mark = until_ok(&self.status, &self.shutdown, self.w.committed, "listing a partition", || {
                        lake.watermark(&folder)
                    })
                    .await?;
                    self.watermarks.insert(folder.clone(), mark);
                    mark
                }
            };
            if mark.is_some_and(|mark| entry.offset <= mark) {
                metrics::counter!("sluice_lake_records_total", "result" => "already_archived").increment(1);
                return Ok(false);
            }
        }
        let size = entry.payload.len() as u64;
        let buffer = self.buffers.entry(folder.clone()).or_insert_with(|| Buffer {
            rows: Vec::new(),
            bytes: 0,
            opened: Instant::now(),
            errors: error.is_some(),
        });
        buffer.rows.push(Row {
            offset: entry.offset,
            kind: entry.kind,
            received_at_ms: entry.received_at_ms,
            payload: entry.payload,
            error,
        });
        buffer.bytes += size;
        self.buffered_bytes += size;
        if buffer.bytes >= self.w.config.flush_bytes {
            self.flush(&folder).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Encodes folder `folder`'s buffer as one object and uploads it, retrying until it is stored.
    async fn flush(&mut self, folder: &str) -> anyhow::Result<()> {
        let Some(buffer) = self.buffers.remove(folder) else { return Ok(()) };
        self.buffered_bytes -= buffer.bytes;
        let (first, last) = (buffer.rows[0].offset, buffer.rows[buffer.rows.len() - 1].offset);
        let format = self.w.config.format;
        let errors = buffer.errors;
        let extension = if errors { format.error_extension() } else { format.extension() };
        let records = buffer.rows.len() as u64;
        let started = Instant::now();
        let bytes = tokio::task::spawn_blocking(move || encode::encode(format, &buffer.rows, errors))
            .await
            .context("the lake writer's encoding task panicked")?
            .with_context(|| format!("lake writer: encoding offsets {first}..={last} of {folder}"))?;
        let bytes = Bytes::from(bytes);
        let size = bytes.len() as u64;
        let path = self.w.lake.path(&object_name(folder, first, last, extension));
        let (lake, part_bytes) = (self.w.lake.clone(), self.w.config.part_bytes);
        until_ok(&self.status, &self.shutdown, self.w.committed, "uploading an object", || {
            lake.put(&path, bytes.clone(), part_bytes)
        })
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
        Ok(())
    }

    /// Saves and commits the lowest offset still buffered, if it moved: always after a flush
    /// (`force`), otherwise at most every [`CHECKPOINT_EVERY`].
    async fn commit(&mut self, force: bool) -> anyhow::Result<()> {
        let low = self.buffers.values().map(|b| b.rows[0].offset).min().unwrap_or(self.next);
        if low > self.w.committed && (force || self.last_save.elapsed() >= CHECKPOINT_EVERY) {
            self.save_checkpoint(low).await?;
            // Only after the checkpoint is durable: the journal may then delete what lies below.
            self.w.journal.commit(CONSUMER, low);
            self.w.committed = low;
            self.status.committed(low);
        }
        Ok(())
    }

    async fn save_checkpoint(&mut self, offset: u64) -> anyhow::Result<()> {
        let checkpoint = Checkpoint { lake: self.w.lake.description().to_owned(), offset };
        let path = self.w.checkpoint_path.clone();
        tokio::task::spawn_blocking(move || write_checkpoint(&path, &checkpoint))
            .await
            .context("the lake writer's checkpoint task panicked")??;
        self.last_save = Instant::now();
        Ok(())
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
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
            format!(
                "the lake checkpoint {} is damaged; delete it only together with the lake's objects",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the lake checkpoint {}", path.display())),
    }
}

/// Replaces the checkpoint atomically: a temporary file, fsynced, renamed over it, directory fsynced.
fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> anyhow::Result<()> {
    let write = || -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        serde_json::to_writer(&mut file, checkpoint)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().with_context(|| format!("cannot save the lake checkpoint {}; check the data directory", path.display()))
}
