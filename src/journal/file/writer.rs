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

use super::dedup::{self, DedupIndex};
use super::format::{self, HEADER_LEN};
use super::{Shared, io_error, lock, retention, segment};
use crate::journal::{JournalError, Record};

/// A group stops taking queued requests once it holds this much payload, bounding the write buffer.
const GROUP_PAYLOAD_BYTES: usize = 16 << 20;

/// What the journal handle asks of the writer thread.
pub(super) enum Command {
    /// Make these records durable (those not held already) and answer with their offsets.
    Append(AppendRequest),
    /// Run a retention pass (a consumer committed).
    Retain,
    /// Accept no more commands, finish the queued ones and stop.
    Close,
}

/// Records to append, and where to send what became of them.
pub(super) struct AppendRequest {
    pub records: Vec<Record>,
    pub reply: oneshot::Sender<Result<Stored, JournalError>>,
}

/// What became of one request's records.
#[derive(Debug)]
pub(super) struct Stored {
    /// The offsets its new records took (consecutive: a request is encoded in one piece).
    pub offsets: Range<u64>,
    /// How many of its records the journal held already, or an earlier record of the group had.
    pub duplicates: usize,
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
    /// The ids appended within the dedup window.
    dedup: DedupIndex,
}

impl Writer {
    /// A writer appending to the active segment `file` at `path`, of `active_bytes`, where
    /// offset `next_offset` goes next, leaving out records whose id `dedup` holds.
    pub fn new(
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
        (file, path, active_bytes): (File, PathBuf, u64),
        next_offset: u64,
        dedup: DedupIndex,
    ) -> Writer {
        Writer { shared, commands, file, path, active_bytes, next_offset, buf: Vec::new(), dedup }
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
            Some(reason) => Err(Failure::Poisoned(reason.clone())),
            None => self.write_group(&group),
        };
        self.shared.publish_dedup(&self.dedup, dedup::now_ms());
        // A full disk fails every group until space is freed: log when writing stops and starts
        // working again, not once per group.
        match &outcome {
            Ok(_) => {
                if lock(&self.shared.write_error).take().is_some() {
                    tracing::info!("journal: writing works again");
                }
            }
            Err(Failure::Undone { path, source }) => {
                let error = unwritten(path, source).to_string();
                let before = lock(&self.shared.write_error).replace(error.clone());
                if before.as_ref() != Some(&error) {
                    tracing::error!(%error, "journal: a write failed and was undone; every append is tried again");
                }
            }
            Err(Failure::Fatal(error)) => {
                tracing::error!(%error, "journal: write failed; refusing every further append until restart");
                let _ = self.shared.poisoned.set(error.to_string());
            }
            Err(Failure::Poisoned(_)) => {}
        }
        // A send fails only when the appender stopped waiting; its records are durable all the same.
        match outcome {
            Ok(stored) => {
                for (request, stored) in group.into_iter().zip(stored) {
                    let _ = request.reply.send(Ok(stored));
                }
            }
            Err(Failure::Undone { path, source }) => {
                for request in group {
                    let _ = request.reply.send(Err(unwritten(&path, &source)));
                }
            }
            Err(Failure::Fatal(error)) => {
                let reason = error.to_string();
                for request in group {
                    let _ = request.reply.send(Err(JournalError::Poisoned(reason.clone())));
                }
            }
            Err(Failure::Poisoned(reason)) => {
                for request in group {
                    let _ = request.reply.send(Err(JournalError::Poisoned(reason.clone())));
                }
            }
        }
    }

    /// Encodes the group's new records into one buffer, writes it with one `write_all` and one
    /// `fdatasync`, then publishes the new durable end. Returns what became of each request.
    fn write_group(&mut self, group: &[AppendRequest]) -> Result<Vec<Stored>, Failure> {
        // Rotate only a segment holding entries, so a sealed segment is never empty.
        if self.active_bytes >= self.shared.config.segment_bytes && self.active_bytes > HEADER_LEN {
            self.rotate()?;
        }
        self.buf.clear();
        let now = dedup::now_ms();
        self.dedup.expire(now);
        let first = self.next_offset;
        let mut end = first;
        let stored: Vec<Stored> = group
            .iter()
            .map(|request| {
                let start = end;
                let mut duplicates = 0;
                for record in &request.records {
                    // Checked in the group's order: of two equal records, the first one is written.
                    if self.dedup.admit(record.id, record.received_at_ms, now) {
                        format::encode_entry(&mut self.buf, record);
                        end += 1;
                    } else {
                        duplicates += 1;
                    }
                }
                Stored { offsets: start..end, duplicates }
            })
            .collect();
        let duplicates: usize = stored.iter().map(|stored| stored.duplicates).sum();
        if self.buf.is_empty() {
            // Only empty appends and duplicates: nothing to make durable.
            self.count_duplicates(duplicates);
            return Ok(stored);
        }

        // Until the fsync succeeds, the group's ids must not stay: a retry of a group that was
        // not written would be dropped as a duplicate of nothing.
        if let Err(source) = self.write_buf() {
            self.dedup.take_back();
            return Err(self.undo_write(source));
        }
        let started = Instant::now();
        if let Err(error) = self.sync_data() {
            self.dedup.take_back();
            self.cut_after_failed_sync();
            return Err(Failure::Fatal(error));
        }
        self.dedup.keep();
        self.count_duplicates(duplicates);
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
        Ok(stored)
    }

    /// Counts the duplicates a group left out, once the group is answered with success.
    fn count_duplicates(&self, duplicates: usize) {
        if duplicates > 0 {
            self.shared.duplicates.fetch_add(duplicates as u64, Ordering::Relaxed);
            metrics::counter!("sluice_journal_duplicates_total").increment(duplicates as u64);
        }
    }

    /// After the group's write failed (`source`), possibly half-way: cuts the segment back to
    /// its length before the group and makes that durable.
    ///
    /// A failed write, unlike a failed fsync, leaves no doubt about what the file holds: the
    /// earlier groups were synced, and the kernel reported nothing lost. Once the truncation is
    /// synced, the file is exactly as it was after the last acknowledged group, so the journal
    /// can go on (a full disk then heals by itself once space is freed). If the truncation or
    /// its sync fails, that is no longer known: poison.
    fn undo_write(&mut self, source: std::io::Error) -> Failure {
        match self.truncate_to(self.active_bytes) {
            Ok(()) => Failure::Undone { path: self.path.clone(), source },
            Err(undo) => Failure::Fatal(JournalError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(
                    source.kind(),
                    format!("{source}; cutting the partial write back off failed too: {undo}"),
                ),
            }),
        }
    }

    /// After the group's fsync failed: cuts the group off the segment, on a best-effort basis.
    ///
    /// The journal is poisoned all the same. After a failed fsync the kernel may have dropped
    /// dirty pages and marked them clean, and a later fsync can succeed without writing them
    /// (fsyncgate), so a successful truncation proves nothing about the disk. Cutting still makes
    /// it likelier that the refused group is not found again after the restart (and frees its
    /// space), but nothing promises it: its records may be recovered then (at-least-once).
    fn cut_after_failed_sync(&mut self) {
        if let Err(error) = self.truncate_to(self.active_bytes) {
            tracing::warn!(path = %self.path.display(), %error, "journal: could not cut a group whose fsync failed off the segment");
        }
    }

    /// Truncates the active segment to `len` bytes and syncs it.
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
        #[cfg(test)]
        if self.shared.fail_next_truncate.swap(false, Ordering::AcqRel) {
            return Err(std::io::Error::other("injected truncate failure"));
        }
        // The file is opened for appending, so the next write lands at the new end.
        self.file.set_len(len)?;
        self.file.sync_all()
    }

    /// Seals the active segment (already durable: the last group was synced) and starts the next.
    ///
    /// If the new segment cannot be created (a full disk), it is removed again and nothing has
    /// changed: the group is refused and a later one tries again. Only if a file of that name
    /// remains (it could not be removed, or was there before) does the journal poison, since
    /// every later attempt would fail the same way.
    fn rotate(&mut self) -> Result<(), Failure> {
        let created = segment::create_with(&self.shared.dir, self.next_offset, self.header_writer());
        let (file, segment) = match created {
            Ok(created) => created,
            Err(error) => {
                let path = self.shared.dir.join(segment::file_name(self.next_offset));
                return Err(match error {
                    JournalError::Io { path: failed, source } if std::fs::symlink_metadata(&path).is_err() => {
                        Failure::Undone { path: failed, source }
                    }
                    other => Failure::Fatal(other),
                });
            }
        };
        tracing::debug!(path = %segment.path.display(), "journal: started a new segment");
        self.file = file;
        self.path = segment.path.clone();
        self.active_bytes = segment.bytes;
        lock(&self.shared.segments).push_back(segment);
        Ok(())
    }

    /// Writes a new segment's header (in tests, when asked to, half of it and then fails).
    fn header_writer(&self) -> HeaderWriter {
        let header = format::encode_header(self.next_offset);
        #[cfg(test)]
        if self.shared.fail_next_rotation.swap(false, Ordering::AcqRel) {
            return Box::new(move |file: &mut File| {
                file.write_all(&header[..5])?;
                Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
            });
        }
        Box::new(move |file: &mut File| file.write_all(&header))
    }

    /// Writes the encoded group to the end of the active segment.
    fn write_buf(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.shared.fail_next_write.swap(false, Ordering::AcqRel) {
            // A full disk typically takes part of a write before refusing the rest.
            self.file.write_all(&self.buf[..self.buf.len() / 2])?;
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.file.write_all(&self.buf)
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

/// Writes a new segment's header into its file.
type HeaderWriter = Box<dyn FnOnce(&mut File) -> std::io::Result<()>>;

/// Why a group was not committed.
enum Failure {
    /// Nothing of the group is on disk: its write failed (`source`, on `path`) and was cut back
    /// off durably, or it never started. The journal carries on.
    Undone { path: PathBuf, source: std::io::Error },
    /// What the disk holds is no longer known: the journal must be poisoned with this error.
    Fatal(JournalError),
    /// The journal was already poisoned, for this reason.
    Poisoned(String),
}

/// The error each request of an undone group gets. `io::Error` is not `Clone`; its kind (which
/// says whether the disk is full) and its text are what the appenders need.
fn unwritten(path: &std::path::Path, source: &std::io::Error) -> JournalError {
    JournalError::Unwritten { path: path.to_owned(), source: std::io::Error::new(source.kind(), source.to_string()) }
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
