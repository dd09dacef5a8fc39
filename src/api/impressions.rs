/*!
`GET /api/impressions`: filtered impressions from the store, streamed as CSV, NDJSON or JSON.

The query runs on a blocking thread, on a connection from the store's reader pool, and streams
its output (see [`super::streaming`]), so memory stays flat however many rows match.
*/

use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::{Router, routing::get};

use crate::http::AppError;
use crate::http::AppState;
use crate::query::{ImpressionQuery, write_impressions};

/// Routes of the impressions query.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/impressions", get(export))
}

async fn export(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, AppError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| AppError::bad_request(format!("the query string is not valid: {e}")))?;
    let (query, format) =
        ImpressionQuery::from_pairs(&pairs).map_err(|e| AppError::bad_field(e.param.clone(), e.to_string()))?;
    let mut store = state.query_store().await?;

    super::streaming::respond(format.content_type(), state.config.store.export_write_timeout(), move |out| {
        write_impressions(&mut store, &query, &format, out, &mut |_| {}).map(drop)
    })
}
