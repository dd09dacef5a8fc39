/*!
The Kafka output: an idempotent librdkafka producer (`enable.idempotence=true`, `acks=all`) with
the Java client's partitioner (`murmur2_random`), one topic per record kind.

A batch is queued whole (librdkafka batches and pipelines it per partition) and then every
delivery report is awaited; the idempotent producer keeps each partition in order through its
own retries, so one person's records reach their partition in journal order. A broker that is
down is retried by librdkafka until `message.timeout.ms` (30 s here unless `options` says
otherwise); what it then reports undelivered the output sends again, with backoff.
*/

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};

use super::{Message, OutputConfig, SendFailure, Sink, kind_label, render};
use crate::consumers::ConsumerStatus;
use crate::record::RecordKind;

/// The topic template when none is given.
pub const DEFAULT_TOPIC: &str = "sluice.{kind}";

/// The settings sluice sets, which `options` may not change: they are what makes delivery
/// at-least-once, ordered per key, and partitioned as Java clients expect.
const FIXED: [(&str, &str); 4] =
    [("enable.idempotence", "true"), ("acks", "all"), ("partitioner", "murmur2_random"), ("bootstrap.servers", "")];

/// A Kafka output's settings, checked.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// The topic of each kind, rendered.
    pub topics: BTreeMap<&'static str, String>,
    /// librdkafka settings passed through.
    pub options: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// Checks an `[[outputs]]` entry of type kafka; the error says what is wrong.
    pub(crate) fn resolve(config: &OutputConfig) -> Result<KafkaSettings, String> {
        let brokers = config.brokers.clone().filter(|b| !b.trim().is_empty()).ok_or_else(|| {
            "brokers is required for type = \"kafka\": the bootstrap servers, as \"host:port,host:port\"".to_owned()
        })?;
        let template = config.topic.as_deref().unwrap_or(DEFAULT_TOPIC);
        let mut topics = BTreeMap::new();
        for kind in RecordKind::ALL {
            let label = kind_label(kind);
            let topic = render(template, &[("kind", label)]).map_err(|e| format!("topic {e}"))?;
            let legal = topic.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if topic.is_empty() || topic.len() > 249 || !legal || topic == "." || topic == ".." {
                return Err(format!(
                    "topic {template:?} gives {topic:?} for {label}s, which is not a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-'"
                ));
            }
            topics.insert(label, topic);
        }
        if let Some((key, _)) = FIXED.iter().find(|(key, _)| config.options.contains_key(*key)) {
            return Err(format!(
                "options.{key:?} is set by sluice (enable.idempotence=true, acks=all, partitioner=murmur2_random, bootstrap.servers from brokers) and may not be changed; remove it"
            ));
        }
        Ok(KafkaSettings { brokers, topics, options: config.options.clone() })
    }

    /// The producer's librdkafka configuration.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        // Delivery failures surface within 30 s, to show in /readyz and be sent again; the
        // user's options may say otherwise.
        config.set("message.timeout.ms", "30000");
        config.set("linger.ms", "5");
        for (key, value) in &self.options {
            config.set(key, value);
        }
        for (key, value) in FIXED {
            config.set(key, value);
        }
        config.set("bootstrap.servers", &self.brokers);
        config
    }
}

/// Shows what librdkafka reports outside deliveries (every broker down, authentication failing)
/// in the output's status while it retries on its own.
struct Context {
    status: Arc<ConsumerStatus>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        let serious = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::Fatal
            )
        );
        if serious {
            if self.status.failing(&format!("kafka: {error}: {reason}")) {
                tracing::error!(error = %error, reason, "kafka output: the cluster cannot be reached; librdkafka keeps retrying");
            }
        } else {
            tracing::warn!(error = %error, reason, "kafka output: librdkafka reported a problem");
        }
    }
}

/// A producer sending an output's records.
pub struct KafkaSink {
    producer: FutureProducer<Context>,
    topics: [String; 2],
    journal: Arc<str>,
}

impl KafkaSink {
    /// A producer for `settings`; messages carry `journal` (the journal's id) in their headers.
    pub fn new(settings: &KafkaSettings, journal: Arc<str>, status: Arc<ConsumerStatus>) -> anyhow::Result<KafkaSink> {
        let producer = settings
            .client_config()
            .create_with_context(Context { status })
            .map_err(|e| anyhow::anyhow!("cannot create the Kafka producer ({e}); check the output's options"))?;
        let topic = |kind| settings.topics.get(kind_label(kind)).cloned().unwrap_or_default();
        Ok(KafkaSink {
            topics: [topic(RecordKind::SplitImpression), topic(RecordKind::SegmentEvent)],
            producer,
            journal,
        })
    }

    fn topic(&self, kind: RecordKind) -> &str {
        match kind {
            RecordKind::SplitImpression => &self.topics[0],
            RecordKind::SegmentEvent => &self.topics[1],
        }
    }
}

/// The headers of a message: what it is and where it is in which journal, so that a consumer
/// can drop a record sent twice by (`sluice-journal`, `sluice-offset`).
pub fn headers(kind: RecordKind, offset: u64, journal: &str) -> OwnedHeaders {
    let offset = offset.to_string();
    OwnedHeaders::new_with_capacity(3)
        .insert(Header { key: "sluice-kind", value: Some(kind_label(kind)) })
        .insert(Header { key: "sluice-offset", value: Some(offset.as_str()) })
        .insert(Header { key: "sluice-journal", value: Some(journal) })
}

/// How long a full local queue waits for deliveries before it is tried again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);

#[async_trait]
impl Sink for KafkaSink {
    async fn send(&mut self, messages: &[Message]) -> Result<(), SendFailure> {
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(messages.len());
        for (at, message) in messages.iter().enumerate() {
            let mut record = FutureRecord::to(self.topic(message.kind)).payload(&message.payload[..]).headers(headers(
                message.kind,
                message.offset,
                &self.journal,
            ));
            if let Some(key) = &message.key {
                record = record.key(key.as_bytes());
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(QUEUE_FULL_WAIT).await;
                    }
                    Err((error, _)) => {
                        // Not queued: neither is anything after it, so that order holds.
                        let mut failed = collect(join_all(pending).await).failed;
                        failed.extend(at..messages.len());
                        let fatal = self.producer.client().fatal_error().is_some();
                        return Err(SendFailure { failed, error: format!("kafka: {error}"), fatal });
                    }
                }
            }
        }
        let outcome = collect(join_all(pending).await);
        match outcome.error {
            None => Ok(()),
            Some(error) => Err(SendFailure {
                failed: outcome.failed,
                error,
                fatal: self.producer.client().fatal_error().is_some(),
            }),
        }
    }
}

/// Which deliveries failed, and the first error.
struct Outcome {
    failed: Vec<usize>,
    error: Option<String>,
}

fn collect<Canceled>(results: Vec<Result<OwnedDeliveryResult, Canceled>>) -> Outcome {
    let mut outcome = Outcome { failed: Vec::new(), error: None };
    for (at, result) in results.into_iter().enumerate() {
        let error = match result {
            Ok(Ok(_)) => continue,
            Ok(Err((error, _))) => format!("kafka: {error}"),
            Err(_) => "kafka: the producer dropped a delivery report".to_owned(),
        };
        outcome.error.get_or_insert(error);
        outcome.failed.push(at);
    }
    outcome
}
