/*!
Sources: the HTTP endpoints records arrive on.

Each source authenticates, reads and decodes the body within limits, validates every record with
the parser in [`crate::record`], journals the valid ones and only then answers. What they share —
admission control (backpressure), shared-secret checks, the mapping of journal failures — is here.
*/

pub mod body;
pub mod dead_letter;
pub mod segment;
pub mod split;

use axum::Router;
use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use subtle::ConstantTimeEq as _;
use tokio::sync::OwnedSemaphorePermit;

use self::dead_letter::{DeadLetters, Rejection};
use crate::record::RecordError;

use crate::api::AppState;
use crate::api::error::AppError;
use crate::config::Config;
use crate::journal::{JournalError, JournalStats};

/// Every source's routes.
pub fn routes() -> Router<AppState> {
    Router::new().merge(split::routes()).merge(segment::routes())
}

/// Lets a request in, or answers 503 with `Retry-After` when sluice is over one of its limits:
/// the journal is failing or full, a consumer lags too far, or too many requests are in flight.
pub fn admit(state: &AppState) -> Result<OwnedSemaphorePermit, AppError> {
    if let Some(message) = over_limits(&state.journal.stats(), &state.config) {
        return Err(AppError::Unavailable { message, retry_after_secs: state.config.backpressure.retry_after_secs });
    }
    state.ingest_permits.clone().try_acquire_owned().map_err(|_| AppError::Unavailable {
        message: format!(
            "too many ingest requests in flight (limits.max_concurrent_requests = {}); retry shortly",
            state.config.limits.max_concurrent_requests
        ),
        retry_after_secs: 1,
    })
}

/// Why ingest must push back right now, if it must.
fn over_limits(stats: &JournalStats, config: &Config) -> Option<String> {
    if stats.poisoned {
        return Some("the journal cannot write (see sluice's log); nothing was accepted".into());
    }
    let max_bytes = config.journal.max_bytes;
    if stats.disk_bytes > max_bytes {
        return Some(format!(
            "the journal is full ({} of {max_bytes} bytes, journal.max_bytes) while consumers catch up; retry later",
            stats.disk_bytes
        ));
    }
    let max_lag = config.backpressure.max_consumer_lag;
    stats.consumers.iter().find(|(_, off)| stats.next_offset.saturating_sub(*off) > max_lag).map(|(name, offset)| {
        format!(
            "consumer `{name}` is {} records behind (backpressure.max_consumer_lag = {max_lag}); retry later",
            stats.next_offset - offset
        )
    })
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

/// Writes every refused record of a batch (its index, what is wrong, the record as sent) to the
/// dead-letter area and returns the first few refusals for the response.
pub fn dead_letter_all(
    source: &str,
    received_at: i64,
    errors: &[(usize, RecordError, &RawValue)],
    dead_letters: &DeadLetters,
) -> Result<Vec<RecordFault>, AppError> {
    if errors.is_empty() {
        return Ok(Vec::new());
    }
    let rejections: Vec<Rejection<'_>> = errors
        .iter()
        .map(|(index, e, record)| Rejection { index: *index, field: e.field.as_deref(), reason: &e.reason, record })
        .collect();
    dead_letters.write(source, received_at, &rejections).map_err(|e| {
        AppError::Internal(anyhow::Error::new(e).context("could not write rejected records to the dead-letter area"))
    })?;
    Ok(errors
        .iter()
        .take(MAX_LISTED_ERRORS)
        .map(|(index, e, _)| RecordFault { index: *index, field: e.field.clone(), reason: e.reason.clone() })
        .collect())
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
    tracing::error!(error = %e, "journal append failed");
    AppError::Unavailable { message: format!("could not make the batch durable: {e}"), retry_after_secs: 5 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

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
    fn ingest_pushes_back_when_the_journal_fails_fills_up_or_a_consumer_lags() {
        let mut config = Config::default();
        config.journal.max_bytes = 1000;
        config.backpressure.max_consumer_lag = 50;
        let fine = JournalStats {
            next_offset: 100,
            disk_bytes: 1000,
            consumers: vec![("store".into(), 50), ("lake".into(), 60)],
            ..JournalStats::default()
        };
        assert_eq!(over_limits(&fine, &config), None);
        let poisoned = JournalStats { poisoned: true, ..fine.clone() };
        assert!(over_limits(&poisoned, &config).unwrap().contains("cannot write"));
        let full = JournalStats { disk_bytes: 1001, ..fine.clone() };
        assert!(over_limits(&full, &config).unwrap().contains("journal.max_bytes"));
        let lagging = JournalStats { consumers: vec![("store".into(), 49)], ..fine };
        assert_eq!(
            over_limits(&lagging, &config).unwrap(),
            "consumer `store` is 51 records behind (backpressure.max_consumer_lag = 50); retry later"
        );
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
