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
use axum::http::HeaderMap;
use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde_json::value::RawValue;
use subtle::ConstantTimeEq as _;

use crate::access::{Access, Refusal, Scope, SourceKind};
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

/// The token a request to a source carries: `?token=` (Split's webhook cannot set headers),
/// `Authorization: Bearer`, or `X-Sluice-Token`.
pub fn given_token<'a>(query_token: Option<&'a str>, headers: &'a HeaderMap) -> Option<&'a str> {
    let header_token = headers.get("x-sluice-token").and_then(|v| v.to_str().ok());
    query_token.or_else(|| crate::http::auth::bearer(headers)).or(header_token)
}

/// Checks a request to a source guarded by its own shared secret (`expected`, if configured)
/// and by the ingest tokens granted `kind`: what the token `given` may send there. A source
/// neither guards is open.
pub fn authorize(
    access: &Access,
    kind: SourceKind,
    expected: Option<&str>,
    given: Option<&str>,
) -> Result<Scope, AppError> {
    if expected.is_none() && !access.guards(kind) {
        return Ok(Scope::All);
    }
    let Some(given) = given else {
        return Err(AppError::Unauthorized(
            "this endpoint needs a token: send `Authorization: Bearer …` (Split's webhook, which cannot set headers: add ?token=… to its URL)".into(),
        ));
    };
    // Constant-time: the comparison must not reveal how many leading bytes were right.
    if expected.is_some_and(|expected| bool::from(given.as_bytes().ct_eq(expected.as_bytes()))) {
        return Ok(Scope::All);
    }
    match access.ingest(given, kind) {
        Ok((_, scope)) => Ok(scope),
        Err(Refusal::BadToken { .. }) => Err(AppError::Unauthorized(
            "the token is wrong: it is neither split.token nor one of [[auth.tokens]]; check the token the sender is configured with (Split: the webhook URL's ?token=)"
                .into(),
        )),
        Err(refusal) => Err(AppError::Denied(refusal)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};

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

    /// `split.token` unless `secret` is `None`, and the access rules `tokens` make.
    fn split_auth(secret: Option<&str>, given: Option<&str>, access: &Access) -> Result<Scope, AppError> {
        authorize(access, SourceKind::Split, secret, given)
    }

    fn tokens(entries: &[(&str, crate::access::Role, &str, &[&str])]) -> Access {
        let tokens = entries
            .iter()
            .map(|(name, role, secret, sources)| crate::access::TokenConfig {
                name: (*name).into(),
                roles: vec![*role],
                sha256: Some(crate::access::token_sha256_hex(secret)),
                token_file: None,
                sources: sources.iter().map(|s| s.to_string()).collect(),
            })
            .collect();
        Access::resolve(&crate::access::AuthConfig { tokens, ..Default::default() }).unwrap()
    }

    #[test]
    fn a_token_is_taken_from_the_query_the_bearer_header_or_x_sluice_token() {
        let mut h = HeaderMap::new();
        assert_eq!(given_token(Some("q"), &h), Some("q"));
        assert_eq!(given_token(None, &h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(given_token(None, &h), Some("b"));
        assert_eq!(given_token(Some("q"), &h), Some("q"), "the URL's token is the one Split's webhook sends");
        let mut h = HeaderMap::new();
        h.insert("x-sluice-token", HeaderValue::from_static("x"));
        assert_eq!(given_token(None, &h), Some("x"));
    }

    #[test]
    fn a_missing_or_wrong_token_is_401_and_no_secret_nor_ingest_token_means_open() {
        let secret = Some("s3cret-s3cret-s3cret");
        let none = Access::default();
        assert_eq!(split_auth(secret, Some("s3cret-s3cret-s3cret"), &none).unwrap(), Scope::All);
        assert!(matches!(split_auth(secret, None, &none), Err(AppError::Unauthorized(_))));
        assert!(matches!(split_auth(secret, Some("s3cret-s3cret-s3creT"), &none), Err(AppError::Unauthorized(_))));
        assert!(matches!(split_auth(secret, Some("s3cret"), &none), Err(AppError::Unauthorized(_))));
        assert_eq!(split_auth(None, None, &none).unwrap(), Scope::All);
    }

    #[test]
    fn ingest_tokens_guard_split_with_their_scope_beside_split_token() {
        use crate::access::Role::{Ingest, Read};
        let access = tokens(&[
            ("prod", Ingest, "prod-secret-0123456789", &["split:Production"]),
            ("web", Ingest, "web-secret-01234567890", &["segment"]),
            ("analyst", Read, "read-secret-0123456789", &[]),
        ]);
        // An ingest token granted split makes the webhook need a token even without split.token.
        assert!(matches!(split_auth(None, None, &access), Err(AppError::Unauthorized(_))));
        assert_eq!(
            split_auth(None, Some("prod-secret-0123456789"), &access).unwrap(),
            Scope::Only { token: "prod".into(), names: vec!["Production".into()] }
        );
        assert_eq!(
            split_auth(Some("legacy-secret-0123456789"), Some("legacy-secret-0123456789"), &access).unwrap(),
            Scope::All
        );
        let denied = |given| match split_auth(None, Some(given), &access) {
            Err(AppError::Denied(refusal)) => refusal.reason(),
            other => panic!("{other:?}"),
        };
        assert_eq!(denied("web-secret-01234567890"), "source_not_allowed");
        assert_eq!(denied("read-secret-0123456789"), "missing_role");
        assert!(matches!(split_auth(None, Some("nobody-0123456789"), &access), Err(AppError::Unauthorized(_))));
        // Only segment is guarded: split stays open.
        let segment_only = tokens(&[("web", Ingest, "web-secret-01234567890", &["segment"])]);
        assert_eq!(split_auth(None, None, &segment_only).unwrap(), Scope::All);
    }
}
