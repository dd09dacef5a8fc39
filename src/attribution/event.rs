/*!
Reading the few fields attribution needs out of a Segment event (`serde_json::Value`, Segment Spec
shape), tolerantly: a missing or mistyped field is `None`, never an error, because events were
already validated at ingest and attribution must still say something about odd ones.
*/

use chrono::{DateTime, Utc};
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

#[cfg(test)]
mod tests {
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
