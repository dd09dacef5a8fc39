/*!
Opening a connection, encrypted as the URL's `sslmode` asks, with libpq's meanings:

| `sslmode`     | encrypts             | checks the certificate                         |
|---------------|----------------------|------------------------------------------------|
| `disable`     | never                | —                                              |
| `prefer`      | when the server can  | no                                             |
| `require`     | always               | no (as `verify-ca` when `sslrootcert` is set)  |
| `verify-ca`   | always               | signed by the `sslrootcert` CA                 |
| `verify-full` | always               | signed by that CA and names the URL's host     |

`prefer` is the default, as for `psql`. The driver knows only `disable`, `prefer` and `require`
and rejects `sslrootcert`, so those two parameters are taken out of the URL here and the
certificate checks are done by the rustls verifier this module builds.
*/

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::postgres::config::SslMode;
use ::postgres::{Client, Config};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// How much TLS the URL asks for (libpq's `sslmode` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, without checking its certificate.
    Prefer,
    /// TLS always, without checking the certificate.
    Require,
    /// TLS always; the certificate must be signed by the trusted CA.
    VerifyCa,
    /// TLS always; the certificate must be signed by the trusted CA and name the host.
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Result<TlsMode, StoreError> {
        Ok(match value {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            // `allow` (plain first, TLS on refusal) protects nothing that `prefer` does not.
            other => {
                return Err(StoreError::BadUrl {
                    reason: format!(
                        "sslmode={other} is not one sluice knows; use disable, prefer, require, verify-ca or verify-full"
                    ),
                });
            }
        })
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        })
    }
}

/// Where the trusted CA certificates come from (libpq's `sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootSource {
    /// A PEM file.
    File(PathBuf),
    /// The operating system's trust store (`sslrootcert=system`).
    System,
}

impl fmt::Display for RootSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootSource::File(path) => write!(f, "{}", path.display()),
            RootSource::System => f.write_str("the system trust store (sslrootcert=system)"),
        }
    }
}

/// The TLS part of the connection settings: the mode, and the connector that enforces it.
#[derive(Clone)]
pub(super) struct Tls {
    /// The effective mode (`require` with a CA becomes `verify-ca`, as in libpq).
    pub(super) mode: TlsMode,
    /// `None` for `disable`.
    connector: Option<MakeRustlsConnect>,
}

impl Tls {
    /// Takes `sslmode` and `sslrootcert` out of `url`, loads the CA certificates they name, and
    /// returns the rest of the URL for the driver to parse.
    pub(super) fn from_url(url: &str) -> Result<(Tls, String), StoreError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut mode, mut root) = (TlsMode::Prefer, None);
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value).decode_utf8().map_err(|_| StoreError::BadUrl {
                reason: format!("the value of `{key}` is not valid UTF-8 once percent-decoded"),
            })?;
            match key {
                "sslmode" => mode = TlsMode::parse(&value)?,
                "sslrootcert" if value == "system" => root = Some(RootSource::System),
                "sslrootcert" => root = Some(RootSource::File(PathBuf::from(value.into_owned()))),
                _ => rest.push(pair),
            }
        }
        let rest = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
        Ok((Tls::new(mode, root)?, rest))
    }

    fn new(mode: TlsMode, root: Option<RootSource>) -> Result<Tls, StoreError> {
        // libpq's default CA file; `require` uses it only when it exists.
        let default_root =
            || std::env::var_os("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt")).filter(|p| p.is_file());
        let (mode, root) = match (mode, root) {
            (TlsMode::Disable, _) => return Ok(Tls { mode, connector: None }),
            (TlsMode::Prefer, _) => (mode, None),
            (TlsMode::Require, Some(root)) => (TlsMode::VerifyCa, Some(root)),
            (TlsMode::Require, None) => match default_root() {
                Some(path) => (TlsMode::VerifyCa, Some(RootSource::File(path))),
                None => (mode, None),
            },
            (TlsMode::VerifyCa | TlsMode::VerifyFull, Some(root)) => (mode, Some(root)),
            (TlsMode::VerifyCa | TlsMode::VerifyFull, None) => match default_root() {
                Some(path) => (mode, Some(RootSource::File(path))),
                None => return Err(StoreError::NoTlsRoots { mode: mode.to_string() }),
            },
        };
        let provider = Arc::new(aws_lc_rs::default_provider());
        let root_name = root.as_ref().map(RootSource::to_string).unwrap_or_default();
        let roots = root.map(|r| load_roots(&r)).transpose()?.map(Arc::new);
        // verify-full always has roots by now: without any it was refused above.
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
            (TlsMode::VerifyFull, Some(roots)) => WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| StoreError::TlsRoots { path: root_name.clone(), reason: e.to_string() })?,
            (_, roots) => Arc::new(LibpqVerifier { roots, algorithms: provider.signature_verification_algorithms }),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::BadUrl { reason: format!("TLS cannot be set up: {e}") })?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Tls { mode, connector: Some(MakeRustlsConnect::new(config)) })
    }

    /// The mode to hand the driver, which decides whether to ask the server for TLS.
    pub(super) fn driver_mode(&self) -> SslMode {
        match self.mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        }
    }

    /// Connects with `config`, which must carry [`Tls::driver_mode`].
    pub(super) fn connect(&self, config: &Config) -> Result<Client, ::postgres::Error> {
        match &self.connector {
            Some(connector) => config.connect(connector.clone()),
            None => config.connect(::postgres::NoTls),
        }
    }
}

/// Reads the trusted CA certificates.
fn load_roots(source: &RootSource) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match source {
        RootSource::System => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let reason = found.errors.first().map_or("no certificates found".to_owned(), ToString::to_string);
                return Err(StoreError::TlsRoots { path: source.to_string(), reason });
            }
        }
        RootSource::File(path) => {
            let bad = |reason: String| StoreError::TlsRoots { path: source.to_string(), reason };
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(e.to_string()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad("it holds no PEM certificate that can be used".into()));
            }
        }
    }
    Ok(roots)
}

/// Checks what `require` and `verify-ca` ask: with no CA, nothing about the certificate (the
/// connection is encrypted, not authenticated); with a CA, that it signed the certificate,
/// whatever host the certificate names. The handshake signatures are always checked, so the
/// server holds the key of the certificate it sent.
#[derive(Debug)]
struct LibpqVerifier {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, self.algorithms.all)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// When `error` is TLS refusing the server (a certificate that fails the checks, a server
/// without TLS), as opposed to the network or the server being down, says why; retrying will
/// not help.
pub(super) fn tls_refusal(error: &::postgres::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        // tokio-rustls reports rustls errors inside an io::Error, whose `source` skips them.
        let wrapped = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        if let Some(rustls) = e.downcast_ref::<rustls::Error>().or(wrapped.and_then(|w| w.downcast_ref())) {
            return Some(rustls.to_string());
        }
        // The driver's own refusal carries no type, only this text.
        if e.to_string() == "server does not support TLS" {
            return Some("the server does not support TLS".into());
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_of(url: &str) -> (TlsMode, String) {
        let (tls, rest) = Tls::from_url(url).unwrap();
        (tls.mode, rest)
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url_and_the_rest_is_kept() {
        assert_eq!(query_of("postgres://u@h/db"), (TlsMode::Prefer, "postgres://u@h/db".into()));
        assert_eq!(
            query_of("postgres://u@h/db?sslmode=require&application_name=x"),
            (TlsMode::Require, "postgres://u@h/db?application_name=x".into())
        );
        assert_eq!(query_of("postgres://u@h/db?sslmode=disable"), (TlsMode::Disable, "postgres://u@h/db".into()));
    }

    #[test]
    fn verify_modes_without_a_ca_are_refused_with_what_to_add() {
        // libpq's default CA file would be used instead; changing HOME would race other tests.
        if std::env::var_os("HOME").is_some_and(|h| Path::new(&h).join(".postgresql/root.crt").is_file()) {
            return;
        }
        let err = Tls::from_url("postgres://u@h/db?sslmode=verify-full").err().unwrap().to_string();
        assert!(err.contains("add sslrootcert=/path/to/ca.pem"), "{err}");
    }

    #[test]
    fn an_unknown_sslmode_is_refused_with_the_known_ones() {
        let err = Tls::from_url("postgres://u@h/db?sslmode=allow").err().unwrap().to_string();
        assert!(err.contains("use disable, prefer, require, verify-ca or verify-full"), "{err}");
    }

    #[test]
    fn a_missing_ca_file_is_named_in_the_error() {
        let err = Tls::from_url("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let err = Tls::new(TlsMode::VerifyFull, Some(RootSource::File(ca))).err().unwrap().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn require_with_a_ca_checks_it_as_verify_ca_does() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
        let url = format!("postgres://u@h/db?sslmode=require&sslrootcert={}", ca.display());
        assert_eq!(query_of(&url), (TlsMode::VerifyCa, "postgres://u@h/db".into()));
    }
}
