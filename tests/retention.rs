//! Retention: store rows whose own time is past their kind's horizon are deleted, on both
//! backends, and nothing else is: not a row at the horizon, not the kind without a horizon.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backend, InProcess, TestSchema, on_both_backends, store_scalar};
use serde_json::json;
use sluice::journal::Entry;
use sluice::record::{DedupMode, RecordKind};
use sluice::retention::{self, Deleted, Policy};
use sluice::store::{EventQuery, ImpressionQuery, Store, StoreTarget};
use tokio_util::sync::CancellationToken;

const DAY_MS: i64 = 86_400_000;
/// The "now" of the store-level tests: 2026-05-28.
const NOW: i64 = 1_780_000_000_000;

/// A fresh store on `backend`, and what keeps it alive; `None` when PostgreSQL is unreachable
/// outside CI (the skip was announced).
fn fresh_store(backend: Backend) -> Option<(StoreTarget, Option<TestSchema>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    Some(match backend {
        Backend::Sqlite => (StoreTarget::Sqlite(dir.path().join("store.sqlite")), None, dir),
        Backend::Postgres => {
            let schema = TestSchema::create()?;
            let target = StoreTarget::parse(Some(&schema.url), PathBuf::new(), 10_000).unwrap();
            (target, Some(schema), dir)
        }
    })
}

fn impression(offset: u64, key: &str, time: i64) -> Entry {
    let json = json!({"key": key, "split": "s", "environmentName": "P", "treatment": "on", "label": "l", "time": time});
    Entry { offset, kind: RecordKind::SplitImpression, received_at_ms: NOW, payload: Bytes::from(json.to_string()) }
}

fn event(offset: u64, message_id: &str, timestamp: i64) -> Entry {
    let at = chrono::DateTime::from_timestamp_millis(timestamp).unwrap();
    let json = json!({
        "type": "track", "event": "E", "userId": "u", "messageId": message_id,
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "sluice": {"arrivedAt": NOW, "via": "webhook"},
    });
    Entry { offset, kind: RecordKind::SegmentEvent, received_at_ms: NOW, payload: Bytes::from(json.to_string()) }
}

/// Impressions and events around both horizons: just outside, exactly at, just inside, far
/// older, and new. Keys and messageIds name where each one is.
fn around(impressions_days: i64, events_days: i64) -> Vec<Entry> {
    let at = |horizon_days: i64| {
        let horizon = NOW - horizon_days * DAY_MS;
        [("outside", horizon - 1), ("at", horizon), ("inside", horizon + 1), ("ancient", 0), ("new", NOW)]
    };
    let impressions = at(impressions_days).map(|(key, time)| impression(0, key, time));
    let events = at(events_days).map(|(id, timestamp)| event(0, id, timestamp));
    let mut entries: Vec<Entry> = impressions.into_iter().chain(events).collect();
    for (offset, entry) in entries.iter_mut().enumerate() {
        entry.offset = offset as u64;
    }
    entries
}

/// The keys of the stored impressions and the messageIds of the stored events, sorted.
fn stored(store: &mut Store) -> (Vec<String>, Vec<String>) {
    let mut keys = Vec::new();
    store
        .query_impressions(&ImpressionQuery::default(), &mut |v| {
            keys.push(v.key.to_owned());
            Ok(())
        })
        .unwrap();
    let mut ids = Vec::new();
    store
        .query_events(&EventQuery::default(), &mut |v| {
            ids.push(v.message_id.to_owned());
            Ok(())
        })
        .unwrap();
    keys.sort();
    ids.sort();
    (keys, ids)
}

fn policy(impressions_days: Option<u64>, events_days: Option<u64>) -> Policy {
    let days = |d: Option<u64>| d.map(|d| Duration::from_secs(d * 86_400));
    Policy { impressions: days(impressions_days), events: days(events_days), interval: Duration::from_secs(3600) }
}

fn names(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

async fn retention_deletes_exactly_the_rows_past_the_horizon(backend: Backend) {
    let Some((target, _schema, _dir)) = fresh_store(backend) else { return };
    // The sync PostgreSQL driver must not run on the test's runtime thread.
    tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&target).unwrap();
        store.load("store", &around(30, 7), DedupMode::Exact).unwrap();
        let stop = CancellationToken::new();
        let deleted = retention::sweep(&mut store, &policy(Some(30), Some(7)), NOW, &stop).unwrap();
        assert_eq!(deleted, Deleted { impressions: 2, events: 2 });
        let kept = names(&["at", "inside", "new"]);
        assert_eq!(stored(&mut store), (kept.clone(), kept.clone()), "a row exactly at the horizon stays");
        let again = retention::sweep(&mut store, &policy(Some(30), Some(7)), NOW, &stop).unwrap();
        assert_eq!(again, Deleted::default(), "a second pass finds nothing more");
        // One millisecond later, the rows that were exactly at the horizon are past it.
        let later = retention::sweep(&mut store, &policy(Some(30), Some(7)), NOW + 1, &stop).unwrap();
        assert_eq!(later, Deleted { impressions: 1, events: 1 });
        let kept = names(&["inside", "new"]);
        assert_eq!(stored(&mut store), (kept.clone(), kept));
    })
    .await
    .unwrap();
}

async fn retention_of_one_kind_leaves_the_other_kind_untouched(backend: Backend) {
    let Some((target, _schema, _dir)) = fresh_store(backend) else { return };
    tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&target).unwrap();
        store.load("store", &around(30, 30), DedupMode::Exact).unwrap();
        let stop = CancellationToken::new();
        let all = names(&["outside", "at", "inside", "ancient", "new"]);
        let kept = names(&["at", "inside", "new"]);

        let deleted = retention::sweep(&mut store, &policy(None, Some(30)), NOW, &stop).unwrap();
        assert_eq!(deleted, Deleted { impressions: 0, events: 2 });
        assert_eq!(stored(&mut store), (all, kept.clone()), "only events have a horizon");

        let deleted = retention::sweep(&mut store, &policy(Some(30), None), NOW, &stop).unwrap();
        assert_eq!(deleted, Deleted { impressions: 2, events: 0 });
        assert_eq!(stored(&mut store), (kept.clone(), kept));
    })
    .await
    .unwrap();
}

async fn a_delete_statement_removes_at_most_its_limit(backend: Backend) {
    let Some((target, _schema, _dir)) = fresh_store(backend) else { return };
    tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&target).unwrap();
        let entries: Vec<Entry> = (0..5).map(|i| impression(i, &format!("k{i}"), i as i64)).collect();
        store.load("store", &entries, DedupMode::Exact).unwrap();
        assert_eq!(store.delete_older_than(RecordKind::SplitImpression, 4, 3).unwrap(), 3);
        assert_eq!(store.delete_older_than(RecordKind::SplitImpression, 4, 3).unwrap(), 1);
        assert_eq!(store.delete_older_than(RecordKind::SplitImpression, 4, 3).unwrap(), 0);
        assert_eq!(stored(&mut store).0, names(&["k4"]));
    })
    .await
    .unwrap();
}

/// The job inside `sluice serve`: at start and every `interval_secs`, counted in `/metrics`.
async fn the_running_server_deletes_impressions_past_the_horizon_and_keeps_events(backend: Backend) {
    let Some(server) = InProcess::start_on(backend, |c| {
        c.retention.impressions_days = Some(1);
        c.retention.interval_secs = 1;
    })
    .await
    else {
        return;
    };
    let now = chrono::Utc::now().timestamp_millis();
    let old = now - 2 * DAY_MS;
    let batch = json!([
        common::impression("old", "s", "P", "on", "r", old),
        common::impression("fresh", "s", "P", "on", "r", now),
    ]);
    assert_eq!(server.post("/v1/split/impressions", batch.to_string().into_bytes(), &[]).await.0, 200);
    for (id, ts) in [("old", old), ("fresh", now)] {
        let at = chrono::DateTime::from_timestamp_millis(ts).unwrap().to_rfc3339();
        let e = json!({"type": "track", "event": "E", "userId": "u", "messageId": id, "timestamp": at});
        assert_eq!(server.post("/v1/segment/webhook", e.to_string().into_bytes(), &[]).await.0, 200);
    }
    server.wait_loaded().await;
    let count = |sql: &'static str| store_scalar(server.dir.path(), server.schema.as_ref(), sql);
    let started = Instant::now();
    while count("SELECT COUNT(*) FROM impressions").await != 1 {
        assert!(started.elapsed() < Duration::from_secs(30), "the old impression was not deleted within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count("SELECT COUNT(*) FROM impressions WHERE key = 'fresh'").await, 1);
    assert_eq!(count("SELECT COUNT(*) FROM events").await, 2, "events have no horizon here");
    let (_, metrics) = server.get("/metrics").await;
    let deleted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"sluice_retention_deleted_rows_total{kind="impressions"} "#))
        .unwrap_or_else(|| panic!("no impressions retention counter in {metrics}"))
        .parse()
        .unwrap();
    assert!(deleted >= 1.0, "{metrics}");
    // Shutdown does not wait for the next pass.
    let stopping = Instant::now();
    server.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(5), "stopping took {:?}", stopping.elapsed());
}

on_both_backends!(
    retention_deletes_exactly_the_rows_past_the_horizon,
    retention_of_one_kind_leaves_the_other_kind_untouched,
    a_delete_statement_removes_at_most_its_limit,
    the_running_server_deletes_impressions_past_the_horizon_and_keeps_events,
);
