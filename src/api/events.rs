/*!
`GET /api/events`: stored Segment events, filtered by id, type, name and time, streamed as NDJSON
(default) or one JSON array, each event whole as it was journaled.
*/

use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::{Router, routing::get};

use crate::http::AppError;
use crate::http::AppState;
use crate::query::{EventQuery, write_events};

/// Routes of the events query.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/events", get(export))
}

async fn export(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, AppError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| AppError::bad_request(format!("the query string is not valid: {e}")))?;
    let (query, format) =
        EventQuery::from_pairs(&pairs).map_err(|e| AppError::bad_field(e.param.clone(), e.to_string()))?;
    let mut store = state.query_store().await?;
    super::streaming::respond(format.content_type(), state.config.store.export_write_timeout(), move |out| {
        write_events(&mut store, &query, format, out).map(drop)
    })
}
