/*!
What every HTTP handler stands on, sources and queries alike: the shared [`AppState`], the one
error type [`AppError`] and its JSON answers, and request [`body`] reading within limits. A leaf
below both [`crate::sources`] and [`crate::api`], so neither imports the other for them.
*/

pub mod auth;
pub mod body;
pub mod error;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use crate::access::Access;
use crate::config::Config;
use crate::consumers::ConsumerStatus;
use crate::consumers::lake_writer::LakeStatus;
use crate::consumers::store_loader::LoaderStatus;
use crate::dead_letter::DeadLetters;
use crate::journal::{Journal, JournalStats};
use crate::privacy::Privacy;
use crate::privacy::erase::Eraser;
use crate::store::{PooledStore, QueryPool, StoreError};
use body::ByteBudget;
pub use error::AppError;

/// Experiment read-outs one server computes at the same time (the machine this was sized on has
/// two cores); more answer 503 with `Retry-After`.
pub const READOUTS_AT_ONCE: usize = 2;

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
    pub query_pool: Arc<QueryPool>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Bounds concurrent ingest requests (and so the memory they hold).
    pub ingest_permits: Arc<Semaphore>,
    /// Experiment read-outs computed at once (each holds its units in memory and keeps a core
    /// busy for seconds): [`READOUTS_AT_ONCE`].
    pub readouts: Arc<Semaphore>,
    /// Bounds the request body bytes all ingest requests hold together.
    pub body_bytes: Arc<ByteBudget>,
    /// The lake writer's health, when the lake is on.
    pub lake: Option<Arc<LakeStatus>>,
    /// Who may do what.
    pub access: Arc<Access>,
    /// When each client was last logged for a refused request.
    pub refusal_log: Arc<auth::RefusalLog>,
    /// Suppressions ingest drops records by; the audit log.
    pub privacy: Arc<Privacy>,
    /// Runs erasures, when the process has the store and lake to erase from (`sluice serve`).
    pub eraser: Option<Arc<Eraser>>,
    /// Which node runs which consumer, when nodes share a JetStream journal.
    pub leases: Option<crate::consumers::lease::Leases>,
    /// Each stream output's name and health, for `/readyz`.
    pub outputs: Vec<(String, Arc<ConsumerStatus>)>,
}

impl AppState {
    /// Assembles the state; the permits come from `config.limits.max_concurrent_requests`, the
    /// byte budget from `config.limits.max_in_flight_bytes`. The access rules are the default
    /// (no token: reads only from this machine) until [`AppState::with_access`], and there is
    /// no eraser until [`AppState::with_eraser`].
    pub fn new(
        config: Arc<Config>,
        journal: Arc<dyn Journal>,
        dead_letters: Arc<DeadLetters>,
        loader: Arc<LoaderStatus>,
        query_pool: Arc<QueryPool>,
        metrics: PrometheusHandle,
        privacy: Arc<Privacy>,
    ) -> Self {
        let ingest_permits = Arc::new(Semaphore::new(config.limits.max_concurrent_requests));
        let body_bytes = Arc::new(ByteBudget::new(config.limits.max_in_flight_bytes));
        AppState {
            config,
            journal,
            dead_letters,
            loader,
            query_pool,
            metrics,
            ingest_permits,
            readouts: Arc::new(Semaphore::new(READOUTS_AT_ONCE)),
            body_bytes,
            lake: None,
            access: Arc::new(Access::default()),
            refusal_log: Arc::default(),
            privacy,
            eraser: None,
            leases: None,
            outputs: Vec::new(),
        }
    }

    /// A store connection for a query; 503 with `Retry-After` when the pool stays busy.
    pub async fn query_store(&self) -> Result<PooledStore, AppError> {
        self.query_pool.get().await.map_err(|e| match e {
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

    /// Sets the access rules (the configuration's `[auth]`, resolved).
    pub fn with_access(mut self, access: Arc<Access>) -> Self {
        self.access = access;
        self
    }

    /// Adds the eraser `DELETE /api/user/{id}` runs.
    pub fn with_eraser(mut self, eraser: Arc<Eraser>) -> Self {
        self.eraser = Some(eraser);
        self
    }

    /// Adds the consumer leases of a cluster, shown by `/readyz`.
    pub fn with_leases(mut self, leases: crate::consumers::lease::Leases) -> Self {
        self.leases = Some(leases);
        self
    }

    /// Adds the stream outputs' statuses (by name), shown by `/readyz`.
    pub fn with_outputs(mut self, outputs: Vec<(String, Arc<ConsumerStatus>)>) -> Self {
        self.outputs = outputs;
        self
    }

    /// Adds the lake writer's status, shown by `/readyz`.
    pub fn with_lake(mut self, lake: Arc<LakeStatus>) -> Self {
        self.lake = Some(lake);
        self
    }
}

/// Why ingest must push back right now, if it must: the one rule that admission
/// ([`crate::sources`]) refuses by and `/readyz` reports.
pub fn over_limits(stats: &JournalStats, config: &Config) -> Option<String> {
    if stats.poisoned {
        return Some("the journal cannot write (see sluice's log); nothing was accepted".into());
    }
    if let Some(reason) = &stats.unavailable {
        return Some(format!("{reason}; nothing was accepted"));
    }
    if stats.connection.as_deref() == Some("disconnected") {
        return Some("the journal's NATS servers cannot be reached (reconnecting); nothing was accepted".into());
    }
    let max_bytes = config.journal.max_bytes;
    if stats.disk_bytes > max_bytes {
        return Some(format!(
            "the journal is full ({} of {max_bytes} bytes, journal.max_bytes) while consumers catch up; retry later",
            stats.disk_bytes
        ));
    }
    stats.consumers.iter().find_map(|(name, offset)| {
        let lag = stats.next_offset.saturating_sub(*offset);
        let (max_lag, setting) = config.lag_limit(name)?;
        (lag > max_lag)
            .then(|| format!("consumer `{name}` is {lag} records behind ({setting} = {max_lag}); retry later"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::JournalStats;

    #[test]
    fn ingest_pushes_back_when_the_journal_fails_fills_up_or_a_consumer_lags() {
        let mut config = Config::default();
        config.journal.max_bytes = 1000;
        config.backpressure.max_consumer_lag = 50;
        let fine = JournalStats {
            next_offset: 100,
            disk_bytes: 1000,
            consumers: vec![("store".into(), 50), ("lake".into(), 60)],
            ..JournalStats::default()
        };
        assert_eq!(over_limits(&fine, &config), None);
        let poisoned = JournalStats { poisoned: true, ..fine.clone() };
        assert!(over_limits(&poisoned, &config).unwrap().contains("cannot write"));
        let gone =
            JournalStats { unavailable: Some("the JetStream stream S does not exist any more".into()), ..fine.clone() };
        assert!(over_limits(&gone, &config).unwrap().starts_with("the JetStream stream S does not exist any more"));
        let cut_off = JournalStats { connection: Some("disconnected".into()), ..fine.clone() };
        assert!(over_limits(&cut_off, &config).unwrap().contains("cannot be reached"));
        let full = JournalStats { disk_bytes: 1001, ..fine.clone() };
        assert!(over_limits(&full, &config).unwrap().contains("journal.max_bytes"));
        let lagging = JournalStats { consumers: vec![("store".into(), 49)], ..fine };
        assert_eq!(
            over_limits(&lagging, &config).unwrap(),
            "consumer `store` is 51 records behind (backpressure.max_consumer_lag = 50); retry later"
        );
    }

    #[test]
    fn an_output_lags_by_its_own_limit_or_without_one() {
        use crate::outputs::{LagLimit, OutputConfig, OutputType};
        let mut config = Config::default();
        config.backpressure.max_consumer_lag = 50;
        let output = |name: &str, limit| OutputConfig {
            name: name.into(),
            kind: Some(OutputType::Nats),
            url: Some("nats://127.0.0.1:4222".into()),
            max_lag_records: Some(limit),
            ..OutputConfig::default()
        };
        config.outputs = vec![output("free", LagLimit::Unbounded), output("tight", LagLimit::Records(10))];
        let stats = |consumer: &str, offset| JournalStats {
            next_offset: 1000,
            consumers: vec![(consumer.into(), offset)],
            ..JournalStats::default()
        };
        assert_eq!(over_limits(&stats("output:free", 0), &config), None, "an unbounded output never pushes back");
        assert_eq!(
            over_limits(&stats("output:tight", 989), &config).unwrap(),
            "consumer `output:tight` is 11 records behind (outputs[1].max_lag_records = 10); retry later"
        );
        assert_eq!(over_limits(&stats("output:tight", 990), &config), None);
    }
}
