/*!
The access rules of [`crate::access`] on HTTP: guards for the query, administration and
operations routes, and the one place where every refused request is counted and logged.

A guard runs before the handler, so a request without the right token is refused before its
body (or its query) is read; the sources check their own credentials in the ingest pipeline,
also before reading a body. Handlers that record who asked read [`Caller`] from the request's
extensions.
*/

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};

pub use crate::access::{Caller, Role};
use crate::http::{AppError, AppState};

/// What a guarded route needs.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// A role: `read` for queries, `admin` for erasure and suppression.
    Role(Role),
    /// `/readyz` and `/metrics`: this machine, a `read` or `admin` token, or everyone when
    /// `auth.open_operations` says so.
    Operations,
}

/// `routes`, each refused unless the request meets `need`.
pub fn guard(routes: Router<AppState>, state: &AppState, need: Need) -> Router<AppState> {
    routes.route_layer(middleware::from_fn_with_state(
        state.clone(),
        move |State(state): State<AppState>, request: Request, next: Next| check(state, need, request, next),
    ))
}

async fn check(state: AppState, need: Need, mut request: Request, next: Next) -> Response {
    let peer = peer(&request);
    let given = bearer(request.headers());
    let checked = match need {
        Need::Role(role) => state.access.check(role, given, peer),
        Need::Operations => state.access.check_operations(given, peer),
    };
    match checked {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => AppError::Denied(refusal).into_response(),
    }
}

/// The client's address, when the server put it in the request (tests driving the router in
/// process may not: such a request counts as from elsewhere).
fn peer(request: &Request) -> Option<IpAddr> {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Why a response refused its request, put in its extensions by [`AppError`] so that
/// [`count_refusals`] can label it.
#[derive(Debug, Clone, Copy)]
pub struct Refused(pub &'static str);

/// The outermost layer: counts every 401 and 403 in `sluice_http_refused_total{reason}` and logs
/// it, at most once a second per client address and [`MAX_LINES_PER_SECOND`] in all, with its
/// path cut to [`MAX_LOGGED_PATH`] bytes, so that a scan (from many addresses, with long paths)
/// cannot flood the log.
pub fn count_refusals(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router.layer(middleware::from_fn_with_state(state.clone(), refusals))
}

async fn refusals(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let peer = peer(&request);
    let path = request.uri().path();
    let path = path.get(..path.len().min(MAX_LOGGED_PATH)).unwrap_or("").to_owned();
    let response = next.run(request).await;
    if let Some(Refused(reason)) = response.extensions().get::<Refused>().copied() {
        metrics::counter!("sluice_http_refused_total", "reason" => reason).increment(1);
        if let Some(held_back) = state.refusal_log.allow(peer, Instant::now()) {
            tracing::warn!(
                client = %peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
                path,
                reason,
                status = response.status().as_u16(),
                held_back,
                "refused a request"
            );
        }
    }
    response
}

/// When each client address was last logged for a refusal.
#[derive(Debug, Default)]
pub struct RefusalLog {
    last: Mutex<HashMap<Option<IpAddr>, (Instant, u64)>>,
    /// The second being counted against [`MAX_LINES_PER_SECOND`], and its lines so far.
    second: Mutex<Option<(Instant, usize)>>,
}

/// The most refusal lines logged in one second, whatever the number of addresses.
pub const MAX_LINES_PER_SECOND: usize = 20;

/// The most bytes of a refused request's path that are logged (a path is ASCII: the URI's
/// percent-encoded form).
const MAX_LOGGED_PATH: usize = 256;

/// More addresses than this and the ones quiet for a second are forgotten, so a scan from many
/// addresses cannot grow the map without bound.
const MAX_REMEMBERED: usize = 4096;

impl RefusalLog {
    /// Whether a refusal from `peer` at `now` is logged: the first in a second is, with the
    /// number held back since the last one logged.
    pub fn allow(&self, peer: Option<IpAddr>, now: Instant) -> Option<u64> {
        let held = self.allow_address(peer, now)?;
        let mut second = self.second.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &mut *second {
            Some((start, lines)) if now.duration_since(*start) < Duration::from_secs(1) => {
                if *lines >= MAX_LINES_PER_SECOND {
                    return None;
                }
                *lines += 1;
            }
            other => *other = Some((now, 1)),
        }
        Some(held)
    }

    fn allow_address(&self, peer: Option<IpAddr>, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.len() >= MAX_REMEMBERED {
            last.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(1));
            if last.len() >= MAX_REMEMBERED {
                // Every one of them within the second: this is a flood from many addresses.
                return None;
            }
        }
        match last.get_mut(&peer) {
            Some((at, held)) if now.duration_since(*at) < Duration::from_secs(1) => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                *at = now;
                Some(std::mem::take(held))
            }
            None => {
                last.insert(peer, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_once_a_second_per_address_with_the_count_held_back() {
        let log = RefusalLog::default();
        let (a, b) = (Some(IpAddr::from([10, 0, 0, 1])), Some(IpAddr::from([10, 0, 0, 2])));
        let t0 = Instant::now();
        assert_eq!(log.allow(a, t0), Some(0));
        assert_eq!(log.allow(a, t0 + Duration::from_millis(10)), None);
        assert_eq!(log.allow(a, t0 + Duration::from_millis(900)), None);
        assert_eq!(log.allow(b, t0 + Duration::from_millis(900)), Some(0), "another address is logged");
        assert_eq!(log.allow(a, t0 + Duration::from_millis(1000)), Some(2));
    }

    #[test]
    fn a_scan_from_many_addresses_keeps_the_log_and_the_memory_bounded() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        let logged = (0..10_000u32).filter(|i| log.allow(Some(IpAddr::from(i.to_be_bytes())), t0).is_some()).count();
        assert_eq!(logged, MAX_LINES_PER_SECOND, "lines in one second, whatever the addresses");
        assert!(log.last.lock().unwrap().len() <= MAX_REMEMBERED);
        let later = (10_000..10_100u32)
            .filter(|i| log.allow(Some(IpAddr::from(i.to_be_bytes())), t0 + Duration::from_millis(1500)).is_some())
            .count();
        assert_eq!(later, MAX_LINES_PER_SECOND, "the next second has its own budget");
        // A second later the old entries make room again.
        assert_eq!(log.allow(Some(IpAddr::from([192, 0, 2, 1])), t0 + Duration::from_secs(3)), Some(0));
    }

    #[test]
    fn a_bearer_token_is_read_whatever_the_case_of_its_scheme() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
