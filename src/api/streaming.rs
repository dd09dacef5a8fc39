/*!
Query results streamed to an HTTP response: the query runs on a blocking thread (both store
backends' drivers block) and hands its encoded output over in chunks through a small channel, so
memory stays flat however many rows match and a slow client slows the query down.

A client that stops reading must not hold the query forever: its connection comes from a small
pool, and on SQLite its open read transaction stops WAL checkpoints, so the WAL grows without
bound. When a chunk cannot be handed over for `write_timeout`, the query stops (ending its
transaction and returning its connection) and the response is aborted, not ended: the client
sees a broken download, never a silently short one.
*/

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::Stream;

use crate::http::AppError;
use crate::query::QueryError;

/// Bytes handed to the HTTP body at a time.
const CHUNK_BYTES: usize = 64 * 1024;

/// A response of `content_type` whose body is what `write` writes, run on a blocking thread;
/// `write` fails once the client has accepted nothing for `write_timeout`.
pub fn respond(
    content_type: &'static str,
    write_timeout: Duration,
    write: impl FnOnce(&mut ChannelWriter) -> Result<(), QueryError> + Send + 'static,
) -> Result<Response, AppError> {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let complete = Arc::new(AtomicBool::new(false));
    let body = ResponseBody { rx, complete: complete.clone(), ended: false };
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter { tx, buf: Vec::with_capacity(CHUNK_BYTES), runtime, write_timeout };
        match write(&mut out) {
            Ok(()) => complete.store(true, Ordering::Release),
            // Headers are gone already; the body ends in an error (see `ResponseBody`).
            Err(e) => tracing::warn!(error = %e, "query stopped"),
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(body))
        .map_err(|e| AppError::Internal(e.into()))
}

/// The response body: the chunks, then an error unless the query said it completed. The error
/// cannot travel through the channel, which is full when the client stalled.
struct ResponseBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    complete: Arc<AtomicBool>,
    ended: bool,
}

impl Stream for ResponseBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => {
                self.ended = true;
                // The sender is gone, so `complete` is final.
                if self.complete.load(Ordering::Acquire) {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(io::Error::other("the query stopped before the end; see sluice's log"))))
                }
            }
            other => other,
        }
    }
}

/// An `io::Write` that forwards full chunks to the response body.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    runtime: tokio::runtime::Handle,
    write_timeout: Duration,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES)));
        self.runtime.block_on(self.tx.send_timeout(Ok(chunk), self.write_timeout)).map_err(|e| match e {
            mpsc::error::SendTimeoutError::Timeout(_) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client accepted no data for {} ms (store.export_write_timeout_ms); dropped it",
                    self.write_timeout.as_millis()
                ),
            ),
            mpsc::error::SendTimeoutError::Closed(_) => {
                io::Error::new(io::ErrorKind::BrokenPipe, "the client went away")
            }
        })
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
