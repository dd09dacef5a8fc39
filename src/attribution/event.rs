/*!
Reading the few fields attribution needs out of a Segment event (`serde_json::Value`, Segment Spec
shape), tolerantly: a missing or mistyped field is `None`, never an error, because events were
already validated at ingest and attribution must still say something about odd ones.
*/

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::record::segment;

/// The value at a path of object keys (`Value::pointer` would allocate for every segment).
pub(crate) fn at<'a>(event: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(event, |value, key| value.get(key))
}

/// A non-empty string field at a path of object keys.
pub(crate) fn str_at<'a>(event: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(event, path).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// The event's `type` (`page`, `track`, `identify`, `alias`, …).
pub(crate) fn kind(event: &Value) -> Option<&str> {
    str_at(event, &["type"])
}

/// `messageId`, Segment's de-duplication key.
pub(crate) fn message_id(event: &Value) -> Option<&str> {
    str_at(event, &["messageId"])
}

/// `anonymousId`: the device (cookie) id.
pub(crate) fn anonymous_id(event: &Value) -> Option<&str> {
    str_at(event, &["anonymousId"])
}

/// `userId`: the known user.
pub(crate) fn user_id(event: &Value) -> Option<&str> {
    str_at(event, &["userId"])
}

/// `previousId` of an `alias` event.
pub(crate) fn previous_id(event: &Value) -> Option<&str> {
    str_at(event, &["previousId"])
}

/// The event time as given (`timestamp`, else `originalTimestamp`, else `receivedAt`), with its
/// parsed value; `None` when none of them is an RFC 3339 time.
pub(crate) fn timestamp(event: &Value) -> Option<(&str, DateTime<Utc>)> {
    ["timestamp", "originalTimestamp", "receivedAt"].into_iter().find_map(|key| {
        let raw = str_at(event, &[key])?;
        let time = DateTime::parse_from_rfc3339(raw).ok()?.with_timezone(&Utc);
        Some((raw, time))
    })
}

/// A page-like event: a `page` event, or any event carrying a `context.page` object.
pub(crate) fn is_page_like(event: &Value) -> bool {
    kind(event) == Some("page") || at(event, &["context", "page"]).is_some_and(Value::is_object)
}

/// The page URL, from where Segment events carry it ([`segment::PAGE_URL_PATHS`]).
pub(crate) fn page_url(event: &Value) -> Option<&str> {
    segment::first_str(event.as_object()?, segment::PAGE_URL_PATHS)
}

/// The referrer, from where Segment events carry it ([`segment::REFERRER_PATHS`]): the page's,
/// the page call's property, or `context.referrer` (a string, or an object with `url` or `link`).
pub(crate) fn referrer(event: &Value) -> Option<&str> {
    segment::first_str(event.as_object()?, segment::REFERRER_PATHS)
}

/// The event cut down to the fields attribution reads (see the module docs of `attribution`), so
/// that an answer holds a few hundred bytes per event however much each one carried.
pub fn for_attribution(mut event: Value) -> Value {
    let Some(whole) = event.as_object_mut() else { return event };
    let mut slim = Map::new();
    for key in
        ["type", "messageId", "anonymousId", "userId", "previousId", "timestamp", "originalTimestamp", "receivedAt"]
    {
        if let Some(value) = whole.remove(key) {
            slim.insert(key.to_owned(), value);
        }
    }
    // Only objects are read below these keys; anything else reads as missing either way.
    let mut keep = |key: &str, fields: Option<&[&str]>| -> Option<Map<String, Value>> {
        let Some(Value::Object(mut object)) = whole.remove(key) else { return None };
        if let Some(fields) = fields {
            object.retain(|k, _| fields.contains(&k.as_str()));
        }
        Some(object)
    };
    if let Some(properties) = keep("properties", Some(&["url", "referrer"])) {
        slim.insert("properties".to_owned(), Value::Object(properties));
    }
    if let Some(mut context) = keep("context", Some(&["page", "referrer", "campaign"])) {
        for (key, fields) in [("page", ["url", "referrer"]), ("referrer", ["url", "link"])] {
            if let Some(Value::Object(object)) = context.get_mut(key) {
                object.retain(|k, _| fields.contains(&k.as_str()));
            }
        }
        slim.insert("context".to_owned(), Value::Object(context));
    }
    Value::Object(slim)
}

/// A stored event's JSON text read straight into [`for_attribution`]'s cut: serde skips the
/// fields attribution does not read without building them, which is most of an event's bytes
/// (`context.userAgent`, `context.library`, `traits`, the properties of a `track`). Text that the
/// shortcut cannot read (a repeated key, which serde's structs refuse) goes the long way.
pub fn for_attribution_from_str(raw: &str) -> serde_json::Result<Value> {
    match cut(raw) {
        Some(event) => Ok(event),
        None => serde_json::from_str(raw).map(for_attribution),
    }
}

/// A field that may be present with any value, `null` included (serde's `Option` would read a
/// `null` as absent, and [`for_attribution`] keeps it).
struct Field<T>(Option<T>);

impl<T> Default for Field<T> {
    fn default() -> Self {
        Field(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|value| Field(Some(value)))
    }
}

/// The top-level fields [`for_attribution`] keeps; `properties` and `context` stay text until
/// known to be objects.
#[derive(Deserialize)]
struct Top<'a> {
    #[serde(default, rename = "type")]
    kind: Field<Value>,
    #[serde(default, rename = "messageId")]
    message_id: Field<Value>,
    #[serde(default, rename = "anonymousId")]
    anonymous_id: Field<Value>,
    #[serde(default, rename = "userId")]
    user_id: Field<Value>,
    #[serde(default, rename = "previousId")]
    previous_id: Field<Value>,
    #[serde(default)]
    timestamp: Field<Value>,
    #[serde(default, rename = "originalTimestamp")]
    original_timestamp: Field<Value>,
    #[serde(default, rename = "receivedAt")]
    received_at: Field<Value>,
    #[serde(default, borrow)]
    properties: Field<&'a RawValue>,
    #[serde(default, borrow)]
    context: Field<&'a RawValue>,
}

/// `context` cut down: its `page` and `referrer` stay text until known to be objects.
#[derive(Deserialize)]
struct Context<'a> {
    #[serde(default, borrow)]
    page: Field<&'a RawValue>,
    #[serde(default, borrow)]
    referrer: Field<&'a RawValue>,
    #[serde(default)]
    campaign: Field<Value>,
}

/// `url` and `referrer` of `properties` or `context.page`.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    url: Field<Value>,
    #[serde(default)]
    referrer: Field<Value>,
}

/// `url` and `link` of an object `context.referrer`.
#[derive(Deserialize)]
struct ReferrerObject {
    #[serde(default)]
    url: Field<Value>,
    #[serde(default)]
    link: Field<Value>,
}

/// The cut of [`for_attribution`] read from text, or `None` where only a full parse can say.
fn cut(raw: &str) -> Option<Value> {
    if !is_object(raw) {
        return None;
    }
    let top: Top = serde_json::from_str(raw).ok()?;
    let mut slim = Map::new();
    let fields = [
        ("type", top.kind),
        ("messageId", top.message_id),
        ("anonymousId", top.anonymous_id),
        ("userId", top.user_id),
        ("previousId", top.previous_id),
        ("timestamp", top.timestamp),
        ("originalTimestamp", top.original_timestamp),
        ("receivedAt", top.received_at),
    ];
    insert(&mut slim, fields);
    if let Some(properties) = top.properties.0.filter(|raw| is_object(raw.get())) {
        let page: Page = serde_json::from_str(properties.get()).ok()?;
        slim.insert("properties".to_owned(), object([("url", page.url), ("referrer", page.referrer)]));
    }
    if let Some(context) = top.context.0.filter(|raw| is_object(raw.get())) {
        let context: Context = serde_json::from_str(context.get()).ok()?;
        let mut kept = Map::new();
        if let Some(page) = context.page.0 {
            let page = if is_object(page.get()) {
                let page: Page = serde_json::from_str(page.get()).ok()?;
                object([("url", page.url), ("referrer", page.referrer)])
            } else {
                serde_json::from_str(page.get()).ok()?
            };
            kept.insert("page".to_owned(), page);
        }
        if let Some(referrer) = context.referrer.0 {
            let referrer = if is_object(referrer.get()) {
                let referrer: ReferrerObject = serde_json::from_str(referrer.get()).ok()?;
                object([("url", referrer.url), ("link", referrer.link)])
            } else {
                serde_json::from_str(referrer.get()).ok()?
            };
            kept.insert("referrer".to_owned(), referrer);
        }
        insert(&mut kept, [("campaign", context.campaign)]);
        slim.insert("context".to_owned(), Value::Object(kept));
    }
    Some(Value::Object(slim))
}

/// Whether JSON text is an object: serde's structs also read arrays (as their fields in order),
/// and the cut keeps only objects' fields.
fn is_object(raw: &str) -> bool {
    raw.trim_start().starts_with('{')
}

/// Adds the fields that are present to `map`.
fn insert<const N: usize>(map: &mut Map<String, Value>, fields: [(&str, Field<Value>); N]) {
    for (key, field) in fields {
        if let Some(value) = field.0 {
            map.insert(key.to_owned(), value);
        }
    }
}

/// An object of the fields that are present.
fn object<const N: usize>(fields: [(&str, Field<Value>); N]) -> Value {
    let mut map = Map::new();
    insert(&mut map, fields);
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_attribution_cut_keeps_what_sessions_read_and_drops_the_rest() {
        let event = json!({
            "type": "page", "messageId": "m", "anonymousId": "a", "userId": "u", "timestamp": "2026-11-01T10:00:00Z",
            "context": {"page": {"url": "https://s/", "referrer": "https://r/", "title": "big"},
                        "campaign": {"source": "news"}, "referrer": {"link": "https://l/", "type": "x"},
                        "userAgent": "big", "library": {"name": "analytics.js"}},
            "properties": {"url": "https://s/", "referrer": "https://r/", "cart": [1, 2, 3]},
            "traits": {"email": "big"}, "integrations": {},
        });
        assert_eq!(
            for_attribution(event),
            json!({
                "type": "page", "messageId": "m", "anonymousId": "a", "userId": "u", "timestamp": "2026-11-01T10:00:00Z",
                "context": {"page": {"url": "https://s/", "referrer": "https://r/"}, "campaign": {"source": "news"},
                            "referrer": {"link": "https://l/"}},
                "properties": {"url": "https://s/", "referrer": "https://r/"},
            })
        );
        assert_eq!(for_attribution(json!({"context": "odd", "type": "track"})), json!({"type": "track"}));
    }

    #[test]
    fn the_cut_from_text_equals_the_cut_of_the_parsed_event_for_odd_shapes() {
        for raw in [
            r#"{"type":"page","context":{"page":"odd","referrer":"https://r/","campaign":null},"properties":[1,2]}"#,
            r#"{"type":null,"context":{"page":{"url":null},"referrer":{"url":"u","x":{"deep":[1]}}}}"#,
            r#"{"type":"track","type":"page","context":{"page":{"url":"a","url":"b"}}}"#,
            r#"{"context":[{"page":1}],"properties":{"url":"https://s/","referrer":"https://r/","x":1}}"#,
            r#"{"context":{"page":["u","r"],"referrer":["u","l"]},"properties":"x","userId":7}"#,
            r#"{"\u0074ype":"page","context":{"referrer":{"link":"https://\u00e9/"}}}"#,
            r#"[{"type":"page"}]"#,
            r#""text""#,
            r#"  {"type" : "page" , "context" : { "page" : { "url" : "u" } } }  "#,
        ] {
            let reference = serde_json::from_str(raw).map(for_attribution).unwrap();
            assert_eq!(for_attribution_from_str(raw).unwrap(), reference, "{raw}");
        }
        assert!(for_attribution_from_str("{not json").is_err());
    }

    /// JSON values whose keys are mostly the ones the cut looks for, at any depth.
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
            "x",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z/:.]{0,6}".prop_map(Value::from),
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
        fn the_cut_from_text_equals_the_cut_of_the_parsed_event(event in json_strategy()) {
            let raw = event.to_string();
            prop_assert_eq!(for_attribution_from_str(&raw).unwrap(), for_attribution(event));
        }
    }

    #[test]
    fn referrer_is_read_from_page_properties_or_context() {
        assert_eq!(referrer(&json!({"context": {"page": {"referrer": "https://a/"}}})), Some("https://a/"));
        assert_eq!(
            referrer(&json!({"context": {"page": {"referrer": ""}}, "properties": {"referrer": "https://b/"}})),
            Some("https://b/")
        );
        assert_eq!(referrer(&json!({"context": {"referrer": "https://c/"}})), Some("https://c/"));
        assert_eq!(
            referrer(&json!({"context": {"referrer": {"type": "x", "link": "https://d/"}}})),
            Some("https://d/")
        );
        assert_eq!(referrer(&json!({"context": {"referrer": {"url": "https://e/"}}})), Some("https://e/"));
        assert_eq!(referrer(&json!({"type": "page"})), None);
    }

    #[test]
    fn timestamp_keeps_the_string_as_given_and_falls_back_to_original_timestamp() {
        let event = json!({"timestamp": "2020-03-25T08:35:18.281Z"});
        let (raw, t) = timestamp(&event).unwrap();
        assert_eq!(raw, "2020-03-25T08:35:18.281Z");
        assert_eq!(t.timestamp_millis(), 1_585_125_318_281);
        assert!(timestamp(&json!({"timestamp": "yesterday", "originalTimestamp": "2020-03-25T08:35:18Z"})).is_some());
        assert!(timestamp(&json!({"timestamp": 12})).is_none());
    }

    #[test]
    fn page_like_means_page_type_or_context_page() {
        assert!(is_page_like(&json!({"type": "page"})));
        assert!(is_page_like(&json!({"type": "track", "context": {"page": {"url": "https://a/"}}})));
        assert!(!is_page_like(&json!({"type": "track", "context": {}})));
    }
}
