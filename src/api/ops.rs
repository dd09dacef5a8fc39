/*!
Operations endpoints: `/healthz` (the process answers), `/readyz` (it can do its job) and
`/metrics` (Prometheus text format).
*/

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::Extensions;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Json, Router, routing::get};
use serde_json::json;

use crate::http::AppState;

/// `/healthz`, open to everyone: it tells only that the process answers.
pub fn open_routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
}

/// `/readyz` and `/metrics`: [guarded](crate::http::auth::Need::Operations) by the router.
pub fn routes() -> Router<AppState> {
    Router::new().route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready means: the journal accepts writes and has room, the store loader is healthy and every
/// consumer within the lag limit (the conditions under which ingest does not push back), and no
/// consumer has stopped (its records would pile up unprocessed).
/// A journal whose last write failed (a full disk) shows `writable: false` and the error, but is
/// still ready unless poisoned: it tries every append again, and only an append can find out
/// that space came back, so an unready verdict that keeps traffic away would never clear.
/// A journal on NATS JetStream whose connection is down makes sluice unready (every append would
/// answer 503 until it is back), and shows the connection's state.
/// A failing lake is reported but does not make sluice unready: ingest goes on while the lake is
/// down (that is the point of the journal), and the lake's lag still counts against the limit.
///
/// Errors name the store's address (user, host, port, database) only to a request from the
/// machine itself: anyone who can reach `/readyz` should not learn where the database is.
async fn readyz(State(state): State<AppState>, extensions: Extensions) -> impl IntoResponse {
    let local =
        extensions.get::<ConnectInfo<SocketAddr>>().is_some_and(|ConnectInfo(peer)| crate::access::is_local(peer.ip()));
    let store_address = state.query_pool.target().to_string();
    let shown = |error: Option<String>| error.map(|e| if local { e } else { redact(&e, &store_address) });
    let stats = state.journal.stats();
    // The rule ingest refuses by: whatever makes it push back makes sluice unready.
    let refusing = crate::http::over_limits(&stats, &state.config);
    let loader_healthy = state.loader.is_healthy();
    let loader_stopped = state.loader.stopped_reason();
    let lake_stopped = state.lake.as_ref().and_then(|lake| lake.stopped_reason());
    let consumers: serde_json::Map<String, serde_json::Value> = stats
        .consumers
        .iter()
        .map(|(name, offset)| {
            let lag = stats.next_offset.saturating_sub(*offset);
            let limit = state.config.lag_limit(name).map(|(limit, _)| limit);
            (name.clone(), json!({"offset": offset, "lag": lag, "ok": limit.is_none_or(|limit| lag <= limit)}))
        })
        .collect();
    let connected = stats.connection.as_deref().is_none_or(|state| state == "connected");
    let outputs_stopped = state.outputs.iter().any(|(_, status)| status.stopped_reason().is_some());
    let ready = refusing.is_none()
        && connected
        && loader_healthy
        && loader_stopped.is_none()
        && lake_stopped.is_none()
        && !outputs_stopped;
    let mut body = json!({
        "ready": ready,
        "ingestRefused": refusing,
        "journal": {
            "writable": !stats.poisoned && stats.write_error.is_none() && connected && stats.unavailable.is_none(),
            "lastWriteError": stats.write_error,
            "diskBytes": stats.disk_bytes,
            "maxBytes": state.config.journal.max_bytes,
            "nextOffset": stats.next_offset,
        },
        "consumers": consumers,
        "store": {
            "backend": state.query_pool.target().backend(),
            "healthy": loader_healthy,
            "stopped": shown(loader_stopped),
            "lastError": shown(state.loader.last_error()),
        },
    });
    if let Some(connection) = &stats.connection {
        body["journal"]["connection"] = json!(connection);
    }
    if let Some(lake) = &state.lake {
        body["lake"] = json!({
            "healthy": lake.is_healthy(),
            "stopped": shown(lake_stopped),
            "lastError": shown(lake.last_error()),
            "committedOffset": lake.committed_offset(),
            "bufferedBytes": lake.buffered_bytes(),
        });
    }
    if let Some(leases) = &state.leases {
        // Each consumer's holder as this node last saw it: a standby node is ready too, and
        // shows which node does the work.
        let holders: serde_json::Map<String, serde_json::Value> =
            leases.holders().into_iter().map(|(lease, holder)| (lease, json!(holder))).collect();
        body["cluster"] = json!({"node": leases.node(), "leases": holders});
    }
    if !state.outputs.is_empty() {
        // A failing output is reported but leaves sluice ready, as the lake does: its lag counts
        // against its own limit.
        let outputs: serde_json::Map<String, serde_json::Value> = state
            .outputs
            .iter()
            .map(|(name, status)| {
                let body = json!({
                    "healthy": status.is_healthy(),
                    "stopped": status.stopped_reason(),
                    "lastError": status.last_error(),
                    "committedOffset": status.committed_offset(),
                });
                (name.clone(), body)
            })
            .collect();
        body["outputs"] = outputs.into();
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}

/// `message` without the store's address (`store`) or any other database URL in it.
fn redact(message: &str, store: &str) -> String {
    const HIDDEN: &str = "<address hidden; ask from the machine itself>";
    let mut message = if store.is_empty() { message.to_owned() } else { message.replace(store, HIDDEN) };
    for scheme in ["postgres://", "postgresql://"] {
        let mut from = 0;
        while let Some(at) = message[from..].find(scheme).map(|i| from + i) {
            let rest = &message[at..];
            let end = rest.find(|c: char| c.is_whitespace() || "\"'(),;".contains(c)).unwrap_or(rest.len());
            message.replace_range(at..at + end, HIDDEN);
            from = at + HIDDEN.len();
        }
    }
    message
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Gauges derived from the journal are computed at scrape time rather than on every append.
    let stats = state.journal.stats();
    metrics::gauge!("sluice_journal_disk_bytes").set(stats.disk_bytes as f64);
    metrics::gauge!("sluice_journal_segments").set(stats.segments as f64);
    metrics::gauge!("sluice_journal_next_offset").set(stats.next_offset as f64);
    if let Some(connection) = &stats.connection {
        metrics::gauge!("sluice_journal_connected").set(if connection == "connected" { 1.0 } else { 0.0 });
    }
    metrics::gauge!("sluice_journal_dedup_ids").set(stats.dedup_ids as f64);
    metrics::gauge!("sluice_journal_dedup_window_seconds").set(stats.dedup_window_secs as f64);
    for (name, offset) in &stats.consumers {
        metrics::gauge!("sluice_consumer_lag", "consumer" => name.clone())
            .set(stats.next_offset.saturating_sub(*offset) as f64);
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_the_store_address_and_any_database_url() {
        let store = "postgres://sluice@db.internal:5433/prod";
        let error = "cannot connect to PostgreSQL at postgres://sluice@db.internal:5433/prod: connection refused; see postgresql://a:b@c/d";
        let shown = redact(error, store);
        assert!(!shown.contains("db.internal") && !shown.contains("sluice@") && !shown.contains("a:b@c"), "{shown}");
        assert!(shown.contains("connection refused"), "the reason stays: {shown}");
    }
}
