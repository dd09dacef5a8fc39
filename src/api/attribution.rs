/*!
The seed's attribution API: `GET /api/anonymous/{id}` → `{"sessions":[…]}` and
`GET /api/user/{id}` → `{"anonymousIds":[…],"sessions":[[…],…]}` (plus `userIds`, `firstTouch`,
`lastTouch`). Ids are URL-decoded, so e-mail addresses work; an unknown id answers 200 with
empty lists.
*/

use axum::extract::{Path, State};
use axum::{Json, Router, routing::get};

use crate::attribution::AttributionSettings;
use crate::http::AppError;
use crate::http::AppState;
use crate::query::QueryError;
use crate::query::attribution::{self, AnonymousAnswer, UserAnswer};
use crate::store::Store;

/// Routes of the attribution API.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/anonymous/{id}", get(anonymous)).route("/api/user/{id}", get(user))
}

async fn anonymous(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<AnonymousAnswer>, AppError> {
    answer(state, id, attribution::anonymous).await
}

async fn user(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<UserAnswer>, AppError> {
    answer(state, id, attribution::user).await
}

/// Runs one attribution query for `id` on a pooled store connection, off the async workers
/// (both backends' drivers block).
async fn answer<T: Send + 'static>(
    state: AppState,
    id: String,
    query: fn(&mut Store, &str, &AttributionSettings) -> Result<T, QueryError>,
) -> Result<Json<T>, AppError> {
    let mut store = state.query_store().await?;
    let retry_after_secs = state.config.backpressure.retry_after_secs;
    let config = state.config.clone();
    let answer = tokio::task::spawn_blocking(move || {
        store.with_timeout(config.store.query_timeout(), |store| query(store, &id, &config.attribution))
    })
    .await
    .map_err(|e| AppError::Internal(e.into()))?
    .map_err(|e| match e {
        QueryError::TimedOut(_) => AppError::Unavailable { message: e.to_string(), retry_after_secs },
        QueryError::Store(e) if e.is_unavailable() => state.store_unreachable(&e),
        e => AppError::Internal(e.into()),
    })?;
    Ok(Json(answer))
}
