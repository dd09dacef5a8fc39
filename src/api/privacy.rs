/*!
Privacy requests over HTTP (admin): `DELETE /api/user/{id}` erases a person (`?suppress=true`
also drops their later records at ingest), `GET /api/suppressions` lists the suppressions (hashed
ids only), `DELETE /api/suppressions/{id}` lifts one. The work is in [`crate::privacy`]; every
request is written to the audit log with who asked: the [`Caller`] the access layer put in the
request, or `unauthenticated`.
*/

use axum::extract::{Path, Query, State};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use crate::http::auth::Caller;
use crate::http::{AppError, AppState};
use crate::privacy::erase::{EraseError, Outcome};
use crate::privacy::suppression::Suppression;

/// Routes of the privacy API; the access layer restricts them to admins.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/user/{id}", delete(erase))
        .route("/api/suppressions", get(suppressions))
        .route("/api/suppressions/{id}", delete(lift))
}

/// The query of `DELETE /api/user/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseParams {
    /// Also drop the person's later records at ingest.
    #[serde(default)]
    suppress: bool,
}

/// Who the audit log names for a request.
fn who(caller: Option<Extension<Caller>>) -> String {
    caller.map_or_else(|| "unauthenticated".to_owned(), |Extension(c)| c.name)
}

async fn erase(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
    params: Result<Query<EraseParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Outcome>, AppError> {
    let Query(params) =
        params.map_err(|e| AppError::bad_request(format!("{e}; the only parameter is suppress=true|false")))?;
    let eraser = state.eraser.clone().ok_or_else(|| {
        AppError::Conflict("this sluice process does not run erasures; send the request to `sluice serve`".into())
    })?;
    let retry_after_secs = state.config.backpressure.retry_after_secs;
    let who = who(caller);
    // A task of its own: an erasure the client stops waiting for still runs to its end.
    let erasure = tokio::spawn(async move { eraser.erase(&id, params.suppress, &who).await });
    let done = erasure.await.map_err(|e| AppError::Internal(e.into()))?;
    done.map(Json).map_err(|e| match e {
        EraseError::TooLarge { .. } => AppError::Conflict(e.to_string()),
        e if e.is_transient() => AppError::Unavailable { message: e.to_string(), retry_after_secs },
        e => AppError::Internal(e.into()),
    })
}

/// `GET /api/suppressions`.
#[derive(Debug, Serialize)]
struct SuppressionList {
    suppressions: Vec<Suppression>,
}

async fn suppressions(State(state): State<AppState>) -> Json<SuppressionList> {
    Json(SuppressionList { suppressions: state.privacy.suppressions.list() })
}

async fn lift(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Json<Suppression>, AppError> {
    let privacy = state.privacy.clone();
    let who = who(caller);
    let lifted = tokio::task::spawn_blocking(move || {
        let lifted = privacy.suppressions.lift(&id)?;
        if let Some(lifted) = &lifted {
            privacy.audit.append(&serde_json::json!({
                "who": who, "what": "lift suppression", "suppression": lifted.id, "ids": lifted.ids,
            }))?;
        }
        Ok::<_, crate::privacy::PrivacyError>(lifted.ok_or(id))
    })
    .await
    .map_err(|e| AppError::Internal(e.into()))?
    .map_err(|e| AppError::Internal(e.into()))?;
    lifted
        .map(Json)
        .map_err(|id| AppError::NotFound(format!("no suppression `{id}`; GET /api/suppressions lists them by id")))
}
