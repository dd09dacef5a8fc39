/*!
Sources: the HTTP endpoints records arrive on.

Every request runs through one [`pipeline`]: authorize what the URL and headers carry, refuse at
once while sluice is over its limits, read the body within limits, then on the blocking pool
verify, take an ingest permit, decode and parse, journal the valid records, dead-letter the
refused ones only once the journal has answered, count it all and answer. A source plugs into it
with a [`pipeline::Source`], which says only how its requests are authorized and how a decoded
body becomes journal records and refusals (with the parsers in [`crate::record`]):

- [`split`]: Split's impressions webhook, `POST /v1/split/impressions` (a shared token);
- [`segment`]: Segment's webhook destination (an `X-Signature` HMAC over the body as sent) and
  its Tracking API (a write key in the Basic header or in the body, so that request takes its
  permit only once the body has shown it).

The metrics are the pipeline's too: `sluice_source_requests_total{source,status}` by endpoint
(`split`, `segment_webhook`, `segment_api`), `sluice_source_records_total{source,result}` and
`sluice_source_bytes_total{source,stage}` by source (`split`, `segment`).

What the parsers share besides — the shared-secret check and bounded array parsing — is here.
*/

pub mod pipeline;
pub mod segment;
pub mod split;

use std::cell::Cell;
use std::fmt;

use axum::Router;
use axum::http::{HeaderMap, header};
use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde_json::value::RawValue;
use subtle::ConstantTimeEq as _;

use crate::http::{AppError, AppState};

/// Every source's routes.
pub fn routes() -> Router<AppState> {
    Router::new().merge(split::routes()).merge(segment::routes())
}

/// Why a JSON array could not be taken apart.
#[derive(Debug)]
pub enum ArrayError {
    /// It holds more than the limit; parsing stopped there.
    TooMany {
        /// The limit.
        max: usize,
    },
    /// It is not a JSON array (or not valid JSON).
    Invalid(serde_json::Error),
}

/// Splits a JSON array into its elements' raw text, counting while it parses: past `max` elements
/// it stops at once, so a body of millions of tiny elements costs no more than `max` of them.
pub fn parse_array(text: &str, max: usize) -> Result<Vec<&RawValue>, ArrayError> {
    let over = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = Bounded { max, over: &over }.deserialize(&mut de).and_then(|elements| de.end().map(|()| elements));
    match parsed {
        Ok(elements) => Ok(elements),
        Err(_) if over.get() => Err(ArrayError::TooMany { max }),
        Err(e) => Err(ArrayError::Invalid(e)),
    }
}

/// The seed behind [`parse_array`]: collects at most `max` elements, noting in `over` why it stopped.
struct Bounded<'c> {
    max: usize,
    over: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Vec<&'de RawValue>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut elements = Vec::new();
        while let Some(element) = seq.next_element::<&'de RawValue>()? {
            if elements.len() == self.max {
                self.over.set(true);
                return Err(A::Error::custom(format_args!("more than {} elements", self.max)));
            }
            elements.push(element);
        }
        Ok(elements)
    }
}

/// Checks a shared secret given as `?token=`, `Authorization: Bearer …` or `X-Sluice-Token`.
/// With no secret configured every request passes.
pub fn authorize(expected: Option<&str>, query_token: Option<&str>, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(expected) = expected else { return Ok(()) };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let header_token = headers.get("x-sluice-token").and_then(|v| v.to_str().ok());
    let Some(given) = query_token.or(bearer).or(header_token) else {
        return Err(AppError::Unauthorized(
            "this endpoint needs the shared secret: add ?token=… to the webhook URL, or send `Authorization: Bearer …`"
                .into(),
        ));
    };
    // Constant-time: the comparison must not reveal how many leading bytes were right.
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(AppError::Unauthorized("the token is wrong; check the webhook URL configured in Split".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn arrays_are_counted_while_parsed_and_refused_past_the_limit() {
        let got = parse_array(" [1, {\"a\":[2]} ,\"x\"] ", 3).unwrap();
        assert_eq!(got.iter().map(|e| e.get()).collect::<Vec<_>>(), ["1", "{\"a\":[2]}", "\"x\""]);
        assert!(matches!(parse_array("[1,2,3,4]", 3), Err(ArrayError::TooMany { max: 3 })));
        // Past the limit, the rest is not even looked at.
        assert!(matches!(parse_array("[1,2,3,4, not json", 3), Err(ArrayError::TooMany { max: 3 })));
        assert!(matches!(parse_array("{}", 3), Err(ArrayError::Invalid(_))));
        assert!(matches!(parse_array("[1] trailing", 3), Err(ArrayError::Invalid(_))));
    }

    #[test]
    fn a_token_is_accepted_from_the_query_the_bearer_header_or_x_sluice_token() {
        let secret = Some("s3cret-s3cret-s3cret");
        let mut h = HeaderMap::new();
        assert!(authorize(secret, Some("s3cret-s3cret-s3cret"), &h).is_ok());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3cret-s3cret-s3cret"));
        assert!(authorize(secret, None, &h).is_ok());
        let mut h = HeaderMap::new();
        h.insert("x-sluice-token", HeaderValue::from_static("s3cret-s3cret-s3cret"));
        assert!(authorize(secret, None, &h).is_ok());
    }

    #[test]
    fn a_missing_or_wrong_token_is_401_and_no_secret_means_open() {
        let secret = Some("s3cret-s3cret-s3cret");
        let h = HeaderMap::new();
        assert!(matches!(authorize(secret, None, &h), Err(AppError::Unauthorized(_))));
        assert!(matches!(authorize(secret, Some("s3cret-s3cret-s3creT"), &h), Err(AppError::Unauthorized(_))));
        assert!(matches!(authorize(secret, Some("s3cret"), &h), Err(AppError::Unauthorized(_))));
        assert!(authorize(None, None, &h).is_ok());
    }
}
