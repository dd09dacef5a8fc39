/*!
The HTTP surface: sources (ingest), queries over the store, and operations endpoints.

[`router`] builds the whole application from an [`AppState`] (the state and errors every
handler shares live in [`crate::http`], below both the sources and these routes); tests drive it
with `tower::ServiceExt::oneshot` and [`server`] binds it to a socket.
*/

pub mod attribution;
pub mod events;
pub mod impressions;
pub mod ops;
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
        .with_state(state)
}
