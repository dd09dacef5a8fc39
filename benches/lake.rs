/*!
Lake throughput per format, next to a tight loop that encodes the same records into the same
objects and PUTs them to the same store, and raw PUTs of the same bytes, in the same run.

A journal is filled once with ~330-byte impressions over four event hours. Each run points a
fresh lake writer (new checkpoint, new prefix) at it with shutdown already requested, so it
archives the whole journal and returns: the time covers reading the journal, parsing, routing,
encoding, uploading (default 8 MiB buffers) and checkpointing. The raw baseline then PUTs the
very objects that run wrote, same sizes, same store, same `Lake::put` (so the local directory's
fsyncs count on both sides), one after another as the writer does.

The tight loop is what the writer would cost with nothing but its work: for each object the run
wrote, it parses that object's records from memory (`encode::parse`), appends them to a
`Pending` of the same format, finishes it and PUTs it to the same store under another prefix,
one object after another on one task. No journal read, no routing, no checkpoint, no mark.
*lake / tight* is the writer's records/s as a share of the loop's.

The journal fill is timed too: a durable append of the same records in 10,000-record batches is
the most sluice can ingest (HTTP, gunzip and validation only lower it), so *lake / append* says
whether archiving keeps up with ingest.

Stores: a local directory, and s3s-fs on loopback when `TEST_S3S_FS` names its binary
(`scripts/test.sh` installs it in `~/.cache/sluice-test-tools/bin`).

    cargo bench --bench lake                       # 200,000 records, 3 runs per case, medians
    TEST_S3S_FS=~/.cache/sluice-test-tools/bin/s3s-fs cargo bench --bench lake
    cargo bench --bench lake -- json.gz            # one format (json.gz, json.zst or parquet)

Under `cargo test` (no `--bench` argument) it does one tiny run as a smoke test.
*/

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::consumers::lake_writer::{LakeStatus, LakeWriter};
use sluice::journal::file::{FileJournal, FileJournalConfig};
use sluice::journal::{Journal, Record};
use sluice::lake::encode::{self, Pending};
use sluice::lake::objects::offsets;
use sluice::lake::{Lake, LakeConfig, LakeFormat, Layout};
use sluice::record::RecordKind;
use tokio_util::sync::CancellationToken;

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_700_000_000_000;

fn impression(i: usize) -> Record {
    let payload = format!(
        r#"{{"key":"user-{i:08}","split":"checkout_v{}","environmentId":"env-1","environmentName":"Production","treatment":"{}","time":{},"bucketingKey":null,"label":"default rule","machineName":"ip-10-0-0-{}","machineIp":"10.0.0.{}","splitVersionNumber":1699999999000,"sdk":"go","sdkVersion":"6.1.0","properties":"{{\"plan\":\"pro\"}}"}}"#,
        i % 7,
        if i.is_multiple_of(2) { "on" } else { "off" },
        T0 + (i % 4) as i64 * HOUR + (i as i64 % 1000),
        i % 250,
        i % 250,
    );
    Record::from_payload(RecordKind::SplitImpression, T0, Bytes::from(payload)).expect("a valid impression")
}

/// Every file under `dir` with its path relative to `dir`.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push((
                    path.strip_prefix(root).unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// Where a case writes: the lake's URL for a run, and the directory that ends up holding it.
struct Store {
    name: &'static str,
    config: LakeConfig,
    /// Directory holding the objects of URL prefix `p` at `disk.join(p)`.
    disk: PathBuf,
    url_base: String,
    _server: Option<S3sFs>,
}

struct S3sFs(Child);

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn local_store(root: &Path) -> Store {
    let disk = root.join("local");
    Store {
        name: "local dir",
        config: LakeConfig::default(),
        url_base: disk.display().to_string(),
        disk,
        _server: None,
    }
}

fn s3_store(root: &Path, binary: &Path) -> Store {
    let disk = root.join("s3");
    std::fs::create_dir_all(disk.join("bench")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", "bench-access"])
        .args(["--secret-key", "bench-secret-0123456789"])
        .arg(&disk)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: set before any other thread of this process reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "bench-access");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench-secret-0123456789");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    let config = LakeConfig { endpoint: Some(format!("http://127.0.0.1:{port}")), ..LakeConfig::default() };
    Store {
        name: "s3s-fs (S3 over loopback)",
        config,
        url_base: "s3://bench".into(),
        disk: disk.join("bench"),
        _server: Some(S3sFs(child)),
    }
}

struct Figures {
    seconds: f64,
    bytes: u64,
    objects: usize,
}

/// The records of each object `objects` names (`<kind>/<partition>/<first>-<last>.<ext>`): those
/// of that kind and partition with offsets from `first` to `last` (record `i` is at offset `i`).
fn records_per_object<'a>(records: &'a [Record], objects: &[(String, Vec<u8>)]) -> Vec<(String, Vec<&'a Record>)> {
    let layout = Layout::parse("firehose").unwrap();
    objects
        .iter()
        .map(|(name, _)| {
            let (folder, file) = name.rsplit_once('/').unwrap();
            let (first, last) = offsets(file).unwrap();
            let mine = (first..=last)
                .map(|offset| &records[offset as usize])
                .filter(|r| {
                    let (time, _) = encode::parse(r.kind, &r.payload).unwrap();
                    format!("{}/{}", r.kind.name(), layout.render(time)) == folder
                })
                .collect();
            (name.clone(), mine)
        })
        .collect()
}

/// The tight loop: each object's records parsed, encoded and PUT, one object after another.
async fn tight_loop(lake: &Lake, format: LakeFormat, part_bytes: usize, objects: &[(String, Vec<&Record>)]) -> f64 {
    let started = Instant::now();
    for (name, records) in objects {
        let mut pending = Pending::data(format, records[0].kind);
        for record in records {
            let (_, parsed) = encode::parse(record.kind, &record.payload).unwrap();
            pending.push(&parsed, record.received_at_ms);
        }
        let bytes = Bytes::from(pending.finish().unwrap());
        lake.put(&lake.path(name), bytes, part_bytes).await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// One lake run over the whole journal, then the tight loop over the same records and the raw
/// PUTs of the same objects.
async fn run(
    journal: &Arc<FileJournal>,
    records: &[Record],
    store: &Store,
    format: LakeFormat,
    run: &str,
    work: &Path,
) -> (Figures, f64, Figures) {
    let prefix = format!("{run}/lake");
    let config = LakeConfig { url: Some(format!("{}/{prefix}", store.url_base)), format, ..store.config.clone() };
    let lake = Lake::open(&config, work).unwrap();
    let journal_dyn: Arc<dyn Journal> = journal.clone();
    let settings = config.clone().resolve(work.to_owned(), work.join(format!("{run}.json"))).unwrap();
    let writer = LakeWriter::register(journal_dyn, lake.clone(), &settings).unwrap();
    let stop = CancellationToken::new();
    stop.cancel();
    let started = Instant::now();
    writer.run(stop, Arc::new(LakeStatus::default())).await.unwrap();
    let lake_seconds = started.elapsed().as_secs_f64();
    let objects = files(&store.disk.join(&prefix));
    let objects: Vec<_> = objects.into_iter().filter(|(name, _)| !name.starts_with('_')).collect();
    let bytes: u64 = objects.iter().map(|(_, b)| b.len() as u64).sum();

    let per_object = records_per_object(records, &objects);
    let tight_config = LakeConfig { url: Some(format!("{}/{run}/tight", store.url_base)), ..config.clone() };
    let tight = tight_loop(&Lake::open(&tight_config, work).unwrap(), format, config.part_bytes, &per_object).await;

    let raw_config = LakeConfig { url: Some(format!("{}/{run}/raw", store.url_base)), ..store.config.clone() };
    let raw = Lake::open(&raw_config, work).unwrap();
    let payloads: Vec<(_, Bytes)> = objects.iter().map(|(n, b)| (raw.path(n), Bytes::from(b.clone()))).collect();
    let started = Instant::now();
    for (path, bytes) in payloads {
        raw.put(&path, bytes, config.part_bytes).await.unwrap();
    }
    let raw_seconds = started.elapsed().as_secs_f64();
    (
        Figures { seconds: lake_seconds, bytes, objects: objects.len() },
        tight,
        Figures { seconds: raw_seconds, bytes, objects: objects.len() },
    )
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // Like criterion's filter: `cargo bench --bench lake -- json.gz` measures that format only.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let formats: Vec<LakeFormat> = [LakeFormat::NdjsonGzip, LakeFormat::NdjsonZstd, LakeFormat::Parquet]
        .into_iter()
        .filter(|f| filters.is_empty() || filters.iter().any(|x| f.extension().contains(x.as_str())))
        .collect();
    let (records, runs) = if full { (200_000, 3) } else { (2_000, 1) };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let root = tempfile::tempdir().unwrap();
        let journal = Arc::new(FileJournal::open(&root.path().join("journal"), FileJournalConfig::default()).unwrap());
        let mut input_bytes = 0;
        let mut append_seconds = 0.0;
        let all: Vec<Record> = (0..records).map(impression).collect();
        for batch in all.chunks(10_000) {
            let batch = batch.to_vec();
            input_bytes += batch.iter().map(|r| r.payload.len() as u64).sum::<u64>();
            let started = Instant::now();
            journal.append(batch).await.unwrap();
            append_seconds += started.elapsed().as_secs_f64();
        }
        let append_rate = records as f64 / append_seconds;
        let mut stores = vec![local_store(root.path())];
        if let Some(binary) = std::env::var_os("TEST_S3S_FS").filter(|_| full) {
            stores.push(s3_store(root.path(), Path::new(&binary)));
        }
        println!(
            "{records} impressions, {:.1} MB as received, 4 event hours; {runs} runs per case, medians; journal append {append_rate:.0} records/s",
            input_bytes as f64 / 1e6
        );
        println!(
            "| store | format | objects | MB written | lake records/s | tight loop records/s | lake / tight | lake MB/s written | raw PUT MB/s | lake / raw | lake / append |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for store in &stores {
            for format in formats.iter().copied() {
                let (mut lake_s, mut tight_s, mut raw_s, mut last) = (Vec::new(), Vec::new(), Vec::new(), None);
                for r in 0..runs {
                    let name = format!("{}-{}", format.extension().replace('.', "-"), r);
                    let (lake, tight, raw) = run(&journal, &all, store, format, &name, root.path()).await;
                    lake_s.push(lake.seconds);
                    tight_s.push(tight);
                    raw_s.push(raw.seconds);
                    last = Some(lake);
                }
                let last = last.unwrap();
                let (lake, tight, raw) = (median(lake_s), median(tight_s), median(raw_s));
                let mb = last.bytes as f64 / 1e6;
                println!(
                    "| {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0}% | {:.1} | {:.1} | {:.0}% | {:.0}% |",
                    store.name,
                    format.extension(),
                    last.objects,
                    mb,
                    records as f64 / lake,
                    records as f64 / tight,
                    100.0 * tight / lake,
                    mb / lake,
                    mb / raw,
                    100.0 * raw / lake,
                    100.0 * records as f64 / lake / append_rate
                );
            }
        }
        journal.close().await;
    });
}
