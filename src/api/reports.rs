/*!
`GET /api/reports/attribution?model=…&conversion=…&from=…&to=…&group=…` — which channels,
sources, campaigns or referrer types earn the conversions (JSON, or `format=csv`) — and
`GET /api/user/{id}/conversions?model=…`, one user's conversions with each touch's credit. The
definitions are in [`crate::attribution::paths`] and [`crate::attribution::models`], the
computation in [`crate::query::attribution_report`], the parameters in
[`ReportRequest::from_pairs`]. A report shares the read-outs' limit of heavy queries at once.
*/

use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};

use super::experiments::{HeavyError, pairs, run};
use crate::http::{AppError, AppState};
use crate::query::attribution_report::{self, ReportError, ReportFormat, ReportRequest};
use crate::query::{QueryError, no_nul};

/// Routes of the reports API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/reports/attribution", get(attribution))
        .route("/api/user/{id}/conversions", get(user_conversions))
}

impl HeavyError for ReportError {
    fn query(&self) -> Option<&QueryError> {
        match self {
            ReportError::Query(e) => Some(e),
            _ => None,
        }
    }

    fn answer(self) -> AppError {
        match self {
            e @ ReportError::NoConversions => AppError::bad_field("conversion", e.to_string()),
            e @ ReportError::TooLarge(_) => AppError::TooLarge(e.to_string()),
            e @ (ReportError::Setting(..) | ReportError::Query(_)) => AppError::Internal(e.into()),
        }
    }
}

fn request(query: Option<&str>) -> Result<ReportRequest, AppError> {
    ReportRequest::from_pairs(&pairs(query)?).map_err(|e| AppError::bad_field(e.param.clone(), e.to_string()))
}

/// `GET /api/user/{id}/conversions?model=…`: the user's conversions, each touch's credit.
async fn user_conversions(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let request = request(query.as_deref())?;
    no_nul("id", &id).map_err(|e| AppError::bad_field("id", e.to_string()))?;
    if request.models.contains(&"data_driven") {
        return Err(AppError::bad_field(
            "model",
            "parameter `model`: data_driven credits channels over all paths, not the touches of one conversion; ask GET /api/reports/attribution for it",
        ));
    }
    if request.format != ReportFormat::Json {
        return Err(AppError::bad_field("format", "parameter `format`: a user's conversions are JSON only"));
    }
    let answer = run(&state, "a user's conversions can be narrowed with from/to", move |store, config| {
        attribution_report::user_conversions(store, &id, &request, &config.attribution)
    })
    .await?;
    Ok(Json(answer).into_response())
}

async fn attribution(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, AppError> {
    let request = request(query.as_deref())?;
    let format = request.format;
    let answer = run(&state, "a report can be narrowed with from/to", move |store, config| {
        attribution_report::report(store, &request, &config.attribution)
    })
    .await?;
    Ok(match format {
        ReportFormat::Json => Json(answer).into_response(),
        ReportFormat::Csv => {
            let mut csv = Vec::new();
            attribution_report::write_csv(&answer, &mut csv).map_err(|e| AppError::Internal(e.into()))?;
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response()
        }
    })
}
