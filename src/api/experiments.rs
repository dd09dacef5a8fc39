/*!
`GET /api/experiments?environment=…` (the flags seen there, with their units, versions and
warnings) and `GET /api/experiments/{split}?environment=…&metric=…` (the read-out, JSON or
`format=csv`). The definitions are in [`crate::experiments`]; the parameters in
[`ReadoutRequest::from_pairs`].

A read-out holds its units in memory and keeps a store connection for seconds on a large
experiment, so at most [`READOUTS_AT_ONCE`] run at once per server; more answer 503 with
`Retry-After`.
*/

use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};

use crate::http::{AppError, AppState, READOUTS_AT_ONCE};
use crate::query::QueryError;
use crate::query::experiments::{self, ReadoutError, ReadoutFormat, ReadoutRequest};
use crate::query::no_nul;

/// Routes of the experiments API.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/experiments", get(list)).route("/api/experiments/{split}", get(readout))
}

/// The query string's name/value pairs. A name or value that is not UTF-8 once percent-decoded
/// is refused naming it: `serde_urlencoded` would silently turn its bytes into U+FFFD, a name that
/// matches nothing without saying why.
pub(super) fn pairs(query: Option<&str>) -> Result<Vec<(String, String)>, AppError> {
    let query = query.unwrap_or("");
    let utf8 = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().is_ok();
    for part in query.split('&') {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        if !utf8(name) || !utf8(value) {
            let field = percent_encoding::percent_decode_str(name).decode_utf8_lossy().replace('+', " ");
            return Err(AppError::bad_field(
                field.clone(),
                format!("parameter `{field}` is not UTF-8 once percent-decoded; encode the text as UTF-8"),
            ));
        }
    }
    serde_urlencoded::from_str(query).map_err(|e| AppError::bad_request(format!("the query string is not valid: {e}")))
}

async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, AppError> {
    let pairs = pairs(query.as_deref())?;
    let mut environment = None;
    for (name, value) in pairs {
        match name.as_str() {
            "environment" if environment.is_some() => {
                return Err(AppError::bad_field(name, "parameter `environment` is given more than once"));
            }
            "environment" if value.contains('\0') => {
                return Err(AppError::bad_field(
                    name,
                    "parameter `environment`: contains a NUL byte, which no name holds",
                ));
            }
            "environment" if !value.is_empty() => environment = Some(value),
            "environment" => return Err(AppError::bad_field(name, "parameter `environment` is empty")),
            _ => {
                return Err(AppError::bad_field(
                    name.clone(),
                    format!("parameter `{name}` is not a known parameter; use environment"),
                ));
            }
        }
    }
    let environment = environment.ok_or_else(|| {
        AppError::bad_field("environment", "parameter `environment` is required: name the environment (or its id)")
    })?;
    let answer = run(&state, "a list cannot be narrowed", move |store, _| {
        Ok::<_, ReadoutError>(
            serde_json::json!({"environment": environment, "experiments": experiments::list(store, &environment)?}),
        )
    })
    .await?;
    Ok(Json(answer).into_response())
}

async fn readout(
    State(state): State<AppState>,
    Path(split): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let request = ReadoutRequest::from_pairs(&pairs(query.as_deref())?)
        .map_err(|e| AppError::bad_field(e.param.clone(), e.to_string()))?;
    no_nul("split", &split).map_err(|e| AppError::bad_field("split", e.to_string()))?;
    let format = request.format;
    let answer = run(&state, "a read-out can be narrowed with from/to or version", move |store, config| {
        experiments::readout(store, &split, &request, &config.experiments, config.attribution.max_cluster_ids)
    })
    .await?;
    Ok(match format {
        ReadoutFormat::Json => Json(answer).into_response(),
        ReadoutFormat::Csv => {
            let mut csv = Vec::new();
            experiments::write_csv(&answer, &mut csv).map_err(|e| AppError::Internal(e.into()))?;
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response()
        }
    })
}

/// An error of a heavy query: the store's own, or one the endpoint answers itself.
pub(super) trait HeavyError: Send + 'static {
    /// The store's error, if this is one.
    fn query(&self) -> Option<&QueryError>;
    /// The answer to any other error.
    fn answer(self) -> AppError;
}

impl HeavyError for ReadoutError {
    fn query(&self) -> Option<&QueryError> {
        match self {
            ReadoutError::Query(e) => Some(e),
            _ => None,
        }
    }

    fn answer(self) -> AppError {
        match self {
            ReadoutError::Design(e) => AppError::bad_field(e.param(), format!("parameter `{}`: {e}", e.param())),
            e @ ReadoutError::NoExposures { .. } => AppError::NotFound(e.to_string()),
            e => AppError::TooLarge(e.to_string()),
        }
    }
}

/// Runs `query` (an experiment read-out or an attribution report) on a pooled store connection,
/// off the async workers, bounded by the store's query timeout and by [`READOUTS_AT_ONCE`];
/// `narrow` says how a timed-out request can ask for less.
pub(super) async fn run<T: Send + 'static, E: HeavyError>(
    state: &AppState,
    narrow: &'static str,
    query: impl FnOnce(&mut crate::store::Store, &crate::config::Config) -> Result<T, E> + Send + 'static,
) -> Result<T, AppError> {
    let retry_after_secs = state.config.backpressure.retry_after_secs;
    let permit = state.readouts.clone().try_acquire_owned().map_err(|_| AppError::Unavailable {
        message: format!("{READOUTS_AT_ONCE} read-outs or reports are running; retry in a moment"),
        retry_after_secs,
    })?;
    let mut store = state.query_store().await?;
    let config = state.config.clone();
    let timeout = config.store.query_timeout();
    let answer = tokio::task::spawn_blocking(move || {
        // Held by the blocking task, not the request: a client that hangs up does not end the
        // query, so it must not free its place either.
        let _permit = permit;
        // The outer result is always Ok: the query's own error carries a cancelled statement.
        store.with_timeout(timeout, |store| Ok(query(store, &config)))
    })
    .await
    .map_err(|e| AppError::Internal(e.into()))?;
    let timed_out = |e: &QueryError| e.is_cancelled() || matches!(e, QueryError::TimedOut(_));
    match answer {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) if e.query().is_none() => Err(e.answer()),
        Ok(Err(e)) => Err(query_error(state, e.query().expect("a query error"), timed_out, timeout, narrow)),
        Err(e) => Err(query_error(state, &e, timed_out, timeout, narrow)),
    }
}

fn query_error(
    state: &AppState,
    e: &QueryError,
    timed_out: impl Fn(&QueryError) -> bool,
    timeout: Option<std::time::Duration>,
    narrow: &str,
) -> AppError {
    match e {
        e if timed_out(e) => AppError::Unavailable {
            message: format!("{} ({narrow})", QueryError::TimedOut(timeout.unwrap_or_default())),
            retry_after_secs: state.config.backpressure.retry_after_secs,
        },
        QueryError::Store(e) if e.is_unavailable() => state.store_unreachable(e),
        e => AppError::Internal(anyhow::anyhow!("{e}")),
    }
}
