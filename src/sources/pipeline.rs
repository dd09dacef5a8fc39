/*!
The ingest pipeline: the one path every source's requests take, from the HTTP body to the answer.

1. **authorize** what the URL and headers carry ([`Source::authorize`]), before a byte of the
   body is read;
2. refuse at once, 503 with `Retry-After`, while sluice is over its limits
   ([`crate::http::over_limits`]: the journal fails or is full, a consumer lags too far);
3. **read** the body within the source's size limit, `http.body_read_timeout_ms` and the byte
   budget all requests share;
4. on the blocking pool, never on the async workers that answer `/healthz` and everyone else:
   **verify** the bytes as sent ([`Source::verify`]: a signature), take the **ingest permit**
   once the request is known to be authorized, **decode** (gunzip within the decoded limit) and
   **parse** the body into journal records and refusals ([`Source::parse`]);
5. **journal** the records: nothing is answered 2xx before they are durable;
6. only then **dead-letter** the refusals: after a 503 the sender sends the batch again, and
   they would be written twice;
7. count the request, its records and bytes (**metrics**) and **answer** in the shape the
   source's clients expect ([`Answer`]).

The order is what keeps hostile or slow clients from starving the rest: credentials in headers
are checked before the body is read; the body is read within a deadline and the byte budget
before the permit is taken, so a slow sender holds no permit while it trickles; and nothing
that takes a while (inflating up to `limits.max_decompressed_bytes`, hashing, parsing) runs on
an async worker.
*/

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::OwnedSemaphorePermit;

use crate::config::{Config, IngestLimits};
use crate::dead_letter::{DeadLetters, Rejection};
use crate::http::body::{self, BodyError};
use crate::http::{AppError, AppState};
use crate::journal::{JournalError, Record};
use crate::record::RecordError;

/// What a source plugs into the pipeline: how its requests are authorized and how a decoded
/// body becomes records. Everything else is the pipeline's.
pub trait Source: Send + 'static {
    /// What the URL and headers proved, carried to the blocking pool.
    type Credentials: Send + 'static;
    /// The endpoint's label on `sluice_source_requests_total`.
    const ENDPOINT: &'static str;
    /// The source's label on `sluice_source_records_total` and `sluice_source_bytes_total`, and
    /// on its records in the dead-letter area.
    const SOURCE: &'static str;
    /// The shape of the answer.
    const ANSWER: Answer;

    /// The most bytes a body may hold, as sent and decoded: the configured limits unless the
    /// source's protocol sets its own.
    fn body_limits(&self, config: &Config) -> BodyLimits {
        BodyLimits::of(&config.limits)
    }

    /// How a body that could not be read or decoded is answered.
    fn body_error(&self, e: BodyError) -> AppError {
        e.into()
    }

    /// Checks the credentials the URL's query string and the headers carry, before the body is
    /// read, against the source's own settings and the access rules (`state.access`).
    fn authorize(
        &self,
        state: &AppState,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Self::Credentials, AppError>;

    /// On the blocking pool, on the body as sent, before anything is inflated: checks what
    /// covers those bytes (a signature).
    fn verify(&self, _config: &Config, _credentials: &mut Self::Credentials, _raw: &[u8]) -> Result<(), AppError> {
        Ok(())
    }

    /// Whether the request is authorized by now. When it is not (the credential is in the
    /// body), [`Source::parse`] must call [`Intake::admit`] as soon as it has checked it.
    fn authorized(&self, _credentials: &Self::Credentials) -> bool {
        true
    }

    /// On the blocking pool: the decoded body's records for the journal and its refused records.
    fn parse(&self, credentials: Self::Credentials, plain: &Bytes, intake: &mut Intake<'_>) -> Result<Batch, AppError>;
}

/// The size limits of a source's bodies.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Bytes as sent.
    pub sent: usize,
    /// Bytes once decoded.
    pub decoded: usize,
}

impl BodyLimits {
    /// `limits.max_body_bytes` and `limits.max_decompressed_bytes`.
    pub fn of(limits: &IngestLimits) -> Self {
        BodyLimits { sent: limits.max_body_bytes, decoded: limits.max_decompressed_bytes }
    }
}

/// What [`Source::parse`] is given besides the body.
pub struct Intake<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// When the body had arrived, epoch milliseconds.
    pub received_at: i64,
    /// Who may send what, for a credential found in the body.
    pub access: &'a crate::access::Access,
    state: &'a AppState,
    permit: Option<OwnedSemaphorePermit>,
}

impl Intake<'_> {
    /// Takes the ingest permit, unless it is held already; 503 with `Retry-After` when sluice
    /// is over its limits or too many requests are in flight.
    pub fn admit(&mut self) -> Result<(), AppError> {
        if self.permit.is_none() {
            self.permit = Some(admit(self.state)?);
        }
        Ok(())
    }
}

/// A request's records: the valid ones for the journal, the refused ones for the dead-letter area.
#[derive(Debug, Default)]
pub struct Batch {
    /// Ready for the journal.
    pub records: Vec<Record>,
    /// Refused, each with its reason and bytes.
    pub refused: Vec<Refused>,
}

/// One refused record of a batch, kept (a copy of its bytes) until the journal's answer is known.
#[derive(Debug)]
pub struct Refused {
    /// Position in the batch.
    pub index: usize,
    /// Why.
    pub error: RecordError,
    /// The record as sent.
    pub record: Box<RawValue>,
}

impl Refused {
    /// Copies a refused element out of the request body.
    pub fn new(index: usize, error: RecordError, record: &RawValue) -> Refused {
        Refused { index, error, record: record.to_owned() }
    }
}

/// Runs one request through the pipeline and counts it in `sluice_source_requests_total` by
/// the status it is answered with.
pub async fn run<S: Source>(
    state: &AppState,
    source: S,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let result = ingest(state, source, query, headers, body).await;
    let status = match &result {
        Ok(r) => r.status(),
        Err(e) => e.status(),
    };
    metrics::counter!("sluice_source_requests_total", "source" => S::ENDPOINT, "status" => status.as_str().to_owned())
        .increment(1);
    result
}

async fn ingest<S: Source>(
    state: &AppState,
    source: S,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    let credentials = source.authorize(state, query, headers)?;
    refuse_when_over_limits(state)?;
    let limits = source.body_limits(&state.config);
    let mut reservation = state.body_bytes.reservation();
    let raw = body::read_limited(headers, body, limits.sent, state.config.http.body_read_timeout(), &mut reservation)
        .await
        .map_err(|e| source.body_error(e))?;
    let encoding = body::detect_encoding(headers, &raw)?;
    metrics::counter!("sluice_source_bytes_total", "source" => S::SOURCE, "stage" => "received")
        .increment(raw.len() as u64);
    let received_at = chrono::Utc::now().timestamp_millis();
    let admitted = state.clone();
    // The reservation comes back with the records and is held until the journal has them: they
    // are views into the decoded body, or copies as large.
    let (batch, suppressed, letters, _permit, _reservation) = off_the_workers(move || {
        let mut credentials = credentials;
        let config: &Config = &admitted.config;
        source.verify(config, &mut credentials, &raw)?;
        let mut intake = Intake { config, received_at, access: &admitted.access, state: &admitted, permit: None };
        if source.authorized(&credentials) {
            // Taken only now: a slow or unauthenticated sender holds no permit.
            intake.admit()?;
        }
        let plain = body::decode(encoding, raw, limits.decoded, &mut reservation).map_err(|e| source.body_error(e))?;
        metrics::counter!("sluice_source_bytes_total", "source" => S::SOURCE, "stage" => "decoded")
            .increment(plain.len() as u64);
        let mut batch = source.parse(credentials, &plain, &mut intake)?;
        // Held from here in any case: the records wait for the journal under it.
        intake.admit()?;
        // Records of suppressed people are dropped here, before the journal: never stored,
        // archived or re-delivered. With no suppression this costs one atomic load per record.
        // Checked under the permit: an erasure that suppresses waits for every permit once, so
        // that a record checked before the suppression existed is journaled below its horizon.
        let (privacy, parsed) = (&admitted.privacy, batch.records.len());
        batch
            .records
            .retain(|r| !privacy.suppressions.covers(&privacy.hasher, || crate::privacy::ids_of(r.kind, &r.payload)));
        let suppressed = parsed - batch.records.len();
        // A suppressed person's refused records are still refused (the answer says so), but not
        // kept in the dead-letter area either. Which kind a refused record was meant to be is
        // unknown, so every id member of either kind is looked at.
        let letters: Vec<bool> = batch
            .refused
            .iter()
            .map(|r| {
                let raw = r.record.get().as_bytes();
                !privacy.suppressions.covers(&privacy.hasher, || {
                    crate::record::RecordKind::ALL
                        .into_iter()
                        .flat_map(|kind| crate::privacy::ids_of(kind, raw))
                        .collect()
                })
            })
            .collect();
        Ok((batch, suppressed, letters, intake.permit, reservation))
    })
    .await?;

    let (offered, rejected) = (batch.records.len(), batch.refused.len());
    // Suppressed records and duplicates (the journal holds them already) count as accepted in
    // the answer: the sender must not retry them.
    let accepted = offered + suppressed;
    let duplicates = if offered > 0 {
        state.journal.append(batch.records).await.map_err(journal_unavailable)?.duplicates
    } else {
        0
    };
    let journaled = offered.saturating_sub(duplicates);
    // Only now is the answer final: after a 503 above, the sender sends the batch again.
    let errors = dead_letter_all(S::SOURCE, received_at, &batch.refused, &letters, &state.dead_letters);
    metrics::counter!("sluice_source_records_total", "source" => S::SOURCE, "result" => "accepted")
        .increment(journaled as u64);
    metrics::counter!("sluice_source_records_total", "source" => S::SOURCE, "result" => "rejected")
        .increment(rejected as u64);
    if suppressed > 0 {
        metrics::counter!("sluice_source_records_total", "source" => S::SOURCE, "result" => "suppressed")
            .increment(suppressed as u64);
    }
    if duplicates > 0 {
        metrics::counter!("sluice_source_records_total", "source" => S::SOURCE, "result" => "duplicate")
            .increment(duplicates as u64);
    }
    // A batch in which nothing was usable is a sender bug: say so with a 4xx the sender's logs will show.
    let status = if accepted == 0 && rejected > 0 { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    Ok((status, Json(S::ANSWER.report(accepted, rejected, errors))).into_response())
}

/// The shape of a source's answer, as its clients expect it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `{"accepted", "rejected", "errors"}`: Split's webhook.
    Counts,
    /// `{"success", "accepted", "rejected", "errors"}`: Segment's webhook destination.
    SuccessAndCounts,
    /// `{"success": true}` when every event was accepted, exactly as Segment's Tracking API
    /// answers; otherwise as [`Answer::SuccessAndCounts`].
    Success,
}

impl Answer {
    /// The report of a request that accepted `accepted` records and refused `rejected`
    /// (`errors` lists the first few refusals).
    pub fn report(self, accepted: usize, rejected: usize, errors: Vec<RecordFault>) -> Report {
        // Segment's `success`: the events were taken, or there were none to refuse.
        let success = accepted > 0 || rejected == 0;
        match self {
            Answer::Counts => Report { success: None, accepted: Some(accepted), rejected: Some(rejected), errors },
            Answer::Success if rejected == 0 => {
                Report { success: Some(true), accepted: None, rejected: None, errors: Vec::new() }
            }
            Answer::SuccessAndCounts | Answer::Success => {
                Report { success: Some(success), accepted: Some(accepted), rejected: Some(rejected), errors }
            }
        }
    }
}

/// The answer to an ingest request; what it holds depends on the source's [`Answer`].
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// Segment's own field: true when the events were accepted (not in Split's answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// Records made durable (left out when the Tracking API accepted everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<usize>,
    /// Records refused; each is in the dead-letter area with its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<usize>,
    /// The first few refusals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RecordFault>,
}

/// Why one record of a batch was refused.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordFault {
    /// Position in the batch.
    pub index: usize,
    /// The field at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// Answers 503 with `Retry-After` when sluice is over one of its limits (the journal is failing
/// or full, a consumer lags too far): checked before a body is read, so nobody sends it in vain.
fn refuse_when_over_limits(state: &AppState) -> Result<(), AppError> {
    match crate::http::over_limits(&state.journal.stats(), &state.config) {
        Some(message) => {
            Err(AppError::Unavailable { message, retry_after_secs: state.config.backpressure.retry_after_secs })
        }
        None => Ok(()),
    }
}

/// Lets an authenticated request whose body has arrived in, or answers 503 with `Retry-After`:
/// over one of the limits above, or too many requests in flight.
fn admit(state: &AppState) -> Result<OwnedSemaphorePermit, AppError> {
    refuse_when_over_limits(state)?;
    state.ingest_permits.clone().try_acquire_owned().map_err(|_| AppError::Unavailable {
        message: format!(
            "too many ingest requests in flight (limits.max_concurrent_requests = {}); retry shortly",
            state.config.limits.max_concurrent_requests
        ),
        retry_after_secs: 1,
    })
}

/// Runs `work` on the blocking pool (inflating and parsing a large body takes a while and must
/// not stall the async workers).
async fn off_the_workers<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| AppError::Internal(e.into()))?
}

/// The most per-record errors listed in one response; the dead-letter area has them all.
const MAX_LISTED_ERRORS: usize = 100;

/// Writes the refused records of a batch that `letters` marks (not a suppressed person's; its
/// index, what is wrong, the record as sent) to the dead-letter area and returns the first few
/// refusals, all of them, for the response.
///
/// Called once the request's outcome is known and is an answer the sender will not retry (the
/// valid records are durable, or there were none): a 503 and its retry would write them twice.
/// A failure to write is logged, not answered: the valid records are already durable (a 5xx would
/// make the sender send them again), and the response itself lists the refusals.
fn dead_letter_all(
    source: &str,
    received_at: i64,
    refused: &[Refused],
    letters: &[bool],
    dead_letters: &DeadLetters,
) -> Vec<RecordFault> {
    if refused.is_empty() {
        return Vec::new();
    }
    let rejections: Vec<Rejection<'_>> = refused
        .iter()
        .zip(letters)
        .filter(|(_, letter)| **letter)
        .map(|(r, _)| Rejection {
            index: r.index,
            field: r.error.field.as_deref(),
            reason: &r.error.reason,
            record: &r.record,
        })
        .collect();
    if let Err(e) = dead_letters.write(source, received_at, &rejections) {
        metrics::counter!("sluice_dead_letter_write_errors_total").increment(1);
        tracing::error!(error = %e, source, records = refused.len(), "could not write rejected records to the dead-letter area");
    }
    refused
        .iter()
        .take(MAX_LISTED_ERRORS)
        .map(|r| RecordFault { index: r.index, field: r.error.field.clone(), reason: r.error.reason.clone() })
        .collect()
}

/// A failed append acknowledges nothing, so the client must retry: 503 with `Retry-After`.
/// Except for a record over the journal's per-record limit, refused before anything was
/// written: a retry would fail the same way, so that is the client's 413.
fn journal_unavailable(e: JournalError) -> AppError {
    if let JournalError::RecordTooLarge { size, max } = e {
        return AppError::TooLarge(format!(
            "the request holds a record of {size} bytes, over the journal's limit of {max} bytes per record; \
             nothing was accepted: leave that record out (or make it smaller) and send the rest again"
        ));
    }
    metrics::counter!("sluice_journal_append_failures_total").increment(1);
    if let Some(suppressed) = APPEND_FAILURE_LOG.allow(std::time::Instant::now()) {
        tracing::error!(error = %e, suppressed, "journal append failed (further failures within a second are counted, not logged)");
    }
    AppError::Unavailable { message: format!("could not make the batch durable: {e}"), retry_after_secs: 5 }
}

/// A full disk fails every append of every request: one line a second says so, not thousands.
static APPEND_FAILURE_LOG: OncePerSecond = OncePerSecond::new();

/// Lets an event through at most once a second, counting the ones it held back.
struct OncePerSecond {
    /// When the last one went through, and how many were held back since.
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl OncePerSecond {
    const fn new() -> Self {
        OncePerSecond { state: std::sync::Mutex::new((None, 0)) }
    }

    /// `Some(events held back since the last one let through)` when this one may go through.
    fn allow(&self, now: std::time::Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, held_back) = &mut *state;
        if last.is_none_or(|last| now.saturating_duration_since(last) >= std::time::Duration::from_secs(1)) {
            *last = Some(now);
            Some(std::mem::take(held_back))
        } else {
            *held_back += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::journal::JournalStats;
    use axum::http::header;

    #[test]
    fn a_flood_of_failures_is_logged_once_a_second_with_the_count_held_back() {
        let log = OncePerSecond::new();
        let start = std::time::Instant::now();
        let at = |ms| start + std::time::Duration::from_millis(ms);
        assert_eq!(log.allow(at(0)), Some(0));
        assert_eq!((1..500).filter_map(|ms| log.allow(at(ms))).count(), 0);
        assert_eq!(log.allow(at(1000)), Some(499), "the next second's first says how many were held back");
        assert_eq!(log.allow(at(1500)), None);
        assert_eq!(log.allow(at(5000)), Some(1));
    }

    /// A journal whose every append fails, as a full disk makes it.
    struct FailingJournal;

    #[async_trait::async_trait]
    impl crate::journal::Journal for FailingJournal {
        async fn append(
            &self,
            _records: Vec<crate::journal::Record>,
        ) -> Result<crate::journal::Appended, JournalError> {
            Err(JournalError::Poisoned("No space left on device".into()))
        }
        fn id(&self) -> &str {
            "failing"
        }
        fn hold(&self, _: &str) {}
        fn reader(&self, _: &str, _: u64) -> Result<Box<dyn crate::journal::JournalReader>, JournalError> {
            Err(JournalError::Poisoned("not for reading".into()))
        }
        fn commit(&self, _: &str, _: u64) {}
        fn stats(&self) -> JournalStats {
            JournalStats::default()
        }
    }

    /// The application state of a server in `dir` whose journal is `journal`.
    fn state_with(dir: &std::path::Path, journal: Arc<dyn crate::journal::Journal>, config: Config) -> AppState {
        let config = Config { data_dir: dir.to_owned(), ..config };
        AppState::new(
            Arc::new(config.clone()),
            journal,
            Arc::new(DeadLetters::open(&config.dead_letter_dir(), config.dead_letter.max_bytes).unwrap()),
            Arc::new(crate::consumers::store_loader::new_status()),
            crate::store::QueryPool::new(config.clone().resolve().unwrap().store, 1, config.store.pool_wait()),
            crate::telemetry::metrics(),
            Arc::new(crate::privacy::Privacy::open(dir).unwrap()),
        )
    }

    /// A journal on a full disk: each append is refused and undone, the journal still tries.
    struct FullDiskJournal;

    #[async_trait::async_trait]
    impl crate::journal::Journal for FullDiskJournal {
        async fn append(
            &self,
            _records: Vec<crate::journal::Record>,
        ) -> Result<crate::journal::Appended, JournalError> {
            let source = std::io::Error::from_raw_os_error(28); // ENOSPC
            Err(JournalError::Unwritten { path: "journal/00000000000000000000.seg".into(), source })
        }
        fn id(&self) -> &str {
            "full"
        }
        fn hold(&self, _: &str) {}
        fn reader(&self, _: &str, _: u64) -> Result<Box<dyn crate::journal::JournalReader>, JournalError> {
            Err(JournalError::Closed)
        }
        fn commit(&self, _: &str, _: u64) {}
        fn stats(&self) -> JournalStats {
            JournalStats { write_error: Some("the disk holding the journal is full".into()), ..JournalStats::default() }
        }
    }

    #[tokio::test]
    async fn a_full_disk_answers_503_saying_so_and_readyz_shows_the_journal_unwritable() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let app = crate::api::router(state_with(dir.path(), Arc::new(FullDiskJournal), Config::default()));
        let request = axum::http::Request::post("/v1/split/impressions")
            .body(axum::body::Body::from(r#"[{"key":"k","split":"f","treatment":"on","time":1}]"#))
            .unwrap();
        let answer = app.clone().oneshot(request).await.unwrap();
        assert_eq!(answer.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(answer.headers().contains_key(header::RETRY_AFTER));
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("disk holding the journal is full"), "{body:?}");

        let request = readyz_from_this_machine();
        let answer = app.oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        let ready: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(ready["journal"]["writable"], false, "{ready}");
        assert_eq!(ready["journal"]["lastWriteError"], "the disk holding the journal is full");
    }

    /// A journal that reports `stats` and is never appended to.
    struct StatsJournal(JournalStats);

    #[async_trait::async_trait]
    impl crate::journal::Journal for StatsJournal {
        async fn append(
            &self,
            _records: Vec<crate::journal::Record>,
        ) -> Result<crate::journal::Appended, JournalError> {
            Err(JournalError::Closed)
        }
        fn id(&self) -> &str {
            "stats"
        }
        fn hold(&self, _: &str) {}
        fn reader(&self, _: &str, _: u64) -> Result<Box<dyn crate::journal::JournalReader>, JournalError> {
            Err(JournalError::Closed)
        }
        fn commit(&self, _: &str, _: u64) {}
        fn stats(&self) -> JournalStats {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn readyz_reports_the_very_reason_ingest_refuses_with() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.backpressure.max_consumer_lag = 10;
        let lagging =
            JournalStats { next_offset: 100, consumers: vec![("store".into(), 0)], ..JournalStats::default() };
        let app = crate::api::router(state_with(dir.path(), Arc::new(StatsJournal(lagging)), config));
        let request = axum::http::Request::post("/v1/split/impressions").body(axum::body::Body::from("[]")).unwrap();
        let answer = app.clone().oneshot(request).await.unwrap();
        assert_eq!(answer.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        let refused: serde_json::Value = serde_json::from_slice(&body).unwrap();

        let request = readyz_from_this_machine();
        let answer = app.oneshot(request).await.unwrap();
        assert_eq!(answer.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        let ready: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let reason = ready["ingestRefused"].as_str().expect("a reason");
        assert!(reason.contains("consumer `store` is 100 records behind"), "{ready}");
        assert!(refused.to_string().contains(reason), "the 503 gives the same reason: {refused}");
    }

    /// For each endpoint, a body whose first record is refused and whose second is valid.
    const MIXED: [(&str, &str); 3] = [
        (
            "/v1/split/impressions",
            r#"[{"key":5},{"key":"k","split":"f","environmentId":"id-p","environmentName":"p","treatment":"on","time":1,"bucketingKey":null,"label":"l","machineName":"m","machineIp":"10.0.0.1","splitVersionNumber":1,"sdk":"java","sdkVersion":"4","properties":"{}"}]"#,
        ),
        ("/v1/segment/webhook", r#"[{"type":"nope"},{"type":"track","event":"E","userId":"u"}]"#),
        ("/v1/batch", r#"{"batch":[{"type":"nope"},{"type":"track","event":"E","userId":"u"}]}"#),
    ];

    /// For each endpoint, a body without records.
    const EMPTY: [(&str, &str); 3] =
        [("/v1/split/impressions", "[]"), ("/v1/segment/webhook", "[]"), ("/v1/batch", r#"{"batch":[]}"#)];

    /// `GET /readyz` as the server hands it on from a loopback client (it is not open to others).
    fn readyz_from_this_machine() -> axum::http::Request<Body> {
        let mut request = axum::http::Request::get("/readyz").body(Body::empty()).unwrap();
        request.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 1))));
        request
    }

    fn post(path: &str, body: &'static str) -> axum::http::Request<Body> {
        axum::http::Request::post(path).body(Body::from(body)).unwrap()
    }

    async fn json_of(answer: Response) -> serde_json::Value {
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn refused_records_are_not_dead_lettered_when_the_journal_answers_503() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state = state_with(dir.path(), Arc::new(FailingJournal), Config::default());
        let area = state.config.dead_letter_dir();
        let app = crate::api::router(state);
        for (path, body) in MIXED {
            for _ in 0..2 {
                let answer = app.clone().oneshot(post(path, body)).await.unwrap();
                assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
            }
        }
        let written = std::fs::read_to_string(area.join("current.ndjson")).unwrap();
        assert_eq!(written, "", "the senders will retry: nothing is dead-lettered until the outcome is final");
    }

    /// A journal whose appends wait until the test lets each answer (successfully).
    struct GatedJournal {
        /// Told when an append has started.
        appending: tokio::sync::Notify,
        /// One permit per append allowed to answer.
        answers: tokio::sync::Semaphore,
    }

    impl GatedJournal {
        fn new() -> Self {
            GatedJournal { appending: tokio::sync::Notify::new(), answers: tokio::sync::Semaphore::new(0) }
        }
    }

    #[async_trait::async_trait]
    impl crate::journal::Journal for GatedJournal {
        async fn append(&self, records: Vec<crate::journal::Record>) -> Result<crate::journal::Appended, JournalError> {
            self.appending.notify_one();
            self.answers.acquire().await.expect("never closed").forget();
            Ok(crate::journal::Appended { offsets: (0..records.len() as u64).collect(), duplicates: 0 })
        }
        fn id(&self) -> &str {
            "gated"
        }
        fn hold(&self, _: &str) {}
        fn reader(&self, _: &str, _: u64) -> Result<Box<dyn crate::journal::JournalReader>, JournalError> {
            Err(JournalError::Closed)
        }
        fn commit(&self, _: &str, _: u64) {}
        fn stats(&self) -> JournalStats {
            JournalStats::default()
        }
    }

    #[tokio::test]
    async fn every_endpoint_dead_letters_its_refusals_only_once_the_journal_has_answered() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(GatedJournal::new());
        let state = state_with(dir.path(), journal.clone(), Config::default());
        let area = state.config.dead_letter_dir().join("current.ndjson");
        let app = crate::api::router(state);
        for ((path, body), source) in MIXED.into_iter().zip(["split", "segment", "segment"]) {
            let before = std::fs::read_to_string(&area).unwrap();
            let pending = tokio::spawn(app.clone().oneshot(post(path, body)));
            journal.appending.notified().await;
            assert_eq!(std::fs::read_to_string(&area).unwrap(), before, "{path}: the journal has not answered yet");
            journal.answers.add_permits(1);
            let answer = pending.await.unwrap().unwrap();
            assert_eq!(answer.status(), StatusCode::OK, "{path}");
            let report = json_of(answer).await;
            assert_eq!((&report["accepted"], &report["rejected"]), (&1.into(), &1.into()), "{path}: {report}");
            assert_eq!(report["errors"][0]["index"], 0, "{path}: {report}");
            let written = std::fs::read_to_string(&area).unwrap();
            let lines: Vec<serde_json::Value> =
                written[before.len()..].lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            assert_eq!(lines.len(), 1, "{path}: {written}");
            assert_eq!((&lines[0]["source"], &lines[0]["index"]), (&source.into(), &0.into()), "{path}");
        }
    }

    #[tokio::test]
    async fn every_endpoint_refuses_over_limits_with_503_and_retry_after_before_reading_the_body() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.backpressure.max_consumer_lag = 10;
        config.backpressure.retry_after_secs = 7;
        let lagging =
            JournalStats { next_offset: 100, consumers: vec![("store".into(), 0)], ..JournalStats::default() };
        let app = crate::api::router(state_with(dir.path(), Arc::new(StatsJournal(lagging)), config));
        for (path, _) in MIXED {
            // A body that never arrives: only a refusal before reading it answers at once.
            let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
            let never = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
            let request = axum::http::Request::post(path).body(never).unwrap();
            let answer = tokio::time::timeout(std::time::Duration::from_secs(5), app.clone().oneshot(request))
                .await
                .expect("answered without the body")
                .unwrap();
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert_eq!(answer.headers()[header::RETRY_AFTER], "7", "{path}");
            let refused = json_of(answer).await;
            assert!(refused["error"].as_str().unwrap().contains("consumer `store` is 100 records behind"), "{refused}");
        }
    }

    #[tokio::test]
    async fn every_endpoint_answers_503_with_retry_after_while_no_ingest_permit_is_free() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.limits.max_concurrent_requests = 1;
        let state = state_with(dir.path(), Arc::new(FailingJournal), config);
        let busy = state.ingest_permits.clone().try_acquire_owned().unwrap();
        let app = crate::api::router(state);
        for (path, body) in EMPTY {
            let answer = app.clone().oneshot(post(path, body)).await.unwrap();
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert_eq!(answer.headers()[header::RETRY_AFTER], "1", "{path}");
        }
        drop(busy);
        for (path, body) in EMPTY {
            let answer = app.clone().oneshot(post(path, body)).await.unwrap();
            assert_eq!(answer.status(), StatusCode::OK, "{path}: the permit is free again");
        }
    }

    #[tokio::test]
    async fn every_endpoint_is_counted_under_the_same_metric_names() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(GatedJournal::new());
        journal.answers.add_permits(MIXED.len());
        let app = crate::api::router(state_with(dir.path(), journal, Config::default()));
        for (path, body) in MIXED {
            assert_eq!(app.clone().oneshot(post(path, body)).await.unwrap().status(), StatusCode::OK, "{path}");
        }
        let rendered = crate::telemetry::metrics().render();
        let has = |name: &str, labels: &[&str]| {
            rendered.lines().any(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        };
        for endpoint in ["split", "segment_webhook", "segment_api"] {
            let source = format!("source=\"{endpoint}\"");
            assert!(has("sluice_source_requests_total", &[&source, "status=\"200\""]), "{endpoint}: {rendered}");
        }
        for source in ["split", "segment"] {
            let source = format!("source=\"{source}\"");
            for label in ["result=\"accepted\"", "result=\"rejected\""] {
                assert!(has("sluice_source_records_total", &[&source, label]), "{source} {label}: {rendered}");
            }
            for label in ["stage=\"received\"", "stage=\"decoded\""] {
                assert!(has("sluice_source_bytes_total", &[&source, label]), "{source} {label}: {rendered}");
            }
        }
    }

    #[test]
    fn each_answer_has_the_shape_its_clients_expect() {
        let fault = || vec![RecordFault { index: 0, field: None, reason: "r".into() }];
        let json = |answer: Answer, accepted, rejected, errors| {
            serde_json::to_value(answer.report(accepted, rejected, errors)).unwrap()
        };
        assert_eq!(json(Answer::Counts, 2, 0, vec![]), serde_json::json!({"accepted": 2, "rejected": 0}));
        assert_eq!(
            json(Answer::Counts, 0, 1, fault()),
            serde_json::json!({"accepted": 0, "rejected": 1, "errors": [{"index": 0, "reason": "r"}]})
        );
        assert_eq!(
            json(Answer::SuccessAndCounts, 1, 0, vec![]),
            serde_json::json!({"success": true, "accepted": 1, "rejected": 0})
        );
        assert_eq!(json(Answer::SuccessAndCounts, 0, 1, fault())["success"], false);
        assert_eq!(json(Answer::Success, 3, 0, vec![]), serde_json::json!({"success": true}));
        assert_eq!(
            json(Answer::Success, 1, 1, fault()),
            serde_json::json!({"success": true, "accepted": 1, "rejected": 1, "errors": [{"index": 0, "reason": "r"}]})
        );
    }
}
