/*!
Stream outputs (`[[outputs]]`): consumers of the journal that forward every record to a broker,
Kafka ([`kafka`]) or NATS ([`nats`]), at least once.

Each output is a named consumer of the journal (`output:<name>`) like the store loader and the
lake writer: it reads a batch, sends every record of it, waits until the broker acknowledged each
one, and only then saves its offset to `<data-dir>/output-<name>.json` (atomically, at most once
a second and when stopping) and commits it to the journal. A crash re-sends what was sent but
not saved; nothing acknowledged by the broker is skipped. Every message carries the journal's id
and the record's offset (headers `sluice-journal` and `sluice-offset`), so a consumer drops a
re-sent record by that pair.

The message key names the record's person: a Split impression's `key`, a Segment event's
`userId`, else its `anonymousId`. Kafka partitions by it with the Java client's partitioner
(`murmur2_random`), and NATS subjects carry the partition [`partition_of`] computes the same way,
so one person's records stay in order in one partition.

A broker that is down never blocks ingest: the output retries with backoff, shows the failure in
`/readyz` and `/metrics`, and its lag grows until it passes the output's `max_lag_records` (by
default `backpressure.max_consumer_lag`), where ingest pushes back as for any consumer; with
`max_lag_records = "unbounded"` it never does, and what the output has not sent stays in the
journal, which then pushes back only once it is full (`journal.max_bytes`).
*/

pub mod kafka;
pub mod nats;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio_util::sync::CancellationToken;

use crate::consumers::lease::Leases;
use crate::consumers::{Backoff, ConsumerStatus, NeedsOperator};
use crate::journal::{Entry, Journal, JournalError, JournalReader};
use crate::privacy::Privacy;
use crate::record::RecordKind;
use crate::record::json::string_members;

/// What an output's consumer name in the journal starts with; its name follows.
pub const CONSUMER_PREFIX: &str = "output:";

/// Most records one batch sends before its offset may be saved.
const READ_BATCH: usize = 10_000;
/// How long a read waits for new records before the output saves its offset.
const IDLE: Duration = Duration::from_millis(100);
/// How long a stopping output waits for more records before it saves its offset and returns.
const SHUTDOWN_IDLE: Duration = Duration::from_millis(20);
/// Least time between two checkpoint saves while records flow.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The most partitions a NATS output may spread a kind over (each one is a subject kept rendered).
pub const MAX_PARTITIONS: u32 = 4096;
/// The longest output name: it is part of a file name and of a metric label.
const MAX_NAME: usize = 64;

/// Which broker an output sends to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputType {
    /// A Kafka cluster (or anything speaking its protocol), through librdkafka.
    Kafka,
    /// A NATS server: plain subjects, or a JetStream stream of the user's.
    Nats,
}

/// How far an output may lag behind the journal before ingest pushes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagLimit {
    /// At most this many records.
    Records(u64),
    /// No limit: the output never makes ingest push back (the journal's size still does).
    Unbounded,
}

impl Serialize for LagLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LagLimit::Records(n) => s.serialize_u64(*n),
            LagLimit::Unbounded => s.serialize_str("unbounded"),
        }
    }
}

impl<'de> Deserialize<'de> for LagLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Records(u64),
            Word(String),
        }
        match Written::deserialize(d) {
            Ok(Written::Records(n)) => Ok(LagLimit::Records(n)),
            Ok(Written::Word(w)) if w == "unbounded" => Ok(LagLimit::Unbounded),
            _ => Err(serde::de::Error::custom("max_lag_records must be a number of records or \"unbounded\"")),
        }
    }
}

/// One `[[outputs]]` entry as written. The settings of the other type than `type` must be left
/// out; [`OutputConfig::resolve`] checks them all.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// The output's name: letters, digits, `-` and `_`; its consumer in the journal is
    /// `output:<name>`, its checkpoint `<data-dir>/output-<name>.json`.
    pub name: String,
    /// `kafka` or `nats`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<OutputType>,
    /// Most records the output may lag before ingest pushes back, or `"unbounded"`; unset:
    /// `backpressure.max_consumer_lag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_records: Option<LagLimit>,
    /// Kafka: the bootstrap servers, `host:port[,host:port…]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// Kafka: the topic of each record, `{kind}` standing for `impression` or `event`; unset:
    /// `sluice.{kind}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Kafka: librdkafka settings passed through as they are (`security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `ssl.ca.location`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// NATS: the server URL(s), comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// NATS: the subject of each record, `{kind}` standing for `impression` or `event` and
    /// `{partition}` for the partition of its key; unset: `sluice.out.{kind}.{partition}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// NATS: how many partitions the keys are spread over; unset: 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// NATS: publish to a JetStream stream (which must exist and take the subjects) and wait
    /// for its acknowledgement, rather than plain publishes; unset: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<bool>,
}

/// Why an `[[outputs]]` entry is refused at start-up.
#[derive(Debug, thiserror::Error)]
#[error("outputs[{index}] ({name:?}): {problem}")]
pub struct OutputConfigError {
    /// The entry's position in the file, from 0.
    pub index: usize,
    /// Its name as written.
    pub name: String,
    /// What is wrong and what to do.
    pub problem: String,
}

/// An output, resolved and checked.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    /// Its name.
    pub name: String,
    /// Most records it may lag before ingest pushes back; `None`: no limit.
    pub max_lag: Option<u64>,
    /// Where it sends.
    pub sink: SinkSettings,
}

/// The broker an output sends to, with its settings.
#[derive(Debug, Clone)]
pub enum SinkSettings {
    /// Kafka.
    Kafka(kafka::KafkaSettings),
    /// NATS.
    Nats(nats::NatsSettings),
}

impl OutputSettings {
    /// The output's consumer name in the journal.
    pub fn consumer(&self) -> String {
        consumer_name(&self.name)
    }

    /// The output's lease (and key of its kept offset) in a cluster: `output.<name>`, since a
    /// key-value key may not hold the consumer name's `:`.
    pub fn lease(&self) -> String {
        format!("output.{}", self.name)
    }
}

/// The journal consumer name of the output called `name`.
pub fn consumer_name(name: &str) -> String {
    format!("{CONSUMER_PREFIX}{name}")
}

impl OutputConfig {
    /// Checks the entry at `index` and resolves it; `default_lag` is
    /// `backpressure.max_consumer_lag`.
    pub fn resolve(&self, index: usize, default_lag: u64) -> Result<OutputSettings, OutputConfigError> {
        let fail = |problem: String| OutputConfigError { index, name: self.name.clone(), problem };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(fail(format!(
                "name must be 1 to {MAX_NAME} letters, digits, '-' or '_' (it names the output's checkpoint file and metrics)"
            )));
        }
        let Some(kind) = self.kind else {
            return Err(fail("type is missing: set type = \"kafka\" or type = \"nats\"".into()));
        };
        let kafka_fields = [
            ("brokers", self.brokers.is_some()),
            ("topic", self.topic.is_some()),
            ("options", !self.options.is_empty()),
        ];
        let nats_fields = [
            ("url", self.url.is_some()),
            ("subject", self.subject.is_some()),
            ("partitions", self.partitions.is_some()),
            ("jetstream", self.jetstream.is_some()),
        ];
        let (foreign, type_name, other_name) = match kind {
            OutputType::Kafka => (&nats_fields[..], "kafka", "nats"),
            OutputType::Nats => (&kafka_fields[..], "nats", "kafka"),
        };
        if let Some((field, _)) = foreign.iter().find(|(_, set)| *set) {
            return Err(fail(format!(
                "{field} is a setting of type = \"{other_name}\", not of type = \"{type_name}\"; remove it (or change type)"
            )));
        }
        let sink = match kind {
            OutputType::Kafka => SinkSettings::Kafka(kafka::KafkaSettings::resolve(self).map_err(fail)?),
            OutputType::Nats => SinkSettings::Nats(nats::NatsSettings::resolve(self).map_err(fail)?),
        };
        let max_lag = match self.max_lag_records {
            None => Some(default_lag),
            Some(LagLimit::Records(n)) => Some(n),
            Some(LagLimit::Unbounded) => None,
        };
        Ok(OutputSettings { name: self.name.clone(), max_lag, sink })
    }
}

/// Resolves every `[[outputs]]` entry, refusing two of one name.
pub fn resolve_all(outputs: &[OutputConfig], default_lag: u64) -> Result<Vec<OutputSettings>, OutputConfigError> {
    let mut resolved: Vec<OutputSettings> = Vec::with_capacity(outputs.len());
    for (index, output) in outputs.iter().enumerate() {
        let settings = output.resolve(index, default_lag)?;
        if resolved.iter().any(|o| o.name == settings.name) {
            return Err(OutputConfigError {
                index,
                name: output.name.clone(),
                problem: "another output has the same name; give each its own (it names its offset)".into(),
            });
        }
        resolved.push(settings);
    }
    Ok(resolved)
}

/// The name a record kind has in topics, subjects and the `sluice-kind` header.
pub fn kind_label(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::SplitImpression => "impression",
        RecordKind::SegmentEvent => "event",
    }
}

/// `template` with each `{name}` replaced by its value in `values`; an error names a placeholder
/// that is not one of them, or a brace left open.
pub(crate) fn render(template: &str, values: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        out.push_str(&rest[..open]);
        if rest[open..].starts_with('}') {
            return Err(format!("{template:?} has a '}}' without its '{{'"));
        }
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            return Err(format!("{template:?} has a '{{' without its '}}'"));
        };
        let name = &rest[open + 1..close];
        let Some((_, value)) = values.iter().find(|(n, _)| *n == name) else {
            let known: Vec<String> = values.iter().map(|(n, _)| format!("{{{n}}}")).collect();
            return Err(format!("{template:?} names {{{name}}}, which is not one of {}", known.join(", ")));
        };
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The key of a record: whom it is about. A Split impression's `key`; a Segment event's
/// `userId`, else its `anonymousId` (an empty one counts as missing). `None` for a record that
/// names nobody (it goes to a partition of the broker's choosing, or NATS's partition 0).
pub fn record_key(kind: RecordKind, payload: &[u8]) -> Option<String> {
    let json = std::str::from_utf8(payload).ok()?;
    let keys: &[&str] = match kind {
        RecordKind::SplitImpression => &["key"],
        RecordKind::SegmentEvent => &["userId", "anonymousId"],
    };
    string_members(json, keys).into_iter().flatten().find(|k| !k.is_empty()).map(Cow::into_owned)
}

/// Kafka's `Utils.murmur2` (the Java client's, which librdkafka's `murmur2_random` partitioner
/// matches): MurmurHash2, 32 bits, seed `0x9747b28c`, as a signed Java int.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(first) = tail.first() {
        h ^= u32::from(*first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions`: Kafka's default partitioner,
/// `toPositive(murmur2(key)) % partitions` (`toPositive` clears the sign bit).
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) as u32 & 0x7fff_ffff) % partitions.max(1)
}

/// One record on its way to a broker.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its journal offset (the `sluice-offset` header).
    pub offset: u64,
    /// What it is.
    pub kind: RecordKind,
    /// Whom it is about ([`record_key`]).
    pub key: Option<String>,
    /// The record as journaled.
    pub payload: Bytes,
}

impl Message {
    /// The message of a journal entry.
    pub fn of(entry: &Entry) -> Message {
        Message {
            offset: entry.offset,
            kind: entry.kind,
            key: record_key(entry.kind, &entry.payload),
            payload: entry.payload.clone(),
        }
    }
}

/// What a failed send left undelivered.
#[derive(Debug)]
pub struct SendFailure {
    /// The positions (in the batch sent) of the messages the broker did not acknowledge, in order.
    pub failed: Vec<usize>,
    /// Why, for the log and `/readyz`.
    pub error: String,
    /// The connection cannot be used again: the output starts over with a new one.
    pub fatal: bool,
}

/// A connection to a broker.
#[async_trait]
pub trait Sink: Send {
    /// Sends `messages` in order and returns once the broker acknowledged every one of them;
    /// on failure, which ones it did not.
    async fn send(&mut self, messages: &[Message]) -> Result<(), SendFailure>;
}

/// What the output keeps in `<data-dir>/output-<name>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    /// The journal the offset is in.
    journal: String,
    /// Every record below it was acknowledged by the broker.
    offset: u64,
}

/// An output registered with the journal, ready to [`run`](Output::run).
pub struct Output {
    settings: OutputSettings,
    consumer: String,
    journal: Arc<dyn Journal>,
    reader: Box<dyn JournalReader>,
    checkpoint_path: PathBuf,
    committed: u64,
    privacy: Option<Arc<Privacy>>,
    /// In a cluster: where the offset is kept for every node too.
    shared: Option<Leases>,
}

/// Where the output called `name` keeps its offset in `data_dir`.
pub fn checkpoint_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(format!("output-{name}.json"))
}

impl Output {
    /// Reads the output's checkpoint in `data_dir` and registers it with the journal there, so
    /// that retention keeps what it has not sent; a new output starts at the oldest record the
    /// journal holds. Call before the server accepts traffic.
    pub fn register(journal: Arc<dyn Journal>, settings: OutputSettings, data_dir: &Path) -> anyhow::Result<Output> {
        Output::register_with(journal, settings, data_dir, None)
    }

    /// [`Output::register`] on a node of a cluster, once it holds the output's lease: the offset
    /// the last node to run the output kept in `leases` wins over this node's own checkpoint,
    /// which is older (or missing) whenever another node ran the output since.
    pub async fn register_shared(
        journal: Arc<dyn Journal>,
        settings: OutputSettings,
        data_dir: &Path,
        leases: Leases,
    ) -> anyhow::Result<Output> {
        let kept = leases.offset(&settings.lease()).await?;
        let mut output = Output::register_with(journal.clone(), settings, data_dir, kept)?;
        output.shared = Some(leases);
        Ok(output)
    }

    fn register_with(
        journal: Arc<dyn Journal>,
        settings: OutputSettings,
        data_dir: &Path,
        kept: Option<(String, u64)>,
    ) -> anyhow::Result<Output> {
        let consumer = settings.consumer();
        let checkpoint_path = checkpoint_path(data_dir, &settings.name);
        let stats = journal.stats();
        let local = read_checkpoint(&checkpoint_path)?;
        let shared = kept
            .filter(|(id, offset)| {
                id == journal.id() && local.as_ref().is_none_or(|c| c.journal != journal.id() || c.offset < *offset)
            })
            .map(|(journal, offset)| Checkpoint { journal, offset });
        if let Some(c) = &shared {
            // The stream's end as this node last saw it may lag behind another node's sends.
            tracing::info!(
                output = settings.name,
                offset = c.offset,
                "output: resuming where the last node to run it kept its offset"
            );
            let (reader, committed) =
                (journal.reader(&consumer, c.offset).context("output: opening the journal")?, c.offset);
            return Ok(Output {
                settings,
                consumer,
                journal,
                reader,
                checkpoint_path,
                committed,
                privacy: None,
                shared: None,
            });
        }
        let from = match local {
            Some(c) if c.journal != journal.id() => {
                // Consumers tell records apart by (journal, offset): this journal's offsets are
                // new pairs, so sending it from its start duplicates nothing they keep.
                tracing::warn!(
                    output = settings.name,
                    old = c.journal,
                    new = journal.id(),
                    "the output's checkpoint belongs to another journal; sending this one from its oldest record"
                );
                stats.first_offset
            }
            Some(c) if c.offset > stats.next_offset => {
                return Err(NeedsOperator(format!(
                    "output {:?} will not start: its checkpoint {} is at offset {}, past the end of this journal (offset {}): the data directory is an older copy of the one the output sent from, and its new records would take (journal, offset) pairs the broker's consumers already hold. Start sluice with the newest copy of the data directory, or delete the checkpoint to send this journal from its oldest record (consumers that drop repeated pairs will drop the new records at those offsets)",
                    settings.name,
                    checkpoint_path.display(),
                    c.offset,
                    stats.next_offset
                ))
                .into());
            }
            Some(c) => c.offset,
            None => stats.first_offset,
        };
        let (reader, committed) = match journal.reader(&consumer, from) {
            Ok(reader) => (reader, from),
            Err(JournalError::OffsetGone { first, .. }) => {
                tracing::warn!(
                    output = settings.name,
                    from,
                    first,
                    "the journal deleted records before the output sent them (was it removed from the configuration for a while?); they are not sent"
                );
                let reader = journal.reader(&consumer, first).context("output: opening the journal")?;
                (reader, first)
            }
            Err(e) => return Err(e).context("output: opening the journal"),
        };
        Ok(Output { settings, consumer, journal, reader, checkpoint_path, committed, privacy: None, shared: None })
    }

    /// Leaves out the records the erasure ledger of `privacy` names.
    pub fn with_privacy(mut self, privacy: Arc<Privacy>) -> Output {
        self.privacy = Some(privacy);
        self
    }

    /// Forwards the journal until `shutdown` is cancelled, then what the journal already holds,
    /// and returns.
    pub async fn run(self, shutdown: CancellationToken, status: Arc<ConsumerStatus>) -> anyhow::Result<()> {
        let Output { settings, consumer, journal, mut reader, checkpoint_path, committed, privacy, shared } = self;
        status.committed(committed);
        let name = settings.name.clone();
        let journal_id: Arc<str> = journal.id().into();
        let mut sink: Box<dyn Sink> = match &settings.sink {
            SinkSettings::Kafka(settings) => Box::new(kafka::KafkaSink::new(settings, journal_id, status.clone())?),
            SinkSettings::Nats(settings) => {
                let sink = until_connected(&name, &status, &shutdown, committed, || {
                    nats::NatsSink::connect(settings, journal_id.clone())
                })
                .await?;
                Box::new(sink)
            }
        };
        tracing::info!(output = name, offset = committed, "output started");
        let shared = shared.map(|leases| (leases, settings.lease()));
        let mut saved = Saved { journal, consumer, path: checkpoint_path, committed, shared };
        let privacy = privacy.as_deref();
        let mut next = committed;
        let mut last_save = Instant::now();
        let mut ahead = read(reader.as_mut(), privacy, &name, next, &shutdown).await?;
        loop {
            let Some(Batch { end, messages, read }) = ahead else {
                saved.save(next, &status).await?;
                if shutdown.is_cancelled() {
                    tracing::info!(output = name, offset = next, "output caught up; stopping");
                    return Ok(());
                }
                ahead = self::read(reader.as_mut(), privacy, &name, next, &shutdown).await?;
                continue;
            };
            // The next batch is read and its keys found while this one's acknowledgements come in.
            let (delivered, read_ahead) = tokio::join!(
                deliver(sink.as_mut(), messages, &name, &status, &shutdown, saved.committed),
                self::read(reader.as_mut(), privacy, &name, end, &shutdown),
            );
            delivered?;
            next = end;
            metrics::counter!("sluice_output_records_total", "output" => name.clone()).increment(read as u64);
            if last_save.elapsed() >= CHECKPOINT_EVERY {
                saved.save(next, &status).await?;
                last_save = Instant::now();
            }
            ahead = read_ahead?;
        }
    }
}

/// A batch read from the journal, ready to send.
struct Batch {
    /// One past its last offset.
    end: u64,
    /// Its records, less those an erasure names.
    messages: Vec<Message>,
    /// How many entries were read.
    read: usize,
}

/// Reads the entries after `after` (waiting up to [`IDLE`], or [`SHUTDOWN_IDLE`] once
/// `shutdown` came) and makes their messages; `None` when nothing new came.
async fn read(
    reader: &mut dyn JournalReader,
    privacy: Option<&Privacy>,
    name: &str,
    after: u64,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Batch>> {
    let idle = if shutdown.is_cancelled() { SHUTDOWN_IDLE } else { IDLE };
    let batch = reader
        .next_batch(READ_BATCH, idle)
        .await
        .with_context(|| format!("output {name}: reading the journal after offset {after}"))?;
    let Some(last) = batch.last() else { return Ok(None) };
    let end = last.offset + 1;
    let messages = batch.iter().filter(|e| !privacy.is_some_and(|p| p.erased(e))).map(Message::of).collect();
    Ok(Some(Batch { end, messages, read: batch.len() }))
}

/// Where an output's offset is kept, and the offset last kept there.
struct Saved {
    journal: Arc<dyn Journal>,
    consumer: String,
    path: PathBuf,
    committed: u64,
    /// In a cluster: the leases' offset store and the output's key in it.
    shared: Option<(Leases, String)>,
}

impl Saved {
    /// Saves `offset` as the output's checkpoint and only then commits it to the journal, which
    /// may then delete what lies below.
    async fn save(&mut self, offset: u64, status: &ConsumerStatus) -> anyhow::Result<()> {
        if offset <= self.committed {
            return Ok(());
        }
        let checkpoint = Checkpoint { journal: self.journal.id().to_owned(), offset };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_checkpoint(&path, &checkpoint))
            .await
            .context("an output's checkpoint task panicked")??;
        if let Some((leases, key)) = &self.shared {
            leases.save_offset(key, self.journal.id(), offset).await?;
        }
        self.journal.commit(&self.consumer, offset);
        self.committed = offset;
        status.committed(offset);
        Ok(())
    }
}

/// Sends `messages` until the broker acknowledged every one, resending only what it did not,
/// with backoff. Gives up when shutdown comes while the broker fails, or when the connection is
/// broken for good (the supervisor then starts the output again from its checkpoint).
async fn deliver(
    sink: &mut dyn Sink,
    mut messages: Vec<Message>,
    name: &str,
    status: &ConsumerStatus,
    shutdown: &CancellationToken,
    committed: u64,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::default();
    loop {
        match sink.send(&messages).await {
            Ok(()) => {
                if status.recovered() {
                    tracing::info!(output = name, "output reached its broker again; catching up");
                }
                return Ok(());
            }
            Err(failure) => {
                if status.failing(&failure.error) {
                    tracing::error!(
                        output = name,
                        error = failure.error,
                        undelivered = failure.failed.len(),
                        "output: the broker did not acknowledge records; resending them with backoff (ingest goes on)"
                    );
                }
                anyhow::ensure!(
                    !failure.fatal,
                    "output {name}: the connection to the broker failed for good ({}); starting over from offset {committed}",
                    failure.error
                );
                let mut failed = failure.failed.into_iter().peekable();
                let mut position = 0;
                messages.retain(|_| {
                    let keep = failed.next_if_eq(&position).is_some();
                    position += 1;
                    keep
                });
                if !backoff.sleep(shutdown).await {
                    anyhow::bail!(
                        "output {name} stopped while its broker was failing ({}); records from offset {committed} stay in the journal and are sent on the next start",
                        failure.error
                    );
                }
            }
        }
    }
}

/// Connects with `connect` until it succeeds, with backoff, showing the failure in `status`.
async fn until_connected<T, F, Fut>(
    name: &str,
    status: &ConsumerStatus,
    shutdown: &CancellationToken,
    committed: u64,
    mut connect: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut backoff = Backoff::default();
    loop {
        match connect().await {
            Ok(sink) => return Ok(sink),
            Err(error) => {
                if status.failing(&error) {
                    tracing::error!(
                        output = name,
                        error,
                        "output cannot reach its broker; retrying with backoff (ingest goes on)"
                    );
                }
                if !backoff.sleep(shutdown).await {
                    anyhow::bail!(
                        "output {name} stopped before its broker could be reached ({error}); records from offset {committed} stay in the journal and are sent on the next start"
                    );
                }
            }
        }
    }
}

fn read_checkpoint(path: &Path) -> anyhow::Result<Option<Checkpoint>> {
    let Some(bytes) = crate::files::read_if_exists(path)
        .with_context(|| format!("cannot read the output checkpoint {}", path.display()))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        NeedsOperator(format!(
            "the output checkpoint {} is damaged ({e}); delete it to send the journal again from its oldest record",
            path.display()
        ))
        .into()
    })
}

fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> anyhow::Result<()> {
    crate::files::replace(path, &serde_json::to_vec(checkpoint)?)
        .with_context(|| format!("cannot save the output checkpoint {}; check the data directory", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_java_utils_murmur2() {
        // Kafka's own test vectors (clients' UtilsTest.testMurmur2).
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(murmur2(data), expected, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn partition_is_the_positive_hash_modulo_the_count() {
        // murmur2("21") is negative: toPositive clears the sign bit rather than negating.
        let expected = (-973_932_308_i32 as u32 & 0x7fff_ffff) % 7;
        assert_eq!(partition_of(b"21", 7), expected);
        assert_eq!(partition_of(b"abc", 16), 479_470_107 % 16);
    }

    #[test]
    fn the_key_is_the_impression_key_or_the_user_id_else_the_anonymous_id() {
        let impression = br#"{"key":"u1","split":"f","treatment":"on"}"#;
        assert_eq!(record_key(RecordKind::SplitImpression, impression).as_deref(), Some("u1"));
        let both = br#"{"anonymousId":"a1","userId":"u2","type":"track"}"#;
        assert_eq!(record_key(RecordKind::SegmentEvent, both).as_deref(), Some("u2"));
        let anonymous = br#"{"anonymousId":"a1","userId":null}"#;
        assert_eq!(record_key(RecordKind::SegmentEvent, anonymous).as_deref(), Some("a1"));
        let empty_user = br#"{"anonymousId":"a1","userId":""}"#;
        assert_eq!(record_key(RecordKind::SegmentEvent, empty_user).as_deref(), Some("a1"));
        assert_eq!(record_key(RecordKind::SegmentEvent, br#"{"type":"track"}"#), None);
    }

    #[test]
    fn templates_replace_their_placeholders_and_name_unknown_ones() {
        let values = [("kind", "event"), ("partition", "7")];
        assert_eq!(render("sluice.out.{kind}.{partition}", &values).unwrap(), "sluice.out.event.7");
        assert!(render("x.{kidn}", &values).unwrap_err().contains("{kidn}"));
        assert!(render("x.{kind", &values).unwrap_err().contains("without its"));
        assert!(render("x.kind}", &values).unwrap_err().contains("without its"));
    }

    fn entry(name: &str, kind: OutputType) -> OutputConfig {
        OutputConfig { name: name.into(), kind: Some(kind), ..OutputConfig::default() }
    }

    #[test]
    fn bad_entries_are_refused_naming_the_entry_and_the_field() {
        let kafka = OutputConfig { brokers: Some("localhost:9092".into()), ..entry("k", OutputType::Kafka) };
        let nats = OutputConfig { url: Some("nats://localhost:4222".into()), ..entry("n", OutputType::Nats) };
        assert!(resolve_all(&[kafka.clone(), nats.clone()], 10).is_ok());
        let cases: Vec<(OutputConfig, &str)> = vec![
            (OutputConfig { kind: None, ..kafka.clone() }, "type is missing"),
            (OutputConfig { name: "a b".into(), ..kafka.clone() }, "name must be"),
            (OutputConfig { brokers: None, ..kafka.clone() }, "brokers"),
            (OutputConfig { subject: Some("x".into()), ..kafka.clone() }, "subject is a setting of type = \"nats\""),
            (OutputConfig { topic: Some("bad topic {kind}".into()), ..kafka.clone() }, "topic"),
            (OutputConfig { topic: Some("t.{knd}".into()), ..kafka.clone() }, "{knd}"),
            (OutputConfig { brokers: Some("x:1".into()), ..nats.clone() }, "brokers is a setting of type = \"kafka\""),
            (OutputConfig { url: None, ..nats.clone() }, "url"),
            (OutputConfig { partitions: Some(0), ..nats.clone() }, "partitions"),
            (OutputConfig { subject: Some("a.{kind}".into()), ..nats.clone() }, "{partition}"),
            (OutputConfig { subject: Some("a.*.{kind}.{partition}".into()), ..nats.clone() }, "subject"),
        ];
        for (config, wanted) in cases {
            let error = resolve_all(std::slice::from_ref(&config), 10).expect_err(wanted).to_string();
            assert!(error.starts_with(&format!("outputs[0] ({:?}): ", config.name)), "{error}");
            assert!(error.contains(wanted), "{wanted}: {error}");
        }
        let twice = resolve_all(&[kafka.clone(), kafka], 10).unwrap_err().to_string();
        assert!(twice.starts_with("outputs[1] (\"k\")") && twice.contains("same name"), "{twice}");
    }

    #[test]
    fn the_lag_limit_defaults_to_the_backpressure_one_and_may_be_unbounded() {
        let nats = OutputConfig { url: Some("nats://localhost:4222".into()), ..entry("n", OutputType::Nats) };
        assert_eq!(nats.resolve(0, 10).unwrap().max_lag, Some(10));
        let own = OutputConfig { max_lag_records: Some(LagLimit::Records(5)), ..nats.clone() };
        assert_eq!(own.resolve(0, 10).unwrap().max_lag, Some(5));
        let unbounded = OutputConfig { max_lag_records: Some(LagLimit::Unbounded), ..nats };
        assert_eq!(unbounded.resolve(0, 10).unwrap().max_lag, None);
    }
}
