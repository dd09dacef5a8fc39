/*!
Configuration: defaults, then a TOML file, then `SLUICE_*` environment variables, then flags.

Everything is read and validated once at start-up into one [`Config`]; nothing reads the
environment or the file after that. Nested keys use a double underscore in the environment:
`[split] token = "…"` is `SLUICE_SPLIT__TOKEN`, `[journal] max_bytes` is `SLUICE_JOURNAL__MAX_BYTES`.
*/

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::consumers::store_loader::LoaderConfig;
use crate::journal::file::FileJournalConfig;
use crate::lake::LakeConfig;
use crate::record::FieldLimits;

/// The whole validated configuration of a sluice process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Directory holding the journal, the store and the dead letters.
    pub data_dir: PathBuf,
    /// Logging.
    pub log: LogConfig,
    /// Limits on what one request may carry.
    pub limits: IngestLimits,
    /// The Split impressions webhook source.
    pub split: SplitSourceConfig,
    /// The embedded journal.
    pub journal: FileJournalConfig,
    /// The store loader.
    pub store: LoaderConfig,
    /// When ingest pushes back instead of accepting more.
    pub backpressure: BackpressureConfig,
    /// Where rejected records are kept.
    pub dead_letter: DeadLetterConfig,
    /// The lake: every record archived as objects.
    pub lake: LakeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            data_dir: PathBuf::from("sluice-data"),
            log: LogConfig::default(),
            limits: IngestLimits::default(),
            split: SplitSourceConfig::default(),
            journal: FileJournalConfig::default(),
            store: LoaderConfig::default(),
            backpressure: BackpressureConfig::default(),
            dead_letter: DeadLetterConfig::default(),
            lake: LakeConfig::default(),
        }
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
        }
    }
}

impl IngestLimits {
    /// The per-field part, as the record parser wants it.
    pub fn fields(&self) -> FieldLimits {
        FieldLimits { max_field_bytes: self.max_field_bytes, max_properties_bytes: self.max_properties_bytes }
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

/// Values given on the command line; `None` leaves the lower layers in charge.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Builds the configuration: defaults < `file` < `SLUICE_*` environment < `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            anyhow::ensure!(
                path.is_file(),
                "config file {} does not exist; check --config / SLUICE_CONFIG",
                path.display()
            );
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = Env::prefixed("SLUICE_").split("__").ignore(&["config"]);
        let config: Config = figment
            .merge(env)
            .merge(Serialized::globals(overrides))
            .extract()
            .context("invalid configuration (see `sluice serve --help` and the README's configuration section)")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
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
        anyhow::ensure!(self.store.batch_rows > 0, "store.batch_rows must be above 0");
        if let Some(token) = &self.split.token {
            anyhow::ensure!(token.len() >= 16, "split.token is too short to be a secret: use at least 16 characters");
        }
        self.lake.validate()?;
        Ok(())
    }

    /// Where the journal's segment files live.
    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    /// The SQLite store file.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("store.sqlite")
    }

    /// Where rejected records are written.
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.data_dir.join("dead-letter")
    }

    /// The lake's directory when `lake.url` is unset.
    pub fn lake_dir(&self) -> PathBuf {
        self.data_dir.join("lake")
    }

    /// The lake writer's checkpoint: its lake and committed offset.
    pub fn lake_checkpoint_path(&self) -> PathBuf {
        self.data_dir.join("lake-writer.json")
    }
}

#[cfg(test)]
#[expect(clippy::result_large_err, reason = "figment's Jail fixes the closure's error type")]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_listen_on_loopback_7878_with_data_in_sluice_data() {
        Jail::expect_with(|_| {
            let c = Config::load(None, &Overrides::default()).unwrap();
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
            let c = Config::load(file, &Overrides::default()).unwrap();
            assert_eq!(c.listen.port(), 1000);
            assert_eq!(c.split.token.as_deref(), Some("file-token-0123456789"));

            jail.set_env("SLUICE_LISTEN", "127.0.0.1:2000");
            jail.set_env("SLUICE_SPLIT__TOKEN", "env-token-0123456789");
            jail.set_env("SLUICE_CONFIG", "ignored-here");
            let c = Config::load(file, &Overrides::default()).unwrap();
            assert_eq!(c.listen.port(), 2000);
            assert_eq!(c.split.token.as_deref(), Some("env-token-0123456789"));
            assert_eq!(c.data_dir, PathBuf::from("from-file"));

            let o = Overrides { listen: Some("127.0.0.1:3000".parse().unwrap()), data_dir: Some("flag".into()) };
            let c = Config::load(file, &o).unwrap();
            assert_eq!(c.listen.port(), 3000);
            assert_eq!(c.data_dir, PathBuf::from("flag"));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_name_them() {
        Jail::expect_with(|jail| {
            jail.create_file("s.toml", "[limits]\nmax_body_byte = 5\n")?;
            let err = Config::load(Some(Path::new("s.toml")), &Overrides::default()).unwrap_err();
            assert!(format!("{err:#}").contains("max_body_byte"), "{err:#}");

            jail.create_file("t.toml", "[split]\ntoken = \"short\"\n")?;
            let err = Config::load(Some(Path::new("t.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("split.token"), "{err:#}");

            let err = Config::load(Some(Path::new("missing.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("does not exist"), "{err:#}");
            Ok(())
        });
    }
}
