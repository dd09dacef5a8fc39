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

fn pairs(query: Option<&str>) -> Result<Vec<(String, String)>, AppError> {
    serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| AppError::bad_request(format!("the query string is not valid: {e}")))
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
    let answer = run(&state, move |store, _| {
        Ok(serde_json::json!({"environment": environment, "experiments": experiments::list(store, &environment)?}))
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
    let answer = run(&state, move |store, config| {
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

/// Runs `query` on a pooled store connection, off the async workers, bounded by the store's
/// query timeout and by [`READOUTS_AT_ONCE`].
async fn run<T: Send + 'static>(
    state: &AppState,
    query: impl FnOnce(&mut crate::store::Store, &crate::config::Config) -> Result<T, ReadoutError> + Send + 'static,
) -> Result<T, AppError> {
    let retry_after_secs = state.config.backpressure.retry_after_secs;
    let permit = state.readouts.clone().try_acquire_owned().map_err(|_| AppError::Unavailable {
        message: format!("{READOUTS_AT_ONCE} experiment read-outs are running; retry in a moment"),
        retry_after_secs,
    })?;
    let mut store = state.query_store().await?;
    let config = state.config.clone();
    tokio::task::spawn_blocking(move || {
        // Held by the blocking task, not the request: a client that hangs up does not end the
        // read-out, so it must not free its place either.
        let _permit = permit;
        let timeout = config.store.query_timeout();
        // The outer result is always Ok: the read-out's own error carries a cancelled statement.
        let answer = store.with_timeout(timeout, |store| Ok(query(store, &config)));
        answer.map_err(ReadoutError::Query)?.map_err(|e| match e {
            ReadoutError::Query(e) if e.is_cancelled() => {
                ReadoutError::Query(QueryError::TimedOut(timeout.unwrap_or_default()))
            }
            e => e,
        })
    })
    .await
    .map_err(|e| AppError::Internal(e.into()))?
    .map_err(|e| match e {
        ReadoutError::Design(e) => AppError::bad_field(e.param(), format!("parameter `{}`: {e}", e.param())),
        e @ ReadoutError::NoExposures { .. } => AppError::NotFound(e.to_string()),
        e @ (ReadoutError::TooManyUnits(_) | ReadoutError::TooManyLinks(_)) => AppError::TooLarge(e.to_string()),
        ReadoutError::Query(e @ QueryError::TimedOut(_)) => AppError::Unavailable {
            message: format!("{e} (a read-out can be narrowed with from/to or version)"),
            retry_after_secs,
        },
        ReadoutError::Query(QueryError::Store(e)) if e.is_unavailable() => state.store_unreachable(&e),
        ReadoutError::Query(e) => AppError::Internal(e.into()),
    })
}
