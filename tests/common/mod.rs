//! Shared helpers for the integration tests: start sluice (in process or as the real binary),
//! post batches, wait for the store, read exports.

#![allow(dead_code)] // each test binary uses a different subset of these helpers

pub mod kafka;
#[path = "../../src/journal/jetstream/test_servers.rs"]
pub mod nats;
pub mod pg_cluster;
#[path = "../../src/store/pg_test_db.rs"]
mod pg_test_db;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sluice::cli::serve::Server;
use sluice::config::Config;

pub use pg_test_db::TestSchema;

/// Which store backend a test's server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file in the data directory.
    Sqlite,
    /// A fresh schema on the PostgreSQL test server.
    Postgres,
}

/// A config for a test: its own data dir, an ephemeral port, quick loader flushes.
pub fn test_config(data_dir: &Path) -> Config {
    let mut c =
        Config { data_dir: data_dir.to_owned(), listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..Config::default() };
    c.store.idle_ms = 20;
    c
}

/// A sluice server running inside the test process.
pub struct InProcess {
    pub server: Server,
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL schema holding the store, when the backend is PostgreSQL.
    pub schema: Option<TestSchema>,
}

impl InProcess {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(Backend::Sqlite, adjust).await.unwrap()
    }

    /// Starts a server whose store is on `backend`; `None` when PostgreSQL is unreachable
    /// outside CI (the skip has been announced).
    pub async fn start_on(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        let schema = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestSchema::create()?),
        };
        config.store.url = schema.as_ref().map(|s| s.url.clone());
        adjust(&mut config);
        let server = Server::start(config).await.unwrap();
        let base = format!("http://{}", server.addr);
        Some(InProcess { server, base, client: reqwest::Client::new(), dir, schema })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a body to the Split webhook with optional headers; returns status and JSON body.
    pub async fn post(&self, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn post_gzip(&self, impressions: &Value) -> (u16, Value) {
        self.post("/v1/split/impressions", gzip(impressions.to_string().as_bytes()), &[]).await
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Waits until the store loader has caught up with the journal.
    pub async fn wait_loaded(&self) {
        wait_loaded(&self.client, &self.base).await
    }

    /// Stops gracefully; returns what holds the store, still alive, for checks after the stop.
    pub async fn stop(self) -> (tempfile::TempDir, Option<TestSchema>) {
        self.server.stop().await.unwrap();
        (self.dir, self.schema)
    }
}

pub async fn wait_loaded(client: &reqwest::Client, base: &str) {
    let started = Instant::now();
    loop {
        if let Ok(resp) = client.get(format!("{base}/readyz")).send().await
            && let Ok(ready) = resp.json::<Value>().await
            // Only the store: the lake writer lags by design until its buffers flush.
            && ready["consumers"]["store"]["lag"].as_u64() == Some(0)
        {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the store did not catch up within 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `sql` (one integer result) directly against the store that `dir` or `schema` holds.
pub async fn store_scalar(dir: &Path, schema: Option<&TestSchema>, sql: &str) -> i64 {
    match schema {
        None => {
            let db = rusqlite::Connection::open(dir.join("store.sqlite")).unwrap();
            db.query_row(sql, [], |r| r.get(0)).unwrap()
        }
        Some(schema) => {
            let (url, sql) = (schema.url.clone(), sql.to_owned());
            // The sync driver must not run on the test's runtime thread.
            tokio::task::spawn_blocking(move || {
                let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                client.query_one(&sql, &[]).unwrap().get(0)
            })
            .await
            .unwrap()
        }
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// One impression with every documented field.
pub fn impression(key: &str, split: &str, env: &str, treatment: &str, label: &str, time: i64) -> Value {
    json!({
        "key": key, "split": split, "environmentId": format!("id-{env}"), "environmentName": env,
        "treatment": treatment, "time": time, "bucketingKey": null, "label": label,
        "machineName": "ip-10-0-0-1", "machineIp": "10.0.0.1", "splitVersionNumber": 1572632100000i64,
        "sdk": "java", "sdkVersion": "4.1.0", "properties": "{}"
    })
}

/// The rows of the seed's sample report, as impressions.
pub fn seed_batch() -> Value {
    let rows = [
        ("alphonso", "sample_feature", "off", "default rule", 1572632114350i64),
        ("bob", "sample_feature", "on", "whitelisted", 1572632224436),
        ("anonymous80008", "front_end_packages_anonymous", "checked", "default rule", 1572894348393),
        ("anonymous652788", "front_end_packages_anonymous", "checked", "default rule", 1572894351426),
        ("anonymous484843", "front_end_packages_anonymous", "unchecked", "default rule", 1572894350414),
        ("anonymous854427", "front_end_packages_anonymous", "unchecked", "default rule", 1572894349404),
        ("anonymous652788", "front_end_discount_coupon_anonymous", "high", "default rule", 1572894351425),
        ("anonymous854427", "front_end_discount_coupon_anonymous", "high", "default rule", 1572894349403),
        ("anonymous484843", "front_end_discount_coupon_anonymous", "high", "default rule", 1572894350413),
        ("anonymous80008", "front_end_discount_coupon_anonymous", "low", "default rule", 1572894348392),
        ("anonymous28108", "front_end_discount_coupon_anonymous", "off", "default rule", 1572894352430),
    ];
    Value::Array(rows.iter().map(|(k, s, t, l, time)| impression(k, s, "Production", t, l, *time)).collect())
}

/// The real `sluice` binary running as a child process.
pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl Binary {
    /// Starts `sluice serve` on a free port with `data_dir` and waits for `/healthz`.
    pub async fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> Binary {
        Binary::start_with(data_dir, &[], extra_env).await
    }

    /// Starts `sluice serve` as [`Binary::start`] does, with more arguments.
    pub async fn start_with(data_dir: &Path, extra_args: &[&str], extra_env: &[(&str, &str)]) -> Binary {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(["serve", "--listen", &addr.to_string(), "--data-dir"]).arg(data_dir).args(extra_args);
        cmd.env("SLUICE_STORE__IDLE_MS", "20").env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let b = Binary { child, addr, data_dir: data_dir.to_owned() };
        let client = reqwest::Client::new();
        let started = Instant::now();
        while client.get(b.url("/healthz")).send().await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "sluice did not start within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        b
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (a `libc::SIG*`) to the server.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Waits up to `limit` for the server to exit; its exit code (`Some(-1)` for a signal), or
    /// `None` if it is still running.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            if started.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit and returns its status code.
    pub fn terminate(mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait().unwrap().code()
    }
}

impl Drop for Binary {
    /// A test that fails midway must not leave a server running (it would hold the test
    /// harness's output pipe open, and its port, forever).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the `sluice` binary to completion with `args`; returns (status, stdout, stderr).
pub fn sluice(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args).env_remove("SLUICE_CONFIG").env_remove("SLUICE_DATA_DIR").env_remove("SLUICE_LISTEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Runs the `sluice` binary as `sluice --data-dir DIR [--store SCHEMA-URL] ARGS…`: a CLI command
/// on the store a test server left behind.
pub fn sluice_on_store(dir: &Path, schema: Option<&TestSchema>, args: &[&str]) -> (i32, String, String) {
    let mut argv = vec!["--data-dir", dir.to_str().unwrap()];
    if let Some(schema) = schema {
        argv.extend(["--store", schema.url.as_str()]);
    }
    argv.extend(args);
    sluice(&argv, &[])
}

/// The test virtualenv's Python, with pyarrow, duckdb and segment-analytics-python
/// (`scripts/test.sh` creates it and sets `TEST_PYTHON`). Missing: a failure in CI (`CI=true`),
/// a loudly announced skip elsewhere.
#[allow(dead_code, reason = "not every test binary uses it")]
pub fn test_python(what: &str) -> Option<PathBuf> {
    test_tool("TEST_PYTHON", what)
}

/// The s3s-fs binary `scripts/test.sh` installs and names in `TEST_S3S_FS`; missing, as
/// [`test_python`].
#[allow(dead_code, reason = "not every test binary uses it")]
pub fn test_s3s_fs(what: &str) -> Option<PathBuf> {
    test_tool("TEST_S3S_FS", what)
}

#[allow(dead_code, reason = "not every test binary uses it")]
fn test_tool(variable: &str, what: &str) -> Option<PathBuf> {
    let path = std::env::var_os(variable).map(PathBuf::from).filter(|p| p.exists());
    if path.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{variable} is not set in CI: run the tests through scripts/test.sh"
        );
        eprintln!("{variable} is not set: skipping {what} (scripts/test.sh sets it)");
    }
    path
}

/// Runs each listed `async fn name(backend)` as two tests, `sqlite::name` and `postgres::name`.
#[allow(unused_macros, reason = "not every test binary uses it")]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await } )*
        }
    };
}
#[allow(unused_imports, reason = "not every test binary uses it")]
pub(crate) use on_both_backends;

/// Posts one impression per key (`k0`, `k1`, …) to the Split webhook at `base`, one request
/// each, expecting 200 every time.
pub async fn post_keys(client: &reqwest::Client, base: &str, keys: std::ops::Range<i64>) {
    for i in keys {
        let batch = Value::Array(vec![impression(&format!("k{i}"), "f", "P", "on", "r", i)]);
        let resp = client.post(format!("{base}/v1/split/impressions")).body(batch.to_string()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}

/// Every impression key the server at `base` has stored, with how many times it is there.
pub async fn stored_keys(client: &reqwest::Client, base: &str) -> std::collections::HashMap<String, usize> {
    let body = client.get(format!("{base}/api/impressions?format=ndjson")).send().await.unwrap().text().await.unwrap();
    let mut counts = std::collections::HashMap::new();
    for line in body.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        *counts.entry(row["key"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Replaces the journal of data directory `to` with a copy of the one in `from`: a data
/// directory restored from an older backup.
pub fn copy_journal(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to.join("journal"));
    std::fs::create_dir_all(to.join("journal")).unwrap();
    for entry in std::fs::read_dir(from.join("journal")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join("journal").join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// How many times each impression `key` and each event `messageId` is in the NDJSON objects
/// of the lake at `dir` (upload staging files, named `…#n`, are not objects yet).
pub fn lake_ids(dir: &Path) -> std::collections::HashMap<String, usize> {
    use std::io::Read as _;
    fn walk(dir: &Path, counts: &mut std::collections::HashMap<String, usize>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.to_string_lossy().into_owned();
            if path.is_dir() {
                walk(&path, counts);
            } else if name.ends_with(".json.gz") && !name.contains('#') && !name.contains("/errors/") {
                let mut text = String::new();
                flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap())
                    .read_to_string(&mut text)
                    .unwrap();
                for line in text.lines() {
                    let record: Value = serde_json::from_str(line).unwrap();
                    let id = record.get("messageId").or_else(|| record.get("key")).unwrap();
                    *counts.entry(id.as_str().unwrap().to_owned()).or_insert(0) += 1;
                }
            }
        }
    }
    let mut counts = std::collections::HashMap::new();
    if dir.exists() {
        walk(dir, &mut counts);
    }
    counts
}
