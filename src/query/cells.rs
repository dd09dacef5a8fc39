//! Reading the cells of [`Store::rows`](crate::store::Store::rows).

use crate::record::schema::Value;

/// A text cell, `""` for NULL.
pub(crate) fn text<'a>(v: Value<'a>) -> &'a str {
    opt(v).unwrap_or_default()
}

/// A text cell, `None` for NULL (or another type).
pub(crate) fn opt<'a>(v: Value<'a>) -> Option<&'a str> {
    match v {
        Value::Text(s) => Some(s),
        _ => None,
    }
}

/// An integer cell, 0 for NULL.
pub(crate) fn int(v: Value<'_>) -> i64 {
    match v {
        Value::Int(n) => n,
        _ => 0,
    }
}

/// Epoch milliseconds as RFC 3339 (UTC, milliseconds), or the number itself when out of range.
pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}
