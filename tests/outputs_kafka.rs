//! The Kafka output against librdkafka's mock cluster (the Kafka protocol on real TCP ports),
//! read back by an independent client, Python's aiokafka: every journaled record arrives, keyed
//! by its person, on the partition Java's default partitioner picks for that key, in journal
//! order per key; a broker that goes down mid-run and comes back loses nothing acknowledged.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::{Value, json};
use sluice::consumers::ConsumerStatus;
use sluice::journal::file::{FileJournal, FileJournalConfig};
use sluice::journal::{Journal, Record};
use sluice::outputs::{Output, OutputConfig, OutputType, partition_of};
use sluice::record::RecordKind;
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 6;
const TOPICS: [&str; 2] = ["sluice.impression", "sluice.event"];

/// A mock cluster of 3 brokers holding both topics, each partition led by broker
/// `partition % 3 + 1`.
fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(3).unwrap();
    for topic in TOPICS {
        cluster.create_topic(topic, PARTITIONS, 1).unwrap();
        for partition in 0..PARTITIONS {
            cluster.partition_leader(topic, partition, Some(partition % 3 + 1)).unwrap();
        }
    }
    cluster
}

/// `count` records, impressions and Segment events in turn, of 20 people, each Segment event
/// naming its person by `userId` or, every third one, by `anonymousId` only.
fn records(first: usize, count: usize) -> Vec<Record> {
    (first..first + count)
        .map(|i| {
            let person = format!("person-{}", i % 20);
            let (kind, payload) = if i % 2 == 0 {
                let impression = json!({
                    "key": person, "split": "flag", "environmentId": "e", "environmentName": "Production",
                    "treatment": "on", "time": 1_700_000_000_000i64 + i as i64, "label": "default rule",
                    "splitVersionNumber": 1, "sdk": "java", "sdkVersion": "4.1.0"
                });
                (RecordKind::SplitImpression, impression)
            } else if i % 3 == 0 {
                let event = json!({"type": "track", "event": "Clicked", "messageId": format!("m{i}"), "anonymousId": person, "userId": null});
                (RecordKind::SegmentEvent, event)
            } else {
                let event = json!({"type": "track", "event": "Clicked", "messageId": format!("m{i}"), "anonymousId": "anon", "userId": person});
                (RecordKind::SegmentEvent, event)
            };
            Record::from_payload(kind, 1_700_000_000_000, Bytes::from(payload.to_string())).unwrap()
        })
        .collect()
}

fn journal(dir: &Path) -> Arc<FileJournal> {
    Arc::new(FileJournal::open(&dir.join("journal"), FileJournalConfig::default()).unwrap())
}

fn output(cluster: &MockCluster<'static, DefaultProducerContext>, journal: &Arc<FileJournal>, dir: &Path) -> Output {
    let config = OutputConfig {
        name: "kafka".into(),
        kind: Some(OutputType::Kafka),
        brokers: Some(cluster.bootstrap_servers()),
        ..OutputConfig::default()
    };
    let settings = config.resolve(0, 1_000_000).unwrap();
    let shared: Arc<dyn Journal> = journal.clone();
    Output::register(shared, settings, dir).unwrap()
}

/// Runs `output` until its status says it committed `end`, then stops it.
async fn run_until(output: Output, status: Arc<ConsumerStatus>, end: u64, during: impl AsyncFnOnce()) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(output.run(shutdown.clone(), status.clone()));
    during().await;
    let started = Instant::now();
    while status.committed_offset() < end {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the output did not deliver; last error: {:?}",
            status.last_error()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// What aiokafka reads back from every partition of both topics, in each partition's order.
fn read_back(python: &Path, cluster: &MockCluster<'static, DefaultProducerContext>) -> Vec<Value> {
    common::kafka::read_back(python, &cluster.bootstrap_servers(), PARTITIONS, &TOPICS)
}

/// The person a journaled record is about, as the test wrote it.
fn expected_key(kind: &str, value: &Value) -> String {
    match kind {
        "impression" => value["key"].as_str().unwrap().to_owned(),
        _ => value["userId"].as_str().or(value["anonymousId"].as_str()).unwrap().to_owned(),
    }
}

/// Checks what was read against the journal's `count` records: each is there (once, or more
/// after a failure, when `exactly_once` is false), under its topic, key and murmur2 partition,
/// with its headers, and each person's records come in journal order.
fn check(messages: &[Value], journal_id: &str, count: u64, exactly_once: bool) {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    // Per key, the journal offsets in the order the partitions hold them (first sightings).
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut by_partition: BTreeMap<(String, i64), Vec<&Value>> = BTreeMap::new();
    for m in messages {
        by_partition
            .entry((m["topic"].as_str().unwrap().to_owned(), m["partition"].as_i64().unwrap()))
            .or_default()
            .push(m);
    }
    for ((topic, partition), mut list) in by_partition {
        list.sort_by_key(|m| m["offset"].as_i64().unwrap());
        for m in list {
            let headers = &m["headers"];
            let kind = headers["sluice-kind"].as_str().unwrap();
            assert_eq!(topic, format!("sluice.{kind}"));
            assert_eq!(headers["sluice-journal"], journal_id);
            let offset: u64 = headers["sluice-offset"].as_str().unwrap().parse().unwrap();
            let value: Value = serde_json::from_str(m["value"].as_str().unwrap()).unwrap();
            let key = m["key"].as_str().unwrap();
            assert_eq!(key, expected_key(kind, &value), "the key names the record's person");
            assert_eq!(
                partition_of(key.as_bytes(), PARTITIONS as u32) as i64,
                partition,
                "key {key} is on the partition Java's murmur2 partitioner picks"
            );
            let times = seen.entry(offset).or_default();
            *times += 1;
            if *times == 1 {
                per_key.entry(key.to_owned()).or_default().push(offset);
            }
        }
    }
    for offset in 0..count {
        let times = seen.get(&offset).copied().unwrap_or(0);
        assert!(times >= 1, "journal offset {offset} never reached Kafka");
        if exactly_once {
            assert_eq!(times, 1, "journal offset {offset} was sent {times} times");
        }
    }
    assert_eq!(seen.len() as u64, count, "nothing but the journal's records");
    for (key, offsets) in per_key {
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{key}'s records are out of journal order: {offsets:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_kafka_keyed_by_person_on_its_murmur2_partition_in_journal_order() {
    let Some(python) = common::test_python("the Kafka output test (aiokafka)") else { return };
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster();
    let journal = journal(dir.path());
    journal.append(records(0, 600)).await.unwrap();
    let status = Arc::new(ConsumerStatus::new("output:kafka"));
    run_until(output(&cluster, &journal, dir.path()), status.clone(), 600, async || {}).await;
    // A restart resumes at the checkpoint: what was sent is not sent again.
    journal.append(records(600, 400)).await.unwrap();
    run_until(output(&cluster, &journal, dir.path()), status.clone(), 1000, async || {}).await;
    assert!(status.is_healthy());
    let messages = read_back(&python, &cluster);
    check(&messages, journal.id(), 1000, true);
    journal.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_mid_run_and_back_up_loses_nothing_acknowledged() {
    let Some(python) = common::test_python("the Kafka output test (aiokafka)") else { return };
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster();
    let journal = journal(dir.path());
    journal.append(records(0, 500)).await.unwrap();
    let status = Arc::new(ConsumerStatus::new("output:kafka"));
    let appender = journal.clone();
    run_until(output(&cluster, &journal, dir.path()), status.clone(), 1500, async || {
        // Wait for the first records to be delivered, then take broker 1 (the leader of
        // partitions 0 and 3 of both topics) down while more records are journaled.
        let started = Instant::now();
        while status.committed_offset() < 500 && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cluster.broker_down(1).unwrap();
        appender.append(records(500, 1000)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(status.committed_offset() < 1500, "records led by the downed broker cannot have been acknowledged");
        cluster.broker_up(1).unwrap();
    })
    .await;
    let messages = read_back(&python, &cluster);
    check(&messages, journal.id(), 1500, false);
    journal.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_whose_brokers_are_all_down_shows_unhealthy_with_the_error_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster();
    let journal = journal(dir.path());
    journal.append(records(0, 100)).await.unwrap();
    for broker in 1..=3 {
        cluster.broker_down(broker).unwrap();
    }
    let status = Arc::new(ConsumerStatus::new("output:kafka"));
    run_until(output(&cluster, &journal, dir.path()), status.clone(), 100, async || {
        let started = Instant::now();
        while status.is_healthy() && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!status.is_healthy(), "every broker down shows");
        let error = status.last_error().unwrap_or_default();
        assert!(error.starts_with("kafka: "), "{error}");
        assert_eq!(status.committed_offset(), 0, "nothing acknowledged, nothing committed");
        for broker in 1..=3 {
            cluster.broker_up(broker).unwrap();
        }
    })
    .await;
    assert!(status.is_healthy(), "healthy again once it delivered");
    journal.close().await;
}
