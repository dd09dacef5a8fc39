/*!
The NATS output: each record published on a subject naming its kind and the partition of its key
(`sluice.out.impression.7`), so that a subscriber of one partition sees one person's records in
journal order.

With `jetstream = true` the records go to a JetStream stream of the user's (which must take the
subjects): each publish is acknowledged by the stream, and carries `Nats-Msg-Id` =
`<journal>:<offset>`, so the stream itself drops a record sent again within its duplicate
window. Plain NATS has no acknowledgement: a batch counts as delivered once it was flushed to
the server, and a server that fails meanwhile loses it (plain NATS is at most once; use
JetStream for at least once).
*/

use std::sync::Arc;

use async_nats::jetstream::{self, context::PublishAckFuture};
use async_nats::{HeaderMap, Subject};
use async_trait::async_trait;

use super::{MAX_PARTITIONS, Message, OutputConfig, SendFailure, Sink, kind_label, partition_of, render};
use crate::nats::NatsUrls;
use crate::record::RecordKind;

/// The subject template when none is given.
pub const DEFAULT_SUBJECT: &str = "sluice.out.{kind}.{partition}";
/// Partitions when none are given.
pub const DEFAULT_PARTITIONS: u32 = 16;

/// A NATS output's settings, checked.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// The servers (passwords never shown).
    pub servers: NatsUrls,
    /// How many partitions keys are spread over.
    pub partitions: u32,
    /// Each kind's subjects, one per partition (impressions first).
    pub subjects: [Vec<Subject>; 2],
    /// Publish to JetStream and wait for its acknowledgements.
    pub jetstream: bool,
}

impl NatsSettings {
    /// Checks an `[[outputs]]` entry of type nats; the error says what is wrong.
    pub(crate) fn resolve(config: &OutputConfig) -> Result<NatsSettings, String> {
        let url = config.url.as_deref().filter(|u| !u.trim().is_empty()).ok_or_else(|| {
            "url is required for type = \"nats\": the server, as \"nats://host:4222\" (several comma-separated)"
                .to_owned()
        })?;
        let servers = NatsUrls(url.to_owned());
        servers.addrs()?;
        servers.with_credentials(async_nats::ConnectOptions::new())?;
        let partitions = config.partitions.unwrap_or(DEFAULT_PARTITIONS);
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(format!("partitions ({partitions}) must be from 1 to {MAX_PARTITIONS}"));
        }
        let template = config.subject.as_deref().unwrap_or(DEFAULT_SUBJECT);
        if partitions > 1 && !template.contains("{partition}") {
            return Err(format!(
                "subject {template:?} has no {{partition}}, so all {partitions} partitions would share one subject; add {{partition}} or set partitions = 1"
            ));
        }
        let mut subjects: [Vec<Subject>; 2] = [Vec::new(), Vec::new()];
        for (at, kind) in [RecordKind::SplitImpression, RecordKind::SegmentEvent].into_iter().enumerate() {
            for partition in 0..partitions {
                let number = partition.to_string();
                let subject = render(template, &[("kind", kind_label(kind)), ("partition", &number)])
                    .map_err(|e| format!("subject {e}"))?;
                let legal = !subject.split('.').any(|token| {
                    token.is_empty() || token == "*" || token == ">" || token.contains(|c: char| c.is_whitespace())
                });
                if !legal {
                    return Err(format!(
                        "subject {template:?} gives {subject:?}, which is not a subject to publish on: dot-separated tokens, none empty, no spaces, no wildcards (* or >)"
                    ));
                }
                subjects[at].push(Subject::from(subject));
            }
        }
        Ok(NatsSettings { servers, partitions, subjects, jetstream: config.jetstream.unwrap_or(false) })
    }

    /// The subject of a message.
    pub fn subject(&self, message: &Message) -> &Subject {
        let partition = message.key.as_deref().map_or(0, |key| partition_of(key.as_bytes(), self.partitions));
        let at = match message.kind {
            RecordKind::SplitImpression => 0,
            RecordKind::SegmentEvent => 1,
        };
        &self.subjects[at][partition as usize]
    }
}

/// A connection sending an output's records.
pub struct NatsSink {
    settings: NatsSettings,
    client: async_nats::Client,
    jetstream: Option<jetstream::Context>,
    journal: Arc<str>,
}

impl NatsSink {
    /// Connects to the servers of `settings`; messages carry `journal` (the journal's id).
    pub async fn connect(settings: &NatsSettings, journal: Arc<str>) -> Result<NatsSink, String> {
        let servers = &settings.servers;
        let options = servers.with_credentials(async_nats::ConnectOptions::new().name("sluice output"))?;
        let client = options.connect(servers.addrs()?).await.map_err(|e| {
            servers.redact(&format!(
                "cannot connect to NATS at {servers}: {e}; check that the servers are running and reachable, and the credentials in the url"
            ))
        })?;
        let jetstream = settings.jetstream.then(|| jetstream::new(client.clone()));
        Ok(NatsSink { settings: settings.clone(), client, jetstream, journal })
    }

    fn headers(&self, message: &Message) -> HeaderMap {
        let offset = message.offset.to_string();
        let mut headers = HeaderMap::new();
        headers.insert("sluice-kind", kind_label(message.kind));
        headers.insert("sluice-journal", &*self.journal);
        if self.jetstream.is_some() {
            headers.insert("Nats-Msg-Id", format!("{}:{offset}", self.journal).as_str());
        }
        headers.insert("sluice-offset", offset.as_str());
        headers
    }
}

#[async_trait]
impl Sink for NatsSink {
    async fn send(&mut self, messages: &[Message]) -> Result<(), SendFailure> {
        let all = || (0..messages.len()).collect::<Vec<_>>();
        let Some(jetstream) = &self.jetstream else {
            for message in messages {
                let subject = self.settings.subject(message).clone();
                if let Err(e) =
                    self.client.publish_with_headers(subject, self.headers(message), message.payload.clone()).await
                {
                    return Err(SendFailure { failed: all(), error: format!("nats: publishing: {e}"), fatal: false });
                }
            }
            return self.client.flush().await.map_err(|e| SendFailure {
                failed: all(),
                error: format!("nats: flushing: {e}"),
                fatal: false,
            });
        };
        let mut pending: Vec<PublishAckFuture> = Vec::with_capacity(messages.len());
        for (at, message) in messages.iter().enumerate() {
            let subject = self.settings.subject(message).clone();
            match jetstream.publish_with_headers(subject, self.headers(message), message.payload.clone()).await {
                Ok(ack) => pending.push(ack),
                Err(e) => {
                    // Acknowledgements of what was published are still awaited: they may succeed.
                    let mut failure = acknowledged(pending).await.err().unwrap_or(SendFailure {
                        failed: Vec::new(),
                        error: String::new(),
                        fatal: false,
                    });
                    failure.failed.extend(at..messages.len());
                    failure.error = format!("nats: publishing to JetStream: {e}");
                    return Err(failure);
                }
            }
        }
        acknowledged(pending).await
    }
}

/// Waits for every acknowledgement; a failure lists the positions not acknowledged.
async fn acknowledged(pending: Vec<PublishAckFuture>) -> Result<(), SendFailure> {
    let results = futures_util::future::join_all(pending.into_iter().map(std::future::IntoFuture::into_future)).await;
    let mut failure = SendFailure { failed: Vec::new(), error: String::new(), fatal: false };
    for (at, result) in results.into_iter().enumerate() {
        if let Err(e) = result {
            if failure.failed.is_empty() {
                failure.error = format!("nats: JetStream did not acknowledge: {e}");
            }
            failure.failed.push(at);
        }
    }
    if failure.failed.is_empty() { Ok(()) } else { Err(failure) }
}
