/*!
Configuration: defaults, then a TOML file, then `SLUICE_*` environment variables, then flags.

Everything is read, validated and resolved once at start-up: the layers merge into one [`Config`]
(the settings as written), which [`Config::resolve`] turns into [`Settings`], where every string
that names something (the store URL, the lake layout) is parsed and each component's part is
ready to hand over. Nothing reads the environment or the file, or parses a setting, after that. Nested keys use a double underscore in the environment:
`[split] token = "…"` is `SLUICE_SPLIT__TOKEN`, `[journal] max_bytes` is `SLUICE_JOURNAL__MAX_BYTES`.
The store URL is the exception users expect from `--store`: `SLUICE_STORE` (read with the flag)
as well as `SLUICE_STORE__URL`.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::access::{Access, AuthConfig};
use crate::attribution::AttributionSettings;
use crate::consumers::store_loader::LoaderConfig;
use crate::experiments::ExperimentSettings;
use crate::journal::JournalConfig;
use crate::lake::{LakeConfig, LakeSettings};
use crate::outputs::{LagLimit, OutputConfig, OutputSettings};
use crate::record::ip::IpPolicy;
use crate::record::{DedupMode, FieldLimits};
use crate::retention::Policy;
use crate::store::{FilterIndexes, StoreTarget};

/// The most permits a concurrency limit may have (connections, requests, pooled connections).
const MAX_PERMITS: usize = 1_000_000;

/// The longest `retention.interval_secs`: a week. Rows outstay their horizon by up to one
/// interval, and a far larger one would overflow the timer.
const MAX_RETENTION_INTERVAL_SECS: u64 = 7 * 24 * 3600;

/// The whole validated configuration of a sluice process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Directory holding the journal, the store and the dead letters.
    pub data_dir: PathBuf,
    /// Longest a graceful shutdown (finishing requests, loading what is journaled) may take
    /// before sluice exits anyway, in seconds; a second SIGINT/SIGTERM exits at once.
    pub shutdown_deadline_secs: u64,
    /// Logging.
    pub log: LogConfig,
    /// Limits on what one request may carry.
    pub limits: IngestLimits,
    /// How long the HTTP server waits for slow clients.
    pub http: HttpConfig,
    /// The Split impressions webhook source.
    pub split: SplitSourceConfig,
    /// The Segment sources: the webhook destination and the Tracking API.
    pub segment: SegmentSourceConfig,
    /// The journal: embedded, or on NATS JetStream when `url` is set.
    pub journal: JournalConfig,
    /// The store and its loader.
    pub store: StoreConfig,
    /// When ingest pushes back instead of accepting more.
    pub backpressure: BackpressureConfig,
    /// Where rejected records are kept.
    pub dead_letter: DeadLetterConfig,
    /// The lake: every record archived as objects.
    pub lake: LakeConfig,
    /// How visits are classified and grouped into sessions.
    pub attribution: AttributionSettings,
    /// What one experiment read-out may cost.
    pub experiments: ExperimentSettings,
    /// Who may read, administer and ingest: tokens and their roles.
    pub auth: AuthConfig,
    /// How long store rows are kept.
    pub retention: RetentionConfig,
    /// What personal data is kept at ingest.
    pub privacy: PrivacyConfig,
    /// How nodes sharing one JetStream journal split the consumers between them.
    pub cluster: ClusterConfig,
    /// Stream outputs (`[[outputs]]`): brokers every record is forwarded to.
    pub outputs: Vec<OutputConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            data_dir: PathBuf::from("sluice-data"),
            shutdown_deadline_secs: 30,
            log: LogConfig::default(),
            limits: IngestLimits::default(),
            http: HttpConfig::default(),
            split: SplitSourceConfig::default(),
            segment: SegmentSourceConfig::default(),
            journal: JournalConfig::default(),
            store: StoreConfig::default(),
            backpressure: BackpressureConfig::default(),
            dead_letter: DeadLetterConfig::default(),
            lake: LakeConfig::default(),
            attribution: AttributionSettings::default(),
            experiments: ExperimentSettings::default(),
            auth: AuthConfig::default(),
            retention: RetentionConfig::default(),
            privacy: PrivacyConfig::default(),
            cluster: ClusterConfig::default(),
            outputs: Vec::new(),
        }
    }
}

/// Cluster settings (`[cluster]`): used only with a JetStream journal, where every node runs
/// each consumer only while it holds that consumer's lease (see [`crate::consumers::lease`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name in the lease bucket and in logs; unset: the host name and the process id.
    pub node: Option<String>,
    /// The JetStream key-value bucket the leases are kept in (one per cluster).
    pub lease_bucket: String,
    /// How long a lease lives without renewal: a dead node's consumers move to another node
    /// after at most this, plus a second. The same on every node.
    pub lease_ttl_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: None,
            lease_bucket: "SLUICE_LEASES".to_owned(),
            // With a poll of a second, a dead node's consumers move within 11 s (the issue asks 15).
            lease_ttl_secs: 10,
        }
    }
}

impl ClusterConfig {
    /// This node's name: as configured, else `<host name>-<process id>`, which tells two
    /// processes on one machine apart.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "sluice".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// Log output settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log shippers.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `sluice=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Limits on one ingest request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestLimits {
    /// Largest request body as sent (compressed), in bytes.
    pub max_body_bytes: usize,
    /// Largest body after gzip decompression, in bytes; enforced while inflating.
    pub max_decompressed_bytes: usize,
    /// Most records in one batch.
    pub max_batch_records: usize,
    /// Longest identifier-like field (key, split, treatment, …), in bytes.
    pub max_field_bytes: usize,
    /// Longest `properties` field, in bytes.
    pub max_properties_bytes: usize,
    /// Ingest requests processed at once; more get 503 with `Retry-After` (bounds memory).
    pub max_concurrent_requests: usize,
    /// Request body bytes (as sent plus decompressed) that all ingest requests together may hold;
    /// a request that would pass it gets 503 with `Retry-After`.
    pub max_in_flight_bytes: u64,
}

impl Default for IngestLimits {
    fn default() -> Self {
        let fields = FieldLimits::default();
        IngestLimits {
            max_body_bytes: 10 * 1024 * 1024,
            max_decompressed_bytes: 100 * 1024 * 1024,
            max_batch_records: 100_000,
            max_field_bytes: fields.max_field_bytes,
            max_properties_bytes: fields.max_properties_bytes,
            max_concurrent_requests: 64,
            max_in_flight_bytes: 256 * 1024 * 1024,
        }
    }
}

impl IngestLimits {
    /// The per-field part, as the record parser wants it.
    pub fn fields(&self) -> FieldLimits {
        FieldLimits { max_field_bytes: self.max_field_bytes, max_properties_bytes: self.max_properties_bytes }
    }
}

/// Timeouts for slow or idle HTTP clients, so that they cannot hold connections and memory.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Longest wait for a request's headers, in milliseconds; it also closes a keep-alive
    /// connection idle this long between requests.
    pub header_read_timeout_ms: u64,
    /// Longest time to receive a whole ingest request body, in milliseconds; over it → 408.
    pub body_read_timeout_ms: u64,
    /// Longest time a response may wait for the client to accept any of its bytes, in
    /// milliseconds; then the connection is dropped (a client that stopped reading).
    pub write_timeout_ms: u64,
    /// Most client connections open at once; further clients wait in the listen backlog until
    /// one closes (each connection costs a task, buffers and a file descriptor).
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 60_000,
            write_timeout_ms: 30_000,
            max_connections: 4096,
        }
    }
}

impl HttpConfig {
    /// `header_read_timeout_ms` as a duration.
    pub fn header_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.header_read_timeout_ms)
    }

    /// `write_timeout_ms` as a duration.
    pub fn write_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.write_timeout_ms)
    }

    /// `body_read_timeout_ms` as a duration.
    pub fn body_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.body_read_timeout_ms)
    }
}

/// Settings of the Split impressions webhook.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SplitSourceConfig {
    /// Shared secret: when set, requests must carry it as `?token=…`, `Authorization: Bearer …`
    /// or `X-Sluice-Token: …` (Split cannot sign its webhook calls).
    pub token: Option<String>,
}

/// Settings of the Segment sources.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentSourceConfig {
    /// The webhook destination's shared secret: when set, every request must carry
    /// `X-Signature`, the hex HMAC-SHA1 of its body under this secret.
    pub webhook_secret: Option<String>,
    /// Tracking API write keys, each naming the source its events are stored under
    /// (`[segment.write_keys]` then `"KEY" = "web"`). None configured: every request is accepted.
    pub write_keys: BTreeMap<String, String>,
    /// How far past its arrival an event's timestamp may be before it is clamped to the arrival
    /// time (and flagged), in milliseconds; at most [`MAX_FUTURE_TOLERANCE_MS`].
    pub future_tolerance_ms: i64,
    /// Most bytes one Tracking API request may add to the journal once every event has the
    /// batch's `context` and `integrations` copied in; more is refused with 413.
    pub max_expanded_bytes: usize,
}

/// The largest `segment.future_tolerance_ms`: a year. A timestamp further ahead is a broken clock.
pub const MAX_FUTURE_TOLERANCE_MS: i64 = 365 * 24 * 3600 * 1000;

impl Default for SegmentSourceConfig {
    fn default() -> Self {
        SegmentSourceConfig {
            webhook_secret: None,
            write_keys: BTreeMap::new(),
            future_tolerance_ms: 10 * 60 * 1000,
            max_expanded_bytes: 8 << 20,
        }
    }
}

/// The store: which database, how to reach it, and how the loader fills it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` or `sqlite://PATH`; unset
    /// means the embedded SQLite file `<data_dir>/store.sqlite`. Without a password in the URL,
    /// `PGPASSWORD` is used.
    pub url: Option<String>,
    /// Most database connections that queries and exports hold at once (the loader has its own).
    pub pool_size: usize,
    /// Longest a query waits for one of those connections before answering 503 with
    /// `Retry-After`, in milliseconds.
    pub pool_wait_ms: u64,
    /// Longest an attribution answer may spend in the database before it is cancelled (SQLite:
    /// the whole answer; PostgreSQL: each statement, as `statement_timeout`), in milliseconds
    /// (0: no limit). Exports are not bounded by it: they run as long as their client reads.
    pub query_timeout_ms: u64,
    /// An export whose client accepts no data for this long is dropped, ending its read
    /// transaction and freeing its connection, in milliseconds.
    pub export_write_timeout_ms: u64,
    /// PostgreSQL only: longest a loader statement may run before it fails and is retried, in
    /// milliseconds (0: no limit).
    pub statement_timeout_ms: u64,
    /// Most journal entries loaded in one transaction; larger batches load faster, smaller ones
    /// show up in queries sooner.
    pub batch_rows: usize,
    /// Which impressions count as the same and are stored once.
    pub dedup: DedupMode,
    /// How long to wait for new entries before loading a partial batch, in milliseconds.
    pub idle_ms: u64,
    /// Optional impression indexes for `?key=` / `?split=` lookups (`["key", "split"]`): faster
    /// lookups, slower loading (measured in BENCHMARKS.md); created by the loader at start.
    pub filter_indexes: Vec<FilterIndex>,
}

/// An optional index on one impression filter.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FilterIndex {
    /// `impressions (key, time)`: user-key lookups.
    Key,
    /// `impressions (split, time)`: one flag's exposures.
    Split,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            pool_size: 8,
            pool_wait_ms: 5_000,
            query_timeout_ms: 30_000,
            export_write_timeout_ms: 30_000,
            statement_timeout_ms: 60_000,
            batch_rows: 10_000,
            dedup: DedupMode::Exact,
            idle_ms: 200,
            filter_indexes: Vec::new(),
        }
    }
}

impl StoreConfig {
    /// `pool_wait_ms` as a duration.
    pub fn pool_wait(&self) -> Duration {
        Duration::from_millis(self.pool_wait_ms)
    }

    /// `query_timeout_ms` as a duration; `None` for no limit.
    pub fn query_timeout(&self) -> Option<Duration> {
        (self.query_timeout_ms > 0).then(|| Duration::from_millis(self.query_timeout_ms))
    }

    /// `export_write_timeout_ms` as a duration.
    pub fn export_write_timeout(&self) -> Duration {
        Duration::from_millis(self.export_write_timeout_ms)
    }

    /// The loader's part.
    fn loader(&self) -> LoaderConfig {
        let wants = |index| self.filter_indexes.contains(&index);
        LoaderConfig {
            batch_rows: self.batch_rows,
            dedup: self.dedup,
            idle: Duration::from_millis(self.idle_ms),
            filter_indexes: FilterIndexes { key: wants(FilterIndex::Key), split: wants(FilterIndex::Split) },
        }
    }
}

/// When ingest answers 503 with `Retry-After` instead of accepting.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BackpressureConfig {
    /// Most records any consumer may lag behind the journal before ingest pushes back.
    pub max_consumer_lag: u64,
    /// Seconds suggested to clients in `Retry-After`.
    pub retry_after_secs: u64,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        BackpressureConfig { max_consumer_lag: 20_000_000, retry_after_secs: 5 }
    }
}

/// The bounded area where rejected records are kept with their reasons.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// Total bytes kept; the oldest files go first (counted in `sluice_dead_letter_evicted_bytes_total`).
    pub max_bytes: u64,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig { max_bytes: 256 * 1024 * 1024 }
    }
}

/// How long the store keeps rows, by their own time (see [`crate::retention`]); the lake is left
/// to the object store's lifecycle rules.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days Segment events are kept, by their `timestamp`; unset: for ever.
    pub events_days: Option<u32>,
    /// Days impressions are kept, by their `time`; unset: for ever.
    pub impressions_days: Option<u32>,
    /// Seconds between two retention passes (the first runs at start).
    pub interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { events_days: None, impressions_days: None, interval_secs: 3600 }
    }
}

impl RetentionConfig {
    /// The retention job's policy.
    fn policy(&self) -> Policy {
        let days = |d: Option<u32>| d.map(|d| Duration::from_secs(u64::from(d) * 86_400));
        Policy {
            impressions: days(self.impressions_days),
            events: days(self.events_days),
            interval: Duration::from_secs(self.interval_secs),
        }
    }
}

/// What personal data sluice keeps, decided at ingest, before anything is journaled.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// A Segment event's `context.ip` (the batch's included): `keep`, `truncate` (IPv4 /24,
    /// IPv6 /48; a value that is not an address is removed) or `drop`.
    pub ip: IpPolicy,
}

/// Values given on the command line; `None` leaves the lower layers in charge.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--store` / `SLUICE_STORE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreOverrides>,
    /// `--allow-open-reads`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthOverrides>,
    /// `--journal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalOverrides>,
}

/// The `[journal]` settings given on the command line.
#[derive(Debug, Serialize)]
pub struct JournalOverrides {
    /// `--journal`: the NATS servers of a JetStream journal.
    pub url: crate::nats::NatsUrls,
}

/// The `[auth]` settings given on the command line.
#[derive(Debug, Serialize)]
pub struct AuthOverrides {
    /// `--allow-open-reads`.
    pub allow_open_reads: bool,
}

/// The `[store]` settings given on the command line.
#[derive(Debug, Serialize)]
pub struct StoreOverrides {
    /// `--store`.
    pub url: String,
}

/// The configuration resolved for the components that use it: the settings as written, and
/// what they name parsed once (the store's URL, the lake's layout) into each component's part.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The validated settings as written; request handlers read their sections from it.
    pub config: Arc<Config>,
    /// The database `store.url` names, or the SQLite file in the data directory.
    pub store: StoreTarget,
    /// The store loader's part of `[store]`.
    pub loader: LoaderConfig,
    /// The lake, with its layout parsed and its local paths.
    pub lake: LakeSettings,
    /// Who may do what: `[auth]` with its token files read.
    pub access: Arc<Access>,
    /// What the retention job deletes.
    pub retention: Policy,
    /// The stream outputs, checked.
    pub outputs: Vec<OutputSettings>,
}

impl Settings {
    /// Builds the settings from defaults < `file` < `SLUICE_*` environment < `overrides`, with a
    /// warning for each `SLUICE_*` variable that names no setting. Those are ignored rather than
    /// refused: the environment is shared with other tools (a wrapper's `SLUICE_EXE`, say), while
    /// an unknown key in the file is a typo and an error.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<(Settings, Vec<String>)> {
        let known = Arc::new(known_keys());
        let mut warnings: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| {
                let name = name.into_string().ok()?;
                let key = env_key(name.strip_prefix(ENV_PREFIX)?);
                let ignored = !ENV_NOT_SETTINGS.contains(&key.as_str()) && !is_known(&known, &key);
                ignored.then(|| unknown_variable(&name, &key, &known))
            })
            .collect();
        let settings = Config::merge(file, overrides, known)?.resolve()?;
        warnings.extend(settings.config.auth.tokens.iter().filter_map(|t| loose_token_file(t.token_file.as_deref()?)));
        Ok((settings, warnings))
    }
}

impl Config {
    /// The layers merged, not yet checked.
    fn merge(file: Option<&Path>, overrides: &Overrides, known: Arc<BTreeSet<String>>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            anyhow::ensure!(
                path.is_file(),
                "config file {} does not exist; check --config / SLUICE_CONFIG",
                path.display()
            );
            figment = figment.merge(Toml::file_exact(path));
        }
        // `SLUICE_STORE` is the `--store` flag's variable (clap reads it): as a figment key it
        // would name the whole `[store]` table.
        let env = Env::prefixed(ENV_PREFIX)
            .split("__")
            .ignore(ENV_NOT_SETTINGS)
            .filter(move |key| is_known(&known, &env_key(key.as_str())));
        figment
            .merge(env)
            .merge(Serialized::globals(overrides))
            .extract()
            .context("invalid configuration (see `sluice serve --help` and the README's configuration section)")
    }

    /// Checks every value and parses what the settings name, once: the store URL (reading
    /// `PGPASSWORD`, so call it at start-up) and the lake's layout.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        self.validate()?;
        let store = StoreTarget::parse(
            self.store.url.as_deref(),
            self.data_dir.join("store.sqlite"),
            self.store.statement_timeout_ms,
        )?;
        let lake = self.lake.clone().resolve(self.data_dir.join("lake"), self.data_dir.join("lake-writer.json"))?;
        let access = Arc::new(Access::resolve(&self.auth).context("invalid [auth] settings")?);
        let outputs = crate::outputs::resolve_all(&self.outputs, self.backpressure.max_consumer_lag)?;
        Ok(Settings {
            outputs,
            loader: self.store.loader(),
            store,
            lake,
            access,
            retention: self.retention.policy(),
            config: Arc::new(self),
        })
    }

    fn validate(&self) -> anyhow::Result<()> {
        crate::journal::jetstream::JetStreamSettings::from_config(&self.journal)?;
        let l = &self.limits;
        anyhow::ensure!(l.max_body_bytes > 0, "limits.max_body_bytes must be above 0");
        anyhow::ensure!(
            l.max_decompressed_bytes >= l.max_body_bytes,
            "limits.max_decompressed_bytes ({}) must be at least limits.max_body_bytes ({})",
            l.max_decompressed_bytes,
            l.max_body_bytes
        );
        anyhow::ensure!(l.max_batch_records > 0, "limits.max_batch_records must be above 0");
        anyhow::ensure!(l.max_concurrent_requests > 0, "limits.max_concurrent_requests must be above 0");
        let largest_request = l.max_body_bytes as u64 + l.max_decompressed_bytes as u64;
        anyhow::ensure!(
            l.max_in_flight_bytes >= largest_request,
            "limits.max_in_flight_bytes ({}) must be at least limits.max_body_bytes + limits.max_decompressed_bytes ({largest_request}), or the largest request could never be accepted",
            l.max_in_flight_bytes
        );
        anyhow::ensure!(
            self.http.header_read_timeout_ms > 0 && self.http.body_read_timeout_ms > 0,
            "http.header_read_timeout_ms and http.body_read_timeout_ms must be above 0"
        );
        anyhow::ensure!(self.http.max_connections > 0, "http.max_connections must be above 0");
        anyhow::ensure!(self.http.write_timeout_ms > 0, "http.write_timeout_ms must be above 0");
        // Above these a semaphore's permit count overflows (a panic at start), and no machine
        // could use them anyway.
        for (key, value) in [
            ("store.pool_size", self.store.pool_size),
            ("limits.max_concurrent_requests", l.max_concurrent_requests),
            ("http.max_connections", self.http.max_connections),
        ] {
            anyhow::ensure!(value <= MAX_PERMITS, "{key} ({value}) must be at most {MAX_PERMITS}");
        }
        anyhow::ensure!(
            self.shutdown_deadline_secs > 0,
            "shutdown_deadline_secs must be above 0, or every stop would give up at once and exit non-zero"
        );
        // PostgreSQL's statement_timeout is a 32-bit number of milliseconds.
        for (key, value) in [
            ("store.statement_timeout_ms", self.store.statement_timeout_ms),
            ("store.query_timeout_ms", self.store.query_timeout_ms),
        ] {
            anyhow::ensure!(value <= i32::MAX as u64, "{key} ({value}) must be at most {} (about 24 days)", i32::MAX);
        }
        anyhow::ensure!(
            (1..=60_000).contains(&self.store.idle_ms),
            "store.idle_ms ({}) must be from 1 to 60000: it is also how long a stopping loader waits for more records",
            self.store.idle_ms
        );
        anyhow::ensure!(
            self.journal.dedup_window_secs == 0 || self.journal.dedup_max_ids > 0,
            "journal.dedup_max_ids must be above 0 while journal.dedup_window_secs is: set dedup_window_secs = 0 to turn entrance dedup off"
        );
        anyhow::ensure!(self.store.batch_rows > 0, "store.batch_rows must be above 0");
        anyhow::ensure!(self.store.pool_size > 0, "store.pool_size must be above 0");
        anyhow::ensure!(self.store.pool_wait_ms > 0, "store.pool_wait_ms must be above 0");
        anyhow::ensure!(self.store.export_write_timeout_ms > 0, "store.export_write_timeout_ms must be above 0");
        anyhow::ensure!(self.attribution.max_cluster_ids > 0, "attribution.max_cluster_ids must be above 0");
        anyhow::ensure!(self.attribution.max_events > 0, "attribution.max_events must be above 0");
        anyhow::ensure!(self.attribution.max_report_events > 0, "attribution.max_report_events must be above 0");
        for (name, text) in [("lookback", &self.attribution.lookback), ("half_life", &self.attribution.half_life)] {
            let ms = crate::duration::parse(text).map_err(|e| anyhow::anyhow!("attribution.{name}: {e}"))?;
            anyhow::ensure!(ms > 0, "attribution.{name} must be longer than 0");
        }
        anyhow::ensure!(
            crate::query::attribution_report::is_property_name(&self.attribution.value_property),
            "attribution.value_property `{}` must be one property name under `properties`: letters, digits, _ or -",
            self.attribution.value_property
        );
        anyhow::ensure!(self.experiments.max_units > 0, "experiments.max_units must be above 0");
        if let Some(token) = &self.split.token {
            anyhow::ensure!(token.len() >= 16, "split.token is too short to be a secret: use at least 16 characters");
        }
        if let Some(secret) = &self.segment.webhook_secret {
            anyhow::ensure!(
                !secret.is_empty(),
                "segment.webhook_secret must not be empty: remove it to turn signatures off"
            );
        }
        anyhow::ensure!(
            self.segment.write_keys.keys().all(|k| !k.is_empty()),
            "segment.write_keys holds an empty key; every write key must be a non-empty string"
        );
        anyhow::ensure!(
            (0..=MAX_FUTURE_TOLERANCE_MS).contains(&self.segment.future_tolerance_ms),
            "segment.future_tolerance_ms ({}) must be between 0 and {MAX_FUTURE_TOLERANCE_MS} (a year)",
            self.segment.future_tolerance_ms
        );
        anyhow::ensure!(self.segment.max_expanded_bytes > 0, "segment.max_expanded_bytes must be above 0");
        for (key, days) in [
            ("retention.events_days", self.retention.events_days),
            ("retention.impressions_days", self.retention.impressions_days),
        ] {
            anyhow::ensure!(
                days != Some(0),
                "{key} must be a number of days above 0; remove it to keep those records for ever"
            );
        }
        anyhow::ensure!(
            (1..=MAX_RETENTION_INTERVAL_SECS).contains(&self.retention.interval_secs),
            "retention.interval_secs ({}) must be from 1 to {MAX_RETENTION_INTERVAL_SECS} (a week)",
            self.retention.interval_secs
        );
        Ok(())
    }

    /// How many records consumer `consumer` (its name in the journal) may lag before ingest
    /// pushes back, and the setting that says so; `None`: no limit (an output's
    /// `max_lag_records = "unbounded"`).
    pub fn lag_limit(&self, consumer: &str) -> Option<(u64, String)> {
        let output = consumer
            .strip_prefix(crate::outputs::CONSUMER_PREFIX)
            .and_then(|name| self.outputs.iter().enumerate().find(|(_, o)| o.name == name));
        match output {
            Some((_, OutputConfig { max_lag_records: Some(LagLimit::Unbounded), .. })) => None,
            Some((at, OutputConfig { max_lag_records: Some(LagLimit::Records(n)), .. })) => {
                Some((*n, format!("outputs[{at}].max_lag_records")))
            }
            _ => Some((self.backpressure.max_consumer_lag, "backpressure.max_consumer_lag".to_owned())),
        }
    }

    /// Where the journal's segment files live.
    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    /// Where rejected records are written.
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.data_dir.join("dead-letter")
    }
}

/// A warning when the token file at `path` can be read by other users than its owner.
fn loose_token_file(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "token_file {} can be read by other users (mode {mode:o}): anyone on this machine can use the token; run `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

/// The prefix of the environment variables that set settings.
const ENV_PREFIX: &str = "SLUICE_";

/// `SLUICE_*` variables that are not settings: clap reads them for `--config`, `--store` (as a
/// setting, `store` would name the whole `[store]` table) and `sluice forget --token`.
const ENV_NOT_SETTINGS: &[&str] = &["config", "store", "token"];

/// The setting a variable's name after the prefix stands for: `STORE__URL` is `store.url`.
fn env_key(name: &str) -> String {
    name.to_ascii_lowercase().replace("__", ".")
}

/// Every setting's key, tables included (`store`, `store.url`, …), from the defaults; a table
/// of free keys (a map, empty by default, such as `lake.options`) is also there as `table.*`.
fn known_keys() -> BTreeSet<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
        let serde_json::Value::Object(fields) = value else { return };
        for (name, value) in fields {
            let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            if value.as_object().is_some_and(serde_json::Map::is_empty) {
                out.insert(format!("{key}.*"));
            }
            walk(&key, value, out);
            out.insert(key);
        }
    }
    let mut keys = BTreeSet::new();
    // Serialising plain data with string keys cannot fail.
    let defaults = serde_json::to_value(Config::default()).unwrap_or_default();
    walk("", &defaults, &mut keys);
    keys
}

/// Whether `key` is a setting: a known key, or an entry of a table of free keys.
fn is_known(known: &BTreeSet<String>, key: &str) -> bool {
    known.contains(key) || key.match_indices('.').any(|(at, _)| known.contains(&format!("{}.*", &key[..at])))
}

/// The warning for variable `name` (key `key`), naming the nearest setting.
fn unknown_variable(name: &str, key: &str, known: &BTreeSet<String>) -> String {
    let nearest = known.iter().filter(|k| !k.ends_with(".*")).min_by_key(|k| strsim::levenshtein(k, key));
    match nearest.filter(|k| strsim::levenshtein(k, key) <= key.len().max(3) / 3) {
        Some(setting) => format!(
            "{name} names no setting and is ignored; did you mean {ENV_PREFIX}{}? (setting {setting})",
            setting.to_ascii_uppercase().replace('.', "__")
        ),
        None => format!("{name} names no setting and is ignored (the README's configuration section lists them)"),
    }
}

#[cfg(test)]
#[expect(clippy::result_large_err, reason = "figment's Jail fixes the closure's error type")]
mod tests {
    use super::*;
    use crate::nats::NatsUrls;
    use figment::Jail;

    /// The settings as written, once loaded and resolved.
    fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        Settings::load(file, overrides).map(|(settings, _)| Arc::unwrap_or_clone(settings.config))
    }

    /// The store the loaded settings name.
    fn store_target(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<StoreTarget> {
        Settings::load(file, overrides).map(|(settings, _)| settings.store)
    }

    #[test]
    fn the_readme_configuration_block_loads_and_is_the_defaults() {
        let readme = include_str!("../README.md");
        let section = readme.split("## Configuration").nth(1).expect("the README has a configuration section");
        let block = section.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("a toml block");
        Jail::expect_with(|jail| {
            jail.create_file("readme.toml", block)?;
            let c = load(Some(Path::new("readme.toml")), &Overrides::default()).unwrap();
            let defaults = Config { data_dir: PathBuf::from("./sluice-data"), ..Config::default() };
            assert_eq!(c, defaults, "every value the README shows is the default");
            Ok(())
        });
    }

    #[test]
    fn defaults_listen_on_loopback_7878_with_data_in_sluice_data() {
        Jail::expect_with(|_| {
            let c = load(None, &Overrides::default()).unwrap();
            assert_eq!(c.listen.to_string(), "127.0.0.1:7878");
            assert_eq!(c.data_dir, PathBuf::from("sluice-data"));
            Ok(())
        });
    }

    #[test]
    fn flags_beat_env_which_beats_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "s.toml",
                "listen = \"127.0.0.1:1000\"\ndata_dir = \"from-file\"\n[split]\ntoken = \"file-token-0123456789\"\n",
            )?;
            let file = Some(Path::new("s.toml"));
            let c = load(file, &Overrides::default()).unwrap();
            assert_eq!(c.listen.port(), 1000);
            assert_eq!(c.split.token.as_deref(), Some("file-token-0123456789"));

            jail.set_env("SLUICE_LISTEN", "127.0.0.1:2000");
            jail.set_env("SLUICE_SPLIT__TOKEN", "env-token-0123456789");
            jail.set_env("SLUICE_CONFIG", "ignored-here");
            let c = load(file, &Overrides::default()).unwrap();
            assert_eq!(c.listen.port(), 2000);
            assert_eq!(c.split.token.as_deref(), Some("env-token-0123456789"));
            assert_eq!(c.data_dir, PathBuf::from("from-file"));

            let o = Overrides {
                listen: Some("127.0.0.1:3000".parse().unwrap()),
                data_dir: Some("flag".into()),
                store: None,
                auth: Some(AuthOverrides { allow_open_reads: true }),
                journal: Some(JournalOverrides { url: NatsUrls("nats://flag:4222".into()) }),
            };
            let c = load(file, &o).unwrap();
            assert_eq!(c.listen.port(), 3000);
            assert_eq!(c.data_dir, PathBuf::from("flag"));
            assert!(c.auth.allow_open_reads, "--allow-open-reads reaches [auth]");
            assert_eq!(c.journal.url, Some(NatsUrls("nats://flag:4222".into())), "--journal reaches [journal] url");
            Ok(())
        });
    }

    #[test]
    fn the_journal_url_comes_from_the_file_env_or_flag_and_its_password_is_never_shown() {
        Jail::expect_with(|jail| {
            assert_eq!(load(None, &Overrides::default()).unwrap().journal.url, None, "the embedded journal by default");
            jail.create_file("s.toml", "[journal]\nurl = \"nats://a:4222\"\nstream = \"EVENTS\"\nreplicas = 3\n")?;
            let file = Some(Path::new("s.toml"));
            let c = load(file, &Overrides::default()).unwrap();
            assert_eq!(
                (c.journal.url.unwrap().0, c.journal.stream, c.journal.replicas),
                ("nats://a:4222".into(), "EVENTS".into(), Some(3))
            );

            jail.set_env("SLUICE_JOURNAL__URL", "nats://sluice:s3cret@a:4222, nats://sluice:s3cret@b:4222");
            let (settings, warnings) = Settings::load(file, &Overrides::default()).unwrap();
            assert_eq!(warnings, Vec::<String>::new());
            let url = settings.config.journal.url.clone().unwrap();
            assert_eq!(url.to_string(), "nats://sluice:***@a:4222,nats://sluice:***@b:4222");
            let shown = format!("{:?} {url}", settings.config);
            assert!(!shown.contains("s3cret"), "{shown}");

            for (bad, key) in [("http://a:4222", "url"), ("", "url")] {
                jail.set_env("SLUICE_JOURNAL__URL", bad);
                let err = load(file, &Overrides::default()).unwrap_err();
                assert!(err.to_string().contains(key), "{bad}: {err:#}");
            }
            Ok(())
        });
        let mut c = Config::default();
        c.journal.url = Some(NatsUrls("nats://a".into()));
        c.journal.stream = "a.b".into();
        assert!(c.clone().resolve().unwrap_err().to_string().contains("stream"));
        c.journal.stream = "SLUICE".into();
        c.journal.publish_timeout_ms = 0;
        assert!(c.resolve().unwrap_err().to_string().contains("publish_timeout_ms"));
    }

    #[test]
    fn values_that_would_panic_or_wedge_are_refused_naming_their_key() {
        type Case = (&'static str, fn(&mut Config));
        let cases: [Case; 12] = [
            ("store.pool_size", |c| c.store.pool_size = usize::MAX / 2),
            ("limits.max_concurrent_requests", |c| c.limits.max_concurrent_requests = usize::MAX / 2),
            ("http.max_connections", |c| c.http.max_connections = usize::MAX / 2),
            ("shutdown_deadline_secs", |c| c.shutdown_deadline_secs = 0),
            ("store.statement_timeout_ms", |c| c.store.statement_timeout_ms = 1 << 31),
            ("store.query_timeout_ms", |c| c.store.query_timeout_ms = 1 << 31),
            ("store.idle_ms", |c| c.store.idle_ms = u64::MAX),
            ("store.idle_ms", |c| c.store.idle_ms = 0),
            ("retention.events_days", |c| c.retention.events_days = Some(0)),
            ("retention.impressions_days", |c| c.retention.impressions_days = Some(0)),
            ("retention.interval_secs", |c| c.retention.interval_secs = 0),
            ("retention.interval_secs", |c| c.retention.interval_secs = u64::MAX),
        ];
        for (key, set) in cases {
            let mut c = Config::default();
            set(&mut c);
            let err = c.resolve().expect_err(key);
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
        assert!(Config::default().resolve().is_ok());
    }

    #[test]
    fn unknown_environment_variables_are_ignored_with_a_warning_naming_the_nearest_setting() {
        Jail::expect_with(|jail| {
            jail.set_env("SLUICE_EXE", "/usr/local/bin/sluice");
            jail.set_env("SLUICE_LIMITS__MAX_BODY_BYTE", "5");
            jail.set_env("SLUICE_LAKE__OPTIONS__AWS_REGION", "eu-west-1");
            jail.set_env("SLUICE_STORE", "postgres://db/x");
            jail.set_env("SLUICE_CONFIG", "ignored-here");
            let (settings, warnings) = Settings::load(None, &Overrides::default()).unwrap();
            let c = &settings.config;
            assert_eq!(c.limits.max_body_bytes, Config::default().limits.max_body_bytes);
            assert_eq!(c.lake.options.get("aws_region").map(String::as_str), Some("eu-west-1"), "a free table's entry");
            assert_eq!(warnings.len(), 2, "{warnings:?}");
            assert!(warnings.iter().any(|w| w.starts_with("SLUICE_EXE names no setting")), "{warnings:?}");
            assert!(
                warnings.iter().any(|w| w.contains("SLUICE_LIMITS__MAX_BODY_BYTE ")
                    && w.contains("did you mean SLUICE_LIMITS__MAX_BODY_BYTES?")),
                "{warnings:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_name_them() {
        Jail::expect_with(|jail| {
            jail.create_file("s.toml", "[limits]\nmax_body_byte = 5\n")?;
            let err = load(Some(Path::new("s.toml")), &Overrides::default()).unwrap_err();
            assert!(format!("{err:#}").contains("max_body_byte"), "{err:#}");

            jail.create_file("t.toml", "[split]\ntoken = \"short\"\n")?;
            let err = load(Some(Path::new("t.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("split.token"), "{err:#}");

            let err = load(Some(Path::new("missing.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("does not exist"), "{err:#}");
            Ok(())
        });
    }

    #[test]
    fn outputs_load_from_the_file_and_their_lag_limits_apply_per_output() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "o.toml",
                r#"
[backpressure]
max_consumer_lag = 100
[[outputs]]
name = "k"
type = "kafka"
brokers = "localhost:9092"
max_lag_records = 5
[outputs.options]
"security.protocol" = "sasl_ssl"
[[outputs]]
name = "n"
type = "nats"
url = "nats://127.0.0.1:4222"
max_lag_records = "unbounded"
"#,
            )?;
            let (settings, _) = Settings::load(Some(Path::new("o.toml")), &Overrides::default()).unwrap();
            assert_eq!(settings.outputs.len(), 2);
            let c = &settings.config;
            assert_eq!(c.lag_limit("output:k"), Some((5, "outputs[0].max_lag_records".to_owned())));
            assert_eq!(c.lag_limit("output:n"), None);
            assert_eq!(c.lag_limit("store"), Some((100, "backpressure.max_consumer_lag".to_owned())));

            jail.create_file("bad.toml", "[[outputs]]\nname = \"n\"\ntype = \"nats\"\n")?;
            let err = Settings::load(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
            assert!(format!("{err:#}").contains("outputs[0] (\"n\"): url is required"), "{err:#}");

            jail.create_file("word.toml", "[[outputs]]\nname = \"n\"\ntype = \"nats\"\nmax_lag_records = \"lots\"\n")?;
            let err = Settings::load(Some(Path::new("word.toml")), &Overrides::default()).unwrap_err();
            assert!(format!("{err:#}").contains("\"unbounded\""), "{err:#}");
            Ok(())
        });
    }

    #[test]
    fn the_store_url_comes_from_the_file_env_or_flag_and_defaults_to_sqlite() {
        Jail::expect_with(|jail| {
            assert!(
                matches!(store_target(None, &Overrides::default()).unwrap(), StoreTarget::Sqlite(p) if p == Path::new("sluice-data/store.sqlite"))
            );

            jail.create_file("s.toml", "[store]\nurl = \"postgres://file@db:5432/sluice\"\npool_size = 3\n")?;
            let file = Some(Path::new("s.toml"));
            let c = load(file, &Overrides::default()).unwrap();
            assert_eq!(
                store_target(file, &Overrides::default()).unwrap().to_string(),
                "postgres://file@db:5432/sluice"
            );
            assert_eq!(c.store.pool_size, 3);

            jail.set_env("SLUICE_STORE__URL", "postgres://env@db/sluice");
            jail.set_env("SLUICE_STORE", "postgres://read-by-the-flag-not-by-figment@db/x");
            let c = load(file, &Overrides::default()).unwrap();
            assert_eq!(store_target(file, &Overrides::default()).unwrap().to_string(), "postgres://env@db:5432/sluice");
            assert_eq!(c.store.pool_size, 3, "the env URL leaves the file's other store keys alone");

            let o =
                Overrides { store: Some(StoreOverrides { url: "postgres://flag@db/f".into() }), ..Default::default() };
            assert_eq!(store_target(file, &o).unwrap().to_string(), "postgres://flag@db:5432/f");

            let o = Overrides {
                store: Some(StoreOverrides { url: "postgres://u@db/x?sslmode=require".into() }),
                ..Default::default()
            };
            assert_eq!(store_target(file, &o).unwrap().to_string(), "postgres://u@db:5432/x?sslmode=require");

            let o = Overrides { store: Some(StoreOverrides { url: "mysql://nope".into() }), ..Default::default() };
            let err = load(file, &o).unwrap_err();
            assert!(format!("{err:#}").contains("postgres://USER"), "{err:#}");
            Ok(())
        });
    }
}
