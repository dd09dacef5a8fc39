/*!
`GET /api/impressions`: filtered impressions from the store, streamed as CSV, NDJSON or JSON.

The query runs on a blocking thread, on a connection from the store's reader pool, and hands the encoded output over in chunks through a small
channel, so memory stays flat however many rows match and a slow client slows the query down.
*/

use std::io;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::Response;
use axum::{Router, routing::get};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::AppState;
use super::error::AppError;
use crate::query::{ImpressionQuery, write_impressions};

/// Bytes handed to the HTTP body at a time.
const CHUNK_BYTES: usize = 64 * 1024;

/// Routes of the impressions query.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/impressions", get(export))
}

async fn export(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, AppError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| AppError::bad_request(format!("the query string is not valid: {e}")))?;
    let (query, format) =
        ImpressionQuery::from_pairs(&pairs).map_err(|e| AppError::bad_field(e.param.clone(), e.to_string()))?;
    let mut store = state.readers.get().await.map_err(|e| AppError::Internal(e.into()))?;

    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter { tx, buf: Vec::with_capacity(CHUNK_BYTES) };
        let result = write_impressions(&mut store, &query, &format, &mut out, &mut |_| {});
        if let Err(e) = result {
            // Headers are gone already; failing the body makes the client see a broken download,
            // never a silently short one.
            tracing::warn!(error = %e, "impressions query stopped");
            let _ = out.tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, format.content_type())
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .map_err(|e| AppError::Internal(e.into()))
}

/// An `io::Write` that forwards full chunks to the response body.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
