//! The seed's attribution flow end to end: Segment page and identify events posted one by one to
//! `POST /events`, then `GET /api/anonymous/{id}`, `GET /api/user/{id}` and the CLI's
//! `sluice anonymous|user`, on both backends.

mod common;

use common::{Backend, InProcess};
use serde_json::{Value, json};

const VISITOR_1: &str = "da8011b3-19bf-4d3d-b1b6-caa961cb5161";
const VISITOR_2: &str = "f1ef0f8d-68d2-4fbc-a7e6-cade9d42f3aa";

fn page(anonymous_id: &str, message_id: &str, timestamp: &str, url: &str, referrer: &str) -> Value {
    json!({
        "type": "page", "anonymousId": anonymous_id, "messageId": message_id, "timestamp": timestamp,
        "receivedAt": timestamp, "sentAt": timestamp, "originalTimestamp": timestamp,
        "context": {"page": {"url": url, "referrer": referrer, "path": "/"}, "library": {"name": "analytics.js"}},
        "properties": {"url": url, "referrer": referrer},
    })
}

/// The seed's five sample events, in the order the seed posts them.
fn seed_events() -> Vec<Value> {
    vec![
        page(
            VISITOR_1,
            "ajs-9662bd147ae61e72db92055f52810bd9",
            "2020-03-25T08:35:18.281Z",
            "https://www.prezly.com/academy/relationships/crisis-communication/the-best-managed-pr-crises-of-2018",
            "https://www.google.co.in/",
        ),
        page(
            VISITOR_1,
            "ajs-3b9ef982cdc9fde05a313068b7b39be5",
            "2020-04-25T08:57:53.206Z",
            "https://www.prezly.com",
            "",
        ),
        page(
            VISITOR_2,
            "ajs-534d538d5ccb72c0da98473f25c91f49",
            "2020-04-25T08:27:08.257Z",
            "https://www.prezly.com/case-studies/m-and-c-communications",
            "https://www.linkedin.com/",
        ),
        page(
            VISITOR_2,
            "ajs-26168b569103f6176c369916e2b74d4a",
            "2020-04-25T08:45:34.315Z",
            "https://www.prezly.com/academy/relationships/corporate-social-responsibility/the-relationship-between-pr-and-csr",
            "https://www.google.com/",
        ),
        json!({"type": "identify", "anonymousId": VISITOR_2, "userId": "john@gmail.com", "messageId": "ajs-identify-1",
               "timestamp": "2020-04-25T08:50:00.000Z", "traits": {"email": "john@gmail.com"}}),
    ]
}

/// The fields of the seed's own session objects (sluice adds more; these must be exact).
fn seed_fields(session: &Value) -> Value {
    let keys = ["anonymousId", "eventId", "messageId", "referrer", "referrerUrl", "timestamp", "url", "userId"];
    Value::Object(keys.iter().map(|k| (k.to_string(), session[*k].clone())).collect())
}

async fn get_json(s: &InProcess, path: &str) -> Value {
    let (status, body) = s.get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn the_seeds_flow_gives_the_seeds_answers(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    for event in seed_events() {
        let (status, answer) = s.post("/events", event.to_string().into_bytes(), &[]).await;
        assert_eq!(status, 200, "{answer}");
    }
    s.wait_loaded().await;

    let anonymous = get_json(&s, &format!("/api/anonymous/{VISITOR_1}")).await;
    let sessions = anonymous["sessions"].as_array().unwrap();
    assert_eq!(
        sessions.iter().map(seed_fields).collect::<Vec<_>>(),
        vec![
            json!({
                "anonymousId": VISITOR_1,
                "eventId": "2020-03-25T08:35:18.281Z-ajs-9662bd147ae61e72db92055f52810bd9",
                "messageId": "ajs-9662bd147ae61e72db92055f52810bd9",
                "referrer": {"engine": "google", "host": "www.google.co.in", "type": "search"},
                "referrerUrl": "https://www.google.co.in/",
                "timestamp": "2020-03-25T08:35:18.281Z",
                "url": "https://www.prezly.com/academy/relationships/crisis-communication/the-best-managed-pr-crises-of-2018",
                "userId": null
            }),
            json!({
                "anonymousId": VISITOR_1,
                "eventId": "2020-04-25T08:57:53.206Z-ajs-3b9ef982cdc9fde05a313068b7b39be5",
                "messageId": "ajs-3b9ef982cdc9fde05a313068b7b39be5",
                "referrer": {"type": "direct"},
                "referrerUrl": null,
                "timestamp": "2020-04-25T08:57:53.206Z",
                "url": "https://www.prezly.com",
                "userId": null
            }),
        ]
    );
    assert_eq!(sessions[0]["channel"], "Organic Search");
    assert_eq!(sessions[1]["channel"], "Direct");
    assert_eq!(sessions[0]["pageviews"], 1);

    // An e-mail address as the id, URL-encoded as a client would send it.
    let user = get_json(&s, "/api/user/john%40gmail.com").await;
    assert_eq!(user["anonymousIds"], json!([VISITOR_2]));
    let sessions = user["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "one array per anonymousId");
    let visits: Vec<Value> = sessions[0].as_array().unwrap().iter().map(seed_fields).collect();
    assert_eq!(visits.len(), 2);
    assert_eq!(visits[0]["referrer"], json!({"network": "linkedin", "type": "social", "host": "www.linkedin.com"}));
    assert_eq!(visits[0]["referrerUrl"], "https://www.linkedin.com/");
    assert_eq!(visits[0]["eventId"], "2020-04-25T08:27:08.257Z-ajs-534d538d5ccb72c0da98473f25c91f49");
    assert_eq!(visits[1]["referrer"], json!({"engine": "google", "host": "www.google.com", "type": "search"}));
    assert!(visits.iter().all(|v| v["userId"] == "john@gmail.com"), "{visits:?}");
    assert_eq!(user["firstTouch"]["messageId"], "ajs-534d538d5ccb72c0da98473f25c91f49");
    assert_eq!(user["lastTouch"]["messageId"], "ajs-26168b569103f6176c369916e2b74d4a");

    // The device's own view now knows who it is from the identify on.
    let device = get_json(&s, &format!("/api/anonymous/{VISITOR_2}")).await;
    assert_eq!(device["sessions"].as_array().unwrap().len(), 2);

    // Unknown ids: 200 with empty lists.
    assert_eq!(get_json(&s, "/api/anonymous/nobody").await, json!({"sessions": []}));
    let nobody = get_json(&s, "/api/user/nobody%40example.com").await;
    assert_eq!((nobody["anonymousIds"].clone(), nobody["sessions"].clone()), (json!([]), json!([])));

    // The CLI prints the same JSON from the store.
    let (dir, schema) = s.stop().await;
    let mut args = vec!["--data-dir".to_owned(), dir.path().to_str().unwrap().to_owned()];
    if let Some(schema) = &schema {
        args.extend(["--store".to_owned(), schema.url.clone()]);
    }
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv.extend(["export", "events", "--anonymous-id", VISITOR_2, "--type", "page"]);
    let (code, out, err) = common::sluice(&argv, &[]);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["ajs-534d538d5ccb72c0da98473f25c91f49", "ajs-26168b569103f6176c369916e2b74d4a"]);
    for (command, id, expected) in [("anonymous", VISITOR_1, &anonymous), ("user", "john@gmail.com", &user)] {
        let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
        argv.extend([command, id]);
        let (code, out, err) = common::sluice(&argv, &[]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(&serde_json::from_str::<Value>(&out).unwrap(), expected, "sluice {command} {id}");
    }
}

async fn late_and_out_of_order_events_give_the_sessions_of_a_full_recomputation(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let events = [
        page("a", "m1", "2026-11-01T10:00:00.000Z", "https://shop.test/", "https://www.bing.com/search?q=shoes"),
        page("a", "m2", "2026-11-01T10:10:00.000Z", "https://shop.test/cart", "https://shop.test/"),
        page("a", "m3", "2026-11-01T10:39:00.000Z", "https://shop.test/pay", "https://shop.test/cart"),
    ];
    // The last page first; the middle one, which bridges the 39-minute gap, arrives late.
    for i in [2, 0] {
        assert_eq!(s.post("/events", events[i].to_string().into_bytes(), &[]).await.0, 200);
    }
    s.wait_loaded().await;
    let before = get_json(&s, "/api/anonymous/a").await;
    assert_eq!(before["sessions"].as_array().unwrap().len(), 2, "a 39-minute gap: two visits so far: {before}");
    assert_eq!(s.post("/events", events[1].to_string().into_bytes(), &[]).await.0, 200);
    s.wait_loaded().await;
    let answer = get_json(&s, "/api/anonymous/a").await;
    let sessions = answer["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "the late page joins them into one visit: {answer}");
    assert_eq!(
        sessions[0]["referrer"],
        json!({"type": "search", "engine": "bing", "host": "www.bing.com", "query": "shoes"})
    );
    assert_eq!(sessions[0]["pageviews"], 3);
    assert_eq!(sessions[0]["endedAt"], "2026-11-01T10:39:00.000Z");
}

async fn alias_chains_and_several_devices_resolve_through_the_store_without_merging_shared_devices(b: Backend) {
    let Some(s) = InProcess::start_on(b, |_| {}).await else { return };
    let ident = |user: &str, anonymous: &str, id: &str| json!({"type": "identify", "userId": user, "anonymousId": anonymous, "messageId": id, "timestamp": "2026-11-01T09:00:00.000Z"});
    let events = vec![
        page("laptop", "p1", "2026-11-01T10:00:00.000Z", "https://shop.test/", "https://duckduckgo.com/"),
        page("phone", "p2", "2026-11-02T10:00:00.000Z", "https://shop.test/?utm_source=news&utm_medium=email", ""),
        page("kiosk", "p3", "2026-11-03T10:00:00.000Z", "https://shop.test/", ""),
        page("tablet", "p4", "2026-11-04T10:00:00.000Z", "https://shop.test/", "https://chatgpt.com/"),
        ident("old-account", "laptop", "i1"),
        // A track carrying both ids links the phone as well as an identify would.
        json!({"type": "track", "event": "Bought", "userId": "renamed", "anonymousId": "phone", "messageId": "t1",
               "timestamp": "2026-11-02T10:05:00.000Z"}),
        // old-account → renamed → current: an alias chain.
        json!({"type": "alias", "previousId": "old-account", "userId": "renamed", "messageId": "a1", "timestamp": "2026-11-02T11:00:00.000Z"}),
        json!({"type": "alias", "previousId": "renamed", "userId": "current", "messageId": "a2", "timestamp": "2026-11-03T11:00:00.000Z"}),
        // analytics.js aliasing the tablet's anonymousId to the user.
        json!({"type": "alias", "previousId": "tablet", "userId": "current", "messageId": "a3", "timestamp": "2026-11-04T11:00:00.000Z"}),
        // A kiosk both the user and a stranger logged in on.
        ident("current", "kiosk", "i2"),
        ident("stranger", "kiosk", "i3"),
    ];
    let batch = json!({"batch": events}).to_string();
    assert_eq!(s.post("/v1/batch", batch.into_bytes(), &[]).await.0, 200);
    s.wait_loaded().await;

    let user = get_json(&s, "/api/user/current").await;
    assert_eq!(user["anonymousIds"], json!(["kiosk", "laptop", "phone", "tablet"]));
    assert_eq!(user["userIds"], json!(["current", "old-account", "renamed"]));
    let landing: Vec<&str> =
        user["sessions"].as_array().unwrap().iter().map(|d| d[0]["messageId"].as_str().unwrap()).collect();
    assert_eq!(landing, ["p3", "p1", "p2", "p4"], "one array per anonymousId, in their order");
    assert_eq!(
        user["firstTouch"]["referrer"],
        json!({"type": "search", "engine": "duckduckgo", "host": "duckduckgo.com"})
    );
    assert_eq!(user["lastTouch"]["referrer"]["type"], "ai");
    assert_eq!(user["sessions"][2][0]["referrer"]["type"], "email", "utm_medium=email wins over no referrer");

    let stranger = get_json(&s, "/api/user/stranger").await;
    assert_eq!(stranger["anonymousIds"], json!(["kiosk"]), "a shared device never merges two users");
    assert_eq!(stranger["userIds"], json!(["stranger"]));
    // Starting anywhere in the chain gives the same person.
    assert_eq!(get_json(&s, "/api/user/old-account").await["anonymousIds"], user["anonymousIds"]);
}

common::on_both_backends!(
    the_seeds_flow_gives_the_seeds_answers,
    alias_chains_and_several_devices_resolve_through_the_store_without_merging_shared_devices,
    late_and_out_of_order_events_give_the_sessions_of_a_full_recomputation,
);
