/*!
The seed's attribution API: `GET /api/anonymous/{id}` → `{"sessions":[…]}` and
`GET /api/user/{id}` → `{"anonymousIds":[…],"sessions":[[…],…]}` (plus `userIds`, `firstTouch`,
`lastTouch`). Ids are URL-decoded, so e-mail addresses work; an unknown id answers 200 with
empty lists.
*/

use axum::extract::{Path, State};
use axum::{Json, Router, routing::get};

use super::AppState;
use super::error::AppError;
use crate::query::attribution::{self, AnonymousAnswer, UserAnswer};

/// Routes of the attribution API.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/anonymous/{id}", get(anonymous)).route("/api/user/{id}", get(user))
}

async fn anonymous(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<AnonymousAnswer>, AppError> {
    let mut store = state.readers.get().await.map_err(|e| AppError::Internal(e.into()))?;
    let answer =
        tokio::task::spawn_blocking(move || attribution::anonymous(&mut store, &id, &state.config.attribution))
            .await
            .map_err(|e| AppError::Internal(e.into()))?
            .map_err(|e| AppError::Internal(e.into()))?;
    Ok(Json(answer))
}

async fn user(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<UserAnswer>, AppError> {
    let mut store = state.readers.get().await.map_err(|e| AppError::Internal(e.into()))?;
    let answer = tokio::task::spawn_blocking(move || attribution::user(&mut store, &id, &state.config.attribution))
        .await
        .map_err(|e| AppError::Internal(e.into()))?
        .map_err(|e| AppError::Internal(e.into()))?;
    Ok(Json(answer))
}
