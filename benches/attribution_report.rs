//! What an attribution report costs, against a plain read of the same events in the same run:
//!
//! - report: `query::attribution_report::report` with all seven models, grouped by channel, over
//!   1,000,000 page and track events of 100,000 people (1–3 devices each, 60% of them identified
//!   on every device), 20,000 of whom convert once (`Order Completed` with a revenue);
//! - baseline: `SELECT anonymous_id, timestamp, raw FROM events`, every row read.
//!
//! `cargo bench --bench attribution_report` runs both on SQLite; `PEOPLE`, `EVENTS_PER_PERSON`
//! and `RUNS` change the size; `RUST_LOG=sluice::query::attribution_report=debug` shows each
//! pass's time. Under `cargo test` it runs once on a few rows as a smoke test.

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat};
use sluice::attribution::AttributionSettings;
use sluice::query::attribution_report::{ReportRequest, report};
use sluice::store::where_clause::WhereClause;
use sluice::store::{Store, StoreTarget};

/// 2026-09-01T00:00:00Z.
const T0: i64 = 1_788_220_800_000;
const HOUR_MS: i64 = 3_600_000;

const LANDINGS: [(&str, &str); 8] = [
    ("https://shop.example/", "https://www.google.com/"),
    ("https://shop.example/?utm_source=newsletter&utm_medium=email&utm_campaign=nov", ""),
    ("https://shop.example/?gclid=abc", "https://www.google.com/"),
    ("https://shop.example/", ""),
    ("https://shop.example/", "https://www.facebook.com/"),
    ("https://shop.example/blog", "https://news.example.org/story"),
    ("https://shop.example/?utm_source=partner&utm_medium=affiliate", ""),
    ("https://shop.example/", "https://duckduckgo.com/"),
];

/// An event row as the store loader writes it: messageId, type, event, userId, anonymousId, timestamp, raw.
type EventRow = (String, &'static str, Option<&'static str>, Option<String>, String, i64, String);

/// The events of `people` people, `per_person` pages and tracks each, plus their identifies.
fn rows(people: usize, per_person: usize) -> Vec<EventRow> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift: deterministic data without a dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let iso = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut out = Vec::with_capacity(people * (per_person + 2));
    for p in 0..people {
        let devices = 1 + p % 3;
        let user = (p % 5 < 3).then(|| format!("user-{p}"));
        let converts = p % 5 == 1;
        for d in 0..devices {
            if let Some(user) = &user {
                let at = T0 + (next() % (1_440 * HOUR_MS as u64)) as i64;
                out.push((
                    format!("i-{p}-{d}"),
                    "identify",
                    None,
                    Some(user.clone()),
                    format!("a-{p}-{d}"),
                    at,
                    format!(
                        r#"{{"type":"identify","userId":"{user}","anonymousId":"a-{p}-{d}","timestamp":"{}"}}"#,
                        iso(at)
                    ),
                ));
            }
        }
        let pages = if converts { per_person - 1 } else { per_person };
        for e in 0..pages {
            let device = format!("a-{p}-{}", next() as usize % devices);
            let at = T0 + (next() % (1_440 * HOUR_MS as u64)) as i64;
            let (url, referrer) = LANDINGS[(next() % LANDINGS.len() as u64) as usize];
            out.push((
                format!("p-{p}-{e}"),
                "page",
                None,
                None,
                device.clone(),
                at,
                format!(
                    r#"{{"type":"page","anonymousId":"{device}","timestamp":"{}","context":{{"page":{{"url":"{url}","referrer":"{referrer}"}}}}}}"#,
                    iso(at)
                ),
            ));
        }
        if converts {
            let device = format!("a-{p}-0");
            let at = T0 + 1_200 * HOUR_MS + (next() % (240 * HOUR_MS as u64)) as i64;
            let revenue = (next() % 50_000) as f64 / 100.0;
            out.push((
                format!("c-{p}"),
                "track",
                Some("Order Completed"),
                user.clone(),
                device.clone(),
                at,
                format!(
                    r#"{{"type":"track","event":"Order Completed","anonymousId":"{device}","timestamp":"{}","properties":{{"revenue":{revenue}}}}}"#,
                    iso(at)
                ),
            ));
        }
    }
    out
}

fn main() {
    // RUST_LOG=sluice::query::attribution_report=debug shows the time of each pass.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let benching = std::env::args().any(|a| a == "--bench");
    let env_num = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (people, per_person, runs) = if benching {
        (env_num("PEOPLE", 100_000), env_num("EVENTS_PER_PERSON", 10), env_num("RUNS", 3))
    } else {
        (200, 10, 1)
    };
    let rows = rows(people, per_person);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite");
    drop(Store::open(&StoreTarget::Sqlite(path.clone())).unwrap());
    let started = Instant::now();
    {
        let mut db = rusqlite::Connection::open(&path).unwrap();
        let tx = db.transaction().unwrap();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO events (message_id, type, event, user_id, anonymous_id, timestamp, arrived_at, \
                     timestamp_clamped, raw, journal_offset) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 0, ?7, ?8)",
                )
                .unwrap();
            for (i, (id, kind, event, user, anonymous, at, raw)) in rows.iter().enumerate() {
                insert.execute(rusqlite::params![id, kind, event, user, anonymous, at, raw, i as i64]).unwrap();
            }
        }
        tx.commit().unwrap();
        db.execute_batch("ANALYZE").unwrap();
    }
    eprintln!("filled SQLite with {} events in {:.1} s", rows.len(), started.elapsed().as_secs_f64());
    drop(rows);

    let mut store = Store::open_read_only(&StoreTarget::Sqlite(path)).unwrap();
    let models = ["first", "last", "last_non_direct", "linear", "time_decay", "position_based", "data_driven"];
    let pairs: Vec<(String, String)> = models.iter().map(|m| ("model".to_owned(), (*m).to_owned())).collect();
    let request = ReportRequest::from_pairs(&pairs).unwrap();
    let settings =
        AttributionSettings { conversions: vec!["Order Completed".into()], ..AttributionSettings::default() };
    let (mut reports, mut baselines, mut conversions, mut events) = (Vec::new(), Vec::new(), 0, 0);
    for _ in 0..runs {
        let started = Instant::now();
        let answer = report(&mut store, &request, &settings).unwrap();
        reports.push(started.elapsed());
        conversions = answer.conversions;
        assert_eq!(answer.reports.len(), models.len());
        let started = Instant::now();
        events = 0;
        store
            .rows::<3>("SELECT anonymous_id, timestamp, raw FROM events", &WhereClause::default(), &mut |_| {
                events += 1;
                Ok(())
            })
            .unwrap();
        baselines.push(started.elapsed());
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (report_time, baseline) = (median(reports), median(baselines));
    println!(
        "SQLite: attribution report, 7 models, {conversions} conversions of {people} people over {events} events: \
         {:.3} s; baseline SELECT of every event {:.3} s; ratio {:.2} (medians of {runs})",
        report_time.as_secs_f64(),
        baseline.as_secs_f64(),
        report_time.as_secs_f64() / baseline.as_secs_f64()
    );
}
