//! The device page (`[web]`): an HTTP server in the daemon with the live annotated view of each
//! vision pipeline, the event history (SQLite), stats with a chart of the last minutes, device
//! and model information, the JSON API behind the page, Prometheus `/metrics` and `/healthz`.
//! The page's assets are built into the binary (no CDN); access takes a bearer token or the login
//! form's session cookie when `[web] token_file` is set (see [`Access`]). TLS is left to a
//! reverse proxy. The page builds every element from data as DOM nodes and text, never as HTML.

pub mod history;
pub mod live;
mod metrics;

use crate::mqtt::Link;
use crate::status::{rfc3339, SharedStatus};
use anyhow::{Context, Result};
use axum::extract::{ConnectInfo, Path as UrlPath, Query as UrlQuery, Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use history::{History, Query};
use live::{Live, SharedLast};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The page: HTML, CSS and script in one file, built into the binary.
const PAGE: &str = include_str!("page.html");
/// The login form (served with 401 when a token is required and none was given).
const LOGIN: &str = include_str!("login.html");
/// Seconds between the chart's points.
const SAMPLE_S: u64 = 2;
/// Points kept per pipeline: ten minutes.
const POINTS: usize = 300;
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
struct Sessions {
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
struct Failures {
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

/// What the page shows of one pipeline.
pub struct PipelineInfo {
    /// Name.
    pub name: String,
    /// Model file (or bundled name).
    pub model: String,
    /// Engine running it.
    pub engine: String,
    /// The micro engine's kernel set, if it runs there.
    pub kernels: Option<String>,
    /// The model's manifest.
    pub manifest: lepton_runtime::manifest::Manifest,
    /// Source kind, as a config names it.
    pub source: String,
    /// Publication threshold.
    pub threshold: f32,
    /// Counters.
    pub status: SharedStatus,
    /// Newest frame and detections.
    pub last: SharedLast,
    /// The live view (vision pipelines).
    pub live: Option<Live>,
}

/// What the page shows of the device.
pub struct DeviceInfo {
    /// Device id.
    pub id: String,
    /// Friendly name.
    pub name: String,
    /// Board profile: name and description.
    pub board: Option<(String, String)>,
    /// The MQTT broker, `host:port`.
    pub broker: String,
    /// The MQTT topic prefix of this device.
    pub topics: String,
}

/// Everything the server reads.
pub struct State {
    /// The device.
    pub device: DeviceInfo,
    /// The pipelines.
    pub pipelines: Vec<PipelineInfo>,
    /// The MQTT link (state and counters).
    pub link: Link,
    /// The event history.
    pub history: Arc<History>,
    /// Who may see the page.
    pub access: Access,
    started: Instant,
    series: Mutex<Vec<VecDeque<Point>>>,
    sessions: Mutex<Sessions>,
    failures: Mutex<Failures>,
}

impl State {
    /// The server's state; `access` from `[web]`.
    pub fn new(
        device: DeviceInfo,
        pipelines: Vec<PipelineInfo>,
        link: Link,
        history: Arc<History>,
        access: Access,
    ) -> Self {
        let series = Mutex::new(pipelines.iter().map(|_| VecDeque::with_capacity(POINTS)).collect());
        State {
            device,
            pipelines,
            link,
            history,
            access,
            started: Instant::now(),
            series,
            sessions: Mutex::default(),
            failures: Mutex::default(),
        }
    }

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

/// One point of a pipeline's chart.
#[derive(Debug, Clone, Copy)]
struct Point {
    t_ms: u64,
    fps: f64,
    latency_ms: f64,
}

/// Equal, in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Binds the page's address; with `search`, the next ports are tried when it is taken (the demo).
pub fn bind(addr: SocketAddr, search: bool) -> Result<TcpListener> {
    let tries = if search { 100 } else { 1 };
    let mut last = None;
    for i in 0..tries {
        let mut a = addr;
        a.set_port(addr.port().saturating_add(i));
        match TcpListener::bind(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    let e = last.map_or_else(|| "no port".to_string(), |e| e.to_string());
    anyhow::bail!("web.listen {addr}: cannot serve the device page there: {e} (choose another port in [web] listen)")
}

/// The running server.
pub struct Server {
    /// Where it serves.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Stops serving (requests in flight finish).
    pub fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the page on `listener` from a thread of its own (a current-thread tokio runtime).
pub fn start(listener: TcpListener, state: Arc<State>) -> Result<Server> {
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the web runtime")?;
    let thread = std::thread::Builder::new()
        .name("lepton-web".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("device page: {e}");
                        return;
                    }
                };
                tokio::spawn(sample(Arc::clone(&state)));
                let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                if let Err(e) = serve.await {
                    tracing::error!("device page: {e}");
                }
            })
        })
        .context("starting the web server")?;
    Ok(Server { addr, stop: Some(stop), thread: Some(thread) })
}

fn router(state: Arc<State>) -> Router {
    let guarded = Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/api/pipelines", get(pipelines))
        .route("/api/events", get(events))
        .route("/api/events/:id/snapshot.jpg", get(event_picture))
        .route("/api/snapshot/:file", get(live_picture))
        .route("/metrics", get(metrics::handler))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), authorize));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .merge(guarded)
        .with_state(state)
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
async fn authorize(AxState(st): AxState<Arc<State>>, req: Request, next: Next) -> Response {
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

async fn login_form() -> Response {
    login_page(StatusCode::OK, "")
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Checks the form's token: a new session (the one the request carried, if any, ends), or a
/// counted failure; 429 once the client has used up its failures.
async fn login(
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
async fn logout(AxState(st): AxState<Arc<State>>, headers: HeaderMap) -> Response {
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

async fn page() -> Response {
    let mut r = Html(PAGE).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Samples each pipeline's frame rate and mean inference time every [`SAMPLE_S`] seconds.
async fn sample(st: Arc<State>) {
    let mut last: Vec<(u64, Duration, u64)> = vec![(0, Duration::ZERO, 0); st.pipelines.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(SAMPLE_S));
    let mut at = Instant::now();
    loop {
        tick.tick().await;
        let dt = at.elapsed().as_secs_f64().max(1e-3);
        at = Instant::now();
        let now = crate::status::now_ms();
        let mut series = st.series.lock().unwrap_or_else(|p| p.into_inner());
        for (k, p) in st.pipelines.iter().enumerate() {
            let (processed, total, count) = {
                let s = p.status.lock().unwrap_or_else(|p| p.into_inner());
                (s.processed, s.inference.total(), s.inference.count())
            };
            let (p0, t0, c0) = last[k];
            last[k] = (processed, total, count);
            let n = count.saturating_sub(c0);
            let latency_ms = if n > 0 { (total.saturating_sub(t0)).as_secs_f64() * 1e3 / n as f64 } else { 0.0 };
            let s = &mut series[k];
            if s.len() == POINTS {
                s.pop_front();
            }
            s.push_back(Point { t_ms: now, fps: processed.saturating_sub(p0) as f64 / dt, latency_ms });
        }
    }
}

fn json_error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({"error": msg.into()}))).into_response()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| anyhow::anyhow!("{e}"))?
}

async fn status(AxState(st): AxState<Arc<State>>) -> Response {
    let s = Arc::clone(&st);
    let (summary, labels) = match blocking(move || Ok((s.history.summary()?, s.history.labels()?))).await {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let l = st.link.stats();
    let mut all_labels: Vec<String> = labels;
    for p in &st.pipelines {
        all_labels.extend(p.manifest.event_labels().into_iter().map(str::to_string));
    }
    all_labels.sort();
    all_labels.dedup();
    let d = &st.device;
    Json(json!({
        "device": d.id, "name": d.name, "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": st.started.elapsed().as_secs(), "time": rfc3339(crate::status::now_ms()),
        "board": d.board.as_ref().map(|(n, desc)| json!({"name": n, "description": desc})),
        "kernels": lepton_runtime::engine::micro::kernels::Isa::selected().map_or_else(|e| e.to_string(), |i| i.name().to_string()),
        "mqtt": {"broker": d.broker, "topics": d.topics, "connected": l.connected, "queue_depth": l.queue_depth,
                 "delivered": l.delivered, "dropped": l.dropped, "connections": l.connections},
        "history": summary,
        "auth": st.access.token.is_some(),
        "pipelines": st.pipelines.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        "labels": all_labels,
    }))
    .into_response()
}

fn detections_json(labels: &[String], dets: &[lepton_runtime::Detection]) -> Vec<Value> {
    dets.iter()
        .map(|d| {
            let label = labels.get(d.class as usize).cloned().unwrap_or_else(|| d.class.to_string());
            match d.bbox {
                Some(b) => json!({"label": label, "score": d.score, "box": [b.x0, b.y0, b.x1, b.y1]}),
                None => json!({"label": label, "score": d.score}),
            }
        })
        .collect()
}

async fn pipelines(AxState(st): AxState<Arc<State>>) -> Json<Value> {
    let series = st.series.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let list: Vec<Value> = st
        .pipelines
        .iter()
        .zip(series)
        .map(|(p, series)| {
            let labels = &p.manifest.labels;
            let (latest, seen) = {
                let l = p.last.lock().unwrap_or_else(|p| p.into_inner());
                let latest = l.frame.map(|(frame, ts)| {
                    json!({"frame": frame, "ts": rfc3339(ts), "detections": detections_json(labels, &l.detections)})
                });
                let seen = l.seen.as_ref().map(|(ts, d)| json!({"ts": rfc3339(*ts), "detections": detections_json(labels, d)}));
                (latest, seen)
            };
            let mut s = p.status.lock().unwrap_or_else(|p| p.into_inner());
            let mut v = json!({
                "name": p.name, "task": p.manifest.task.name(), "model": p.model, "engine": p.engine, "kernels": p.kernels,
                "source": p.source, "threshold": p.threshold, "labels": labels, "manifest": p.manifest,
                "processed": s.processed, "dropped": s.dropped, "failed": s.failed, "published": s.messages,
                "snapshots": s.snapshots, "snapshots_dropped": s.snapshots_dropped,
                "history": s.history, "history_dropped": s.history_dropped,
                "fps": series.back().map_or(0.0, |p| p.fps),
                "inference_p50_ms": s.inference.percentile(50.0).as_secs_f64() * 1e3,
                "inference_p99_ms": s.inference.percentile(99.0).as_secs_f64() * 1e3,
                "finished": s.finished, "stalled": s.stalled,
                "live": p.live.is_some().then(|| format!("/api/snapshot/{}.jpg", p.name)),
                "latest": latest, "last_seen": seen,
                "series": series.iter().map(|q| json!([q.t_ms, (q.fps * 100.0).round() / 100.0, (q.latency_ms * 1000.0).round() / 1000.0])).collect::<Vec<_>>(),
            });
            if let Some(h) = &s.source {
                v["source_connected"] = json!(!h.down());
                v["source_outages"] = json!(h.outages());
            }
            v
        })
        .collect();
    Json(Value::Array(list))
}

/// A time given as RFC 3339 (`2026-11-30T12:00:00Z`) or milliseconds since the Unix epoch.
fn parse_time(name: &str, v: &str) -> Result<u64, String> {
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(v)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| format!("{name}={v}: give a time as RFC 3339 (2026-11-30T12:00:00Z) or milliseconds since 1970"))
}

async fn events(AxState(st): AxState<Arc<State>>, UrlQuery(q): UrlQuery<HashMap<String, String>>) -> Response {
    for k in q.keys() {
        if !["since", "until", "label", "pipeline", "limit", "before"].contains(&k.as_str()) {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("unknown parameter `{k}`: use since, until, label, pipeline, limit, before"),
            );
        }
    }
    let time = |k: &str| q.get(k).filter(|v| !v.is_empty()).map(|v| parse_time(k, v)).transpose();
    let number = |k: &str, max: i64| {
        q.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| format!("{k}={v}: give a whole number from 1 to {max}"))
            })
            .transpose()
    };
    let text = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let query = match (time("since"), time("until"), number("limit", 1000), number("before", i64::MAX)) {
        (Ok(since_ms), Ok(until_ms), Ok(limit), Ok(before_id)) => Query {
            since_ms,
            until_ms,
            label: text("label"),
            pipeline: text("pipeline"),
            before_id,
            limit: limit.unwrap_or(100) as usize,
        },
        (Err(msg), ..) | (_, Err(msg), ..) | (_, _, Err(msg), _) | (.., Err(msg)) => {
            return json_error(StatusCode::BAD_REQUEST, msg)
        }
    };
    let h = Arc::clone(&st.history);
    match blocking(move || h.events(&query)).await {
        Ok(rows) => {
            let list: Vec<Value> = rows
                .into_iter()
                .map(|r| {
                    let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
                    v["ts"] = json!(rfc3339(r.ts_ms.max(0) as u64));
                    v["snapshot"] = json!(r.picture.map(|_| format!("/api/events/{}/snapshot.jpg", r.id)));
                    v
                })
                .collect();
            Json(json!({"events": list})).into_response()
        }
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

fn jpeg(bytes: Vec<u8>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (headers, bytes).into_response()
}

async fn event_picture(AxState(st): AxState<Arc<State>>, UrlPath(id): UrlPath<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return json_error(StatusCode::BAD_REQUEST, format!("event id `{id}`: give a number"));
    };
    let h = Arc::clone(&st.history);
    match blocking(move || h.picture_of(id)).await {
        Ok(Some(b)) => jpeg(b),
        Ok(None) => json_error(StatusCode::NOT_FOUND, format!("event {id} has no snapshot (or is not in the history)")),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

async fn live_picture(AxState(st): AxState<Arc<State>>, UrlPath(file): UrlPath<String>) -> Response {
    let Some(name) = file.strip_suffix(".jpg") else {
        return json_error(StatusCode::NOT_FOUND, format!("{file}: ask for /api/snapshot/PIPELINE.jpg"));
    };
    let Some(k) = st.pipelines.iter().position(|p| p.name == name) else {
        let names: Vec<&str> = st.pipelines.iter().map(|p| p.name.as_str()).collect();
        return json_error(StatusCode::NOT_FOUND, format!("no pipeline `{name}` (pipelines: {})", names.join(", ")));
    };
    if st.pipelines[k].live.is_none() {
        return json_error(StatusCode::NOT_FOUND, format!("pipeline `{name}` hears audio: it has no pictures"));
    }
    let s = Arc::clone(&st);
    match blocking(move || Ok(s.pipelines[k].live.as_ref().and_then(|l| l.jpeg()))).await {
        Ok(Some(b)) => jpeg(b.to_vec()),
        Ok(None) => json_error(StatusCode::NOT_FOUND, format!("pipeline `{name}` has not processed a frame yet")),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

async fn healthz(AxState(st): AxState<Arc<State>>) -> Response {
    let stalled: Vec<&str> = st
        .pipelines
        .iter()
        .filter(|p| p.status.lock().unwrap_or_else(|p| p.into_inner()).stalled)
        .map(|p| p.name.as_str())
        .collect();
    if stalled.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "stalled", "pipelines": stalled}))).into_response()
    }
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

    #[test]
    fn times_are_rfc3339_or_milliseconds() {
        assert_eq!(parse_time("since", "1700000000000").ok(), Some(1_700_000_000_000));
        assert_eq!(parse_time("since", "2023-11-14T22:13:20Z").ok(), Some(1_700_000_000_000));
        assert!(parse_time("since", "yesterday").is_err());
    }
}
