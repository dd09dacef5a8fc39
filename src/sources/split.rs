/*!
Split's "Outgoing Webhook (Impressions)": `POST /v1/split/impressions`.

The body is a JSON array of flat impression objects, usually gzipped, sometimes without saying so.
Each element is validated on its own: valid ones are journaled verbatim (unknown fields included),
invalid ones go to the dead-letter area, and the response counts both. The answer is 200 only
after every accepted record is durable in the journal.
*/

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Router, routing::post};
use bytes::Bytes;
use serde::Deserialize;

use super::pipeline::{self, Answer, Batch, Intake, Refused, Source};
use super::{ArrayError, authorize, given_token, parse_array};
use crate::access::{Refusal, Scope, SourceKind};
use crate::config::IngestLimits;
use crate::http::AppError;
use crate::http::AppState;
use crate::journal::Record;
use crate::record::{Impression, RecordId, RecordKind};

/// Routes of this source.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/split/impressions", post(ingest))
}

/// What the webhook may put on the URL.
#[derive(Debug, Default, Deserialize)]
struct Params {
    /// The shared secret, for senders that cannot set headers.
    token: Option<String>,
    /// Split's own switch; accepted and ignored because the body's first bytes tell.
    #[serde(rename = "gzip")]
    _gzip: Option<String>,
}

async fn ingest(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    pipeline::run(&state, Split, query.as_deref(), &headers, body).await
}

/// The webhook in the [pipeline](super::pipeline): a shared secret, and a JSON array of impressions.
struct Split;

impl Source for Split {
    /// Which environments the token may send.
    type Credentials = Scope;
    const ENDPOINT: &'static str = "split";
    const SOURCE: &'static str = "split";
    const ANSWER: Answer = Answer::Counts;

    fn authorize(&self, state: &AppState, query: Option<&str>, headers: &HeaderMap) -> Result<Scope, AppError> {
        let params: Params = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| AppError::bad_request(format!("the query string is not valid: {e}")))?;
        let given = given_token(params.token.as_deref(), headers);
        authorize(&state.access, SourceKind::Split, state.config.split.token.as_deref(), given)
    }

    fn parse(&self, scope: Scope, plain: &Bytes, intake: &mut Intake<'_>) -> Result<Batch, AppError> {
        let (records, refused) = parse_batch(plain, &intake.config.limits, intake.received_at, &scope)?;
        Ok(Batch { records, refused })
    }
}

/// What a request does with `body` (gzip'd or not) on its way to the journal, without HTTP:
/// decode, parse, validate. The in-process limit the load generator (`sluice-load`) sets HTTP
/// ingest beside; refused elements are left out.
pub fn records_in_process(body: Bytes, limits: &IngestLimits) -> Result<Vec<Record>, AppError> {
    let mut reservation = crate::http::body::ByteBudget::new(limits.max_in_flight_bytes).reservation();
    let encoding = crate::http::body::detect_encoding(&HeaderMap::new(), &body)?;
    let plain = crate::http::body::decode(encoding, body, limits.max_decompressed_bytes, &mut reservation)?;
    Ok(parse_batch(&plain, limits, 0, &Scope::All)?.0)
}

/// Splits a decoded body into journal records and the refused elements (for the dead-letter
/// area, once the journal has answered). An impression of an environment outside `scope` (the
/// token's grant) refuses the whole request: it is not the sender's to send.
pub(crate) fn parse_batch(
    plain: &Bytes,
    limits: &IngestLimits,
    received_at: i64,
    scope: &Scope,
) -> Result<(Vec<Record>, Vec<Refused>), AppError> {
    let text = std::str::from_utf8(plain).map_err(|e| {
        AppError::bad_request(format!(
            "the body is not valid UTF-8 (first bad byte at offset {}); Split sends UTF-8 JSON",
            e.valid_up_to()
        ))
    })?;
    let elements = parse_array(text, limits.max_batch_records).map_err(|e| match e {
        ArrayError::TooMany { max } => AppError::TooLarge(format!(
            "the batch holds more than {max} records (limits.max_batch_records); send smaller batches"
        )),
        ArrayError::Invalid(e) => {
            AppError::bad_request(format!("the body must be a JSON array of impression objects: {e}"))
        }
    })?;

    let fields = limits.fields();
    let mut records = Vec::with_capacity(elements.len());
    let mut refused = Vec::new();
    for (index, element) in elements.iter().enumerate() {
        match Impression::parse(element.get(), &fields) {
            Ok(impression) if !in_scope(scope, &impression) => return Err(out_of_scope(scope, &impression)),
            Ok(impression) => records.push(Record {
                kind: RecordKind::SplitImpression,
                id: RecordId::of_impression(&impression),
                received_at_ms: received_at,
                // A view into the request body: the record is journaled exactly as sent, with no copy.
                payload: plain.slice_ref(element.get().as_bytes()),
            }),
            Err(e) => refused.push(Refused::new(index, e, element)),
        }
    }
    Ok((records, refused))
}

/// The refusal of an impression outside the token's `scope`, naming its environment.
fn out_of_scope(scope: &Scope, impression: &Impression<'_>) -> AppError {
    let token = match scope {
        Scope::Only { token, .. } => token.clone(),
        Scope::All => String::new(),
    };
    let environment = impression.environment().unwrap_or("");
    AppError::Denied(Refusal::OutOfScope { token, what: format!("Split environment {environment:?}") })
}

/// Whether the token's `scope` covers the impression's environment: the one queries filter on
/// (the name, or the id when there is no name). Not "the name or the id": the sender writes
/// both, and a `Staging` name beside a `Production` id would pass as Production.
fn in_scope(scope: &Scope, impression: &Impression<'_>) -> bool {
    matches!(scope, Scope::All) || scope.allows(impression.environment())
}
