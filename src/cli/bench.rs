/*!
`sluice bench`: a load generator for the Split webhook, with the in-process limit beside it.

It builds realistic gzip'd batches of unique impressions first (not timed), then:
1. the in-process limit: decode + parse + journal append of the same bodies, no HTTP;
2. HTTP: the same bodies POSTed with N concurrent connections to a server — `--url`, or a
   server started in this process on a temporary data directory — reporting acknowledged
   impressions/s and request latency percentiles;
3. the time until the store has loaded every acknowledged impression (from `/readyz`).
*/

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use flate2::Compression;
use flate2::write::GzEncoder;
use rand::{Rng as _, SeedableRng as _};

use crate::cli::serve::Server;
use crate::config::{Config, IngestLimits};
use crate::consumers::store_loader;
use crate::journal::Journal as _;
use crate::journal::file::FileJournal;
use crate::sources::body::{self, Encoding};
use crate::sources::dead_letter::DeadLetters;
use crate::sources::split::parse_batch;

/// Settings of `sluice bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server to load; by default one is started in this process on a temporary data directory.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Number of batches to send.
    #[arg(long, default_value_t = 300)]
    pub batches: usize,
    /// Impressions per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Concurrent connections (and in-process appenders).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Seed for the generated data; change it to send impressions the store has not seen.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Runs `sluice bench`.
pub fn run(config: Config, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.batches > 0 && args.batch_size > 0 && args.connections > 0,
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
    let bodies = Arc::new(make_bodies(&args));
    let impressions = args.batches * args.batch_size;
    let gz_bytes: usize = bodies.iter().map(Bytes::len).sum();
    println!(
        "generated {} batches x {} impressions ({:.1} MB gzip'd) in {:.2?}",
        args.batches,
        args.batch_size,
        gz_bytes as f64 / 1e6,
        started.elapsed()
    );

    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let limit = in_process(scratch.path(), &config, &bodies, args.connections).await?;
    println!(
        "in-process  decode+parse+journal: {:>10.0} impressions/s  ({:.2?} for {impressions})",
        impressions as f64 / limit.as_secs_f64(),
        limit
    );

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
    let (elapsed, mut latencies, accepted) = over_http(&client, &base, &bodies, args.connections).await?;
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "HTTP        acknowledged:        {:>10.0} impressions/s  ({:.2?} for {accepted}; {:.0}% of in-process)  latency p50 {:.1?} p99 {:.1?}",
        accepted as f64 / elapsed.as_secs_f64(),
        elapsed,
        100.0 * limit.as_secs_f64() / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    let loaded = wait_until_loaded(&client, &base).await?;
    println!("store       loaded everything {:.2?} after the last acknowledgement", loaded);
    if let Some(server) = server {
        println!("peak RSS of this process (server + load generator): {} MB", peak_rss_mb().unwrap_or(0));
        server.stop().await?;
    }
    Ok(())
}

/// Unique, realistic impressions: the field shapes and sizes of a JavaScript SDK's webhook batch.
fn make_bodies(args: &BenchArgs) -> Vec<Bytes> {
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
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let base_time = 1_763_800_000_000i64 + args.seed as i64 * 1_000_000_000;
    (0..args.batches)
        .map(|b| {
            let mut json = Vec::with_capacity(args.batch_size * 360);
            json.push(b'[');
            for i in 0..args.batch_size {
                if i > 0 {
                    json.push(b',');
                }
                let n = b * args.batch_size + i;
                let split = SPLITS[rng.random_range(0..SPLITS.len())];
                write!(
                    json,
                    r#"{{"key":"user-{}-{n}","split":"{split}","environmentId":"194da2f0-3e22-11ea-b6a2-0e1b26ff1a42","environmentName":"Production","treatment":"{}","time":{},"bucketingKey":null,"label":"default rule","machineName":"ip-10-0-{}-{}","machineIp":"10.0.{}.{}","splitVersionNumber":1763700000000,"sdk":"javascript","sdkVersion":"10.22.0","properties":"{{}}"}}"#,
                    args.seed,
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

/// Decode, parse and append every body with `connections` concurrent appenders, no HTTP.
async fn in_process(
    dir: &Path,
    config: &Config,
    bodies: &Arc<Vec<Bytes>>,
    connections: usize,
) -> anyhow::Result<Duration> {
    let journal = Arc::new(FileJournal::open(&dir.join("journal"), config.journal.clone())?);
    let dead_letters = Arc::new(DeadLetters::open(&dir.join("dead-letter"), config.dead_letter.max_bytes)?);
    let limits: IngestLimits = config.limits;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (journal, dead_letters, next, bodies) =
                (journal.clone(), dead_letters.clone(), next.clone(), bodies.clone());
            tokio::spawn(async move {
                while let Some(gz) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let plain = body::decode(Encoding::Gzip, gz.clone(), limits.max_decompressed_bytes)?;
                    let (records, _) =
                        parse_batch(&plain, &limits, 0, &dead_letters).map_err(|e| anyhow::anyhow!("{e}"))?;
                    journal.append(records).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    let elapsed = started.elapsed();
    journal.close().await;
    Ok(elapsed)
}

/// POSTs every body; returns the wall time, each request's latency and the impressions acknowledged.
async fn over_http(
    client: &reqwest::Client,
    base: &str,
    bodies: &Arc<Vec<Bytes>>,
    connections: usize,
) -> anyhow::Result<(Duration, Vec<Duration>, usize)> {
    let url = format!("{base}/v1/split/impressions");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, next, bodies) = (client.clone(), url.clone(), next.clone(), bodies.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut accepted = 0usize;
                while let Some(gz) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                    loop {
                        let t = Instant::now();
                        let response = client.post(&url).body(gz.clone()).send().await?;
                        let status = response.status();
                        let text = response.text().await?;
                        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                            // Backpressure is part of the contract: wait as told and resend.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                        anyhow::ensure!(status.is_success(), "the server answered {status}: {text}");
                        latencies.push(t.elapsed());
                        let report: serde_json::Value = serde_json::from_str(&text)?;
                        accepted += report["accepted"].as_u64().unwrap_or(0) as usize;
                        break;
                    }
                }
                anyhow::Ok((latencies, accepted))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut accepted = 0;
    for w in workers {
        let (l, a) = w.await??;
        all.extend(l);
        accepted += a;
    }
    Ok((started.elapsed(), all, accepted))
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
