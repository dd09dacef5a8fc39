//! The NATS output against the local NATS server (127.0.0.1:4222): every record arrives on the
//! subject of its kind and of its key's partition, with its headers; with JetStream, in a stream
//! the test creates, and a record sent again is dropped by the stream (`Nats-Msg-Id`).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use sluice::consumers::ConsumerStatus;
use sluice::journal::file::{FileJournal, FileJournalConfig};
use sluice::journal::{Journal, Record};
use sluice::outputs::{Output, OutputConfig, OutputType, partition_of};
use sluice::record::RecordKind;
use tokio_util::sync::CancellationToken;

const NATS: &str = "nats://127.0.0.1:4222";
const PARTITIONS: u32 = 4;
const COUNT: u64 = 300;

/// A subject prefix no other test (or run) uses.
fn prefix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("t{}x{nanos}", std::process::id())
}

/// Impressions and Segment events of 10 people, in turn.
fn records(count: u64) -> Vec<Record> {
    (0..count)
        .map(|i| {
            let person = format!("p{}", i % 10);
            let (kind, payload) = if i % 2 == 0 {
                let v = json!({"key": person, "split": "f", "environmentId": "e", "environmentName": "P",
                    "treatment": "on", "time": 1_700_000_000_000i64 + i as i64, "label": "l"});
                (RecordKind::SplitImpression, v)
            } else {
                (
                    RecordKind::SegmentEvent,
                    json!({"type": "track", "event": "E", "messageId": format!("m{i}"), "userId": person}),
                )
            };
            Record::from_payload(kind, 1_700_000_000_000, Bytes::from(payload.to_string())).unwrap()
        })
        .collect()
}

async fn journal(dir: &Path) -> Arc<FileJournal> {
    let journal = Arc::new(FileJournal::open(&dir.join("journal"), FileJournalConfig::default()).unwrap());
    journal.append(records(COUNT)).await.unwrap();
    journal
}

/// Runs the output `config` on `journal` until it committed everything, then stops it.
async fn run(journal: &Arc<FileJournal>, dir: &Path, config: OutputConfig) {
    let settings = config.resolve(0, 1_000_000).unwrap();
    let shared: Arc<dyn Journal> = journal.clone();
    let output = Output::register(shared, settings, dir).unwrap();
    let status = Arc::new(ConsumerStatus::new("output:nats"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(output.run(shutdown.clone(), status.clone()));
    let started = Instant::now();
    while status.committed_offset() < COUNT {
        assert!(started.elapsed() < Duration::from_secs(30), "not delivered; last error {:?}", status.last_error());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

fn config(prefix: &str, jetstream: bool) -> OutputConfig {
    OutputConfig {
        name: "nats".into(),
        kind: Some(OutputType::Nats),
        url: Some(NATS.into()),
        subject: Some(format!("{prefix}.{{kind}}.{{partition}}")),
        partitions: Some(PARTITIONS),
        jetstream: Some(jetstream),
        ..OutputConfig::default()
    }
}

/// Checks that `messages` (subject, headers, payload) are the journal's records, each once, on
/// the subject of its kind and key's partition, each subject in journal order.
fn check(prefix: &str, journal_id: &str, messages: &[(String, HashMap<String, String>, Bytes)]) {
    let mut seen = vec![0; COUNT as usize];
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (subject, headers, payload) in messages {
        let offset: u64 = headers["sluice-offset"].parse().unwrap();
        assert_eq!(headers["sluice-journal"], journal_id);
        let kind = &headers["sluice-kind"];
        let value: Value = serde_json::from_slice(payload).unwrap();
        let key = value["key"].as_str().or(value["userId"].as_str()).unwrap();
        let partition = partition_of(key.as_bytes(), PARTITIONS);
        assert_eq!(subject, &format!("{prefix}.{kind}.{partition}"), "offset {offset}");
        if let Some(before) = last.insert(subject, offset) {
            assert!(before < offset, "{subject}: offset {offset} came after {before}");
        }
        seen[offset as usize] += 1;
    }
    assert!(seen.iter().all(|n| *n == 1), "each record once: {seen:?}");
}

fn headers_of(headers: Option<&async_nats::HeaderMap>) -> HashMap<String, String> {
    let headers = headers.expect("the message has headers");
    ["sluice-kind", "sluice-offset", "sluice-journal"]
        .into_iter()
        .map(|h| (h.to_owned(), headers.get(h).expect(h).to_string()))
        .collect()
}

#[tokio::test]
async fn every_record_is_published_on_the_subject_of_its_kind_and_key_partition() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let client = common::nats::local_nats().await;
    let mut subscription = client.subscribe(format!("{prefix}.>")).await.unwrap();
    client.flush().await.unwrap();
    let journal = journal(dir.path()).await;
    run(&journal, dir.path(), config(&prefix, false)).await;
    let mut messages = Vec::new();
    while (messages.len() as u64) < COUNT {
        let message = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("every record arrives")
            .unwrap();
        messages.push((message.subject.to_string(), headers_of(message.headers.as_ref()), message.payload));
    }
    check(&prefix, journal.id(), &messages);
    journal.close().await;
}

#[tokio::test]
async fn jetstream_stores_every_record_once_even_when_the_output_sends_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let client = common::nats::local_nats().await;
    let context = jetstream::new(client);
    let stream_name = format!("OUT_{prefix}");
    let mut stream = context
        .create_stream(jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    let journal = journal(dir.path()).await;
    run(&journal, dir.path(), config(&prefix, true)).await;
    // Without its checkpoint the output sends everything again; the stream keeps each once.
    std::fs::remove_file(sluice::outputs::checkpoint_path(dir.path(), "nats")).unwrap();
    run(&journal, dir.path(), config(&prefix, true)).await;
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, COUNT, "the stream dropped the records sent again");
    let mut messages = Vec::new();
    for sequence in 1..=COUNT {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let headers = message.headers.clone();
        messages.push((message.subject.to_string(), headers_of(Some(&headers)), message.payload));
    }
    context.delete_stream(&stream_name).await.unwrap();
    check(&prefix, journal.id(), &messages);
    journal.close().await;
}

#[tokio::test]
async fn a_served_output_forwards_what_ingest_accepts_and_shows_in_readyz() {
    let prefix = prefix();
    let client = common::nats::local_nats().await;
    let mut subscription = client.subscribe(format!("{prefix}.>")).await.unwrap();
    client.flush().await.unwrap();
    let output = config(&prefix, false);
    let server = common::InProcess::start_with(|c| c.outputs = vec![output]).await;
    let (status, _) = server.post_gzip(&common::seed_batch()).await;
    assert_eq!(status, 200);
    let mut keys = Vec::new();
    while keys.len() < 11 {
        let message = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("every accepted impression is forwarded")
            .unwrap();
        let value: Value = serde_json::from_slice(&message.payload).unwrap();
        let key = value["key"].as_str().unwrap().to_owned();
        assert_eq!(
            message.subject.to_string(),
            format!("{prefix}.impression.{}", partition_of(key.as_bytes(), PARTITIONS))
        );
        keys.push(key);
    }
    let started = Instant::now();
    let body = loop {
        let (_, body) = server.get("/readyz").await;
        let body: Value = serde_json::from_str(&body).unwrap();
        if body["outputs"]["nats"]["committedOffset"] == 11 || started.elapsed() > Duration::from_secs(10) {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["outputs"]["nats"]["healthy"], true, "{body}");
    assert_eq!(body["outputs"]["nats"]["committedOffset"], 11, "{body}");
    assert_eq!(body["consumers"]["output:nats"]["lag"], 0, "{body}");
    let (dir, _) = server.stop().await;
    let checkpoint: Value =
        serde_json::from_slice(&std::fs::read(sluice::outputs::checkpoint_path(dir.path(), "nats")).unwrap()).unwrap();
    assert_eq!(checkpoint["offset"], 11);
}

#[tokio::test]
async fn a_server_asking_for_a_password_takes_the_one_in_the_url_and_a_refusal_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::nats::NatsServer::start_with("authorization { user: out, password: \"pw-Out-1\" }\n").await;
    let prefix = prefix();
    let client = async_nats::ConnectOptions::with_user_and_password("out".into(), "pw-Out-1".into())
        .connect(server.url())
        .await
        .unwrap();
    let mut subscription = client.subscribe(format!("{prefix}.>")).await.unwrap();
    client.flush().await.unwrap();
    let journal = journal(dir.path()).await;
    let with_password = |password: &str| OutputConfig {
        url: Some(format!("nats://out:{password}@127.0.0.1:{}", server.port)),
        ..config(&prefix, false)
    };
    run(&journal, dir.path(), with_password("pw-Out-1")).await;
    for _ in 0..COUNT {
        tokio::time::timeout(Duration::from_secs(10), subscription.next()).await.expect("every record arrives");
    }

    std::fs::remove_file(sluice::outputs::checkpoint_path(dir.path(), "nats")).unwrap();
    let settings = with_password("pw-Wrong-2").resolve(0, 1_000_000).unwrap();
    let shared: Arc<dyn Journal> = journal.clone();
    let output = Output::register(shared, settings, dir.path()).unwrap();
    let status = Arc::new(ConsumerStatus::new("output:nats"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(output.run(shutdown.clone(), status.clone()));
    let started = Instant::now();
    let error = loop {
        if let Some(error) = status.last_error() {
            break error;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "a refused connection shows as the output's error");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    let _ = task.await;
    assert!(error.contains("authorization violation"), "{error}");
    assert!(!error.contains("pw-Wrong-2"), "the password is shown: {error}");
    journal.close().await;
}
