//! Who may see the page: the bearer token or the login form's session cookie, the sessions, the
//! limit on failed logins per client, and the login and logout routes.

use super::State;
use anyhow::{Context, Result};
use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The login form (served with 401 when a token is required and none was given).
const LOGIN: &str = include_str!("login.html");
/// The login cookie's name.
const COOKIE: &str = "lepton_session";
/// Failed logins (form or bearer token) a client may make within [`FAILURE_WINDOW`]; the next
/// attempts get 429 until the oldest failure is older than the window.
pub const MAX_FAILURES: usize = 5;
/// The window failed logins are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sessions held at once; a login beyond it ends the session that would expire first.
const MAX_SESSIONS: usize = 256;
/// Clients whose failures are remembered at once; beyond it, the stalest are forgotten.
const MAX_CLIENTS: usize = 4096;

/// Who may see the page, and how a login lasts.
#[derive(Debug, Clone)]
pub struct Access {
    /// The token (`[web] token_file`), if one is required.
    pub token: Option<String>,
    /// How long a login's session lasts (`[web] session_days`).
    pub session: Duration,
    /// Mark the session cookie `Secure` (`[web] secure_cookie`: the page is reached over TLS
    /// through a reverse proxy).
    pub secure_cookie: bool,
}

impl Access {
    /// Open to whoever reaches the page (no token).
    pub fn open() -> Self {
        Access { token: None, session: Duration::from_secs(86_400), secure_cookie: false }
    }
}

/// The login sessions: random ids (only their SHA-256 is kept, so a lookup's timing tells
/// nothing of an id) and when each expires. Held in memory: a restart ends every session.
#[derive(Default)]
pub(super) struct Sessions {
    live: HashMap<[u8; 32], Instant>,
}

impl Sessions {
    fn key(id: &str) -> [u8; 32] {
        Sha256::digest(id.as_bytes()).into()
    }

    /// A new session lasting `life`; its id (64 hex digits from the OS's random source).
    fn open(&mut self, life: Duration, now: Instant) -> Result<String> {
        let mut raw = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut raw))
            .context("reading /dev/urandom for a session id")?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        self.live.retain(|_, until| *until > now);
        if self.live.len() >= MAX_SESSIONS {
            if let Some(k) = self.live.iter().min_by_key(|(_, until)| **until).map(|(k, _)| *k) {
                self.live.remove(&k);
            }
        }
        self.live.insert(Self::key(&id), now.checked_add(life).unwrap_or(now + Duration::from_secs(365 * 86_400)));
        Ok(id)
    }

    /// Whether `id` is a session that has not expired (an expired one is forgotten).
    fn valid(&mut self, id: &str, now: Instant) -> bool {
        let k = Self::key(id);
        match self.live.get(&k) {
            Some(until) if *until > now => true,
            Some(_) => {
                self.live.remove(&k);
                false
            }
            None => false,
        }
    }

    /// Ends session `id`.
    fn revoke(&mut self, id: &str) {
        self.live.remove(&Self::key(id));
    }
}

/// Failed logins per client address, within [`FAILURE_WINDOW`].
#[derive(Default)]
pub(super) struct Failures {
    by_client: HashMap<IpAddr, VecDeque<Instant>>,
}

impl Failures {
    /// How long `client` must wait before its next attempt, if it has used up its failures.
    fn wait(&mut self, client: IpAddr, now: Instant) -> Option<Duration> {
        let q = self.by_client.get_mut(&client)?;
        while q.front().is_some_and(|t| now.saturating_duration_since(*t) >= FAILURE_WINDOW) {
            q.pop_front();
        }
        if q.is_empty() {
            self.by_client.remove(&client);
            return None;
        }
        (q.len() >= MAX_FAILURES).then(|| FAILURE_WINDOW.saturating_sub(now.saturating_duration_since(q[0])))
    }

    /// Counts a failed login of `client`.
    fn fail(&mut self, client: IpAddr, now: Instant) {
        if self.by_client.len() >= MAX_CLIENTS && !self.by_client.contains_key(&client) {
            self.by_client.retain(|_, q| q.back().is_some_and(|t| now.saturating_duration_since(*t) < FAILURE_WINDOW));
            if self.by_client.len() >= MAX_CLIENTS {
                let stalest = self.by_client.iter().min_by_key(|(_, q)| q.back().copied()).map(|(k, _)| *k);
                if let Some(k) = stalest {
                    self.by_client.remove(&k);
                }
            }
        }
        let q = self.by_client.entry(client).or_default();
        q.push_back(now);
        while q.len() > MAX_FAILURES {
            q.pop_front();
        }
    }
}

/// The client a request comes from: the peer's address or, when the peer is on this machine
/// (a reverse proxy) and says so, the last address of its `X-Forwarded-For`.
fn client_of(peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
    let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
    if !peer.is_loopback() {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(peer)
}

/// The values of the session cookie a request carries.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE).and_then(|c| c.strip_prefix('=')))
}

impl State {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the request carries a live session cookie.
    fn has_session(&self, headers: &HeaderMap) -> bool {
        let now = Instant::now();
        let mut s = self.sessions();
        cookies(headers).any(|id| s.valid(id, now))
    }

    /// The `Set-Cookie` value for session `id` (`None`: the cookie that ends it).
    fn cookie(&self, id: Option<&str>) -> String {
        let secure = if self.access.secure_cookie { "; Secure" } else { "" };
        match id {
            Some(id) => format!(
                "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                self.access.session.as_secs().max(1)
            ),
            None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
        }
    }
}

/// Equal, in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The login form, with `error` (static text) above the field.
fn login_page(code: StatusCode, error: &str) -> Response {
    let error = if error.is_empty() { String::new() } else { format!("<p class=error>{error}</p>") };
    let mut r = (code, Html(LOGIN.replace("{error}", &error))).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 429 for a client that used up its failed logins: `Retry-After` in whole seconds.
fn too_many(wait: Duration, form: bool) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let msg = format!("Too many failed logins from your address: try again in {secs} s.");
    let mut r = if form {
        login_page(StatusCode::TOO_MANY_REQUESTS, &msg)
    } else {
        (StatusCode::TOO_MANY_REQUESTS, format!("{msg}\n")).into_response()
    };
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// Lets a request through with the bearer token or a live session cookie, when a token is
/// required. A wrong bearer token counts as a failed login; a client that has used up its
/// failures gets 429 for any token until they age out of the window.
pub(super) async fn authorize(AxState(st): AxState<Arc<State>>, req: Request, next: Next) -> Response {
    let Some(token) = st.access.token.as_deref() else {
        return next.run(req).await;
    };
    let headers = req.headers();
    if st.has_session(headers) {
        return next.run(req).await;
    }
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if let Some(given) = bearer {
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let client = client_of(peer, headers);
        let now = Instant::now();
        let wait = st.failures().wait(client, now);
        if let Some(wait) = wait {
            return too_many(wait, false);
        }
        if same(given.trim().as_bytes(), token.as_bytes()) {
            return next.run(req).await;
        }
        st.failures().fail(client, now);
        tracing::warn!("device page: a request from {client} with a wrong token");
    }
    let mut r = if req.uri().path() == "/" {
        login_page(StatusCode::UNAUTHORIZED, "")
    } else {
        (StatusCode::UNAUTHORIZED, "a token is required: send `Authorization: Bearer TOKEN` or log in at /login\n")
            .into_response()
    };
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"lepton\""));
    r
}

pub(super) async fn login_form() -> Response {
    login_page(StatusCode::OK, "")
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// Checks the form's token: a new session (the one the request carried, if any, ends), or a
/// counted failure; 429 once the client has used up its failures.
pub(super) async fn login(
    AxState(st): AxState<Arc<State>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let Some(token) = st.access.token.as_deref() else {
        return Redirect::to("/").into_response();
    };
    let client = client_of(Some(peer), &headers);
    let now = Instant::now();
    let wait = st.failures().wait(client, now);
    if let Some(wait) = wait {
        return too_many(wait, true);
    }
    if !same(f.token.trim().as_bytes(), token.as_bytes()) {
        st.failures().fail(client, now);
        tracing::warn!("device page: a login from {client} with a wrong token");
        return login_page(StatusCode::UNAUTHORIZED, "That token is not this device\u{2019}s.");
    }
    let id = {
        let mut s = st.sessions();
        for old in cookies(&headers) {
            s.revoke(old);
        }
        s.open(st.access.session, now)
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => {
            tracing::error!("device page: {e:#}");
            return login_page(StatusCode::INTERNAL_SERVER_ERROR, "The device could not start a session.");
        }
    };
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&st.cookie(Some(&id))) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Ends the request's session and clears its cookie.
pub(super) async fn logout(AxState(st): AxState<Arc<State>>, headers: HeaderMap) -> Response {
    {
        let mut s = st.sessions();
        for id in cookies(&headers) {
            s.revoke(id);
        }
    }
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&st.cookie(None)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_sessions_are_random_expire_and_end() {
        assert!(same(b"abcdef0123456789", b"abcdef0123456789"));
        assert!(!same(b"abcdef0123456789", b"abcdef012345678"));
        assert!(!same(b"abcdef0123456789", b"abcdef0123456780"));
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let a = s.open(Duration::from_secs(10), t0).unwrap();
        let b = s.open(Duration::from_secs(10), t0).unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b, "a new id per login");
        assert!(s.valid(&a, t0 + Duration::from_secs(9)));
        assert!(!s.valid(&a, t0 + Duration::from_secs(10)), "expired");
        assert!(!s.valid(&a, t0), "and forgotten");
        s.revoke(&b);
        assert!(!s.valid(&b, t0));
        assert!(!s.valid("", t0));
    }

    #[test]
    fn failed_logins_are_limited_per_client_within_the_window() {
        let mut f = Failures::default();
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        let t0 = Instant::now();
        for k in 0..MAX_FAILURES as u64 {
            assert_eq!(f.wait(a, t0 + Duration::from_secs(k)), None);
            f.fail(a, t0 + Duration::from_secs(k));
        }
        assert_eq!(f.wait(a, t0 + Duration::from_secs(10)), Some(FAILURE_WINDOW - Duration::from_secs(10)));
        assert_eq!(f.wait(b, t0 + Duration::from_secs(10)), None, "per client");
        assert_eq!(f.wait(a, t0 + FAILURE_WINDOW), None, "the oldest failure aged out");
        assert_eq!(f.wait(a, t0 + FAILURE_WINDOW + Duration::from_secs(5)), None);
    }

    #[test]
    fn the_client_is_the_peer_or_what_a_local_proxy_forwards() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 198.51.100.7"));
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.5:5000".parse().unwrap();
        assert_eq!(client_of(Some(local), &h), "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(client_of(Some(remote), &h), remote.ip(), "a remote peer cannot choose its address");
        assert_eq!(client_of(Some(local), &HeaderMap::new()), local.ip());
    }
}
