//! `sluice serve --journal nats://…`, the real binary against its own NATS server: ingest answers
//! 503 with `Retry-After` within the publish deadline while NATS is down, 200 again once it is
//! back, and every acknowledged impression reaches the store, journaled once.

mod common;

use std::time::{Duration, Instant};

use common::nats::NatsServer;
use common::{Binary, TestSchema, impression, post_keys, sluice, stored_keys, wait_loaded};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_ingest_answers_503_within_the_deadline_then_200_and_everything_acknowledged_is_stored_once() {
    // A node on a JetStream journal may be one of several: its store must be one they share.
    let Some(schema) = TestSchema::create() else { return };
    let mut nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let server = Binary::start_with(
        dir.path(),
        &["--journal", &url],
        &[
            ("SLUICE_JOURNAL__PUBLISH_TIMEOUT_MS", "1500"),
            ("SLUICE_JOURNAL__STREAM", "INGEST"),
            ("SLUICE_STORE__URL", &schema.url),
        ],
    )
    .await;
    let (client, base) = (reqwest::Client::new(), server.url(""));
    post_keys(&client, &base, 0..10).await;

    nats.kill();
    let post = |key: &str| {
        let body = Value::Array(vec![impression(key, "f", "P", "on", "r", 1)]).to_string();
        client.post(server.url("/v1/split/impressions")).body(body).send()
    };
    let started = Instant::now();
    let refused = post("k100").await.unwrap();
    let took = started.elapsed();
    assert_eq!(refused.status(), 503, "{:?}", refused.text().await);
    assert!(refused.headers().contains_key("retry-after"), "{:?}", refused.headers());
    assert!(took < Duration::from_millis(2500), "the 503 took {took:?}, past the 1.5 s publish deadline");
    let ready: Value = client.get(server.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["ready"], false, "{ready}");
    assert_eq!(ready["journal"]["connection"], "disconnected", "{ready}");

    nats.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = post("k100").await.unwrap();
        if answer.status() == 200 {
            break;
        }
        assert_eq!(answer.status(), 503);
        assert!(Instant::now() < deadline, "ingest still answers 503 30 s after NATS came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    post_keys(&client, &base, 101..111).await;
    wait_loaded(&client, &base).await;

    let stored = stored_keys(&client, &base).await;
    let expected: Vec<String> = (0..10).chain(100..111).map(|i| format!("k{i}")).collect();
    for key in &expected {
        assert_eq!(stored.get(key), Some(&1), "{key}: {stored:?}");
    }
    assert_eq!(stored.len(), expected.len());
    let ready: Value = client.get(server.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["journal"]["nextOffset"], 21, "k100, sent twice, is journaled once: {ready}");
    assert_eq!(ready["journal"]["connection"], "connected");
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test]
async fn a_node_on_a_jetstream_journal_refuses_the_embedded_sqlite_store_saying_to_set_a_shared_one() {
    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = sluice(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap(), "--journal", &nats.url()],
        &[],
    );
    assert_ne!(code, 0, "started on SQLite in cluster mode: {stderr}");
    assert!(stderr.contains("SQLite") && stderr.contains("store.url") && stderr.contains("PostgreSQL"), "{stderr}");
}

/// A store a single node loaded from its embedded journal keeps that journal's offset row; the
/// cluster's stream gets a row of its own and loads from its oldest record (before, the loader
/// refused to start: the store's offset belonged to another journal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_loaded_from_an_embedded_journal_before_loads_the_streams_records_too() {
    let Some(schema) = TestSchema::create() else { return };
    let client = reqwest::Client::new();
    let single = tempfile::tempdir().unwrap();
    let server = Binary::start(single.path(), &[("SLUICE_STORE__URL", &schema.url)]).await;
    post_keys(&client, &server.url(""), 0..5).await;
    wait_loaded(&client, &server.url("")).await;
    assert_eq!(server.terminate(), Some(0));

    let nats = NatsServer::start().await;
    let node = tempfile::tempdir().unwrap();
    let url = nats.url();
    let server = Binary::start_with(node.path(), &["--journal", &url], &[("SLUICE_STORE__URL", &schema.url)]).await;
    post_keys(&client, &server.url(""), 5..10).await;
    wait_loaded(&client, &server.url("")).await;
    let stored = stored_keys(&client, &server.url("")).await;
    let expected: std::collections::HashMap<String, usize> = (0..10).map(|i| (format!("k{i}"), 1)).collect();
    assert_eq!(stored, expected, "the records of both journals, each once");
    let ready: Value = client.get(server.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["store"]["stopped"], Value::Null, "{ready}");
    assert_eq!(server.terminate(), Some(0));
}

/// Why the lake writer of `server` stopped, once `/readyz` says it did (within 30 s).
async fn lake_stopped(client: &reqwest::Client, server: &Binary) -> String {
    let started = Instant::now();
    loop {
        let ready: Value = client.get(server.url("/readyz")).send().await.unwrap().json().await.unwrap();
        if let Some(stopped) = ready["lake"]["stopped"].as_str() {
            return stopped.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the lake writer went on: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records deleted from the stream before any node archived them (a purge, or the age limit
/// passing while no node held the lake) stop the lake writer taking the lake over, saying which;
/// before, it went on from the oldest record left and the lake silently lacked them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_writer_taking_over_stops_naming_the_records_deleted_before_they_were_archived() {
    let Some(schema) = TestSchema::create() else { return };
    let nats = NatsServer::start().await;
    let (lake, first, second, third) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let client = reqwest::Client::new();
    let url = nats.url();
    let lake_url = lake.path().to_str().unwrap().to_owned();
    let with_lake = [("SLUICE_STORE__URL", schema.url.as_str()), ("SLUICE_LAKE__URL", lake_url.as_str())];
    let server = Binary::start_with(first.path(), &["--journal", &url], &with_lake).await;
    post_keys(&client, &server.url(""), 0..5).await;
    assert_eq!(server.terminate(), Some(0));
    assert_eq!(common::lake_ids(lake.path()).len(), 5, "the first node archived its records");

    // A node without the lake takes five more; then the stream loses offsets 5..8 unarchived.
    let other_lake = tempfile::tempdir().unwrap();
    let other_url = other_lake.path().to_str().unwrap().to_owned();
    let without = [("SLUICE_STORE__URL", schema.url.as_str()), ("SLUICE_LAKE__URL", other_url.as_str())];
    let server = Binary::start_with(second.path(), &["--journal", &url], &without).await;
    post_keys(&client, &server.url(""), 5..10).await;
    assert_eq!(server.terminate(), Some(0));
    let jetstream = async_nats::jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
    jetstream.get_stream("SLUICE").await.unwrap().purge().sequence(9).await.unwrap();

    let server = Binary::start_with(third.path(), &["--journal", &url], &with_lake).await;
    let stopped = lake_stopped(&client, &server).await;
    assert!(stopped.contains("records 5..8 were deleted before they were archived"), "{stopped}");
    assert_eq!(server.terminate(), Some(2), "a consumer stopped for an operator is a failed exit");

    // The node that wrote the lake, with its checkpoint at offset 5, stops too (it went on).
    let server = Binary::start_with(first.path(), &["--journal", &url], &with_lake).await;
    let stopped = lake_stopped(&client, &server).await;
    assert!(stopped.contains("records 5..8 were deleted before they were archived"), "{stopped}");
    assert_eq!(server.terminate(), Some(2));
    assert_eq!(common::lake_ids(lake.path()).len(), 5, "nothing was archived past the gap");
}

/// Starts `sluice serve` on `url` with `env` and waits up to 20 s for it to exit (killing it
/// if it does not); its exit code (`None`: it kept running) and what it printed.
async fn start_expecting_refusal(dir: &std::path::Path, url: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.to_str().unwrap(), "--journal", url])
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let code = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > Duration::from_secs(20) {
            node.kill().unwrap();
            node.wait().unwrap();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(node.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (code, stderr)
}

/// Nodes of one lease bucket must share one stream, and the nodes of one stream one lease
/// bucket: a node given another is refused at start (before, it answered 200 for records that no
/// consumer of the cluster read, or ran every consumer a second time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_given_another_stream_or_lease_bucket_than_its_cluster_is_refused_at_start() {
    let Some(schema) = TestSchema::create() else { return };
    let nats = NatsServer::start().await;
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = nats.url();
    let server = Binary::start_with(first.path(), &["--journal", &url], &[("SLUICE_STORE__URL", &schema.url)]).await;
    let store = ("SLUICE_STORE__URL", schema.url.as_str());
    let (code, stderr) =
        start_expecting_refusal(second.path(), &url, &[store, ("SLUICE_JOURNAL__STREAM", "OTHER")]).await;
    assert!(code.is_some_and(|code| code != 0), "a node of another stream started ({code:?}): {stderr}");
    assert!(
        stderr.contains("serves the nodes whose journal is the stream SLUICE, but this node's is OTHER"),
        "{stderr}"
    );
    let (code, stderr) =
        start_expecting_refusal(second.path(), &url, &[store, ("SLUICE_CLUSTER__LEASE_BUCKET", "OTHER_LEASES")]).await;
    assert_eq!(server.terminate(), Some(0));
    assert!(code.is_some_and(|code| code != 0), "a node of another lease bucket started ({code:?}): {stderr}");
    assert!(
        stderr.contains("the bucket SLUICE_LEASES, but this node's cluster.lease_bucket is OTHER_LEASES"),
        "{stderr}"
    );
}
