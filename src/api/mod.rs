/*!
The HTTP surface: sources (ingest), queries over the store, and operations endpoints.

[`router`] builds the whole application from an [`AppState`] (the state and errors every
handler shares live in [`crate::http`], below both the sources and these routes); tests drive it
in process with `tower::ServiceExt::oneshot` (below, and the sources' tests) and [`server`] binds
it to a socket.
*/

pub mod attribution;
pub mod events;
pub mod experiments;
pub mod impressions;
pub mod ops;
pub mod privacy;
pub mod reports;
pub mod server;
pub mod streaming;

use axum::Router;

pub use crate::http::AppState;
use crate::http::auth::{Need, Role, count_refusals, guard};

/// The whole HTTP application. The sources check their own credentials (before reading a
/// body); every other route but `/healthz` is guarded here by what it needs (see
/// [`crate::access`]), so a route cannot be added unguarded without saying so.
pub fn router(state: AppState) -> Router {
    let reads = Router::new()
        .merge(impressions::routes())
        .merge(events::routes())
        .merge(attribution::routes())
        .merge(experiments::routes())
        .merge(reports::routes());
    let app = Router::new()
        .merge(crate::sources::routes())
        .merge(ops::open_routes())
        .merge(guard(ops::routes(), &state, Need::Operations))
        .merge(guard(reads, &state, Need::Role(Role::Read)))
        .merge(guard(privacy::routes(), &state, Need::Role(Role::Admin)));
    count_refusals(app, &state).with_state(state)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::*;
    use crate::config::Config;
    use crate::dead_letter::DeadLetters;
    use crate::journal::file::FileJournal;

    /// The whole application on a fresh data directory, with the journal and store it would open.
    fn app(dir: &std::path::Path) -> Router {
        app_with(Config { data_dir: dir.to_owned(), ..Config::default() })
    }

    /// The whole application as `config` (its `[auth]` included) makes it.
    fn app_with(config: Config) -> Router {
        let settings = config.resolve().unwrap();
        crate::store::Store::open(&settings.store).unwrap();
        let config = settings.config.clone();
        let journal = Arc::new(FileJournal::open(&config.journal_dir(), config.journal.file()).unwrap());
        router(
            AppState::new(
                config.clone(),
                journal,
                Arc::new(DeadLetters::open(&config.dead_letter_dir(), config.dead_letter.max_bytes).unwrap()),
                Arc::new(crate::consumers::store_loader::new_status()),
                crate::store::QueryPool::new(settings.store, 1, config.store.pool_wait()),
                crate::telemetry::metrics(),
                Arc::new(crate::privacy::Privacy::open(&config.data_dir).unwrap()),
            )
            .with_access(settings.access),
        )
    }

    /// The status and body of a GET of `uri` from this machine.
    async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
        let answer = app.clone().oneshot(request("GET", uri, "", None, Carry::Bearer, [127, 0, 0, 1])).await.unwrap();
        let status = answer.status();
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(get(&app(dir.path()), "/healthz").await, (StatusCode::OK, "ok\n".to_owned()));
    }

    #[tokio::test]
    async fn an_unknown_path_is_404() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(get(&app(dir.path()), "/api/nothing-here").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_bad_query_parameter_is_400_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        for (uri, param) in [("/api/impressions?from=yesterday", "from"), ("/api/events?colour=red", "colour")] {
            let (status, body) = get(&app, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(answer["field"], param, "{uri}: {body}");
            assert!(answer["error"].as_str().unwrap().contains(param), "{uri}: {body}");
        }
    }

    const INGEST: &str = "ingest-secret-0123456789";
    const READ: &str = "read-secret-0123456789";
    const ADMIN: &str = "admin-secret-0123456789";
    const WRONG: &str = "wrong-secret-0123456789";

    /// A config with one token per role.
    fn with_tokens(dir: &std::path::Path) -> Config {
        use crate::access::{AuthConfig, Role, TokenConfig, token_sha256_hex};
        let token = |name: &str, role, secret| TokenConfig {
            name: name.into(),
            roles: vec![role],
            sha256: Some(token_sha256_hex(secret)),
            token_file: None,
            sources: vec![],
        };
        let tokens = vec![
            token("feeder", Role::Ingest, INGEST),
            token("analyst", Role::Read, READ),
            token("ops", Role::Admin, ADMIN),
        ];
        Config { data_dir: dir.to_owned(), auth: AuthConfig { tokens, ..AuthConfig::default() }, ..Config::default() }
    }

    /// How a request carries its token: as a bearer header, Split's `?token=`, or Segment's write
    /// key (the Basic username).
    #[derive(Clone, Copy)]
    enum Carry {
        Bearer,
        Query,
        Basic,
    }

    /// One request from `peer`, with `token` carried as `carry` says.
    fn request(
        method: &str,
        uri: &str,
        body: &'static str,
        token: Option<&str>,
        carry: Carry,
        peer: [u8; 4],
    ) -> Request<Body> {
        use base64::Engine as _;
        let uri = match (token, carry) {
            (Some(t), Carry::Query) => format!("{uri}{}token={t}", if uri.contains('?') { '&' } else { '?' }),
            _ => uri.to_owned(),
        };
        let mut builder = Request::builder().method(method).uri(uri).header("content-type", "application/json");
        match (token, carry) {
            (Some(t), Carry::Bearer) => builder = builder.header("authorization", format!("Bearer {t}")),
            (Some(t), Carry::Basic) => {
                let basic = base64::engine::general_purpose::STANDARD.encode(format!("{t}:"));
                builder = builder.header("authorization", format!("Basic {basic}"));
            }
            _ => {}
        }
        let mut request = builder.body(Body::from(body)).unwrap();
        request.extensions_mut().insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((peer, 40000))));
        request
    }

    const SPLIT_BODY: &str = r#"[{"key":"k1","split":"s","environmentName":"Production","treatment":"on","label":"l","time":1700000000000}]"#;
    const SEGMENT_BATCH: &str = r#"{"batch":[{"type":"track","event":"e","userId":"u","messageId":"m1"}]}"#;
    const SEGMENT_EVENT: &str = r#"{"type":"track","event":"e","userId":"u","messageId":"m2"}"#;
    const REMOTE: [u8; 4] = [203, 0, 113, 9];

    #[tokio::test]
    async fn every_route_answers_each_credential_as_its_role_says() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with(with_tokens(dir.path()));
        // (method, uri, body, how the token travels, expected status for: none, wrong, ingest, read, admin)
        let ops = [401, 401, 403, 200, 200];
        let read = [401, 401, 403, 200, 403];
        let ingest = [401, 401, 200, 403, 403];
        let admin = [401, 401, 403, 403, 200];
        let routes: &[(&str, &str, &str, Carry, [u16; 5])] = &[
            ("GET", "/healthz", "", Carry::Bearer, [200; 5]),
            ("GET", "/readyz", "", Carry::Bearer, ops),
            ("GET", "/metrics", "", Carry::Bearer, ops),
            ("GET", "/api/impressions?environment=Production", "", Carry::Bearer, read),
            ("GET", "/api/events?type=track", "", Carry::Bearer, read),
            ("GET", "/api/anonymous/a1", "", Carry::Bearer, read),
            ("GET", "/api/user/u1", "", Carry::Bearer, read),
            ("POST", "/v1/split/impressions", SPLIT_BODY, Carry::Query, ingest),
            ("POST", "/v1/split/impressions", SPLIT_BODY, Carry::Bearer, ingest),
            ("POST", "/v1/batch", SEGMENT_BATCH, Carry::Basic, ingest),
            ("POST", "/v1/track", SEGMENT_EVENT, Carry::Basic, ingest),
            ("POST", "/v1/segment/webhook", SEGMENT_EVENT, Carry::Bearer, ingest),
            ("GET", "/api/suppressions", "", Carry::Bearer, admin),
            ("DELETE", "/api/suppressions/0123", "", Carry::Bearer, [401, 401, 403, 403, 404]),
            // No eraser in this process (only `sluice serve` has one): past the guard, 409.
            ("DELETE", "/api/user/u1", "", Carry::Bearer, [401, 401, 403, 403, 409]),
        ];
        for (method, uri, body, carry, expected) in routes {
            for (token, want) in [None, Some(WRONG), Some(INGEST), Some(READ), Some(ADMIN)].into_iter().zip(expected) {
                let answer = app.clone().oneshot(request(method, uri, body, token, *carry, REMOTE)).await.unwrap();
                let status = answer.status().as_u16();
                let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
                assert_eq!(status, *want, "{method} {uri} with {token:?}: {}", String::from_utf8_lossy(&bytes));
                if status == 403 {
                    let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    let role = error["role"].as_str().unwrap();
                    assert!(error["error"].as_str().unwrap().contains(&format!("`{role}` role")), "{error}");
                }
                // A refusal names the role the route needs, whatever the token was.
                let needed = match expected {
                    e if e == &read => Some("read"),
                    e if e == &admin => Some("admin"),
                    _ => None,
                };
                if let (Some(needed), 401 | 403) = (needed, status) {
                    let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(error["role"], needed, "{method} {uri} with {token:?}: {error}");
                }
            }
        }
        // Operations from this machine need no token; reads do, once any token is configured.
        let local = [127, 0, 0, 1];
        for (uri, want) in [("/readyz", 200), ("/metrics", 200), ("/api/user/u1", 401)] {
            let answer = app.clone().oneshot(request("GET", uri, "", None, Carry::Bearer, local)).await.unwrap();
            assert_eq!(answer.status().as_u16(), want, "{uri} from loopback without a token");
        }
    }

    #[tokio::test]
    async fn with_no_token_configured_only_this_machine_reads() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        for (peer, want) in [([127, 0, 0, 1], 200), (REMOTE, 401)] {
            for uri in ["/api/user/u1", "/readyz"] {
                let answer = app.clone().oneshot(request("GET", uri, "", None, Carry::Bearer, peer)).await.unwrap();
                assert_eq!(answer.status().as_u16(), want, "{uri} from {peer:?}");
            }
        }
        // A request the server gave no address (in process) is not trusted as local.
        let answer = app.clone().oneshot(Request::get("/api/user/u1").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("sluice token new"), "says how to get a token");
    }

    #[tokio::test]
    async fn refused_requests_are_counted_by_reason() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with(with_tokens(dir.path()));
        let metrics = || async {
            let answer =
                app.clone().oneshot(request("GET", "/metrics", "", Some(READ), Carry::Bearer, REMOTE)).await.unwrap();
            String::from_utf8(axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap()
        };
        let count = |text: &str, reason: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with("sluice_http_refused_total") && l.contains(&format!("reason=\"{reason}\"")))
                .map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
        };
        let before = metrics().await;
        for (token, uri) in [(Some(WRONG), "/api/user/u1"), (Some(INGEST), "/api/user/u1"), (None, "/api/user/u1")] {
            app.clone().oneshot(request("GET", uri, "", token, Carry::Bearer, REMOTE)).await.unwrap();
        }
        app.clone()
            .oneshot(request("POST", "/v1/split/impressions", SPLIT_BODY, Some(READ), Carry::Query, REMOTE))
            .await
            .unwrap();
        let after = metrics().await;
        // The recorder is shared by every test of the process: others may count too, never less.
        for (reason, at_least) in [("bad_token", 1), ("missing_role", 2), ("no_token", 1)] {
            assert!(count(&after, reason) >= count(&before, reason) + at_least, "{reason}: {after}");
        }
    }

    #[tokio::test]
    async fn cors_headers_are_sent_for_the_tracking_api_and_never_for_api_routes() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let with_origin = |method: &str, uri: &str| {
            let mut r = request(method, uri, "", None, Carry::Bearer, [127, 0, 0, 1]);
            r.headers_mut().insert("origin", "https://shop.example".parse().unwrap());
            r.headers_mut().insert("access-control-request-method", "GET".parse().unwrap());
            r
        };
        let answer = app.clone().oneshot(with_origin("OPTIONS", "/v1/batch")).await.unwrap();
        assert!(answer.headers().contains_key("access-control-allow-origin"));
        for (method, uri) in
            [("GET", "/api/user/u1"), ("OPTIONS", "/api/user/u1"), ("GET", "/api/impressions"), ("GET", "/metrics")]
        {
            let answer = app.clone().oneshot(with_origin(method, uri)).await.unwrap();
            assert!(!answer.headers().contains_key("access-control-allow-origin"), "{method} {uri}");
        }
    }

    #[tokio::test]
    async fn an_ingest_token_scoped_to_an_environment_cannot_send_another() {
        use crate::access::{AuthConfig, Role, TokenConfig, token_sha256_hex};
        let dir = tempfile::tempdir().unwrap();
        let tokens = vec![
            TokenConfig {
                name: "prod-feeder".into(),
                roles: vec![Role::Ingest],
                sha256: Some(token_sha256_hex(INGEST)),
                token_file: None,
                sources: vec!["split:Production".into()],
            },
            TokenConfig {
                name: "web".into(),
                roles: vec![Role::Ingest],
                sha256: Some(token_sha256_hex(READ)),
                token_file: None,
                sources: vec!["segment:web".into()],
            },
        ];
        let app = app_with(Config {
            data_dir: dir.path().to_owned(),
            auth: AuthConfig { tokens, ..AuthConfig::default() },
            ..Config::default()
        });
        let answer = app
            .clone()
            .oneshot(request("POST", "/v1/split/impressions", SPLIT_BODY, Some(INGEST), Carry::Query, REMOTE))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        const STAGING: &str = r#"[{"key":"k1","split":"s","environmentName":"Staging","environmentId":"Production","treatment":"on","label":"l","time":1700000000000}]"#;
        let answer = app
            .clone()
            .oneshot(request("POST", "/v1/split/impressions", STAGING, Some(INGEST), Carry::Query, REMOTE))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("prod-feeder") && text.contains("Staging"), "{text}");
        // …and Segment, guarded by the other token and not granted to this one, is refused.
        let answer = app
            .clone()
            .oneshot(request("POST", "/v1/batch", SEGMENT_BATCH, Some(INGEST), Carry::Basic, REMOTE))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    }
}
