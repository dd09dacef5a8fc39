/*!
Journal entries turned into the rows a store writes: the one place both backends parse, hash and
skip entries, so SQLite and PostgreSQL store exactly the same rows for the same batch.
*/

use crate::journal::Entry;
use crate::record::{DedupMode, FieldLimits, IDENTITY_BYTES, Impression, RecordKind};

/// One journal entry parsed into what an insert binds.
pub(super) struct LoadRow<'e> {
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

/// The impressions among `entries`, in order: `Some` row for each that parses, `None` (logged)
/// for each that does not. Entries of other kinds are left out: the journal is shared by every
/// source, and the loader's offset still moves past them.
pub(super) fn impressions(entries: &[Entry], mode: DedupMode) -> impl Iterator<Item = Option<LoadRow<'_>>> {
    entries.iter().filter(|entry| entry.kind == RecordKind::SplitImpression).map(move |entry| parse(entry, mode))
}

fn parse(entry: &Entry, mode: DedupMode) -> Option<LoadRow<'_>> {
    let parsed = std::str::from_utf8(&entry.payload)
        .map_err(|e| format!("payload is not UTF-8: {e}"))
        .and_then(|json| Impression::parse(json, &FieldLimits::NONE).map_err(|e| e.to_string()));
    match parsed {
        Ok(imp) => Some(LoadRow {
            identity: imp.identity(mode),
            extra: imp.extra_json(),
            received_at: entry.received_at_ms,
            offset: entry.offset,
            imp,
        }),
        Err(reason) => {
            // Ingest validated this record, so this means a bug or a damaged journal; the entry is
            // counted and logged rather than blocking every record behind it.
            tracing::error!(offset = entry.offset, reason, "journal entry is not a valid impression; skipped");
            None
        }
    }
}
