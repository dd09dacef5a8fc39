/*!
What attribution costs: classifying touchpoints (a realistic mix of search, social, e-mail, AI,
paid, internal and direct visits) and sessionizing 10,000 events of 100 devices.

Run with `cargo bench --bench attribution`. Throughput is in touchpoints (classification) and
events (sessionization).
*/

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use sluice::attribution::{AttributionSettings, Event, classify, sessions};

/// Landing URL and referrer pairs, weighted roughly like a B2B site's traffic.
const MIX: &[(&str, Option<&str>)] = &[
    ("https://www.example.com/blog/post", Some("https://www.google.com/")),
    ("https://www.example.com/blog/post", Some("https://www.google.co.in/")),
    ("https://www.example.com/pricing", Some("https://www.example.com/blog/post")),
    ("https://www.example.com/pricing", Some("https://www.example.com/")),
    ("https://www.example.com/features", Some("https://www.example.com/pricing")),
    ("https://www.example.com/", None),
    ("https://www.example.com/", None),
    ("https://www.example.com/?utm_source=newsletter&utm_medium=email&utm_campaign=nov", Some("")),
    ("https://www.example.com/lp?gclid=EAIaIQobChMI", Some("https://www.google.com/")),
    ("https://www.example.com/lp?utm_source=linkedin&utm_medium=paid_social", Some("https://www.linkedin.com/")),
    ("https://www.example.com/blog/post?fbclid=IwAR0", Some("https://l.facebook.com/")),
    ("https://www.example.com/blog/post", Some("https://t.co/abc")),
    ("https://www.example.com/docs", Some("https://chatgpt.com/")),
    ("https://www.example.com/docs", Some("https://www.bing.com/search?q=example+docs")),
    ("https://www.example.com/docs", Some("https://news.ycombinator.com/item?id=1")),
    ("https://www.example.com/", Some("android-app://com.google.android.gm")),
    ("https://www.example.com/case-study", Some("https://some-partner-blog.net/2026/11/review")),
    ("https://www.example.com/case-study", Some("https://mail.google.com/")),
];

fn events(devices: usize, per_device: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(devices * per_device);
    for d in 0..devices {
        for i in 0..per_device {
            let (url, referrer) = MIX[(d * 7 + i) % MIX.len()];
            // Mostly a few minutes apart, with a long gap every 20 events.
            let seconds = (i as i64) * 120 + (i as i64 / 20) * 7200;
            let timestamp = chrono::DateTime::from_timestamp(1_764_000_000 + seconds, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            let mut e = json!({
                "type": if i % 3 == 2 { "track" } else { "page" },
                "messageId": format!("ajs-{d}-{i}"),
                "anonymousId": format!("anon-{d:04}"),
                "timestamp": timestamp,
                "context": {"page": {"url": url}},
            });
            if let Some(r) = referrer {
                e["context"]["page"]["referrer"] = json!(r);
            }
            out.push(Event::from_value(&e));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let settings = AttributionSettings { own_domains: vec!["example.com".into()], ..AttributionSettings::default() };

    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(MIX.len() as u64));
    group.bench_function("mix", |b| {
        b.iter(|| {
            for (url, referrer) in MIX {
                black_box(classify(Some(url), *referrer, &settings));
            }
        })
    });
    group.finish();

    let all = events(100, 100);
    let mut group = c.benchmark_group("sessions");
    group.throughput(Throughput::Elements(all.len() as u64));
    group.bench_function("10k_events_100_devices", |b| b.iter(|| black_box(sessions(&all, None, &settings))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
