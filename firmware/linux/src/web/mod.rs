//! The device page (`[web]`): an HTTP server in the daemon with the live annotated view of each
//! vision pipeline, the event history (SQLite), stats with a chart of the last minutes, device
//! and model information, the JSON API behind the page, Prometheus `/metrics` and `/healthz`.
//! The page's assets are built into the binary (no CDN); access takes a bearer token or the login
//! form's cookie when `[web] token_file` is set. TLS is left to a reverse proxy.

pub mod history;
pub mod live;
mod metrics;

use crate::mqtt::Link;
use crate::sink::{rfc3339, SharedStatus};
use anyhow::{Context, Result};
use axum::extract::{Path as UrlPath, Query as UrlQuery, Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use history::{History, Query};
use live::{Live, SharedLast};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpListener};
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
    /// The access token, if one is required.
    pub token: Option<String>,
    started: Instant,
    series: Mutex<Vec<VecDeque<Point>>>,
}

impl State {
    /// The server's state; `token` from `[web] token_file`.
    pub fn new(
        device: DeviceInfo,
        pipelines: Vec<PipelineInfo>,
        link: Link,
        history: Arc<History>,
        token: Option<String>,
    ) -> Self {
        let series = Mutex::new(pipelines.iter().map(|_| VecDeque::with_capacity(POINTS)).collect());
        State { device, pipelines, link, history, token, started: Instant::now(), series }
    }

    fn session(&self) -> Option<String> {
        self.token.as_ref().map(|t| session_for(t))
    }
}

/// One point of a pipeline's chart.
#[derive(Debug, Clone, Copy)]
struct Point {
    t_ms: u64,
    fps: f64,
    latency_ms: f64,
}

/// The cookie value the login form sets: derived from the token, never the token itself.
fn session_for(token: &str) -> String {
    let d = Sha256::digest(format!("lepton-session\0{token}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
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
                let app = router(state);
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
        .merge(guarded)
        .with_state(state)
}

/// Lets a request through with the bearer token or the login cookie, when a token is required.
async fn authorize(AxState(st): AxState<Arc<State>>, req: Request, next: Next) -> Response {
    let (Some(token), Some(session)) = (st.token.as_deref(), st.session()) else {
        return next.run(req).await;
    };
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim().as_bytes(), token.as_bytes()));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE).and_then(|c| c.strip_prefix('=')))
        .any(|v| same(v.as_bytes(), session.as_bytes()));
    if bearer || cookie {
        return next.run(req).await;
    }
    let mut r = if req.uri().path() == "/" {
        (StatusCode::UNAUTHORIZED, Html(LOGIN.replace("{error}", ""))).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "a token is required: send `Authorization: Bearer TOKEN` or log in at /login\n")
            .into_response()
    };
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"lepton\""));
    r
}

async fn login_form() -> Html<String> {
    Html(LOGIN.replace("{error}", ""))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(AxState(st): AxState<Arc<State>>, Form(f): Form<LoginForm>) -> Response {
    let (Some(token), Some(session)) = (st.token.as_deref(), st.session()) else {
        return Redirect::to("/").into_response();
    };
    if !same(f.token.trim().as_bytes(), token.as_bytes()) {
        tracing::warn!("device page: a login with a wrong token");
        let body = LOGIN.replace("{error}", "<p class=error>That token is not this device's.</p>");
        return (StatusCode::UNAUTHORIZED, Html(body)).into_response();
    }
    let cookie = format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000");
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
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
        let now = crate::sink::now_ms();
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
        "uptime_s": st.started.elapsed().as_secs(), "time": rfc3339(crate::sink::now_ms()),
        "board": d.board.as_ref().map(|(n, desc)| json!({"name": n, "description": desc})),
        "kernels": lepton_runtime::engine::micro::kernels::Isa::selected().map_or_else(|e| e.to_string(), |i| i.name().to_string()),
        "mqtt": {"broker": d.broker, "topics": d.topics, "connected": l.connected, "queue_depth": l.queue_depth,
                 "delivered": l.delivered, "dropped": l.dropped, "connections": l.connections},
        "history": summary,
        "auth": st.token.is_some(),
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
    fn tokens_compare_whole_and_sessions_are_not_the_token() {
        assert!(same(b"abcdef0123456789", b"abcdef0123456789"));
        assert!(!same(b"abcdef0123456789", b"abcdef012345678"));
        assert!(!same(b"abcdef0123456789", b"abcdef0123456780"));
        let s = session_for("abcdef0123456789");
        assert_eq!(s.len(), 64);
        assert!(!s.contains("abcdef0123456789"));
        assert_ne!(s, session_for("abcdef0123456780"));
    }

    #[test]
    fn times_are_rfc3339_or_milliseconds() {
        assert_eq!(parse_time("since", "1700000000000").ok(), Some(1_700_000_000_000));
        assert_eq!(parse_time("since", "2023-11-14T22:13:20Z").ok(), Some(1_700_000_000_000));
        assert!(parse_time("since", "yesterday").is_err());
    }
}
