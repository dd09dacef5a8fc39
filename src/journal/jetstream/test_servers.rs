//! NATS servers for tests: one JetStream server, or a three-node JetStream cluster, each its own
//! `nats-server` process on free loopback ports with its store in a temporary directory, killed
//! when dropped. Shared by the library's tests and the integration tests (`tests/common`), so it
//! uses nothing of sluice's.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The machine's own NATS server, which tests share (each with streams of its own).
pub const LOCAL_NATS: &str = "nats://127.0.0.1:4222";

/// A connection to [`LOCAL_NATS`], on which one stream (`SLUICE_TEST_ANCHOR`) is kept for good.
/// nats-server 2.9 removes an account's store directory when its last stream is deleted, and a
/// stream created at that moment fails ("could not create storage directory", error 10049): tests
/// creating and deleting streams side by side would fail at random. Every test that makes streams
/// on the shared server connects through here.
pub async fn local_nats() -> async_nats::Client {
    let client = async_nats::connect(LOCAL_NATS)
        .await
        .unwrap_or_else(|e| panic!("the NATS server at {LOCAL_NATS}: {e} (start it: Debian's nats-server -js)"));
    let jetstream = async_nats::jetstream::new(client.clone());
    let anchor = async_nats::jetstream::stream::Config {
        name: "SLUICE_TEST_ANCHOR".into(),
        subjects: vec!["sluice-test-anchor".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    };
    // The anchor's own creation may meet that race once, on a server that has no stream yet.
    for attempt in 1.. {
        match jetstream.get_or_create_stream(anchor.clone()).await {
            Ok(_) => break,
            Err(_) if attempt < 10 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot keep the stream SLUICE_TEST_ANCHOR on {LOCAL_NATS}: {e}"),
        }
    }
    client
}

/// How long a server (or a cluster's meta leader) may take to be ready.
const READY: Duration = Duration::from_secs(60);

/// One `nats-server` process (which may be stopped and started again with the same ports and store).
pub struct NatsServer {
    /// The client port on 127.0.0.1.
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
    /// What the process printed before its log file was open (a bad configuration, a port taken).
    stderr: PathBuf,
    child: Option<Child>,
    /// Holds the store and the configuration of a server started on its own.
    _dir: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Starts a single JetStream server and waits until its JetStream answers.
    pub async fn start() -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut server = NatsServer::configure(dir.path(), "solo", port, None);
        server._dir = Some(dir);
        server.run();
        if let Err(e) = wait_ready(std::slice::from_mut(&mut server)).await {
            panic!("{e}; its log:\n{}", server.log());
        }
        server
    }

    /// Starts a single JetStream server with `extra` appended to its configuration (TLS,
    /// authorization) and waits until it listens: a single server enables JetStream before it
    /// takes clients, and a plain connection could not pass the TLS or the authorization.
    pub async fn start_with(extra: &str) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut server = NatsServer::configure(dir.path(), "solo", port, None);
        let mut text = std::fs::read_to_string(&server.config).unwrap();
        text.push_str(extra);
        std::fs::write(&server.config, text).unwrap();
        server._dir = Some(dir);
        server.run();
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = server.exited() {
                panic!("the NATS server on port {port} exited ({status}); its log:\n{}", server.log());
            }
            assert!(
                started.elapsed() < READY,
                "the NATS server on port {port} did not listen within {READY:?}; its log:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// Writes the configuration of server `name` in `dir` (not started yet).
    fn configure(dir: &Path, name: &str, port: u16, cluster: Option<(&str, u16, &[u16])>) -> NatsServer {
        let store = dir.join(format!("{name}-store"));
        let log = dir.join(format!("{name}.log"));
        let stderr = dir.join(format!("{name}.stderr"));
        let mut text = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\nlog_file: \"{}\"\njetstream {{ store_dir: \"{}\" }}\n",
            log.display(),
            store.display()
        );
        if let Some((cluster_name, cluster_port, routes)) = cluster {
            let routes: Vec<String> = routes.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
            text.push_str(&format!(
                "cluster {{ name: {cluster_name}, listen: 127.0.0.1:{cluster_port}, routes: [{}] }}\n",
                routes.join(", ")
            ));
        }
        let config = dir.join(format!("{name}.conf"));
        std::fs::write(&config, text).unwrap();
        NatsServer { port, config, log, stderr, child: None, _dir: None }
    }

    /// Starts the process (not waiting for it to be ready).
    fn run(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let stderr = std::fs::File::create(&self.stderr).unwrap();
        let child = Command::new(nats_server())
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (install Debian's nats-server)", nats_server()));
        self.child = Some(child);
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the process (SIGKILL) and waits for it to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same ports and store, and waits until it answers.
    pub async fn restart(&mut self) {
        // The killed process's ports may be released a moment after it was reaped (seen only in
        // CI): a server that exits because its port is still taken is started again.
        let started = Instant::now();
        loop {
            self.run();
            match wait_ready(std::slice::from_mut(self)).await {
                Ok(()) => return,
                Err(e) if e.contains("exited") && started.elapsed() < READY => {
                    self.child = None;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("{e} after a restart; its log:\n{}", self.log()),
            }
        }
    }

    /// Its exit status, if the process has ended.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// The end of the server's log and what it printed to stderr (for a failing test's message).
    pub fn log(&self) -> String {
        let tail = |path: &Path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!("{}\n[stderr] {}", tail(&self.log), tail(&self.stderr))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three `nats-server` processes forming one JetStream cluster.
pub struct NatsCluster {
    /// The servers, in the order of [`NatsCluster::urls`].
    pub servers: Vec<NatsServer>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts three servers routed to each other and waits until JetStream has a meta leader.
    pub async fn start() -> NatsCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<u16> = ports.iter().map(|(_, cluster)| *cluster).collect();
        // A name of its own, so that a route reaching another test's server is refused, not merged.
        let name = format!("sluice-test-{:08x}", rand::random::<u32>());
        let mut servers: Vec<NatsServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (port, cluster))| {
                NatsServer::configure(dir.path(), &format!("n{}", i + 1), *port, Some((&name, *cluster, &routes)))
            })
            .collect();
        servers.iter_mut().for_each(NatsServer::run);
        let mut cluster = NatsCluster { servers, _dir: dir };
        if let Err(e) = wait_ready(&mut cluster.servers).await {
            let logs: Vec<String> = cluster.servers.iter().map(|s| format!("{}:\n{}", s.url(), s.log())).collect();
            panic!("{e}; the servers' logs:\n{}", logs.join("\n"));
        }
        cluster
    }

    /// Each server's URL.
    pub fn each_url(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// Every server's URL, comma-separated (as `[journal] url` takes them).
    pub fn urls(&self) -> String {
        self.each_url().join(",")
    }
}

/// Waits until every one of `servers` answers a JetStream request (in a cluster, that needs a
/// meta leader); says which did not within [`READY`], or which exited.
async fn wait_ready(servers: &mut [NatsServer]) -> Result<(), String> {
    let started = Instant::now();
    for server in servers {
        let url = server.url();
        loop {
            if let Some(status) = server.exited() {
                return Err(format!("the NATS server at {url} exited ({status})"));
            }
            // A raw request: async-nats 0.51 cannot parse a 2.9 server's account info.
            let answered = tokio::time::timeout(Duration::from_secs(2), async {
                let client = async_nats::connect(url.as_str()).await.ok()?;
                let answer = client.request("$JS.API.INFO", "".into()).await.ok()?;
                let json: serde_json::Value = serde_json::from_slice(&answer.payload).ok()?;
                json.get("error").is_none().then_some(())
            })
            .await;
            if matches!(answered, Ok(Some(()))) {
                break;
            }
            if started.elapsed() >= READY {
                return Err(format!("the NATS server at {url} was not ready within {READY:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// A loopback port nothing listens on right now, below Linux's ephemeral range (32768–60999): a
/// server restarted on its port must find it free, and ports of that range are also handed to
/// the outgoing connections of every other test running meanwhile.
pub fn free_port() -> u16 {
    loop {
        let port = rand::random_range(10_000..30_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The `nats-server` program: `$TEST_NATS_SERVER`, else Debian's. (Not `$NATS_SERVER`,
/// which environments commonly set to a server's URL.)
fn nats_server() -> String {
    std::env::var("TEST_NATS_SERVER").unwrap_or_else(|_| {
        if Path::new("/usr/sbin/nats-server").exists() { "/usr/sbin/nats-server".into() } else { "nats-server".into() }
    })
}
