/*!
Query results streamed to an HTTP response: the query runs on a blocking thread (both store
backends' drivers block) and hands its encoded output over in chunks through a small channel, so
memory stays flat however many rows match and a slow client slows the query down.
*/

use std::io;

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::AppError;
use crate::query::QueryError;

/// Bytes handed to the HTTP body at a time.
const CHUNK_BYTES: usize = 64 * 1024;

/// A response of `content_type` whose body is what `write` writes, run on a blocking thread.
pub fn respond(
    content_type: &'static str,
    write: impl FnOnce(&mut ChannelWriter) -> Result<(), QueryError> + Send + 'static,
) -> Result<Response, AppError> {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter { tx, buf: Vec::with_capacity(CHUNK_BYTES) };
        if let Err(e) = write(&mut out) {
            // Headers are gone already; failing the body makes the client see a broken download,
            // never a silently short one.
            tracing::warn!(error = %e, "query stopped");
            let _ = out.tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .map_err(|e| AppError::Internal(e.into()))
}

/// An `io::Write` that forwards full chunks to the response body.
pub struct ChannelWriter {
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
