//! Erasure and suppression of a person (issue 12): through the real server's HTTP API, on both
//! store backends, with the lake read back by DuckDB (an independent reader); and a SIGKILL of
//! the real binary during an erasure, finished at the restart.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Backend, Binary, InProcess, impression, on_both_backends, store_scalar};
use serde_json::{Value, json};
use sluice::lake::LakeFormat;

/// Ann's identity cluster: userId `ann`, her devices `a1` and `a2`; Bob shares nothing with her.
fn events() -> Vec<Value> {
    let event = |n: u32, kind: &str, user: Option<&str>, anon: &str| {
        let mut e = json!({"type": kind, "messageId": format!("m{n}"), "anonymousId": anon,
            "timestamp": format!("2026-11-01T10:{n:02}:00Z"),
            "context": {"page": {"url": "https://shop.example/", "referrer": "https://www.google.com/"}}});
        if let Some(user) = user {
            e["userId"] = user.into();
        }
        e
    };
    vec![
        event(1, "page", None, "a1"),
        event(2, "identify", Some("ann"), "a1"),
        event(3, "page", None, "a2"),
        event(4, "identify", Some("ann"), "a2"),
        event(5, "page", None, "b1"),
        event(6, "identify", Some("bob"), "b1"),
        event(7, "page", Some("bob"), "b1"),
    ]
}

fn impressions() -> Value {
    Value::Array(
        ["ann", "a1", "bob", "b1", "carl"]
            .iter()
            .enumerate()
            .map(|(i, k)| impression(k, "checkout", "Production", "on", "default rule", 1_762_000_000_000 + i as i64))
            .collect(),
    )
}

/// Posts Ann's and the others' records and waits until the store and the lake hold them all.
async fn post_everything(app: &InProcess) {
    assert_eq!(app.post_gzip(&impressions()).await.0, 200);
    let events = serde_json::to_vec(&json!({"batch": events()})).unwrap();
    let (status, answer) = app.post("/v1/batch", events, &[("content-type", "application/json")]).await;
    assert_eq!(status, 200, "{answer}");
    app.wait_loaded().await;
    wait_archived(&app.client, &app.base).await;
}

/// Waits until the lake writer has archived everything journaled.
async fn wait_archived(client: &reqwest::Client, base: &str) {
    let started = Instant::now();
    loop {
        let ready: Value = client.get(format!("{base}/readyz")).send().await.unwrap().json().await.unwrap();
        if ready["consumers"]["lake"]["lag"].as_u64() == Some(0) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the lake did not catch up: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delete(app: &InProcess, path: &str) -> (u16, Value) {
    let answer = app.client.delete(app.url(path)).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap())
}

/// Every record of the lake as DuckDB reads it (one JSON text per row, sorted), by kind.
fn lake_rows(python: &Path, lake: &Path) -> Value {
    let script = r#"
import json, sys, duckdb
lake = sys.argv[1]
out = {}
for kind in ["split_impression", "segment_event"]:
    rows = duckdb.sql(f"select to_json(t)::varchar from read_parquet('{lake}/{kind}/**/*.parquet') t").fetchall()
    out[kind] = sorted(r[0] for r in rows)
print(json.dumps(out))
"#;
    let out = std::process::Command::new(python).args(["-c", script]).arg(lake).output().unwrap();
    assert!(out.status.success(), "duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The rows in `rows` that name none of `ids`.
fn others(rows: &Value, ids: &[&str]) -> Vec<String> {
    let names =
        |row: &Value| ["key", "userId", "anonymousId"].iter().any(|c| ids.contains(&row[c].as_str().unwrap_or("")));
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .filter(|r| !names(&serde_json::from_str(r).unwrap()))
        .collect()
}

async fn an_erasure_removes_the_person_from_store_and_lake_and_leaves_everyone_else_identical(backend: Backend) {
    let Some(python) = common::test_python("the DuckDB read-back of an erasure") else { return };
    let Some(app) = InProcess::start_on(backend, |c| {
        c.lake.format = LakeFormat::Parquet;
        c.lake.flush_secs = 1;
    })
    .await
    else {
        return;
    };
    post_everything(&app).await;
    // Refused records name people too: one of Ann's (a bad timestamp) and one of Bob's.
    let refused = json!({"batch": [
        {"type": "track", "event": "x", "userId": "ann", "messageId": "bad-1", "timestamp": "yesterday"},
        {"type": "track", "event": "x", "userId": "bob", "messageId": "bad-2", "timestamp": "yesterday"},
    ]});
    let (status, _) =
        app.post("/v1/batch", refused.to_string().into_bytes(), &[("content-type", "application/json")]).await;
    assert_eq!(status, 400, "both refused");
    let dead_letters = || std::fs::read_to_string(app.dir.path().join("dead-letter/current.ndjson")).unwrap();
    assert!(dead_letters().contains("bad-1") && dead_letters().contains("bad-2"));
    let lake = app.dir.path().join("lake");
    let ann = ["ann", "a1", "a2"];
    let before = lake_rows(&python, &lake);
    let (_, bob_events) = app.get("/api/events?userId=bob&anonymousId=b1").await;
    let (_, other_impressions) = app.get("/api/impressions?key=bob&key=b1&key=carl&format=ndjson").await;

    let (status, answer) = delete(&app, "/api/user/ann").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ids"], 3, "ann, a1, a2: {answer}");
    assert_eq!(answer["store"], json!({"events": 4, "impressions": 2}), "{answer}");
    assert_eq!(answer["lake"]["recordsRemoved"], 6, "{answer}");
    assert!(answer["lake"]["objectsRewritten"].as_u64().unwrap() >= 2, "{answer}");
    assert_eq!(answer["suppressed"], false);
    assert_eq!(answer["deadLetters"], 1, "{answer}");
    assert!(!dead_letters().contains("bad-1") && dead_letters().contains("bad-2"), "{}", dead_letters());

    let schema = app.schema.as_ref();
    let sql = "SELECT count(*) FROM events WHERE user_id = 'ann' OR anonymous_id IN ('a1', 'a2')";
    assert_eq!(store_scalar(app.dir.path(), schema, sql).await, 0);
    let sql = "SELECT count(*) FROM impressions WHERE key IN ('ann', 'a1')";
    assert_eq!(store_scalar(app.dir.path(), schema, sql).await, 0);
    assert_eq!(app.get("/api/events?userId=bob&anonymousId=b1").await.1, bob_events, "Bob's events are untouched");
    assert_eq!(app.get("/api/impressions?key=bob&key=b1&key=carl&format=ndjson").await.1, other_impressions);
    assert_eq!(
        app.get("/api/user/ann").await.1,
        r#"{"anonymousIds":[],"sessions":[],"userIds":[],"firstTouch":null,"lastTouch":null}"#
    );

    let after = lake_rows(&python, &lake);
    for kind in ["split_impression", "segment_event"] {
        assert_eq!(
            others(&after[kind], &ann).len(),
            after[kind].as_array().unwrap().len(),
            "{kind}: none of Ann's rows is left"
        );
        assert_eq!(
            others(&after[kind], &ann),
            others(&before[kind], &ann),
            "{kind}: everyone else's rows are identical"
        );
    }

    let (status, again) = delete(&app, "/api/user/ann").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["store"], json!({"events": 0, "impressions": 0}));
    assert_eq!(again["lake"], json!({"objectsRewritten": 0, "recordsRemoved": 0}));

    let audit = std::fs::read_to_string(app.dir.path().join("privacy/audit.log")).unwrap();
    let entries: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), 2, "{audit}");
    assert_eq!(entries[0]["what"], "erase user");
    // No token is configured: the admin is whoever is on this machine.
    assert_eq!(entries[0]["who"], "loopback");
    assert_eq!(entries[0]["counts"]["store"], json!({"events": 4, "impressions": 2}));
    assert!(!audit.contains("\"ann\"") && !audit.contains("\"a1\""), "no erased id in clear: {audit}");
    app.stop().await;
}

on_both_backends!(an_erasure_removes_the_person_from_store_and_lake_and_leaves_everyone_else_identical);

#[tokio::test]
async fn a_suppression_drops_the_persons_later_records_at_ingest_until_it_is_lifted() {
    let app = InProcess::start_with(|c| c.lake.flush_secs = 1).await;
    post_everything(&app).await;
    let (status, answer) = delete(&app, "/api/user/ann?suppress=true").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["suppressed"], true);
    let erasure = answer["erasure"].as_str().unwrap().to_owned();

    let (status, list) = app.get("/api/suppressions").await;
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["suppressions"][0]["id"], erasure.as_str());
    assert_eq!(list["suppressions"][0]["ids"].as_array().unwrap().len(), 3);
    assert!(!list.to_string().contains("\"ann\""), "hashes only: {list}");

    // Later records of any id of the cluster: accepted (no retry), never stored.
    let later = json!([
        impression("a2", "checkout", "Production", "off", "r", 1_762_000_100_000),
        impression("dave", "checkout", "Production", "off", "r", 1_762_000_100_000)
    ]);
    assert_eq!(app.post_gzip(&later).await, (200, json!({"accepted": 2, "rejected": 0})));
    let event = json!({"type": "track", "event": "Bought", "anonymousId": "a1", "messageId": "late"});
    let (status, _) =
        app.post("/v1/track", event.to_string().into_bytes(), &[("content-type", "application/json")]).await;
    assert_eq!(status, 200);
    app.wait_loaded().await;
    let dir = app.dir.path();
    assert_eq!(store_scalar(dir, None, "SELECT count(*) FROM impressions WHERE key IN ('a2', 'dave')").await, 1);
    assert_eq!(store_scalar(dir, None, "SELECT count(*) FROM events WHERE message_id = 'late'").await, 0);
    // Their refused records are answered as refused, but not kept in the dead-letter area either.
    let invalid = json!([{"key": "a2", "split": "checkout"}, {"key": "erin", "split": "checkout"}]);
    let (status, answer) = app.post_gzip(&invalid).await;
    assert_eq!((status, &answer["rejected"]), (400, &json!(2)), "{answer}");
    let letters = std::fs::read_to_string(dir.join("dead-letter/current.ndjson")).unwrap();
    assert!(letters.contains("\"erin\"") && !letters.contains("\"a2\""), "{letters}");
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("sluice_source_records_total") && l.contains("suppressed")),
        "{metrics}"
    );

    let (status, lifted) = delete(&app, &format!("/api/suppressions/{erasure}")).await;
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(delete(&app, &format!("/api/suppressions/{erasure}")).await.0, 404);
    assert_eq!(app.post_gzip(&later).await.0, 200);
    app.wait_loaded().await;
    assert_eq!(
        store_scalar(dir, None, "SELECT count(*) FROM impressions WHERE key = 'a2'").await,
        1,
        "lifted: stored again"
    );
    let audit = std::fs::read_to_string(dir.join("privacy/audit.log")).unwrap();
    assert!(audit.contains("lift suppression"), "{audit}");
    app.stop().await;
}

#[tokio::test]
async fn a_cluster_over_the_bound_is_refused_whole_with_409() {
    let app = InProcess::start_with(|c| {
        c.attribution.max_cluster_ids = 2;
        c.lake.flush_secs = 1;
    })
    .await;
    post_everything(&app).await;
    let (status, answer) = delete(&app, "/api/user/ann").await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("attribution.max_cluster_ids"), "{answer}");
    assert_eq!(store_scalar(app.dir.path(), None, "SELECT count(*) FROM events WHERE user_id = 'ann'").await, 2);
    app.stop().await;
}

/// The job files of the erasures in `data_dir`.
fn jobs(data_dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("privacy/erasures")) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_during_an_erasure_is_finished_at_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    // The lake keeps its buffers (an hour) until the erasure asks for them.
    let env = [("SLUICE_LAKE__FLUSH_SECS", "3600")];
    let b = Binary::start(dir.path(), &env).await;
    let post =
        |path: &str, body: Vec<u8>, kind: &str| client.post(b.url(path)).header("content-type", kind).body(body).send();
    assert!(
        post("/v1/split/impressions", impressions().to_string().into_bytes(), "application/json")
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let batch = serde_json::to_vec(&json!({"batch": events()})).unwrap();
    assert!(post("/v1/batch", batch, "application/json").await.unwrap().status().is_success());
    common::wait_loaded(&client, &format!("http://{}", b.addr)).await;
    // The lake cannot write segment events (a file where their folder goes): the erasure waits
    // for the lake writer, its job saved, when it is killed.
    let blocker = dir.path().join("lake/segment_event");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, "not a folder").unwrap();
    let erase = tokio::spawn(client.delete(b.url("/api/user/ann")).send());
    let started = Instant::now();
    while jobs(dir.path()).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "the erasure job was never saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.kill9();
    assert!(erase.await.unwrap().is_err(), "killed before answering");
    let pending = jobs(dir.path());
    assert_eq!(pending[0]["done"], false, "{pending:?}");
    assert_eq!(
        store_scalar(dir.path(), None, "SELECT count(*) FROM events WHERE user_id = 'ann'").await,
        2,
        "not erased yet"
    );

    std::fs::remove_file(&blocker).unwrap();
    let b = Binary::start(dir.path(), &env).await;
    let started = Instant::now();
    while jobs(dir.path())[0]["done"] != true {
        assert!(started.elapsed() < Duration::from_secs(60), "the erasure was not resumed: {:?}", jobs(dir.path()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = &jobs(dir.path())[0];
    assert_eq!(job["store"], json!({"events": 4, "impressions": 2}), "{job}");
    assert!(job.get("ids").is_none(), "no id in clear once done: {job}");
    let sql = "SELECT count(*) FROM events WHERE user_id = 'ann' OR anonymous_id IN ('a1', 'a2')";
    assert_eq!(store_scalar(dir.path(), None, sql).await, 0);
    assert_eq!(store_scalar(dir.path(), None, "SELECT count(*) FROM events WHERE user_id = 'bob'").await, 2);
    let audit = std::fs::read_to_string(dir.path().join("privacy/audit.log")).unwrap();
    assert_eq!(audit.lines().count(), 1, "{audit}");
    assert_eq!(b.terminate(), Some(0));
    // Everyone else is archived, none of Ann's records is.
    let mut lake = String::new();
    for entry in walk(&dir.path().join("lake")) {
        if entry.to_string_lossy().ends_with(".json.gz") {
            let mut text = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(std::fs::File::open(&entry).unwrap()),
                &mut text,
            )
            .unwrap();
            lake.push_str(&text);
        }
    }
    assert!(lake.contains("\"bob\"") && lake.contains("\"carl\""), "{lake}");
    assert!(!lake.contains("\"ann\"") && !lake.contains("\"a1\"") && !lake.contains("\"a2\""), "{lake}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_persons_records_still_in_the_journal_are_not_loaded_again_when_the_journal_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let b = Binary::start(dir.path(), &[]).await;
    let post = |path: &str, body: Vec<u8>| {
        client.post(b.url(path)).header("content-type", "application/json").body(body).send()
    };
    assert!(post("/v1/split/impressions", impressions().to_string().into_bytes()).await.unwrap().status().is_success());
    let batch = serde_json::to_vec(&json!({"batch": events()})).unwrap();
    assert!(post("/v1/batch", batch).await.unwrap().status().is_success());
    common::wait_loaded(&client, &format!("http://{}", b.addr)).await;
    let answer = client.delete(b.url("/api/user/ann")).send().await.unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    assert_eq!(b.terminate(), Some(0));

    // The loader reads the whole journal again, Ann's records included.
    let data_dir = dir.path().to_str().unwrap();
    let (status, _, stderr) = common::sluice(&["store", "adopt-journal", "--data-dir", data_dir], &[]);
    assert_eq!(status, 0, "{stderr}");
    let b = Binary::start(dir.path(), &[]).await;
    common::wait_loaded(&client, &format!("http://{}", b.addr)).await;
    let sql = "SELECT count(*) FROM events WHERE user_id = 'ann' OR anonymous_id IN ('a1', 'a2')";
    assert_eq!(store_scalar(dir.path(), None, sql).await, 0, "the erasure ledger keeps them out");
    assert_eq!(store_scalar(dir.path(), None, "SELECT count(*) FROM impressions WHERE key IN ('ann', 'a1')").await, 0);
    assert_eq!(store_scalar(dir.path(), None, "SELECT count(*) FROM events WHERE user_id = 'bob'").await, 2);
    assert_eq!(store_scalar(dir.path(), None, "SELECT count(*) FROM impressions").await, 3);
    assert_eq!(b.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_forget_user_erases_through_the_running_server_and_says_what_to_do_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let b = Binary::start(dir.path(), &[]).await;
    let batch = serde_json::to_vec(&json!({"batch": events()})).unwrap();
    let posted = client.post(b.url("/v1/batch")).header("content-type", "application/json").body(batch).send();
    assert!(posted.await.unwrap().status().is_success());
    common::wait_loaded(&client, &format!("http://{}", b.addr)).await;
    let url = b.url("");
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        common::sluice(&["forget", "user", "ann", "--suppress", "--url", &url], &[])
    })
    .await
    .unwrap();
    assert_eq!(status, 0, "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((answer["store"]["events"].as_u64(), answer["suppressed"].as_bool()), (Some(4), Some(true)), "{answer}");
    assert_eq!(store_scalar(dir.path(), None, "SELECT count(*) FROM events WHERE user_id = 'ann'").await, 0);
    let addr = b.addr.to_string();
    assert_eq!(b.terminate(), Some(0));

    let (status, _, stderr) = common::sluice(
        &["forget", "user", "ann", "--url", &format!("http://{addr}")],
        &[("SLUICE_TOKEN", "sluice_some-admin-token")],
    );
    assert_ne!(status, 0);
    assert!(stderr.contains("start `sluice serve`"), "{stderr}");
    assert!(!stderr.contains("names no setting"), "SLUICE_TOKEN is the CLI's, not an unknown setting: {stderr}");
    let (status, _, stderr) = common::sluice(&["forget", "user", "", "--url", &format!("http://{addr}")], &[]);
    assert_eq!(status, 2, "an empty id is refused before any request: {stderr}");
    assert!(stderr.contains("<ID>"), "{stderr}");
}

#[tokio::test]
async fn a_suppression_asked_after_an_erasure_covers_the_whole_cluster_the_store_no_longer_shows() {
    let app = InProcess::start_with(|c| c.lake.flush_secs = 1).await;
    post_everything(&app).await;
    assert_eq!(delete(&app, "/api/user/ann").await.0, 200);
    let (status, answer) = delete(&app, "/api/user/ann?suppress=true").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["ids"].as_u64(), answer["suppressed"].as_bool()), (Some(3), Some(true)), "{answer}");
    let later = json!([impression("a2", "checkout", "Production", "off", "r", 1_762_000_100_000)]);
    assert_eq!(app.post_gzip(&later).await, (200, json!({"accepted": 1, "rejected": 0})));
    app.wait_loaded().await;
    assert_eq!(store_scalar(app.dir.path(), None, "SELECT count(*) FROM impressions WHERE key = 'a2'").await, 0);
    app.stop().await;
}
