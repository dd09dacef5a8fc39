/*!
Journal entries turned into the rows a store writes: the one place both backends parse, hash and
skip entries, so SQLite and PostgreSQL store exactly the same rows for the same batch.
*/

use crate::journal::Entry;
use crate::record::{self, Decoded, DedupMode, IDENTITY_BYTES, Impression, SegmentEvent};

/// One journal entry parsed into what an insert binds.
pub(super) enum LoadRow<'e> {
    /// A Split impression, for the `impressions` table.
    Impression(ImpressionRow<'e>),
    /// A Segment event, for the `events` table.
    Event(EventRow<'e>),
}

/// An impression and what the loader adds to it.
pub(super) struct ImpressionRow<'e> {
    /// The impression, borrowing the entry's payload.
    pub imp: Impression<'e>,
    /// Its identity under the store's dedup mode.
    pub identity: [u8; IDENTITY_BYTES],
    /// Unknown fields as one JSON object.
    pub extra: Option<String>,
    /// When sluice received it, epoch milliseconds.
    pub received_at: i64,
    /// Its journal offset.
    pub offset: u64,
}

/// A Segment event: its JSON (stored whole) and the typed fields the columns come from.
pub(super) struct EventRow<'e> {
    event: SegmentEvent<'e>,
    /// The event's JSON as journaled.
    pub raw: &'e str,
    /// When sluice received it, epoch milliseconds.
    pub arrived_at: i64,
    /// Its journal offset.
    pub offset: u64,
}

impl<'e> EventRow<'e> {
    /// The typed fields (a copy of borrowed text: cheap).
    pub fn event(&self) -> SegmentEvent<'e> {
        self.event.clone()
    }
}

/// The rows among `entries`, in order: `Some` row for each entry that parses, `None` (logged)
/// for each that does not.
pub(super) fn rows(entries: &[Entry], mode: DedupMode) -> impl Iterator<Item = Option<LoadRow<'_>>> {
    entries.iter().map(move |entry| parse(entry, mode))
}

/// Each of `entries` that cannot be stored, with why: what the loader skips (and the store
/// loader dead-letters) when [`rows`] yields `None`.
pub(crate) fn unparseable(entries: &[Entry]) -> impl Iterator<Item = (&Entry, String)> {
    entries.iter().filter_map(|entry| read(entry, DedupMode::Exact).err().map(|reason| (entry, reason)))
}

fn parse(entry: &Entry, mode: DedupMode) -> Option<LoadRow<'_>> {
    match read(entry, mode) {
        Ok(row) => Some(row),
        Err(reason) => {
            // Ingest validated this record, so this means a bug, a damaged journal, or a record
            // journaled before a rule was tightened (a NUL in a text field); the entry is counted,
            // logged and dead-lettered rather than blocking every record behind it.
            tracing::error!(
                offset = entry.offset,
                kind = entry.kind.name(),
                reason,
                "journal entry cannot be stored; skipped"
            );
            None
        }
    }
}

fn read(entry: &Entry, mode: DedupMode) -> Result<LoadRow<'_>, String> {
    Ok(match record::decode(entry.kind, &entry.payload).map_err(|e| e.to_string())? {
        Decoded::Impression(imp) => LoadRow::Impression(ImpressionRow {
            identity: imp.identity(mode),
            extra: imp.extra_json(),
            received_at: entry.received_at_ms,
            offset: entry.offset,
            imp,
        }),
        Decoded::Event(event, raw) => {
            LoadRow::Event(EventRow { event, raw, arrived_at: entry.received_at_ms, offset: entry.offset })
        }
    })
}
