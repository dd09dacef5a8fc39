//! TLS to PostgreSQL, against a throwaway cluster with `ssl = on` and a certificate made here by
//! a test CA: `sslmode=require` encrypts, `verify-ca` and `verify-full` accept only what the CA
//! signed (and, for `verify-full`, only for the host in the URL), and a refusal says what to do.

mod common;

use std::path::{Path, PathBuf};

use common::pg_cluster::{Cluster, ServerTls};
use common::{InProcess, gzip, seed_batch, sluice};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// The name the server's certificate is issued for (and no other, not even 127.0.0.1).
const SERVER_NAME: &str = "db.sluice.test";

/// A CA, a server certificate it signed for [`SERVER_NAME`], and an unrelated CA, as files.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    server: ServerTls,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    (pem, Issuer::new(params, key))
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, issuer) = ca("sluice test CA");
    let (other_pem, _) = ca("some other CA");
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![SERVER_NAME.to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    let (ca, other_ca) = (dir.path().join("ca.pem"), dir.path().join("other-ca.pem"));
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&other_ca, other_pem).unwrap();
    Pki { _dir: dir, ca, other_ca, server: ServerTls { cert_pem: cert.pem(), key_pem: key.serialize_pem() } }
}

/// `url` with `query` appended.
fn with(url: &str, query: &str) -> String {
    format!("{url}?{query}")
}

/// Runs `sluice migrate` against `store`; returns (exit code, stdout and stderr).
fn migrate(store: &str) -> (i32, String) {
    let (code, out, err) = sluice(&["migrate", "--store", store], &[]);
    (code, format!("{out}{err}"))
}

fn root(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_loads_and_queries_over_an_encrypted_connection() {
    let pki = pki();
    let test = "the PostgreSQL TLS test";
    let Some(cluster) = tokio::task::spawn_blocking(move || Cluster::start_with_tls(test, &pki.server)).await.unwrap()
    else {
        return;
    };
    let store = with(&cluster.url(), "sslmode=require");
    let s = InProcess::start_with(|c| c.store.url = Some(store)).await;
    let (status, _) = s.post("/v1/split/impressions", gzip(seed_batch().to_string().as_bytes()), &[]).await;
    assert_eq!(status, 200);
    s.wait_loaded().await;
    let (status, csv) = s.get("/api/impressions?environment=Production&split=sample_feature").await;
    assert_eq!(status, 200, "{csv}");
    assert!(csv.contains("alphonso") && csv.contains("bob"), "the query should read the loaded rows: {csv}");

    let admin = cluster.url();
    let (encrypted, plain): (i64, i64) = tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                 FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'sluice'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    })
    .await
    .unwrap();
    assert!(encrypted >= 1, "the loader's connection should be open and encrypted");
    assert_eq!(plain, 0, "no sluice connection may be unencrypted under sslmode=require");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_modes_accept_only_a_certificate_the_ca_signed_for_the_host() {
    let pki = pki();
    let server = ServerTls { cert_pem: pki.server.cert_pem.clone(), key_pem: pki.server.key_pem.clone() };
    let test = "the PostgreSQL TLS verification test";
    let Some(cluster) = tokio::task::spawn_blocking(move || Cluster::start_with_tls(test, &server)).await.unwrap()
    else {
        return;
    };
    let by_ip = cluster.url();
    // The certificate's name in the URL, with `hostaddr` saying where that name is.
    let by_name = format!("postgres://postgres@{SERVER_NAME}:{}/postgres", cluster.port);
    let (ca, other_ca) = (root(&pki.ca), root(&pki.other_ca));

    tokio::task::spawn_blocking(move || {
        let ok = with(&by_name, &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"));
        let (code, out) = migrate(&ok);
        assert_eq!(code, 0, "verify-full with the signing CA and the certificate's name should connect: {out}");

        let (code, out) = migrate(&with(&by_ip, &format!("sslmode=verify-ca&sslrootcert={ca}")));
        assert_eq!(code, 0, "verify-ca checks the CA, not the host name: {out}");

        let (code, out) = migrate(&with(&by_ip, &format!("sslmode=verify-full&sslrootcert={ca}")));
        assert_ne!(code, 0, "verify-full must refuse a certificate issued for another host");
        assert!(out.contains("over TLS") && out.contains("the URL's host is one the certificate names"), "{out}");

        let wrong = with(&by_name, &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={other_ca}"));
        let (code, out) = migrate(&wrong);
        assert_ne!(code, 0, "verify-full must refuse a certificate another CA signed");
        assert!(out.contains("over TLS") && out.contains("sslrootcert= names the CA that signed"), "{out}");
        assert!(out.contains("UnknownIssuer"), "the error should say why the certificate was refused: {out}");

        let (code, out) = migrate(&with(&by_ip, &format!("sslmode=require&sslrootcert={other_ca}")));
        assert_ne!(code, 0, "require with a CA checks it, as libpq does: {out}");
    })
    .await
    .unwrap();
}
