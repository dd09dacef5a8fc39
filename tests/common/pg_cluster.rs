//! A throwaway PostgreSQL cluster for tests that must stop the server or change its settings.
//!
//! It runs `initdb` + `pg_ctl` from the PostgreSQL server package, as the `postgres` user when
//! the test runs as root (since `initdb` refuses root), on a free port, so stopping it disturbs
//! nothing else. Without those binaries it fails under CI (`CI=true`) and the test is skipped
//! loudly elsewhere.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A server certificate and its private key, both PEM.
pub struct ServerTls {
    /// The certificate chain the server presents.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// A PostgreSQL cluster in a temporary directory, stopped (immediately) when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    tls: bool,
}

impl Cluster {
    /// Creates and starts a cluster with trust authentication, or returns `None` after saying
    /// loudly that `test` is skipped.
    pub fn start(test: &str) -> Option<Cluster> {
        Cluster::start_with(test, None)
    }

    /// Like [`Cluster::start`], with `ssl = on` and the given certificate.
    pub fn start_with_tls(test: &str, tls: &ServerTls) -> Option<Cluster> {
        Cluster::start_with(test, Some(tls))
    }

    fn start_with(test: &str, tls: Option<&ServerTls>) -> Option<Cluster> {
        let Some(bin) = server_binaries() else {
            let msg = "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin; install the postgresql package";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("\n*** SKIPPED {test}: {msg} ***\n");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        // The server runs as `postgres` and keeps its data and socket here.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = Cluster { dir, bin, port, tls: tls.is_some() };
        let data = cluster.data();
        cluster.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        if let Some(tls) = tls {
            // The server's default file names, in its data directory; it refuses a key that
            // others can read or that belongs to someone else.
            let owner = std::fs::metadata(&data).unwrap();
            for (name, pem) in [("server.crt", &tls.cert_pem), ("server.key", &tls.key_pem)] {
                let path = Path::new(&data).join(name);
                std::fs::write(&path, pem).unwrap();
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
                std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
            }
        }
        cluster.pg_ctl_start();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again).
    pub fn pg_ctl_start(&self) {
        let mut options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        if self.tls {
            options.push_str(" -c ssl=on");
        }
        let log = self.dir.path().join("server.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &options, "-w", "start"]);
    }

    /// Stops like a crash: no shutdown checkpoint, connections cut, WAL replayed on restart.
    pub fn pg_ctl_stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    /// Runs a server binary, as `postgres` when we are root.
    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        // SAFETY: geteuid has no preconditions.
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd.args(args).current_dir(self.dir.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.pg_ctl_stop()));
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn server_binaries() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}
