/*!
Reading the stream in order for one consumer: an ordered consumer from the reader's sequence,
its messages decoded back into entries.
*/

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self};
use async_trait::async_trait;
use futures_util::{FutureExt as _, StreamExt as _};

use super::{RECEIVED_AT_HEADER, Shared};
use crate::journal::{Entry, JournalError, JournalReader, MAX_BATCH_BYTES};
use crate::record::RecordKind;

/// How long a reader waits for records the stream is known to hold, whatever its `idle`: they
/// are not "nothing new", only not delivered yet.
const CATCH_UP: Duration = Duration::from_secs(10);

/// How often a reader waiting for records looks whether the connection was re-established.
const RECHECK: Duration = Duration::from_millis(500);

/// Longest wait for one attempt to create the reader's consumer.
const OPEN_ATTEMPT: Duration = Duration::from_secs(2);

/// A consumer's position in a [`JetStreamJournal`](super::JetStreamJournal).
pub(super) struct JetStreamReader {
    shared: Arc<Shared>,
    /// The offset of the next entry to return.
    next: u64,
    /// The ordered consumer's messages, once created (at the first batch, since creating is a
    /// request to the server and [`Journal::reader`](crate::journal::Journal::reader) is not
    /// async), with the client's connection count when it was created.
    messages: Option<(pull::Ordered, u64)>,
    /// Entries taken from `messages` by a batch that was cancelled before returning them: the
    /// next batch starts with them.
    taken: Vec<Entry>,
    /// Their payload bytes.
    taken_bytes: usize,
}

impl JetStreamReader {
    /// A reader whose first entry will be `from`.
    pub fn new(shared: Arc<Shared>, from: u64) -> JetStreamReader {
        JetStreamReader { shared, next: from, messages: None, taken: Vec::new(), taken_bytes: 0 }
    }

    /// The offset the next message must have.
    fn expected(&self) -> u64 {
        self.next + self.taken.len() as u64
    }

    /// Decodes a delivered message into the entry at `offset`, or says why the stream's
    /// sequence is not the one expected.
    fn decode(&self, message: &jetstream::Message) -> Result<Delivered, JournalError> {
        let expected = self.expected();
        let info = message.info().map_err(|e| JournalError::Unreadable {
            offset: expected,
            reason: format!("its delivery information cannot be parsed ({e})"),
        })?;
        let offset = info.stream_sequence.saturating_sub(1);
        if offset < expected {
            return Ok(Delivered::Again);
        }
        if offset > expected {
            // Deleted under the reader (by the stream's age or size limits): records are lost
            // to this consumer, which must not skip them silently.
            return Err(JournalError::OffsetGone { requested: expected, first: offset });
        }
        let unreadable = |reason: String| JournalError::Unreadable { offset, reason };
        let kind = message
            .subject
            .strip_prefix(self.shared.stream.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|name| RecordKind::ALL.into_iter().find(|kind| kind.name() == name))
            .ok_or_else(|| {
                unreadable(format!(
                    "its subject {} names no record kind this sluice knows (a newer sluice, or another program publishing to the stream?)",
                    message.subject
                ))
            })?;
        let received_at_ms = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(RECEIVED_AT_HEADER))
            .and_then(|value| value.as_str().parse::<i64>().ok())
            .ok_or_else(|| unreadable(format!("it has no {RECEIVED_AT_HEADER} header (not published by sluice?)")))?;
        Ok(Delivered::Entry(Entry { offset, kind, received_at_ms, payload: message.payload.clone() }))
    }
}

/// Creates an ordered consumer of the stream from `offset` on, trying again until `deadline`:
/// after a server died, a consumer placed on it (before the cluster knows) never answers, and
/// the next try is placed elsewhere.
async fn open(shared: &Shared, offset: u64, deadline: tokio::time::Instant) -> Result<pull::Ordered, JournalError> {
    let config = pull::OrderedConfig {
        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: offset + 1 },
        ..pull::OrderedConfig::default()
    };
    loop {
        let attempt = deadline.min(tokio::time::Instant::now() + OPEN_ATTEMPT);
        let created = tokio::time::timeout_at(attempt, async {
            let consumer: jetstream::consumer::Consumer<pull::OrderedConfig> =
                shared.api.create_consumer_on_stream(config.clone(), &shared.stream).await?;
            consumer.messages().await.map_err(async_nats::Error::from)
        })
        .await;
        let reason = match created {
            Ok(Ok(messages)) => return Ok(messages),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer in time".to_owned(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(JournalError::Unavailable(format!(
                "cannot read the JetStream stream {} from offset {offset}: {reason}; check that the NATS servers are reachable and that the stream has a leader (`nats stream info {}`)",
                shared.stream, shared.stream
            )));
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + Duration::from_millis(100))).await;
    }
}

/// What one delivered message is to the reader.
enum Delivered {
    /// The next entry.
    Entry(Entry),
    /// One already taken (a re-created consumer delivering again): skipped.
    Again,
}

#[async_trait]
impl JournalReader for JetStreamReader {
    async fn next_batch(&mut self, max: usize, idle: Duration) -> Result<Vec<Entry>, JournalError> {
        if self.shared.closed() {
            return Err(JournalError::Closed);
        }
        let known = self.expected() < self.shared.next_offset();
        let wait = if known { idle.max(CATCH_UP) } else { idle };
        let deadline = tokio::time::Instant::now() + wait;
        while self.taken.len() < max && self.taken_bytes < MAX_BATCH_BYTES {
            // An ordered consumer lives in one server's memory: made before the connection was
            // lost, it may be gone with that server, and the client would only notice after two
            // missed heartbeats (30 s). Make a new one at once instead.
            let connects = self.shared.client.statistics().connects.load(Ordering::Relaxed);
            if self.messages.as_ref().is_some_and(|(_, made)| *made != connects) {
                tracing::debug!(offset = self.expected(), "journal: NATS reconnected; reading on with a new consumer");
                self.messages = None;
            }
            if self.messages.is_none() {
                if !self.taken.is_empty() {
                    break;
                }
                // Opening at least gets the time of one API request, even with no wait asked for.
                let until = deadline.max(tokio::time::Instant::now() + OPEN_ATTEMPT);
                self.messages = Some((open(&self.shared, self.expected(), until).await?, connects));
            }
            let Some((messages, _)) = self.messages.as_mut() else { break };
            // The first entry is waited for (in slices, to look at the connection between
            // them); the rest of the batch is what has arrived already.
            let delivered = if self.taken.is_empty() {
                let slice = deadline.min(tokio::time::Instant::now() + RECHECK);
                match tokio::time::timeout_at(slice, messages.next()).await {
                    Ok(delivered) => delivered,
                    Err(_) if tokio::time::Instant::now() < deadline => continue,
                    Err(_) if known => {
                        self.messages = None;
                        // Nothing arrives from offsets the stream no longer holds (purged, or
                        // past its age limit): say so, rather than blame the servers.
                        let first = self.shared.first_offset();
                        if first > self.expected() {
                            return Err(JournalError::OffsetGone { requested: self.expected(), first });
                        }
                        return Err(JournalError::Unavailable(format!(
                            "the JetStream stream {} holds records from offset {} on, but none arrived within {} s; check that the NATS servers are reachable and that the stream has a leader",
                            self.shared.stream,
                            self.expected(),
                            wait.as_secs()
                        )));
                    }
                    Err(_) => break,
                }
            } else {
                match messages.next().now_or_never() {
                    Some(delivered) => delivered,
                    None => break,
                }
            };
            let message = match delivered {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    // Created again, from the next offset not taken, by the next batch.
                    self.messages = None;
                    if self.taken.is_empty() {
                        return Err(JournalError::Unavailable(format!(
                            "reading the JetStream stream {} failed: {e}; check that the NATS servers are reachable",
                            self.shared.stream
                        )));
                    }
                    break;
                }
                None => {
                    self.messages = None;
                    break;
                }
            };
            match self.decode(&message)? {
                Delivered::Entry(entry) => {
                    self.taken_bytes += entry.payload.len();
                    self.taken.push(entry);
                }
                Delivered::Again => {}
            }
        }
        let batch = std::mem::take(&mut self.taken);
        self.taken_bytes = 0;
        self.next += batch.len() as u64;
        Ok(batch)
    }
}
