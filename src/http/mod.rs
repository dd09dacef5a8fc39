/*!
What every HTTP handler stands on, sources and queries alike: the shared [`AppState`], the one
error type [`AppError`] and its JSON answers, and request [`body`] reading within limits. A leaf
below both [`crate::sources`] and [`crate::api`], so neither imports the other for them.
*/

pub mod body;
pub mod error;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::consumers::lake_writer::LakeStatus;
use crate::consumers::store_loader::LoaderStatus;
use crate::dead_letter::DeadLetters;
use crate::journal::Journal;
use crate::store::{Reader, Readers, StoreError};
use body::ByteBudget;
pub use error::AppError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Where sources append.
    pub journal: Arc<dyn Journal>,
    /// Where sources put what they reject.
    pub dead_letters: Arc<DeadLetters>,
    /// The store loader's health, for `/readyz`.
    pub loader: Arc<LoaderStatus>,
    /// Store connections for queries.
    pub readers: Arc<Readers>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Bounds concurrent ingest requests (and so the memory they hold).
    pub ingest_permits: Arc<Semaphore>,
    /// Bounds the request body bytes all ingest requests hold together.
    pub body_bytes: Arc<ByteBudget>,
    /// The lake writer's health, when the lake is on.
    pub lake: Option<Arc<LakeStatus>>,
}

impl AppState {
    /// Assembles the state; the permits come from `config.limits.max_concurrent_requests`, the
    /// byte budget from `config.limits.max_in_flight_bytes`.
    pub fn new(
        config: Arc<Config>,
        journal: Arc<dyn Journal>,
        dead_letters: Arc<DeadLetters>,
        loader: Arc<LoaderStatus>,
        readers: Arc<Readers>,
        metrics: PrometheusHandle,
    ) -> Self {
        let ingest_permits = Arc::new(Semaphore::new(config.limits.max_concurrent_requests));
        let body_bytes = Arc::new(ByteBudget::new(config.limits.max_in_flight_bytes));
        AppState { config, journal, dead_letters, loader, readers, metrics, ingest_permits, body_bytes, lake: None }
    }

    /// A store connection for a query; 503 with `Retry-After` when the pool stays busy.
    pub async fn reader(&self) -> Result<Reader, AppError> {
        self.readers.get().await.map_err(|e| match e {
            StoreError::PoolBusy { .. } => AppError::Unavailable {
                message: e.to_string(),
                retry_after_secs: self.config.backpressure.retry_after_secs,
            },
            e if e.is_unavailable() => self.store_unreachable(&e),
            e => AppError::Internal(e.into()),
        })
    }

    /// The answer to a query whose store cannot be reached (down, restarting): 503, so that
    /// clients retry, with the details (the store's address among them) only in the log.
    pub fn store_unreachable(&self, e: &StoreError) -> AppError {
        tracing::warn!(error = %e, "a query could not reach the store");
        AppError::Unavailable {
            message: "the store cannot be reached right now; queries answer again once it is back (see /readyz)".into(),
            retry_after_secs: self.config.backpressure.retry_after_secs,
        }
    }

    /// Adds the lake writer's status, shown by `/readyz`.
    pub fn with_lake(mut self, lake: Arc<LakeStatus>) -> Self {
        self.lake = Some(lake);
        self
    }
}
