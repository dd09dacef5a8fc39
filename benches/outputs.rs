/*!
Kafka output throughput next to a raw rdkafka producer loop sending the same records, in the
same run, to the same mock cluster (librdkafka's: the Kafka protocol on loopback TCP, 3 brokers,
a topic per kind of 12 partitions).

A journal is filled once with ~330-byte impressions of 50,000 people. Each output run is a fresh
output (new name, so a new checkpoint and consumer) with shutdown already requested, so it sends
the whole journal and returns: the time covers reading the journal, finding each key, sending
with headers, waiting for every acknowledgement, and checkpointing. The raw loop sends the same
payloads with the same keys and headers from memory through a `FutureProducer` with the same
settings (idempotent, acks=all, murmur2_random, linger.ms=5), made anew for each run as the
output makes its own, 10,000 at a time, and waits for their delivery reports as the output does.
The output's time includes its last read, which waits 20 ms for more records before it stops. *output / raw* is the output's records/s as a share
of the loop's.

    cargo bench --bench outputs          # 200,000 records, 3 runs per side, medians

Under `cargo test` (no `--bench` argument) it does one tiny run as a smoke test.
*/

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice::consumers::ConsumerStatus;
use sluice::journal::file::{FileJournal, FileJournalConfig};
use sluice::journal::{Journal, Record};
use sluice::outputs::kafka::headers;
use sluice::outputs::{Message, Output, OutputConfig, OutputType, SinkSettings};
use sluice::record::RecordKind;
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_700_000_000_000;

fn impression(i: usize) -> Record {
    let payload = format!(
        r#"{{"key":"user-{:08}","split":"checkout_v{}","environmentId":"env-1","environmentName":"Production","treatment":"{}","time":{},"bucketingKey":null,"label":"default rule","machineName":"ip-10-0-0-{}","machineIp":"10.0.0.{}","splitVersionNumber":1699999999000,"sdk":"go","sdkVersion":"6.1.0","properties":"{{\"plan\":\"pro\"}}"}}"#,
        i % 50_000,
        i % 7,
        if i.is_multiple_of(2) { "on" } else { "off" },
        T0 + i as i64,
        i % 250,
        i % 250,
    );
    Record::from_payload(RecordKind::SplitImpression, T0, Bytes::from(payload)).expect("a valid impression")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (records, runs) = if full { (200_000, 3) } else { (2_000, 1) };
    let cluster = MockCluster::new(3).unwrap();
    for topic in ["sluice.impression", "sluice.event"] {
        cluster.create_topic(topic, 12, 1).unwrap();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let root = tempfile::tempdir().unwrap();
        let journal = Arc::new(FileJournal::open(&root.path().join("journal"), FileJournalConfig::default()).unwrap());
        let all: Vec<Record> = (0..records).map(impression).collect();
        let bytes: usize = all.iter().map(|r| r.payload.len()).sum();
        for batch in all.chunks(10_000) {
            journal.append(batch.to_vec()).await.unwrap();
        }
        let shared: Arc<dyn Journal> = journal.clone();
        let settings = |name: String| {
            OutputConfig {
                name,
                kind: Some(OutputType::Kafka),
                brokers: Some(cluster.bootstrap_servers()),
                ..OutputConfig::default()
            }
            .resolve(0, u64::MAX)
            .unwrap()
        };
        let SinkSettings::Kafka(kafka) = settings("raw".into()).sink else { unreachable!("a Kafka output") };
        let entries: Vec<Message> = all
            .iter()
            .enumerate()
            .map(|(offset, r)| {
                let entry = sluice::journal::Entry {
                    offset: offset as u64,
                    kind: r.kind,
                    received_at_ms: r.received_at_ms,
                    payload: r.payload.clone(),
                };
                Message::of(&entry)
            })
            .collect();
        let topic = &kafka.topics["impression"];
        let (mut output_s, mut raw_s) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let output = Output::register(shared.clone(), settings(format!("bench{run}")), root.path()).unwrap();
            let status = Arc::new(ConsumerStatus::new("output:bench"));
            let shutdown = CancellationToken::new();
            shutdown.cancel();
            let started = Instant::now();
            output.run(shutdown, status.clone()).await.unwrap();
            output_s.push(started.elapsed().as_secs_f64());
            assert_eq!(status.committed_offset(), records as u64);

            // A new producer each run, as each output run makes one: both pay for connecting.
            let started = Instant::now();
            let producer: FutureProducer = kafka.client_config().create().unwrap();
            for chunk in entries.chunks(10_000) {
                let mut pending = Vec::with_capacity(chunk.len());
                for m in chunk {
                    let mut record = FutureRecord::to(topic).payload(&m.payload[..]).headers(headers(
                        m.kind,
                        m.offset,
                        journal.id(),
                    ));
                    if let Some(key) = &m.key {
                        record = record.key(key.as_bytes());
                    }
                    loop {
                        match producer.send_result(record) {
                            Ok(delivery) => break pending.push(delivery),
                            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                                record = back;
                                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            }
                            Err((e, _)) => panic!("{e}"),
                        }
                    }
                }
                for delivered in join_all(pending).await {
                    delivered.unwrap().unwrap();
                }
            }
            raw_s.push(started.elapsed().as_secs_f64());
        }
        let (output, raw) = (records as f64 / median(output_s), records as f64 / median(raw_s));
        println!(
            "{records} impressions ({:.1} MB), {runs} runs per side, medians, 3 mock brokers, 12 partitions",
            bytes as f64 / 1e6
        );
        println!("| output records/s | raw producer records/s | output / raw |");
        println!("|---:|---:|---:|");
        println!("| {output:.0} | {raw:.0} | {:.0}% |", output / raw * 100.0);
        journal.close().await;
    });
}
