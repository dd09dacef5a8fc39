//! The `sluice` command line as a user runs it: help, configuration layering, and
//! `sluice export impressions` reading the store of a running server.

mod common;

use common::{Binary, TestSchema, gzip, seed_batch, sluice, wait_loaded};

#[test]
fn help_describes_every_subcommand() {
    let (code, out, _) = sluice(&["--help"], &[]);
    assert_eq!(code, 0);
    for word in ["serve", "export", "bench", "--data-dir", "--config"] {
        assert!(out.contains(word), "`sluice --help` should mention {word}:\n{out}");
    }
    let (code, out, _) = sluice(&["export", "impressions", "--help"], &[]);
    assert_eq!(code, 0);
    for word in
        ["--environment", "--split", "--key", "--treatment", "--label", "--from", "--to", "--format", "--output"]
    {
        assert!(out.contains(word), "export help should mention {word}:\n{out}");
    }
    let (code, out, _) = sluice(&["export", "events", "--help"], &[]);
    assert_eq!(code, 0);
    for word in ["--message-id", "--type", "--event", "--user-id", "--anonymous-id", "--from", "--to", "--format"] {
        assert!(out.contains(word), "export events help should mention {word}:\n{out}");
    }
    let (code, _, err) = sluice(&["export", "events", "--format", "csv"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--format") && err.contains("ndjson or json"), "{err}");
    let (code, _, err) = sluice(&["export", "events", "--user-id", ""], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--user-id"), "the flag is named as typed: {err}");
    let (code, out, _) = sluice(&["serve", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("--listen") && out.contains("SLUICE_LISTEN"), "{out}");
}

#[test]
fn a_bad_config_file_is_reported_with_its_key_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "[limits]\nmax_body = 3\n").unwrap();
    let (code, _, err) = sluice(&["--config", file.to_str().unwrap(), "export", "impressions"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("max_body"), "{err}");
    let (code, _, err) = sluice(&["export", "impressions", "--data-dir", dir.path().to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("sluice serve"), "a missing store should say how to get one: {err}");
}

#[test]
fn a_sluice_variable_that_names_no_setting_is_a_warning_not_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (code, _, err) = sluice(&["--data-dir", data, "migrate"], &[("SLUICE_EXE", "/opt/sluice")]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("SLUICE_EXE names no setting and is ignored"), "{err}");
    let (code, _, err) = sluice(&["--data-dir", data, "migrate"], &[("SLUICE_STORE__POOL_SIZ", "4")]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("did you mean SLUICE_STORE__POOL_SIZE?"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_reads_the_store_of_a_running_server_with_the_same_filters_as_http() {
    let dir = tempfile::tempdir().unwrap();
    let b = Binary::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let resp = client
        .post(b.url("/v1/split/impressions"))
        .body(gzip(seed_batch().to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_loaded(&client, &format!("http://{}", b.addr)).await;

    let out = dir.path().join("exposures.csv");
    let data_dir = dir.path().to_str().unwrap();
    let (code, _, err) = sluice(
        &[
            "export",
            "impressions",
            "--data-dir",
            data_dir,
            "--environment",
            "Production",
            "--split",
            "sample_feature",
            "--from",
            "1970-01-01",
            "-o",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let file = std::fs::read_to_string(&out).unwrap();
    let http = client
        .get(b.url("/api/impressions?environment=Production&split=sample_feature&from=1970-01-01"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(file, http);
    assert_eq!(file.lines().count(), 3);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "an export holds people's ids: {mode:o}");
    // An existing file is made private too.
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = sluice(&["export", "impressions", "--data-dir", data_dir, "-o", out.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);

    let (code, stdout, _) =
        sluice(&["export", "impressions", "--format", "ndjson", "--key", "bob"], &[("SLUICE_DATA_DIR", data_dir)]);
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 1);
    assert!(stdout.contains("\"whitelisted\""), "{stdout}");

    let (code, _, err) = sluice(&["export", "impressions", "--data-dir", data_dir, "--from", "last tuesday"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--from"), "the error names the flag: {err}");
    assert_eq!(b.terminate(), Some(0));
}

#[tokio::test]
async fn flags_beat_environment_which_beats_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, format!("data_dir = \"{}/from-file\"\n", dir.path().display())).unwrap();
    let config = file.to_str().unwrap();
    let (_, _, err) = sluice(&["--config", config, "export", "impressions"], &[]);
    assert!(err.contains("from-file"), "{err}");
    let env_dir = format!("{}/from-env", dir.path().display());
    let (_, _, err) = sluice(&["--config", config, "export", "impressions"], &[("SLUICE_DATA_DIR", &env_dir)]);
    assert!(err.contains("from-env"), "{err}");
    let flag_dir = format!("{}/from-flag", dir.path().display());
    let (_, _, err) = sluice(
        &["--config", config, "export", "impressions", "--data-dir", &flag_dir],
        &[("SLUICE_DATA_DIR", &env_dir)],
    );
    assert!(err.contains("from-flag"), "{err}");
}

#[test]
fn migrate_and_export_work_against_postgresql_given_by_url() {
    let Some(schema) = TestSchema::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let (code, _, err) = sluice(&["export", "impressions", "--data-dir", data_dir, "--store", &schema.url], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("run `sluice migrate`"), "an unmigrated database should say how to fix it: {err}");
    let (code, out, err) = sluice(&["migrate", "--data-dir", data_dir], &[("SLUICE_STORE", &schema.url)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("up to date") && !out.contains("search_path"), "{out}");
    let (code, out, err) = sluice(&["export", "impressions", "--data-dir", data_dir, "--store", &schema.url], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "User Key, Split, Environment, Treatment, Rule, Time\r\n");
}

#[test]
fn an_unreachable_postgresql_is_reported_with_what_to_check() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://sluice:secret-pw@127.0.0.1:{port}/nowhere");
    let (code, _, err) = sluice(&["migrate", "--store", &url], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("cannot connect to PostgreSQL at postgres://sluice@127.0.0.1:{port}/nowhere")),
        "{err}"
    );
    assert!(err.contains("SLUICE_STORE") && !err.contains("secret-pw"), "{err}");
}

#[test]
fn bench_loads_both_sources_and_reports_every_record_loaded() {
    // The load generator is its own program, `sluice-load`; its server gets a temporary directory.
    let sluice_load = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-load"))
            .args(args)
            .env_remove("SLUICE_CONFIG")
            .env_remove("SLUICE_DATA_DIR")
            .output()
            .unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    };
    for (source, unit) in [("split", "impressions/s"), ("segment", "events/s")] {
        let (code, out, err) =
            sluice_load(&["--source", source, "--batches", "6", "--batch-size", "50", "--connections", "2"]);
        assert_eq!(code, 0, "{source}: {err}");
        assert!(out.contains(&format!("{unit}  (")), "{source}: {out}");
        assert!(out.contains("for 300;"), "{source}: every record acknowledged: {out}");
        assert!(out.contains("store       loaded everything"), "{source}: {out}");
        if source == "segment" {
            assert!(out.contains("60 devices' sessions ("), "every device's sessions are computed: {out}");
        }
    }
}

/// Every ingest endpoint left without its credential says so at start, since it accepts anyone.
#[test]
fn serve_warns_about_each_ingest_endpoint_left_open() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .env("SLUICE_SPLIT__TOKEN", "a-token-long-enough-0123")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Whatever start-up logs within a few seconds: the warnings come right after listening.
    let mut warnings = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
        if line.contains("accepts every request") {
            warnings.push(line);
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = warnings.join("\n");
    assert!(text.contains("segment.webhook_secret") && text.contains("segment.write_keys"), "{text}");
    assert!(!text.contains("split.token"), "the Split webhook has its token: {text}");
}

/// Starts `sluice serve` with `args` (a `--listen` among them) and waits for `/healthz` on
/// `port`; its stderr goes to `log`.
async fn serve_on(port: u16, args: &[&str], log: &std::path::Path) -> std::process::Child {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    while client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_err() {
        assert!(child.try_wait().unwrap().is_none(), "sluice exited: {}", std::fs::read_to_string(log).unwrap());
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "sluice did not start within 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child
}

#[tokio::test]
async fn listening_beyond_loopback_needs_a_read_token_which_token_new_makes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let everywhere = format!("0.0.0.0:{port}");

    let (code, _, err) = sluice(&["serve", "--listen", &everywhere, "--data-dir", data], &[]);
    assert_ne!(code, 0, "sluice must not start: {err}");
    assert!(err.contains("sluice token new --name analyst --role read") && err.contains("--allow-open-reads"), "{err}");
    assert!(!std::path::Path::new(data).join("journal").exists(), "refused before opening anything");

    let (code, out, err) = sluice(&["token", "new", "--name", "analyst", "--role", "read"], &[]);
    assert_eq!(code, 0, "{err}");
    let token = out.lines().find(|l| l.starts_with("sluice_")).expect("the token is printed").to_owned();
    let entry = &out[out.find("[[auth.tokens]]").expect("the entry is printed")..];
    assert!(!entry.contains(&token), "the configuration holds the hash, never the token: {entry}");
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, entry).unwrap();

    let log = dir.path().join("serve.log");
    let mut server =
        serve_on(port, &["--listen", &everywhere, "--data-dir", data, "--config", config.to_str().unwrap()], &log)
            .await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/impressions?environment=Production");
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(client.get(&url).bearer_auth(&token).send().await.unwrap()), 200);
    assert_eq!(status(client.get(&url).send().await.unwrap()), 401, "loopback needs the token too");
    assert_eq!(status(client.get(&url).bearer_auth(format!("{token}x")).send().await.unwrap()), 401);
    server.kill().unwrap();
    server.wait().unwrap();

    let mut server = serve_on(port, &["--listen", &everywhere, "--data-dir", data, "--allow-open-reads"], &log).await;
    assert_eq!(status(client.get(&url).send().await.unwrap()), 200);
    server.kill().unwrap();
    server.wait().unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("allow_open_reads") && logged.contains("without a token"), "{logged}");
}

#[test]
fn a_token_file_other_users_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("analyst.token");
    std::fs::write(&token, "sluice_a-token-long-enough-0123\n").unwrap();
    let config = dir.path().join("sluice.toml");
    let entry = format!(
        "[[auth.tokens]]\nname = \"analyst\"\nroles = [\"read\"]\ntoken_file = {:?}\n",
        token.to_str().unwrap()
    );
    std::fs::write(&config, entry).unwrap();
    let args = ["--config", config.to_str().unwrap(), "--data-dir", dir.path().to_str().unwrap(), "migrate"];
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = sluice(&args, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("can be read by other users (mode 644)") && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = sluice(&args, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("other users"), "{err}");
}
