//! The device page (`[web]`): an HTTP server in the daemon with the live annotated view of each
//! vision pipeline, the event history (SQLite), stats with a chart of the last minutes, device
//! and model information, the JSON API behind the page, Prometheus `/metrics` and `/healthz`.
//! The page's assets are built into the binary (no CDN); access takes a bearer token or the login
//! form's session cookie when `[web] token_file` is set (see [`Access`]). TLS is left to a
//! reverse proxy. The page builds every element from data as DOM nodes and text, never as HTML.
//!
//! Here: what the server reads ([`State`]); the server itself is in `server`, access (token,
//! sessions, login) in `auth`, the JSON API in `api`, the chart's sampling in `chart`.

mod api;
mod auth;
mod chart;
pub mod history;
pub mod live;
mod metrics;
mod server;

pub use auth::Access;
pub use server::{bind, start};

use crate::mqtt::Link;
use crate::status::SharedStatus;
use auth::{Failures, Sessions};
use chart::{Point, POINTS};
use history::History;
use live::{Live, SharedLast};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    /// The folder of its event clips (`[pipeline.clips]`).
    pub clips: Option<std::path::PathBuf>,
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
}
