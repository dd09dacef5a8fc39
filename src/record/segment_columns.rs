/*!
The Segment event's column table (see [`super::schema`]): the typed fields the store indexes and
the lake's Parquet objects carry, beside `raw`, the whole event as journaled.
*/

use super::schema::{Column, Kind, RowError, Value};
use super::segment::SegmentEvent;

/// The event's columns, in the order of the lake's Parquet schema (Segment's own names), then
/// those only the store has: whether the timestamp was clamped, and the journal offset.
pub const COLUMNS: [Column; 19] = [
    Column::new("message_id", Kind::Text).required().view().parquet("messageId", 0),
    Column::new("type", Kind::Text).required().view().parquet("type", 1),
    Column::new("event", Kind::Text).parquet("event", 2),
    Column::new("name", Kind::Text).parquet("name", 3),
    Column::new("user_id", Kind::Text).view().parquet("userId", 4),
    Column::new("anonymous_id", Kind::Text).view().parquet("anonymousId", 5),
    Column::new("previous_id", Kind::Text).view().parquet("previousId", 6),
    Column::new("group_id", Kind::Text).parquet("groupId", 7),
    Column::new("page_url", Kind::Text).parquet("pageUrl", 8),
    Column::new("page_referrer", Kind::Text).parquet("pageReferrer", 9),
    Column::new("source", Kind::Text).parquet("source", 10),
    Column::new("timestamp", Kind::Millis).required().view().parquet("timestamp", 11),
    Column::new("original_timestamp", Kind::Millis).parquet("originalTimestamp", 12),
    Column::new("sent_at", Kind::Millis).parquet("sentAt", 13),
    Column::new("received_at", Kind::Millis).parquet("receivedAt", 14),
    Column::new("arrived_at", Kind::Millis).required().parquet("receptionTimestamp", 15),
    Column::new("raw", Kind::Json).required().view().parquet("raw", 16),
    Column::new("timestamp_clamped", Kind::Bool).required(),
    Column::new("journal_offset", Kind::Int).required(),
];

/// How many of [`COLUMNS`] an event has values for; the store adds the last, the journal offset.
pub const RECORD_COLUMNS: usize = 18;

/// An event's values for the first [`RECORD_COLUMNS`] of [`COLUMNS`], in their order: `e` parsed
/// from `raw`, which sluice received at `arrived_at` (epoch ms).
pub fn values<'a>(e: &'a SegmentEvent<'_>, raw: &'a str, arrived_at: i64) -> [Value<'a>; RECORD_COLUMNS] {
    [
        Value::Text(&e.message_id),
        Value::Text(e.event_type.name()),
        Value::text(e.event.as_deref()),
        Value::text(e.name.as_deref()),
        Value::text(e.user_id.as_deref()),
        Value::text(e.anonymous_id.as_deref()),
        Value::text(e.previous_id.as_deref()),
        Value::text(e.group_id.as_deref()),
        Value::text(e.page_url.as_deref()),
        Value::text(e.page_referrer.as_deref()),
        Value::text(e.source.as_deref()),
        Value::Int(e.timestamp),
        Value::int(e.original_timestamp),
        Value::int(e.sent_at),
        Value::int(e.received_at),
        Value::Int(arrived_at),
        Value::Text(raw),
        Value::Bool(e.timestamp_clamped),
    ]
}

/// How many of [`COLUMNS`] an [`EventView`] reads back.
pub const VIEW_COLUMNS: usize = 7;

/// One stored Segment event, borrowed from the database row being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventView<'r> {
    /// The event's identity.
    pub message_id: &'r str,
    /// The call type.
    pub event_type: &'r str,
    /// The known user.
    pub user_id: Option<&'r str>,
    /// The device or browser.
    pub anonymous_id: Option<&'r str>,
    /// The `alias` call's former id.
    pub previous_id: Option<&'r str>,
    /// When it happened, epoch milliseconds.
    pub timestamp: i64,
    /// The whole event as journaled.
    pub raw: &'r str,
}

impl<'r> EventView<'r> {
    /// The view of a stored row: the values of the [`COLUMNS`] marked `view`, in their order.
    pub fn from_values(values: [Value<'r>; VIEW_COLUMNS]) -> Result<Self, RowError> {
        let [message_id, event_type, user_id, anonymous_id, previous_id, timestamp, raw] = values;
        let c = &COLUMNS;
        Ok(EventView {
            message_id: message_id.required_text(&c[0])?,
            event_type: event_type.required_text(&c[1])?,
            user_id: user_id.optional_text(&c[4])?,
            anonymous_id: anonymous_id.optional_text(&c[5])?,
            previous_id: previous_id.optional_text(&c[6])?,
            timestamp: timestamp.required_int(&c[11])?,
            raw: raw.required_text(&c[16])?,
        })
    }
}
