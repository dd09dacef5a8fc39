//! Cluster mode, the real binaries: two sluice nodes on one three-server NATS JetStream cluster,
//! one PostgreSQL schema and one lake directory. Load through both nodes while one node is
//! killed and restarted and one NATS server is stopped and started: every acknowledged record
//! ends up in the store once and in the lake once. A batch posted to one node and again to the
//! other is kept once. A dead node's consumer leases move to the survivor within 15 s.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nats::NatsCluster;
use common::{Binary, TestSchema, impression, lake_ids, store_scalar};
use serde_json::Value;

/// One cluster at a time: each is three NATS servers and two sluice nodes, and on two cores
/// three of them at once starve each other past the tests' deadlines.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The environment of a node called `node` of the cluster.
fn node_env(node: &str, nats: &NatsCluster, schema: &TestSchema, lake: &Path) -> Vec<(String, String)> {
    node_env_with(node, nats, schema, lake, None)
}

/// [`node_env`], with the configuration file `config` too.
fn node_env_with(
    node: &str,
    nats: &NatsCluster,
    schema: &TestSchema,
    lake: &Path,
    config: Option<&Path>,
) -> Vec<(String, String)> {
    let config = config.map(|c| ("SLUICE_CONFIG", c.to_str().unwrap().to_owned()));
    [
        ("SLUICE_CLUSTER__NODE", node.to_owned()),
        ("SLUICE_JOURNAL__URL", nats.urls()),
        ("SLUICE_STORE__URL", schema.url.clone()),
        ("SLUICE_LAKE__URL", lake.to_str().unwrap().to_owned()),
        ("SLUICE_LAKE__FLUSH_SECS", "1".to_owned()),
    ]
    .into_iter()
    .chain(config)
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

async fn start(dir: &Path, env: &[(String, String)]) -> Binary {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Binary::start(dir, &env).await
}

/// One Split batch of `keys`, as Split sends it.
fn batch(keys: &[String]) -> String {
    Value::Array(keys.iter().map(|k| impression(k, "f", "Production", "on", "r", 1_700_000_000_000)).collect())
        .to_string()
}

/// Waits until `sql` (a count) over the schema reaches `want`, for at most `limit`.
async fn wait_count(schema: &TestSchema, sql: &str, want: i64, limit: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let got = store_scalar(Path::new("/nonexistent"), Some(schema), sql).await;
        if got >= want || started.elapsed() > limit {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node holding lease `lease`, as node `at`'s `/readyz` shows it.
async fn holder(client: &reqwest::Client, at: &Binary, lease: &str) -> Option<String> {
    let ready: Value = client.get(at.url("/readyz")).send().await.ok()?.json().await.ok()?;
    ready["cluster"]["leases"][lease].as_str().map(str::to_owned)
}

/// Waits until node `at` shows `node` holding every one of `leases`, for at most 15 s from
/// `since`; fails with `what` otherwise.
async fn wait_held(client: &reqwest::Client, at: &Binary, node: &str, leases: &[&str], since: Instant, what: &str) {
    for lease in leases {
        while holder(client, at, lease).await.as_deref() != Some(node) {
            assert!(since.elapsed() < Duration::from_secs(15), "{what} ({lease})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_load_through_two_nodes_with_one_killed_and_a_nats_server_stopped_every_acknowledged_record_is_stored_and_archived_once()
 {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(schema) = TestSchema::create() else { return };
    let python = common::test_python("the cluster test's Kafka output (aiokafka)");
    let mut nats = NatsCluster::start().await;
    let (lake, dir_a, dir_b) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Both nodes stream to Kafka (librdkafka's mock cluster, in this process): the node holding
    // the output's lease sends.
    let kafka = rdkafka::mocking::MockCluster::new(3).unwrap();
    kafka.create_topic("sluice.impression", 6, 1).unwrap();
    let config = lake.path().with_extension("toml");
    std::fs::write(
        &config,
        format!("[[outputs]]\nname = \"kafka\"\ntype = \"kafka\"\nbrokers = \"{}\"\n", kafka.bootstrap_servers()),
    )
    .unwrap();
    let (env_a, env_b) = (
        node_env_with("a", &nats, &schema, lake.path(), Some(&config)),
        node_env_with("b", &nats, &schema, lake.path(), Some(&config)),
    );
    let nodes =
        Arc::new(Mutex::new(vec![Some(start(dir_a.path(), &env_a).await), Some(start(dir_b.path(), &env_b).await)]));
    let urls: Vec<String> =
        nodes.lock().unwrap().iter().map(|n| n.as_ref().unwrap().url("/v1/split/impressions")).collect();

    // Four senders, each posting batches of 20 new keys to the nodes in turn; a batch counts as
    // acknowledged only when a node answered 200. A refused or failed batch is sent again
    // (as Split would, to whichever node the load balancer picks), until acknowledged.
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let senders: Vec<_> = (0..4)
        .map(|sender| {
            let (urls, acknowledged, stop) = (urls.clone(), acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                let mut n = 0;
                while !stop.is_cancelled() {
                    let keys: Vec<String> = (0..20).map(|i| format!("s{sender}-b{n}-{i}")).collect();
                    let body = batch(&keys);
                    let mut attempt = 0;
                    loop {
                        let url = &urls[(n + attempt + sender) % urls.len()];
                        attempt += 1;
                        match client.post(url).body(body.clone()).send().await {
                            Ok(r) if r.status() == 200 => {
                                acknowledged.lock().unwrap().extend(keys);
                                break;
                            }
                            _ if stop.is_cancelled() && attempt > 20 => break,
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                    n += 1;
                }
            })
        })
        .collect();

    let count = || acknowledged.lock().unwrap().len();
    let wait_for = |more: usize| {
        let target = count() + more;
        let acknowledged = acknowledged.clone();
        async move {
            let started = Instant::now();
            while acknowledged.lock().unwrap().len() < target {
                assert!(started.elapsed() < Duration::from_secs(60), "ingest stalled");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(2_000).await;
    // SIGKILL node A mid-load, and start it again on its data directory.
    nodes.lock().unwrap()[0].take().unwrap().kill9();
    wait_for(1_000).await;
    nodes.lock().unwrap()[0] = Some(start(dir_a.path(), &env_a).await);
    wait_for(1_000).await;
    // Stop one NATS server mid-load, and start it again.
    nats.servers[1].kill();
    wait_for(1_000).await;
    nats.servers[1].restart().await;
    wait_for(1_000).await;
    stop.cancel();
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    // Both nodes stop gracefully: the lease holders drain what the journal holds.
    let want = acknowledged.len() as i64;
    let stored =
        wait_count(&schema, "SELECT count(DISTINCT key) FROM impressions", want, Duration::from_secs(60)).await;
    assert_eq!(stored, want, "every acknowledged impression is in PostgreSQL");
    for node in nodes.lock().unwrap().drain(..) {
        assert_eq!(node.unwrap().terminate(), Some(0), "a clean stop");
    }
    let rows = store_scalar(Path::new("/nonexistent"), Some(&schema), "SELECT count(*) FROM impressions").await;
    assert_eq!(rows, want, "each impression once in PostgreSQL");
    let stored_keys = store_scalar(
        Path::new("/nonexistent"),
        Some(&schema),
        "SELECT count(*) FROM impressions WHERE key LIKE 's%-b%-%'",
    )
    .await;
    assert_eq!(stored_keys, want, "nothing but what was sent");

    let archived = lake_ids(lake.path());
    let missing: Vec<_> = acknowledged.iter().filter(|k| !archived.contains_key(*k)).take(5).collect();
    assert!(missing.is_empty(), "acknowledged but not in the lake: {missing:?} …");
    let twice: Vec<_> = archived.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "archived more than once: {twice:?}");

    // Kafka: at least once, nothing acknowledged missing, keyed by the impression's key.
    if let Some(python) = python {
        let messages = common::kafka::read_back(&python, &kafka.bootstrap_servers(), 6, &["sluice.impression"]);
        let streamed: HashSet<String> = messages.iter().map(|m| m["key"].as_str().unwrap().to_owned()).collect();
        let missing: Vec<_> = acknowledged.iter().filter(|k| !streamed.contains(*k)).take(5).collect();
        assert!(missing.is_empty(), "acknowledged but not in Kafka: {missing:?} … ({} messages)", messages.len());
        eprintln!("Kafka holds {} messages for {} acknowledged impressions", messages.len(), acknowledged.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_posted_to_one_node_and_again_to_the_other_is_stored_and_archived_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(schema) = TestSchema::create() else { return };
    let nats = NatsCluster::start().await;
    let (lake, dir_a, dir_b) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(dir_a.path(), &node_env("a", &nats, &schema, lake.path())).await;
    let b = start(dir_b.path(), &node_env("b", &nats, &schema, lake.path())).await;
    let client = reqwest::Client::new();
    let keys: Vec<String> = (0..50).map(|i| format!("retry-{i}")).collect();
    for node in [&a, &b] {
        let answer = client.post(node.url("/v1/split/impressions")).body(batch(&keys)).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let report: Value = answer.json().await.unwrap();
        assert_eq!(report["accepted"], 50, "a re-sent record is answered as accepted: {report}");
    }
    let stored = wait_count(&schema, "SELECT count(*) FROM impressions", 50, Duration::from_secs(30)).await;
    assert_eq!(stored, 50);
    assert_eq!(a.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
    let archived = lake_ids(lake.path());
    let expected: HashMap<String, usize> = keys.iter().map(|k| (k.clone(), 1)).collect();
    assert_eq!(archived, expected, "each record once in the lake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leases_of_a_killed_node_move_to_the_surviving_node_within_15_s() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(schema) = TestSchema::create() else { return };
    let nats = NatsCluster::start().await;
    let (lake, dir_a, dir_b) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let client = reqwest::Client::new();
    let a = start(dir_a.path(), &node_env("a", &nats, &schema, lake.path())).await;
    // A starts first and takes every lease.
    let started = Instant::now();
    wait_held(&client, &a, "a", &["store", "lake"], started, "node a never took its leases").await;
    let b = start(dir_b.path(), &node_env("b", &nats, &schema, lake.path())).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(holder(&client, &b, "store").await.as_deref(), Some("a"), "b waits while a holds the store lease");

    a.kill9();
    let killed = Instant::now();
    wait_held(&client, &b, "b", &["store", "lake"], killed, "the leases did not move to b within 15 s").await;
    let moved = killed.elapsed();
    // And b really loads: a record posted now reaches the store.
    let answer = client.post(b.url("/v1/split/impressions")).body(batch(&["after".to_owned()])).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let stored =
        wait_count(&schema, "SELECT count(*) FROM impressions WHERE key = 'after'", 1, Duration::from_secs(10)).await;
    assert_eq!(stored, 1, "the new holder loads the store");
    eprintln!("the leases moved in {moved:?}");
}

/// A node that lost its leases (paused past their TTL while the other took over) shows nothing
/// of the consumers it no longer runs: before, it kept their last offsets, so their lag grew with
/// every record the other node loaded, and it refused ingest and stayed unready for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_lost_its_leases_forgets_their_lag_and_stays_ready_and_accepting() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(schema) = TestSchema::create() else { return };
    let nats = NatsCluster::start().await;
    let (lake, dir_a, dir_b) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let client = reqwest::Client::new();
    let env = |node: &str| {
        let mut env = node_env(node, &nats, &schema, lake.path());
        env.push(("SLUICE_CLUSTER__LEASE_TTL_SECS".into(), "3".into()));
        env.push(("SLUICE_BACKPRESSURE__MAX_CONSUMER_LAG".into(), "50".into()));
        env
    };
    let a = start(dir_a.path(), &env("a")).await;
    let started = Instant::now();
    wait_held(&client, &a, "a", &["store", "lake"], started, "node a never took its leases").await;
    let b = start(dir_b.path(), &env("b")).await;
    a.signal(libc::SIGSTOP);
    let paused = Instant::now();
    wait_held(&client, &b, "b", &["store", "lake"], paused, "the leases did not move to b").await;
    let keys: Vec<String> = (0..120).map(|i| format!("p{i}")).collect();
    for chunk in keys.chunks(20) {
        // b pushes back while its own consumers are more than 50 behind.
        let posted = Instant::now();
        while client.post(b.url("/v1/split/impressions")).body(batch(chunk)).send().await.unwrap().status() != 200 {
            assert!(posted.elapsed() < Duration::from_secs(20), "b kept refusing");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let stored = wait_count(&schema, "SELECT count(*) FROM impressions", 120, Duration::from_secs(20)).await;
    assert_eq!(stored, 120, "b loads the store");
    a.signal(libc::SIGCONT);

    let resumed = Instant::now();
    let ready = loop {
        let ready: Value = client.get(a.url("/readyz")).send().await.unwrap().json().await.unwrap();
        // Once a has seen the stream's end and the leases' new holder, and given up the leases.
        let caught_up = ready["journal"]["nextOffset"].as_u64() >= Some(120)
            && ready["cluster"]["leases"]["store"] == "b"
            && ready["cluster"]["leases"]["lake"] == "b";
        // The lake's lag, which every node now sees, passes 50 until b's lake writer flushes.
        if caught_up && ready["ready"] == true || resumed.elapsed() > Duration::from_secs(20) {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ready["ready"], true, "a, now standing by, is ready: {ready}");
    assert_eq!(ready["consumers"]["store"]["ok"], true, "a shows b's store loader, caught up: {ready}");
    let answer = client.post(a.url("/v1/split/impressions")).body(batch(&["late".to_owned()])).send().await.unwrap();
    assert_eq!(answer.status(), 200, "a accepts: {:?}", answer.text().await);
}

/// A consumer's lag pushes ingest back on every node, not only on the one running it: a stream
/// output whose server is down, run by node a, makes node b refuse too once its lag passes the
/// output's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_lagging_on_one_node_makes_every_node_push_ingest_back() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(schema) = TestSchema::create() else { return };
    let nats = NatsCluster::start().await;
    let (lake, dir_a, dir_b, config) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let dead = common::nats::free_port();
    let config = config.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[[outputs]]\nname = \"down\"\ntype = \"nats\"\nurl = \"nats://127.0.0.1:{dead}\"\nmax_lag_records = 20\n"
        ),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let a = start(dir_a.path(), &node_env_with("a", &nats, &schema, lake.path(), Some(&config))).await;
    let started = Instant::now();
    wait_held(&client, &a, "a", &["output.down"], started, "node a never took the output's lease").await;
    let b = start(dir_b.path(), &node_env_with("b", &nats, &schema, lake.path(), Some(&config))).await;
    let keys: Vec<String> = (0..30).map(|i| format!("q{i}")).collect();
    let answer = client.post(b.url("/v1/split/impressions")).body(batch(&keys)).send().await.unwrap();
    assert_eq!(answer.status(), 200, "b accepts while the output is within its limit");
    let posted = Instant::now();
    let refusal = loop {
        let answer = client.post(b.url("/v1/split/impressions")).body(batch(&["r".to_owned()])).send().await.unwrap();
        if answer.status() == 503 {
            break answer.text().await.unwrap();
        }
        assert!(posted.elapsed() < Duration::from_secs(15), "b still accepts with the output 30 behind");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(refusal.contains("output:down"), "{refusal}");
    let ready: Value = client.get(b.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["ready"], false, "{ready}");
}
