/*!
Segment events in, two ways Segment users already know:

- the **webhook destination**, `POST /v1/segment/webhook` (and the seed's `POST /events`): one
  event per POST, or a JSON array from "Webhooks (Actions)", signed with `X-Signature` (hex
  HMAC-SHA1 of the whole body, or of the one element of a one-element array, which is what
  Segment signs when it batches: only its first event) when a secret is set;
- the **HTTP Tracking API**, `POST /v1/{track,page,identify,alias,group,screen,batch,import}` and
  analytics.js's short forms `/v1/{t,p,i,a,g,s,b}`, so that analytics.js and Segment's server
  libraries can point their host at sluice, with write
  keys (HTTP Basic username, or `writeKey` in the body) and Segment's limits (32 KB per event,
  500 KB per batch).

Both plug into the [pipeline](super::pipeline), saying how a request is authorized and how its
body is parsed. Each event goes through [`crate::record::segment::accept`]; valid ones are
journaled, invalid ones dead-lettered with their reason, and the answer is 2xx only once the
journal has them: Segment retries 5xx and 429 for hours and drops on other 4xx, so durability
failures answer 503.
*/

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use axum::{Router, routing::post};
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use super::pipeline::{self, Answer, Batch, BodyLimits, Intake, Refused, Source};
use super::{ArrayError, parse_array};
use crate::access::{Access, Refusal, Scope, SourceKind};
use crate::config::Config;
use crate::http::AppError;
use crate::http::AppState;
use crate::http::auth::bearer;
use crate::http::body;
use crate::journal::Record;
use crate::record::ip::IpPolicy;
use crate::record::segment::{self, Arrival, BatchDefaults, EventType, MAX_BATCH_BYTES, Via};
use crate::record::{RecordError, RecordId, RecordKind};

/// Routes of both Segment sources.
pub fn routes() -> Router<AppState> {
    // analytics.js posts to the first letter of the call type (`/v1/t`, `/v1/p` …) and batches
    // to `/v1/b`; Segment's HTTP API documents the full names.
    let mut api =
        Router::new().route("/v1/batch", post(batch)).route("/v1/import", post(batch)).route("/v1/b", post(batch));
    for t in EventType::ALL {
        let handler =
            post(move |state: State<AppState>, headers: HeaderMap, body: Body| single(t, state, headers, body));
        api =
            api.route(&format!("/v1/{}", t.name()), handler.clone()).route(&format!("/v1/{}", &t.name()[..1]), handler);
    }
    // analytics.js posts from the visitor's browser, on the site's origin: the Tracking API must
    // answer CORS preflights and let any origin read its answers (the write key, not the origin,
    // is what authorizes, exactly as on Segment's own API).
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([Method::POST, Method::OPTIONS])
        // analytics.js adds `X-Retry-Count` and whatever headers its configuration names.
        .allow_headers(AllowHeaders::mirror_request())
        // No `allow_credentials`: the write key is the credential, and a browser must not send
        // (or let any origin read answers to) requests carrying the visitor's cookies.
        .max_age(Duration::from_secs(24 * 3600));
    Router::new().route("/v1/segment/webhook", post(webhook)).route("/events", post(webhook)).merge(api.layer(cors))
}

async fn webhook(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, AppError> {
    pipeline::run(&state, Webhook, None, &headers, body).await
}

async fn batch(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, AppError> {
    pipeline::run(&state, TrackingApi { implied: None }, None, &headers, body).await
}

async fn single(
    t: EventType,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    pipeline::run(&state, TrackingApi { implied: Some(t) }, None, &headers, body).await
}

/// The webhook destination in the [pipeline](super::pipeline): an optional signature, and one
/// event or an array of them.
struct Webhook;

/// What a webhook request's `X-Signature` proves.
enum Signature {
    /// No secret is configured: nothing to prove; the source an ingest token names, if one did.
    NotRequired(Option<String>),
    /// The header, not yet checked against the body.
    Given(Vec<u8>),
    /// Checked: what it covers.
    Covers(Signed),
}

impl Source for Webhook {
    type Credentials = Signature;
    const ENDPOINT: &'static str = "segment_webhook";
    const SOURCE: &'static str = "segment";
    const ANSWER: Answer = Answer::SuccessAndCounts;

    fn authorize(&self, state: &AppState, _query: Option<&str>, headers: &HeaderMap) -> Result<Signature, AppError> {
        // The signature is a header: a request without a well-formed one is refused unread.
        match state.config.segment.webhook_secret {
            Some(_) => Ok(Signature::Given(signature_header(headers)?)),
            None => {
                // Without a secret, an ingest token granted segment guards it (Segment's
                // webhook destination can send an `Authorization` header).
                let scope = super::authorize(&state.access, SourceKind::Segment, None, bearer(headers))?;
                Ok(Signature::NotRequired(source_of(scope)))
            }
        }
    }

    fn verify(&self, config: &Config, signature: &mut Signature, raw: &[u8]) -> Result<(), AppError> {
        // On the bytes as sent, before anything is inflated or parsed.
        if let (Signature::Given(given), Some(secret)) = (&*signature, &config.segment.webhook_secret) {
            *signature = Signature::Covers(verify_webhook_signature(secret, raw, given)?);
        }
        Ok(())
    }

    fn parse(&self, signature: Signature, plain: &Bytes, intake: &mut Intake<'_>) -> Result<Batch, AppError> {
        let text = utf8(plain)?;
        let elements = webhook_events(text, intake.config.limits.max_batch_records)?;
        if matches!(signature, Signature::Covers(Signed::SoleElement)) && elements.len() != 1 {
            return Err(AppError::Unauthorized(
                "`X-Signature` covers only the first event of this array, so the other events are unverified: \
                 sign the whole body, or turn off batching in Segment's Webhooks (Actions) destination"
                    .into(),
            ));
        }
        let source = match &signature {
            Signature::NotRequired(source) => source.as_deref(),
            Signature::Given(_) | Signature::Covers(_) => None,
        };
        let arrival = Arrival {
            via: Via::Webhook,
            at_ms: intake.received_at,
            source,
            future_tolerance_ms: intake.config.segment.future_tolerance_ms,
            ip: intake.config.privacy.ip,
        };
        Ok(prepare(&elements, &BatchDefaults::default(), &arrival).into_batch(arrival.ip))
    }
}

/// A webhook body's events: the body itself, or the elements of an array (at most `max`).
fn webhook_events(text: &str, max: usize) -> Result<Vec<&RawValue>, AppError> {
    if !text.trim_start().starts_with('[') {
        let event = serde_json::from_str(text).map_err(|e| {
            AppError::bad_request(format!("the body must be a Segment event (a JSON object) or an array of them: {e}"))
        })?;
        return Ok(vec![event]);
    }
    parse_array(text, max).map_err(|e| match e {
        ArrayError::TooMany { max } => {
            AppError::TooLarge(format!("the request holds more than {max} events (limits.max_batch_records)"))
        }
        ArrayError::Invalid(e) => AppError::bad_request(format!("the body must be an array of Segment events: {e}")),
    })
}

/// The Tracking API in the [pipeline](super::pipeline): `/v1/batch` (`implied` is `None`) or a
/// single-event endpoint, authorized by a write key.
struct TrackingApi {
    implied: Option<EventType>,
}

/// What the headers say about a Tracking API request's write key.
enum WriteKey {
    /// Checked (or none is needed): the source it names, if it names one.
    Names(Option<String>),
    /// Not in the headers: the body's `writeKey` must be checked.
    InBody,
}

impl Source for TrackingApi {
    type Credentials = WriteKey;
    const ENDPOINT: &'static str = "segment_api";
    const SOURCE: &'static str = "segment";
    const ANSWER: Answer = Answer::Success;

    fn body_limits(&self, _config: &Config) -> BodyLimits {
        BodyLimits { sent: MAX_BATCH_BYTES, decoded: MAX_BATCH_BYTES }
    }

    fn body_error(&self, e: body::BodyError) -> AppError {
        over_batch_limit(e)
    }

    fn authorize(&self, state: &AppState, _query: Option<&str>, headers: &HeaderMap) -> Result<WriteKey, AppError> {
        // A write key in the Basic header is checked before the body is read; only a request that
        // carries none must be read (within Segment's 500 KB) to find its `writeKey`.
        let keys = &state.config.segment.write_keys;
        Ok(match header_write_key(headers) {
            Some(given) => WriteKey::Names(authorize_write_key(keys, &state.access, Some(&given))?),
            None if keys.is_empty() && !state.access.guards(SourceKind::Segment) => WriteKey::Names(None),
            None => WriteKey::InBody,
        })
    }

    fn authorized(&self, write_key: &WriteKey) -> bool {
        matches!(write_key, WriteKey::Names(_))
    }

    fn parse(&self, write_key: WriteKey, plain: &Bytes, intake: &mut Intake<'_>) -> Result<Batch, AppError> {
        let text = utf8(plain)?;
        let body = TrackingBody::parse(text)?;
        let source = match write_key {
            WriteKey::Names(source) => source,
            WriteKey::InBody => {
                authorize_write_key(&intake.config.segment.write_keys, intake.access, body.write_key()?.as_deref())?
            }
        };
        intake.admit()?;
        let arrival = Arrival {
            via: Via::TrackingApi,
            at_ms: intake.received_at,
            source: source.as_deref(),
            future_tolerance_ms: intake.config.segment.future_tolerance_ms,
            ip: intake.config.privacy.ip,
        };
        let prepared = body.prepare(self.implied, &arrival, &BatchLimits::of(intake.config))?;
        if self.implied.is_some()
            && let Some((_, fault, _)) = prepared.errors.first()
        {
            // One event, refused: the sender must hear why, as a 400 naming the field.
            return Err(match &fault.field {
                Some(field) => AppError::bad_field(field.clone(), format!("field `{field}`: {}", fault.reason)),
                None => AppError::bad_request(fault.reason.clone()),
            });
        }
        Ok(prepared.into_batch(arrival.ip))
    }
}

/// The Tracking API's body limit is Segment's 500 KB per batch, whatever `[limits]` says.
fn over_batch_limit(e: body::BodyError) -> AppError {
    match e {
        body::BodyError::TooLarge { .. } | body::BodyError::DecompressedTooLarge { .. } => {
            AppError::bad_request(format!(
                "the request is over Segment's limit of 500 KB ({MAX_BATCH_BYTES} bytes) per batch; send smaller batches"
            ))
        }
        other => other.into(),
    }
}

/// A request's events, checked: the records to journal and the refusals with their reasons.
pub struct Prepared<'a> {
    /// Valid events, ready for the journal.
    pub records: Vec<Record>,
    /// Each refused event: its position, why, and its bytes as sent.
    pub errors: Vec<(usize, RecordError, &'a RawValue)>,
}

impl Prepared<'_> {
    /// Copies the refused events out of the request body, so the body can go before the journal
    /// answers, each with `ip` applied to its `context.ip` as the accepted ones have it.
    fn into_batch(self, ip: IpPolicy) -> Batch {
        let refused = self
            .errors
            .into_iter()
            .map(|(index, error, record)| Refused { index, error, record: segment::scrub_refused(record, ip) })
            .collect();
        Batch { records: self.records, refused }
    }
}

/// Runs every event through [`segment::accept`].
pub fn prepare<'a>(elements: &[&'a RawValue], defaults: &BatchDefaults<'_>, arrival: &Arrival<'_>) -> Prepared<'a> {
    let mut prepared = Prepared { records: Vec::with_capacity(elements.len()), errors: Vec::new() };
    for (index, element) in elements.iter().enumerate() {
        prepared.push(index, element, defaults, arrival);
    }
    prepared
}

impl<'a> Prepared<'a> {
    /// Runs the `index`-th event through [`segment::accept`]; returns the bytes it adds to the journal.
    fn push(
        &mut self,
        index: usize,
        element: &'a RawValue,
        defaults: &BatchDefaults<'_>,
        arrival: &Arrival<'_>,
    ) -> usize {
        let accepted = segment::accept(element.get(), index, defaults, arrival).and_then(|json| {
            // `accept` always writes a `messageId`; the id is read back from what is journaled.
            let id = RecordId::of_payload(RecordKind::SegmentEvent, json.as_bytes())
                .map_err(|e| RecordError { field: Some("messageId".into()), reason: e.to_string() })?;
            Ok((json, id))
        });
        match accepted {
            Ok((json, id)) => {
                let bytes = json.len();
                self.records.push(Record {
                    kind: RecordKind::SegmentEvent,
                    received_at_ms: arrival.at_ms,
                    payload: Bytes::from(json),
                    id,
                });
                bytes
            }
            Err(e) => {
                self.errors.push((index, e, element));
                0
            }
        }
    }
}

/// What a `/v1/batch` request does with `body` on its way to the journal, without HTTP: the
/// top-level parse and every event's checks, skew correction and re-serialisation. The
/// in-process limit the load generator (`sluice-load`) sets HTTP ingest beside; a refused event
/// is an error.
pub fn batch_records_in_process(body: &[u8], config: &crate::config::Config) -> Result<Vec<Record>, AppError> {
    let text = std::str::from_utf8(body).map_err(|e| AppError::bad_request(e.to_string()))?;
    let arrival = Arrival {
        via: Via::TrackingApi,
        at_ms: chrono::Utc::now().timestamp_millis(),
        source: None,
        future_tolerance_ms: config.segment.future_tolerance_ms,
        ip: config.privacy.ip,
    };
    let prepared = TrackingBody::parse(text)?.prepare(None, &arrival, &BatchLimits::of(config))?;
    match prepared.errors.first() {
        Some((index, e, _)) => Err(AppError::bad_request(format!("event {index} was refused: {e}"))),
        None => Ok(prepared.records),
    }
}

/// What one Tracking API request may expand to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Most events in one `/v1/batch` (`limits.max_batch_records`, as for every source: Segment
    /// documents no count, only 500 KB per batch and 32 KB per event).
    pub max_items: usize,
    /// Most bytes the request's events may add to the journal once each has the batch's
    /// `context` and `integrations` (`segment.max_expanded_bytes`).
    pub max_expanded_bytes: usize,
}

impl BatchLimits {
    /// The limits `config` sets.
    pub fn of(config: &crate::config::Config) -> Self {
        BatchLimits {
            max_items: config.limits.max_batch_records,
            max_expanded_bytes: config.segment.max_expanded_bytes,
        }
    }
}

/// A Tracking API request body, its top level parsed (the events themselves stay raw until
/// [`prepare`](TrackingBody::prepare)).
pub(crate) struct TrackingBody<'a> {
    text: &'a str,
    top: BTreeMap<String, &'a RawValue>,
}

impl<'a> TrackingBody<'a> {
    /// Parses the top level of a JSON object body.
    pub fn parse(text: &'a str) -> Result<Self, AppError> {
        let top = serde_json::from_str(text)
            .map_err(|e| AppError::bad_request(format!("the body must be a JSON object: {e}")))?;
        Ok(TrackingBody { text, top })
    }

    /// The body's `writeKey`, if it has one.
    pub fn write_key(&self) -> Result<Option<String>, AppError> {
        self.top
            .get("writeKey")
            .map(|v| {
                serde_json::from_str(v.get())
                    .map_err(|_| AppError::bad_field("writeKey", "`writeKey` must be a string"))
            })
            .transpose()
    }

    /// The events: the body itself for a single-event endpoint (`implied` is its type), else the
    /// items of `batch`, with the batch's `context`, `integrations` and `sentAt` applied.
    ///
    /// The batch's `context` is copied into every event, so a 500 KB request could journal
    /// hundreds of megabytes: over `limits`' item count, or as soon as the events prepared so far
    /// pass its expanded size, the whole request is refused with a 413 naming the limit.
    pub fn prepare(
        &self,
        implied: Option<EventType>,
        arrival: &Arrival<'_>,
        limits: &BatchLimits,
    ) -> Result<Prepared<'a>, AppError> {
        if let Some(t) = implied {
            let whole: &RawValue = serde_json::from_str(self.text).map_err(|e| AppError::bad_request(e.to_string()))?;
            let defaults = BatchDefaults { implied_type: Some(t), ..BatchDefaults::default() };
            return Ok(prepare(&[whole], &defaults, arrival));
        }
        let items = self
            .top
            .get("batch")
            .ok_or_else(|| AppError::bad_field("batch", "a batch request needs `batch`, an array of events"))?;
        let items: Vec<&'a RawValue> = serde_json::from_str(items.get())
            .map_err(|_| AppError::bad_field("batch", "`batch` must be an array of events"))?;
        if items.len() > limits.max_items {
            return Err(AppError::TooLarge(format!(
                "the batch holds {} events, the limit is {} (limits.max_batch_records); send smaller batches",
                items.len(),
                limits.max_items
            )));
        }
        let object = |name: &str| -> Result<Option<Map<String, Value>>, AppError> {
            match self.top.get(name).map(|v| serde_json::from_str::<Value>(v.get())) {
                None | Some(Ok(Value::Null)) => Ok(None),
                Some(Ok(Value::Object(map))) => Ok(Some(map)),
                _ => Err(AppError::bad_field(name, format!("the batch's `{name}` must be an object"))),
            }
        };
        let context = object("context")?;
        let integrations = object("integrations")?;
        let sent_at: Option<Value> = self
            .top
            .get("sentAt")
            .map(|v| serde_json::from_str(v.get()).map_err(|e| AppError::bad_field("sentAt", e.to_string())))
            .transpose()?;
        let defaults = BatchDefaults {
            context: context.as_ref(),
            integrations: integrations.as_ref(),
            sent_at: sent_at.as_ref(),
            implied_type: None,
        };
        let mut prepared = Prepared { records: Vec::with_capacity(items.len()), errors: Vec::new() };
        let mut expanded = 0usize;
        for (index, item) in items.into_iter().enumerate() {
            expanded = expanded.saturating_add(prepared.push(index, item, &defaults, arrival));
            if expanded > limits.max_expanded_bytes {
                return Err(AppError::TooLarge(format!(
                    "the batch's events come to more than {} bytes once each has the batch's `context` and \
                     `integrations` (segment.max_expanded_bytes); nothing was accepted: send fewer events per batch \
                     or a smaller batch-level context",
                    limits.max_expanded_bytes
                )));
            }
        }
        Ok(prepared)
    }
}

fn utf8(plain: &Bytes) -> Result<&str, AppError> {
    std::str::from_utf8(plain).map_err(|e| {
        AppError::bad_request(format!(
            "the body is not valid UTF-8 (first bad byte at offset {}); send UTF-8 JSON",
            e.valid_up_to()
        ))
    })
}

/// `X-Signature` decoded from hex; refused (401) when missing or malformed.
fn signature_header(headers: &HeaderMap) -> Result<Vec<u8>, AppError> {
    let given = headers.get("x-signature").and_then(|v| v.to_str().ok()).ok_or_else(|| {
        AppError::Unauthorized(
            "this endpoint needs `X-Signature`: set the same shared secret in Segment's webhook settings and in segment.webhook_secret".into(),
        )
    })?;
    decode_hex(given.trim()).ok_or_else(|| AppError::Unauthorized("`X-Signature` is not a hex HMAC-SHA1 digest".into()))
}

/// What a valid webhook signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signed {
    /// The whole body.
    Whole,
    /// The one element of a body `[element]`: what Segment's Webhooks (Actions) signs when it
    /// batches. Good only if the array turns out to hold exactly one event.
    SoleElement,
}

/// Checks `given` (an HMAC-SHA1 under `secret`) against the whole body, else against the
/// inside of a body of the form `[…]`, in constant time.
fn verify_webhook_signature(secret: &str, body: &[u8], given: &[u8]) -> Result<Signed, AppError> {
    if hmac_matches(secret, body, given)? {
        return Ok(Signed::Whole);
    }
    let inner = body.trim_ascii().strip_prefix(b"[").and_then(|b| b.strip_suffix(b"]")).map(<[u8]>::trim_ascii);
    if let Some(inner) = inner
        && hmac_matches(secret, inner, given)?
    {
        return Ok(Signed::SoleElement);
    }
    let mut message =
        "`X-Signature` does not match the body: check that Segment's shared secret equals segment.webhook_secret"
            .to_owned();
    if inner.is_some() {
        // The likely cause when the secret is right: Segment signed only the first event.
        message.push_str(
            ". Segment's Webhooks (Actions) signs only the first event of a batch, which proves nothing \
             about the others: turn off batching in that destination",
        );
    }
    Err(AppError::Unauthorized(message))
}

fn hmac_matches(secret: &str, signed: &[u8], given: &[u8]) -> Result<bool, AppError> {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
        .map_err(|e| AppError::Internal(anyhow::anyhow!("HMAC key: {e}")))?;
    mac.update(signed);
    // `verify_slice` compares in constant time.
    Ok(mac.verify_slice(given).is_ok())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The Segment source an ingest token's `scope` names (a token names at most one), if any.
fn source_of(scope: Scope) -> Option<String> {
    match scope {
        Scope::All => None,
        Scope::Only { names, .. } => names.into_iter().next(),
    }
}

/// The write key given as the HTTP Basic username (empty password), or as a bearer token (an
/// ingest token, as every other client of sluice sends it), if any.
fn header_write_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(|userpass| userpass.split_once(':').map_or(userpass.clone(), |(user, _)| user.to_owned()))
        .or_else(|| bearer(headers).map(str::to_owned))
}

/// The source the `given` write key (from Basic auth, else the body's `writeKey`) names: one of
/// `segment.write_keys`, or an ingest token granted segment (which names the source in its
/// `segment:SOURCE` grant, or none). `None` when neither is configured (open).
fn authorize_write_key(
    keys: &BTreeMap<String, String>,
    access: &Access,
    given: Option<&str>,
) -> Result<Option<String>, AppError> {
    if keys.is_empty() && !access.guards(SourceKind::Segment) {
        return Ok(None);
    }
    let Some(given) = given else {
        return Err(AppError::Unauthorized(
            "a write key is required: send it as the HTTP Basic username (empty password) or as `writeKey` in the body"
                .into(),
        ));
    };
    // Every configured key is compared, in constant time, so timing tells nothing about which
    // keys exist or how much of one was right.
    let mut found = None;
    for (key, source) in keys {
        if bool::from(subtle::ConstantTimeEq::ct_eq(key.as_bytes(), given.as_bytes())) {
            found = Some(source.clone());
        }
    }
    if found.is_some() {
        return Ok(found);
    }
    match access.ingest(given, SourceKind::Segment) {
        Ok((_, scope)) => Ok(source_of(scope)),
        Err(Refusal::BadToken { .. }) => Err(AppError::Unauthorized(
            "the write key is not one of segment.write_keys nor an ingest token; check the key configured in your Segment library".into(),
        )),
        Err(refusal) => Err(AppError::Denied(refusal)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn hex(sig: &str) -> Vec<u8> {
        decode_hex(sig).unwrap()
    }

    #[test]
    fn a_signature_is_the_hex_hmac_sha1_of_the_whole_body_or_of_a_sole_element() {
        let body = br#"{"a":1}"#;
        assert_eq!(verify_webhook_signature("s3cret", body, &hex(&sign("s3cret", body))).unwrap(), Signed::Whole);
        assert!(matches!(
            verify_webhook_signature("other", body, &hex(&sign("s3cret", body))),
            Err(AppError::Unauthorized(_))
        ));
        assert!(matches!(
            verify_webhook_signature("s3cret", b"{}", &hex(&sign("s3cret", body))),
            Err(AppError::Unauthorized(_))
        ));
        let array = b" [ {\"a\":1}\n] ";
        assert_eq!(
            verify_webhook_signature("s3cret", array, &hex(&sign("s3cret", body))).unwrap(),
            Signed::SoleElement
        );
        assert_eq!(verify_webhook_signature("s3cret", array, &hex(&sign("s3cret", array))).unwrap(), Signed::Whole);

        let mut h = HeaderMap::new();
        assert!(matches!(signature_header(&h), Err(AppError::Unauthorized(_))));
        h.insert("x-signature", HeaderValue::from_static("zz"));
        assert!(matches!(signature_header(&h), Err(AppError::Unauthorized(_))));
        h.insert("x-signature", HeaderValue::from_static("0aff"));
        assert_eq!(signature_header(&h).unwrap(), vec![0x0a, 0xff]);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn arrival() -> Arrival<'static> {
            Arrival {
                via: Via::TrackingApi,
                at_ms: 1_764_417_600_000,
                source: None,
                future_tolerance_ms: 0,
                ip: IpPolicy::Keep,
            }
        }

        proptest! {
            #[test]
            fn any_body_is_parsed_or_refused_without_panicking(body in "\\PC{0,300}") {
                if let Ok(parsed) = TrackingBody::parse(&body) {
                    let _ = parsed.write_key();
                    let _ = parsed.prepare(None, &arrival(), &BatchLimits::of(&crate::config::Config::default()));
                    // A single-event endpoint accounts for its one event: accepted or refused.
                    if let Ok(prepared) = parsed.prepare(Some(EventType::Track), &arrival(), &BatchLimits::of(&crate::config::Config::default())) {
                        prop_assert_eq!(prepared.records.len() + prepared.errors.len(), 1);
                    }
                }
            }

            #[test]
            fn batches_of_arbitrary_items_account_for_every_item(items in proptest::collection::vec(
                prop_oneof![
                    Just(r#"{"type":"track","event":"E","userId":"u"}"#.to_owned()),
                    Just(r#"{"type":"page","anonymousId":"a","context":{"page":{"url":"https://x/"}}}"#.to_owned()),
                    Just("1".to_owned()),
                    Just(r#"{"type":"alias","userId":"u"}"#.to_owned()),
                    "\\PC{0,20}".prop_map(|s| serde_json::to_string(&s).unwrap()),
                ],
                0..20,
            )) {
                let body = format!(r#"{{"batch":[{}],"context":{{"ip":"1.2.3.4"}},"sentAt":"2025-11-29T12:00:00Z"}}"#, items.join(","));
                let parsed = TrackingBody::parse(&body).unwrap();
                let prepared = parsed.prepare(None, &arrival(), &BatchLimits::of(&crate::config::Config::default())).unwrap();
                prop_assert_eq!(prepared.records.len() + prepared.errors.len(), items.len());
            }
        }
    }

    #[test]
    fn a_write_key_comes_from_basic_auth_or_the_body_and_names_its_source() {
        let keys: BTreeMap<String, String> =
            [("k-web".to_owned(), "web".to_owned()), ("k-srv".into(), "server".into())].into();
        let mut h = HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode("k-srv:");
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Basic {basic}")).unwrap());
        assert_eq!(header_write_key(&h).as_deref(), Some("k-srv"));
        assert_eq!(header_write_key(&HeaderMap::new()), None);
        assert_eq!(authorize_write_key(&keys, &Access::default(), Some("k-srv")).unwrap().as_deref(), Some("server"));
        assert_eq!(authorize_write_key(&keys, &Access::default(), Some("k-web")).unwrap().as_deref(), Some("web"));
        assert!(matches!(authorize_write_key(&keys, &Access::default(), Some("nope")), Err(AppError::Unauthorized(_))));
        assert!(matches!(authorize_write_key(&keys, &Access::default(), None), Err(AppError::Unauthorized(_))));
        assert_eq!(authorize_write_key(&BTreeMap::new(), &Access::default(), None).unwrap(), None);
    }

    #[test]
    fn an_ingest_token_is_a_write_key_naming_the_source_it_is_granted() {
        use crate::access::{AuthConfig, Role, TokenConfig, token_sha256_hex};
        let token = |name: &str, secret: &str, sources: &[&str]| TokenConfig {
            name: name.into(),
            roles: vec![Role::Ingest],
            sha256: Some(token_sha256_hex(secret)),
            token_file: None,
            sources: sources.iter().map(|s| s.to_string()).collect(),
        };
        let access = Access::resolve(&AuthConfig {
            tokens: vec![
                token("web", "web-secret-0123456789", &["segment:web"]),
                token("any", "any-secret-0123456789", &[]),
                token("split-only", "split-secret-0123456789", &["split"]),
            ],
            ..AuthConfig::default()
        })
        .unwrap();
        let keys = BTreeMap::from([("k-srv".to_owned(), "server".to_owned())]);
        assert_eq!(authorize_write_key(&keys, &access, Some("k-srv")).unwrap().as_deref(), Some("server"));
        assert_eq!(authorize_write_key(&keys, &access, Some("web-secret-0123456789")).unwrap().as_deref(), Some("web"));
        assert_eq!(authorize_write_key(&keys, &access, Some("any-secret-0123456789")).unwrap(), None);
        assert!(matches!(
            authorize_write_key(&keys, &access, Some("split-secret-0123456789")),
            Err(AppError::Denied(crate::access::Refusal::SourceNotAllowed { .. }))
        ));
        // Guarded by a token alone, without write keys: a key is needed.
        let none = BTreeMap::new();
        assert!(matches!(authorize_write_key(&none, &access, None), Err(AppError::Unauthorized(_))));
        assert!(matches!(authorize_write_key(&none, &access, Some("nope-0123456789")), Err(AppError::Unauthorized(_))));
    }
}
