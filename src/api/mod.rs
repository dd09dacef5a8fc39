/*!
The HTTP surface: sources (ingest), queries over the store, and operations endpoints.

[`router`] builds the whole application from an [`AppState`] (the state and errors every
handler shares live in [`crate::http`], below both the sources and these routes); tests drive it
in process with `tower::ServiceExt::oneshot` (below, and the sources' tests) and [`server`] binds
it to a socket.
*/

pub mod attribution;
pub mod events;
pub mod impressions;
pub mod ops;
pub mod privacy;
pub mod server;
pub mod streaming;

use axum::Router;

pub use crate::http::AppState;

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::sources::routes())
        .merge(impressions::routes())
        .merge(events::routes())
        .merge(attribution::routes())
        .merge(ops::routes())
        .merge(privacy::routes())
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::*;
    use crate::config::Config;
    use crate::dead_letter::DeadLetters;
    use crate::journal::file::FileJournal;

    /// The whole application on a fresh data directory, with the journal and store it would open.
    fn app(dir: &std::path::Path) -> Router {
        let config = Config { data_dir: dir.to_owned(), ..Config::default() };
        let settings = config.resolve().unwrap();
        let config = settings.config.clone();
        let journal = Arc::new(FileJournal::open(&config.journal_dir(), config.journal.clone()).unwrap());
        router(AppState::new(
            config.clone(),
            journal,
            Arc::new(DeadLetters::open(&config.dead_letter_dir(), config.dead_letter.max_bytes).unwrap()),
            Arc::new(crate::consumers::store_loader::new_status()),
            crate::store::QueryPool::new(settings.store, 1, config.store.pool_wait()),
            crate::telemetry::metrics(),
            Arc::new(crate::privacy::Privacy::open(dir).unwrap()),
        ))
    }

    /// The status and body of a GET of `uri`.
    async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
        let answer = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = answer.status();
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(get(&app(dir.path()), "/healthz").await, (StatusCode::OK, "ok\n".to_owned()));
    }

    #[tokio::test]
    async fn an_unknown_path_is_404() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(get(&app(dir.path()), "/api/nothing-here").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_bad_query_parameter_is_400_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        for (uri, param) in [("/api/impressions?from=yesterday", "from"), ("/api/events?colour=red", "colour")] {
            let (status, body) = get(&app, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(answer["field"], param, "{uri}: {body}");
            assert!(answer["error"].as_str().unwrap().contains(param), "{uri}: {body}");
        }
    }
}
