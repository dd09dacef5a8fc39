/*!
The journal's stream at start-up: created when missing; when it exists, compared with what this
node wants and updated where JetStream can change a setting in place, or refused with the list
of differences where it cannot (storage, retention, a mirror or sources, a sealed stream).

Two rules keep an update from losing records or fighting another node:
- the limits that delete records (`max_age`, `max_bytes`) are only ever raised: a node whose
  setting is lower leaves the stream's (and logs it), since lowering them would make JetStream
  delete records a consumer may not have read. Lower them by hand (`nats stream edit`) if meant;
- with `replicas` unset, an existing stream keeps its replica count: the servers a node sees at
  start-up (one may be down) say nothing about how many copies the operator wanted.
*/

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{Config, DiscardPolicy, Info, RetentionPolicy, StorageType};
use async_nats::jetstream::{self};

use super::{JetStreamError, JetStreamSettings};
use crate::record::RecordKind;

/// One setting in which the existing stream differs from what this node needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The stream setting (as `nats stream info` names it).
    pub field: &'static str,
    /// Its value in the existing stream.
    pub found: String,
    /// The value this node needs.
    pub wanted: String,
}

/// The message of [`JetStreamError::Incompatible`].
pub(super) fn incompatible_message(stream: &str, differences: &[Difference]) -> String {
    let listed: Vec<String> =
        differences.iter().map(|d| format!("{}: found {}, wanted {}", d.field, d.found, d.wanted)).collect();
    format!(
        "the JetStream stream {stream} exists with settings sluice cannot change in place ({}); this node stops rather than use it. Give sluice another stream ([journal] stream), or, if nothing in it is needed any more, delete it (`nats stream rm {stream}`) and start again",
        listed.join("; ")
    )
}

/// The subjects of the stream: one per record kind.
pub(super) fn subjects(stream: &str) -> Vec<String> {
    RecordKind::ALL.iter().map(|kind| format!("{stream}.{}", kind.name())).collect()
}

/// The stream this node would create.
fn wanted(settings: &JetStreamSettings, replicas: usize) -> Config {
    Config {
        name: settings.stream.clone(),
        description: Some("sluice's journal: Split impressions and Segment events, in arrival order".to_owned()),
        subjects: subjects(&settings.stream),
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::New,
        num_replicas: replicas,
        duplicate_window: settings.dedup_window,
        max_age: settings.max_age,
        max_bytes: i64::try_from(settings.max_bytes).unwrap_or(i64::MAX),
        max_messages: -1,
        max_messages_per_subject: -1,
        // The servers' max_payload is the limit (see the module docs of the journal).
        max_message_size: -1,
        ..Config::default()
    }
}

/// Creates the stream, or checks and updates the existing one; returns its info.
pub(super) async fn ensure(
    jetstream: &jetstream::Context,
    settings: &JetStreamSettings,
    servers: usize,
) -> Result<Info, JetStreamError> {
    let name = settings.stream.as_str();
    let failed = |action: &'static str| {
        move |reason: String| JetStreamError::Stream {
            action,
            stream: name.to_owned(),
            reason: settings.urls.redact(&reason),
        }
    };
    match jetstream.get_stream(name).await {
        Ok(stream) => reconcile(jetstream, settings, stream.cached_info().clone()).await,
        Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(ref answer) if answer.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            let replicas = settings.replicas.unwrap_or(if servers >= 3 { 3 } else { 1 });
            match jetstream.create_stream(wanted(settings, replicas)).await {
                Ok(stream) => {
                    tracing::info!(stream = name, replicas, "journal: created the JetStream stream");
                    Ok(stream.cached_info().clone())
                }
                // Another node created it meanwhile: check it as an existing one.
                Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(ref answer) if answer.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
                {
                    let stream = jetstream.get_stream(name).await.map_err(|e| failed("read")(e.to_string()))?;
                    reconcile(jetstream, settings, stream.cached_info().clone()).await
                }
                Err(e) => Err(failed("create")(e.to_string())),
            }
        }
        Err(e) => Err(failed("read")(e.to_string())),
    }
}

/// Refuses an existing stream that cannot serve as the journal, and updates what may be.
async fn reconcile(
    jetstream: &jetstream::Context,
    settings: &JetStreamSettings,
    info: Info,
) -> Result<Info, JetStreamError> {
    let found = &info.config;
    let replicas = settings.replicas.unwrap_or(found.num_replicas);
    let mut wanted = wanted(settings, replicas);
    let differences = incompatibilities(found, &wanted);
    if !differences.is_empty() {
        return Err(JetStreamError::Incompatible { stream: settings.stream.clone(), differences });
    }
    // Limits that delete records are only raised (see the module docs).
    if found.max_age.is_zero() || found.max_age > wanted.max_age {
        if found.max_age != wanted.max_age {
            tracing::warn!(
                stream = settings.stream,
                "the stream keeps records for {}, longer than [journal] max_age_secs ({} s); left as it is (shortening it would delete records): change it with `nats stream edit` if meant",
                show_age(found.max_age),
                wanted.max_age.as_secs()
            );
        }
        wanted.max_age = found.max_age;
    }
    if found.max_bytes < 0 || found.max_bytes > wanted.max_bytes {
        tracing::warn!(
            stream = settings.stream,
            "the stream may hold {} bytes, more than [journal] max_bytes ({}); left as it is (lowering it would delete records): change it with `nats stream edit` if meant",
            show_limit(found.max_bytes),
            wanted.max_bytes
        );
        wanted.max_bytes = found.max_bytes;
    }
    // A stream made with some of sluice's subjects gets the others (no foreign ones are left).
    let mut subjects = found.subjects.clone();
    subjects.extend(wanted.subjects.iter().filter(|s| !found.subjects.contains(s)).cloned());
    wanted.subjects = subjects;
    let updates = updates(found, &wanted);
    if updates.is_empty() {
        return Ok(info);
    }
    let listed: Vec<String> = updates.iter().map(|d| format!("{} {} → {}", d.field, d.found, d.wanted)).collect();
    let update = Config {
        subjects: wanted.subjects,
        discard: wanted.discard,
        num_replicas: wanted.num_replicas,
        duplicate_window: wanted.duplicate_window,
        max_age: wanted.max_age,
        max_bytes: wanted.max_bytes,
        max_messages: wanted.max_messages,
        max_messages_per_subject: wanted.max_messages_per_subject,
        max_message_size: wanted.max_message_size,
        ..found.clone()
    };
    let updated = jetstream.update_stream(&update).await.map_err(|e| JetStreamError::Stream {
        action: "update",
        stream: settings.stream.clone(),
        reason: format!("{e} (changing {})", listed.join(", ")),
    })?;
    tracing::info!(stream = settings.stream, changes = listed.join(", "), "journal: updated the JetStream stream");
    Ok(updated)
}

/// What JetStream cannot change in place, where the existing stream is not what sluice needs.
fn incompatibilities(found: &Config, wanted: &Config) -> Vec<Difference> {
    let mut differences = Vec::new();
    let mut differ = |field, found: String, wanted: String| {
        if found != wanted {
            differences.push(Difference { field, found, wanted });
        }
    };
    differ("storage", format!("{:?}", found.storage).to_lowercase(), format!("{:?}", wanted.storage).to_lowercase());
    differ(
        "retention",
        format!("{:?}", found.retention).to_lowercase(),
        format!("{:?}", wanted.retention).to_lowercase(),
    );
    differ("mirror", mirror(found), "none".to_owned());
    let sources = found.sources.as_ref().map_or(0, Vec::len);
    differ("sources", sources.to_string(), "0".to_owned());
    differ("sealed", found.sealed.to_string(), "false".to_owned());
    // Another program's subjects would put its messages among the records, and consumers stop
    // at a message that is no record; sluice's missing subjects are added (see `reconcile`).
    if found.subjects.iter().any(|subject| !wanted.subjects.contains(subject)) {
        differ("subjects", found.subjects.join(" "), format!("only {}", wanted.subjects.join(" ")));
    }
    differences
}

/// A stream's mirror, for the list of differences.
fn mirror(config: &Config) -> String {
    config.mirror.as_ref().map_or_else(|| "none".to_owned(), |source| source.name.clone())
}

/// What an update would change.
fn updates(found: &Config, wanted: &Config) -> Vec<Difference> {
    let mut updates = Vec::new();
    let mut differ = |field, found: String, wanted: String| {
        if found != wanted {
            updates.push(Difference { field, found, wanted });
        }
    };
    differ("subjects", found.subjects.join(" "), wanted.subjects.join(" "));
    differ("discard", format!("{:?}", found.discard).to_lowercase(), format!("{:?}", wanted.discard).to_lowercase());
    differ("replicas", found.num_replicas.to_string(), wanted.num_replicas.to_string());
    differ("duplicate_window", show_age(found.duplicate_window), show_age(wanted.duplicate_window));
    differ("max_age", show_age(found.max_age), show_age(wanted.max_age));
    differ("max_bytes", show_limit(found.max_bytes), show_limit(wanted.max_bytes));
    differ("max_msgs", show_limit(found.max_messages), show_limit(wanted.max_messages));
    differ(
        "max_msgs_per_subject",
        show_limit(found.max_messages_per_subject),
        show_limit(wanted.max_messages_per_subject),
    );
    differ("max_msg_size", show_limit(found.max_message_size.into()), show_limit(wanted.max_message_size.into()));
    updates
}

/// A duration limit as `nats stream info` shows it (zero: unlimited).
fn show_age(age: Duration) -> String {
    if age.is_zero() { "unlimited".to_owned() } else { format!("{} s", age.as_secs()) }
}

/// A count or size limit (negative: unlimited).
fn show_limit(limit: i64) -> String {
    if limit < 0 { "unlimited".to_owned() } else { limit.to_string() }
}

/// What a stream's description carries, after sluice's own words, to name the lease bucket of
/// the nodes whose journal it is.
const LEASES_MARK: &str = " Leases: ";

/// Records in the stream's description that its nodes take their leases from `bucket`, or
/// refuses when another bucket is recorded: nodes of two buckets would each run every consumer.
pub(super) async fn claim_lease_bucket(
    jetstream: &jetstream::Context,
    stream: &str,
    bucket: &str,
) -> Result<(), JetStreamError> {
    let failed = |action: &'static str| {
        move |e: &dyn std::fmt::Display| JetStreamError::Stream {
            action,
            stream: stream.to_owned(),
            reason: e.to_string(),
        }
    };
    let mut config = jetstream.get_stream(stream).await.map_err(|e| failed("read")(&e))?.cached_info().config.clone();
    let description = config.description.clone().unwrap_or_default();
    if let Some((_, found)) = description.split_once(LEASES_MARK) {
        if found == bucket {
            return Ok(());
        }
        return Err(JetStreamError::LeaseBucketDiffers {
            stream: stream.to_owned(),
            found: found.to_owned(),
            wanted: bucket.to_owned(),
        });
    }
    config.description = Some(format!("{description}{LEASES_MARK}{bucket}"));
    jetstream.update_stream(&config).await.map_err(|e| failed("update")(&e))?;
    Ok(())
}
