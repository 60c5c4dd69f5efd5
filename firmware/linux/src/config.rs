//! The daemon's configuration (TOML). Every key is documented in README.md ("Configuration");
//! unknown keys are errors naming the key and line, paths are relative to the config file.

use anyhow::{bail, Context, Result};
use lepton_runtime::source::camera::CameraFormatKind;
use lepton_runtime::source::rtsp::RtspTransport;
use lepton_runtime::source::stream_url::StreamUrl;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[device]`.
    pub device: Device,
    /// `[mqtt]`; absent: an embedded broker on 127.0.0.1.
    pub mqtt: Option<Mqtt>,
    /// `[homeassistant]`.
    #[serde(default)]
    pub homeassistant: HomeAssistant,
    /// `[[pipeline]]`.
    #[serde(default, rename = "pipeline")]
    pub pipelines: Vec<Pipeline>,
    /// `[security]`.
    #[serde(default)]
    pub security: Security,
    /// `[web]`: the device page; absent: none.
    pub web: Option<Web>,
}

/// `[web]`: the device page (live view, event history, stats, `/metrics`, `/healthz`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Web {
    /// Address to serve on (default `127.0.0.1:8080`; empty: no page).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The SQLite event history (default `lepton.db`, relative to the config).
    #[serde(default = "default_database")]
    pub database: PathBuf,
    /// File holding the access token; without one the page is open to whoever reaches it.
    pub token_file: Option<PathBuf>,
    /// Events older than this many days are deleted (default 30).
    #[serde(default = "default_retain_days")]
    pub retain_days: Days<3_650>,
    /// The history is kept under this many MiB, oldest events deleted first (default 100).
    #[serde(default = "default_retain_mb")]
    pub retain_mb: u64,
    /// A login lasts this many days (default 1); a restart or the page's log out ends it sooner.
    #[serde(default = "default_session_days")]
    pub session_days: Days<365>,
    /// Mark the login cookie `Secure`, so a browser sends it over HTTPS only (default false; set
    /// it when the page is reached through a reverse proxy that terminates TLS).
    #[serde(default)]
    pub secure_cookie: bool,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            listen: default_listen(),
            database: default_database(),
            token_file: None,
            retain_days: default_retain_days(),
            retain_mb: default_retain_mb(),
            session_days: default_session_days(),
            secure_cookie: false,
        }
    }
}

fn default_session_days() -> Days<365> {
    Days(1.0)
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_database() -> PathBuf {
    "lepton.db".into()
}

fn default_retain_days() -> Days<3_650> {
    Days(30.0)
}

fn default_retain_mb() -> u64 {
    100
}

impl Web {
    /// The address to serve on, `None` when `listen` is empty.
    pub fn addr(&self) -> Result<Option<std::net::SocketAddr>> {
        if self.listen.trim().is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            anyhow::anyhow!(
                "web.listen = \"{}\": give an address and port, like \"127.0.0.1:8080\" or \"0.0.0.0:8080\" (empty: no page)",
                self.listen
            )
        })
    }

    /// Reads the token file: the token, trimmed; an error naming the file when it is unreadable
    /// or empty (the token itself is never in a message).
    pub fn token(&self) -> Result<Option<String>> {
        let Some(f) = &self.token_file else { return Ok(None) };
        let t = std::fs::read_to_string(f).with_context(|| format!("web.token_file {}", f.display()))?;
        let t = t.trim();
        if t.len() < 16 {
            bail!(
                "web.token_file {}: the token must be at least 16 characters (e.g. `openssl rand -hex 24 > {}`)",
                f.display(),
                f.display()
            );
        }
        Ok(Some(t.to_string()))
    }
}

/// `[security]`: which model files the daemon accepts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// Public keys (`lepton-convert keygen`'s NAME.pub) whose signatures are trusted.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// Refuse a model without a valid signature (MODEL.sig) by a trusted key (default false).
    /// Without it, a model that has a `.sig` is still checked against `trusted_keys` when any
    /// are given.
    #[serde(default)]
    pub require_signed: bool,
}

/// `[device]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Used in every topic: letters, digits, `-` and `_`.
    pub id: String,
    /// Friendly name (Home Assistant); default: the id.
    pub name: Option<String>,
    /// Seconds between stats messages (default 10; 0: none).
    #[serde(default = "default_stats")]
    pub stats_interval_s: Seconds<DAY>,
    /// Seconds without a processed frame or audio window after which a pipeline counts as stalled
    /// and the systemd watchdog is no longer fed (default 30; `boards/lepton.service`).
    #[serde(default = "default_stall")]
    pub stall_s: Seconds<DAY>,
    /// A board profile (`boards/<name>`) supplying camera, microphone, thread and GPIO defaults.
    pub board: Option<String>,
}

fn default_stats() -> Seconds<DAY> {
    Seconds(10.0)
}

/// Payload encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON objects (default).
    #[default]
    Json,
    /// postcard-encoded `DetectionMessage`/`Event` (see README).
    Postcard,
}

/// `[mqtt]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    /// Broker host (one broker; else `hosts`).
    #[serde(default)]
    pub host: Option<String>,
    /// Broker nodes of a cluster, `host` or `host:port`, tried in order: the first that
    /// answers is used, the next on its loss.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Broker port (default 1883, 8883 with TLS); the port of `hosts` entries without one.
    pub port: Option<u16>,
    /// Protocol: `"3.1.1"` (default) or `5`.
    #[serde(default)]
    pub protocol: ProtocolSetting,
    /// MQTT 5: seconds after which a detection not yet delivered is dropped by the broker
    /// (default 600; 0: never).
    #[serde(default = "default_detection_expiry")]
    pub detection_expiry_s: Seconds<U32_MAX>,
    /// MQTT 5: seconds the broker keeps the device's session after a disconnection (default 3600).
    #[serde(default = "default_session_expiry")]
    pub session_expiry_s: Seconds<U32_MAX>,
    /// First topic level (default `lepton`).
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// 0 or 1 (default 1).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Messages kept while the broker is unreachable; past it the oldest are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// `json` or `postcard`.
    #[serde(default)]
    pub format: Format,
    /// CA certificate (PEM) to verify the broker with TLS.
    pub tls_ca: Option<PathBuf>,
    /// User name.
    pub username: Option<String>,
    /// File holding the password (else `LEPTON_MQTT_PASSWORD`).
    pub password_file: Option<PathBuf>,
    /// Client id (default `lepton-<device id>`).
    pub client_id: Option<String>,
    /// Keep-alive in seconds (default 30; MQTT's limit is 65535).
    #[serde(default = "default_keepalive")]
    pub keepalive_s: Seconds<{ u16::MAX as u64 }>,
    /// Longest wait between reconnection attempts, in seconds (default 30).
    #[serde(default = "default_backoff")]
    pub reconnect_max_s: Seconds<HOUR>,
}

impl Mqtt {
    /// The broker port: as configured, else 8883 with TLS, 1883 without.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls_ca.is_some() { 8883 } else { 1883 })
    }

    /// The broker nodes, in the order they are tried (checked by [`Config::check`]).
    pub fn brokers(&self) -> Vec<(String, u16)> {
        match &self.host {
            Some(h) => vec![(h.clone(), self.port())],
            None => self.hosts.iter().map(|h| split_host_port(h, self.port())).collect(),
        }
    }

    /// The brokers as the user wrote them: `host:port, host:port`.
    pub fn brokers_text(&self) -> String {
        self.brokers().iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>().join(", ")
    }

    /// The protocol version (checked by [`Config::check`]).
    pub fn protocol(&self) -> Protocol {
        match &self.protocol {
            ProtocolSetting::Number(5) => Protocol::V5,
            ProtocolSetting::Text(t) if t == "5" || t == "5.0" => Protocol::V5,
            _ => Protocol::V311,
        }
    }

    fn check(&self) -> Result<()> {
        match (&self.host, self.hosts.is_empty()) {
            (Some(_), false) => {
                bail!("mqtt: both host and hosts are set; use host for one broker, hosts for a cluster")
            }
            (None, true) => {
                bail!("mqtt: no broker; set host = \"NAME\" (one broker) or hosts = [\"NODE:PORT\", ...] (a cluster)")
            }
            (Some(h), true) => {
                if let Some(url) = BrokerUrl::parse(h) {
                    bail!("mqtt.host {}: a URL; write its parts as keys: {}", url.shown(h), url.suggestion(false));
                }
                check_host(h).map_err(|e| anyhow::anyhow!("mqtt.host = \"{h}\": {e}"))?
            }
            (None, false) => {
                for h in &self.hosts {
                    if let Some(url) = BrokerUrl::parse(h) {
                        bail!(
                            "mqtt.hosts entry {}: a URL; write its parts as keys: {}",
                            url.shown(h),
                            url.suggestion(true)
                        );
                    }
                    let bad =
                        || anyhow::anyhow!("mqtt.hosts entry \"{h}\": write \"HOST\" or \"HOST:PORT\" (port 1-65535)");
                    let (name, port) = match h.strip_prefix('[') {
                        Some(rest) => {
                            let (addr, tail) = rest.split_once(']').ok_or_else(bad)?;
                            (format!("[{addr}]"), tail.strip_prefix(':'))
                        }
                        None => match h.rsplit_once(':') {
                            Some((n, p)) if !n.contains(':') => (n.to_string(), Some(p)),
                            _ => (h.clone(), None),
                        },
                    };
                    if h.contains("://") || port.is_some_and(|p| !p.parse::<u16>().is_ok_and(|p| p > 0)) {
                        return Err(bad());
                    }
                    check_host(&name).map_err(|e| anyhow::anyhow!("mqtt.hosts entry \"{h}\": {e}"))?;
                }
            }
        }
        let ok = match &self.protocol {
            ProtocolSetting::Number(n) => *n == 4 || *n == 5,
            ProtocolSetting::Text(t) => ["3.1.1", "4", "5", "5.0"].contains(&t.as_str()),
        };
        if !ok {
            bail!("mqtt.protocol = {}: use \"3.1.1\" (the default) or 5", self.protocol);
        }
        Ok(())
    }
}

/// `host` or `host:port` (an IPv6 address in brackets: `[::1]:1883`); `port` when none is given.
fn split_host_port(entry: &str, port: u16) -> (String, u16) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((addr, tail)) = rest.split_once(']') {
            let p = tail.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(port);
            return (addr.to_string(), p);
        }
    }
    match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(port)),
        _ => (entry.to_string(), port),
    }
}

/// The MQTT protocol version spoken to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4), the default.
    V311,
    /// MQTT 5: message expiry, content type, session expiry.
    V5,
}

impl Protocol {
    /// The name users write and read: `3.1.1` or `5`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V311 => "3.1.1",
            Protocol::V5 => "5",
        }
    }
}

/// `[mqtt] protocol`, as written: `"3.1.1"`, `"5"` or `5`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ProtocolSetting {
    /// `protocol = 5` (or 4, MQTT 3.1.1's protocol level).
    Number(u8),
    /// `protocol = "3.1.1"`.
    Text(String),
}

impl Default for ProtocolSetting {
    fn default() -> Self {
        ProtocolSetting::Text("3.1.1".into())
    }
}

impl std::fmt::Display for ProtocolSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolSetting::Number(n) => write!(f, "{n}"),
            ProtocolSetting::Text(t) => write!(f, "\"{t}\""),
        }
    }
}

fn default_detection_expiry() -> Seconds<U32_MAX> {
    Seconds(600.0)
}
fn default_session_expiry() -> Seconds<U32_MAX> {
    Seconds(3600.0)
}

fn default_prefix() -> String {
    "lepton".into()
}
fn default_qos() -> u8 {
    1
}
fn default_queue() -> usize {
    1000
}
fn default_keepalive() -> Seconds<{ u16::MAX as u64 }> {
    Seconds(30.0)
}
fn default_backoff() -> Seconds<HOUR> {
    Seconds(30.0)
}

/// `[homeassistant]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistant {
    /// Publish MQTT discovery configs (default false).
    #[serde(default)]
    pub discovery: bool,
    /// Discovery prefix (default `homeassistant`).
    #[serde(default = "default_ha_prefix")]
    pub prefix: String,
}

impl Default for HomeAssistant {
    fn default() -> Self {
        HomeAssistant { discovery: false, prefix: default_ha_prefix() }
    }
}

fn default_ha_prefix() -> String {
    "homeassistant".into()
}

/// `[[pipeline]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Used in topics.
    pub name: String,
    /// Model file (ONNX with a manifest, or `.lpm`).
    pub model: PathBuf,
    /// Detections below are not published (default 0.5).
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Presence events end after this long without a detection (default 2 s).
    #[serde(default = "default_hold")]
    pub hold_s: Seconds<DAY>,
    /// `auto` (int8 models on the integer engine), `tract` or `micro`.
    #[serde(default)]
    pub engine: EngineKind,
    /// Print each published result on stdout (default true).
    #[serde(default = "default_true")]
    pub print: bool,
    /// Where frames or samples come from.
    pub source: Source,
    /// GPIO outputs driven when an event starts (`[[pipeline.alert]]`).
    #[serde(default, rename = "alert")]
    pub alerts: Vec<AlertOutput>,
    /// JPEG snapshots over MQTT (`[pipeline.snapshot]`; vision pipelines).
    pub snapshot: Option<Snapshot>,
}

/// `[pipeline.snapshot]`: a JPEG of the frame each event started on (or one every `every_s`),
/// published retained to `{prefix}/{device}/{pipeline}/snapshot` and `.../snapshot/{label}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// `event` (the default): at each event start, the frame that started it.
    pub on: Option<SnapshotOn>,
    /// Instead of events: one picture every this many seconds.
    pub every_s: Option<Seconds<DAY>>,
    /// Draw each detection's box, label and score (default true).
    #[serde(default = "default_true")]
    pub annotate: bool,
    /// JPEG quality 1–100 (default 80).
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Pictures wider than this are scaled down, keeping the aspect ratio (default 1280).
    #[serde(default = "default_max_width")]
    pub max_width: u32,
}

/// When snapshots are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotOn {
    /// At each event start.
    Event,
}

fn default_quality() -> u8 {
    80
}
fn default_max_width() -> u32 {
    1280
}

/// `[[pipeline.alert]]`: a GPIO line (buzzer, relay, LED) switched on when an event starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertOutput {
    /// GPIO character device (default: the board profile's `[gpio] chip`, else `/dev/gpiochip0`).
    pub chip: Option<String>,
    /// Line offset on the chip (`17`), or a line named in the board profile (`"buzzer"`).
    pub line: GpioLine,
    /// Level meaning "on": `high` (default) or `low`.
    #[serde(default)]
    pub active: ActiveLevelKind,
    /// Seconds the output stays on after the last event start (default 2).
    #[serde(default = "default_hold")]
    pub hold_s: Seconds<DAY>,
    /// Blink while on: `[on_ms, off_ms]` (default: steady).
    pub blink_ms: Option<[Millis<MINUTE_MS>; 2]>,
    /// Labels whose events trigger it (default: every label).
    #[serde(default)]
    pub labels: Vec<String>,
}

/// A GPIO line by offset or by the board profile's name for it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum GpioLine {
    /// Offset on the chip.
    Offset(u32),
    /// A name from the board profile's `[gpio]` table.
    Name(String),
}

/// Pin level meaning "on".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ActiveLevelKind {
    /// On = high.
    #[default]
    High,
    /// On = low (active-low relay boards).
    Low,
}

fn default_threshold() -> f32 {
    0.5
}
fn default_hold() -> Seconds<DAY> {
    Seconds(2.0)
}
fn default_true() -> bool {
    true
}

/// Engine choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// The runtime's choice.
    #[default]
    Auto,
    /// tract.
    Tract,
    /// The int8 micro engine.
    Micro,
}

/// `[pipeline.source]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// A folder of PNG/JPEG files in file-name order.
    Images {
        /// The folder.
        path: PathBuf,
        /// Pace like a camera at this rate (newest frame wins when processing lags).
        fps: Option<f32>,
        /// Start over after the last file.
        #[serde(default, rename = "loop")]
        looping: bool,
    },
    /// A WAV file.
    Wav {
        /// The file.
        path: PathBuf,
        /// Convert a recording made at another rate to the model's (default false: such a file
        /// is an error naming both rates).
        #[serde(default)]
        resample: bool,
        /// Play the file over and over at real time, like a microphone (default false: read it
        /// once, faster than real time, and end).
        #[serde(default, rename = "loop")]
        looping: bool,
    },
    /// A camera; unset fields come from the board profile, else 0, 640x480, 15 fps, YUYV.
    Camera {
        /// Index (`/dev/videoN`).
        index: Option<u32>,
        /// Requested width.
        width: Option<u32>,
        /// Requested height.
        height: Option<u32>,
        /// Requested frame rate.
        fps: Option<u32>,
        /// `yuyv`, `mjpeg`, `nv12`, `gray`, `rgb`.
        format: Option<CameraFormatKind>,
    },
    /// An RTSP camera (H.264).
    Rtsp {
        /// `rtsp://host[:port]/path`; credentials written in it are taken out and never shown.
        url: String,
        /// `tcp` (default: interleaved on the RTSP connection) or `udp` (LAN only).
        #[serde(default)]
        transport: RtspTransport,
        /// User name (else the URL's).
        username: Option<String>,
        /// File holding the password (relative to this config).
        password_file: Option<PathBuf>,
        /// Environment variable holding the password.
        password_env: Option<String>,
        /// Seconds without video after which the stream counts as lost (default 10).
        timeout_s: Option<Seconds<HOUR>>,
    },
    /// An HTTP camera: an MJPEG stream (`multipart/x-mixed-replace`) or a JPEG snapshot URL.
    Http {
        /// `http://` or `https://` URL.
        url: String,
        /// Snapshot URLs: polls per second (default 5); MJPEG streams run at the camera's rate.
        fps: Option<f32>,
        /// User name for HTTP basic authentication (else the URL's).
        username: Option<String>,
        /// File holding the password (relative to this config).
        password_file: Option<PathBuf>,
        /// Environment variable holding the password.
        password_env: Option<String>,
        /// Seconds without data after which the connection counts as lost (default 10).
        timeout_s: Option<Seconds<HOUR>>,
    },
    /// A video file: H.264 in MP4 or Matroska.
    Video {
        /// The file.
        path: PathBuf,
        /// Pace at the file's frame rate like a camera (default true); false: as fast as the
        /// pipeline goes, nothing dropped.
        #[serde(default = "default_true")]
        realtime: bool,
        /// Start over after the last frame (default false: the run ends, exit 0).
        #[serde(default, rename = "loop")]
        looping: bool,
    },
    /// A microphone; unset fields come from the board profile.
    Mic {
        /// Device name or part of it (default: the board's, else the default input).
        device: Option<String>,
        /// Sample rate (default: the board's, else the model's).
        rate: Option<u32>,
        /// Stop after this many seconds (default: never).
        duration_s: Option<Seconds<YEAR>>,
        /// Capture at `rate` and convert to the model's rate when they differ (default false).
        #[serde(default)]
        resample: bool,
    },
}

impl Source {
    /// A network source's URL with its credentials: the URL's syntax and scheme, the password
    /// file (read) or environment variable (set). Connects to nothing. Errors never show a
    /// password.
    pub fn stream_url(&self) -> Result<StreamUrl> {
        let (url, schemes, username, password_file, password_env): (_, &[&str], _, _, _) = match self {
            Source::Rtsp { url, username, password_file, password_env, .. } => {
                (url, &["rtsp"], username, password_file, password_env)
            }
            Source::Http { url, username, password_file, password_env, .. } => {
                (url, &["http", "https"], username, password_file, password_env)
            }
            _ => bail!("not a network source"),
        };
        let password = match (password_file, password_env) {
            (Some(_), Some(_)) => bail!("password_file and password_env: give one"),
            (Some(file), None) => Some(read_password(file, "password_file")?),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                anyhow::anyhow!("password_env: the environment variable {var} is not set (or not UTF-8)")
            })?),
            (None, None) => None,
        };
        let parsed = StreamUrl::parse(url, schemes, username.as_deref(), password.as_deref())?;
        if password.is_some() && parsed.username().is_none() {
            bail!("a password is given but no username (set username, or put it in the URL)");
        }
        Ok(parsed)
    }
}

/// A password file's content without its final line break; errors name `what` and the file,
/// never the content.
pub fn read_password(file: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{what} {}", file.display()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// A broker written as a URL (`mqtt://user:password@host:1883`) or with credentials
/// (`user@host`) where a host name belongs: its parts, to suggest the keys that hold them. The
/// password is never kept, only whether there was one.
#[derive(Debug, Clone, PartialEq)]
struct BrokerUrl {
    /// `mqtt`, `mqtts`, ... (lowercase), if written.
    scheme: Option<String>,
    /// The user name, if written.
    username: Option<String>,
    /// A password was written (after the user name).
    password: bool,
    /// The host name or address (an IPv6 address without brackets).
    host: String,
    /// The port as written, if any.
    port: Option<String>,
}

impl BrokerUrl {
    /// `None` when `text` has neither a scheme nor a user part (a plain host, or `host:port`).
    fn parse(text: &str) -> Option<BrokerUrl> {
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None if text.contains('@') => (None, text),
            None => return None,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((name, _)) => (Some(name.to_string()), true),
                None => (Some(u.to_string()), false),
            },
            None => (None, false),
        };
        let (host, port) = match hostport.strip_prefix('[').and_then(|r| r.split_once(']')) {
            Some((addr, tail)) => (addr.to_string(), tail.strip_prefix(':').map(str::to_string)),
            None => match hostport.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p.to_string())),
                _ => (hostport.to_string(), None),
            },
        };
        let username = username.filter(|u| !u.is_empty());
        Some(BrokerUrl { scheme, username, password, host, port: port.filter(|p| !p.is_empty()) })
    }

    /// How an error names the value: as written when it holds no credentials, else not at all.
    fn shown(&self, text: &str) -> String {
        if self.username.is_some() || self.password || text.contains('@') {
            "(not shown: it holds credentials)".into()
        } else {
            format!("\"{text}\"")
        }
    }

    /// The keys that say the same: host (or a hosts entry), port, username, where the password
    /// goes, and tls_ca for a TLS scheme.
    fn suggestion(&self, entry: bool) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let port = self.port.as_deref().filter(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        let mut keys = vec![];
        match (entry, port) {
            (true, Some(p)) => keys.push(format!("\"{host}:{p}\" in hosts")),
            (true, None) => keys.push(format!("\"{host}\" in hosts")),
            (false, Some(p)) => keys.push(format!("host = \"{}\", port = {p}", self.host)),
            (false, None) => keys.push(format!("host = \"{}\"", self.host)),
        }
        if let Some(p) = self.port.as_deref().filter(|_| port.is_none()) {
            keys.push(format!("a port from 1 to 65535 (not `{p}`)"));
        }
        if let Some(u) = &self.username {
            keys.push(format!("username = \"{u}\""));
        }
        if self.password || self.username.is_some() {
            keys.push("the password in a file named by password_file = \"FILE\" (or in the LEPTON_MQTT_PASSWORD environment variable), never in the config".into());
        }
        if matches!(self.scheme.as_deref(), Some("mqtts" | "ssl" | "tls" | "wss" | "mqtt+ssl")) {
            keys.push("tls_ca = \"CA.pem\" for TLS (port 8883 unless given)".into());
        }
        keys.join(", ")
    }
}

/// A broker host is a name or an IP address, nothing more: no scheme, no port, no path.
fn check_host(host: &str) -> Result<()> {
    if host.is_empty() {
        bail!("empty; give the broker's host name or IP address");
    }
    if let Some(url) = BrokerUrl::parse(host) {
        bail!("a URL; write its parts as keys: {}", url.suggestion(false));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if let Some((name, port)) = host.rsplit_once(':') {
        bail!("host and port in one; write host = \"{name}\" and port = {port}");
    }
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !host.split('.').all(label_ok) {
        bail!("not a host name (letters, digits, `-`, dots) or an IP address");
    }
    Ok(())
}

fn default_stall() -> Seconds<DAY> {
    Seconds(30.0)
}

/// A day in seconds: the longest hold, stall, interval or snapshot period.
pub const DAY: u64 = 86_400;
/// An hour in seconds: the longest reconnection wait and network timeout.
pub const HOUR: u64 = 3_600;
/// A year in seconds: the longest microphone capture.
pub const YEAR: u64 = 365 * DAY;
/// MQTT 5's longest expiry interval (a four-byte integer).
pub const U32_MAX: u64 = u32::MAX as u64;
/// A minute in milliseconds: the longest blink phase.
pub const MINUTE_MS: u64 = 60_000;

/// A duration key's value in seconds (`hold_s = 2`, `stall_s = 0.5`): an integer or a float,
/// finite, from 0 to `MAX`. Checked as it is read, so an error names the key and its line, and
/// [`Seconds::duration`] never panics (`inf` or `1e300` would in `Duration::from_secs_f64`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Seconds<const MAX: u64>(f64);

/// A duration key's value in milliseconds (`blink_ms`), with the same rules as [`Seconds`].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Millis<const MAX: u64>(f64);

/// A duration key's value in days (`retain_days`), with the same rules as [`Seconds`].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Days<const MAX: u64>(f64);

/// Reads a finite number from 0 to `max` (integer or float) for a key in `unit`.
fn bounded<'de, D: serde::Deserializer<'de>>(d: D, max: u64, unit: &str) -> Result<f64, D::Error> {
    let x = f64::deserialize(d)?;
    if x.is_finite() && x >= 0.0 && x <= max as f64 {
        Ok(x)
    } else {
        let shown = if x.is_finite() && x.abs() >= 1e9 { format!("{x:e}") } else { x.to_string() };
        Err(serde::de::Error::custom(format!("{shown} {NOT_A_DURATION}: give {unit} from 0 to {max}")))
    }
}

/// What a duration error says, to find its key again ([`duration_key_line`]).
const NOT_A_DURATION: &str = "is not a duration here";

/// A duration error inside a tagged table (`[pipeline.source]`) is reported by the TOML reader at
/// the table's header: the line of the key whose value is out of bounds, found below `line` in the
/// same table, and that line's text.
fn duration_key_line(text: &str, line: usize, message: &str) -> Option<(usize, String)> {
    let max: f64 = message.rsplit("from 0 to ").next()?.trim().parse().ok()?;
    let lines: Vec<&str> = text.lines().collect();
    for (k, l) in lines.iter().enumerate().skip(line) {
        let l = l.trim();
        if l.starts_with('[') {
            return None;
        }
        let Some((_, value)) = l.split_once('=') else { continue };
        let value = value.split('#').next().unwrap_or("").trim();
        let Ok(v) = toml::from_str::<toml::Table>(&format!("v = {value}")) else { continue };
        let x = match v.get("v") {
            Some(toml::Value::Float(x)) => *x,
            Some(toml::Value::Integer(i)) => *i as f64,
            _ => continue,
        };
        if !(x.is_finite() && x >= 0.0 && x <= max) {
            return Some((k + 1, l.to_string()));
        }
    }
    None
}

macro_rules! duration_unit {
    ($t:ident, $unit:literal, $secs:expr) => {
        impl<const MAX: u64> $t<MAX> {
            /// The value, checked at construction to be finite and within 0..=MAX; `None` otherwise.
            pub fn new(x: f64) -> Option<Self> {
                (x.is_finite() && x >= 0.0 && x <= MAX as f64).then_some($t(x))
            }

            /// The number as written.
            pub fn get(self) -> f64 {
                self.0
            }

            /// As a `Duration` (cannot panic: the value is finite and bounded).
            pub fn duration(self) -> std::time::Duration {
                std::time::Duration::try_from_secs_f64(self.0 * $secs).unwrap_or(std::time::Duration::MAX)
            }
        }

        impl<'de, const MAX: u64> Deserialize<'de> for $t<MAX> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                bounded(d, MAX, $unit).map($t)
            }
        }

        impl<const MAX: u64> std::fmt::Display for $t<MAX> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

duration_unit!(Seconds, "seconds", 1.0);
duration_unit!(Millis, "milliseconds", 1e-3);
duration_unit!(Days, "days", 86_400.0);

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Config {
    /// Parses and checks a config file; errors name the key and line.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        Self::from_toml(&text, path)
    }

    /// Parses and checks a config's text; `path` names it in errors and anchors relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config> {
        let mut c: Config = toml::from_str(text).map_err(|e| {
            let mut message = lepton_runtime::manifest::toml_error(text, &e);
            let table_line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let at_header = |l: &usize| text.lines().nth(l - 1).is_some_and(|t| t.trim_start().starts_with('['));
            if let Some(line) = table_line.filter(at_header).filter(|_| e.message().contains(NOT_A_DURATION)) {
                if let Some((k, source)) = duration_key_line(text, line, e.message()) {
                    message = format!("line {k} (`{source}`): {}", e.message());
                }
            }
            anyhow::anyhow!("{}: {message}", path.display())
        })?;
        // Paths are resolved against the config's folder, made absolute, so that messages show
        // the file the daemon looked for, whatever the working directory.
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.is_relative() {
            std::env::current_dir().map_or_else(|_| base.to_path_buf(), |cwd| cwd.join(base))
        } else {
            base.to_path_buf()
        };
        c.resolve(&base);
        c.check_text(path, text)?;
        Ok(c)
    }

    fn resolve(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        // A board given as a profile file is relative to the config, like every other path.
        if let Some(b) = &mut self.device.board {
            if b.ends_with(".toml") && Path::new(b.as_str()).is_relative() {
                *b = base.join(&*b).display().to_string();
            }
        }
        for p in &mut self.pipelines {
            abs(&mut p.model);
            match &mut p.source {
                Source::Images { path, .. } | Source::Wav { path, .. } | Source::Video { path, .. } => abs(path),
                Source::Rtsp { password_file: Some(p), .. } | Source::Http { password_file: Some(p), .. } => abs(p),
                _ => {}
            }
        }
        self.security.trusted_keys.iter_mut().for_each(abs);
        if let Some(w) = &mut self.web {
            abs(&mut w.database);
            if let Some(p) = &mut w.token_file {
                abs(p);
            }
        }
        if let Some(m) = &mut self.mqtt {
            if let Some(p) = &mut m.tls_ca {
                abs(p);
            }
            if let Some(p) = &mut m.password_file {
                abs(p);
            }
        }
    }

    /// Checks values that the types cannot (errors without line numbers; [`Config::from_toml`]
    /// gives them).
    pub fn check(&self, path: &Path) -> Result<()> {
        self.check_text(path, "")
    }

    /// Checks values that the types cannot; `text` (the file's) gives the lines of keys. Every
    /// pipeline is checked, and the error lists every pipeline's problems, one per line.
    fn check_text(&self, path: &Path, text: &str) -> Result<()> {
        let f = path.display();
        if self.device.stall_s.get() <= 0.0 {
            bail!("{f}: device.stall_s = {}: give a number of seconds above 0", self.device.stall_s);
        }
        if self.security.require_signed && self.security.trusted_keys.is_empty() {
            bail!("{f}: security.require_signed = true needs a key in security.trusted_keys (a NAME.pub from `lepton-convert keygen`)");
        }
        if !valid_id(&self.device.id) {
            bail!("{f}: device.id `{}`: use letters, digits, `-` and `_` (it is part of every topic)", self.device.id);
        }
        if let Some(m) = &self.mqtt {
            if m.qos > 1 {
                bail!("{f}: mqtt.qos = {}: use 0 or 1", m.qos);
            }
            if m.queue_capacity == 0 {
                bail!("{f}: mqtt.queue_capacity must be > 0");
            }
            let line = key_line(text, "mqtt", None, if m.host.is_some() { "host" } else { "hosts" });
            m.check().map_err(|e| anyhow::anyhow!("{f}: {}{e}", at_line(line)))?;
            if m.topic_prefix.is_empty() || m.topic_prefix.contains(['#', '+']) {
                bail!("{f}: mqtt.topic_prefix `{}`: not empty, no `#` or `+`", m.topic_prefix);
            }
            for p in m.tls_ca.iter().chain(m.password_file.iter()) {
                if !p.is_file() {
                    bail!("{f}: mqtt: file {} does not exist", p.display());
                }
            }
        }
        if let Some(w) = &self.web {
            w.addr().map_err(|e| anyhow::anyhow!("{f}: {e}"))?;
            w.token().map_err(|e| anyhow::anyhow!("{f}: {e:#}"))?;
            if w.retain_days.get() <= 0.0 {
                bail!("{f}: web.retain_days = {}: give a number of days above 0", w.retain_days);
            }
            if w.retain_mb == 0 {
                bail!("{f}: web.retain_mb must be > 0");
            }
            if w.session_days.duration() < std::time::Duration::from_secs(1) {
                bail!("{f}: web.session_days = {}: give a number of days above 0", w.session_days);
            }
        }
        let ha = &self.homeassistant.prefix;
        if ha.is_empty() || ha.contains(['#', '+']) || ha.starts_with('/') || ha.ends_with('/') {
            bail!("{f}: homeassistant.prefix `{ha}`: not empty, no `#` or `+`, no leading or trailing `/`");
        }
        if self.pipelines.is_empty() {
            bail!("{f}: no [[pipeline]]: add at least one (see README, Configuration)");
        }
        let mut names = std::collections::HashSet::new();
        let mut errors = vec![];
        for (k, p) in self.pipelines.iter().enumerate() {
            if !names.insert(&p.name) {
                errors.push(format!("{f}: two pipelines are named `{}`", p.name));
                continue;
            }
            if let Err(e) = p.check(k, text) {
                errors.push(format!("{f}: {e}"));
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => bail!("{}", errors[0]),
            n => bail!("{n} pipelines have errors:\n  {}", errors.join("\n  ")),
        }
    }
}

/// `line N: ` for an error at a key's line, or nothing when it is not known.
fn at_line(line: Option<usize>) -> String {
    line.map_or(String::new(), |n| format!("line {n}: "))
}

/// The line (from 1) of `key = ...` in `table` (`mqtt`, `pipeline`, `pipeline.source`) of a
/// config's text; for `pipeline` tables, of the `nth` `[[pipeline]]` (from 0). Plain `key = value`
/// lines under table headers, as the README writes them; `None` for other layouts.
fn key_line(text: &str, table: &str, nth: Option<usize>, key: &str) -> Option<usize> {
    let mut current = String::new();
    let mut pipeline: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            current = name.trim().to_string();
            if current == "pipeline" {
                pipeline = Some(pipeline.map_or(0, |n| n + 1));
            }
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = name.trim().to_string();
        } else if current == table
            && (nth.is_none() || nth == pipeline)
            && l.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}

impl Pipeline {
    /// Checks one `[[pipeline]]` (the `k`th, from 0) as far as the config alone can; errors name
    /// it and, from `text`, the key's line.
    fn check(&self, k: usize, text: &str) -> Result<()> {
        let p = self;
        let line = |table: &str, key: &str| at_line(key_line(text, table, Some(k), key));
        let f = format!("pipeline `{}`", p.name);
        if !valid_id(&p.name) {
            bail!("{}{f}: name: use letters, digits, `-` and `_`", line("pipeline", "name"));
        }
        for (i, a) in p.alerts.iter().enumerate() {
            let at = format!("{f}, alert #{}", i + 1);
            if a.hold_s.get() < 0.001 {
                bail!("{at}: hold_s = {}: give seconds in (0, 86400]", a.hold_s);
            }
            if a.blink_ms.is_some_and(|[on, off]| on.get() < 1.0 || off.get() < 1.0) {
                bail!("{at}: blink_ms: both durations must be > 0 (omit blink_ms for a steady output)");
            }
        }
        if !p.model.is_file() {
            bail!("{}{f}: model {} does not exist", line("pipeline", "model"), p.model.display());
        }
        if let Some(s) = &p.snapshot {
            let at = format!("{f}, [pipeline.snapshot]");
            if s.on.is_some() && s.every_s.is_some() {
                bail!("{at}: give on = \"event\" or every_s, not both");
            }
            if s.every_s.is_some_and(|x| x.get() < 0.001) {
                bail!("{}{at}: every_s: give seconds in (0, 86400]", line("pipeline.snapshot", "every_s"));
            }
            if !(1..=100).contains(&s.quality) {
                bail!("{at}: quality = {}: give 1 to 100", s.quality);
            }
            if !(16..=8192).contains(&s.max_width) {
                bail!("{at}: max_width = {}: give 16 to 8192 pixels", s.max_width);
            }
            if matches!(p.source, Source::Wav { .. } | Source::Mic { .. }) {
                bail!("{at}: audio pipelines have no snapshots; remove the table");
            }
        }
        if !(0.0..=1.0).contains(&p.threshold) {
            bail!("{}{f}: threshold {} must be within 0..=1", line("pipeline", "threshold"), p.threshold);
        }
        let src = |key: &str| line("pipeline.source", key);
        match &p.source {
            Source::Images { path, fps, .. } => {
                if !path.is_dir() {
                    bail!("{}{f}: source.path {} is not a folder", src("path"), path.display());
                }
                if fps.is_some_and(|x| x.is_nan() || x <= 0.0) {
                    bail!("{}{f}: source.fps must be > 0", src("fps"));
                }
            }
            Source::Wav { path, .. } | Source::Video { path, .. } if !path.is_file() => {
                bail!("{}{f}: source.path {} does not exist", src("path"), path.display());
            }
            Source::Rtsp { .. } | Source::Http { .. } => {
                p.source.stream_url().map_err(|e| anyhow::anyhow!("{}{f}: source: {e:#}", src("url")))?;
                let (Source::Rtsp { timeout_s, .. } | Source::Http { timeout_s, .. }) = &p.source else {
                    return Ok(());
                };
                if timeout_s.is_some_and(|t| t.get() < 0.001) {
                    bail!("{}{f}: source.timeout_s: give seconds in (0, 3600]", src("timeout_s"));
                }
                if let Source::Http { fps: Some(fps), .. } = &p.source {
                    if !(*fps > 0.0 && *fps <= 120.0) {
                        bail!("{}{f}: source.fps = {fps}: give polls per second in (0, 120]", src("fps"));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("lepton.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "lepton-config-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(d.join("frames")).unwrap();
        std::fs::write(d.join("m.onnx"), b"x").unwrap();
        d
    }

    const GOOD: &str = r#"
[device]
id = "porch-cam"
[mqtt]
host = "127.0.0.1"
port = 1883
[[pipeline]]
name = "front"
model = "m.onnx"
[pipeline.source]
kind = "images"
path = "frames"
fps = 5
"#;

    #[test]
    fn web_section_defaults_paths_and_errors() {
        let d = dir();
        let c = Config::load(&write(&d, &format!("{GOOD}\n[web]\n"))).unwrap();
        let w = c.web.unwrap();
        assert_eq!(w.addr().unwrap(), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(w.database, d.join("lepton.db"), "relative to the config");
        assert!(Config::load(&write(&d, GOOD)).unwrap().web.is_none(), "no [web]: no page");
        let off = Config::load(&write(&d, &format!("{GOOD}\n[web]\nlisten = \"\"\n"))).unwrap();
        assert_eq!(off.web.unwrap().addr().unwrap(), None, "empty listen: no page");
        let err =
            |extra: &str| format!("{:#}", Config::load(&write(&d, &format!("{GOOD}\n[web]\n{extra}\n"))).unwrap_err());
        assert!(err("listen = \"localhost\"").contains("web.listen = \"localhost\""));
        assert!(err("token_file = \"nope\"").contains("web.token_file"));
        std::fs::write(d.join("short"), "abc\n").unwrap();
        let e = err("token_file = \"short\"");
        assert!(e.contains("at least 16 characters") && !e.contains("abc"), "{e}");
        assert!(err("retain_days = 0").contains("web.retain_days"));
        assert!(err("session_days = 0").contains("web.session_days"));
        assert!(err("session_days = inf").contains("session_days"));
        let w = Config::load(&write(&d, &format!("{GOOD}\n[web]\nsession_days = 0.5\nsecure_cookie = true\n")))
            .unwrap()
            .web
            .unwrap();
        assert_eq!((w.session_days.duration().as_secs(), w.secure_cookie), (43_200, true));
        assert_eq!((Web::default().session_days.duration().as_secs(), Web::default().secure_cookie), (86_400, false));
        assert!(err("colour = 1").contains("colour"));
    }

    #[test]
    fn parses_defaults_and_resolves_paths_next_to_the_file() {
        let d = dir();
        let c = Config::load(&write(&d, GOOD)).unwrap();
        let m = c.mqtt.as_ref().unwrap();
        assert_eq!((m.topic_prefix.as_str(), m.qos, m.queue_capacity, m.format), ("lepton", 1, 1000, Format::Json));
        assert_eq!(c.pipelines[0].threshold, 0.5);
        assert_eq!(c.pipelines[0].model, d.join("m.onnx"));
        assert!(matches!(c.pipelines[0].source, Source::Images { fps: Some(5.0), looping: false, .. }));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let d = dir();
        let e = Config::load(&write(&d, &GOOD.replace("port = 1883", "prot = 1883"))).unwrap_err().to_string();
        assert!(e.contains("line 6") && e.contains("prot"), "{e}");
        // An unknown key further down its table: its own line, not the table's.
        let e = Config::load(&write(&d, &GOOD.replace("fps = 5", "fps = 5\nlop = true"))).unwrap_err().to_string();
        assert!(e.contains("line 14 (`lop = true`)"), "{e}");
        let e = Config::load(&write(&d, &GOOD.replace("port = 1883", "port = \"x\""))).unwrap_err().to_string();
        assert!(e.contains("line 6") && e.contains("port"), "{e}");
        let e = Config::load(&write(&d, &GOOD.replace("m.onnx", "missing.onnx"))).unwrap_err().to_string();
        assert!(e.contains("missing.onnx") && e.contains("front"), "{e}");
        let e =
            Config::load(&write(&d, &GOOD.replace("kind = \"images\"", "kind = \"scanner\""))).unwrap_err().to_string();
        assert!(e.contains("scanner"), "{e}");
        let e = Config::load(&write(&d, &GOOD.replace("porch-cam", "porch cam"))).unwrap_err().to_string();
        assert!(e.contains("device.id"), "{e}");
    }

    #[test]
    fn a_cluster_is_a_list_of_nodes_and_the_protocol_is_3_1_1_or_5() {
        let d = dir();
        let with = |mqtt: &str| {
            let text = GOOD.replace("host = \"127.0.0.1\"\nport = 1883", mqtt);
            Config::load(&write(&d, &text)).map_err(|e| format!("{e:#}"))
        };
        let c = with("hosts = [\"node1:1884\", \"node2\", \"10.0.0.3:1885\", \"[::1]:1886\"]\nport = 1999").unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!(
            m.brokers(),
            vec![("node1".into(), 1884), ("node2".into(), 1999), ("10.0.0.3".into(), 1885), ("::1".into(), 1886)]
        );
        assert_eq!(m.brokers_text(), "node1:1884, node2:1999, 10.0.0.3:1885, ::1:1886");
        assert_eq!(
            (m.protocol(), m.detection_expiry_s.get(), m.session_expiry_s.get()),
            (Protocol::V311, 600.0, 3600.0)
        );
        let single = with("host = \"broker.lan\"\nprotocol = 5").unwrap().mqtt.unwrap();
        assert_eq!((single.brokers(), single.protocol()), (vec![("broker.lan".into(), 1883)], Protocol::V5));
        assert_eq!(with("host = \"b\"\nprotocol = \"3.1.1\"").unwrap().mqtt.unwrap().protocol(), Protocol::V311);
        let e = with("host = \"a\"\nhosts = [\"b\"]").unwrap_err();
        assert!(e.contains("both host and hosts"), "{e}");
        let e = with("topic_prefix = \"x\"").unwrap_err();
        assert!(e.contains("no broker") && e.contains("hosts = ["), "{e}");
        let e = with("hosts = [\"node1:99999\"]").unwrap_err();
        assert!(e.contains("mqtt.hosts entry \"node1:99999\""), "{e}");
        let e = with("hosts = [\"mqtt://node1\"]").unwrap_err();
        assert!(e.contains("mqtt.hosts entry"), "{e}");
        let e = with("host = \"b\"\nprotocol = 3").unwrap_err();
        assert!(e.contains("mqtt.protocol = 3") && e.contains("\"3.1.1\""), "{e}");
    }

    #[test]
    fn a_broker_host_is_a_name_or_address_only() {
        let d = dir();
        let host = |h: &str| Config::load(&write(&d, &GOOD.replace("\"127.0.0.1\"", &format!("\"{h}\""))));
        for ok in ["broker.lan", "mqtt-1", "10.0.0.2", "::1", "[fe80::1]", "localhost"] {
            host(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let e = host("mqtt://broker.lan:1884").unwrap_err().to_string();
        assert!(
            e.contains("mqtt.host") && e.contains("a URL") && e.contains("host = \"broker.lan\", port = 1884"),
            "{e}"
        );
        let e = host("mqtts://broker.lan").unwrap_err().to_string();
        assert!(e.contains("tls_ca"), "{e}");
        let e = host("127.0.0.1:18883").unwrap_err().to_string();
        assert!(e.contains("host = \"127.0.0.1\" and port = 18883"), "{e}");
        let e = host("my broker").unwrap_err().to_string();
        assert!(e.contains("not a host name"), "{e}");
    }

    #[test]
    fn credentials_in_a_broker_url_are_never_echoed_and_the_keys_are_suggested() {
        let d = dir();
        let with = |mqtt: &str| {
            let text = GOOD.replace("host = \"127.0.0.1\"\nport = 1883", mqtt);
            format!("{:#}", Config::load(&write(&d, &text)).unwrap_err())
        };
        let e = with("host = \"mqtt://cam:secret@broker.lan:1883\"");
        assert!(!e.contains("secret"), "{e}");
        for want in [
            "line 5",
            "host = \"broker.lan\", port = 1883",
            "username = \"cam\"",
            "password_file",
            "LEPTON_MQTT_PASSWORD",
        ] {
            assert!(e.contains(want), "`{want}` not in {e}");
        }
        assert!(!e.contains("host = \"cam\"") && !e.contains("port = secret"), "{e}");
        let e = with("host = \"mqtts://cam:s3cr3t@[fd00::5]:8884/\"");
        assert!(!e.contains("s3cr3t") && e.contains("host = \"fd00::5\", port = 8884") && e.contains("tls_ca"), "{e}");
        let e = with("host = \"cam:hunter2@broker.lan\"");
        assert!(!e.contains("hunter2") && e.contains("host = \"broker.lan\"") && e.contains("username"), "{e}");
        let e = with("hosts = [\"node1:1883\", \"mqtt://cam:topsecret@node2:1884\"]");
        assert!(!e.contains("topsecret") && e.contains("mqtt.hosts entry"), "{e}");
        assert!(e.contains("\"node2:1884\" in hosts") && e.contains("username = \"cam\""), "{e}");
    }

    #[test]
    fn every_duration_key_is_finite_bounded_and_named_with_its_line() {
        let d = dir();
        let load = |text: &str| Config::load(&write(&d, text)).map_err(|e| format!("{e:#}"));
        // Integers and floats alike.
        let c = load(&GOOD.replace("fps = 5", "fps = 5\n[pipeline.snapshot]\nevery_s = 60")).unwrap();
        assert_eq!(
            c.pipelines[0].snapshot.as_ref().unwrap().every_s.unwrap().duration(),
            std::time::Duration::from_secs(60)
        );
        let c = load(&GOOD.replace("[mqtt]", "stall_s = 0.5\n[mqtt]")).unwrap();
        assert_eq!(c.device.stall_s.duration(), std::time::Duration::from_millis(500));
        let device = |kv: &str| GOOD.replace("[mqtt]", &format!("{kv}\n[mqtt]"));
        let mqtt = |kv: &str| GOOD.replace("port = 1883", &format!("port = 1883\n{kv}"));
        let pipeline = |kv: &str| GOOD.replace("model = \"m.onnx\"", &format!("model = \"m.onnx\"\n{kv}"));
        let snapshot = |kv: &str| format!("{GOOD}[pipeline.snapshot]\n{kv}\n");
        let alert = |kv: &str| format!("{GOOD}[[pipeline.alert]]\nline = 17\n{kv}\n");
        let source = |kind: &str, kv: &str| {
            GOOD.replace("kind = \"images\"\npath = \"frames\"\nfps = 5", &format!("kind = \"{kind}\"\n{kv}"))
        };
        let web = |kv: &str| format!("{GOOD}[web]\n{kv}\n");
        type Place = Box<dyn Fn(&str) -> String>;
        let cases: Vec<(&str, Place)> = vec![
            ("stall_s", Box::new(device)),
            ("stats_interval_s", Box::new(device)),
            ("keepalive_s", Box::new(mqtt)),
            ("reconnect_max_s", Box::new(mqtt)),
            ("detection_expiry_s", Box::new(mqtt)),
            ("session_expiry_s", Box::new(mqtt)),
            ("hold_s", Box::new(pipeline)),
            ("every_s", Box::new(snapshot)),
            ("hold_s", Box::new(alert)),
            ("timeout_s", Box::new(move |kv| source("rtsp", &format!("url = \"rtsp://cam/s\"\n{kv}")))),
            ("timeout_s", Box::new(move |kv| source("http", &format!("url = \"http://cam/s\"\n{kv}")))),
            ("duration_s", Box::new(move |kv| source("mic", kv))),
            ("retain_days", Box::new(web)),
        ];
        for (key, place) in &cases {
            for bad in ["inf", "-inf", "nan", "1e300", "-1", "1e10"] {
                let text = place(&format!("{key} = {bad}"));
                let line = text.lines().position(|l| l.starts_with(&format!("{key} ="))).unwrap() + 1;
                let e = load(&text).expect_err(&format!("{key} = {bad} accepted"));
                assert!(e.contains(&format!("line {line} (`{key} = {bad}`)")), "{key} = {bad}: {e}");
            }
            load(&place(&format!("{key} = 1"))).unwrap_or_else(|e| panic!("{key} = 1: {e}"));
        }
        let e = load(&alert("blink_ms = [250, 1e300]")).unwrap_err();
        assert!(e.contains("blink_ms = [250, 1e300]") && e.contains("milliseconds"), "{e}");
        // The largest value each allows converts without a panic.
        let c = load(&mqtt("session_expiry_s = 4294967295\nkeepalive_s = 65535")).unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!(m.session_expiry_s.duration().as_secs(), u64::from(u32::MAX));
        assert!(load(&mqtt("keepalive_s = 65536")).unwrap_err().contains("keepalive_s"));
    }

    #[test]
    fn every_bad_pipeline_is_listed_with_the_resolved_path_and_the_key_line() {
        let d = dir();
        let second = "\n[[pipeline]]\nname = \"back\"\nmodel = \"gone/missing.onnx\"\n[pipeline.source]\nkind = \"images\"\npath = \"nowhere\"\n";
        let text = GOOD.replace("m.onnx", "absent.onnx") + second;
        let e = format!("{:#}", Config::load(&write(&d, &text)).unwrap_err());
        assert!(e.contains("2 pipelines have errors"), "{e}");
        let resolved = d.join("absent.onnx");
        assert!(e.contains(&format!("line 9: pipeline `front`: model {} does not exist", resolved.display())), "{e}");
        assert!(
            e.contains(&format!("line 17: pipeline `back`: model {}", d.join("gone/missing.onnx").display())),
            "{e}"
        );
    }
}
