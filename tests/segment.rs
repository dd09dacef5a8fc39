//! The Segment sources end to end over real HTTP: the webhook destination (signatures, arrays,
//! the seed's `/events`), the Tracking API (write keys, batch context, clock-skew correction,
//! Segment's limits, hostile input), messageId dedup, `GET /api/events`, and Segment's own Python
//! library pointed at sluice. Everything that reaches the store runs on both backends.

mod common;

use std::collections::BTreeMap;

use base64::Engine as _;
use common::{Backend, InProcess, gzip};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Value, json};

const SECRET: &str = "segment-shared-secret";

fn basic(key: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:")))
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn with_keys(c: &mut sluice::config::Config) {
    c.segment.write_keys = BTreeMap::from([("web-key".into(), "web".into()), ("srv-key".into(), "server".into())]);
}

async fn events(s: &InProcess, query: &str) -> Vec<Value> {
    s.wait_loaded().await;
    let (status, body) = s.get(&format!("/api/events?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn every_tracking_api_call_is_stored_with_its_fields_and_source(b: Backend) {
    let Some(s) = InProcess::start_on(b, with_keys).await else { return };
    let auth = basic("web-key");
    let calls = [
        (
            "/v1/identify",
            json!({"userId": "u1", "anonymousId": "a1", "traits": {"email": "u1@example.com"}, "messageId": "m-identify"}),
        ),
        (
            "/v1/page",
            json!({"anonymousId": "a1", "name": "Home", "properties": {"url": "https://shop.test/?utm_source=x"},
            "context": {"page": {"url": "https://shop.test/?utm_source=x", "referrer": "https://www.google.co.in/"}}, "messageId": "m-page"}),
        ),
        (
            "/v1/track",
            json!({"userId": "u1", "event": "Order Completed", "properties": {"revenue": 12.5}, "messageId": "m-track"}),
        ),
        ("/v1/alias", json!({"previousId": "a0", "userId": "u1", "messageId": "m-alias"})),
        ("/v1/group", json!({"userId": "u1", "groupId": "acme", "traits": {"plan": "pro"}, "messageId": "m-group"})),
        ("/v1/screen", json!({"userId": "u1", "name": "Cart", "messageId": "m-screen"})),
    ];
    for (path, body) in &calls {
        let (status, answer) = s
            .post(
                path,
                body.to_string().into_bytes(),
                &[("authorization", &auth), ("content-type", "application/json")],
            )
            .await;
        assert_eq!((status, &answer), (200, &json!({"success": true})), "{path}");
    }
    let stored = events(&s, "").await;
    assert_eq!(stored.len(), calls.len());
    for (path, sent) in &calls {
        let e = stored.iter().find(|e| e["messageId"] == sent["messageId"]).unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(e["type"], path.trim_start_matches("/v1/"));
        for (k, v) in sent.as_object().unwrap() {
            assert_eq!(&e[k], v, "{path}: field {k}");
        }
        assert_eq!(e["sluice"]["source"], "web");
        assert_eq!(e["sluice"]["via"], "tracking-api");
        assert!(e["receivedAt"].is_string() && e["timestamp"].is_string(), "{e}");
    }
    let pages = events(&s, "type=page&anonymousId=a1").await;
    assert_eq!(pages.len(), 1);
    let typed = common::store_scalar(
        s.dir.path(),
        s.schema.as_ref(),
        "SELECT COUNT(*) FROM events WHERE page_referrer = 'https://www.google.co.in/' AND source = 'web' AND name = 'Home'",
    )
    .await;
    assert_eq!(typed, 1);
}

async fn a_batch_merges_its_context_and_a_resent_batch_is_stored_once(b: Backend) {
    let Some(s) = InProcess::start_on(b, with_keys).await else { return };
    let batch = json!({
        "batch": [
            {"type": "track", "event": "A", "userId": "u", "messageId": "b1", "context": {"ip": "10.0.0.9"}},
            {"type": "identify", "userId": "u", "messageId": "b2"},
        ],
        "context": {"library": {"name": "analytics-test"}, "ip": "10.0.0.1"},
        "writeKey": "srv-key",
    });
    for _ in 0..2 {
        let (status, answer) = s.post("/v1/batch", batch.to_string().into_bytes(), &[]).await;
        assert_eq!((status, answer), (200, json!({"success": true})));
    }
    // `/v1/import` is the same endpoint; gzip bodies are accepted.
    let (status, _) = s.post("/v1/import", gzip(batch.to_string().as_bytes()), &[("content-encoding", "gzip")]).await;
    assert_eq!(status, 200);
    let stored = events(&s, "").await;
    assert_eq!(stored.len(), 2, "re-sent events are stored once: {stored:?}");
    let b1 = stored.iter().find(|e| e["messageId"] == "b1").unwrap();
    assert_eq!(b1["context"], json!({"library": {"name": "analytics-test"}, "ip": "10.0.0.9"}));
    assert_eq!(b1["sluice"]["source"], "server");
    assert!(b1.get("writeKey").is_none(), "the write key is never stored");
    let b2 = stored.iter().find(|e| e["messageId"] == "b2").unwrap();
    assert_eq!(b2["context"]["ip"], "10.0.0.1");
}

async fn a_skewed_sent_at_is_corrected_against_sluices_clock(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    // The client's clock runs two hours fast; it made the call 5 s before sending the batch.
    let fast =
        chrono::DateTime::from_timestamp_millis((chrono::Utc::now() + chrono::Duration::hours(2)).timestamp_millis())
            .unwrap();
    let original = fast.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let sent_at = (fast + chrono::Duration::seconds(5)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let batch = json!({"batch": [{"type": "track", "event": "E", "anonymousId": "a", "messageId": "skew", "timestamp": original}], "sentAt": sent_at});
    assert_eq!(s.post("/v1/batch", batch.to_string().into_bytes(), &[]).await.0, 200);
    let e = &events(&s, "messageId=skew").await[0];
    let time = |k: &str| chrono::DateTime::parse_from_rfc3339(e[k].as_str().unwrap()).unwrap();
    assert_eq!(time("receivedAt") - time("timestamp"), chrono::Duration::seconds(5));
    assert_eq!(time("originalTimestamp"), chrono::DateTime::parse_from_rfc3339(&original).unwrap());
    assert!(e["sluice"].get("timestampClamped").is_none());
}

async fn webhook_signatures_are_checked_for_objects_and_arrays(b: Backend) {
    let Some(s) = InProcess::start_on(b, |c| c.segment.webhook_secret = Some(SECRET.into())).await else {
        return;
    };
    let one = br#"{"type":"page","anonymousId":"w1","messageId":"w-1","timestamp":"2026-11-01T10:00:00.000Z","receivedAt":"2026-11-01T10:00:01.000Z"}"#;
    let (status, answer) = s.post("/v1/segment/webhook", one.to_vec(), &[("x-signature", &sign(one))]).await;
    assert_eq!((status, answer), (200, json!({"success": true, "accepted": 1, "rejected": 0})));
    let (status, answer) = s.post("/v1/segment/webhook", one.to_vec(), &[("x-signature", &sign(b"other"))]).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("segment.webhook_secret"), "{answer}");
    assert_eq!(s.post("/v1/segment/webhook", one.to_vec(), &[]).await.0, 401);
    // An array is signed over the whole body …
    let first = r#"{"type":"track","event":"X","userId":"w2","messageId":"w-2"}"#;
    let array = format!(r#"[{first}, {{"type":"identify","userId":"w2","messageId":"w-3"}}]"#);
    let (status, answer) =
        s.post("/events", array.clone().into_bytes(), &[("x-signature", &sign(array.as_bytes()))]).await;
    assert_eq!((status, answer), (200, json!({"success": true, "accepted": 2, "rejected": 0})));
    let (status, _) = s.post("/events", array.into_bytes(), &[("x-signature", &sign(one))]).await;
    assert_eq!(status, 401);
    // … and the first event's signature (what Segment sends when it batches) vouches for nothing
    // else: a forged event appended to a signed one is refused, and nothing of it is stored.
    let signed = r#"{"type":"track","event":"Y","userId":"w4","messageId":"w-4"}"#;
    let forged = format!(
        r#"[{signed},{{"type":"track","event":"Order Completed","userId":"w4","messageId":"w-5","properties":{{"revenue":99999}}}}]"#
    );
    let (status, answer) = s.post("/events", forged.into_bytes(), &[("x-signature", &sign(signed.as_bytes()))]).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("batching"), "{answer}");
    // A one-element array under its element's signature is what Segment sends unbatched-in-an-array.
    let sole = format!("[{signed}]");
    let (status, answer) = s.post("/events", sole.into_bytes(), &[("x-signature", &sign(signed.as_bytes()))]).await;
    assert_eq!((status, answer), (200, json!({"success": true, "accepted": 1, "rejected": 0})));
    let stored = events(&s, "").await;
    assert_eq!(stored.len(), 4);
    assert!(stored.iter().all(|e| e["messageId"] != "w-5"), "the forged event was stored");
    let w1 = stored.iter().find(|e| e["messageId"] == "w-1").unwrap();
    assert_eq!(w1["timestamp"], "2026-11-01T10:00:00.000Z", "webhook events keep Segment's timestamp");
    assert_eq!(w1["receivedAt"], "2026-11-01T10:00:01.000Z");
    assert_eq!(w1["sluice"]["via"], "webhook");
    assert!(w1["sluice"]["arrivedAt"].as_i64().unwrap() > 1_790_000_000_000);
}

async fn limits_and_hostile_input_get_a_400_naming_the_problem(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let post = |path: &'static str, body: Vec<u8>| {
        let s = &s;
        async move { s.post(path, body, &[]).await }
    };
    let cases: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
        ("/v1/track", b"not json".to_vec(), None, "JSON object"),
        ("/v1/track", br#"{"event":"E"}"#.to_vec(), Some("userId"), "`userId` or `anonymousId`"),
        ("/v1/track", br#"{"userId":"u"}"#.to_vec(), Some("event"), "needs `event`"),
        ("/v1/alias", br#"{"userId":"u"}"#.to_vec(), Some("previousId"), "needs `previousId`"),
        ("/v1/identify", br#"{"userId":["u"]}"#.to_vec(), Some("userId"), "must be a string"),
        ("/v1/identify", br#"{"userId":"u","traits":"x"}"#.to_vec(), Some("traits"), "must be an object"),
        ("/v1/identify", br#"{"userId":"u","timestamp":"noon"}"#.to_vec(), Some("timestamp"), "not a time"),
        (
            "/v1/track",
            format!(r#"{{"userId":"u","event":"E","properties":{{"p":"{}"}}}}"#, "x".repeat(33 * 1024)).into_bytes(),
            None,
            "32 KB",
        ),
        ("/v1/batch", br#"{"items":[]}"#.to_vec(), Some("batch"), "needs `batch`"),
        ("/v1/batch", br#"{"batch":{}}"#.to_vec(), Some("batch"), "must be an array"),
        ("/v1/batch", br#"{"batch":[],"context":3}"#.to_vec(), Some("context"), "must be an object"),
        (
            "/v1/batch",
            format!(r#"{{"batch":[{}]}}"#, vec![r#"{"type":"track","event":"E","userId":"u","properties":{"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#; 6000].join(",")).into_bytes(),
            None,
            "500 KB",
        ),
        ("/v1/segment/webhook", b"{\"type\":".to_vec(), None, "Segment event"),
    ];
    for (path, body, field, message) in cases {
        let (status, answer) = post(path, body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert_eq!(answer["field"].as_str(), field, "{path}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(message), "{path}: {answer}");
    }
    assert_eq!(post("/v1/track", gzip(b"{\"userId\":")).await.0, 400);
    let (status, _) = s.post("/v1/track", b"{}".to_vec(), &[("content-encoding", "br")]).await;
    assert_eq!(status, 415);

    // In a batch, valid events are accepted and each invalid one is dead-lettered with its reason.
    let mixed = json!({"batch": [
        {"type": "track", "event": "ok", "userId": "u", "messageId": "good"},
        {"type": "track", "userId": "u"},
        {"type": "nonsense", "userId": "u"},
    ]});
    let (status, answer) = post("/v1/batch", mixed.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["success"].clone(), answer["accepted"].clone(), answer["rejected"].clone()),
        (json!(true), json!(1), json!(2))
    );
    assert_eq!(
        answer["errors"][0],
        json!({"index": 1, "field": "event", "reason": "a track call needs `event`, the name of the action"})
    );
    assert_eq!(answer["errors"][1]["field"], "type");
    let dead = std::fs::read_dir(s.dir.path().join("dead-letter"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(dead.contains("\"nonsense\"") && dead.contains("a track call needs"), "{dead}");
    let stored = events(&s, "").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["messageId"], "good");
}

async fn write_keys_are_required_when_configured(b: Backend) {
    let Some(s) = InProcess::start_on(b, with_keys).await else { return };
    let body = br#"{"userId":"u","event":"E"}"#.to_vec();
    let (status, answer) = s.post("/v1/track", body.clone(), &[]).await;
    assert_eq!(status, 401);
    assert!(answer["error"].as_str().unwrap().contains("write key is required"), "{answer}");
    let (status, answer) = s.post("/v1/track", body.clone(), &[("authorization", &basic("wrong"))]).await;
    assert_eq!(status, 401);
    assert!(answer["error"].as_str().unwrap().contains("segment.write_keys"), "{answer}");
    assert_eq!(s.post("/v1/track", body, &[("authorization", &basic("srv-key"))]).await.0, 200);
    assert_eq!(events(&s, "").await.len(), 1);
}

async fn segments_python_library_delivers_every_call_intact(b: Backend) {
    let Some(python) = common::test_python("the segment-analytics-python test") else { return };
    let Some(s) = InProcess::start_on(b, with_keys).await else { return };
    let script = r#"
import sys
import segment.analytics as analytics
host, key = sys.argv[1], sys.argv[2]
errors = []
analytics.write_key = key
analytics.host = host
analytics.max_retries = 1
analytics.on_error = lambda error, items: errors.append(str(error))
analytics.identify(user_id="py-user", anonymous_id="py-anon", traits={"email": "py@example.com", "plan": "pro"}, message_id="py-identify")
analytics.page(user_id="py-user", anonymous_id="py-anon", category="Docs", name="Install",
               properties={"url": "https://sluice.test/docs?utm_source=news", "referrer": "https://www.google.com/"},
               context={"page": {"url": "https://sluice.test/docs?utm_source=news", "referrer": "https://www.google.com/"}},
               message_id="py-page")
analytics.track(user_id="py-user", event="Signed Up", properties={"plan": "pro", "amount": 12.5}, message_id="py-track")
analytics.alias(previous_id="py-anon", user_id="py-user", message_id="py-alias")
analytics.group(user_id="py-user", group_id="acme", traits={"name": "ACME"}, message_id="py-group")
analytics.flush()
analytics.shutdown()
if errors:
    print("\n".join(errors))
    sys.exit(3)
"#;
    let run = |key: &'static str| {
        let (python, script, host) = (python.clone(), script.to_owned(), s.base.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(python).args(["-c", &script, &host, key]).output().unwrap()
        })
    };
    let out = run("web-key").await.unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let stored = events(&s, "").await;
    let by_id =
        |id: &str| stored.iter().find(|e| e["messageId"] == id).unwrap_or_else(|| panic!("{id} missing: {stored:?}"));
    assert_eq!(by_id("py-identify")["traits"], json!({"email": "py@example.com", "plan": "pro"}));
    assert_eq!(by_id("py-identify")["anonymousId"], "py-anon");
    assert_eq!(by_id("py-page")["name"], "Install");
    assert_eq!(by_id("py-page")["category"], "Docs");
    assert_eq!(by_id("py-page")["context"]["page"]["referrer"], "https://www.google.com/");
    assert_eq!(by_id("py-page")["context"]["library"]["name"], "analytics-python");
    assert_eq!(by_id("py-track")["event"], "Signed Up");
    assert_eq!(by_id("py-track")["properties"], json!({"plan": "pro", "amount": 12.5}));
    assert_eq!(
        (by_id("py-alias")["previousId"].clone(), by_id("py-alias")["userId"].clone()),
        (json!("py-anon"), json!("py-user"))
    );
    assert_eq!(by_id("py-group")["groupId"], "acme");
    assert_eq!(by_id("py-group")["traits"], json!({"name": "ACME"}));
    for e in &stored {
        assert_eq!(e["sluice"]["source"], "web");
        assert!(e["sentAt"].is_string() && e["originalTimestamp"].is_string(), "{e}");
    }

    let out = run("not-a-key").await.unwrap();
    assert_eq!(out.status.code(), Some(3), "a wrong write key is refused: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("401"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn analytics_js_in_a_browser_gets_cors_answers_from_the_tracking_api() {
    let s = InProcess::start_with(with_keys).await;
    let origin = "https://shop.example";
    let preflight = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("/v1/x"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 404, "only the Tracking API's own paths");
    let preflight = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("/v1/batch"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,authorization,x-retry-count")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], origin);
    let allowed = preflight.headers()["access-control-allow-headers"].to_str().unwrap().to_owned();
    assert!(["content-type", "authorization", "x-retry-count"].iter().all(|h| allowed.contains(h)), "{allowed}");
    // analytics.js sends text/plain with the write key in the body, to avoid a preflight.
    let body = json!({"batch": [{"type": "page", "anonymousId": "browser"}], "writeKey": "web-key"}).to_string();
    let resp = s
        .client
        .post(s.url("/v1/batch"))
        .header("origin", origin)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], origin);
    // analytics.js's own paths: the first letter of the call type, `b` for batches.
    for (path, kind) in [("/v1/t", "track"), ("/v1/p", "page"), ("/v1/i", "identify"), ("/v1/s", "screen")] {
        let body = json!({"anonymousId": "browser", "event": "E", "messageId": path, "writeKey": "web-key"});
        let resp = s.client.post(s.url(path)).header("origin", origin).body(body.to_string()).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let stored = events(&s, &format!("messageId={path}")).await;
        assert_eq!(stored[0]["type"], kind, "{path}");
    }
    let body = json!({"batch": [{"type": "group", "anonymousId": "browser", "groupId": "g"}], "writeKey": "web-key"});
    assert_eq!(s.post("/v1/b", body.to_string().into_bytes(), &[]).await.0, 200);
    // Refusals are readable by the page too, so the library can log why.
    let resp = s.client.post(s.url("/v1/track")).header("origin", origin).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["access-control-allow-origin"], origin);
}

#[tokio::test]
async fn when_events_cannot_be_made_durable_segment_hears_503_and_retries() {
    // Segment retries 5xx and 429 for hours and drops events on other 4xx: a full journal must
    // never answer 4xx.
    let s = InProcess::start_with(|c| c.journal.max_bytes = 1).await;
    let event = json!({"type": "track", "event": "E", "userId": "u"}).to_string();
    for path in ["/v1/track", "/v1/segment/webhook", "/events"] {
        let resp = s.client.post(s.url(path)).body(event.clone()).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 503, "{path}");
        assert_eq!(resp.headers()["retry-after"], "5", "{path}");
    }
    let batch = json!({"batch": [json!({"type": "track", "event": "E", "userId": "u"})]}).to_string();
    let resp = s.client.post(s.url("/v1/batch")).body(batch).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let (status, body) = s.get("/api/events").await;
    assert_eq!((status, body.as_str()), (200, ""), "nothing was accepted");
}

/// A full address: no byte of the data directory may hold it once `[privacy] ip` is not `keep`.
const FULL_V4: &str = "203.0.113.77";
/// A full IPv6 address; its host part, `1319:8a2e:370:7348`, must not be kept either.
const FULL_V6: &str = "2001:db8:85a3:8d3:1319:8a2e:370:7348";

/// Posts events carrying addresses to both Segment sources: the webhook (its own `context.ip`),
/// `/v1/batch` (the batch's `context.ip`, an item's own IPv4-mapped one, and a refused item's),
/// and `/v1/track` (a value that is not an address).
async fn post_events_with_addresses(s: &InProcess) {
    let hook = json!({"type": "track", "event": "E", "userId": "u", "messageId": "hook", "context": {"ip": FULL_V4}});
    assert_eq!(s.post("/v1/segment/webhook", hook.to_string().into_bytes(), &[]).await.0, 200);
    let batch = json!({
        "batch": [
            {"type": "track", "event": "E", "userId": "u", "messageId": "batch-context"},
            {"type": "identify", "userId": "u", "messageId": "own", "context": {"ip": format!("::ffff:{FULL_V4}")}},
            {"type": "track", "userId": "u", "messageId": "refused", "context": {"ip": FULL_V4}},
        ],
        "context": {"ip": FULL_V6, "locale": "en-GB"},
    });
    let (status, answer) = s.post("/v1/batch", batch.to_string().into_bytes(), &[]).await;
    assert_eq!((status, &answer["accepted"], &answer["rejected"]), (200, &json!(2), &json!(1)), "{answer}");
    let single =
        json!({"event": "E", "userId": "u", "messageId": "single", "context": {"ip": format!("{FULL_V4}:443")}});
    assert_eq!(s.post("/v1/track", single.to_string().into_bytes(), &[]).await.0, 200);
}

/// `context.ip` of each event by messageId (`null`: none).
fn ips(events: &[Value]) -> BTreeMap<String, Value> {
    events.iter().map(|e| (e["messageId"].as_str().unwrap().to_owned(), e["context"]["ip"].clone())).collect()
}

/// The Segment events in the journal of data directory `dir` (its server stopped).
async fn journaled_events(dir: &std::path::Path) -> Vec<Value> {
    use sluice::journal::Journal as _;
    let journal = sluice::journal::file::FileJournal::open(
        &dir.join("journal"),
        sluice::config::Config::default().journal.file(),
    )
    .unwrap();
    let end = journal.stats().next_offset;
    let mut reader = journal.reader("check", 0).unwrap();
    let (mut events, mut read) = (Vec::new(), 0);
    while read < end {
        let batch = reader.next_batch(100, std::time::Duration::from_secs(5)).await.unwrap();
        assert!(!batch.is_empty(), "the journal ended at {read} of {end}");
        read += batch.len() as u64;
        events.extend(batch.iter().map(|e| serde_json::from_slice::<Value>(&e.payload).unwrap()));
    }
    journal.close().await;
    events
}

/// The dead letters of data directory `dir`.
fn dead_letters(dir: &std::path::Path) -> Vec<Value> {
    let mut lines = Vec::new();
    for file in std::fs::read_dir(dir.join("dead-letter")).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        lines.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    lines
}

/// Asserts that no file under `dir` (the lake aside: it is compressed) holds a byte string of
/// a full address.
fn assert_no_full_address_in(dir: &std::path::Path) {
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "lake") {
                continue;
            }
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for full in [FULL_V4, "1319:8a2e:370:7348"] {
            assert!(!bytes.windows(full.len()).any(|w| w == full.as_bytes()), "{} holds {full}", path.display());
        }
    }
}

async fn context_ip_is_truncated_before_the_journal_on_both_segment_sources(b: Backend) {
    use sluice::record::ip::IpPolicy;
    let Some(s) = InProcess::start_on(b, |c| c.privacy.ip = IpPolicy::Truncate).await else { return };
    post_events_with_addresses(&s).await;
    let expected = BTreeMap::from([
        ("hook".to_owned(), json!("203.0.113.0")),
        ("batch-context".to_owned(), json!("2001:db8:85a3::")),
        ("own".to_owned(), json!("203.0.113.0")),
        ("single".to_owned(), Value::Null),
    ]);
    let stored = events(&s, "").await;
    assert_eq!(ips(&stored), expected, "as the store holds them");
    let batch_context = stored.iter().find(|e| e["messageId"] == "batch-context").unwrap();
    assert_eq!(batch_context["context"]["locale"], "en-GB", "the rest of the context is kept");
    let raw_full = common::store_scalar(
        s.dir.path(),
        s.schema.as_ref(),
        "SELECT COUNT(*) FROM events WHERE CAST(raw AS TEXT) LIKE '%203.0.113.77%' OR CAST(raw AS TEXT) LIKE '%8a2e%'",
    )
    .await;
    assert_eq!(raw_full, 0);
    let (dir, _schema) = s.stop().await;
    assert_eq!(ips(&journaled_events(dir.path()).await), expected, "as the journal holds them");
    let dead = dead_letters(dir.path());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["record"]["context"]["ip"], "203.0.113.0", "a refused event too");
    assert_no_full_address_in(dir.path());
}

async fn context_ip_is_dropped_before_the_journal_on_both_segment_sources(b: Backend) {
    use sluice::record::ip::IpPolicy;
    let Some(s) = InProcess::start_on(b, |c| c.privacy.ip = IpPolicy::Drop).await else { return };
    post_events_with_addresses(&s).await;
    let none: BTreeMap<String, Value> =
        ["hook", "batch-context", "own", "single"].into_iter().map(|id| (id.to_owned(), Value::Null)).collect();
    assert_eq!(ips(&events(&s, "").await), none, "as the store holds them");
    let (dir, _schema) = s.stop().await;
    assert_eq!(ips(&journaled_events(dir.path()).await), none, "as the journal holds them");
    assert_eq!(dead_letters(dir.path())[0]["record"]["context"], json!({}));
    assert_no_full_address_in(dir.path());
}

common::on_both_backends!(
    every_tracking_api_call_is_stored_with_its_fields_and_source,
    a_batch_merges_its_context_and_a_resent_batch_is_stored_once,
    a_skewed_sent_at_is_corrected_against_sluices_clock,
    webhook_signatures_are_checked_for_objects_and_arrays,
    limits_and_hostile_input_get_a_400_naming_the_problem,
    write_keys_are_required_when_configured,
    segments_python_library_delivers_every_call_intact,
    context_ip_is_truncated_before_the_journal_on_both_segment_sources,
    context_ip_is_dropped_before_the_journal_on_both_segment_sources,
);

#[tokio::test]
async fn an_ingest_token_granted_one_segment_source_records_its_events_under_it_on_every_endpoint() {
    use sluice::access::{AuthConfig, Role, TokenConfig, token_sha256_hex};
    const TOKEN: &str = "web-ingest-secret-0123456789";
    let app = InProcess::start_with(|c| {
        c.auth = AuthConfig {
            tokens: vec![TokenConfig {
                name: "web-feeder".into(),
                roles: vec![Role::Ingest],
                sha256: Some(token_sha256_hex(TOKEN)),
                token_file: None,
                sources: vec!["segment:web".into()],
            }],
            ..AuthConfig::default()
        };
    })
    .await;
    let bearer = format!("Bearer {TOKEN}");
    let event =
        |id: &str| json!({"type": "track", "event": "e", "userId": "u", "messageId": id}).to_string().into_bytes();
    let headers = [("authorization", bearer.as_str()), ("content-type", "application/json")];
    for (path, id) in [("/v1/segment/webhook", "via-webhook"), ("/v1/track", "via-track")] {
        let (status, answer) = app.post(path, event(id), &headers).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let (status, _) = app.post("/v1/track", event("no-token"), &[("content-type", "application/json")]).await;
    assert_eq!(status, 401, "the token guards the Tracking API");
    app.wait_loaded().await;
    let (dir, schema) = app.stop().await;
    for id in ["via-webhook", "via-track"] {
        let sql = format!("SELECT COUNT(*) FROM events WHERE message_id = '{id}' AND source = 'web'");
        assert_eq!(common::store_scalar(dir.path(), schema.as_ref(), &sql).await, 1, "{id}");
    }
}
