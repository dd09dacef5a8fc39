/*!
The HTTP server loop: accept, serve each connection with HTTP/1.1 and timeouts, drain on stop.

`axum::serve` sets no timer, so hyper enforces no header timeout and a client can hold a
connection (and its task) forever by sending nothing, or a header a byte a minute. Here hyper is
driven directly, as axum's own "serve-with-hyper" example does, with a Tokio timer and
`http.header_read_timeout_ms`. hyper starts that timer whenever it waits for a request head, so
it also closes keep-alive connections left idle between requests. At most `http.max_connections`
are open at once, and one whose client accepts no bytes of a response for
`http.write_timeout_ms` is dropped. Body reads have their own
deadline in [`crate::http::body::read_limited`], where a late body can be answered with 408.
*/

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tower_http::add_extension::AddExtension;

use crate::config::HttpConfig;

/// Serves `router` on `listener` until `stop` is cancelled, then stops accepting and waits for
/// the open connections to finish their requests.
pub async fn serve(listener: TcpListener, router: Router, http: HttpConfig, stop: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(http.header_read_timeout());
    // A permit per open connection: at the limit, new clients wait in the kernel's listen
    // backlog (they cost us nothing there) until a connection closes.
    let connections = Arc::new(Semaphore::new(http.max_connections));
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the connection semaphore is never closed"),
            () = stop.cancelled() => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // Handlers may ask who is calling (`ConnectInfo<SocketAddr>`), as with axum::serve.
        let service = TowerToHyperService::new(AddExtension::new(router.clone(), ConnectInfo(remote)));
        // A response the client accepts nothing of would keep its task and buffers for ever:
        // hyper has no write timeout, so the socket gets one.
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(http.write_timeout()));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(Box::pin(stream)), service));
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection.await {
                // Timeouts, resets and malformed requests: the client's business, not an alarm.
                tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Too many open files and the like are transient: wait a moment rather than spin. Errors about
/// one connection (reset before it was accepted) need no pause.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::net::SocketAddr;

    async fn remote(ConnectInfo(addr): ConnectInfo<SocketAddr>) -> String {
        addr.ip().to_string()
    }

    async fn start(http: HttpConfig) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let router = Router::new().route("/who", get(remote));
        let task = tokio::spawn(serve(listener, router, http, stop.clone()));
        (addr, stop, task)
    }

    #[tokio::test]
    async fn handlers_see_the_callers_address_and_stop_drains() {
        let (addr, stop, task) = start(HttpConfig::default()).await;
        let answer = reqwest::get(format!("http://{addr}/who")).await.unwrap().text().await.unwrap();
        assert_eq!(answer, "127.0.0.1");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("stopped").unwrap();
    }
}
