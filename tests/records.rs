//! What a record may hold and what happens when the store refuses one: a NUL is refused at ingest
//! by name, a batch the store refuses for good is split until the one record at fault is found and
//! dead-lettered (loading goes on), the store's own message reaches `/readyz`, the Tracking API's
//! batch context cannot multiply a request's size, and a client's field never poses as sluice's own.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Backend, InProcess, TestSchema, impression};
use serde_json::{Value, json};
use sluice::config::Config;
use sluice::journal::file::FileJournal;
use sluice::journal::{Journal as _, Record};
use sluice::record::{RecordId, RecordKind};

const WEBHOOK: &str = "/v1/split/impressions";

/// Runs `sql` (any statements) directly on the store that `dir` or `schema` holds.
async fn store_exec(dir: &Path, schema: Option<&TestSchema>, sql: &str) {
    match schema {
        None => {
            let db = rusqlite::Connection::open(dir.join("store.sqlite")).unwrap();
            db.execute_batch(sql).unwrap();
        }
        Some(schema) => {
            let (url, sql) = (schema.url.clone(), sql.to_owned());
            tokio::task::spawn_blocking(move || {
                let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
                client.batch_execute(&sql).unwrap();
            })
            .await
            .unwrap()
        }
    }
}

/// `/readyz` as JSON.
async fn readyz(s: &InProcess) -> Value {
    serde_json::from_str(&s.get("/readyz").await.1).unwrap()
}

/// Waits up to `secs` for the store loader to catch up; false if it did not.
async fn loaded_within(s: &InProcess, secs: u64) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        if readyz(s).await["consumers"]["store"]["lag"].as_u64() == Some(0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Everything in the dead-letter area, one JSON value per line.
fn dead_letters(s: &InProcess) -> Vec<Value> {
    dead_letters_in(s.dir.path())
}

/// Everything in the dead-letter area of the data directory `data`.
fn dead_letters_in(data: &Path) -> Vec<Value> {
    let mut lines = Vec::new();
    for file in std::fs::read_dir(data.join("dead-letter")).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        lines.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    lines
}

/// The value of the first `/metrics` sample whose line starts with `series`.
async fn metric(s: &InProcess, series: &str) -> f64 {
    let (_, text) = s.get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"))
}

async fn a_nul_in_a_stored_text_field_is_refused_at_ingest_naming_the_field(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let cases: &[(&str, &str, &str)] = &[
        ("/v1/track", r#"{"type":"track","event":"x\u0000y","userId":"u1"}"#, "event"),
        ("/v1/identify", r#"{"userId":"u\u0000"}"#, "userId"),
        ("/v1/page", r#"{"anonymousId":"a","context":{"page":{"url":"https://x.test/\u0000"}}}"#, "context.page.url"),
        ("/v1/segment/webhook", r#"{"type":"group","userId":"u","groupId":"g\u0000"}"#, "groupId"),
    ];
    for (path, body, field) in cases {
        let (status, answer) = s.post(path, body.as_bytes().to_vec(), &[]).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        let named = answer["field"].as_str().or(answer["errors"][0]["field"].as_str());
        assert_eq!(named, Some(*field), "{path} {body}: {answer}");
        assert!(answer.to_string().contains("NUL"), "{answer}");
    }
    let mut bad = impression("k\u{0}ey", "s", "Production", "on", "default rule", 1000);
    let (status, answer) =
        s.post_gzip(&json!([impression("good", "s", "Production", "on", "default rule", 1000), bad.clone()])).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(1), Some(1)), "{answer}");
    assert_eq!(answer["errors"][0]["field"], "key", "{answer}");
    bad["key"] = json!("k");
    bad["properties"] = json!("{\"a\":\"\u{0}\"}");
    let (status, answer) = s.post_gzip(&json!([bad])).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "properties", "{answer}");
    // What was accepted loads: the store is not wedged. A NUL escaped inside the JSON of
    // `properties` is fine: that column is JSON text, where it stays `\u0000`.
    let body = br#"{"event":"fine","userId":"u1","properties":{"note":"a\u0000b"}}"#;
    let (status, _) = s.post("/v1/track", body.to_vec(), &[]).await;
    assert_eq!(status, 200);
    assert!(loaded_within(&s, 20).await, "the store loader is stuck: {}", readyz(&s).await);
    assert_eq!(readyz(&s).await["store"]["healthy"], true);
}

/// Makes the store refuse impressions whose key is `poison`, as a constraint the data breaks
/// would (SQLite has no `ADD CONSTRAINT`: a trigger raising a constraint error stands in).
async fn poison_key(s: &InProcess) {
    let sql = match s.schema {
        None => {
            "CREATE TRIGGER poison BEFORE INSERT ON impressions WHEN NEW.key = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'the key poison is not allowed'); END;"
        }
        Some(_) => "ALTER TABLE impressions ADD CONSTRAINT no_poison CHECK (key <> 'poison')",
    };
    store_exec(s.dir.path(), s.schema.as_ref(), sql).await;
}

async fn a_record_the_store_refuses_for_good_is_dead_lettered_and_loading_goes_on(b: Backend) {
    let Some(s) = InProcess::start_on(b, |c| c.store.batch_rows = 1000).await else { return };
    assert_eq!(s.post_gzip(&json!([impression("first", "s", "P", "on", "r", 1)])).await.0, 200);
    s.wait_loaded().await;
    poison_key(&s).await;
    let keys = ["a", "b", "c", "poison", "d", "e", "f"];
    let batch: Vec<Value> =
        keys.iter().enumerate().map(|(i, k)| impression(k, "s", "P", "on", "r", 10 + i as i64)).collect();
    let (status, answer) = s.post_gzip(&Value::Array(batch)).await;
    assert_eq!(status, 200, "ingest accepts it: only the store refuses it; {answer}");
    assert!(loaded_within(&s, 20).await, "the loader is stuck on the refused record: {}", readyz(&s).await);
    let count = |sql| common::store_scalar(s.dir.path(), s.schema.as_ref(), sql);
    assert_eq!(count("SELECT COUNT(*) FROM impressions").await, 7, "every other record is stored");
    assert_eq!(count("SELECT COUNT(*) FROM impressions WHERE key = 'poison'").await, 0);
    let dead: Vec<Value> = dead_letters(&s).into_iter().filter(|d| d["source"] == "store").collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["record"]["key"], "poison");
    let reason = dead[0]["reason"].as_str().unwrap();
    let expected = if s.schema.is_none() { "the key poison is not allowed" } else { "no_poison" };
    assert!(reason.contains(expected), "the reason carries the database's message: {reason}");
    assert!(metric(&s, "sluice_store_rows_total{result=\"dead_lettered\"}").await >= 1.0);
    // Loading goes on after it.
    assert_eq!(s.post_gzip(&json!([impression("later", "s", "P", "on", "r", 99)])).await.0, 200);
    assert!(loaded_within(&s, 20).await);
    assert_eq!(count("SELECT COUNT(*) FROM impressions").await, 8);
    assert_eq!(readyz(&s).await["store"]["healthy"], true);
}

async fn an_entry_the_loader_cannot_read_is_dead_lettered_not_only_logged(b: Backend) {
    // A journal written by a sluice from before the NUL rule: the record was valid then, and
    // today's parser refuses it.
    let data = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(&data.path().join("journal"), Config::default().journal.file()).unwrap();
    let record = |imp: Value| Record {
        kind: RecordKind::SplitImpression,
        received_at_ms: 1_000,
        id: RecordId(u128::from(imp["time"].as_u64().unwrap())),
        payload: imp.to_string().into(),
    };
    let records = vec![
        record(impression("before", "s", "P", "on", "r", 1)),
        record(impression("n\u{0}l", "s", "P", "on", "r", 2)),
        record(impression("after", "s", "P", "on", "r", 3)),
    ];
    journal.append(records).await.unwrap();
    journal.close().await;
    let dir = data.path().to_owned();
    let Some(s) = InProcess::start_on(b, move |c| c.data_dir = dir).await else { return };
    assert!(loaded_within(&s, 20).await, "{}", readyz(&s).await);
    let count = common::store_scalar(data.path(), s.schema.as_ref(), "SELECT COUNT(*) FROM impressions").await;
    assert_eq!(count, 2);
    let dead = dead_letters_in(data.path());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0]["source"].as_str(), dead[0]["index"].as_u64()), (Some("store"), Some(1)), "{dead:?}");
    assert_eq!(dead[0]["record"]["key"], "n\u{0}l");
    assert!(dead[0]["reason"].as_str().unwrap().contains("NUL"), "{dead:?}");
}

#[tokio::test]
async fn readyz_shows_postgresqls_own_message_for_a_store_error() {
    let Some(s) = InProcess::start_on(Backend::Postgres, |_| {}).await else { return };
    assert_eq!(s.post_gzip(&json!([impression("first", "s", "P", "on", "r", 1)])).await.0, 200);
    s.wait_loaded().await;
    // An error that is not the data's fault (a trigger's own exception): retried, and shown.
    store_exec(
        s.dir.path(),
        s.schema.as_ref(),
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           RAISE EXCEPTION 'the archive is read-only today' USING DETAIL = 'maintenance window'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON impressions FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .await;
    assert_eq!(s.post_gzip(&json!([impression("second", "s", "P", "on", "r", 2)])).await.0, 200);
    let started = Instant::now();
    let error = loop {
        if let Some(e) = readyz(&s).await["store"]["lastError"].as_str() {
            break e.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no store error shown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for part in ["the archive is read-only today", "maintenance window", "P0001", "ERROR"] {
        assert!(error.contains(part), "`{part}` missing from {error}");
    }
    assert!(!error.contains("db error"), "{error}");
    store_exec(s.dir.path(), s.schema.as_ref(), "DROP TRIGGER refuse ON impressions").await;
    assert!(loaded_within(&s, 30).await, "retried until the store took it");
}

fn track(n: usize) -> Value {
    json!({"type": "track", "event": "E", "userId": format!("u{n}")})
}

async fn the_batch_context_counts_toward_each_events_32_kb(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let body = json!({"batch": [track(1), track(2)], "context": {"pad": "x".repeat(32 * 1024)}});
    let (status, answer) = s.post("/v1/batch", body.to_string().into_bytes(), &[]).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["rejected"], 2, "{answer}");
    assert!(answer["errors"][0]["reason"].as_str().unwrap().contains("32 KB"), "{answer}");
    let body = json!({"batch": [track(1)], "context": {"pad": "x".repeat(30 * 1024)}});
    assert_eq!(s.post("/v1/batch", body.to_string().into_bytes(), &[]).await.0, 200, "just under the limit");
}

#[tokio::test]
async fn a_tracking_api_request_cannot_expand_past_its_bounds() {
    let s = InProcess::start_with(|c| c.limits.max_batch_records = 50).await;
    let items: Vec<Value> = (0..51).map(track).collect();
    let (status, answer) = s.post("/v1/batch", json!({ "batch": items }).to_string().into_bytes(), &[]).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("limits.max_batch_records"), "{answer}");

    // The default bound on what one request expands to: 8 MiB. 400 events of 20 KB each would
    // journal 8 MB from a 20 KB request.
    let items: Vec<Value> = (0..40).map(track).collect();
    let body = json!({"batch": items, "context": {"pad": "x".repeat(20 * 1024)}}).to_string();
    let s = InProcess::start_with(|c| c.segment.max_expanded_bytes = 400 * 1024).await;
    let (status, answer) = s.post("/v1/batch", body.into_bytes(), &[]).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("segment.max_expanded_bytes"), "{answer}");
    let (_, stored) = s.get("/api/events").await;
    assert_eq!(stored, "", "nothing of it was accepted");
    let items: Vec<Value> = (0..420).map(track).collect();
    let body = json!({"batch": items, "context": {"pad": "x".repeat(20 * 1024)}}).to_string();
    let s = InProcess::start().await;
    let (status, answer) = s.post("/v1/batch", body.into_bytes(), &[]).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("8388608"), "{answer}");
}

async fn a_clients_field_never_poses_as_sluices_own(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let mut imp = impression("k", "s", "P", "on", "r", 1000);
    imp["receivedAt"] = json!(1);
    imp["_receivedAt"] = json!("taken");
    assert_eq!(s.post_gzip(&json!([imp])).await.0, 200);
    let event = json!({"type": "track", "event": "E", "userId": "u", "sluice": {"arrivedAt": 1, "source": "spoof"}});
    assert_eq!(s.post("/v1/track", event.to_string().into_bytes(), &[]).await.0, 200);
    s.wait_loaded().await;
    let (status, text) = s.get("/api/impressions?format=ndjson").await;
    assert_eq!(status, 200);
    assert_eq!(text.matches("\"receivedAt\":").count(), 1, "{text}");
    let row: Value = serde_json::from_str(text.trim()).unwrap();
    assert!(row["receivedAt"].as_i64().unwrap() > 1_700_000_000_000, "sluice's own time wins: {row}");
    assert_eq!(row["__receivedAt"], 1, "the client's is kept under another name: {row}");
    assert_eq!(row["_receivedAt"], "taken", "{row}");
    let (_, text) = s.get("/api/events").await;
    let stored: Value = serde_json::from_str(text.trim()).unwrap();
    assert!(stored["sluice"]["arrivedAt"].as_i64().unwrap() > 1_700_000_000_000, "{stored}");
    assert_eq!(stored["_sluice"], json!({"arrivedAt": 1, "source": "spoof"}), "{stored}");
}

#[tokio::test]
async fn the_largest_future_tolerance_does_not_break_ingest() {
    // A larger one is refused at start (next test), in process too since the configuration is
    // resolved once by `Server::start`.
    let s = InProcess::start_with(|c| c.segment.future_tolerance_ms = sluice::config::MAX_FUTURE_TOLERANCE_MS).await;
    let event = json!({"type": "track", "event": "E", "userId": "u", "timestamp": "2999-01-01T00:00:00Z"});
    for path in ["/v1/track", "/v1/segment/webhook"] {
        let (status, answer) = s.post(path, event.to_string().into_bytes(), &[]).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
}

#[test]
fn a_future_tolerance_beyond_a_year_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = common::sluice(
        &["migrate", "--data-dir", dir.path().to_str().unwrap()],
        &[("SLUICE_SEGMENT__FUTURE_TOLERANCE_MS", &i64::MAX.to_string())],
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("segment.future_tolerance_ms"), "{stderr}");
}

#[tokio::test]
async fn a_record_over_the_journals_per_record_limit_is_413_with_its_size_not_503() {
    let s = InProcess::start_with(|c| {
        c.limits.max_body_bytes = 40 << 20;
        c.limits.max_decompressed_bytes = 40 << 20;
    })
    .await;
    let mut imp = impression("k", "s", "P", "on", "r", 1000);
    imp["huge"] = json!("x".repeat(17 << 20));
    let (status, answer) =
        s.post(WEBHOOK, json!([impression("ok", "s", "P", "on", "r", 1), imp]).to_string().into_bytes(), &[]).await;
    assert_eq!(status, 413, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("16777216 bytes per record"), "{error}");
    let (_, stored) = s.get("/api/impressions?format=ndjson").await;
    assert_eq!(stored, "", "nothing of the request was accepted");
}

/// The files and directories `strace` saw the process fsync, from `-y` output (`fsync(7</path>)`;
/// a call another thread interrupted is split over two lines, the path on the first).
fn fsynced_paths(trace: &str) -> std::collections::HashSet<std::path::PathBuf> {
    trace
        .lines()
        .filter(|l| l.contains("fsync("))
        .filter_map(|l| Some(std::path::PathBuf::from(l.split_once('<')?.1.split_once('>')?.0)))
        .collect()
}

#[tokio::test]
async fn the_local_lake_fsyncs_every_directory_it_creates() {
    // Durability of a directory entry cannot be seen without pulling the power; what can be seen
    // is the fsync that makes it durable, so the real binary runs under strace.
    if std::process::Command::new("strace").arg("-V").output().is_err() {
        eprintln!("strace is not installed: skipping the lake's directory fsync test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sluice = common::Binary::start(&data, &[]).await;
    let trace = dir.path().join("trace.txt");
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .args(["-p", &sluice.child.id().to_string()])
        .spawn()
        .unwrap();
    // strace attaches to every thread before the first traced call it reports.
    let started = Instant::now();
    while std::fs::metadata(&trace).map_or(true, |m| m.len() == 0) && started.elapsed() < Duration::from_secs(5) {
        let _ = reqwest::get(sluice.url("/readyz")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Ok(Some(status)) = strace.try_wait()
        && !status.success()
    {
        eprintln!("strace cannot attach here (ptrace is not permitted): skipping the lake's directory fsync test");
        return;
    }
    let client = reqwest::Client::new();
    let batch = json!([
        impression("a", "s", "P", "on", "r", 1_572_632_114_350),
        impression("b", "s", "P", "on", "r", 1_572_894_348_393),
    ]);
    let resp = client.post(sluice.url(WEBHOOK)).body(batch.to_string()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sluice.terminate(), Some(0), "the lake flushes on shutdown");
    assert!(strace.wait().unwrap().success());
    let synced = fsynced_paths(&std::fs::read_to_string(&trace).unwrap());
    let lake = data.join("lake").canonicalize().unwrap();
    let mut dirs = vec![lake.clone()];
    let mut objects = 0;
    while let Some(d) = dirs.pop() {
        assert!(synced.contains(&d), "{} was never fsynced; fsynced: {synced:?}", d.display());
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                objects += 1;
            }
        }
    }
    assert!(objects >= 2, "the lake holds the two impressions' hours");
}

#[test]
fn the_readme_names_only_metrics_sluice_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut sources = String::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let mut rest = readme.as_str();
    while let Some(at) = rest.find("sluice_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit()).collect();
        rest = &rest[at + name.len()..];
        // `sluice_store_*` names a family; a full name must be one a counter, gauge or histogram uses.
        if !name.ends_with('_') {
            assert!(
                sources.contains(&format!("\"{name}\"")),
                "the README names `{name}`, which sluice does not export"
            );
        }
    }
}

common::on_both_backends!(
    a_nul_in_a_stored_text_field_is_refused_at_ingest_naming_the_field,
    a_record_the_store_refuses_for_good_is_dead_lettered_and_loading_goes_on,
    an_entry_the_loader_cannot_read_is_dead_lettered_not_only_logged,
    the_batch_context_counts_toward_each_events_32_kb,
    a_clients_field_never_poses_as_sluices_own,
);
