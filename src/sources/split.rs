/*!
Split's "Outgoing Webhook (Impressions)": `POST /v1/split/impressions`.

The body is a JSON array of flat impression objects, usually gzipped, sometimes without saying so.
Each element is validated on its own: valid ones are journaled verbatim (unknown fields included),
invalid ones go to the dead-letter area, and the response counts both. The answer is 200 only
after every accepted record is durable in the journal.
*/

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::post};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    ArrayError, RecordFault, Refused, admit, authorize, body, dead_letter_all, off_the_workers, parse_array, read_body,
    refuse_when_over_limits,
};
use crate::config::IngestLimits;
use crate::http::AppError;
use crate::http::AppState;
use crate::journal::Record;
use crate::record::{Impression, RecordKind};

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

/// The answer to one webhook call.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IngestReport {
    /// Records made durable.
    pub accepted: usize,
    /// Records refused; each is in the dead-letter area with its reason.
    pub rejected: usize,
    /// The first few refusals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RecordFault>,
}

async fn ingest(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let result = handle(&state, query.as_deref(), &headers, body).await;
    let status = match &result {
        Ok(r) => r.status(),
        Err(e) => e.status(),
    };
    metrics::counter!("sluice_source_requests_total", "source" => "split", "status" => status.as_str().to_owned())
        .increment(1);
    result
}

async fn handle(state: &AppState, query: Option<&str>, headers: &HeaderMap, body: Body) -> Result<Response, AppError> {
    let params: Params = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| AppError::bad_request(format!("the query string is not valid: {e}")))?;
    // The token is in the URL or a header: refuse before reading a byte of the body.
    authorize(state.config.split.token.as_deref(), params.token.as_deref(), headers)?;
    refuse_when_over_limits(state)?;

    let limits = state.config.limits;
    let (raw, mut reservation) = read_body(state, headers, body, limits.max_body_bytes).await?;
    let encoding = body::detect_encoding(headers, &raw)?;
    metrics::counter!("sluice_source_bytes_total", "source" => "split", "stage" => "received")
        .increment(raw.len() as u64);
    // Taken once the body is in: a slow sender holds no permit while it trickles.
    let _permit = admit(state)?;
    let received_at = chrono::Utc::now().timestamp_millis();
    // The records are views into the decoded body, so its reservation lives as long as they do.
    let (records, refused, _reservation) = off_the_workers(move || {
        let plain = body::decode(encoding, raw, limits.max_decompressed_bytes, &mut reservation)?;
        metrics::counter!("sluice_source_bytes_total", "source" => "split", "stage" => "decoded")
            .increment(plain.len() as u64);
        let (records, refused) = parse_batch(&plain, &limits, received_at)?;
        Ok((records, refused, reservation))
    })
    .await?;

    let accepted = records.len();
    if accepted > 0 {
        state.journal.append(records).await.map_err(super::journal_unavailable)?;
    }
    // Only now is the answer final: after a 503 above, Split sends the batch again.
    let errors = dead_letter_all("split", received_at, &refused, &state.dead_letters);
    let report = IngestReport { accepted, rejected: refused.len(), errors };
    metrics::counter!("sluice_source_records_total", "source" => "split", "result" => "accepted")
        .increment(report.accepted as u64);
    metrics::counter!("sluice_source_records_total", "source" => "split", "result" => "rejected")
        .increment(report.rejected as u64);
    // A batch in which nothing was usable is a sender bug: say so with a 4xx the sender's logs will show.
    let status = if report.accepted == 0 && report.rejected > 0 { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    Ok((status, Json(report)).into_response())
}

/// What a request does with `body` (gzip'd or not) on its way to the journal, without HTTP:
/// decode, parse, validate. The in-process limit the load generator (`sluice-load`) sets HTTP
/// ingest beside; refused elements are left out.
pub fn records_in_process(body: Bytes, limits: &IngestLimits) -> Result<Vec<Record>, AppError> {
    let mut reservation = body::ByteBudget::new(limits.max_in_flight_bytes).reservation();
    let encoding = body::detect_encoding(&HeaderMap::new(), &body)?;
    let plain = body::decode(encoding, body, limits.max_decompressed_bytes, &mut reservation)?;
    Ok(parse_batch(&plain, limits, 0)?.0)
}

/// Splits a decoded body into journal records and the refused elements (for the dead-letter
/// area, once the journal has answered).
pub(crate) fn parse_batch(
    plain: &Bytes,
    limits: &IngestLimits,
    received_at: i64,
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
            Ok(_) => records.push(Record {
                kind: RecordKind::SplitImpression,
                received_at_ms: received_at,
                // A view into the request body: the record is journaled exactly as sent, with no copy.
                payload: plain.slice_ref(element.get().as_bytes()),
            }),
            Err(e) => refused.push(Refused::new(index, e, element)),
        }
    }
    Ok((records, refused))
}
