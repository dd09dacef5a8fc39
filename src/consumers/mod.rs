/*!
Consumers: the tasks that read the journal, each from its own committed offset.

A consumer reads entries in offset order, delivers them somewhere, and only then commits the
offset past them, so a crash at any point makes it re-read (never skip) what it had not finished.
Where the destination can hold the offset itself (the store), the offset is committed together
with the data, which makes delivery exactly-once; where it cannot (the lake), the data's names
carry the offsets instead.

A consumer that stops (an error it cannot retry past) is [`supervise`]d: logged at once, shown by
`/readyz` (not ready, with the reason) and `/metrics` (`sluice_consumer_stopped`,
`sluice_consumer_stops_total`), restarted with backoff unless the error
[needs an operator](NeedsOperator), and reported at shutdown, which then exits non-zero.
*/

pub mod lake_writer;
pub mod store_loader;

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

/// A consumer's live state, for `/readyz` and metrics; the same for every consumer.
#[derive(Debug)]
pub struct ConsumerStatus {
    name: &'static str,
    committed_offset: AtomicU64,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Why the consumer is not running, while it is not.
    stopped: Mutex<Option<String>>,
}

impl ConsumerStatus {
    /// A healthy status for the consumer called `name` in the journal, at offset 0.
    pub fn new(name: &'static str) -> Self {
        ConsumerStatus {
            name,
            committed_offset: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
            stopped: Mutex::new(None),
        }
    }

    /// One past the last journal offset durably delivered.
    pub fn committed_offset(&self) -> u64 {
        self.committed_offset.load(Ordering::Acquire)
    }

    /// False while the destination is refusing deliveries.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// The most recent delivery error, kept after recovery for diagnosis.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Why the consumer is not running, while it is not (it stopped on an error).
    pub fn stopped_reason(&self) -> Option<String> {
        self.stopped.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records that the consumer stopped on `error`.
    fn stopped(&self, error: &anyhow::Error) {
        let reason = format!("{error:#}");
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
        self.healthy.store(false, Ordering::Release);
        metrics::counter!("sluice_consumer_stops_total", "consumer" => self.name).increment(1);
        metrics::gauge!("sluice_consumer_stopped", "consumer" => self.name).set(1.0);
        metrics::gauge!("sluice_consumer_up", "consumer" => self.name).set(0.0);
    }

    /// Records that the consumer runs again (it stays unhealthy until it delivers).
    fn restarting(&self) {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = None;
        metrics::gauge!("sluice_consumer_stopped", "consumer" => self.name).set(0.0);
    }

    /// Records that everything below `offset` is delivered.
    pub(crate) fn committed(&self, offset: u64) {
        self.committed_offset.store(offset, Ordering::Release);
        metrics::gauge!("sluice_consumer_offset", "consumer" => self.name).set(offset as f64);
    }

    /// Records a failure; returns true when this starts a failing spell (so it is logged once).
    pub(crate) fn failing(&self, error: &dyn Display) -> bool {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
        metrics::counter!("sluice_consumer_errors_total", "consumer" => self.name).increment(1);
        metrics::gauge!("sluice_consumer_up", "consumer" => self.name).set(0.0);
        self.healthy.swap(false, Ordering::AcqRel)
    }

    /// Records success; returns true when this ends a failing spell.
    pub(crate) fn recovered(&self) -> bool {
        metrics::gauge!("sluice_consumer_up", "consumer" => self.name).set(1.0);
        !self.healthy.swap(true, Ordering::AcqRel)
    }
}

/// An error a restart cannot get past: the operator must act first (the message says how).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NeedsOperator(pub String);

/// Whether restarting a consumer that failed with `error` cannot help.
fn needs_operator(error: &anyhow::Error) -> bool {
    use crate::journal::JournalError;
    error.chain().any(|cause| {
        cause.is::<NeedsOperator>()
            || matches!(
                cause.downcast_ref::<JournalError>(),
                Some(JournalError::OffsetGone { .. } | JournalError::Corrupt { .. } | JournalError::Closed)
            )
    })
}

/// Runs a consumer (`start` starts it once) until `shutdown` and its own drain are done. When it
/// stops on an error (or a panic) before shutdown, the stop is logged and shown by `status` at once, and the
/// consumer is started again with backoff, unless the error [needs an operator](NeedsOperator):
/// then it stays stopped. Returns the error of a consumer that was stopped when shutdown came,
/// or that failed while draining.
pub async fn supervise<F, Fut>(
    status: &ConsumerStatus,
    shutdown: &CancellationToken,
    mut start: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut backoff = Backoff::default();
    loop {
        // A task of its own, so that a panic is a stop like any other, not a silent end.
        let run =
            tokio::spawn(start()).await.unwrap_or_else(|panic| Err(anyhow::anyhow!("the consumer panicked: {panic}")));
        let error = match run {
            Ok(()) => return Ok(()),
            Err(e) if shutdown.is_cancelled() => return Err(e),
            Err(e) => e,
        };
        status.stopped(&error);
        if needs_operator(&error) {
            tracing::error!(
                consumer = status.name,
                error = format!("{error:#}"),
                "consumer stopped; it stays stopped until sluice is restarted (ingest goes on into the journal)"
            );
            shutdown.cancelled().await;
            return Err(error);
        }
        tracing::error!(
            consumer = status.name,
            error = format!("{error:#}"),
            "consumer stopped; restarting it with backoff (ingest goes on into the journal)"
        );
        if !backoff.sleep(shutdown).await {
            return Err(error);
        }
        tracing::info!(consumer = status.name, "restarting the consumer");
        status.restarting();
    }
}

/// First retry delay after a failed delivery.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Exponential backoff with equal jitter: at least half the delay, so retries back off,
/// randomised so that several consumers (or sluice nodes) recovering at once do not retry in step.
pub(crate) struct Backoff {
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { delay: BACKOFF_START }
    }
}

impl Backoff {
    /// Waits out the next delay; false if `shutdown` came first.
    pub(crate) async fn sleep(&mut self, shutdown: &CancellationToken) -> bool {
        let sleep = self.delay / 2 + self.delay.mul_f64(rand::rng().random::<f64>() / 2.0);
        self.delay = (self.delay * 2).min(BACKOFF_CAP);
        tokio::select! {
            () = tokio::time::sleep(sleep) => true,
            () = shutdown.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[tokio::test]
    async fn a_consumer_that_stops_is_shown_stopped_and_restarted_until_it_runs() {
        let status = std::sync::Arc::new(ConsumerStatus::new("test"));
        let shutdown = CancellationToken::new();
        let starts = AtomicUsize::new(0);
        let result = supervise(&status, &shutdown, || {
            let n = starts.fetch_add(1, Ordering::SeqCst);
            let (status, shutdown) = (status.clone(), shutdown.clone());
            async move {
                match n {
                    0 => anyhow::bail!("failure {n}"),
                    1 => panic!("failure {n}"),
                    _ => {}
                }
                assert_eq!(status.stopped_reason(), None, "a restarted consumer is not shown stopped");
                shutdown.cancel();
                Ok(())
            }
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        let last = status.last_error().unwrap_or_default();
        assert!(last.contains("panicked") && last.contains("failure 1"), "a panic is a stop too: {last}");
    }

    #[tokio::test]
    async fn a_consumer_that_needs_an_operator_stays_stopped_until_shutdown() {
        let status = ConsumerStatus::new("test");
        let shutdown = CancellationToken::new();
        let starts = AtomicUsize::new(0);
        let supervised = supervise(&status, &shutdown, || {
            starts.fetch_add(1, Ordering::SeqCst);
            async { Err(NeedsOperator("run the fix".into()).into()) }
        });
        let check = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(status.stopped_reason().as_deref(), Some("run the fix"));
            assert!(!status.is_healthy());
            shutdown.cancel();
        };
        let (result, ()) = tokio::join!(supervised, check);
        assert!(result.is_err(), "the stop is reported at shutdown");
        assert_eq!(starts.load(Ordering::SeqCst), 1, "not restarted");
    }
}
