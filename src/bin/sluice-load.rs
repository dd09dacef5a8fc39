/*!
`sluice-load`: a load generator for the Split webhook (`--source split`, the default) or the
Segment Tracking API (`--source segment`, `/v1/batch`), with the in-process limit beside it.

A program of its own rather than a `sluice` subcommand, so that the library exposes only one
entry per source for it (`records_in_process`), not the parsers behind them.

It builds realistic batches first (not timed: gzip'd unique impressions, or plain-JSON batches of
unique page/track/identify events as Segment's libraries send them), then:
1. the in-process limit: decode + parse + journal append of the same bodies, no HTTP;
2. HTTP: the same bodies POSTed with N concurrent connections to a server — `--url`, or a
   server started in this process on a temporary data directory — reporting acknowledged
   impressions/s and request latency percentiles;
3. the time until the store has loaded every acknowledged record (from `/readyz`).

With a JetStream journal configured (`[journal] url`, `SLUICE_JOURNAL__URL`), the in-process run
appends to the JetStream journal (a scratch stream beside the configured one), and a third
figure is measured in the same run: a raw `async-nats` publish-with-ack loop of the same records
(pre-parsed; each batch published whole, then its acknowledgements awaited, `--connections` at
once) into another scratch stream with the same settings. The scratch streams are deleted at
the end; the server's stream is the configured one (use a fresh name per run: the stream
remembers record identities for `dedup_window_secs`, and a batch sent again is not stored again).
*/

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use flate2::Compression;
use flate2::write::GzEncoder;
use rand::{Rng as _, SeedableRng as _};
use sluice::cli::serve::Server;
use sluice::config::{Config, Overrides, Settings};
use sluice::consumers::store_loader;
use sluice::journal::file::FileJournal;
use sluice::journal::jetstream::{JetStreamJournal, JetStreamSettings, RECEIVED_AT_HEADER};
use sluice::sources::{segment, split};

/// Load-test the Split webhook or the Segment Tracking API: records/s, latency, the in-process limit.
#[derive(Debug, Parser)]
#[command(name = "sluice-load", version)]
struct BenchArgs {
    /// sluice's TOML configuration file: its journal and limits settings apply to the in-process
    /// run and to the server started here (SLUICE_* variables as for `sluice`).
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Server to load; by default one is started in this process on a temporary data directory.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Number of batches to send.
    #[arg(long, default_value_t = 300)]
    batches: usize,
    /// Records per batch (default: 1000 impressions, or 100 events as Segment's libraries batch).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Which source to load.
    #[arg(long, value_enum, default_value_t = BenchSource::Split)]
    source: BenchSource,
    /// Concurrent connections (and in-process appenders).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seed for the generated data; change it to send impressions the store has not seen.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The sources `sluice-load` can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchSource {
    /// Split's impressions webhook, gzip'd JSON arrays.
    Split,
    /// The Segment Tracking API's `/v1/batch`.
    Segment,
}

impl BenchSource {
    fn path(self) -> &'static str {
        match self {
            BenchSource::Split => "/v1/split/impressions",
            BenchSource::Segment => "/v1/batch",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            BenchSource::Split => "impressions",
            BenchSource::Segment => "events",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = BenchArgs::parse();
    let (settings, warnings) = Settings::load(args.config.as_deref(), &Overrides::default())?;
    for warning in warnings {
        eprintln!("sluice-load: warning: {warning}");
    }
    let config = Arc::unwrap_or_clone(settings.config);
    anyhow::ensure!(
        args.batches > 0 && args.batch_size != Some(0) && args.connections > 0,
        "--batches, --batch-size and --connections must be above 0"
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?
        .block_on(bench(config, args))
}

async fn bench(mut config: Config, args: BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let source = args.source;
    let batch_size = args.batch_size.unwrap_or(match source {
        BenchSource::Split => 1000,
        BenchSource::Segment => 100,
    });
    let bodies = Arc::new(match source {
        BenchSource::Split => make_bodies(args.batches, batch_size, args.seed),
        BenchSource::Segment => make_segment_bodies(args.batches, batch_size, args.seed),
    });
    let records = args.batches * batch_size;
    let unit = source.unit();
    let body_bytes: usize = bodies.iter().map(Bytes::len).sum();
    println!(
        "generated {} batches x {batch_size} {unit} ({:.1} MB{}) in {:.2?}",
        args.batches,
        body_bytes as f64 / 1e6,
        if source == BenchSource::Split { " gzip'd" } else { "" },
        started.elapsed()
    );

    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let jetstream = JetStreamSettings::from_config(&config.journal)?;
    let limit = in_process(scratch.path(), &config, jetstream.as_ref(), &bodies, args.connections, source).await?;
    println!(
        "in-process  decode+parse+journal: {:>10.0} {unit}/s  ({:.2?} for {records}){}",
        records as f64 / limit.as_secs_f64(),
        limit,
        if jetstream.is_some() { " [JetStream journal]" } else { "" }
    );
    let raw = match &jetstream {
        Some(settings) => {
            let raw = raw_nats(settings, &config, &bodies, args.connections, source).await?;
            println!(
                "raw NATS    publish-with-ack loop: {:>8.0} {unit}/s  ({:.2?} for {records}; the same records, pre-parsed)",
                records as f64 / raw.as_secs_f64(),
                raw
            );
            Some(raw)
        }
        None => None,
    };

    let (base, server) = match &args.url {
        Some(url) => (url.trim_end_matches('/').to_owned(), None),
        None => {
            config.data_dir = scratch.path().join("server");
            config.listen = ([127, 0, 0, 1], 0).into();
            let server = Server::start(config).await?;
            (format!("http://{}", server.addr), Some(server))
        }
    };
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.connections).build()?;
    let (elapsed, mut latencies, accepted) =
        over_http(&client, &base, &bodies, args.connections, source, batch_size).await?;
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let of_raw = raw
        .map(|raw| format!("; {:.0}% of raw NATS", 100.0 * raw.as_secs_f64() / elapsed.as_secs_f64()))
        .unwrap_or_default();
    println!(
        "HTTP        acknowledged:        {:>10.0} {unit}/s  ({:.2?} for {accepted}; {:.0}% of in-process{of_raw})  latency p50 {:.1?} p99 {:.1?}",
        accepted as f64 / elapsed.as_secs_f64(),
        elapsed,
        100.0 * limit.as_secs_f64() / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    let loaded = wait_until_loaded(&client, &base).await?;
    println!("store       loaded everything {:.2?} after the last acknowledgement", loaded);
    if source == BenchSource::Segment {
        // Every device's sessions, as `GET /api/anonymous/{id}` computes them from the stored events.
        let ids: Vec<String> = (0..records.div_ceil(EVENTS_PER_DEVICE)).map(|d| device_id(args.seed, d)).collect();
        let (took, sessions) = sessions_over_http(&client, &base, ids.clone(), args.connections).await?;
        println!(
            "sessions    {} devices' sessions ({sessions}) in {took:.2?}: {:.0} events/s sessionized; end to end (ingest + load + sessions) {:.0} events/s",
            ids.len(),
            records as f64 / took.as_secs_f64(),
            records as f64 / (elapsed + loaded + took).as_secs_f64()
        );
    }
    if let Some(server) = server {
        println!("peak RSS of this process (server + load generator): {} MB", peak_rss_mb().unwrap_or(0));
        server.stop().await?;
    }
    Ok(())
}

/// Events per generated device (anonymousId), in consecutive order.
const EVENTS_PER_DEVICE: usize = 5;

fn device_id(seed: u64, device: usize) -> String {
    format!("anon-{seed}-{device}")
}

/// GETs `/api/anonymous/{id}` for every id with `connections` concurrent clients; returns the wall
/// time and the number of sessions served.
async fn sessions_over_http(
    client: &reqwest::Client,
    base: &str,
    ids: Vec<String>,
    connections: usize,
) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let (client, base) = (client.clone(), Arc::<str>::from(base));
    let answers = in_turn(Arc::new(ids), connections, move |id| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let response = client.get(format!("{base}/api/anonymous/{id}")).send().await?;
            anyhow::ensure!(response.status().is_success(), "/api/anonymous/{id} answered {}", response.status());
            let answer: serde_json::Value = response.json().await?;
            // A device that sent no page has no sessions; the total is checked below.
            Ok(answer["sessions"].as_array().map_or(0, Vec::len))
        }
    })
    .await?;
    let sessions: usize = answers.into_iter().sum();
    anyhow::ensure!(sessions > 0, "no device had a session: the generated pages were not stored");
    Ok((started.elapsed(), sessions))
}

/// Unique, realistic Segment events in `/v1/batch` bodies, as analytics.js or a server library
/// sends them: pages with context, tracks with properties, identifies with traits.
fn make_segment_bodies(batches: usize, batch_size: usize, seed: u64) -> Vec<Bytes> {
    const REFERRERS: [&str; 5] = [
        "https://www.google.com/",
        "https://www.linkedin.com/feed/",
        "",
        "https://news.ycombinator.com/",
        "https://chatgpt.com/",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let base =
        chrono::DateTime::from_timestamp_millis(1_763_800_000_000 + seed as i64 * 1_000_000_000).unwrap_or_default();
    (0..batches)
        .map(|b| {
            let mut json = Vec::with_capacity(batch_size * 700);
            json.extend_from_slice(br#"{"batch":["#);
            for i in 0..batch_size {
                if i > 0 {
                    json.push(b',');
                }
                let n = b * batch_size + i;
                let ts = (base + chrono::Duration::milliseconds(n as i64)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let anon = device_id(seed, n / EVENTS_PER_DEVICE);
                let common = format!(
                    r#""messageId":"bench-{seed}-{n}","anonymousId":"{anon}","timestamp":"{ts}","context":{{"ip":"10.0.{}.{}","userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36","locale":"en-US","library":{{"name":"analytics.js","version":"next-1.74.0"}}"#,
                    n % 250,
                    n % 200
                );
                match rng.random_range(0..10) {
                    0..=5 => write!(
                        json,
                        r#"{{"type":"page","name":"Pricing",{common},"page":{{"url":"https://shop.example.com/pricing?utm_source=newsletter&utm_medium=email","path":"/pricing","referrer":"{}","title":"Pricing"}}}},"properties":{{"path":"/pricing","title":"Pricing"}}}}"#,
                        REFERRERS[rng.random_range(0..REFERRERS.len())]
                    ),
                    6..=8 => write!(
                        json,
                        r#"{{"type":"track","event":"Product Added",{common}}},"properties":{{"product_id":"sku-{}","price":{}.99,"quantity":1,"currency":"USD"}}}}"#,
                        n % 977,
                        n % 90
                    ),
                    _ => write!(
                        json,
                        r#"{{"type":"identify","userId":"user-{seed}-{}",{common}}},"traits":{{"email":"user{}@example.com","plan":"pro"}}}}"#,
                        n / 5,
                        n / 5
                    ),
                }
                .expect("writing to a Vec cannot fail");
            }
            let sent = (base + chrono::Duration::milliseconds(((b + 1) * batch_size) as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            write!(json, r#"],"sentAt":"{sent}"}}"#).expect("writing to a Vec cannot fail");
            Bytes::from(json)
        })
        .collect()
}

/// Unique, realistic impressions: the field shapes and sizes of a JavaScript SDK's webhook batch.
fn make_bodies(batches: usize, batch_size: usize, seed: u64) -> Vec<Bytes> {
    const SPLITS: [&str; 8] = [
        "checkout_v2",
        "new_onboarding",
        "pricing_page",
        "search_ranking",
        "dark_mode",
        "free_shipping",
        "recs_model",
        "nav_redesign",
    ];
    const TREATMENTS: [&str; 3] = ["on", "off", "control"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let base_time = 1_763_800_000_000i64 + seed as i64 * 1_000_000_000;
    (0..batches)
        .map(|b| {
            let mut json = Vec::with_capacity(batch_size * 360);
            json.push(b'[');
            for i in 0..batch_size {
                if i > 0 {
                    json.push(b',');
                }
                let n = b * batch_size + i;
                let split = SPLITS[rng.random_range(0..SPLITS.len())];
                write!(
                    json,
                    r#"{{"key":"user-{}-{n}","split":"{split}","environmentId":"194da2f0-3e22-11ea-b6a2-0e1b26ff1a42","environmentName":"Production","treatment":"{}","time":{},"bucketingKey":null,"label":"default rule","machineName":"ip-10-0-{}-{}","machineIp":"10.0.{}.{}","splitVersionNumber":1763700000000,"sdk":"javascript","sdkVersion":"10.22.0","properties":"{{}}"}}"#,
                    seed,
                    TREATMENTS[rng.random_range(0..TREATMENTS.len())],
                    base_time + n as i64,
                    n % 250,
                    n % 200,
                    n % 250,
                    n % 200,
                )
                .expect("writing to a Vec cannot fail");
            }
            json.push(b']');
            let mut gz = GzEncoder::new(Vec::new(), Compression::default());
            gz.write_all(&json).expect("writing to a Vec cannot fail");
            Bytes::from(gz.finish().expect("writing to a Vec cannot fail"))
        })
        .collect()
}

/// The records of one body, as the source parses them.
fn parse(body: Bytes, config: &Config, source: BenchSource) -> anyhow::Result<Vec<sluice::journal::Record>> {
    match source {
        BenchSource::Split => split::records_in_process(body, &config.limits),
        BenchSource::Segment => segment::batch_records_in_process(&body, config),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A scratch stream beside the configured one, deleted by [`delete_stream`].
fn scratch_stream(settings: &JetStreamSettings, what: &str) -> JetStreamSettings {
    JetStreamSettings { stream: format!("{}_{what}_{}", settings.stream, std::process::id()), ..settings.clone() }
}

/// Deletes a scratch stream.
async fn delete_stream(journal: &JetStreamJournal, settings: &JetStreamSettings) {
    if let Err(e) = journal.jetstream().delete_stream(&settings.stream).await {
        eprintln!("sluice-load: could not delete the scratch stream {}: {e}", settings.stream);
    }
}

/// Publishes the same records as a plain async-nats program would: each batch's records without
/// waiting, then their acknowledgements, `connections` batches at once, into a scratch stream
/// created with the journal's settings.
async fn raw_nats(
    settings: &JetStreamSettings,
    config: &Config,
    bodies: &Arc<Vec<Bytes>>,
    connections: usize,
    source: BenchSource,
) -> anyhow::Result<Duration> {
    let settings = scratch_stream(settings, "RAW");
    let journal = JetStreamJournal::open(&settings).await?;
    let batches = bodies.iter().map(|body| parse(body.clone(), config, source)).collect::<anyhow::Result<Vec<_>>>()?;
    // Room for every batch's acknowledgements at once, as the journal has: a smaller pool that
    // waits when empty deadlocks batches that each hold part of it.
    let context = async_nats::jetstream::ContextBuilder::new().max_ack_inflight(1 << 16).build(journal.client());
    let stream = Arc::<str>::from(settings.stream.as_str());
    let started = Instant::now();
    in_turn(Arc::new(batches), connections, move |records| {
        let (context, stream) = (context.clone(), stream.clone());
        async move {
            let mut acks = Vec::with_capacity(records.len());
            for record in records {
                let message = async_nats::jetstream::message::PublishMessage::build()
                    .payload(record.payload)
                    .message_id(record.id.to_hex())
                    .header(RECEIVED_AT_HEADER, record.received_at_ms.to_string());
                acks.push(context.send_publish(format!("{stream}.{}", record.kind.name()), message).await?);
            }
            for ack in futures_util::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await
            {
                ack?;
            }
            anyhow::Ok(())
        }
    })
    .await?;
    let elapsed = started.elapsed();
    delete_stream(&journal, &settings).await;
    Ok(elapsed)
}

/// Decode, parse and append every body with `connections` concurrent appenders, no HTTP: to the
/// JetStream journal (a scratch stream) when one is configured, else to a file journal in `dir`.
async fn in_process(
    dir: &Path,
    config: &Config,
    jetstream: Option<&JetStreamSettings>,
    bodies: &Arc<Vec<Bytes>>,
    connections: usize,
    source: BenchSource,
) -> anyhow::Result<Duration> {
    if let Some(settings) = jetstream {
        let settings = scratch_stream(settings, "INPROC");
        let journal = Arc::new(JetStreamJournal::open(&settings).await?);
        let elapsed = append_all(journal.clone(), config, bodies, connections, source).await?;
        journal.close().await;
        delete_stream(&journal, &settings).await;
        return Ok(elapsed);
    }
    let journal = Arc::new(FileJournal::open(&dir.join("journal"), config.journal.file())?);
    let elapsed = append_all(journal.clone(), config, bodies, connections, source).await?;
    journal.close().await;
    Ok(elapsed)
}

/// Parses and appends every body to `journal`; returns the time it took.
async fn append_all(
    journal: Arc<dyn sluice::journal::Journal>,
    config: &Config,
    bodies: &Arc<Vec<Bytes>>,
    connections: usize,
    source: BenchSource,
) -> anyhow::Result<Duration> {
    let config = Arc::new(config.clone());
    let started = Instant::now();
    let appender = journal.clone();
    in_turn(bodies.clone(), connections, move |body| {
        let (journal, config) = (appender.clone(), config.clone());
        async move {
            journal.append(parse(body, &config, source)?).await?;
            Ok(())
        }
    })
    .await?;
    Ok(started.elapsed())
}

/// POSTs every body; returns the wall time, each request's latency and the records acknowledged.
async fn over_http(
    client: &reqwest::Client,
    base: &str,
    bodies: &Arc<Vec<Bytes>>,
    connections: usize,
    source: BenchSource,
    batch_size: usize,
) -> anyhow::Result<(Duration, Vec<Duration>, usize)> {
    let (client, url) = (client.clone(), Arc::<str>::from(format!("{base}{}", source.path())));
    let started = Instant::now();
    let answers = in_turn(bodies.clone(), connections, move |body| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            loop {
                let t = Instant::now();
                let response = client.post(&*url).body(body.clone()).send().await?;
                let status = response.status();
                let text = response.text().await?;
                if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                    // Backpressure is part of the contract: wait as told and resend.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                anyhow::ensure!(status.is_success(), "the server answered {status}: {text}");
                let report: serde_json::Value = serde_json::from_str(&text)?;
                // The Tracking API answers exactly `{"success":true}` when it took everything.
                return Ok((t.elapsed(), report["accepted"].as_u64().map_or(batch_size, |n| n as usize)));
            }
        }
    })
    .await?;
    let accepted = answers.iter().map(|(_, accepted)| accepted).sum();
    Ok((started.elapsed(), answers.into_iter().map(|(latency, _)| latency).collect(), accepted))
}

/// Runs `work` on every item with `connections` workers, each taking the next item not yet
/// taken; returns the answers (in no particular order) or the first error.
async fn in_turn<T, R, F, Fut>(items: Arc<Vec<T>>, connections: usize, work: F) -> anyhow::Result<Vec<R>>
where
    T: Clone + Send + Sync + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<R>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (items, next, work) = (items.clone(), next.clone(), work.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    answers.push(work(item.clone()).await?);
                }
                anyhow::Ok(answers)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await??);
    }
    Ok(answers)
}

/// Polls `/readyz` until the store loader has caught up with the journal. Only the store: the
/// lake writer holds records in buffers by design (up to `lake.flush_secs`), so its lag says
/// nothing about speed.
async fn wait_until_loaded(client: &reqwest::Client, base: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let ready: serde_json::Value = client.get(format!("{base}/readyz")).send().await?.json().await?;
        let store = &ready["consumers"][store_loader::CONSUMER];
        anyhow::ensure!(!store.is_null(), "/readyz at {base} does not list the store loader; is it a sluice server?");
        if store["lag"].as_u64() == Some(0) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the store did not catch up within 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn peak_rss_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}
