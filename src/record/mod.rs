/*!
Records: what the sources accept and the journal carries.

Each record kind has one parser here, shared by ingest (validation) and by every consumer; one
column table ([`schema`]) that every store, export and lake format is generated from; and
[`decode`], how a consumer reads any journaled record: one parse into its typed fields.
*/

pub mod impression;
pub mod ip;
pub(crate) mod json;
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
    /// Every kind.
    pub const ALL: [RecordKind; 2] = [RecordKind::SplitImpression, RecordKind::SegmentEvent];

    /// The top-level members of a record of this kind that name a person: what an erasure and
    /// a suppression match (in the journal, the lake, the dead letters and at ingest).
    pub fn person_ids(self) -> &'static [&'static str] {
        match self {
            RecordKind::SplitImpression => &["key"],
            RecordKind::SegmentEvent => &["userId", "anonymousId", "previousId"],
        }
    }

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

/// A record's identity at the journal's entrance: a record sent again (a client's retry, through
/// any node) has the same id, and the journal keeps it once. For an impression it hashes Split's
/// identifying fields in [`DedupMode::Exact`] whatever the store's mode: the journal drops only
/// true re-deliveries, the store may collapse more. For a Segment event it hashes the `messageId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(pub u128);

impl RecordId {
    /// The id of a parsed impression.
    pub fn of_impression(impression: &Impression<'_>) -> RecordId {
        RecordId::hash(RecordKind::SplitImpression, &impression.identity(DedupMode::Exact))
    }

    /// The id of a Segment event with this `messageId`.
    pub fn of_event(message_id: &str) -> RecordId {
        RecordId::hash(RecordKind::SegmentEvent, message_id.as_bytes())
    }

    /// The id of a journaled record, read from its payload (a journal rebuilding its index of
    /// recent ids reads it this way; sources take it from what they parsed).
    pub fn of_payload(kind: RecordKind, payload: &[u8]) -> Result<RecordId, DecodeError> {
        let text = std::str::from_utf8(payload)?;
        match kind {
            RecordKind::SplitImpression => Impression::parse(text, &FieldLimits::NONE)
                .map(|impression| RecordId::of_impression(&impression))
                .map_err(DecodeError::Impression),
            RecordKind::SegmentEvent => match json::string_members(text, &["messageId"]).pop().flatten() {
                Some(message_id) => Ok(RecordId::of_event(&message_id)),
                None => Err(DecodeError::Event(RecordError::field("messageId", "is missing"))),
            },
        }
    }

    fn hash(kind: RecordKind, identity: &[u8]) -> RecordId {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&[kind.tag()]);
        h.update(identity);
        RecordId(h.digest128())
    }

    /// 32 lowercase hex digits: the `Nats-Msg-Id` a record is published with.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

/// A journaled record, decoded: its typed fields, text borrowed from the payload (owned only
/// where the JSON escaped it), and the payload's text, which the store and the lake keep.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A Split impression.
    Impression(Impression<'a>),
    /// A Segment event and its JSON text as journaled.
    Event(SegmentEvent<'a>, &'a str),
}

/// Why a journaled record cannot be decoded: ingest validated it, so this means a bug, a
/// damaged journal, or a record journaled before a rule was tightened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is not UTF-8 text.
    #[error("the record is not UTF-8: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    /// The payload is not a valid impression.
    #[error("not a valid impression: {0}")]
    Impression(RecordError),
    /// The payload is not a valid Segment event.
    #[error("not a valid Segment event: {0}")]
    Event(RecordError),
}

/// Decodes a journaled record of `kind`: what the store loader and the lake writer both read
/// records with, so that a record's payload is parsed once per consumer and the same way.
pub fn decode(kind: RecordKind, payload: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let text = std::str::from_utf8(payload)?;
    match kind {
        RecordKind::SplitImpression => {
            Impression::parse(text, &FieldLimits::NONE).map(Decoded::Impression).map_err(DecodeError::Impression)
        }
        RecordKind::SegmentEvent => {
            SegmentEvent::decode(text).map(|event| Decoded::Event(event, text)).map_err(DecodeError::Event)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_each_kind_into_its_typed_fields_or_says_why_not() {
        let imp = br#"{"key":"k","split":"s","treatment":"on","time":1700000000000,"label":"l"}"#;
        assert!(matches!(decode(RecordKind::SplitImpression, imp), Ok(Decoded::Impression(i)) if i.split == "s"));
        let event = r#"{"type":"page","messageId":"m","anonymousId":"a","timestamp":"2026-11-01T10:00:00Z"}"#;
        match decode(RecordKind::SegmentEvent, event.as_bytes()) {
            Ok(Decoded::Event(e, text)) => {
                assert_eq!((e.event_type, &*e.message_id, text), (EventType::Page, "m", event));
            }
            other => panic!("{other:?}"),
        }
        let err = decode(RecordKind::SegmentEvent, br#"{"type":"page"}"#).unwrap_err();
        assert!(matches!(&err, DecodeError::Event(e) if e.field.as_deref() == Some("messageId")), "{err}");
        assert!(err.to_string().starts_with("not a valid Segment event: field `messageId`"), "{err}");
        assert!(
            decode(RecordKind::SplitImpression, br#"{"split":"s"}"#)
                .unwrap_err()
                .to_string()
                .starts_with("not a valid impression")
        );
        assert!(matches!(decode(RecordKind::SegmentEvent, b"\xff"), Err(DecodeError::NotUtf8(_))));
    }
}
