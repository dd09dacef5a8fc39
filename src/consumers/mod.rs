/*!
Consumers: the tasks that read the journal, each from its own committed offset.

A consumer reads entries in offset order, delivers them somewhere, and only then commits the
offset past them, so a crash at any point makes it re-read (never skip) what it had not finished.
Where the destination can hold the offset itself (the store), the offset is committed together
with the data, which makes delivery exactly-once; where it cannot (the lake), the data's names
carry the offsets instead.
*/

pub mod lake_writer;
pub mod store_loader;

use std::fmt::Display;
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
}

impl ConsumerStatus {
    /// A healthy status for the consumer called `name` in the journal, at offset 0.
    pub fn new(name: &'static str) -> Self {
        ConsumerStatus {
            name,
            committed_offset: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
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
