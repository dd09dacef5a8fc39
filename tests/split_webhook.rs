//! The Split impressions webhook end to end over real HTTP: encodings, validation, limits,
//! auth, backpressure, dead letters, dedup, and the impressions query in every format.
//! Everything that goes through the store runs on both backends (see `on_both_backends!`).

mod common;

use common::{Backend, InProcess, gzip, impression, seed_batch, store_scalar};
use serde_json::{Value, json};
use sluice::record::DedupMode;

const WEBHOOK: &str = "/v1/split/impressions";

async fn rows(s: &InProcess, query: &str) -> Vec<Value> {
    let (status, body) = s.get(&format!("/api/impressions?format=ndjson&{query}")).await;
    assert_eq!(status, 200, "{body}");
    body.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn gzip_with_header_without_header_and_plain_json_are_all_accepted(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let batch = |k: &str| json!([impression(k, "f", "Production", "on", "default rule", 1)]);
    let gz_hdr = gzip(batch("a").to_string().as_bytes());
    assert_eq!(
        s.post(WEBHOOK, gz_hdr, &[("content-encoding", "gzip")]).await,
        (200, json!({"accepted": 1, "rejected": 0}))
    );
    let gz_sniffed = gzip(batch("b").to_string().as_bytes());
    assert_eq!(s.post(WEBHOOK, gz_sniffed, &[]).await.0, 200);
    assert_eq!(
        s.post(WEBHOOK, batch("c").to_string().into_bytes(), &[("content-type", "application/json")]).await.0,
        200
    );
    assert_eq!(s.post(&format!("{WEBHOOK}?gzip=false"), batch("d").to_string().into_bytes(), &[]).await.0, 200);
    s.wait_loaded().await;
    let keys: Vec<String> = rows(&s, "").await.iter().map(|r| r["key"].as_str().unwrap().to_owned()).collect();
    assert_eq!(keys.len(), 4);
    for k in ["a", "b", "c", "d"] {
        assert!(keys.contains(&k.to_owned()), "{k} missing from {keys:?}");
    }
}

async fn the_default_csv_export_is_the_seeds_report_byte_for_byte(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    assert_eq!(s.post_gzip(&seed_batch()).await.0, 200);
    s.wait_loaded().await;
    let (status, csv) = s.get("/api/impressions?environment=Production&split=sample_feature").await;
    assert_eq!(status, 200);
    assert_eq!(
        csv,
        "User Key, Split, Environment, Treatment, Rule, Time\r\n\
         alphonso,sample_feature,Production,off,default rule,1572632114350\r\n\
         bob,sample_feature,Production,on,whitelisted,1572632224436\r\n"
    );
    let (_, all) = s.get("/api/impressions").await;
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 12, "header + the seed's 11 rows");
    assert_eq!(
        lines[3],
        "anonymous80008,front_end_discount_coupon_anonymous,Production,low,default rule,1572894348392"
    );
    assert_eq!(
        lines[11],
        "anonymous28108,front_end_discount_coupon_anonymous,Production,off,default rule,1572894352430"
    );
}

async fn every_filter_alone_and_combined(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let batch = json!([
        impression("u1", "checkout", "Production", "on", "default rule", 1000),
        impression("u2", "checkout", "Production", "off", "default rule", 2000),
        impression("u1", "checkout", "Staging", "on", "whitelisted", 3000),
        impression("u3", "search", "Production", "v2", "in segment beta", 4000),
        impression("u2", "search", "Staging", "v1", "default rule", 5000),
    ]);
    assert_eq!(s.post_gzip(&batch).await.0, 200);
    s.wait_loaded().await;
    let times = |rows: Vec<Value>| rows.iter().map(|r| r["time"].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(times(rows(&s, "").await), [1000, 2000, 3000, 4000, 5000]);
    assert_eq!(times(rows(&s, "environment=Staging").await), [3000, 5000]);
    assert_eq!(times(rows(&s, "environment=id-Staging").await), [3000, 5000], "environment ids match too");
    assert_eq!(times(rows(&s, "split=search").await), [4000, 5000]);
    assert_eq!(times(rows(&s, "key=u1").await), [1000, 3000]);
    assert_eq!(times(rows(&s, "treatment=on&treatment=v1").await), [1000, 3000, 5000]);
    assert_eq!(times(rows(&s, "label=whitelisted&label=in%20segment%20beta").await), [3000, 4000]);
    assert_eq!(times(rows(&s, "from=2000&to=4000").await), [2000, 3000], "from inclusive, to exclusive");
    assert_eq!(times(rows(&s, "from=1970-01-01T00:00:02Z").await), [2000, 3000, 4000, 5000]);
    assert_eq!(times(rows(&s, "split=checkout&environment=Production&key=u2").await), [2000]);
    assert_eq!(times(rows(&s, "key=u2&treatment=v1&from=1").await), [5000]);
    assert_eq!(times(rows(&s, "limit=2").await), [1000, 2000]);
    assert!(rows(&s, "split=nope").await.is_empty());
}

async fn ndjson_and_json_use_the_webhook_field_names_and_keep_unknown_fields(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let mut imp = impression("u1", "checkout", "Production", "on", "default rule", 1000);
    imp["newSplitField"] = json!({"nested": [1, 2]});
    assert_eq!(s.post_gzip(&json!([imp])).await.0, 200);
    s.wait_loaded().await;
    let row = &rows(&s, "").await[0];
    for field in [
        "key",
        "split",
        "environmentId",
        "environmentName",
        "treatment",
        "time",
        "label",
        "machineName",
        "machineIp",
        "splitVersionNumber",
        "sdk",
        "sdkVersion",
        "properties",
        "receivedAt",
    ] {
        assert!(row.get(field).is_some(), "{field} missing from {row}");
    }
    assert_eq!(row["environmentName"], "Production");
    assert_eq!(row["newSplitField"], json!({"nested": [1, 2]}));
    let (status, text) = s.get("/api/impressions?format=json").await;
    assert_eq!(status, 200);
    let arr: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["key"], "u1");
    let (_, all) = s.get("/api/impressions?columns=all").await;
    assert!(all.starts_with("key,split,environmentId,environmentName,treatment,time,"), "{all}");
}

async fn a_reposted_batch_is_stored_once(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let batch = seed_batch();
    assert_eq!(s.post_gzip(&batch).await.0, 200);
    assert_eq!(s.post_gzip(&batch).await.0, 200);
    s.wait_loaded().await;
    assert_eq!(s.post_gzip(&batch).await.0, 200);
    s.wait_loaded().await;
    assert_eq!(rows(&s, "").await.len(), 11);
}

async fn per_version_mode_keeps_the_first_impression_per_version(b: Backend) {
    let Some(s) = InProcess::start_on(b, |c| c.store.dedup = DedupMode::PerVersion).await else { return };
    let first = json!([impression("u1", "checkout", "Production", "on", "default rule", 1000)]);
    let later = json!([
        impression("u1", "checkout", "Production", "on", "default rule", 2000),
        impression("u1", "checkout", "Production", "off", "default rule", 3000),
    ]);
    assert_eq!(s.post_gzip(&first).await.0, 200);
    assert_eq!(s.post_gzip(&later).await.0, 200);
    s.wait_loaded().await;
    let got: Vec<(String, i64)> = rows(&s, "")
        .await
        .iter()
        .map(|r| (r["treatment"].as_str().unwrap().to_owned(), r["time"].as_i64().unwrap()))
        .collect();
    assert_eq!(got, [("on".to_owned(), 1000), ("off".to_owned(), 3000)]);
}

#[tokio::test]
async fn invalid_records_are_dead_lettered_while_valid_ones_are_accepted() {
    let s = InProcess::start().await;
    let batch = json!([
        impression("ok1", "f", "Production", "on", "r", 1),
        {"key": "nosplit", "treatment": "on", "time": 1},
        {"key": 42, "split": "f", "treatment": "on", "time": 1},
        impression("ok2", "f", "Production", "on", "r", 2),
        {"key": "k", "split": "f", "treatment": "on", "time": "noon"},
        "not an object",
    ]);
    let (status, report) = s.post_gzip(&batch).await;
    assert_eq!(status, 200);
    assert_eq!(report["accepted"], 2);
    assert_eq!(report["rejected"], 4);
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors[0]["index"], 1);
    assert_eq!(errors[0]["field"], "split");
    assert_eq!(errors[1]["field"], "key");
    assert_eq!(errors[2]["field"], "time");
    assert_eq!(errors[3]["index"], 5);
    let dead = std::fs::read_to_string(s.dir.path().join("dead-letter/current.ndjson")).unwrap();
    let lines: Vec<Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[1]["record"], json!({"key": 42, "split": "f", "treatment": "on", "time": 1}));
    assert_eq!(lines[3]["record"], "not an object");
    s.wait_loaded().await;
    assert_eq!(rows(&s, "").await.len(), 2);
}

#[tokio::test]
async fn hostile_bodies_get_clear_4xx_and_the_server_stays_healthy() {
    let s = InProcess::start_with(|c| {
        c.limits.max_body_bytes = 64 * 1024;
        c.limits.max_decompressed_bytes = 1024 * 1024;
        c.limits.max_batch_records = 100;
    })
    .await;
    let expect = async |body: Vec<u8>, headers: &[(&str, &str)], status: u16, needle: &str| {
        let (got, report) = s.post(WEBHOOK, body, headers).await;
        assert_eq!(got, status, "{report}");
        let msg = report["error"].as_str().unwrap_or_default().to_owned();
        assert!(msg.contains(needle), "`{msg}` should mention `{needle}`");
    };
    expect(b"this is not json".to_vec(), &[], 400, "JSON array").await;
    expect(br#"{"key":"k"}"#.to_vec(), &[], 400, "JSON array").await;
    expect(b"[1,2".to_vec(), &[], 400, "EOF").await;
    let gz = gzip(&vec![b'['; 10_000]);
    expect(gz[..gz.len() / 2].to_vec(), &[], 400, "truncated").await;
    expect(gzip(&vec![b' '; 20 * 1024 * 1024]), &[], 413, "max_decompressed_bytes").await;
    expect(vec![b' '; 100 * 1024], &[], 413, "max_body_bytes").await;
    let too_many = Value::Array((0..101).map(|i| impression(&format!("k{i}"), "f", "P", "on", "r", i)).collect());
    expect(too_many.to_string().into_bytes(), &[], 413, "max_batch_records").await;
    expect(b"[\"\xff\xfe\"]".to_vec(), &[], 400, "UTF-8").await;
    expect(b"[]".to_vec(), &[("content-encoding", "br")], 415, "br").await;
    let long_key = json!([impression(&"k".repeat(10_000), "f", "P", "on", "r", 1)]);
    let (status, report) = s.post(WEBHOOK, long_key.to_string().into_bytes(), &[]).await;
    assert_eq!(status, 400, "a batch with nothing valid is a client error: {report}");
    assert_eq!(report["errors"][0]["field"], "key");
    assert_eq!(s.post(WEBHOOK, b"[]".to_vec(), &[]).await, (200, json!({"accepted": 0, "rejected": 0})));

    assert_eq!(s.get("/healthz").await.0, 200);
    assert_eq!(s.get("/readyz").await.0, 200);
    assert_eq!(s.post_gzip(&json!([impression("after", "f", "P", "on", "r", 1)])).await.0, 200);
}

#[tokio::test]
async fn a_configured_token_is_required_from_the_query_or_a_header() {
    let token = "0123456789abcdef-token";
    let s = InProcess::start_with(|c| c.split.token = Some(token.into())).await;
    let body = || json!([impression("k", "f", "P", "on", "r", 1)]).to_string().into_bytes();
    let (status, err) = s.post(WEBHOOK, body(), &[]).await;
    assert_eq!(status, 401);
    assert!(err["error"].as_str().unwrap().contains("token"), "{err}");
    assert_eq!(s.post(&format!("{WEBHOOK}?token=wrong-wrong-wrong-wrong"), body(), &[]).await.0, 401);
    assert_eq!(s.post(&format!("{WEBHOOK}?token={token}"), body(), &[]).await.0, 200);
    let bearer = format!("Bearer {token}");
    assert_eq!(s.post(WEBHOOK, body(), &[("authorization", &bearer)]).await.0, 200);
}

#[tokio::test]
async fn a_full_journal_answers_503_with_retry_after_and_accepts_nothing() {
    let s = InProcess::start_with(|c| c.journal.max_bytes = 1).await;
    let resp = s
        .client
        .post(s.url(WEBHOOK))
        .body(json!([impression("k", "f", "P", "on", "r", 1)]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "5");
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("journal is full"), "{body}");
    let (status, ready) = s.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
}

#[tokio::test]
async fn bad_query_parameters_are_400_naming_the_parameter() {
    let s = InProcess::start().await;
    for (query, param) in [
        ("from=yesterday", "from"),
        ("format=xml", "format"),
        ("limit=0", "limit"),
        ("colour=red", "colour"),
        ("from=5&to=5", "to"),
    ] {
        let resp = s.client.get(s.url(&format!("/api/impressions?{query}"))).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["field"], param, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().contains(param), "{body}");
    }
}

async fn metrics_and_readiness_report_sources_journal_and_consumers(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    assert_eq!(s.post_gzip(&seed_batch()).await.0, 200);
    s.wait_loaded().await;
    let (status, metrics) = s.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "sluice_source_records_total",
        "sluice_source_bytes_total",
        "sluice_journal_fsync_seconds",
        "sluice_journal_disk_bytes",
        "sluice_consumer_lag",
        "sluice_store_batch_seconds",
        "sluice_consumer_up{consumer=\"store\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let (status, ready) = s.get("/readyz").await;
    assert_eq!(status, 200);
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["consumers"]["store"]["lag"], 0);
    let backend = if b == Backend::Sqlite { "sqlite" } else { "postgres" };
    assert_eq!(ready["store"], json!({"backend": backend, "healthy": true, "stopped": null, "lastError": null}));
    assert_eq!(ready["journal"]["writable"], true);
}

async fn csv_cells_cannot_run_as_spreadsheet_formulas(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let batch = json!([
        impression("=HYPERLINK(\"http://x\")", "f", "P", "on", "+1", 1),
        impression("@SUM(A1)", "f", "P", "-2", "a,b", 2),
    ]);
    assert_eq!(s.post_gzip(&batch).await.0, 200);
    s.wait_loaded().await;
    let (_, csv) = s.get("/api/impressions").await;
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(lines[1], "\"'=HYPERLINK(\"\"http://x\"\")\",f,P,on,'+1,1");
    assert_eq!(lines[2], "'@SUM(A1),f,P,'-2,\"a,b\",2");
}

async fn graceful_stop_loads_everything_acknowledged_before_exiting(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let batch = Value::Array((0..5000).map(|i| impression(&format!("k{i}"), "f", "P", "on", "r", i)).collect());
    assert_eq!(s.post_gzip(&batch).await.0, 200);
    let (dir, schema) = s.stop().await;
    // Read the database directly: every acknowledged impression was loaded before stop() returned.
    let count = store_scalar(dir.path(), schema.as_ref(), "select count(*) from impressions").await;
    assert_eq!(count, 5000);
    let seed_check = store_scalar(
        dir.path(),
        schema.as_ref(),
        "select count(*) from (select key, split, environment, treatment, label, time from impressions) seed",
    )
    .await;
    assert_eq!(seed_check, 5000, "the seed's own query works on the store");
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let s = InProcess::start().await;
    let err = sluice::cli::serve::Server::start(common::test_config(s.dir.path())).await.err().unwrap();
    assert!(format!("{err:#}").contains("another sluice is already serving"), "{err:#}");
}

common::on_both_backends!(
    gzip_with_header_without_header_and_plain_json_are_all_accepted,
    the_default_csv_export_is_the_seeds_report_byte_for_byte,
    every_filter_alone_and_combined,
    ndjson_and_json_use_the_webhook_field_names_and_keep_unknown_fields,
    a_reposted_batch_is_stored_once,
    per_version_mode_keeps_the_first_impression_per_version,
    metrics_and_readiness_report_sources_journal_and_consumers,
    csv_cells_cannot_run_as_spreadsheet_formulas,
    graceful_stop_loads_everything_acknowledged_before_exiting,
);
