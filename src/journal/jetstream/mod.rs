/*!
The clustered journal: one NATS JetStream stream that every sluice node appends to and reads.

# The stream
One stream (`[journal] stream`, `SLUICE` by default) on file storage, created or updated when a
node opens the journal ([`stream`] says which differences are updated and which stop the node).
A record of kind `k` is published on subject `<stream>.<k's name>` (`SLUICE.split_impression`)
with two headers: `Nats-Msg-Id`, the record's identity ([`RecordId::to_hex`]), and
`Sluice-Received-At`, when sluice received it (epoch milliseconds); the payload is the record.

Offsets are stream sequences minus one: JetStream numbers from 1, sluice's offsets from 0.

# Appends
[`JetStreamJournal::append`] publishes every record of the batch without waiting in between,
then waits for all the acknowledgements. It returns only once every record is acknowledged: with
replicas, an acknowledgement means a quorum of the stream's servers has the record. A record
whose acknowledgement does not come (a timeout, no responders while a leader is elected, a lost
connection) is published again with the same `Nats-Msg-Id` until `publish_timeout_ms` has passed
since the append began; then the append fails with [`JournalError::Unavailable`], which ingest
answers 503 with `Retry-After`. A batch is **not atomic**: a failed append may have stored some
of its records. The sender's retry carries the same identities, and the stream's duplicate window
(`dedup_window_secs`) stores each once, through any node.

An acknowledgement that says `duplicate` (the stream held that identity already) is counted in
[`Appended::duplicates`] and takes no offset, except for a record this append had to publish
again: its first publish may be the one the stream holds, so it is counted as appended, at the
offset the stream gave it.

# Record size
A NATS server refuses messages over its `max_payload` (1 MiB unless configured up to 64 MiB), far
below the embedded journal's 16 MiB per record. Rather than refuse to start against a default
server, this journal lowers its per-record limit to what the server accepts (less room for the
headers), logs it at start-up, and ingest answers 413 for a record over it. Raise the servers'
`max_payload` to take larger records.

# Retention
The stream keeps records by limits, not by consumers: `max_age_secs` (7 days by default) and
`max_bytes` with the `discard: new` policy, so a full stream refuses appends (503) instead of
deleting records a consumer has not read. Records older than `max_age_secs` are deleted whether
read or not: a consumer that falls further behind finds [`JournalError::OffsetGone`]. Consumers'
commits ([`Journal::commit`]) are kept in memory for lag figures and backpressure only.

# Readers
A reader is an ordered consumer (ephemeral, in memory, re-created by the client at the right
sequence after a server failure) starting at the reader's sequence. A gap in the sequences it
delivers means records were deleted under it: [`JournalError::OffsetGone`].

# Identity
[`Journal::id`] is `<stream>@<creation time in ns>`, read from the stream's info: the same on every
node, and different for a stream deleted and created again.
*/

mod reader;
mod stream;
#[cfg(test)]
pub(crate) mod test_servers;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_nats::ConnectOptions;
use async_nats::jetstream::{self, context::PublishErrorKind};
use async_trait::async_trait;
use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::{Appended, Journal, JournalConfig, JournalError, JournalReader, JournalStats, Record};
use crate::journal::file::MAX_RECORD_BYTES;
use crate::nats::NatsUrls;
use crate::record::RecordKind;
pub use stream::Difference;

/// The header carrying when sluice received a record, epoch milliseconds.
pub const RECEIVED_AT_HEADER: &str = "Sluice-Received-At";

/// Room left in a NATS message for the subject and headers beside the payload.
const HEADER_ROOM: usize = 1024;

/// How often the cached stream figures ([`Journal::stats`]) are refreshed.
const REFRESH: Duration = Duration::from_secs(1);

/// Publishes awaiting their acknowledgement, all appends together; more are tried again shortly.
const MAX_ACKS_IN_FLIGHT: usize = 1 << 16;

/// How long a JetStream API request (stream info, consumer creation) may wait for its answer.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the stream's info may go unread before the journal counts as unavailable: longer
/// than a leader election, so that one does not turn nodes unready.
const UNAVAILABLE_AFTER: Duration = Duration::from_secs(3);

/// How long a connection attempt to a NATS server may take at start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest pause between two tries of a publish that failed at once (no responders, say).
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// What can stop the JetStream journal from opening.
#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    /// A setting is wrong.
    #[error("[journal] {0}")]
    Setting(String),
    /// A credentials, NKey or TLS file could not be read.
    #[error("cannot read {what} {path}: {source}; check [journal] {key}")]
    File {
        /// What the file is.
        what: &'static str,
        /// The setting naming it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No server could be reached, or it refused us.
    #[error(
        "cannot connect to NATS at {urls}: {reason}; check that the servers are running and reachable from this machine, and the credentials (user:password in the URL, creds_file, nkey_file) and TLS settings ([journal] tls_*)"
    )]
    Connect {
        /// The URLs, passwords hidden.
        urls: String,
        /// What the client said, passwords hidden.
        reason: String,
    },
    /// The server has no JetStream.
    #[error(
        "the NATS server at {urls} does not have JetStream enabled; start nats-server with -js (or a jetstream {{}} block in its configuration)"
    )]
    NoJetStream {
        /// The URLs, passwords hidden.
        urls: String,
    },
    /// Creating, reading or updating the stream failed.
    #[error(
        "cannot {action} the JetStream stream {stream}: {reason}; check that the NATS servers are reachable, that JetStream has a meta leader (`nats server report jetstream`) and room for the stream, and that this user may manage streams"
    )]
    Stream {
        /// What was attempted.
        action: &'static str,
        /// The stream's name.
        stream: String,
        /// What NATS said.
        reason: String,
    },
    /// The stream is the journal of nodes that take their leases from another bucket.
    #[error(
        "the JetStream stream {stream} is the journal of the nodes whose leases are in the bucket {found}, but this node's cluster.lease_bucket is {wanted}: the nodes of each bucket would run every consumer. Give every node of one cluster the same cluster.lease_bucket (to move a whole cluster to another bucket, stop every node and remove \"Leases: {found}\" from the stream's description: `nats stream edit {stream} --description …`)"
    )]
    LeaseBucketDiffers {
        /// The stream's name.
        stream: String,
        /// The bucket the stream's description names.
        found: String,
        /// This node's bucket.
        wanted: String,
    },
    /// The stream exists with settings this node cannot change.
    #[error("{}", stream::incompatible_message(stream, differences))]
    Incompatible {
        /// The stream's name.
        stream: String,
        /// Every setting that differs: name, found, wanted.
        differences: Vec<Difference>,
    },
}

/// The JetStream journal's settings, checked ([`JetStreamSettings::from_config`]).
#[derive(Debug, Clone)]
pub struct JetStreamSettings {
    /// The servers.
    pub urls: NatsUrls,
    /// The stream's name.
    pub stream: String,
    /// Replicas asked for; `None`: the default (see [`JournalConfig::replicas`]).
    pub replicas: Option<usize>,
    /// How long an append may wait for acknowledgements.
    pub publish_timeout: Duration,
    /// The stream's duplicate window.
    pub dedup_window: Duration,
    /// How long the stream keeps a record.
    pub max_age: Duration,
    /// The stream's byte limit.
    pub max_bytes: u64,
    /// NATS credentials file.
    pub creds_file: Option<PathBuf>,
    /// NKey seed file.
    pub nkey_file: Option<PathBuf>,
    /// CA certificate(s) of the servers.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and its key.
    pub tls_client: Option<(PathBuf, PathBuf)>,
}

/// The longest `publish_timeout_ms`: a minute, the HTTP server's default body deadline.
const MAX_PUBLISH_TIMEOUT_MS: u64 = 60_000;

impl JetStreamSettings {
    /// The JetStream settings of `config`, or `None` when no `url` is set (the embedded journal).
    pub fn from_config(config: &JournalConfig) -> Result<Option<JetStreamSettings>, JetStreamError> {
        let Some(urls) = config.url.clone() else { return Ok(None) };
        let setting = |message: String| JetStreamError::Setting(message);
        urls.addrs().map_err(setting)?;
        urls.with_credentials(ConnectOptions::new()).map_err(setting)?;
        let stream = config.stream.clone();
        let valid = !stream.is_empty()
            && stream.len() <= 255
            && stream.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(setting(format!(
                "stream {stream:?} is not a usable stream name: use 1 to 255 letters, digits, '_' or '-'"
            )));
        }
        if let Some(replicas) = config.replicas
            && !(1..=5).contains(&replicas)
        {
            return Err(setting(format!("replicas ({replicas}) must be from 1 to 5 (JetStream's limit)")));
        }
        if !(1..=MAX_PUBLISH_TIMEOUT_MS).contains(&config.publish_timeout_ms) {
            return Err(setting(format!(
                "publish_timeout_ms ({}) must be from 1 to {MAX_PUBLISH_TIMEOUT_MS}: an append waits that long before answering 503",
                config.publish_timeout_ms
            )));
        }
        if config.max_age_secs == 0 {
            return Err(setting("max_age_secs must be above 0: it is how long the stream keeps records".into()));
        }
        if config.dedup_window_secs > config.max_age_secs {
            return Err(setting(format!(
                "dedup_window_secs ({}) must be at most max_age_secs ({}): JetStream cannot remember an identity longer than it keeps the record",
                config.dedup_window_secs, config.max_age_secs
            )));
        }
        if i64::try_from(config.max_bytes).is_err() || config.max_bytes == 0 {
            return Err(setting(format!("max_bytes ({}) must be from 1 to {}", config.max_bytes, i64::MAX)));
        }
        let tls_client = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => return Err(setting("tls_cert_file and tls_key_file go together: set both or neither".into())),
        };
        Ok(Some(JetStreamSettings {
            urls,
            stream,
            replicas: config.replicas,
            publish_timeout: Duration::from_millis(config.publish_timeout_ms),
            dedup_window: Duration::from_secs(config.dedup_window_secs),
            max_age: Duration::from_secs(config.max_age_secs),
            max_bytes: config.max_bytes,
            creds_file: config.creds_file.clone(),
            nkey_file: config.nkey_file.clone(),
            tls_ca_file: config.tls_ca_file.clone(),
            tls_client,
        }))
    }

    /// Settings for the stream `stream` on `urls`, everything else the defaults: for tests and tools.
    pub fn new(urls: &str, stream: &str) -> JetStreamSettings {
        let config = JournalConfig {
            url: Some(NatsUrls(urls.to_owned())),
            stream: stream.to_owned(),
            ..JournalConfig::default()
        };
        // The defaults are valid; only a bad URL or name can fail, which is the caller's bug.
        JetStreamSettings::from_config(&config)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("invalid NATS URL {urls} or stream {stream}"))
    }
}

/// Connects to the NATS servers of `settings` with their credentials and TLS settings; the
/// client reconnects by itself, for ever, after losing a server (the log says when).
/// Passwords in the URLs never reach the log or an error.
pub async fn connect(settings: &JetStreamSettings) -> Result<async_nats::Client, JetStreamError> {
    let urls = settings.urls.clone();
    let events = urls.clone();
    let mut options =
        ConnectOptions::new().name("sluice").connection_timeout(CONNECT_TIMEOUT).max_reconnects(None).event_callback(
            move |event| {
                let shown = events.redact(&event.to_string());
                async move {
                    match event {
                        async_nats::Event::Connected => tracing::info!("NATS: connection established"),
                        async_nats::Event::Disconnected => {
                            tracing::warn!("NATS: disconnected; reconnecting, and appends answer 503 until it is back")
                        }
                        // Every failed reconnection attempt (the disconnection was said once), and
                        // the end of the connection when sluice stops.
                        async_nats::Event::ClientError(_) | async_nats::Event::Closed => {
                            tracing::debug!("NATS: {shown}")
                        }
                        _ => tracing::warn!("NATS: {shown}"),
                    }
                }
            },
        );
    if let Some(path) = &settings.creds_file {
        options = options.credentials_file(path).await.map_err(|source| JetStreamError::File {
            what: "the NATS credentials file",
            key: "creds_file",
            path: path.clone(),
            source,
        })?;
    }
    if let Some(path) = &settings.nkey_file {
        let seed = tokio::fs::read_to_string(path).await.map_err(|source| JetStreamError::File {
            what: "the NKey seed file",
            key: "nkey_file",
            path: path.clone(),
            source,
        })?;
        options = options.nkey(seed.trim().to_owned());
    }
    if let Some(ca) = &settings.tls_ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &settings.tls_client {
        options = options.add_client_certificate(cert.clone(), key.clone()).require_tls(true);
    }
    options = settings.urls.with_credentials(options).map_err(JetStreamError::Setting)?;
    let addrs = settings.urls.addrs().map_err(JetStreamError::Setting)?;
    let client = options
        .connect(addrs)
        .await
        .map_err(|e| JetStreamError::Connect { urls: urls.to_string(), reason: urls.redact(&e.to_string()) })?;
    tracing::info!(urls = %urls, server = client.server_info().server_name, "NATS: connected");
    Ok(client)
}

/// The [`Journal`] on a NATS JetStream stream.
pub struct JetStreamJournal {
    shared: Arc<Shared>,
}

/// What the journal, its readers and its background refresh share.
struct Shared {
    client: async_nats::Client,
    /// For publishing: its timeout is one publish attempt's.
    publisher: jetstream::Context,
    /// For the stream's info and consumers: a leader election can take seconds.
    api: jetstream::Context,
    stream: String,
    id: String,
    /// The largest payload a record may have here (see the module docs).
    max_record_bytes: usize,
    /// The stream's replicas, as created or found.
    replicas: usize,
    /// The stream's duplicate window, in seconds.
    dedup_window_secs: u64,
    /// Records left out of appends as duplicates since the journal was opened.
    duplicates: AtomicU64,
    publish_timeout: Duration,
    /// The sequence of the oldest record the stream holds (0 while it never held one).
    first_sequence: AtomicU64,
    /// The highest sequence known: from this node's acknowledgements and the stream's info.
    last_sequence: AtomicU64,
    /// The stream's size in bytes, as of the last refresh.
    bytes: AtomicU64,
    /// Registered (or held) consumers and their places.
    consumers: Mutex<BTreeMap<String, Place>>,
    /// Set by [`JetStreamJournal::close`]: appends and readers refuse from then on.
    closed: AtomicBool,
    /// Since when, and why, the stream's info has not been read (see [`UNAVAILABLE_AFTER`]).
    unreachable: Mutex<Option<(Instant, String)>>,
    /// Stops the background refresh.
    stop: CancellationToken,
}

/// Where a consumer is in the journal.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// Everything below it is processed (or, held, may be).
    offset: u64,
    /// False while the place is only held.
    known: bool,
}

impl JetStreamJournal {
    /// Connects to NATS, creates or updates the stream, and starts refreshing its figures.
    pub async fn open(settings: &JetStreamSettings) -> Result<JetStreamJournal, JetStreamError> {
        let client = connect(settings).await?;
        JetStreamJournal::open_with(client, settings).await
    }

    /// Opens the journal on an existing connection (its credentials already given).
    pub async fn open_with(
        client: async_nats::Client,
        settings: &JetStreamSettings,
    ) -> Result<JetStreamJournal, JetStreamError> {
        let info = client.server_info();
        let urls = settings.urls.to_string();
        if !info.jetstream {
            return Err(JetStreamError::NoJetStream { urls });
        }
        let max_record_bytes = info.max_payload.saturating_sub(HEADER_ROOM).min(MAX_RECORD_BYTES);
        if max_record_bytes < MAX_RECORD_BYTES {
            tracing::warn!(
                "the NATS server accepts messages up to {} bytes (its max_payload), so this journal takes records up to {max_record_bytes} bytes, not {MAX_RECORD_BYTES}: larger ones are answered 413. Raise max_payload in the NATS servers' configuration (up to 64 MiB) to take larger records",
                info.max_payload
            );
        }
        // An acknowledgement that takes over half the append's time is given up and the record
        // published again, so that an append gets a second chance within its deadline.
        let attempt = (settings.publish_timeout / 2).max(Duration::from_millis(50));
        // Concurrent appends each hold the acknowledgements of the records they published so
        // far: with a bounded pool of them that waits when empty, appends holding part of it
        // each would wait for the rest for ever. Past the (large) bound a publish fails at
        // once instead, and is tried again once this append has its other acknowledgements.
        let publisher = jetstream::ContextBuilder::new()
            .timeout(attempt)
            .ack_timeout(attempt)
            .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
            .backpressure_on_inflight(false)
            .build(client.clone());
        let api = jetstream::ContextBuilder::new().timeout(API_TIMEOUT).build(client.clone());
        let servers = info.connect_urls.len().max(1);
        let stream_info = stream::ensure(&api, settings, servers).await?;
        let id = format!("{}@{}", settings.stream, stream_info.created.unix_timestamp_nanos());
        let state = &stream_info.state;
        tracing::info!(
            stream = settings.stream,
            id,
            replicas = stream_info.config.num_replicas,
            first_sequence = state.first_sequence,
            last_sequence = state.last_sequence,
            "journal: on NATS JetStream"
        );
        let shared = Arc::new(Shared {
            client,
            publisher,
            api,
            stream: settings.stream.clone(),
            id,
            max_record_bytes,
            replicas: stream_info.config.num_replicas,
            dedup_window_secs: stream_info.config.duplicate_window.as_secs(),
            duplicates: AtomicU64::new(0),
            publish_timeout: settings.publish_timeout,
            first_sequence: AtomicU64::new(state.first_sequence),
            last_sequence: AtomicU64::new(state.last_sequence),
            bytes: AtomicU64::new(state.bytes),
            consumers: Mutex::new(BTreeMap::new()),
            closed: AtomicBool::new(false),
            unreachable: Mutex::new(None),
            stop: CancellationToken::new(),
        });
        tokio::spawn(refresh(Arc::downgrade(&shared), shared.stop.clone()));
        Ok(JetStreamJournal { shared })
    }

    /// A JetStream context on the journal's connection (for the consumer leases' bucket), its
    /// requests waiting up to 10 s for an answer.
    pub fn jetstream(&self) -> jetstream::Context {
        self.shared.api.clone()
    }

    /// The journal's NATS connection.
    pub fn client(&self) -> async_nats::Client {
        self.shared.client.clone()
    }

    /// The stream's replicas: what the cluster's other JetStream state (the consumer leases) is
    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.shared.stream
    }

    /// Records that the nodes of this stream take their leases from `bucket`, or refuses when
    /// the stream names another bucket.
    pub async fn claim_lease_bucket(&self, bucket: &str) -> Result<(), JetStreamError> {
        stream::claim_lease_bucket(&self.shared.api, &self.shared.stream, bucket).await
    }

    /// kept at too.
    pub fn replicas(&self) -> usize {
        self.shared.replicas
    }

    /// The largest payload one record may have in this journal.
    pub fn max_record_bytes(&self) -> usize {
        self.shared.max_record_bytes
    }

    /// Refuses appends and new batches from now on, and sends what the connection still buffers.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.stop.cancel();
        if let Err(e) = tokio::time::timeout(self.shared.publish_timeout, self.shared.client.flush()).await {
            tracing::warn!(error = %e, "NATS: the connection could not be flushed at close");
        }
    }
}

impl Drop for JetStreamJournal {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// Refreshes the stream's figures every [`REFRESH`] until the journal is dropped or closed.
async fn refresh(shared: std::sync::Weak<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REFRESH) => {}
        }
        let Some(shared) = shared.upgrade() else { return };
        shared.refresh().await;
    }
}

impl Shared {
    /// Reads the stream's info and updates the cached figures; a failure leaves them as they are
    /// and, past [`UNAVAILABLE_AFTER`], makes the journal unavailable (ingest refuses at once and
    /// `/readyz` says why) until an info is read again: a stream without a quorum answers
    /// appends only with their timeout, and a deleted one never.
    async fn refresh(&self) {
        let info = tokio::time::timeout(self.publish_timeout, self.api.get_stream(&self.stream))
            .await
            .map(|answer| answer.map(|stream| stream.cached_info().clone()));
        let problem = match info {
            Ok(Ok(info)) if self.id != format!("{}@{}", self.stream, info.created.unix_timestamp_nanos()) => format!(
                "the JetStream stream {} was deleted and created again while sluice ran: its offsets are other records now, and the records it held are gone; restart this node",
                self.stream
            ),
            // A server of a cluster that lost its quorum still answers, for a replicated
            // stream without a leader: appends then wait out their timeout.
            Ok(Ok(info))
                if info.config.num_replicas > 1 && info.cluster.as_ref().is_none_or(|c| c.leader.is_none()) =>
            {
                format!(
                    "the JetStream stream {} has no leader (fewer than a majority of its {} servers up?); check that a majority of its NATS servers are up",
                    self.stream, info.config.num_replicas
                )
            }
            Ok(Ok(info)) => {
                let state = info.state;
                self.first_sequence.store(state.first_sequence, Ordering::Release);
                self.last_sequence.fetch_max(state.last_sequence, Ordering::AcqRel);
                self.bytes.store(state.bytes, Ordering::Release);
                *lock(&self.unreachable) = None;
                return;
            }
            Ok(Err(e))
                if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref answer)
                    if answer.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                format!(
                    "the JetStream stream {} does not exist any more (deleted while sluice ran?), and the records it held are gone; restart sluice to create it again",
                    self.stream
                )
            }
            Ok(Err(e)) => format!(
                "the JetStream stream {} does not answer ({e}); check that a majority of its NATS servers are up",
                self.stream
            ),
            Err(_) => format!(
                "the JetStream stream {} answered nothing within {} s; check that a majority of its NATS servers are up",
                self.stream,
                self.publish_timeout.as_secs_f64()
            ),
        };
        tracing::debug!(problem, "journal: could not read the stream's info");
        let mut unreachable = lock(&self.unreachable);
        match unreachable.as_mut() {
            Some((_, reason)) => *reason = problem,
            None => *unreachable = Some((Instant::now(), problem)),
        }
    }

    /// Why appends cannot succeed now, once the stream's info has gone unread long enough.
    fn unavailable(&self) -> Option<String> {
        lock(&self.unreachable)
            .as_ref()
            .filter(|(since, _)| since.elapsed() >= UNAVAILABLE_AFTER)
            .map(|(_, reason)| reason.clone())
    }

    /// The oldest offset the stream holds, as last seen.
    fn first_offset(&self) -> u64 {
        self.first_sequence.load(Ordering::Acquire).saturating_sub(1)
    }

    /// One past the newest offset known.
    fn next_offset(&self) -> u64 {
        self.last_sequence.load(Ordering::Acquire)
    }

    /// The subject records of `kind` are published on.
    fn subject(&self, kind: RecordKind) -> String {
        format!("{}.{}", self.stream, kind.name())
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// What one record's publish came to.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Not acknowledged yet.
    Pending,
    /// Stored at this sequence (by this append).
    Stored(u64),
    /// The stream held its identity already.
    Duplicate,
}

#[async_trait]
impl Journal for JetStreamJournal {
    async fn append(&self, records: Vec<Record>) -> Result<Appended, JournalError> {
        let shared = &self.shared;
        if shared.closed() {
            return Err(JournalError::Closed);
        }
        let max = shared.max_record_bytes;
        if let Some(record) = records.iter().find(|record| record.payload.len() > max) {
            return Err(JournalError::RecordTooLarge { size: record.payload.len(), max });
        }
        if records.is_empty() {
            return Ok(Appended::default());
        }
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + shared.publish_timeout);
        let mut outcomes = vec![Outcome::Pending; records.len()];
        let mut last_error = String::new();
        let mut backoff = Duration::from_millis(10);
        for attempt in 1.. {
            let pending: Vec<usize> = (0..records.len()).filter(|&i| matches!(outcomes[i], Outcome::Pending)).collect();
            if pending.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable(shared, &outcomes, &last_error));
            }
            // Every publish first, then every acknowledgement: one round trip for the batch.
            let published = tokio::time::timeout_at(deadline, async {
                let (mut waiting, mut answers) = (Vec::with_capacity(pending.len()), Vec::new());
                for &i in &pending {
                    let record = &records[i];
                    let message = jetstream::message::PublishMessage::build()
                        .payload(record.payload.clone())
                        .message_id(record.id.to_hex())
                        .header(RECEIVED_AT_HEADER, record.received_at_ms.to_string());
                    match shared.publisher.send_publish(shared.subject(record.kind), message).await {
                        Ok(ack) => waiting.push(async move { (i, ack.await) }),
                        Err(e) => answers.push((i, Err(e))),
                    }
                }
                answers.extend(join_all(waiting).await);
                answers
            })
            .await;
            let Ok(answers) = published else {
                last_error = "no acknowledgement before the deadline".to_owned();
                continue;
            };
            let mut waited = false;
            for (i, answer) in answers {
                match answer {
                    Ok(ack) => {
                        shared.last_sequence.fetch_max(ack.sequence, Ordering::AcqRel);
                        outcomes[i] = if ack.duplicate && attempt == 1 {
                            Outcome::Duplicate
                        } else {
                            Outcome::Stored(ack.sequence)
                        };
                    }
                    Err(e) => {
                        waited |= e.kind() == PublishErrorKind::TimedOut;
                        if !retryable(&e) {
                            return Err(JournalError::Unavailable(format!(
                                "NATS JetStream refused a record of this batch on stream {}: {}; nothing more of the batch is tried (records it stored are deduplicated when the sender retries)",
                                shared.stream,
                                describe(&e)
                            )));
                        }
                        last_error = describe(&e);
                    }
                }
            }
            // A failure that came at once (no responders while a leader is elected) is tried
            // again after a pause, not in a busy loop.
            if !waited && outcomes.iter().any(|o| matches!(o, Outcome::Pending)) {
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        metrics::histogram!("sluice_journal_publish_ack_seconds").record(started.elapsed().as_secs_f64());
        let mut appended = Appended::default();
        for outcome in outcomes {
            match outcome {
                Outcome::Stored(sequence) => appended.offsets.push(sequence.saturating_sub(1)),
                Outcome::Duplicate => appended.duplicates += 1,
                Outcome::Pending => unreachable!("the loop ends only once every record is answered"),
            }
        }
        if appended.duplicates > 0 {
            self.shared.duplicates.fetch_add(appended.duplicates as u64, Ordering::Relaxed);
            metrics::counter!("sluice_journal_duplicates_total").increment(appended.duplicates as u64);
        }
        Ok(appended)
    }

    fn id(&self) -> &str {
        &self.shared.id
    }

    fn hold(&self, name: &str) {
        let first = self.shared.first_offset();
        lock(&self.shared.consumers).insert(name.to_owned(), Place { offset: first, known: false });
    }

    fn reader(&self, name: &str, from: u64) -> Result<Box<dyn JournalReader>, JournalError> {
        let first = self.shared.first_offset();
        if from < first {
            return Err(JournalError::OffsetGone { requested: from, first });
        }
        lock(&self.shared.consumers).insert(name.to_owned(), Place { offset: from, known: true });
        Ok(Box::new(reader::JetStreamReader::new(Arc::clone(&self.shared), from)))
    }

    fn commit(&self, name: &str, offset: u64) {
        lock(&self.shared.consumers).insert(name.to_owned(), Place { offset, known: true });
    }

    fn shared(&self) -> bool {
        true
    }

    fn stats(&self) -> JournalStats {
        let shared = &self.shared;
        let consumers = lock(&shared.consumers)
            .iter()
            .filter(|(_, place)| place.known)
            .map(|(name, place)| (name.clone(), place.offset))
            .collect();
        let connection = match shared.client.connection_state() {
            async_nats::connection::State::Connected => "connected",
            async_nats::connection::State::Disconnected => "disconnected",
            async_nats::connection::State::Pending => "pending",
        };
        JournalStats {
            first_offset: shared.first_offset(),
            next_offset: shared.next_offset(),
            disk_bytes: shared.bytes.load(Ordering::Acquire),
            segments: 1,
            consumers,
            poisoned: false,
            connection: Some(connection.to_owned()),
            write_error: None,
            // The server keeps the ids of its duplicate window itself.
            dedup_ids: 0,
            dedup_window_secs: shared.dedup_window_secs,
            duplicates: shared.duplicates.load(Ordering::Relaxed),
            unavailable: shared.unavailable(),
        }
    }
}

/// Whether publishing the record again may succeed: everything but a refusal of the stream
/// itself (full, say) or of the message (too large).
fn retryable(error: &jetstream::context::PublishError) -> bool {
    match error.kind() {
        PublishErrorKind::TimedOut
        | PublishErrorKind::StreamNotFound
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => true,
        PublishErrorKind::MaxPayloadExceeded
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence => false,
        // An error the stream answered: 503 (no leader yet, say) passes, others are final.
        PublishErrorKind::Other => std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_none_or(|answer| answer.code() == 503),
    }
}

/// A publish error in words an operator can act on.
fn describe(error: &jetstream::context::PublishError) -> String {
    match error.kind() {
        PublishErrorKind::TimedOut => "no acknowledgement in time".to_owned(),
        PublishErrorKind::StreamNotFound => {
            "no responders: the stream has no leader (an election in progress?) or does not exist".to_owned()
        }
        PublishErrorKind::BrokenPipe => "the connection to NATS was lost".to_owned(),
        _ => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

/// The error of an append whose deadline passed with records unacknowledged.
fn unavailable(shared: &Shared, outcomes: &[Outcome], last_error: &str) -> JournalError {
    let missing = outcomes.iter().filter(|o| matches!(o, Outcome::Pending)).count();
    let state = match shared.client.connection_state() {
        async_nats::connection::State::Connected => "connected",
        _ => "not connected",
    };
    JournalError::Unavailable(format!(
        "NATS JetStream did not acknowledge {missing} of the {} records of this batch within {} ms (last error: {last_error}; the connection is {state}); check that the NATS servers are reachable and that stream {} has a leader (`nats stream info {}`). Records it did store are deduplicated when the sender retries",
        outcomes.len(),
        shared.publish_timeout.as_millis(),
        shared.stream,
        shared.stream,
    ))
}

/// Locks the consumers' map; its critical sections only copy plain values.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
