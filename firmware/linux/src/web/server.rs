//! The server: binding the page's address, serving the routes from a thread of its own, stopping,
//! and the page itself.

use super::api::{event_clip, event_picture, events, healthz, live_picture, pipelines, status};
use super::auth::{authorize, login, login_form, logout};
use super::chart::sample;
use super::{metrics, State};
use anyhow::{Context, Result};
use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The page: HTML, CSS and script in one file, built into the binary.
const PAGE: &str = include_str!("page.html");

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
        .route("/api/events/:id/clip.mp4", get(event_clip))
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

async fn page() -> Response {
    let mut r = Html(PAGE).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
