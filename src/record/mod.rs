/*!
Records: what the sources accept and the journal carries.

Each record kind has one parser here, shared by ingest (validation) and by every consumer, and one
column table ([`schema`]) that every store, export and lake format is generated from.
*/

pub mod impression;
pub mod schema;
pub mod segment;
pub mod segment_columns;

pub use impression::{DedupMode, FieldLimits, IDENTITY_BYTES, Impression, RecordError};
pub use segment::{EventType, SegmentEvent};

/// The kind of a journaled record, stored in each journal entry's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// One Split impression object, as the webhook sent it.
    SplitImpression = 1,
    /// One Segment event, as [`segment::accept`] prepared it.
    SegmentEvent = 2,
}

impl RecordKind {
    /// The kind stored under this tag byte, if any.
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(RecordKind::SplitImpression),
            2 => Some(RecordKind::SegmentEvent),
            _ => None,
        }
    }

    /// The tag byte stored on disk.
    pub fn tag(self) -> u8 {
        self as u8
    }

    /// A short name for logs, metrics and dead letters.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::SplitImpression => "split_impression",
            RecordKind::SegmentEvent => "segment_event",
        }
    }
}
