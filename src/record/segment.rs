/*!
The Segment event: the one parser of Segment Spec messages (`track`, `page`, `identify`, `alias`,
`group`, `screen`), shared by both Segment sources at ingest and by every consumer afterwards.

At ingest, [`accept`] validates one event and fills in what Segment's own servers would have: a
`messageId` when the client sent none, `receivedAt`, and the clock-skew-corrected `timestamp`
(Tracking API only: webhook events were already processed by Segment and keep theirs). It adds a
`sluice` object with sluice's own arrival time, the route and the source the write key names, and
returns the JSON to journal. Consumers read that JSON back with [`SegmentEvent::decode`], which
applies the same checks and yields the typed fields the store indexes.

The journaled event is the event as sent, re-serialised as `serde_json::Value` writes it (keys
sorted, compact), with those fields added; `writeKey` is removed so that credentials never reach
the store or the lake.

Each reader parses an event once and builds no `Value` tree (`record::json`): ingest parses it
into a `Node` (strings borrowed from the request), checks and rewrites that, and writes it out;
a consumer reads the journaled text's top level only (`Members`), and a nested object
(`context`, `properties`) only where a typed field lives in it. The rules below are written
once, over the `Json` trait, for both.
*/

use std::borrow::Cow;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::RecordError;
use super::impression::{check_no_nul, strip_position};
use super::ip::{self, IpPolicy};
use super::json::{Json, Kind, Members, Node};

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
    /// What becomes of `context.ip`.
    pub ip: IpPolicy,
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
    let mut event = parse_object(raw)?;
    event.remove("writeKey");
    if let Some(t) = defaults.implied_type {
        // As Segment does: `/v1/track` makes a track call whatever the body says.
        event.insert("type", Node::Str(t.name().into()));
    }
    for (name, batch) in [("context", defaults.context), ("integrations", defaults.integrations)] {
        merge_defaults(&mut event, name, batch)?;
    }
    // After the merge, so that the batch's `context.ip` is covered too; `keep` costs nothing.
    if arrival.ip != IpPolicy::Keep {
        scrub_ip(&mut event, arrival.ip);
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
        let id = if arrival.ip == IpPolicy::Keep {
            derived_message_id(raw, position, &event, arrival)
        } else {
            // Not the bytes as sent: the id is stored, and would let the address the policy
            // removed be found again by trying every one. A tree of JSON values always serializes.
            let scrubbed = serde_json::to_string(&event).unwrap_or_default();
            derived_message_id(&scrubbed, position, &event, arrival)
        };
        event.insert("messageId", Node::Str(id.into()));
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
    event.insert("sluice", Node::from_value(&Value::Object(sluice)));
    SegmentEvent::read(|key| event.member(key))?;
    // The event grows by sluice's fields, about 200 bytes.
    let mut json = Vec::with_capacity(raw.len() + 256);
    serde_json::to_writer(&mut json, &event)
        .map_err(|e| RecordError { field: None, reason: format!("cannot write it: {e}") })?;
    // serde_json writes UTF-8.
    String::from_utf8(json).map_err(|e| RecordError { field: None, reason: format!("cannot write it: {e}") })
}

/// Parses one event as sent: a JSON object, or the error `Value` would give.
fn parse_object(raw: &str) -> Result<Node<'_>, RecordError> {
    match Node::parse(raw) {
        Ok(event @ Node::Object(_)) => Ok(event),
        Ok(other) => Err(RecordError {
            field: None,
            reason: format!("an event must be a JSON object, not {}", (&other).kind().name()),
        }),
        Err(e) => {
            Err(RecordError { field: None, reason: format!("not valid JSON: {}", strip_position(&e.to_string())) })
        }
    }
}

/// True when `event` is more than `limit` bytes of JSON; stops counting there.
fn serialized_len_over(event: &Node<'_>, limit: usize) -> bool {
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
    // A tree of JSON values always serializes: the only possible error is the counter's.
    serde_json::to_writer(Counter { left: limit }, event).is_err()
}

/// Moves a client's field named like one sluice writes (`sluice`) out of the way, so that
/// sluice's own wins and the client's is kept: under the name with a leading `_` (more `_` while
/// that name is taken too).
fn keep_aside(event: &mut Node<'_>, name: &str) {
    if let Some(theirs) = event.remove(name) {
        let mut aside = format!("_{name}");
        while event.contains_key(&aside) {
            aside.insert(0, '_');
        }
        event.insert(&aside, theirs);
    }
}

/// A `messageId` for an event sent without one. With its own `timestamp`, the event's bytes
/// identify it: a client retrying it sends the same bytes and the store keeps one copy. Without
/// one, the same bytes may well be two real events (two clicks sent by `curl`), so the arrival
/// time and the position in the request make each one distinct; a retry of such an event cannot
/// be told from a second event, and is kept, as Segment's API would.
fn derived_message_id(raw: &str, position: usize, event: &Node<'_>, arrival: &Arrival<'_>) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(raw.as_bytes());
    if event.member("timestamp").is_none_or(Json::is_null) {
        h.update(&arrival.at_ms.to_le_bytes());
        h.update(&(position as u64).to_le_bytes());
    }
    format!("sluice-{:032x}", h.digest128())
}

/// Adds the batch's `context` (or `integrations`) keys that the event lacks.
fn merge_defaults(event: &mut Node<'_>, name: &str, batch: Option<&Map<String, Value>>) -> Result<(), RecordError> {
    let Some(batch) = batch else { return Ok(()) };
    match event.member_mut(name) {
        Some(own @ Node::Object(_)) => {
            for (k, v) in batch {
                if !own.contains_key(k) {
                    own.insert(k, Node::from_value(v));
                }
            }
            Ok(())
        }
        None | Some(Node::Null) => {
            event.insert(name, Node::from_map(batch));
            Ok(())
        }
        Some(other) => Err(RecordError::field(name, format!("must be an object, not {}", (&*other).kind().name()))),
    }
}

/// Applies `policy` to the event's `context.ip`: a value that is not a string is removed.
fn scrub_ip(event: &mut Node<'_>, policy: IpPolicy) {
    let Some(context) = event.member_mut("context") else { return };
    let kept = match context.member("ip") {
        None => return,
        Some(Node::Str(given)) => ip::apply(policy, given),
        Some(_) => None,
    };
    match kept {
        Some(kept) => context.insert("ip", Node::Str(kept.into())),
        None => drop(context.remove("ip")),
    }
}

/// A refused event as sent, for the dead-letter area, without its `writeKey` (a credential:
/// a write key or an ingest token) and with `policy` applied to its own `context.ip` (an event
/// that is not an object, or carries neither, is returned as it is).
pub fn scrub_refused(raw: &RawValue, policy: IpPolicy) -> Box<RawValue> {
    if let Ok(mut event @ Node::Object(_)) = Node::parse(raw.get()) {
        let key = event.remove("writeKey").is_some();
        let ip = policy != IpPolicy::Keep && event.member("context").is_some_and(|c| c.contains_key("ip"));
        if ip {
            scrub_ip(&mut event, policy);
        }
        if key || ip {
            // A tree of JSON values always serializes.
            return serde_json::value::to_raw_value(&event).unwrap_or_else(|_| raw.to_owned());
        }
    }
    raw.to_owned()
}

/// Ids sent as JSON numbers become strings, as Segment's libraries send them.
fn stringify_number(event: &mut Node<'_>, field: &str) {
    if let Some(v) = event.member_mut(field)
        && (&*v).kind() == Kind::Number
        && let Value::Number(n) = (&*v).to_value()
    {
        *v = Node::Str(n.to_string().into());
    }
}

/// Sets `timestamp`, `originalTimestamp` and `receivedAt` as the route demands and clamps a
/// timestamp too far in the future; returns the clamped original, if one was.
fn set_timestamps(
    event: &mut Node<'_>,
    batch_sent_at: Option<&Value>,
    arrival: &Arrival<'_>,
) -> Result<Option<String>, RecordError> {
    let arrived = millis_to_time(arrival.at_ms, "sluice.arrivedAt")?;
    let given = |event: &Node<'_>, field: &str| -> Result<Option<DateTime<Utc>>, RecordError> {
        match event.member(field) {
            Some(v) if !v.is_null() => Ok(Some(parse_time(v, field)?)),
            _ => Ok(None),
        }
    };
    let timestamp = match arrival.via {
        Via::TrackingApi => {
            let original = given(event, "timestamp")?;
            if event.member("sentAt").is_none_or(Json::is_null)
                && let Some(batch) = batch_sent_at
            {
                // Segment keeps the batch's `sentAt` on each of its events.
                event.insert("sentAt", Node::from_value(batch));
            }
            let sent_at = given(event, "sentAt")?;
            if let Some(original) = original {
                event.insert("originalTimestamp", Node::Str(format_time(original).into()));
            }
            event.insert("receivedAt", Node::Str(format_time(arrived).into()));
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
        Via::Webhook => match given(event, "timestamp")? {
            Some(timestamp) => timestamp,
            None => given(event, "receivedAt")?.unwrap_or(arrived),
        },
    };
    // Saturating: the tolerance is bounded by the configuration, but no value of it may panic.
    let latest = chrono::TimeDelta::try_milliseconds(arrival.future_tolerance_ms)
        .and_then(|tolerance| arrived.checked_add_signed(tolerance))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let (timestamp, clamped) =
        if timestamp > latest { (arrived, Some(format_time(timestamp))) } else { (timestamp, None) };
    event.insert("timestamp", Node::Str(format_time(timestamp).into()));
    Ok(clamped)
}

/// One Segment event's typed fields: what the store's columns and the lake's Parquet columns
/// hold. Text is borrowed from the event's JSON where it holds no escape.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentEvent<'a> {
    /// The call type.
    pub event_type: EventType,
    /// The event's identity: re-sent events share it and are stored once.
    pub message_id: Cow<'a, str>,
    /// The `track` event's name.
    pub event: Option<Cow<'a, str>>,
    /// The `page` or `screen` name.
    pub name: Option<Cow<'a, str>>,
    /// The known user.
    pub user_id: Option<Cow<'a, str>>,
    /// The device or browser.
    pub anonymous_id: Option<Cow<'a, str>>,
    /// The `alias` call's former id.
    pub previous_id: Option<Cow<'a, str>>,
    /// The `group` call's group.
    pub group_id: Option<Cow<'a, str>>,
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
    pub page_url: Option<Cow<'a, str>>,
    /// The page referrer (`context.page.referrer`, else `properties.referrer`).
    pub page_referrer: Option<Cow<'a, str>>,
    /// The source the write key names.
    pub source: Option<Cow<'a, str>>,
}

impl<'a> SegmentEvent<'a> {
    /// Reads journaled event JSON (as [`accept`] wrote it) into its typed fields, with the same
    /// checks. Only the top level is parsed, and of the nested objects only the keys the typed
    /// fields come from are looked up: an event whose `properties` or `traits` are megabytes
    /// costs a scan of them here, nothing built.
    pub fn decode(json: &'a str) -> Result<Self, RecordError> {
        match Members::parse(json) {
            Some(members) => SegmentEvent::read(|key| members.get(key)),
            // Not an object, or not JSON: the error the whole parse gives says which.
            None => Err(parse_object(json)
                .err()
                .unwrap_or_else(|| RecordError { field: None, reason: "not a JSON object sluice can read".into() })),
        }
    }

    /// Reads and checks the typed fields of an event whose top-level members `member` gives.
    pub(crate) fn read<J: Json<'a>>(member: impl Fn(&str) -> Option<J>) -> Result<Self, RecordError> {
        let type_name = string(member("type"), "type")?.ok_or_else(|| {
            RecordError::field("type", "is required: one of track, page, identify, alias, group, screen")
        })?;
        let event_type = EventType::from_name(&type_name).ok_or_else(|| {
            RecordError::field(
                "type",
                format!("`{type_name}` is not a Segment call type: use track, page, identify, alias, group or screen"),
            )
        })?;
        for field in ["properties", "traits", "context", "integrations"] {
            if let Some(v) = member(field)
                && !matches!(v.kind(), Kind::Object | Kind::Null)
            {
                return Err(RecordError::field(field, format!("must be an object, not {}", v.kind().name())));
            }
        }
        let message_id =
            string(member("messageId"), "messageId")?.ok_or_else(|| RecordError::field("messageId", "is required"))?;
        let user_id = string(member("userId"), "userId")?;
        let anonymous_id = string(member("anonymousId"), "anonymousId")?;
        let previous_id = string(member("previousId"), "previousId")?;
        let group_id = string(member("groupId"), "groupId")?;
        let name = string(member("name"), "name")?;
        let event_name = string(member("event"), "event")?;
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
            match member(field) {
                Some(v) if !v.is_null() => Ok(Some(parse_time(v, field)?.timestamp_millis())),
                _ => Ok(None),
            }
        };
        let timestamp = time("timestamp")?.ok_or_else(|| RecordError::field("timestamp", "is required"))?;
        let sluice = member("sluice").filter(|s| s.kind() == Kind::Object);
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
            arrived_at: sluice.and_then(|s| s.get("arrivedAt")).and_then(Json::as_i64),
            timestamp_clamped: sluice.is_some_and(|s| s.get("timestampClamped").is_some()),
            page_url: stored_str(&member, PAGE_URL_PATHS)?,
            page_referrer: stored_str(&member, REFERRER_PATHS)?,
            source: sluice.and_then(|s| s.get("source")).and_then(Json::as_str),
        })
    }
}

#[cfg(test)]
impl<'a> SegmentEvent<'a> {
    /// The typed fields of a parsed event: the reference [`SegmentEvent::decode`] is tested against.
    pub fn from_map(event: &'a Map<String, Value>) -> Result<Self, RecordError> {
        SegmentEvent::read(|key| event.get(key))
    }

    /// Parses event JSON into a map of every field.
    pub fn parse_map(json: &str) -> Result<Map<String, Value>, RecordError> {
        let Value::Object(map) = (&parse_object(json)?).to_value() else { unreachable!("parse_object yields objects") };
        Ok(map)
    }
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

/// The first non-blank string found at one of `paths` (each a path of object keys from the
/// event's top-level members, which `member` gives), trimmed.
pub(crate) fn first_str<'v, J: Json<'v>>(
    member: impl Fn(&str) -> Option<J>,
    paths: &[&[&str]],
) -> Option<Cow<'v, str>> {
    first_str_at(&member, paths).map(|(_, s)| s)
}

/// [`first_str`] and the path it was found at.
fn first_str_at<'v, 'p, J: Json<'v>>(
    member: &impl Fn(&str) -> Option<J>,
    paths: &[&'p [&'p str]],
) -> Option<(&'p [&'p str], Cow<'v, str>)> {
    paths.iter().find_map(|path| {
        let (first, rest) = path.split_first()?;
        let text = member(first)?.at(rest)?.as_str()?;
        let trimmed = trim(text);
        (!trimmed.is_empty()).then_some((*path, trimmed))
    })
}

/// `text` without leading and trailing whitespace, still borrowed where it was.
pub(crate) fn trim(text: Cow<'_, str>) -> Cow<'_, str> {
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
        Cow::Owned(s) if s.trim().len() == s.len() => Cow::Owned(s),
        Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
    }
}

/// [`first_str`] for a value stored in a text column: one holding a NUL is refused, naming its path.
fn stored_str<'v, J: Json<'v>>(
    member: &impl Fn(&str) -> Option<J>,
    paths: &[&[&str]],
) -> Result<Option<Cow<'v, str>>, RecordError> {
    match first_str_at(member, paths) {
        Some((path, s)) => check_no_nul(&path.join("."), &s).map(|()| Some(s)),
        None => Ok(None),
    }
}

/// A string field: absent, null and "" are all `None`; another type or an over-long value is an error.
fn string<'v, J: Json<'v>>(value: Option<J>, field: &str) -> Result<Option<Cow<'v, str>>, RecordError> {
    let Some(value) = value else { return Ok(None) };
    match value.kind() {
        Kind::Null => Ok(None),
        Kind::String => {
            let s = value.as_str().unwrap_or_default();
            if s.is_empty() {
                Ok(None)
            } else if s.len() > MAX_ID_BYTES {
                Err(RecordError::field(field, format!("is {} bytes long; the limit is {MAX_ID_BYTES}", s.len())))
            } else {
                check_no_nul(field, &s).map(|()| Some(s))
            }
        }
        other => Err(RecordError::field(field, format!("must be a string, not {}", other.name()))),
    }
}

/// Reads a Segment timestamp: ISO 8601 / RFC 3339 (a time without an offset is UTC), or epoch
/// milliseconds as a number.
fn parse_time<'v>(v: impl Json<'v>, field: &str) -> Result<DateTime<Utc>, RecordError> {
    let bad = || {
        RecordError::field(
            field,
            format!("`{}` is not a time: send ISO 8601, e.g. 2026-11-29T12:00:00.000Z", v.to_value()),
        )
    };
    match v.kind() {
        Kind::String => {
            let s = v.as_str().unwrap_or_default();
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .or_else(|_| NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc()))
                .map_err(|_| bad())
        }
        Kind::Number => v.as_i64().and_then(DateTime::from_timestamp_millis).ok_or_else(bad),
        other => Err(RecordError::field(field, format!("must be an ISO 8601 time string, not {}", other.name()))),
    }
}

fn millis_to_time(ms: i64, field: &str) -> Result<DateTime<Utc>, RecordError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| RecordError::field(field, format!("{ms} ms is not a time")))
}

/// Times are written as Segment writes them: UTC, milliseconds, `Z`.
fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARRIVED: i64 = 1_764_417_600_000; // 2025-11-29T12:00:00.000Z

    fn api() -> Arrival<'static> {
        Arrival {
            via: Via::TrackingApi,
            at_ms: ARRIVED,
            source: Some("web"),
            future_tolerance_ms: 60_000,
            ip: IpPolicy::Keep,
        }
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
    fn context_ip_is_truncated_or_dropped_before_journaling_the_batch_one_included() {
        let batch = json!({"ip": "198.51.100.23", "library": {"name": "analytics-python"}});
        let defaults = BatchDefaults { context: batch.as_object(), ..BatchDefaults::default() };
        let ip_of = |raw: Value, defaults: &BatchDefaults<'_>, arrival: &Arrival<'_>| {
            accepted(raw, defaults, arrival)["context"].get("ip").cloned()
        };
        let own = || json!({"type": "track", "event": "x", "userId": "u", "context": {"ip": "203.0.113.77"}});
        let bare = || json!({"type": "track", "event": "x", "userId": "u"});
        let truncate = Arrival { ip: IpPolicy::Truncate, ..api() };
        let drop = Arrival { ip: IpPolicy::Drop, ..api() };
        assert_eq!(ip_of(own(), &defaults, &truncate), Some(json!("203.0.113.0")));
        assert_eq!(ip_of(bare(), &defaults, &truncate), Some(json!("198.51.100.0")), "the batch's own");
        assert_eq!(ip_of(own(), &defaults, &drop), None);
        assert_eq!(ip_of(bare(), &defaults, &drop), None);
        assert_eq!(ip_of(own(), &defaults, &api()), Some(json!("203.0.113.77")), "keep keeps");
        let v6 = json!({"type": "page", "anonymousId": "a", "context": {"ip": "2001:db8:85a3:8d3::1"}});
        assert_eq!(
            ip_of(v6, &BatchDefaults::default(), &Arrival { via: Via::Webhook, ..truncate }),
            Some(json!("2001:db8:85a3::"))
        );
        for garbage in [json!("203.0.113.77:443"), json!(3405803853u32), json!({"v4": "203.0.113.77"}), json!(null)] {
            let e = json!({"type": "track", "event": "x", "userId": "u", "context": {"ip": garbage, "locale": "en"}});
            let context = accepted(e, &BatchDefaults::default(), &truncate)["context"].clone();
            assert_eq!(context, json!({"locale": "en"}), "{garbage} is removed, the rest of the context kept");
        }
    }

    #[test]
    fn a_derived_message_id_does_not_depend_on_the_address_a_policy_removed() {
        // The id is stored beside the event: were it a hash of the bytes as sent, the full
        // address could be found again by trying every one.
        let with = |ip: &str| json!({"type": "track", "event": "x", "userId": "u", "timestamp": "2026-11-30T10:00:00Z", "context": {"ip": ip}});
        let id = |e: Value, arrival: &Arrival<'_>| accepted(e, &BatchDefaults::default(), arrival)["messageId"].clone();
        let truncate = Arrival { ip: IpPolicy::Truncate, ..api() };
        let drop = Arrival { ip: IpPolicy::Drop, ..api() };
        assert_eq!(id(with("203.0.113.77"), &truncate), id(with("203.0.113.5"), &truncate));
        assert_eq!(id(with("203.0.113.77"), &drop), id(with("198.51.100.1"), &drop));
        assert_eq!(id(with("203.0.113.77"), &truncate), id(with("203.0.113.77"), &truncate), "a retry dedups");
        assert_ne!(id(with("203.0.113.77"), &api()), id(with("203.0.113.5"), &api()), "keep: the bytes as sent");
    }

    #[test]
    fn a_refused_events_context_ip_gets_the_policy_too() {
        let raw: Box<RawValue> =
            serde_json::from_str(r#"{"type":"track","userId":"u","context":{"ip":"203.0.113.77"}}"#).unwrap();
        let scrubbed: Value = serde_json::from_str(scrub_refused(&raw, IpPolicy::Truncate).get()).unwrap();
        assert_eq!(scrubbed["context"]["ip"], "203.0.113.0");
        let dropped: Value = serde_json::from_str(scrub_refused(&raw, IpPolicy::Drop).get()).unwrap();
        assert_eq!(dropped["context"], json!({}));
        assert_eq!(scrub_refused(&raw, IpPolicy::Keep).get(), raw.get(), "keep leaves the bytes as sent");
        let other: Box<RawValue> = serde_json::from_str(r#" [1, "x"] "#).unwrap();
        assert_eq!(scrub_refused(&other, IpPolicy::Drop).get(), other.get());
        // A write key is a credential: never kept, whatever the policy.
        let keyed: Box<RawValue> =
            serde_json::from_str(r#"{"type":"track","writeKey":"sluice_secret","userId":"u"}"#).unwrap();
        for policy in [IpPolicy::Keep, IpPolicy::Drop] {
            assert!(!scrub_refused(&keyed, policy).get().contains("sluice_secret"), "{policy:?}");
        }
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
        assert_eq!(
            (p.anonymous_id.as_deref(), p.user_id.as_deref(), p.name.as_deref()),
            (Some("a"), Some("u"), Some("Home"))
        );
        assert_eq!(p.page_url.as_deref(), Some("https://x.test/?utm_source=g"));
        assert_eq!(p.page_referrer.as_deref(), Some("https://www.google.com/"));
        assert_eq!(p.timestamp, ARRIVED);
        assert_eq!((p.received_at, p.arrived_at, p.source.as_deref()), (Some(ARRIVED), Some(ARRIVED), Some("web")));
        let e = accepted(
            json!({"type": "page", "anonymousId": "a", "properties": {"url": "https://p.test/", "referrer": ""}}),
            &BatchDefaults::default(),
            &api(),
        );
        let p = SegmentEvent::from_map(&e).unwrap();
        assert_eq!((p.page_url.as_deref(), p.page_referrer.as_deref()), (Some("https://p.test/"), None));
    }

    #[test]
    fn the_journaled_text_is_the_event_as_serde_json_value_writes_it() {
        // Keys sorted at every depth, a repeated key's last value, escapes and numbers re-written,
        // no whitespace: what the journal held before events were parsed into borrowed trees.
        let raw = r#" { "type" : "track", "event":"E\u00e9\/", "userId": 7, "messageId":"m",
            "properties": {"z": 1.50, "a": [1e2, {"y": null, "b": "\n"}], "a": -0, "big": 18446744073709551615},
            "timestamp": "2025-11-29T11:00:00Z", "context": {"z": true, "b": "x", "sluice": {}}, "sluice": 1 } "#;
        let out = accept(raw, 0, &BatchDefaults::default(), &api()).unwrap();
        let reparsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(reparsed.to_string(), out, "the text is in Value's own form");
        assert_eq!(
            out,
            concat!(
                r#"{"_sluice":1,"context":{"b":"x","sluice":{},"z":true},"event":"Eé/","messageId":"m","#,
                r#""originalTimestamp":"2025-11-29T11:00:00.000Z","properties":{"a":-0.0,"big":18446744073709551615,"z":1.5},"#,
                r#""receivedAt":"2025-11-29T12:00:00.000Z","sluice":{"arrivedAt":1764417600000,"source":"web","via":"tracking-api"},"#,
                r#""timestamp":"2025-11-29T11:00:00.000Z","type":"track","userId":"7"}"#
            )
        );
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
        let json = event.to_string();
        let decoded = SegmentEvent::decode(&json).unwrap();
        assert_eq!(decoded.page_url.as_deref(), Some("https://p/"));
        assert_eq!(decoded.page_referrer, None);
        assert!(matches!(decoded.message_id, Cow::Borrowed("m")), "text without escapes is borrowed");
        assert_eq!(Some(decoded), SegmentEvent::from_map(event.as_object().unwrap()).ok());
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
            fn the_fields_decoded_from_text_are_those_of_the_whole_event(event in event_strategy()) {
                let json = event.to_string();
                let whole = SegmentEvent::parse_map(&json);
                let reference = whole.as_ref().map_err(Clone::clone).and_then(SegmentEvent::from_map);
                prop_assert_eq!(SegmentEvent::decode(&json), reference);
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
