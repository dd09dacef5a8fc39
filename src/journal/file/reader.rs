/*!
Reading the journal in order for one consumer, across segments, never beyond the durable end,
past the offsets recorded as lost (loudly).
*/

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::format::SegmentReader;
use super::lost::{Lost, LostRanges};
use super::{Shared, lock};
use crate::journal::{Entry, JournalError, JournalReader, MAX_BATCH_BYTES};

/// A consumer's position in a [`FileJournal`](super::FileJournal).
pub(super) struct FileReader {
    shared: Arc<Shared>,
    durable: watch::Receiver<u64>,
    /// The offset of the next entry to return.
    next: u64,
    /// The open segment positioned at `next`. It is taken while a batch is read and put back
    /// only on success, so a cancelled or failed batch leaves `None` and the next call reopens
    /// at `next`, returning the same entries again.
    cursor: Option<Cursor>,
}

impl FileReader {
    /// A reader whose first entry will be `from`.
    pub fn new(shared: Arc<Shared>, from: u64) -> FileReader {
        let durable = shared.durable.subscribe();
        FileReader { shared, durable, next: from, cursor: None }
    }
}

#[async_trait]
impl JournalReader for FileReader {
    async fn next_batch(&mut self, max: usize, idle: Duration) -> Result<Vec<Entry>, JournalError> {
        let next = self.next;
        let limit = match tokio::time::timeout(idle, self.durable.wait_for(|&end| end > next)).await {
            Ok(Ok(end)) => *end,
            Err(_elapsed) => return Ok(Vec::new()),
            // `Shared` owns the sender, so it lives as long as this reader.
            Ok(Err(_closed)) => return Err(JournalError::Closed),
        };
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut cursor = self.cursor.take().unwrap_or_else(|| Cursor {
            shared: Arc::clone(&self.shared),
            next,
            segment: None,
            lost: None,
        });
        // Reads usually hit the page cache, but a consumer catching up after a restart reads from
        // disk, a MiB at a time: on the blocking pool that never stalls the runtime's workers, and
        // one hop per batch (not per entry) keeps its cost negligible.
        let (cursor, batch) = tokio::task::spawn_blocking(move || {
            let batch = cursor.read(max, limit);
            (cursor, batch)
        })
        .await
        .map_err(|error| match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_cancelled) => JournalError::Closed, // the runtime is shutting down
        })?;
        let batch = batch?;
        self.next = cursor.next;
        self.cursor = Some(cursor);
        Ok(batch)
    }
}

/// The blocking half of a reader: the segment being read and the offset of its next entry.
struct Cursor {
    shared: Arc<Shared>,
    next: u64,
    segment: Option<SegmentReader>,
    /// The offsets `sluice journal repair` recorded as lost, read on the first batch.
    lost: Option<LostRanges>,
}

impl Cursor {
    /// Reads the entries from `next` on, at most `max` and about [`MAX_BATCH_BYTES`] of payload,
    /// all below `limit` (which they must reach), skipping recorded lost offsets.
    fn read(&mut self, max: usize, limit: u64) -> Result<Vec<Entry>, JournalError> {
        let count = usize::try_from(limit.saturating_sub(self.next)).map_or(max, |available| available.min(max));
        let mut batch = Vec::with_capacity(count);
        let mut bytes = 0;
        while batch.len() < max && self.next < limit && bytes < MAX_BATCH_BYTES {
            let lost = match &self.lost {
                Some(lost) => lost,
                None => &*self.lost.insert(LostRanges::load(&self.shared.dir)?),
            };
            if let Some(Lost { range, note }) = lost.containing(self.next) {
                // Loud on purpose: these records are gone, and whoever runs sluice must know
                // which ones, every time a consumer passes them.
                let skipped = range.end - self.next;
                tracing::error!(
                    first = self.next,
                    end = range.end,
                    skipped,
                    note,
                    "journal: skipping offsets {}..{} recorded as lost by `sluice journal repair`; their records are not delivered",
                    self.next,
                    range.end
                );
                metrics::counter!("sluice_journal_lost_records_total").increment(skipped);
                self.next = range.end;
                self.segment = None;
                continue;
            }
            let segment = match &mut self.segment {
                Some(segment) => segment,
                None => self.segment.insert(open_at(&self.shared, self.next)?),
            };
            match segment.next_entry() {
                Ok(Some(decoded)) => {
                    let (kind, received_at_ms, payload) = (decoded.kind, decoded.received_at_ms, decoded.payload);
                    bytes += payload.len();
                    batch.push(Entry { offset: self.next, kind, received_at_ms, payload });
                    self.next += 1;
                }
                // The segment is exhausted below `limit`, so entry `next` starts the following one.
                Ok(None) => {
                    let following = open_at(&self.shared, self.next)?;
                    if following.base() != self.next {
                        return Err(JournalError::Corrupt {
                            path: segment.path().to_owned(),
                            position: segment.position(),
                            reason: format!(
                                "the segment ends before offset {}, but no segment starts there: a segment is missing",
                                self.next
                            ),
                        });
                    }
                    self.segment = Some(following);
                }
                Err(failure) => return Err(failure.into_error(segment.path())),
            }
        }
        Ok(batch)
    }
}

/// Opens the segment holding `offset` (which is durable) and positions it there.
fn open_at(shared: &Shared, offset: u64) -> Result<SegmentReader, JournalError> {
    let gone = |first| JournalError::OffsetGone { requested: offset, first };
    let (base, path) = {
        let segments = lock(&shared.segments);
        let holding = segments.partition_point(|segment| segment.base <= offset).checked_sub(1);
        match holding.and_then(|index| segments.get(index)) {
            Some(segment) => (segment.base, segment.path.clone()),
            None => return Err(gone(segments.front().map_or(offset, |segment| segment.base))),
        }
    };
    let mut reader = match SegmentReader::open(&path, base) {
        // Retention deleted it after we looked it up.
        Err(JournalError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(gone(shared.first_offset()));
        }
        opened => opened?,
    };
    // Offsets are implicit, so starting inside a segment means decoding the entries before.
    for skipped in base..offset {
        match reader.next_entry() {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(JournalError::Corrupt {
                    path,
                    position: reader.position(),
                    reason: format!("the segment ends at offset {skipped}, before offset {offset}"),
                });
            }
            Err(failure) => return Err(failure.into_error(&path)),
        }
    }
    Ok(reader)
}
