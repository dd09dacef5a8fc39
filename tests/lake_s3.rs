//! The lake writer against a real S3-compatible server (s3s-fs, on loopback): objects arrive
//! through the S3 protocol with signed requests, and an outage of the server loses nothing.
//! `scripts/test.sh` installs s3s-fs and points `TEST_S3S_FS` at it; without it the tests say so
//! and do nothing, except under `CI=true`, where they fail.

mod common;

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Binary, gzip, impression};
use serde_json::Value;

const ACCESS_KEY: &str = "sluice-test-access";
const SECRET_KEY: &str = "sluice-test-secret-0123456789";
const BUCKET: &str = "lake";

/// An s3s-fs server storing under `root`, on `port`.
struct S3Server {
    child: Child,
}

impl S3Server {
    async fn start(binary: &Path, root: &Path, port: u16) -> S3Server {
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", ACCESS_KEY])
            .args(["--secret-key", SECRET_KEY])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "s3s-fs did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        S3Server { child }
    }

    fn stop(self) {
        drop(self);
    }
}

/// Also on a failed assertion: no server outlives its test.
impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every key in the `.json.gz` objects stored under `dir` (s3s-fs keeps one file per object).
fn keys_in(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            keys_in(&path, out);
        } else if path.to_string_lossy().ends_with(".json.gz") {
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap()).read_to_string(&mut text).unwrap();
            for line in text.lines() {
                let row: Value = serde_json::from_str(line).unwrap();
                out.push(row["key"].as_str().unwrap().to_owned());
            }
        }
    }
}

async fn ready(client: &reqwest::Client, b: &Binary) -> Value {
    client.get(b.url("/readyz")).send().await.unwrap().json().await.unwrap()
}

async fn post(client: &reqwest::Client, b: &Binary, keys: &[String]) {
    let body = Value::Array(keys.iter().map(|k| impression(k, "f", "P", "on", "r", 1_572_632_114_350)).collect());
    let resp =
        client.post(b.url("/v1/split/impressions")).body(gzip(body.to_string().as_bytes())).send().await.unwrap();
    assert_eq!(resp.status(), 200, "ingest accepts whatever the lake is doing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_reach_s3_and_an_outage_of_the_server_loses_nothing() {
    let Some(binary) = common::test_s3s_fs("the S3 test") else { return };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join(BUCKET)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = S3Server::start(&binary, root.path(), port).await;
    let data = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = [
        ("SLUICE_LAKE__URL", "s3://lake/archive/sluice"),
        ("SLUICE_LAKE__ENDPOINT", endpoint.as_str()),
        ("SLUICE_LAKE__FLUSH_SECS", "1"),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
    ];
    let b = Binary::start(data.path(), &env).await;
    let client = reqwest::Client::new();
    let wait_committed = |what: &'static str| {
        let (client, b) = (&client, &b);
        async move {
            let started = Instant::now();
            loop {
                let r = ready(client, b).await;
                if r["lake"]["healthy"] == true && r["lake"]["committedOffset"] == r["journal"]["nextOffset"] {
                    return;
                }
                assert!(started.elapsed() < Duration::from_secs(60), "{what}: the lake did not catch up: {r}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let mut sent: Vec<String> = (0..300).map(|i| format!("before-{i}")).collect();
    post(&client, &b, &sent).await;
    wait_committed("before the outage").await;

    server.stop();
    let during: Vec<String> = (0..300).map(|i| format!("during-{i}")).collect();
    post(&client, &b, &during).await;
    sent.extend(during);
    let started = Instant::now();
    loop {
        let r = ready(&client, &b).await;
        if r["lake"]["healthy"] == false {
            // The writer's first request to the lake is the mark's GET, then the object's PUT.
            let error = r["lake"]["lastError"].as_str().unwrap();
            assert!(["GET", "PUT"].iter().any(|op| error.contains(op)) && error.contains("s3://lake"), "{r}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the outage was not reported: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = S3Server::start(&binary, root.path(), port).await;
    let after: Vec<String> = (0..300).map(|i| format!("after-{i}")).collect();
    post(&client, &b, &after).await;
    sent.extend(after);
    wait_committed("after the outage").await;
    assert_eq!(b.terminate(), Some(0));
    server.stop();

    let prefix = root.path().join(BUCKET).join("archive/sluice/split_impression/2019/11/01/18");
    assert!(prefix.is_dir(), "objects are under the URL's prefix and the event hour");
    let mut stored = Vec::new();
    keys_in(&root.path().join(BUCKET), &mut stored);
    stored.sort();
    sent.sort();
    assert_eq!(stored, sent, "every record exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_parquet_objects_go_up_in_parts_and_pyarrow_reads_every_row_back_over_s3() {
    let Some(python) = common::test_python("multipart Parquet over S3") else { return };
    let Some(binary) = common::test_s3s_fs("multipart Parquet over S3") else { return };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join(BUCKET)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = S3Server::start(&binary, root.path(), port).await;
    let data = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    // The smallest part S3 (and s3s-fs) accepts.
    const PART_BYTES: usize = 5 << 20;
    let part_bytes = PART_BYTES.to_string();
    let env = [
        ("SLUICE_LAKE__URL", "s3://lake/parquet"),
        ("SLUICE_LAKE__ENDPOINT", endpoint.as_str()),
        ("SLUICE_LAKE__FORMAT", "parquet"),
        ("SLUICE_LAKE__PART_BYTES", part_bytes.as_str()),
        // One object for everything, flushed on shutdown.
        ("SLUICE_LAKE__FLUSH_BYTES", "33554432"),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
    ];
    let b = Binary::start(data.path(), &env).await;
    let client = reqwest::Client::new();
    // Random properties compress poorly, so the one Parquet object outgrows a part.
    let mut sent: Vec<(String, String)> = Vec::new();
    for chunk in 0..12 {
        let batch: Vec<Value> = (0..2000)
            .map(|i| {
                let key = format!("c{chunk}-k{i}");
                let noise: String = (0..512).map(|_| format!("{:x}", rand::random::<u8>() & 15)).collect();
                let properties = format!(r#"{{"noise":"{noise}"}}"#);
                sent.push((key.clone(), properties.clone()));
                let mut imp = impression(&key, "f", "P", "on", "r", 1_572_632_114_350);
                imp["properties"] = properties.into();
                imp
            })
            .collect();
        let body = gzip(Value::Array(batch).to_string().as_bytes());
        let resp = client.post(b.url("/v1/split/impressions")).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(b.terminate(), Some(0), "a graceful stop flushes the buffer");

    let script = r#"
import json, sys
import pyarrow.parquet as pq
from pyarrow import fs
s3 = fs.S3FileSystem(access_key=sys.argv[2], secret_key=sys.argv[3], endpoint_override=sys.argv[1],
                     scheme="http", region="us-east-1")
infos = s3.get_file_info(fs.FileSelector("lake/parquet", recursive=True))
# As pyarrow's datasets do, leave out `_` files: the writer's mark holds no records.
files = sorted((i.path, i.size) for i in infos if i.type == fs.FileType.File and not i.base_name.startswith("_"))
rows = []
for path, _ in files:
    rows += pq.read_table(path, filesystem=s3, columns=["key", "properties"]).to_pylist()
print(json.dumps({"files": files, "rows": rows}))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script, &format!("127.0.0.1:{port}"), ACCESS_KEY, SECRET_KEY])
        .output()
        .unwrap();
    server.stop();
    assert!(out.status.success(), "pyarrow failed: {}", String::from_utf8_lossy(&out.stderr));
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = read["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "one object: {files:?}");
    let size = files[0][1].as_u64().unwrap() as usize;
    assert!(size > PART_BYTES, "the object ({size} bytes) spans two parts, so it was uploaded multipart");
    assert!(files[0][0].as_str().unwrap().starts_with("lake/parquet/split_impression/2019/11/01/18/"), "{files:?}");
    let mut rows: Vec<(String, String)> = read["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_owned(), r["properties"].as_str().unwrap().to_owned()))
        .collect();
    rows.sort();
    sent.sort();
    assert_eq!(rows.len(), sent.len());
    assert!(rows == sent, "every posted row, exactly once, with its properties");
}
