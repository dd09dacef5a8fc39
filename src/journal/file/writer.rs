/*!
The writer thread, the only code that writes segment files: it group-commits appends, rotates
segments between groups and runs retention.
*/

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::format::{self, HEADER_LEN};
use super::{Shared, io_error, lock, retention, segment};
use crate::journal::{JournalError, Record};

/// A group stops taking queued requests once it holds this much payload, bounding the write buffer.
const GROUP_PAYLOAD_BYTES: usize = 16 << 20;

/// What the journal handle asks of the writer thread.
pub(super) enum Command {
    /// Make these records durable and answer with their offsets.
    Append(AppendRequest),
    /// Run a retention pass (a consumer committed).
    Retain,
    /// Accept no more commands, finish the queued ones and stop.
    Close,
}

/// Records to append, and where to send their offsets.
pub(super) struct AppendRequest {
    pub records: Vec<Record>,
    pub reply: oneshot::Sender<Result<Range<u64>, JournalError>>,
}

/// The writer thread's state: the active segment, open for appending.
pub(super) struct Writer {
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    file: File,
    path: PathBuf,
    /// Size of the active segment.
    active_bytes: u64,
    /// The offset the next appended record gets.
    next_offset: u64,
    /// Encoding buffer, kept between groups to reuse its allocation.
    buf: Vec<u8>,
}

impl Writer {
    /// A writer appending to the active segment `file` at `path`, of `active_bytes`, where offset `next_offset` goes next.
    pub fn new(
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
        file: File,
        path: PathBuf,
        active_bytes: u64,
        next_offset: u64,
    ) -> Writer {
        Writer { shared, commands, file, path, active_bytes, next_offset, buf: Vec::new() }
    }

    /// Starts the thread. It ends once its command queue is closed and drained.
    pub fn spawn(self) -> Result<(), JournalError> {
        let dir = self.shared.dir.clone();
        let run = move || {
            let _exit = ExitGuard(Arc::clone(&self.shared));
            self.serve();
        };
        std::thread::Builder::new()
            .name("sluice-journal".to_owned())
            .spawn(run)
            .map(drop)
            .map_err(|source| JournalError::Io { path: dir, source })
    }

    fn serve(mut self) {
        while let Some(first) = self.commands.blocking_recv() {
            let group = self.gather(first);
            if !group.is_empty() {
                self.commit(group);
            }
            // After every group, so replay windows expire while appends flow even if no one commits.
            retention::enforce(&self.shared);
        }
    }

    /// Takes `first` and every request already queued behind it, up to the payload bound.
    fn gather(&mut self, first: Command) -> Vec<AppendRequest> {
        let mut group = Vec::new();
        let mut payload_bytes = 0;
        let mut next = Some(first);
        while let Some(command) = next {
            match command {
                Command::Append(request) => {
                    payload_bytes += request.records.iter().map(|record| record.payload.len()).sum::<usize>();
                    group.push(request);
                }
                // The pass itself runs after the group; the command only wakes an idle writer.
                Command::Retain => self.shared.retention_queued.store(false, Ordering::Release),
                // Refuse new commands; `blocking_recv` still yields the queued ones, then `None`.
                Command::Close => self.commands.close(),
            }
            next = if payload_bytes < GROUP_PAYLOAD_BYTES { self.commands.try_recv().ok() } else { None };
        }
        group
    }

    /// Makes the group durable and answers every request in it.
    fn commit(&mut self, group: Vec<AppendRequest>) {
        let outcome = match self.shared.poisoned.get() {
            Some(reason) => Err(reason.clone()),
            None => self.write_group(&group).map_err(|error| {
                tracing::error!(%error, "journal: write failed; refusing every further append until restart");
                self.shared.poisoned.get_or_init(|| error.to_string()).clone()
            }),
        };
        // A send fails only when the appender stopped waiting; its records are durable all the same.
        match outcome {
            Ok(ranges) => {
                for (request, range) in group.into_iter().zip(ranges) {
                    let _ = request.reply.send(Ok(range));
                }
            }
            Err(reason) => {
                for request in group {
                    let _ = request.reply.send(Err(JournalError::Poisoned(reason.clone())));
                }
            }
        }
    }

    /// Encodes the group into one buffer, writes it with one `write_all` and one `fdatasync`,
    /// then publishes the new durable end. Returns each request's offsets.
    fn write_group(&mut self, group: &[AppendRequest]) -> Result<Vec<Range<u64>>, JournalError> {
        // Rotate only a segment holding entries, so a sealed segment is never empty.
        if self.active_bytes >= self.shared.config.segment_bytes && self.active_bytes > HEADER_LEN {
            self.rotate()?;
        }
        self.buf.clear();
        let first = self.next_offset;
        let mut end = first;
        let ranges: Vec<Range<u64>> = group
            .iter()
            .map(|request| {
                let start = end;
                for record in &request.records {
                    format::encode_entry(&mut self.buf, record);
                }
                end += request.records.len() as u64;
                start..end
            })
            .collect();
        if self.buf.is_empty() {
            return Ok(ranges); // only empty appends: nothing to make durable
        }

        self.file.write_all(&self.buf).map_err(io_error(&self.path))?;
        let started = Instant::now();
        self.sync_data()?;
        metrics::histogram!("sluice_journal_fsync_seconds").record(started.elapsed().as_secs_f64());
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);

        self.active_bytes += self.buf.len() as u64;
        self.next_offset = end;
        if let Some(active) = lock(&self.shared.segments).back_mut() {
            active.bytes = self.active_bytes;
            active.last_write = SystemTime::now();
        }
        self.shared.durable.send_replace(end);

        metrics::histogram!("sluice_journal_group_size").record(group.len() as f64);
        metrics::counter!("sluice_journal_appended_records_total").increment(end - first);
        metrics::counter!("sluice_journal_appended_bytes_total").increment(self.buf.len() as u64);
        Ok(ranges)
    }

    /// Seals the active segment (already durable: the last group was synced) and starts the next.
    fn rotate(&mut self) -> Result<(), JournalError> {
        let (file, segment) = segment::create(&self.shared.dir, self.next_offset)?;
        tracing::debug!(path = %segment.path.display(), "journal: started a new segment");
        self.file = file;
        self.path = segment.path.clone();
        self.active_bytes = segment.bytes;
        lock(&self.shared.segments).push_back(segment);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), JournalError> {
        #[cfg(test)]
        if self.shared.fail_next_sync.swap(false, Ordering::AcqRel) {
            return Err(JournalError::Io {
                path: self.path.clone(),
                source: std::io::Error::other("injected fsync failure"),
            });
        }
        self.file.sync_data().map_err(io_error(&self.path))
    }
}

/// Reports the end of the writer thread, and poisons the journal if it ended by panicking.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.poisoned.set("the journal writer thread panicked".to_owned());
        }
        self.0.writer_running.send_replace(false);
    }
}
