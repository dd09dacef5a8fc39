/*!
Sources: the HTTP endpoints records arrive on.

Each source authenticates, reads and decodes the body within limits, validates every record with
the parser in [`crate::record`], journals the valid ones and only then answers. What they share —
admission control (backpressure), shared-secret checks, bounded array parsing, the dead-letter
step, the mapping of journal failures — is here.

The order of the steps is what keeps hostile or slow clients from starving the rest: credentials
in headers are checked before the body is read; the body is read within a deadline and the
shared byte budget before an ingest permit is taken (so a slow sender holds no permit); inflating,
parsing and validating run on the blocking pool, never on the async workers that answer
`/healthz` and everyone else.
*/

pub mod segment;
pub mod split;

use std::cell::Cell;
use std::fmt;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use subtle::ConstantTimeEq as _;
use tokio::sync::OwnedSemaphorePermit;

use crate::dead_letter::{DeadLetters, Rejection};
use crate::http::body::{self, Reservation};
use crate::record::RecordError;

use crate::http::AppError;
use crate::http::AppState;
use crate::journal::JournalError;

/// Every source's routes.
pub fn routes() -> Router<AppState> {
    Router::new().merge(split::routes()).merge(segment::routes())
}

/// Answers 503 with `Retry-After` when sluice is over one of its limits (the journal is failing
/// or full, a consumer lags too far): checked before a body is read, so nobody sends it in vain.
pub fn refuse_when_over_limits(state: &AppState) -> Result<(), AppError> {
    match crate::http::over_limits(&state.journal.stats(), &state.config) {
        Some(message) => {
            Err(AppError::Unavailable { message, retry_after_secs: state.config.backpressure.retry_after_secs })
        }
        None => Ok(()),
    }
}

/// Lets an authenticated request whose body has arrived in, or answers 503 with `Retry-After`:
/// over one of the limits above, or too many requests in flight.
pub fn admit(state: &AppState) -> Result<OwnedSemaphorePermit, AppError> {
    refuse_when_over_limits(state)?;
    state.ingest_permits.clone().try_acquire_owned().map_err(|_| AppError::Unavailable {
        message: format!(
            "too many ingest requests in flight (limits.max_concurrent_requests = {}); retry shortly",
            state.config.limits.max_concurrent_requests
        ),
        retry_after_secs: 1,
    })
}

/// Reads the body within `limit` bytes, `http.body_read_timeout_ms` and the shared byte budget;
/// the reservation must live as long as the body (or what is decoded from it) does.
pub async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(Bytes, Reservation), body::BodyError> {
    let mut reservation = state.body_bytes.reservation();
    let raw = body::read_limited(headers, body, limit, state.config.http.body_read_timeout(), &mut reservation).await?;
    Ok((raw, reservation))
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

/// The most per-record errors listed in one response; the dead-letter area has them all.
const MAX_LISTED_ERRORS: usize = 100;

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

/// Writes every refused record of a batch (its index, what is wrong, the record as sent) to the
/// dead-letter area and returns the first few refusals for the response.
///
/// Call it once the request's outcome is known and is an answer the sender will not retry (the
/// valid records are durable, or there were none): a 503 and its retry would write them twice.
/// A failure to write is logged, not answered: the valid records are already durable (a 5xx would
/// make the sender send them again), and the response itself lists the refusals.
pub fn dead_letter_all(
    source: &str,
    received_at: i64,
    refused: &[Refused],
    dead_letters: &DeadLetters,
) -> Vec<RecordFault> {
    if refused.is_empty() {
        return Vec::new();
    }
    let rejections: Vec<Rejection<'_>> = refused
        .iter()
        .map(|r| Rejection {
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

/// Runs `work` on the blocking pool (inflating and parsing a large body takes a while and must
/// not stall the async workers).
pub async fn off_the_workers<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| AppError::Internal(e.into()))?
}

/// A failed append acknowledges nothing, so the client must retry: 503 with `Retry-After`.
/// Except for a record over the journal's per-record limit, refused before anything was
/// written: a retry would fail the same way, so that is the client's 413.
pub fn journal_unavailable(e: JournalError) -> AppError {
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
    use crate::config::Config;
    use crate::journal::JournalStats;
    use axum::http::HeaderValue;

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
        async fn append(&self, _records: Vec<crate::journal::Record>) -> Result<std::ops::Range<u64>, JournalError> {
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
        )
    }

    /// A journal on a full disk: each append is refused and undone, the journal still tries.
    struct FullDiskJournal;

    #[async_trait::async_trait]
    impl crate::journal::Journal for FullDiskJournal {
        async fn append(&self, _records: Vec<crate::journal::Record>) -> Result<std::ops::Range<u64>, JournalError> {
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

        let request = axum::http::Request::get("/readyz").body(axum::body::Body::empty()).unwrap();
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
        async fn append(&self, _records: Vec<crate::journal::Record>) -> Result<std::ops::Range<u64>, JournalError> {
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

        let request = axum::http::Request::get("/readyz").body(axum::body::Body::empty()).unwrap();
        let answer = app.oneshot(request).await.unwrap();
        assert_eq!(answer.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        let ready: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let reason = ready["ingestRefused"].as_str().expect("a reason");
        assert!(reason.contains("consumer `store` is 100 records behind"), "{ready}");
        assert!(refused.to_string().contains(reason), "the 503 gives the same reason: {refused}");
    }

    #[tokio::test]
    async fn requests_over_the_concurrency_limit_get_503_with_retry_after() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.limits.max_concurrent_requests = 1;
        let state = state_with(dir.path(), Arc::new(FailingJournal), config);
        // Another request is being processed: it holds the only permit.
        let busy = state.ingest_permits.clone().try_acquire_owned().unwrap();
        let app = crate::api::router(state);
        let request = || axum::http::Request::post("/v1/split/impressions").body(axum::body::Body::from("[]")).unwrap();
        let answer = app.clone().oneshot(request()).await.unwrap();
        assert_eq!(answer.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers()[header::RETRY_AFTER], "1");
        drop(busy);
        let answer = app.oneshot(request()).await.unwrap();
        assert_eq!(answer.status(), axum::http::StatusCode::OK, "the permit is free again");
    }

    #[tokio::test]
    async fn refused_records_are_not_dead_lettered_when_the_journal_answers_503() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state = state_with(dir.path(), Arc::new(FailingJournal), Config::default());
        let area = state.config.dead_letter_dir();
        let app = crate::api::router(state);
        let split = r#"[{"key":5},{"key":"k","split":"f","environmentId":"id-p","environmentName":"p","treatment":"on","time":1,"bucketingKey":null,"label":"l","machineName":"m","machineIp":"10.0.0.1","splitVersionNumber":1,"sdk":"java","sdkVersion":"4","properties":"{}"}]"#;
        let segment = r#"[{"type":"nope"},{"type":"track","event":"E","userId":"u"}]"#;
        for (path, body) in [("/v1/split/impressions", split), ("/v1/segment/webhook", segment)] {
            for _ in 0..2 {
                let request = axum::http::Request::post(path).body(axum::body::Body::from(body)).unwrap();
                let answer = app.clone().oneshot(request).await.unwrap();
                assert_eq!(answer.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE, "{path}");
            }
        }
        let written = std::fs::read_to_string(area.join("current.ndjson")).unwrap();
        assert_eq!(written, "", "the senders will retry: nothing is dead-lettered until the outcome is final");
    }

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
