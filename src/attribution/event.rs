/*!
Reading the few fields attribution needs out of a Segment event (`serde_json::Value`, Segment Spec
shape), tolerantly: a missing or mistyped field is `None`, never an error, because events were
already validated at ingest and attribution must still say something about odd ones.
*/

use chrono::{DateTime, Utc};
use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
