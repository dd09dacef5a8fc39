/*!
The Segment event: the one parser of Segment Spec messages (`track`, `page`, `identify`, `alias`,
`group`, `screen`), shared by both Segment sources at ingest and by every consumer afterwards.

At ingest, [`accept`] validates one event and fills in what Segment's own servers would have: a
`messageId` when the client sent none, `receivedAt`, and the clock-skew-corrected `timestamp`
(Tracking API only: webhook events were already processed by Segment and keep theirs). It adds a
`sluice` object with sluice's own arrival time, the route and the source the write key names, and
returns the JSON to journal. Consumers read that JSON back with [`SegmentEvent::parse`], which
applies the same checks and exposes the typed fields the store indexes.

The journaled event is the event as sent, re-serialised (key order may change), with those
fields added; `writeKey` is removed so that credentials never reach the store or the lake.
*/

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::RecordError;
use super::impression::{check_no_nul, strip_position};

/// Segment's limit on one event, in bytes of JSON.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Segment's limit on one `/v1/batch` request, in bytes of JSON.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Longest id (`messageId`, `userId`, `anonymousId`, `previousId`, `groupId`) or event name, in bytes.
pub const MAX_ID_BYTES: usize = 1024;

/// The Segment Spec call types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// An action the user did (`event` names it).
    Track,
    /// A web page view.
    Page,
    /// Who the user is, with traits.
    Identify,
    /// `previousId` and `userId` are the same person.
    Alias,
    /// The user belongs to a group (`groupId`).
    Group,
    /// A mobile screen view.
    Screen,
}

impl EventType {
    /// Every type, in the Spec's order.
    pub const ALL: [EventType; 6] =
        [EventType::Track, EventType::Page, EventType::Identify, EventType::Alias, EventType::Group, EventType::Screen];

    /// The type named `name` in an event's `type` field.
    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The name used in the `type` field and in the Tracking API's paths.
    pub fn name(self) -> &'static str {
        match self {
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Identify => "identify",
            EventType::Alias => "alias",
            EventType::Group => "group",
            EventType::Screen => "screen",
        }
    }
}

/// The route an event arrived by, which decides who owns its timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// sluice's Segment-compatible Tracking API: sluice is the first server and sets `receivedAt`
    /// and the corrected `timestamp`, as Segment's API does.
    TrackingApi,
    /// Segment's webhook destination: the event was processed by Segment, possibly hours ago.
    Webhook,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::TrackingApi => "tracking-api",
            Via::Webhook => "webhook",
        }
    }
}

/// How one request's events are accepted.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// The route.
    pub via: Via,
    /// When sluice received the request, epoch milliseconds.
    pub at_ms: i64,
    /// The source the write key names, if it names one.
    pub source: Option<&'a str>,
    /// How far in the future (after arrival) a timestamp may be before it is clamped, in ms.
    pub future_tolerance_ms: i64,
}

/// What a `/v1/batch` body gives every item (and a single-event endpoint gives its one event).
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchDefaults<'a> {
    /// Batch-level `context`: its keys are added to each item's `context` that lacks them.
    pub context: Option<&'a Map<String, Value>>,
    /// Batch-level `integrations`, merged the same way.
    pub integrations: Option<&'a Map<String, Value>>,
    /// Batch-level `sentAt`, for items without their own.
    pub sent_at: Option<&'a Value>,
    /// The type a single-event endpoint (`/v1/track` …) implies.
    pub implied_type: Option<EventType>,
}

/// Validates one event as sent, the `position`-th of its request, and returns the JSON to
/// journal (see the module docs).
pub fn accept(
    raw: &str,
    position: usize,
    defaults: &BatchDefaults<'_>,
    arrival: &Arrival<'_>,
) -> Result<String, RecordError> {
    if arrival.via == Via::TrackingApi && raw.len() > MAX_EVENT_BYTES {
        return Err(RecordError {
            field: None,
            reason: format!(
                "the event is {} bytes of JSON; Segment's limit is 32 KB ({MAX_EVENT_BYTES} bytes) per event",
                raw.len()
            ),
        });
    }
    let mut event = SegmentEvent::parse_map(raw)?;
    event.remove("writeKey");
    if let Some(t) = defaults.implied_type {
        // As Segment does: `/v1/track` makes a track call whatever the body says.
        event.insert("type".into(), Value::String(t.name().into()));
    }
    for (name, batch) in [("context", defaults.context), ("integrations", defaults.integrations)] {
        merge_defaults(&mut event, name, batch)?;
    }
    if arrival.via == Via::TrackingApi
        && (defaults.context.is_some() || defaults.integrations.is_some())
        && serialized_len_over(&event, MAX_EVENT_BYTES)
    {
        return Err(RecordError {
            field: None,
            reason: format!(
                "with the batch's `context` and `integrations` merged in, the event is over Segment's limit of 32 KB \
                 ({MAX_EVENT_BYTES} bytes) per event; send a smaller batch-level context"
            ),
        });
    }
    for field in ["messageId", "userId", "anonymousId", "previousId", "groupId"] {
        stringify_number(&mut event, field);
    }
    if !event.contains_key("messageId") {
        event.insert("messageId".into(), Value::String(derived_message_id(raw, position, &event, arrival)));
    }
    let clamped = set_timestamps(&mut event, defaults.sent_at, arrival)?;
    let mut sluice = Map::new();
    sluice.insert("arrivedAt".into(), arrival.at_ms.into());
    sluice.insert("via".into(), arrival.via.name().into());
    if let Some(source) = arrival.source {
        sluice.insert("source".into(), source.into());
    }
    if let Some(original) = clamped {
        sluice.insert("timestampClamped".into(), original.into());
    }
    keep_aside(&mut event, "sluice");
    event.insert("sluice".into(), Value::Object(sluice));
    SegmentEvent::from_map(&event)?;
    Ok(Value::Object(event).to_string())
}

/// True when `event` is more than `limit` bytes of JSON; stops counting there.
fn serialized_len_over(event: &Map<String, Value>, limit: usize) -> bool {
    struct Counter {
        left: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.left = self.left.checked_sub(buf.len()).ok_or_else(|| std::io::Error::other("over the limit"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // A map of JSON values always serializes: the only possible error is the counter's.
    serde_json::to_writer(Counter { left: limit }, event).is_err()
}

/// Moves a client's field named like one sluice writes (`sluice`) out of the way, so that
/// sluice's own wins and the client's is kept: under the name with a leading `_` (more `_` while
/// that name is taken too).
fn keep_aside(event: &mut Map<String, Value>, name: &str) {
    if let Some(theirs) = event.remove(name) {
        let mut aside = format!("_{name}");
        while event.contains_key(&aside) {
            aside.insert(0, '_');
        }
        event.insert(aside, theirs);
    }
}

/// A `messageId` for an event sent without one. With its own `timestamp`, the event's bytes
/// identify it: a client retrying it sends the same bytes and the store keeps one copy. Without
/// one, the same bytes may well be two real events (two clicks sent by `curl`), so the arrival
/// time and the position in the request make each one distinct; a retry of such an event cannot
/// be told from a second event, and is kept, as Segment's API would.
fn derived_message_id(raw: &str, position: usize, event: &Map<String, Value>, arrival: &Arrival<'_>) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(raw.as_bytes());
    if event.get("timestamp").is_none_or(Value::is_null) {
        h.update(&arrival.at_ms.to_le_bytes());
        h.update(&(position as u64).to_le_bytes());
    }
    format!("sluice-{:032x}", h.digest128())
}

/// Adds the batch's `context` (or `integrations`) keys that the event lacks.
fn merge_defaults(
    event: &mut Map<String, Value>,
    name: &str,
    batch: Option<&Map<String, Value>>,
) -> Result<(), RecordError> {
    let Some(batch) = batch else { return Ok(()) };
    match event.entry(name).or_insert_with(|| Value::Object(Map::new())) {
        Value::Object(own) => {
            for (k, v) in batch {
                own.entry(k.clone()).or_insert_with(|| v.clone());
            }
            Ok(())
        }
        Value::Null => {
            event.insert(name.into(), Value::Object(batch.clone()));
            Ok(())
        }
        other => Err(RecordError::field(name, format!("must be an object, not {}", kind(other)))),
    }
}

/// Ids sent as JSON numbers become strings, as Segment's libraries send them.
fn stringify_number(event: &mut Map<String, Value>, field: &str) {
    if let Some(v) = event.get_mut(field)
        && let Value::Number(n) = v
    {
        *v = Value::String(n.to_string());
    }
}

/// Sets `timestamp`, `originalTimestamp` and `receivedAt` as the route demands and clamps a
/// timestamp too far in the future; returns the clamped original, if one was.
fn set_timestamps(
    event: &mut Map<String, Value>,
    batch_sent_at: Option<&Value>,
    arrival: &Arrival<'_>,
) -> Result<Option<String>, RecordError> {
    let arrived = millis_to_time(arrival.at_ms, "sluice.arrivedAt")?;
    let timestamp = match arrival.via {
        Via::TrackingApi => {
            let original = match event.get("timestamp") {
                Some(v) if !v.is_null() => Some(parse_time(v, "timestamp")?),
                _ => None,
            };
            if event.get("sentAt").is_none_or(Value::is_null)
                && let Some(batch) = batch_sent_at
            {
                // Segment keeps the batch's `sentAt` on each of its events.
                event.insert("sentAt".into(), batch.clone());
            }
            let sent_at = match event.get("sentAt") {
                Some(v) if !v.is_null() => Some(parse_time(v, "sentAt")?),
                _ => None,
            };
            if let Some(original) = original {
                event.insert("originalTimestamp".into(), format_time(original).into());
            }
            event.insert("receivedAt".into(), format_time(arrived).into());
            match (original, sent_at) {
                // Segment's correction: the client's clock may be off, but the interval between
                // the call and the send is measured on that one clock and is right.
                (Some(original), Some(sent)) => arrived.checked_sub_signed(sent - original).ok_or_else(|| {
                    RecordError::field(
                        "sentAt",
                        "is so far from `timestamp` that the corrected time is outside the calendar",
                    )
                })?,
                (Some(original), None) => original,
                (None, _) => arrived,
            }
        }
        Via::Webhook => match event.get("timestamp") {
            Some(v) if !v.is_null() => parse_time(v, "timestamp")?,
            _ => match event.get("receivedAt") {
                Some(v) if !v.is_null() => parse_time(v, "receivedAt")?,
                _ => arrived,
            },
        },
    };
    // Saturating: the tolerance is bounded by the configuration, but no value of it may panic.
    let latest = chrono::TimeDelta::try_milliseconds(arrival.future_tolerance_ms)
        .and_then(|tolerance| arrived.checked_add_signed(tolerance))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let (timestamp, clamped) =
        if timestamp > latest { (arrived, Some(format_time(timestamp))) } else { (timestamp, None) };
    event.insert("timestamp".into(), format_time(timestamp).into());
    Ok(clamped)
}

/// One stored Segment event's typed fields, borrowing from the parsed JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentEvent<'a> {
    /// The call type.
    pub event_type: EventType,
    /// The event's identity: re-sent events share it and are stored once.
    pub message_id: &'a str,
    /// The `track` event's name.
    pub event: Option<&'a str>,
    /// The `page` or `screen` name.
    pub name: Option<&'a str>,
    /// The known user.
    pub user_id: Option<&'a str>,
    /// The device or browser.
    pub anonymous_id: Option<&'a str>,
    /// The `alias` call's former id.
    pub previous_id: Option<&'a str>,
    /// The `group` call's group.
    pub group_id: Option<&'a str>,
    /// When the event happened, epoch milliseconds (corrected for clock skew where sluice could).
    pub timestamp: i64,
    /// The client's own timestamp, as sent, epoch milliseconds.
    pub original_timestamp: Option<i64>,
    /// When the client sent it, epoch milliseconds.
    pub sent_at: Option<i64>,
    /// When the first server (Segment, or sluice's Tracking API) received it, epoch milliseconds.
    pub received_at: Option<i64>,
    /// When sluice received it, epoch milliseconds.
    pub arrived_at: Option<i64>,
    /// True when the timestamp was in the future and was clamped to the arrival time.
    pub timestamp_clamped: bool,
    /// The page URL (`context.page.url`, else `properties.url`).
    pub page_url: Option<&'a str>,
    /// The page referrer (`context.page.referrer`, else `properties.referrer`).
    pub page_referrer: Option<&'a str>,
    /// The source the write key names.
    pub source: Option<&'a str>,
}

impl<'a> SegmentEvent<'a> {
    /// Parses event JSON into a map of every field, however large: what [`accept`] rewrites.
    pub fn parse_map(json: &str) -> Result<Map<String, Value>, RecordError> {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(RecordError {
                field: None,
                reason: format!("an event must be a JSON object, not {}", kind(&other)),
            }),
            Err(e) => {
                Err(RecordError { field: None, reason: format!("not valid JSON: {}", strip_position(&e.to_string())) })
            }
        }
    }

    /// Parses journaled event JSON (as [`accept`] produced it) into a map to read its typed
    /// fields from: only what [`SegmentEvent::from_map`] reads is built, so an event whose
    /// `properties` or `traits` are megabytes costs a few hundred bytes here (whoever stores the
    /// event keeps its text as it is). Text the shortcut cannot read goes the long way, with its
    /// error. Not for [`accept`], which must keep every field.
    pub fn parse_journaled(json: &str) -> Result<Map<String, Value>, RecordError> {
        match read_fields(json) {
            Some(map) => Ok(map),
            None => SegmentEvent::parse_map(json),
        }
    }

    /// Reads and checks the typed fields of an event that went through [`accept`].
    pub fn from_map(event: &'a Map<String, Value>) -> Result<SegmentEvent<'a>, RecordError> {
        let type_name = string(event, "type")?.ok_or_else(|| {
            RecordError::field("type", "is required: one of track, page, identify, alias, group, screen")
        })?;
        let event_type = EventType::from_name(type_name).ok_or_else(|| {
            RecordError::field(
                "type",
                format!("`{type_name}` is not a Segment call type: use track, page, identify, alias, group or screen"),
            )
        })?;
        for field in ["properties", "traits", "context", "integrations"] {
            if let Some(v) = event.get(field)
                && !(v.is_object() || v.is_null())
            {
                return Err(RecordError::field(field, format!("must be an object, not {}", kind(v))));
            }
        }
        let message_id = string(event, "messageId")?.ok_or_else(|| RecordError::field("messageId", "is required"))?;
        let user_id = string(event, "userId")?;
        let anonymous_id = string(event, "anonymousId")?;
        let previous_id = string(event, "previousId")?;
        let group_id = string(event, "groupId")?;
        let name = string(event, "name")?;
        let event_name = string(event, "event")?;
        match event_type {
            EventType::Alias => {
                if previous_id.is_none() {
                    return Err(RecordError::field(
                        "previousId",
                        "an alias call needs `previousId` (the old id) and `userId`",
                    ));
                }
                if user_id.is_none() {
                    return Err(RecordError::field(
                        "userId",
                        "an alias call needs `previousId` and `userId` (the new id)",
                    ));
                }
            }
            _ if user_id.is_none() && anonymous_id.is_none() => {
                return Err(RecordError::field("userId", "every event needs `userId` or `anonymousId`"));
            }
            EventType::Track if event_name.is_none() => {
                return Err(RecordError::field("event", "a track call needs `event`, the name of the action"));
            }
            EventType::Group if group_id.is_none() => {
                return Err(RecordError::field("groupId", "a group call needs `groupId`"));
            }
            _ => {}
        }
        let time = |field: &str| -> Result<Option<i64>, RecordError> {
            match event.get(field) {
                Some(v) if !v.is_null() => Ok(Some(parse_time(v, field)?.timestamp_millis())),
                _ => Ok(None),
            }
        };
        let timestamp = time("timestamp")?.ok_or_else(|| RecordError::field("timestamp", "is required"))?;
        let sluice = event.get("sluice").and_then(Value::as_object);
        Ok(SegmentEvent {
            event_type,
            message_id,
            event: event_name,
            name,
            user_id,
            anonymous_id,
            previous_id,
            group_id,
            timestamp,
            original_timestamp: time("originalTimestamp")?,
            sent_at: time("sentAt")?,
            received_at: time("receivedAt")?,
            arrived_at: sluice.and_then(|s| s.get("arrivedAt")).and_then(Value::as_i64),
            timestamp_clamped: sluice.is_some_and(|s| s.contains_key("timestampClamped")),
            page_url: stored_str(event, PAGE_URL_PATHS)?,
            page_referrer: stored_str(event, REFERRER_PATHS)?,
            source: sluice.and_then(|s| s.get("source")).and_then(Value::as_str),
        })
    }
}

/// The top-level fields [`SegmentEvent::from_map`] reads, besides the objects below.
const READ_FIELDS: &[&str] = &[
    "type",
    "messageId",
    "userId",
    "anonymousId",
    "previousId",
    "groupId",
    "name",
    "event",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "receivedAt",
    "sluice",
];

/// The fields [`SegmentEvent::from_map`] reads, parsed ([`SegmentEvent::parse_journaled`]);
/// the objects it only checks the type of (`traits`, `integrations`) become empty ones and
/// `properties`/`context` keep the keys of
/// [`PAGE_URL_PATHS`] and [`REFERRER_PATHS`]. `None` for text that is not a JSON object (a
/// repeated key keeps its last value, as with `Value`).
fn read_fields(json: &str) -> Option<Map<String, Value>> {
    use serde_json::value::RawValue;
    use std::collections::BTreeMap;
    type Raw<'j> = BTreeMap<String, &'j RawValue>;
    /// A nested object with only `keys` parsed, or the value whole when it is not an object.
    fn cut(raw: &RawValue, keys: &[&str]) -> Option<Value> {
        if !raw.get().trim_start().starts_with('{') {
            return serde_json::from_str(raw.get()).ok();
        }
        let fields: Raw<'_> = serde_json::from_str(raw.get()).ok()?;
        let mut kept = Map::new();
        for key in keys {
            if let Some(value) = fields.get(*key) {
                kept.insert((*key).to_owned(), serde_json::from_str(value.get()).ok()?);
            }
        }
        Some(Value::Object(kept))
    }
    if !json.trim_start().starts_with('{') {
        return None;
    }
    let fields: Raw<'_> = serde_json::from_str(json).ok()?;
    let mut map = Map::new();
    for (key, raw) in &fields {
        let value = match key.as_str() {
            "properties" => cut(raw, &["url", "referrer"])?,
            "traits" | "integrations" => cut(raw, &[])?,
            "context" if raw.get().trim_start().starts_with('{') => {
                let context: Raw<'_> = serde_json::from_str(raw.get()).ok()?;
                let mut kept = Map::new();
                for (name, keys) in [("page", &["url", "referrer"][..]), ("referrer", &["url", "link"][..])] {
                    if let Some(value) = context.get(name) {
                        kept.insert(name.to_owned(), cut(value, keys)?);
                    }
                }
                Value::Object(kept)
            }
            "context" => serde_json::from_str(raw.get()).ok()?,
            read if READ_FIELDS.contains(&read) => serde_json::from_str(raw.get()).ok()?,
            _ => continue,
        };
        map.insert(key.clone(), value);
    }
    Some(map)
}

/// Where an event carries the URL of the page it happened on, first match wins: `context.page`
/// (analytics.js sets it on every call), then the `properties` of a `page` call.
pub const PAGE_URL_PATHS: &[&[&str]] = &[&["context", "page", "url"], &["properties", "url"]];

/// Where an event carries its referrer, first match wins; `context.referrer` is a string or
/// Segment's object with `url` or `link` (mobile deep links).
pub const REFERRER_PATHS: &[&[&str]] = &[
    &["context", "page", "referrer"],
    &["properties", "referrer"],
    &["context", "referrer"],
    &["context", "referrer", "url"],
    &["context", "referrer", "link"],
];

/// The first non-blank string found at one of `paths` (each a path of object keys), trimmed.
pub fn first_str<'a>(event: &'a Map<String, Value>, paths: &[&[&str]]) -> Option<&'a str> {
    first_str_at(event, paths).map(|(_, s)| s)
}

/// [`first_str`] and the path it was found at.
fn first_str_at<'a, 'p>(event: &'a Map<String, Value>, paths: &[&'p [&'p str]]) -> Option<(&'p [&'p str], &'a str)> {
    paths.iter().find_map(|path| {
        let (first, rest) = path.split_first()?;
        rest.iter()
            .try_fold(event.get(*first)?, |value, key| value.get(key))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| (*path, s))
    })
}

/// [`first_str`] for a value stored in a text column: one holding a NUL is refused, naming its path.
fn stored_str<'a>(event: &'a Map<String, Value>, paths: &[&[&str]]) -> Result<Option<&'a str>, RecordError> {
    match first_str_at(event, paths) {
        Some((path, s)) => check_no_nul(&path.join("."), s).map(|()| Some(s)),
        None => Ok(None),
    }
}

/// A string field: absent, null and "" are all `None`; another type or an over-long value is an error.
fn string<'a>(event: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, RecordError> {
    match event.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_ID_BYTES => {
            Err(RecordError::field(field, format!("is {} bytes long; the limit is {MAX_ID_BYTES}", s.len())))
        }
        Some(Value::String(s)) => check_no_nul(field, s).map(|()| Some(s.as_str())),
        Some(other) => Err(RecordError::field(field, format!("must be a string, not {}", kind(other)))),
    }
}

/// Reads a Segment timestamp: ISO 8601 / RFC 3339 (a time without an offset is UTC), or epoch
/// milliseconds as a number.
fn parse_time(v: &Value, field: &str) -> Result<DateTime<Utc>, RecordError> {
    let bad =
        || RecordError::field(field, format!("`{v}` is not a time: send ISO 8601, e.g. 2026-11-29T12:00:00.000Z"));
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc()))
            .map_err(|_| bad()),
        Value::Number(n) => n.as_i64().and_then(DateTime::from_timestamp_millis).ok_or_else(bad),
        _ => Err(RecordError::field(field, format!("must be an ISO 8601 time string, not {}", kind(v)))),
    }
}

fn millis_to_time(ms: i64, field: &str) -> Result<DateTime<Utc>, RecordError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| RecordError::field(field, format!("{ms} ms is not a time")))
}

/// Times are written as Segment writes them: UTC, milliseconds, `Z`.
fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The JSON type of `v`, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARRIVED: i64 = 1_764_417_600_000; // 2025-11-29T12:00:00.000Z

    fn api() -> Arrival<'static> {
        Arrival { via: Via::TrackingApi, at_ms: ARRIVED, source: Some("web"), future_tolerance_ms: 60_000 }
    }

    fn webhook() -> Arrival<'static> {
        Arrival { via: Via::Webhook, ..api() }
    }

    fn accepted(raw: Value, defaults: &BatchDefaults<'_>, arrival: &Arrival<'_>) -> Map<String, Value> {
        let json = accept(&raw.to_string(), 0, defaults, arrival).unwrap();
        SegmentEvent::parse_map(&json).unwrap()
    }

    fn refused(raw: &str) -> RecordError {
        accept(raw, 0, &BatchDefaults::default(), &api()).unwrap_err()
    }

    #[test]
    fn a_skewed_client_clock_is_corrected_from_sent_at_and_the_original_is_kept() {
        // The client's clock is an hour fast: it called at 13:00:00 and sent at 13:00:05 by its
        // clock; sluice received at 12:00:00, so the call really happened at 11:59:55.
        let e = accepted(
            json!({"type": "track", "event": "Bought", "userId": "u1",
                   "timestamp": "2025-11-29T13:00:00.000Z", "sentAt": "2025-11-29T13:00:05.000Z"}),
            &BatchDefaults::default(),
            &api(),
        );
        assert_eq!(e["timestamp"], "2025-11-29T11:59:55.000Z");
        assert_eq!(e["originalTimestamp"], "2025-11-29T13:00:00.000Z");
        assert_eq!(e["receivedAt"], "2025-11-29T12:00:00.000Z");
        assert_eq!(e["sentAt"], "2025-11-29T13:00:05.000Z");
        assert_eq!(e["sluice"], json!({"arrivedAt": ARRIVED, "via": "tracking-api", "source": "web"}));
    }

    #[test]
    fn the_batch_sent_at_applies_to_items_without_their_own() {
        let sent = json!("2025-11-29T12:00:10+00:00");
        let defaults = BatchDefaults { sent_at: Some(&sent), ..BatchDefaults::default() };
        let e = accepted(
            json!({"type": "page", "anonymousId": "a", "timestamp": "2025-11-29T12:00:00+00:00"}),
            &defaults,
            &api(),
        );
        assert_eq!(e["timestamp"], "2025-11-29T11:59:50.000Z");
        assert_eq!(e["sentAt"], "2025-11-29T12:00:10+00:00", "each event keeps the batch's sentAt");
    }

    #[test]
    fn without_a_timestamp_the_event_happened_when_it_was_received() {
        let e = accepted(json!({"type": "identify", "userId": "u"}), &BatchDefaults::default(), &api());
        assert_eq!(e["timestamp"], "2025-11-29T12:00:00.000Z");
        assert!(!e.contains_key("originalTimestamp"));
    }

    #[test]
    fn a_future_timestamp_is_clamped_to_the_arrival_and_flagged() {
        let e = accepted(
            json!({"type": "track", "event": "x", "userId": "u", "timestamp": "2030-01-01T00:00:00Z"}),
            &BatchDefaults::default(),
            &api(),
        );
        assert_eq!(e["timestamp"], "2025-11-29T12:00:00.000Z");
        assert_eq!(e["sluice"]["timestampClamped"], "2030-01-01T00:00:00.000Z");
        let parsed = SegmentEvent::from_map(&e).unwrap();
        assert!(parsed.timestamp_clamped);
        // Within the tolerance nothing is touched.
        let e = accepted(
            json!({"type": "track", "event": "x", "userId": "u", "timestamp": "2025-11-29T12:00:59Z"}),
            &BatchDefaults::default(),
            &api(),
        );
        assert_eq!(e["timestamp"], "2025-11-29T12:00:59.000Z");
    }

    #[test]
    fn webhook_events_keep_segments_timestamps_and_get_sluices_arrival_separately() {
        let e = accepted(
            json!({"type": "page", "anonymousId": "a", "messageId": "m1",
                   "timestamp": "2025-11-29T08:00:00.000Z", "receivedAt": "2025-11-29T08:00:01.000Z",
                   "sentAt": "2025-11-29T09:00:00.000Z"}),
            &BatchDefaults::default(),
            &webhook(),
        );
        assert_eq!(e["timestamp"], "2025-11-29T08:00:00.000Z");
        assert_eq!(e["receivedAt"], "2025-11-29T08:00:01.000Z");
        assert_eq!(e["sluice"]["arrivedAt"], ARRIVED);
        assert_eq!(e["sluice"]["via"], "webhook");
    }

    #[test]
    fn batch_context_and_integrations_fill_in_what_items_lack() {
        let context = json!({"library": {"name": "analytics-python"}, "ip": "10.0.0.1"});
        let integrations = json!({"All": true});
        let defaults = BatchDefaults {
            context: context.as_object(),
            integrations: integrations.as_object(),
            ..BatchDefaults::default()
        };
        let e = accepted(
            json!({"type": "track", "event": "x", "userId": "u", "context": {"ip": "10.9.9.9"}}),
            &defaults,
            &api(),
        );
        assert_eq!(e["context"], json!({"library": {"name": "analytics-python"}, "ip": "10.9.9.9"}));
        assert_eq!(e["integrations"], json!({"All": true}));
    }

    #[test]
    fn a_missing_message_id_is_derived_from_the_bytes_so_a_retry_gets_the_same_one() {
        let raw = r#"{"type":"track","event":"x","userId":"u","timestamp":"2025-11-29T11:00:00Z"}"#;
        let a = SegmentEvent::parse_map(&accept(raw, 0, &BatchDefaults::default(), &api()).unwrap()).unwrap();
        let b = SegmentEvent::parse_map(&accept(raw, 0, &BatchDefaults::default(), &api()).unwrap()).unwrap();
        assert_eq!(a["messageId"], b["messageId"]);
        assert!(a["messageId"].as_str().unwrap().starts_with("sluice-"));
        let other = raw.replace("11:00", "11:01");
        let c = SegmentEvent::parse_map(&accept(&other, 0, &BatchDefaults::default(), &api()).unwrap()).unwrap();
        assert_ne!(a["messageId"], c["messageId"]);
    }

    #[test]
    fn events_without_message_id_or_timestamp_are_each_kept_even_when_identical() {
        let raw = r#"{"type":"track","event":"Click","userId":"u"}"#;
        let id = |position, at_ms| {
            let arrival = Arrival { at_ms, ..api() };
            let json = accept(raw, position, &BatchDefaults::default(), &arrival).unwrap();
            SegmentEvent::parse_map(&json).unwrap()["messageId"].clone()
        };
        assert_ne!(id(0, ARRIVED), id(1, ARRIVED), "two clicks in one request");
        assert_ne!(id(0, ARRIVED), id(0, ARRIVED + 1), "two clicks in two requests");
        assert_eq!(id(0, ARRIVED), id(0, ARRIVED), "the id is still a function of what arrived");
    }

    #[test]
    fn the_write_key_is_never_journaled_and_numeric_ids_become_strings() {
        let e = accepted(
            json!({"type": "identify", "userId": 42, "writeKey": "secret"}),
            &BatchDefaults::default(),
            &api(),
        );
        assert!(!e.contains_key("writeKey"));
        assert_eq!(e["userId"], "42");
    }

    #[test]
    fn a_single_event_endpoint_sets_the_type() {
        let defaults = BatchDefaults { implied_type: Some(EventType::Page), ..BatchDefaults::default() };
        let e = accepted(json!({"anonymousId": "a", "type": "track"}), &defaults, &api());
        assert_eq!(e["type"], "page");
    }

    #[test]
    fn typed_fields_come_from_the_spec_places() {
        let e = accepted(
            json!({"type": "page", "anonymousId": "a", "userId": "u", "name": "Home", "messageId": "m",
                   "context": {"page": {"url": "https://x.test/?utm_source=g", "referrer": "https://www.google.com/"}}}),
            &BatchDefaults::default(),
            &api(),
        );
        let p = SegmentEvent::from_map(&e).unwrap();
        assert_eq!(p.event_type, EventType::Page);
        assert_eq!(p.message_id, "m");
        assert_eq!((p.anonymous_id, p.user_id, p.name), (Some("a"), Some("u"), Some("Home")));
        assert_eq!(p.page_url, Some("https://x.test/?utm_source=g"));
        assert_eq!(p.page_referrer, Some("https://www.google.com/"));
        assert_eq!(p.timestamp, ARRIVED);
        assert_eq!((p.received_at, p.arrived_at, p.source), (Some(ARRIVED), Some(ARRIVED), Some("web")));
        let e = accepted(
            json!({"type": "page", "anonymousId": "a", "properties": {"url": "https://p.test/", "referrer": ""}}),
            &BatchDefaults::default(),
            &api(),
        );
        let p = SegmentEvent::from_map(&e).unwrap();
        assert_eq!((p.page_url, p.page_referrer), (Some("https://p.test/"), None));
    }

    #[test]
    fn each_requirement_of_the_spec_is_refused_by_field() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            (r#"{"type":"track","event":"x"}"#, Some("userId"), "`userId` or `anonymousId`"),
            (r#"{"type":"track","userId":""}"#, Some("userId"), "`userId` or `anonymousId`"),
            (r#"{"type":"track","userId":"u"}"#, Some("event"), "needs `event`"),
            (r#"{"type":"alias","userId":"u"}"#, Some("previousId"), "needs `previousId`"),
            (r#"{"type":"alias","previousId":"p","anonymousId":"a"}"#, Some("userId"), "`userId`"),
            (r#"{"type":"group","userId":"u"}"#, Some("groupId"), "needs `groupId`"),
            (r#"{"userId":"u"}"#, Some("type"), "is required"),
            (r#"{"type":"click","userId":"u"}"#, Some("type"), "not a Segment call type"),
            (r#"{"type":"identify","userId":{"a":1}}"#, Some("userId"), "must be a string, not an object"),
            (r#"{"type":"identify","userId":"u","traits":[1]}"#, Some("traits"), "must be an object"),
            (r#"{"type":"identify","userId":"u","context":"x"}"#, Some("context"), "must be an object"),
            (r#"{"type":"identify","userId":"u","timestamp":"yesterday"}"#, Some("timestamp"), "not a time"),
            (r#"{"type":"identify","userId":"u","timestamp":true}"#, Some("timestamp"), "must be an ISO 8601"),
            (r#"{"type":"identify","userId":"u","sentAt":"soon"}"#, Some("sentAt"), "not a time"),
            (r#"[1,2]"#, None, "must be a JSON object, not an array"),
            (r#"{"type":"#, None, "not valid JSON"),
        ];
        for (raw, field, reason) in cases {
            let err = refused(raw);
            assert_eq!(err.field.as_deref(), *field, "{raw}: {err}");
            assert!(err.reason.contains(reason), "{raw}: {err}");
        }
        let long_id = format!(r#"{{"type":"identify","userId":"{}"}}"#, "u".repeat(MAX_ID_BYTES + 1));
        assert_eq!(refused(&long_id).field.as_deref(), Some("userId"));
    }

    #[test]
    fn an_event_over_32_kb_is_refused_on_the_api_with_the_limit() {
        let big = format!(
            r#"{{"type":"track","event":"x","userId":"u","properties":{{"p":"{}"}}}}"#,
            "x".repeat(MAX_EVENT_BYTES)
        );
        let err = refused(&big);
        assert!(err.reason.contains("32 KB"), "{err}");
        // Segment already enforced its limits on webhook events (and enriched them since).
        assert!(accept(&big, 0, &BatchDefaults::default(), &webhook()).is_ok());
    }

    #[test]
    fn a_journaled_event_with_huge_properties_is_read_without_building_them() {
        let big: Vec<Value> = (0..10_000).map(|i| json!({"i": i})).collect();
        let event = json!({
            "type": "track", "event": "Bought", "messageId": "m", "anonymousId": "a",
            "timestamp": "2026-11-01T10:00:00Z", "properties": {"cart": big, "url": "https://shop/"},
            "traits": {"t": [1, 2, 3]}, "context": {"page": {"url": "https://p/", "title": "x"}, "userAgent": "u"},
            "custom": {"anything": [1]},
        });
        let map = SegmentEvent::parse_journaled(&event.to_string()).unwrap();
        assert_eq!(map["properties"], json!({"url": "https://shop/"}));
        assert_eq!(map["traits"], json!({}));
        assert_eq!(map["context"], json!({"page": {"url": "https://p/"}}));
        assert!(!map.contains_key("custom"));
        assert_eq!(SegmentEvent::from_map(&map).unwrap().page_url, Some("https://p/"));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// Events (and not quite events) whose keys are mostly the ones `from_map` reads, with
        /// values of every JSON type at any depth, valid times among them.
        fn event_strategy() -> impl Strategy<Value = Value> {
            const KEYS: &[&str] = &[
                "type",
                "messageId",
                "userId",
                "anonymousId",
                "previousId",
                "timestamp",
                "sentAt",
                "sluice",
                "properties",
                "context",
                "traits",
                "page",
                "referrer",
                "url",
                "link",
                "source",
                "arrivedAt",
                "x",
            ];
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i32>().prop_map(Value::from),
                proptest::sample::select(
                    &["track", "page", "alias", "m1", "2026-11-01T10:00:00Z", "https://a/", ""][..]
                )
                .prop_map(Value::from),
            ];
            let value = leaf.prop_recursive(3, 32, 5, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                    proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..5).prop_map(|fields| {
                        Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                    }),
                ]
            });
            proptest::collection::vec((proptest::sample::select(KEYS), value), 0..10).prop_map(|fields| {
                let mut event: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                // Often enough a valid event that the typed fields, not only the errors, are compared.
                event.entry("type").or_insert("page".into());
                event.entry("messageId").or_insert("m1".into());
                event.entry("anonymousId").or_insert("a1".into());
                event.entry("timestamp").or_insert("2026-11-01T10:00:00Z".into());
                Value::Object(event)
            })
        }

        proptest! {
            #[test]
            fn arbitrary_input_never_panics_and_what_is_accepted_parses_back(raw in "\\PC{0,200}") {
                if let Ok(json) = accept(&raw, 0, &BatchDefaults::default(), &api()) {
                    let map = SegmentEvent::parse_map(&json).unwrap();
                    prop_assert!(SegmentEvent::from_map(&map).is_ok());
                }
            }

            #[test]
            fn the_fields_read_from_a_cut_map_are_those_of_the_whole_event(event in event_strategy()) {
                let json = event.to_string();
                let (cut, whole) = (SegmentEvent::parse_journaled(&json), SegmentEvent::parse_map(&json));
                let typed = |map: &Result<Map<String, Value>, RecordError>| match map {
                    Ok(map) => format!("{:?}", SegmentEvent::from_map(map)),
                    Err(e) => format!("{e:?}"),
                };
                prop_assert_eq!(typed(&cut), typed(&whole));
            }

            #[test]
            fn arbitrary_field_values_never_panic(
                user in proptest::option::of("\\PC{0,20}"),
                ts in proptest::option::of(any::<i64>()),
                sent in proptest::option::of("\\PC{0,30}"),
            ) {
                let mut e = json!({"type": "track", "event": "e", "anonymousId": "a"});
                if let Some(u) = user { e["userId"] = u.into(); }
                if let Some(t) = ts { e["timestamp"] = t.into(); }
                if let Some(s) = sent { e["sentAt"] = s.into(); }
                let _ = accept(&e.to_string(), 0, &BatchDefaults::default(), &api());
            }
        }
    }
}
