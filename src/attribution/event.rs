/*!
The few fields attribution reads from a Segment event (see the module docs of `attribution`),
read tolerantly into an [`Event`]: a missing or mistyped field is `None`, never an error, because
events were already validated at ingest and attribution must still say something about odd ones.

A stored event is read from its JSON text with the same lazy parse the store loader uses
([`crate::record::json`]): its top level only, and of `context` and `properties` only the keys
below, so an answer holds a few hundred bytes per event however much each one carried.
*/

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::AttributionSettings;
use super::referrer::{Campaign, Touchpoint, classify_with_campaign};
use crate::record::json::{Json, Kind, Members};
use crate::record::segment::{self, trim};

/// A Segment event as attribution sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    /// `type` (`page`, `track`, `identify`, `alias`, …).
    pub kind: Option<String>,
    /// `messageId`, Segment's de-duplication key.
    pub message_id: Option<String>,
    /// `anonymousId`: the device (cookie) id.
    pub anonymous_id: Option<String>,
    /// `userId`: the known user.
    pub user_id: Option<String>,
    /// `previousId` of an `alias` event.
    pub previous_id: Option<String>,
    /// The event time as given (`timestamp`, else `originalTimestamp`, else `receivedAt`, the
    /// first that is an RFC 3339 time), with its parsed value.
    pub timestamp: Option<(String, DateTime<Utc>)>,
    /// Whether the event carries a `context.page` object.
    pub has_page: bool,
    /// The page URL, from where Segment events carry it ([`segment::PAGE_URL_PATHS`]).
    pub page_url: Option<String>,
    /// The referrer, from where Segment events carry it ([`segment::REFERRER_PATHS`]): the
    /// page's, the page call's property, or `context.referrer` (a string, or an object with `url`
    /// or `link`).
    pub referrer: Option<String>,
    /// The UTM fields of `context.campaign`, the fallback for those the landing URL lacks.
    pub context_campaign: Campaign,
}

impl Event {
    /// The fields of an event whose top-level members `member` gives.
    pub fn read<'v, J: Json<'v>>(member: impl Fn(&str) -> Option<J>) -> Event {
        let text = |key: &str| member(key).and_then(non_blank);
        let timestamp = ["timestamp", "originalTimestamp", "receivedAt"].into_iter().find_map(|key| {
            let raw = text(key)?;
            let time = DateTime::parse_from_rfc3339(&raw).ok()?.with_timezone(&Utc);
            Some((raw, time))
        });
        let context = member("context");
        Event {
            kind: text("type"),
            message_id: text("messageId"),
            anonymous_id: text("anonymousId"),
            user_id: text("userId"),
            previous_id: text("previousId"),
            timestamp,
            has_page: context.and_then(|c| c.get("page")).is_some_and(|page| page.kind() == Kind::Object),
            page_url: segment::first_str(&member, segment::PAGE_URL_PATHS).map(String::from),
            referrer: segment::first_str(&member, segment::REFERRER_PATHS).map(String::from),
            context_campaign: context_campaign(context.and_then(|c| c.get("campaign"))),
        }
    }

    /// The fields of a parsed event (any JSON value: one that is not an object has none).
    pub fn from_value(event: &Value) -> Event {
        Event::read(|key| Json::get(event, key))
    }

    /// The fields of an event's JSON text (a stored event); an error only for text that is not JSON.
    pub fn from_json(text: &str) -> serde_json::Result<Event> {
        match Members::parse(text) {
            Some(members) => Ok(Event::read(|key| members.get(key))),
            // Not an object: none of the fields, unless it is not JSON at all.
            None => serde_json::from_str::<Value>(text).map(|event| Event::from_value(&event)),
        }
    }

    /// A page-like event: a `page` event, or any event carrying a `context.page` object.
    pub fn is_page_like(&self) -> bool {
        self.kind.as_deref() == Some("page") || self.has_page
    }
}

/// Classifies a Segment event that has a page (`page` events, or any event with `context.page`);
/// `None` for events without one. Reads the fields listed in [`super`]'s docs.
pub fn touchpoint(event: &Event, settings: &AttributionSettings) -> Option<Touchpoint> {
    if !event.is_page_like() {
        return None;
    }
    Some(classify_with_campaign(
        event.page_url.as_deref(),
        event.referrer.as_deref(),
        Some(&event.context_campaign),
        settings,
    ))
}

/// A non-blank string, trimmed.
fn non_blank<'v>(value: impl Json<'v>) -> Option<String> {
    let text = trim(value.as_str()?);
    (!text.is_empty()).then(|| text.into_owned())
}

/// The UTM fields of Segment's `context.campaign` object (`name` is `utm_campaign`); none
/// for anything else.
fn context_campaign<'v>(campaign: Option<impl Json<'v>>) -> Campaign {
    let Some(campaign) = campaign.filter(|c| c.kind() == Kind::Object) else { return Campaign::default() };
    let field = |key: &str| campaign.get(key).and_then(non_blank);
    Campaign {
        source: field("source"),
        medium: field("medium"),
        name: field("name"),
        term: field("term"),
        content: field("content"),
        id: field("id"),
        click_id: None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn an_event_keeps_what_sessions_read() {
        let event = json!({
            "type": "page", "messageId": "m", "anonymousId": "a", "userId": "u", "timestamp": "2026-11-01T10:00:00Z",
            "context": {"page": {"url": "https://s/", "referrer": "https://r/", "title": "big"},
                        "campaign": {"source": "news", "medium": 3}, "referrer": {"link": "https://l/", "type": "x"},
                        "userAgent": "big", "library": {"name": "analytics.js"}},
            "properties": {"url": "https://s/", "referrer": "https://r/", "cart": [1, 2, 3]},
            "traits": {"email": "big"}, "integrations": {},
        });
        let time = DateTime::parse_from_rfc3339("2026-11-01T10:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(
            Event::from_value(&event),
            Event {
                kind: Some("page".into()),
                message_id: Some("m".into()),
                anonymous_id: Some("a".into()),
                user_id: Some("u".into()),
                previous_id: None,
                timestamp: Some(("2026-11-01T10:00:00Z".into(), time)),
                has_page: true,
                page_url: Some("https://s/".into()),
                referrer: Some("https://r/".into()),
                context_campaign: Campaign { source: Some("news".into()), ..Campaign::default() },
            }
        );
        assert_eq!(Event::from_value(&json!({"context": "odd", "type": "track"})).kind.as_deref(), Some("track"));
    }

    #[test]
    fn an_event_read_from_text_equals_the_one_read_from_the_parsed_event_for_odd_shapes() {
        for raw in [
            r#"{"type":"page","context":{"page":"odd","referrer":"https://r/","campaign":null},"properties":[1,2]}"#,
            r#"{"type":null,"context":{"page":{"url":null},"referrer":{"url":"u","x":{"deep":[1]}}}}"#,
            r#"{"type":"track","type":"page","context":{"page":{"url":"a","url":"b"}}}"#,
            r#"{"context":[{"page":1}],"properties":{"url":"https://s/","referrer":"https://r/","x":1}}"#,
            r#"{"context":{"page":["u","r"],"referrer":["u","l"]},"properties":"x","userId":7}"#,
            r#"{"\u0074ype":"page","context":{"referrer":{"link":"https://\u00e9/"}}}"#,
            r#"{"type":" page ","timestamp":" 2020-03-25T08:35:18Z ","context":{"campaign":{"name":" n "}}}"#,
            r#"[{"type":"page"}]"#,
            r#""text""#,
            r#"  {"type" : "page" , "context" : { "page" : { "url" : "u" } } }  "#,
        ] {
            let reference = Event::from_value(&serde_json::from_str(raw).unwrap());
            assert_eq!(Event::from_json(raw).unwrap(), reference, "{raw}");
        }
        assert!(Event::from_json("{not json").is_err());
    }

    /// JSON values whose keys are mostly the ones attribution looks for, at any depth.
    fn json_strategy() -> impl Strategy<Value = Value> {
        const KEYS: &[&str] = &[
            "type",
            "messageId",
            "userId",
            "timestamp",
            "context",
            "properties",
            "page",
            "referrer",
            "url",
            "link",
            "campaign",
            "source",
            "x",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z/:. ]{0,6}".prop_map(Value::from),
            Just(Value::from("2020-03-25T08:35:18Z")),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..6)
                    .prop_map(|fields| { Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()) }),
            ]
        })
    }

    proptest! {
        #[test]
        fn an_event_read_from_text_equals_the_one_read_from_the_parsed_event(event in json_strategy()) {
            let raw = event.to_string();
            prop_assert_eq!(Event::from_json(&raw).unwrap(), Event::from_value(&event));
        }
    }

    #[test]
    fn referrer_is_read_from_page_properties_or_context() {
        let referrer = |event: Value| Event::from_value(&event).referrer;
        assert_eq!(referrer(json!({"context": {"page": {"referrer": "https://a/"}}})).as_deref(), Some("https://a/"));
        assert_eq!(
            referrer(json!({"context": {"page": {"referrer": ""}}, "properties": {"referrer": "https://b/"}}))
                .as_deref(),
            Some("https://b/")
        );
        assert_eq!(referrer(json!({"context": {"referrer": "https://c/"}})).as_deref(), Some("https://c/"));
        assert_eq!(
            referrer(json!({"context": {"referrer": {"type": "x", "link": "https://d/"}}})).as_deref(),
            Some("https://d/")
        );
        assert_eq!(referrer(json!({"context": {"referrer": {"url": "https://e/"}}})).as_deref(), Some("https://e/"));
        assert_eq!(referrer(json!({"type": "page"})), None);
    }

    #[test]
    fn timestamp_keeps_the_string_as_given_and_falls_back_to_original_timestamp() {
        let timestamp = |event: Value| Event::from_value(&event).timestamp;
        let (raw, t) = timestamp(json!({"timestamp": "2020-03-25T08:35:18.281Z"})).unwrap();
        assert_eq!(raw, "2020-03-25T08:35:18.281Z");
        assert_eq!(t.timestamp_millis(), 1_585_125_318_281);
        assert!(timestamp(json!({"timestamp": "yesterday", "originalTimestamp": "2020-03-25T08:35:18Z"})).is_some());
        assert!(timestamp(json!({"timestamp": 12})).is_none());
    }

    #[test]
    fn page_like_means_page_type_or_context_page() {
        let is_page_like = |event: Value| Event::from_value(&event).is_page_like();
        assert!(is_page_like(json!({"type": "page"})));
        assert!(is_page_like(json!({"type": "track", "context": {"page": {"url": "https://a/"}}})));
        assert!(!is_page_like(json!({"type": "track", "context": {}})));
    }
}
