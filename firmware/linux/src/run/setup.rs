//! What `lepton run` runs, from a config (or the demo): the device, the broker, the pipelines'
//! plans (model, source, threshold, alerts, snapshots), the device page's settings and the
//! trusted keys; and how a plan's source is named to people.

use crate::board::Board;
use crate::config::{self, Config, EngineKind, Source};
use crate::web::history;
use anyhow::{Context, Result};
use lepton_runtime::image::Image;
use lepton_runtime::signature::{self, PublicKey};
use lepton_runtime::source::stream_url::{redact, StreamUrl};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a pipeline gets its model.
#[derive(Clone)]
pub enum ModelRef {
    /// A file.
    File(PathBuf),
    /// Bytes built into the binary (the demo), with a name.
    Bundled(&'static [u8], &'static str),
}

/// How a pipeline gets its frames or samples.
#[derive(Clone)]
pub enum SourceRef {
    /// As configured.
    Config(Source),
    /// Decoded pictures built into the binary (the demo).
    Pictures(Vec<Image>),
    /// A WAV recording built into the binary (the demo): bytes and name.
    Recording(&'static [u8], &'static str),
}

/// One pipeline to run.
#[derive(Clone)]
pub struct Plan {
    /// Name (topics).
    pub name: String,
    /// Model.
    pub model: ModelRef,
    /// Source.
    pub source: SourceRef,
    /// Publication threshold.
    pub threshold: f32,
    /// Presence hold: an event ends after this long without a detection.
    pub hold: Duration,
    /// Engine choice.
    pub engine: EngineKind,
    /// Print results.
    pub print: bool,
    /// GPIO outputs driven by event starts.
    pub alerts: Vec<config::AlertOutput>,
    /// JPEG snapshots (vision pipelines).
    pub snapshot: Option<config::Snapshot>,
    /// The motion gate (vision pipelines), if enabled.
    pub motion: Option<config::Motion>,
    /// Regions the motion gate ignores.
    pub masks: Vec<config::Mask>,
    /// Object tracking (detectors).
    pub track: config::Track,
    /// Zones tracked objects enter and leave (detectors).
    pub zones: Vec<config::Zone>,
    /// MP4 clips of events (H.264 sources).
    pub clips: Option<config::Clips>,
}

/// Where to publish.
pub enum Broker {
    /// A configured broker.
    External(Box<config::Mqtt>),
    /// Start one in this process.
    Embedded,
}

/// Everything `run` needs.
pub struct Setup {
    /// Device id.
    pub device: String,
    /// Device name.
    pub device_name: String,
    /// Time between stats messages (zero: none).
    pub stats_interval: Duration,
    /// A pipeline without progress this long stops the systemd watchdog pings.
    pub stall: Duration,
    /// Broker.
    pub broker: Broker,
    /// Home Assistant discovery.
    pub homeassistant: config::HomeAssistant,
    /// Pipelines.
    pub plans: Vec<Plan>,
    /// The board profile, if one applies.
    pub board: Option<Board>,
    /// What `[security]` asks of model files.
    pub trust: Trust,
    /// The device page, if one is served.
    pub web: Option<WebSetup>,
}

/// How the device page is served.
pub struct WebSetup {
    /// Address to serve on.
    pub listen: std::net::SocketAddr,
    /// Try the next ports when it is taken (the demo).
    pub search: bool,
    /// The event history's database.
    pub database: PathBuf,
    /// Access token, if one is required.
    pub token: Option<String>,
    /// How long a login lasts.
    pub session: std::time::Duration,
    /// Mark the login cookie `Secure` (TLS by a reverse proxy).
    pub secure_cookie: bool,
    /// How much history to keep.
    pub retention: history::Retention,
}

impl WebSetup {
    /// From a config's `[web]`; `None` when `listen` is empty.
    pub fn from_config(w: &config::Web) -> Result<Option<Self>> {
        let Some(listen) = w.addr()? else { return Ok(None) };
        Ok(Some(WebSetup {
            listen,
            search: false,
            database: w.database.clone(),
            token: w.token()?,
            session: w.session_days.duration(),
            secure_cookie: w.secure_cookie,
            retention: history::Retention {
                max_age: w.retain_days.duration(),
                max_bytes: w.retain_mb.saturating_mul(1 << 20),
            },
        }))
    }
}

/// What `[security]` asks of model files: the trusted public keys, and whether every model must
/// carry a signature by one of them.
#[derive(Debug, Default)]
pub struct Trust {
    keys: Vec<PublicKey>,
    require_signed: bool,
}

impl Trust {
    /// Reads the trusted keys of a config's `[security]`.
    pub fn from_config(s: &config::Security) -> Result<Self> {
        let keys = signature::read_keys(&s.trusted_keys).context("security.trusted_keys")?;
        Ok(Trust { keys, require_signed: s.require_signed })
    }

    /// Checks a model file's bytes: refused when `require_signed` and it has no valid signature by
    /// a trusted key, or when it has a `.sig` that does not verify against the trusted keys.
    pub(super) fn check(&self, bytes: &[u8], path: &Path) -> Result<()> {
        let signed = signature::sig_path(path).exists();
        if self.require_signed || (signed && !self.keys.is_empty()) {
            let key = signature::verify(bytes, path, &self.keys).context("model refused (security)")?;
            tracing::info!("{}: signature by trusted key {} ({})", path.display(), key.id(), key.path().display());
        }
        Ok(())
    }
}

impl Setup {
    /// From a config file; `board` (from `--board`) overrides the config's `[device] board`.
    pub fn from_config(c: Config, board: Option<&str>) -> Result<Self> {
        let board = board.or(c.device.board.as_deref()).map(Board::load_linux).transpose()?;
        let web = c.web.as_ref().map(WebSetup::from_config).transpose()?.flatten();
        let plans = c
            .pipelines
            .into_iter()
            .map(|p| Plan {
                name: p.name,
                model: ModelRef::File(p.model),
                source: SourceRef::Config(p.source),
                threshold: p.threshold,
                hold: p.hold_s.duration(),
                engine: p.engine,
                print: p.print,
                alerts: p.alerts,
                snapshot: p.snapshot,
                motion: p.motion.filter(|m| m.enabled),
                masks: p.masks,
                track: p.track,
                zones: p.zones,
                clips: p.clips,
            })
            .collect();
        Ok(Setup {
            device_name: c.device.name.clone().unwrap_or_else(|| c.device.id.clone()),
            device: c.device.id,
            stats_interval: c.device.stats_interval_s.duration(),
            stall: c.device.stall_s.duration(),
            broker: c.mqtt.map_or(Broker::Embedded, |m| Broker::External(Box::new(m))),
            homeassistant: c.homeassistant,
            plans,
            board,
            trust: Trust::from_config(&c.security)?,
            web,
        })
    }

    /// Applies the board's process-wide settings (threads) and logs what applies.
    pub fn apply_board(&self) {
        if let Some(b) = &self.board {
            let threads = b.threads.unwrap_or(1);
            lepton_runtime::engine::set_threads(threads);
            tracing::info!("board {} ({}): {threads} inference thread(s)", b.name, b.description);
        }
    }
}

/// The source kind as a config names it.
pub fn source_name(s: &SourceRef) -> &'static str {
    match s {
        SourceRef::Pictures(_) => "bundled pictures",
        SourceRef::Recording(..) => "a bundled recording",
        SourceRef::Config(Source::Images { .. }) => "an images source",
        SourceRef::Config(Source::Wav { .. }) => "a wav source",
        SourceRef::Config(Source::Camera { .. }) => "a camera source",
        SourceRef::Config(Source::Rtsp { .. }) => "an rtsp source",
        SourceRef::Config(Source::Http { .. }) => "an http source",
        SourceRef::Config(Source::Video { .. }) => "a video source",
        SourceRef::Config(Source::Mic { .. }) => "a mic source",
    }
}

/// What a page's source is, for people: the file's name, the camera, or the URL without
/// credentials and without its query (which may hold a password).
pub fn source_text(s: &SourceRef) -> String {
    let file = |p: &std::path::Path| {
        p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
    };
    match s {
        SourceRef::Pictures(_) => "bundled pictures".into(),
        SourceRef::Recording(_, name) => format!("{name} (bundled)"),
        SourceRef::Config(Source::Images { path, .. }) => format!("images in {}", file(path)),
        SourceRef::Config(Source::Wav { path, .. }) => format!("wav {}", file(path)),
        SourceRef::Config(Source::Video { path, .. }) => format!("video {}", file(path)),
        SourceRef::Config(Source::Camera { index, .. }) => match index {
            Some(i) => format!("camera /dev/video{i}"),
            None => "camera (the board's)".into(),
        },
        SourceRef::Config(Source::Mic { device, .. }) => match device {
            Some(d) => format!("microphone {d}"),
            None => "microphone (default input)".into(),
        },
        SourceRef::Config(Source::Rtsp { url, .. } | Source::Http { url, .. }) => shown_url(url),
    }
}

/// `url` without user, password and query (`?…` stands for a query).
fn shown_url(url: &str) -> String {
    let clean =
        StreamUrl::parse(url, &["rtsp", "http", "https"], None, None).map_or_else(|_| redact(url), |u| u.to_string());
    match clean.split_once(['?', '#']) {
        Some((head, _)) => format!("{head}?…"),
        None => clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        assert_eq!(shown_url("rtsp://admin:hunter2@cam.lan:554/stream1"), "rtsp://cam.lan:554/stream1");
        assert_eq!(shown_url("http://cam.lan/snap.cgi?user=admin&pwd=hunter2"), "http://cam.lan/snap.cgi?…");
        assert!(!shown_url("rtsp//admin:hunter2@cam").contains("hunter2"));
    }
}
