/*!
[`EventQuery`]: which Segment events to read, parsed from HTTP query strings (`GET /api/events`)
and used by attribution to fetch a visitor's or a user's events; [`write_events`] streams them.

Each event is written as it was journaled: the Segment message with every field it carried,
plus Segment's processing fields and sluice's `sluice` object.
*/

use std::io::Write;

use super::filter::{check_window, limit_param, once, push, time_param};
use super::{ParamError, QueryError};
pub use crate::store::EventQuery;
use crate::store::{EventView, Store};

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    /// One event per line.
    Ndjson,
    /// One JSON array.
    Json,
}

impl EventFormat {
    /// The HTTP `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            EventFormat::Ndjson => "application/x-ndjson",
            EventFormat::Json => "application/json",
        }
    }
}

const KNOWN: &str = "messageId, type, event, userId, anonymousId, from, to, format or limit";

impl EventQuery {
    /// Parses name/value pairs (`anonymousId=a&type=page&from=2026-11-01`) into a query and format.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<(EventQuery, EventFormat), ParamError> {
        let mut q = EventQuery::default();
        let mut format: Option<&str> = None;
        for (name, value) in pairs {
            match name.as_str() {
                "messageId" => push(&mut q.message_ids, name, value)?,
                "type" => push(&mut q.types, name, value)?,
                "event" => push(&mut q.events, name, value)?,
                "userId" => push(&mut q.user_ids, name, value)?,
                "anonymousId" => push(&mut q.anonymous_ids, name, value)?,
                "from" => once(&mut q.from, name, || time_param(name, value))?,
                "to" => once(&mut q.to, name, || time_param(name, value))?,
                "format" => once(&mut format, name, || Ok(value.as_str()))?,
                "limit" => once(&mut q.limit, name, || limit_param(name, value))?,
                _ => {
                    return Err(ParamError {
                        param: name.clone(),
                        reason: format!("is not a known parameter; use {KNOWN}"),
                    });
                }
            }
        }
        check_window(q.from, q.to)?;
        let format = match format.unwrap_or("ndjson") {
            "ndjson" => EventFormat::Ndjson,
            "json" => EventFormat::Json,
            other => {
                return Err(ParamError {
                    param: "format".into(),
                    reason: format!("`{other}` is not a format for events; use ndjson or json"),
                });
            }
        };
        Ok((q, format))
    }
}

/// Streams the events matching `q` to `out` and returns how many there were.
pub fn write_events(
    store: &mut Store,
    q: &EventQuery,
    format: EventFormat,
    out: &mut impl Write,
) -> Result<u64, QueryError> {
    let mut first = true;
    if format == EventFormat::Json {
        out.write_all(b"[")?;
    }
    let n = store.query_events(q, &mut |e: &EventView<'_>| {
        match format {
            EventFormat::Ndjson => {
                out.write_all(e.raw.as_bytes())?;
                out.write_all(b"\n")?;
            }
            EventFormat::Json => {
                if !first {
                    out.write_all(b",")?;
                }
                out.write_all(e.raw.as_bytes())?;
            }
        }
        first = false;
        Ok(())
    })?;
    if format == EventFormat::Json {
        out.write_all(b"]")?;
    }
    out.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AnyOf;

    fn parse(v: &[(&str, &str)]) -> Result<(EventQuery, EventFormat), ParamError> {
        EventQuery::from_pairs(&v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>())
    }

    #[test]
    fn every_filter_parses_and_ndjson_is_the_default() {
        let (q, f) = parse(&[
            ("anonymousId", "a1"),
            ("anonymousId", "a2"),
            ("userId", "u"),
            ("type", "page"),
            ("event", "Bought"),
            ("messageId", "m"),
            ("from", "2026-11-01"),
            ("limit", "5"),
        ])
        .unwrap();
        assert_eq!(f, EventFormat::Ndjson);
        assert_eq!(q.anonymous_ids, Some(vec!["a1".into(), "a2".into()]));
        let len = |l: &AnyOf| l.as_ref().map(Vec::len);
        assert_eq!([len(&q.user_ids), len(&q.types), len(&q.events), len(&q.message_ids)], [Some(1); 4]);
        assert_eq!((q.from, q.limit), (Some(1_793_491_200_000), Some(5)));
        assert_eq!(parse(&[("format", "json")]).unwrap().1, EventFormat::Json);
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(parse(&[("split", "x")]).unwrap_err().param, "split");
        assert_eq!(parse(&[("format", "csv")]).unwrap_err().param, "format");
        assert_eq!(parse(&[("limit", "0")]).unwrap_err().param, "limit");
        assert_eq!(parse(&[("from", "2026-11-02"), ("to", "2026-11-01")]).unwrap_err().param, "to");
        assert_eq!(parse(&[("userId", "")]).unwrap_err().param, "userId");
    }
}
