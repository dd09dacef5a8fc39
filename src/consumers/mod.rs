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
pub mod lease;
pub mod store_loader;

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use crate::journal::Journal;

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

    /// Records that the consumer runs on another node now (this one lost its lease): nothing of
    /// it is stopped or failing here, and its lag is the other node's to show.
    fn standby(&self) {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.healthy.store(true, Ordering::Release);
        metrics::gauge!("sluice_consumer_stopped", "consumer" => self.name).set(0.0);
        metrics::gauge!("sluice_consumer_up", "consumer" => self.name).set(0.0);
        metrics::gauge!("sluice_consumer_lag", "consumer" => self.name).set(0.0);
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
                Some(
                    JournalError::OffsetGone { .. }
                        | JournalError::Corrupt { .. }
                        | JournalError::Unreadable { .. }
                        | JournalError::Closed
                )
            )
    })
}

/// Runs a consumer (`start` starts it once) until `shutdown` and its own drain are done. When it
/// stops on an error (or a panic) before shutdown, the stop is logged and shown by `status` at once, and the
/// consumer is started again with backoff, unless the error [needs an operator](NeedsOperator):
/// then it stays stopped. Returns the error of a consumer that was stopped when shutdown came,
/// or that failed while draining.
pub async fn supervise<F, Fut>(status: &ConsumerStatus, shutdown: &CancellationToken, start: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    match supervise_until(status, shutdown, &CancellationToken::new(), None, start).await {
        Ending::Done(result) => result,
        // Neither can happen without a lease.
        Ending::LeaseLost | Ending::GaveUp(_) => Ok(()),
    }
}

/// How a supervised consumer's run on this node ended.
enum Ending {
    /// Shutdown came (the consumer's result), or it ended by itself.
    Done(anyhow::Result<()>),
    /// Its lease was lost: another node may run it now.
    LeaseLost,
    /// It kept failing here (the error) for as long as it may hold the lease doing so.
    GaveUp(anyhow::Error),
}

/// Runs a consumer as [`supervise`] does, on one node of a cluster at a time: only while this node
/// holds the lease `lease` (every node asks for it; the others wait to take over). A consumer
/// whose lease is lost is stopped where it is and this node waits for the lease again. Without
/// leases (one node on its own journal) this is [`supervise`].
pub async fn supervise_leased<F, Fut>(
    leases: Option<&lease::Leases>,
    lease: &str,
    journal: &dyn Journal,
    status: &ConsumerStatus,
    shutdown: &CancellationToken,
    mut start: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let Some(leases) = leases else { return supervise(status, shutdown, start).await };
    // A consumer failing on this node only (its data directory lost, say) would keep the lease,
    // and a healthy node would never get to run it: after failing this long it is given up.
    let give_up = leases.ttl() * 3;
    // Each time it is given up again, this node waits twice as long before asking for it.
    let mut cool_down = give_up;
    loop {
        // Shutdown while another node holds it: nothing of this node's to drain.
        // Meanwhile the offset of the node running it counts here as the consumer's lag, so
        // that every node pushes ingest back when it is too far behind, not only that one.
        let acquired = tokio::select! {
            held = leases.acquire(lease, shutdown) => held,
            never = follow_offset(leases, lease, journal, status.name) => match never {},
        };
        let Some(held) = acquired else { return Ok(()) };
        let lost = held.lost();
        let ending = tokio::select! {
            ending = supervise_until(status, shutdown, &lost, Some(give_up), &mut start) => ending,
            never = share_offset(leases, lease, journal.id(), status) => match never {},
        };
        held.release().await;
        match ending {
            Ending::Done(result) => return result,
            Ending::LeaseLost => {
                metrics::counter!("sluice_lease_lost_total", "lease" => lease.to_owned()).increment(1);
                // The node now running it moves its offset: this node's view of it would be a
                // lag that grows for ever, refusing ingest here and making this node unready.
                status.standby();
                journal.hold(status.name);
            }
            Ending::GaveUp(error) => {
                metrics::counter!("sluice_lease_given_up_total", "lease" => lease.to_owned()).increment(1);
                tracing::error!(
                    consumer = status.name,
                    lease,
                    error = format!("{error:#}"),
                    "the consumer kept failing on this node for {} s: its lease is given up so that another node may run it; this node asks for it again in {} s",
                    give_up.as_secs(),
                    cool_down.as_secs()
                );
                journal.hold(status.name);
                // Long enough for a waiting node to take it; the stop stays shown meanwhile.
                tokio::select! {
                    () = shutdown.cancelled() => return Err(error),
                    () = tokio::time::sleep(cool_down) => {}
                }
                cool_down = (cool_down * 2).min(MAX_COOL_DOWN);
                status.standby();
            }
        }
    }
}

/// The longest a node that gave a failing consumer's lease up waits before asking again.
const MAX_COOL_DOWN: Duration = Duration::from_secs(600);

/// How often a consumer's offset is shared with, and read by, the other nodes.
const SHARE_EVERY: Duration = Duration::from_secs(1);

/// The key under which the node running the consumer of `lease` shares its committed offset.
fn shared_offset_key(lease: &str) -> String {
    format!("committed.{lease}")
}

/// While this node runs the consumer of `lease`: shares its committed offset every second.
async fn share_offset(leases: &lease::Leases, lease: &str, journal: &str, status: &ConsumerStatus) -> Infallible {
    let (key, mut shared) = (shared_offset_key(lease), None);
    loop {
        tokio::time::sleep(SHARE_EVERY).await;
        let offset = status.committed_offset();
        if shared == Some(offset) {
            continue;
        }
        match leases.save_offset(&key, journal, offset).await {
            Ok(()) => shared = Some(offset),
            Err(e) => tracing::debug!(lease, error = %e, "could not share the consumer's offset"),
        }
    }
}

/// While another node runs the consumer of `lease`: takes the offset it shares as the
/// consumer's place in this node's view of the journal (its lag, for backpressure and `/readyz`).
async fn follow_offset(leases: &lease::Leases, lease: &str, journal: &dyn Journal, consumer: &str) -> Infallible {
    let key = shared_offset_key(lease);
    loop {
        match leases.offset(&key).await {
            // An offset in another journal (a stream created again) says nothing of this one.
            Ok(Some((of, offset))) if of == journal.id() => journal.commit(consumer, offset),
            Ok(_) => {}
            Err(e) => tracing::debug!(lease, error = %e, "could not read the consumer's shared offset"),
        }
        tokio::time::sleep(SHARE_EVERY).await;
    }
}

/// [`supervise`], until `abort` is cancelled: then the consumer is stopped where it is, without
/// draining (its lease is lost: another node takes over from the last committed offset), and
/// `None` is returned.
async fn supervise_until<F, Fut>(
    status: &ConsumerStatus,
    shutdown: &CancellationToken,
    abort: &CancellationToken,
    give_up: Option<Duration>,
    mut start: F,
) -> Ending
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut backoff = Backoff::default();
    // Since when the consumer has been failing here without a run as long as `give_up`.
    let mut failing_since: Option<Instant> = None;
    loop {
        let started = Instant::now();
        // A task of its own, so that a panic is a stop like any other, not a silent end.
        let mut task = tokio::spawn(start());
        let run = tokio::select! {
            joined = &mut task => joined.unwrap_or_else(|panic| Err(anyhow::anyhow!("the consumer panicked: {panic}"))),
            () = abort.cancelled() => {
                task.abort();
                // Waited for, so that nothing of it runs once another node may have taken over.
                let _ = task.await;
                return Ending::LeaseLost;
            }
        };
        let error = match run {
            Ok(()) => return Ending::Done(Ok(())),
            Err(e) if shutdown.is_cancelled() => return Ending::Done(Err(e)),
            Err(e) => e,
        };
        if give_up.is_some_and(|limit| started.elapsed() >= limit) {
            failing_since = None;
        }
        // A failure after a long healthy run starts a failing spell now, not when that run began.
        let since = *failing_since.get_or_insert_with(Instant::now);
        // When this node gives the consumer up (never, without a lease).
        let give_up_at = async {
            match give_up {
                Some(limit) => tokio::time::sleep_until((since + limit).into()).await,
                None => std::future::pending().await,
            }
        };
        status.stopped(&error);
        if needs_operator(&error) {
            tracing::error!(
                consumer = status.name,
                error = format!("{error:#}"),
                "consumer stopped; it stays stopped until sluice is restarted (ingest goes on into the journal)"
            );
            tokio::select! {
                () = shutdown.cancelled() => return Ending::Done(Err(error)),
                () = abort.cancelled() => return Ending::LeaseLost,
                () = give_up_at => return Ending::GaveUp(error),
            }
        }
        if give_up.is_some_and(|limit| since.elapsed() >= limit) {
            return Ending::GaveUp(error);
        }
        tracing::error!(
            consumer = status.name,
            error = format!("{error:#}"),
            "consumer stopped; restarting it with backoff (ingest goes on into the journal)"
        );
        if !backoff.sleep(shutdown).await {
            return Ending::Done(Err(error));
        }
        if abort.is_cancelled() {
            return Ending::LeaseLost;
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

    /// A lease bucket of its own on the local NATS server, as nodes `a` and `b` see it.
    async fn two_nodes(
        prefix: &str,
        ttl: Duration,
    ) -> (async_nats::jetstream::Context, String, lease::Leases, lease::Leases) {
        let bucket = format!("{prefix}_{}", std::process::id());
        let js = async_nats::jetstream::new(crate::journal::jetstream::test_servers::local_nats().await);
        let a = lease::Leases::open(&js, &bucket, 1, ttl, "a").await.unwrap();
        let b = lease::Leases::open(&js, &bucket, 1, ttl, "b").await.unwrap();
        (js, bucket, a, b)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_failing_on_the_node_holding_its_lease_is_given_up_to_another_node() {
        let ttl = Duration::from_secs(2);
        let (js, bucket, a, b) = two_nodes("T_GIVEUP", ttl).await;
        let dir = tempfile::tempdir().unwrap();
        let journal = crate::journal::file::FileJournal::open(dir.path(), Default::default()).unwrap();
        let (status, shutdown) = (std::sync::Arc::new(ConsumerStatus::new("lake")), CancellationToken::new());
        let failing = {
            let (status, shutdown) = (status.clone(), shutdown.clone());
            tokio::spawn(async move {
                supervise_leased(Some(&a), "lake", &journal, &status, &shutdown, || async {
                    anyhow::bail!("cannot save the lake checkpoint: No such file or directory")
                })
                .await
            })
        };
        // a takes the lease first, and fails with it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = std::time::Instant::now();
        let taken = tokio::time::timeout(Duration::from_secs(15), b.acquire("lake", &CancellationToken::new())).await;
        let waited = started.elapsed();
        let stopped = status.stopped_reason();
        shutdown.cancel();
        let _ = failing.await;
        for stream in [format!("KV_{bucket}"), format!("KV_{bucket}_OFFSETS")] {
            let _ = js.delete_stream(stream).await;
        }
        let held = taken.expect("b never got the lease a kept failing with").expect("b got the lease");
        held.release().await;
        assert!(waited >= ttl * 2, "b got the lease after {waited:?}: before a gave it up");
        assert!(stopped.as_ref().is_some_and(|s| s.contains("lake checkpoint")), "a shows why it gave up: {stopped:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_failure_after_a_long_healthy_run_restarts_the_consumer_and_keeps_the_lease() {
        let ttl = Duration::from_secs(1);
        let (js, bucket, a, b) = two_nodes("T_ONEFAIL", ttl).await;
        let dir = tempfile::tempdir().unwrap();
        let journal = crate::journal::file::FileJournal::open(dir.path(), Default::default()).unwrap();
        let (status, shutdown) = (std::sync::Arc::new(ConsumerStatus::new("lake")), CancellationToken::new());
        let starts = std::sync::Arc::new(AtomicUsize::new(0));
        let running = {
            let (status, shutdown, starts) = (status.clone(), shutdown.clone(), starts.clone());
            tokio::spawn(async move {
                supervise_leased(Some(&a), "lake", &journal, &status, &shutdown, || {
                    let first = starts.fetch_add(1, Ordering::SeqCst) == 0;
                    let shutdown = shutdown.clone();
                    async move {
                        // Healthy for longer than the give-up time (3 TTLs), then one failure.
                        if first {
                            tokio::time::sleep(Duration::from_secs(4)).await;
                            anyhow::bail!("one failure");
                        }
                        shutdown.cancelled().await;
                        Ok(())
                    }
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(4500)).await;
        let taken = tokio::time::timeout(Duration::from_secs(2), b.acquire("lake", &CancellationToken::new())).await;
        let restarted = starts.load(Ordering::SeqCst);
        shutdown.cancel();
        let _ = running.await;
        for stream in [format!("KV_{bucket}"), format!("KV_{bucket}_OFFSETS")] {
            let _ = js.delete_stream(stream).await;
        }
        assert!(taken.is_err(), "a gave the lease up at its first failure after a healthy run");
        assert_eq!(restarted, 2, "the consumer was restarted");
    }

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
