//! `lepton run`: the pipelines of a config (or the bundled demo), an MQTT link (or an embedded
//! broker), stats, Home Assistant discovery, and a graceful stop on SIGINT/SIGTERM.

use crate::alert;
use crate::board::{Board, CameraDefaults};
use crate::broker;
use crate::config::{self, Config, EngineKind, Format, Source};
use crate::homeassistant::{self, PipelineEntities};
use crate::mqtt::{ClientOptions, Link, LinkOptions, Meta};
use crate::sink::{now_ms, rfc3339, DaemonSink, SharedStatus, SinkOptions};
use crate::snapshot::Snapshotter;
use crate::topics::Topics;
use crate::watchdog;
use crate::web::{self, history, live};
use anyhow::{bail, Context, Result};
use lepton_runtime::engine::EngineChoice;
use lepton_runtime::image::Image;
use lepton_runtime::manifest::Manifest;
use lepton_runtime::pipeline::{AudioPipeline, Pipeline};
use lepton_runtime::signature::{self, PublicKey};
use lepton_runtime::source::camera::{self, CameraFormatKind, CameraOptions};
use lepton_runtime::source::http::{self, HttpOptions};
use lepton_runtime::source::latest::{Health, LiveSource};
use lepton_runtime::source::mic::{MicOptions, MicSource};
use lepton_runtime::source::retain::{FrameRing, Retained};
use lepton_runtime::source::rtsp::{self, RtspOptions};
use lepton_runtime::source::video::{VideoOptions, VideoSource};
use lepton_runtime::source::{AudioSource, Frame, FrameSource, ImageSource, ImageSourceOptions, Resampled, WavSource};
use lepton_runtime::Model;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    fn check(&self, bytes: &[u8], path: &Path) -> Result<()> {
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

/// Camera settings: the config's values, else the board profile's, else 0, 640x480, 15 fps, YUYV.
pub fn camera_options(config: &CameraDefaults, board: &CameraDefaults) -> CameraOptions {
    CameraOptions {
        index: config.index.or(board.index).unwrap_or(0),
        width: config.width.or(board.width).unwrap_or(640),
        height: config.height.or(board.height).unwrap_or(480),
        fps: config.fps.or(board.fps).unwrap_or(15),
        format: config.format.or(board.format).unwrap_or(CameraFormatKind::Yuyv),
    }
}

/// Peak resident memory of this process so far, in MiB (Linux `VmHWM`).
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Compares the peak memory after loading the models with the board's budget: `Err` when over.
pub fn check_memory_budget(board: Option<&Board>) -> Result<Option<String>> {
    let (Some(b), Some(peak)) = (board, peak_memory_mib()) else { return Ok(None) };
    let Some(budget) = b.memory_budget_mb else { return Ok(None) };
    let line = format!("peak memory {peak:.0} MiB of board {}'s {budget} MiB budget", b.name);
    if peak > budget as f64 {
        bail!("{line}: over budget; use smaller or int8 models, fewer pipelines, or a bigger board");
    }
    Ok(Some(line))
}

fn choice(e: EngineKind) -> EngineChoice {
    match e {
        EngineKind::Auto => EngineChoice::Auto,
        EngineKind::Tract => EngineChoice::Tract,
        EngineKind::Micro => EngineChoice::Micro,
    }
}

/// Loads a plan's model: the bytes read once, checked against `[security]`, then loaded.
pub fn load_model(plan: &Plan, trust: &Trust) -> Result<Model> {
    Ok(match &plan.model {
        ModelRef::File(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("{}", p.display()))?;
            trust.check(&bytes, p)?;
            Model::from_bytes_with(&bytes, p, choice(plan.engine))?
        }
        ModelRef::Bundled(bytes, name) => Model::from_bytes(bytes, name)?,
    })
}

fn model_name(plan: &Plan) -> String {
    match &plan.model {
        ModelRef::File(p) => {
            p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
        }
        ModelRef::Bundled(_, name) => name.rsplit('/').next().unwrap_or(name).to_string(),
    }
}

/// The model as a user names it: its path, or the bundled name.
fn model_label(plan: &Plan) -> String {
    match &plan.model {
        ModelRef::File(p) => p.display().to_string(),
        ModelRef::Bundled(_, name) => name.to_string(),
    }
}

/// A pipeline that passed every check `run` can make before capturing.
pub struct Checked {
    /// The pipeline.
    pub plan: Plan,
    /// Its model, loaded.
    pub model: Model,
    /// The model's manifest.
    pub manifest: Manifest,
    /// Its alert outputs: (chip, line), each present.
    pub lines: Vec<(String, u32)>,
}

/// Checks one pipeline as far as it can be without capturing or connecting: the model loads and
/// carries a manifest, the source suits the model (kind; a WAV file's sample rate), the alert
/// labels are the model's and their GPIO chips and lines exist. `lepton check` and the start of
/// `lepton run` make the same checks, before anything is published.
pub fn check_plan(plan: Plan, board: Option<&Board>, trust: &Trust) -> Result<Checked> {
    let at = format!("pipeline `{}`", plan.name);
    let model = load_model(&plan, trust).with_context(|| at.clone())?;
    let Some(manifest) = model.manifest().cloned() else {
        bail!(
            "{at}: {} has no manifest; embed one with `lepton-convert pack` (README, \"Model manifest\")",
            model_label(&plan)
        );
    };
    let task = manifest.task;
    let takes = if task.is_vision() {
        "pictures: use an images, camera, rtsp, http or video source"
    } else if task.is_audio() {
        "audio: use a wav or mic source"
    } else {
        "tensors, which no source delivers: pack a manifest with task classify, detect, keyword or vad"
    };
    let suits = match &plan.source {
        SourceRef::Pictures(_)
        | SourceRef::Config(
            Source::Images { .. }
            | Source::Camera { .. }
            | Source::Rtsp { .. }
            | Source::Http { .. }
            | Source::Video { .. },
        ) => task.is_vision(),
        SourceRef::Recording(..) | SourceRef::Config(Source::Wav { .. } | Source::Mic { .. }) => task.is_audio(),
    };
    if !suits {
        bail!(
            "{at}: {} is a {} model, which takes {takes} (not {})",
            model_label(&plan),
            task.name(),
            source_name(&plan.source)
        );
    }
    if let SourceRef::Config(Source::Video { path, .. }) = &plan.source {
        // The container and the codec, as the source will open them (nothing decoded): a file it
        // would refuse is refused here, before the device goes online.
        lepton_runtime::source::video::inspect(path).with_context(|| at.clone())?;
    }
    if task.is_audio() {
        let rate = manifest.audio.as_ref().map_or(16000, |a| a.sample_rate);
        let (from, resample, what) = match &plan.source {
            SourceRef::Config(Source::Wav { path, resample, .. }) => (
                Some(WavSource::open(path).with_context(|| at.clone())?.sample_rate()),
                *resample,
                path.display().to_string(),
            ),
            SourceRef::Config(Source::Mic { rate: r, resample, .. }) => (*r, *resample, "the microphone's rate".into()),
            _ => (None, false, String::new()),
        };
        if let Some(from) = from.filter(|&f| f != rate && !resample) {
            bail!(
                "{at}: {what} is {from} Hz but the model takes {rate} Hz: set resample = true in [pipeline.source] to convert it (or convert the file: sox in.wav -r {rate} out.wav)"
            );
        }
    }
    if plan.snapshot.is_some() && !task.is_vision() {
        bail!("{at}: a {} model hears audio: [pipeline.snapshot] is for vision pipelines; remove it", task.name());
    }
    let lines = alert::check(&plan.name, &plan.alerts, board, &manifest.labels)?;
    Ok(Checked { plan, model, manifest, lines })
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

/// Frames from pictures, a camera, a network camera or a video file.
enum Frames {
    Pictures(ImageSource),
    /// A camera, an RTSP or an HTTP camera.
    Live(LiveSource),
    Video(Box<VideoSource>),
}

impl Frames {
    fn inner(&mut self) -> &mut dyn FrameSource {
        match self {
            Frames::Pictures(s) => s,
            Frames::Live(s) => s,
            Frames::Video(s) => s.as_mut(),
        }
    }
    fn inner_ref(&self) -> &dyn FrameSource {
        match self {
            Frames::Pictures(s) => s,
            Frames::Live(s) => s,
            Frames::Video(s) => s.as_ref(),
        }
    }
}

impl Frames {
    /// A live source's connection state.
    fn health(&self) -> Option<Health> {
        match self {
            Frames::Live(s) => Some(s.health()),
            Frames::Pictures(_) | Frames::Video(_) => None,
        }
    }
}

impl FrameSource for Frames {
    fn next_frame(&mut self) -> lepton_runtime::error::Result<Option<Frame<'_>>> {
        self.inner().next_frame()
    }
    fn dropped(&self) -> u64 {
        self.inner_ref().dropped()
    }
    fn outages(&self) -> u64 {
        self.inner_ref().outages()
    }
    fn own_timeline(&self) -> bool {
        self.inner_ref().own_timeline()
    }
}

/// Opens a vision pipeline's source (network sources start connecting in the background).
fn open_frames(
    source: SourceRef,
    board_camera: &CameraDefaults,
    stoppers: &Stoppers,
    stopping: &AtomicBool,
) -> Result<Frames> {
    Ok(match source {
        SourceRef::Pictures(images) => {
            Frames::Pictures(ImageSource::from_images(images, ImageSourceOptions::default()))
        }
        SourceRef::Config(Source::Images { path, fps, looping }) => {
            Frames::Pictures(ImageSource::open(&path, ImageSourceOptions { fps, looping, preload: looping })?)
        }
        SourceRef::Config(Source::Camera { index, width, height, fps, format }) => {
            let asked = CameraDefaults { index, width, height, fps, format };
            let cam = camera::open(camera_options(&asked, board_camera))?;
            register(stoppers, stopping, cam.stopper());
            Frames::Live(cam)
        }
        SourceRef::Config(ref s @ Source::Rtsp { transport, timeout_s, .. }) => {
            let mut o = RtspOptions::new(s.stream_url()?);
            o.transport = transport;
            if let Some(t) = timeout_s {
                o.timeout = t.duration();
            }
            let src = rtsp::open(o)?;
            register(stoppers, stopping, src.stopper());
            Frames::Live(src)
        }
        SourceRef::Config(ref s @ Source::Http { fps, timeout_s, .. }) => {
            let mut o = HttpOptions::new(s.stream_url()?);
            if let Some(f) = fps {
                o.fps = f;
            }
            if let Some(t) = timeout_s {
                o.timeout = t.duration();
            }
            let src = http::open(o)?;
            register(stoppers, stopping, src.stopper());
            Frames::Live(src)
        }
        SourceRef::Config(Source::Video { path, realtime, looping }) => {
            Frames::Video(Box::new(VideoSource::open(&path, VideoOptions { realtime, looping })?))
        }
        other => bail!("an image model cannot take {} (checked at start)", source_name(&other)),
    })
}

/// Samples from a WAV file or a microphone.
enum Samples {
    Wav(WavSource),
    Mic(MicSource),
}

impl AudioSource for Samples {
    fn sample_rate(&self) -> u32 {
        match self {
            Samples::Wav(s) => s.sample_rate(),
            Samples::Mic(s) => s.sample_rate(),
        }
    }
    fn read(&mut self, buf: &mut [f32]) -> lepton_runtime::error::Result<usize> {
        match self {
            Samples::Wav(s) => s.read(buf),
            Samples::Mic(s) => s.read(buf),
        }
    }
    fn overruns(&self) -> u64 {
        match self {
            Samples::Wav(s) => s.overruns(),
            Samples::Mic(s) => s.overruns(),
        }
    }
    fn name(&self) -> Option<&str> {
        match self {
            Samples::Wav(s) => s.name(),
            Samples::Mic(s) => s.name(),
        }
    }
}

/// Ways to stop every pipeline, registered as they start.
type Stoppers = Arc<Mutex<Vec<Box<dyn Fn() + Send + Sync>>>>;

fn register(stoppers: &Stoppers, stopping: &AtomicBool, f: impl Fn() + Send + Sync + 'static) {
    if stopping.load(Ordering::Relaxed) {
        f();
    }
    stoppers.lock().unwrap_or_else(|p| p.into_inner()).push(Box::new(f));
}

/// Runs one checked pipeline to its end (or until stopped).
fn run_pipeline(
    checked: Checked,
    sink: DaemonSink,
    ring: Option<FrameRing>,
    board: Option<Board>,
    stoppers: Stoppers,
    stopping: Arc<AtomicBool>,
) -> Result<()> {
    let Checked { plan, model, manifest, .. } = checked;
    let cam = board.as_ref().map(|b| b.camera.clone()).unwrap_or_default();
    let mic_defaults = board.as_ref().map(|b| b.mic.clone()).unwrap_or_default();
    let model_path = PathBuf::from(model_name(&plan));
    if manifest.task.is_vision() {
        let frames = open_frames(plan.source, &cam, &stoppers, &stopping)?;
        sink.status().lock().unwrap_or_else(|p| p.into_inner()).source = frames.health();
        let stages = model.into_vision_stages()?;
        // With snapshots, the frames are also kept for the sink to picture.
        let frames = Retained::new(frames, ring);
        let mut p = Pipeline::new(frames, stages.pre, stages.engine, stages.post, sink);
        let flag = p.stop_flag();
        register(&stoppers, &stopping, move || flag.store(true, Ordering::Relaxed));
        p.run()?;
        return Ok(());
    }
    let rate = manifest.audio.as_ref().map_or(16000, |a| a.sample_rate);
    let samples = match plan.source {
        SourceRef::Recording(bytes, name) => Samples::Wav(WavSource::from_bytes(bytes, name)?),
        SourceRef::Config(Source::Wav { path, looping, .. }) => {
            let wav = WavSource::open(&path)?;
            Samples::Wav(if looping { wav.looping() } else { wav })
        }
        SourceRef::Config(Source::Mic { device, rate: r, duration_s, .. }) => {
            let mic = MicSource::open(&MicOptions {
                device: device.or(mic_defaults.device),
                rate: r.or(mic_defaults.rate).unwrap_or(rate),
                duration_s: duration_s.map(config::Seconds::get),
            })?;
            register(&stoppers, &stopping, mic.stopper());
            Samples::Mic(mic)
        }
        other => bail!("an audio model cannot take {} (checked at start)", source_name(&other)),
    };
    if samples.sample_rate() != rate {
        tracing::info!("pipeline {}: resampling {} Hz to the model's {rate} Hz", plan.name, samples.sample_rate());
    }
    let samples = Resampled::new(samples, rate)?;
    let engine = model.into_engine()?;
    let mut p = AudioPipeline::new(samples, engine, sink, &manifest, &model_path)?;
    let flag = p.stop_flag();
    register(&stoppers, &stopping, move || flag.store(true, Ordering::Relaxed));
    let lost = p.run()?.samples_lost;
    if lost > 0 {
        println!(
            "{}: {lost} audio samples lost ({:.2} s): the source delivered faster than the pipeline consumed",
            plan.name,
            lost as f64 / f64::from(rate)
        );
    }
    Ok(())
}

fn link_options(device: &str, m: &config::Mqtt, topics: &Topics) -> Result<LinkOptions> {
    let password = match (&m.password_file, std::env::var("LEPTON_MQTT_PASSWORD")) {
        (Some(f), _) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("mqtt.password_file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, Ok(p)) => Some(p),
        (None, Err(_)) => None,
    };
    let credentials = match (&m.username, password) {
        (Some(u), p) => Some((u.clone(), p.unwrap_or_default())),
        (None, Some(_)) => bail!("mqtt: a password is set but no mqtt.username"),
        (None, None) => None,
    };
    let tls_ca = m
        .tls_ca
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("mqtt.tls_ca {}", p.display())))
        .transpose()?;
    Ok(LinkOptions {
        brokers: m.brokers(),
        client: ClientOptions {
            client_id: m.client_id.clone().unwrap_or_else(|| format!("lepton-{device}")),
            credentials,
            tls_ca,
            keepalive: m.keepalive_s.duration(),
            protocol: m.protocol(),
            session_expiry: m.session_expiry_s.duration(),
            max_packet: crate::mqtt::MAX_PACKET,
            inflight: crate::mqtt::INFLIGHT,
            will: (topics.status(), b"offline".to_vec()),
        },
        // Whole seconds on the wire; a fraction rounds up (never to 0, which would mean never).
        detection_expiry_s: (m.detection_expiry_s.get() > 0.0).then(|| m.detection_expiry_s.get().ceil() as u32),
        reconnect_max: m.reconnect_max_s.duration().max(Duration::from_secs(1)),
        qos: if m.qos == 0 { rumqttc::QoS::AtMostOnce } else { rumqttc::QoS::AtLeastOnce },
        capacity: m.queue_capacity,
        status_topic: topics.status(),
    })
}

/// Publishes the stats message every `interval` until `stop`.
fn stats_loop(
    link: Link,
    topics: Topics,
    device: String,
    statuses: Vec<(String, SharedStatus)>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let mut last = Instant::now();
    let mut prev: Vec<u64> = vec![0; statuses.len()];
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() < interval {
            continue;
        }
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        let mut pipelines = serde_json::Map::new();
        for (k, (name, status)) in statuses.iter().enumerate() {
            let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
            let fps = (s.processed - prev[k]) as f64 / dt;
            prev[k] = s.processed;
            let (p50, p99) = (s.inference.percentile(50.0), s.inference.percentile(99.0));
            let mut entry = json!({"fps": (fps * 100.0).round() / 100.0, "inference_p50_ms": p50.as_secs_f64() * 1e3, "inference_p99_ms": p99.as_secs_f64() * 1e3,
                       "processed": s.processed, "dropped": s.dropped, "published": s.messages, "finished": s.finished});
            if s.snapshots > 0 || s.snapshots_dropped > 0 {
                entry["snapshots"] = json!(s.snapshots);
                entry["snapshots_dropped"] = json!(s.snapshots_dropped);
            }
            if let Some(h) = &s.source {
                entry["source_outages"] = json!(h.outages());
                entry["source_connected"] = json!(!h.down());
                let (n, took) = h.decoding();
                if n > 0 {
                    entry["source_decoded"] = json!(n);
                    entry["decode_mean_ms"] = json!(took.as_secs_f64() * 1e3 / n as f64);
                }
            }
            pipelines.insert(name.clone(), entry);
        }
        let l = link.stats();
        let msg = json!({
            "device": device, "ts": rfc3339(now_ms()), "uptime_s": started.elapsed().as_secs(), "pipelines": pipelines,
            "queue_depth": l.queue_depth, "messages_delivered": l.delivered, "messages_dropped": l.dropped, "connections": l.connections,
            "broker": link.broker(), "failovers": l.failovers, "failover_ms": l.failover_ms, "replayed": l.replayed,
        });
        link.publish(&topics.stats(), msg.to_string().into_bytes(), false, Meta::JSON);
    }
}

/// Exit code of a run that ended but could not deliver everything it produced (the broker was
/// unreachable at the end, or the offline queue overflowed).
pub const EXIT_UNDELIVERED: u8 = 1;

/// Runs everything until the pipelines end or a signal stops them. Every check that can fail
/// before capturing (models, manifests, sources, alert lines, board) runs first: a config that
/// cannot run exits 2 before the device announces itself online.
pub fn run(setup: Setup) -> Result<ExitCode> {
    setup.apply_board();
    let mut loaded = vec![];
    for plan in setup.plans {
        let checked = check_plan(plan, setup.board.as_ref(), &setup.trust)?;
        let (engine, kernels) = checked.model.engine_name();
        tracing::info!(
            "pipeline {}: {} on {engine}{}",
            checked.plan.name,
            model_label(&checked.plan),
            kernels.map_or(String::new(), |k| format!(" ({k} kernels)"))
        );
        let alerts =
            alert::start(&checked.plan.name, &checked.plan.alerts, setup.board.as_ref(), &checked.manifest.labels)?;
        for a in &alerts {
            tracing::info!("pipeline {}: alert output on {}", checked.plan.name, a.name);
        }
        loaded.push((checked, alerts));
    }
    match check_memory_budget(setup.board.as_ref()) {
        Ok(Some(line)) => tracing::info!("{line}"),
        Ok(None) => {}
        Err(e) => tracing::warn!("{e:#}"),
    }
    let (mqtt, embedded) = match setup.broker {
        Broker::External(m) => (*m, false),
        Broker::Embedded => {
            let port = broker::start()?;
            println!("embedded MQTT broker on 127.0.0.1:{port} (watch with: lepton-watch --port {port})");
            let m: config::Mqtt =
                toml::from_str(&format!("host = \"127.0.0.1\"\nport = {port}")).context("embedded broker settings")?;
            (m, true)
        }
    };
    let topics = Topics::new(&mqtt.topic_prefix, &setup.device);
    // The device page's address and history are taken before anything is published, so that a
    // port in use or an unwritable database is an error at start.
    let web = match &setup.web {
        Some(w) => {
            let listener = web::bind(w.listen, w.search)?;
            let history = history::History::open(&w.database, w.retention)?;
            Some((listener, history))
        }
        None => None,
    };
    let link = Link::start(link_options(&setup.device, &mqtt, &topics)?)?;
    let stopping = Arc::new(AtomicBool::new(false));
    let stoppers: Stoppers = Arc::new(Mutex::new(vec![]));
    {
        let (stopping, stoppers) = (Arc::clone(&stopping), Arc::clone(&stoppers));
        ctrlc::set_handler(move || {
            if stopping.swap(true, Ordering::Relaxed) {
                eprintln!("second signal: exiting now");
                std::process::exit(130);
            }
            eprintln!("stopping: finishing the current frames and delivering queued messages…");
            for s in stoppers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                s();
            }
        })
        .context("installing the signal handler")?;
    }
    if setup.homeassistant.discovery {
        let entities: Vec<PipelineEntities> = loaded
            .iter()
            .map(|(c, _)| PipelineEntities {
                name: c.plan.name.clone(),
                labels: c.manifest.event_labels().into_iter().map(str::to_string).collect(),
                snapshot: c.plan.snapshot.is_some(),
                task: c.manifest.task,
            })
            .collect();
        // The device page's link: the address it is bound to (the port found, for the demo).
        let page = web.as_ref().and_then(|(l, _)| l.local_addr().ok()).map(homeassistant::page_url);
        let ha = &setup.homeassistant.prefix;
        let configs =
            homeassistant::configs(ha, &setup.device, &setup.device_name, &topics, &entities, page.as_deref());
        homeassistant::announce(&link, ha, &setup.device, configs);
    }
    let mut statuses = vec![];
    let mut watched = vec![];
    let mut threads = vec![];
    let mut pages = vec![];
    for (checked, alerts) in loaded {
        let plan = &checked.plan;
        let vision = checked.manifest.task.is_vision();
        // Frames are kept for snapshots and for the page's live view.
        let ring = (plan.snapshot.is_some() || (web.is_some() && vision)).then(FrameRing::default);
        // With the page on, every vision event start gets a picture in the history; it goes out on
        // MQTT only with [pipeline.snapshot].
        let history_only = config::Snapshot { on: None, every_s: None, annotate: true, quality: 80, max_width: 640 };
        let snapshot_config = plan.snapshot.as_ref().or((web.is_some() && vision).then_some(&history_only));
        let last = live::SharedLast::default();
        let (sink, status) = DaemonSink::new(SinkOptions {
            device: setup.device.clone(),
            pipeline: plan.name.clone(),
            model: model_name(plan),
            labels: checked.manifest.labels.clone(),
            threshold: plan.threshold,
            hold: plan.hold,
            print: plan.print,
            format: if embedded { Format::Json } else { mqtt.format },
            link: Some(link.clone()),
            topics: topics.clone(),
            alerts,
            snapshots: snapshot_config.zip(ring.clone()).map(|(c, r)| Snapshotter::new(c, r)),
            publish_snapshots: plan.snapshot.is_some(),
            keyword: checked.manifest.task == lepton_runtime::manifest::Task::Keyword,
            history: web.as_ref().and_then(|(_, h)| h.writer()),
            live: web.as_ref().map(|_| Arc::clone(&last)),
        });
        if web.is_some() {
            let (engine, kernels) = checked.model.engine_name();
            pages.push(web::PipelineInfo {
                name: plan.name.clone(),
                model: model_label(plan),
                engine: engine.to_string(),
                kernels: kernels.map(|k| k.name().to_string()),
                manifest: checked.manifest.clone(),
                source: web::source_text(&plan.source),
                threshold: plan.threshold,
                status: Arc::clone(&status),
                last: Arc::clone(&last),
                live: ring
                    .clone()
                    .filter(|_| vision)
                    .map(|r| live::Live::new(r, Arc::clone(&last), checked.manifest.labels.clone())),
            });
        }
        watched.push((plan.name.clone(), Arc::clone(&status)));
        statuses.push((plan.name.clone(), status));
        let (stoppers, stopping) = (Arc::clone(&stoppers), Arc::clone(&stopping));
        let name = plan.name.clone();
        let board = setup.board.clone();
        let t = std::thread::Builder::new()
            .name(format!("lepton-{name}"))
            .stack_size(8 << 20)
            .spawn(move || run_pipeline(checked, sink, ring, board, stoppers, stopping))
            .with_context(|| format!("starting pipeline `{name}`"))?;
        threads.push((name, t));
    }
    let server = match web {
        Some((listener, history)) => {
            let w = setup.web.as_ref().context("web settings")?;
            let device = web::DeviceInfo {
                id: setup.device.clone(),
                name: setup.device_name.clone(),
                board: setup.board.as_ref().map(|b| (b.name.clone(), b.description.clone())),
                broker: mqtt.brokers_text(),
                topics: format!("{}/{}/", mqtt.topic_prefix, setup.device),
            };
            let access = web::Access { token: w.token.clone(), session: w.session, secure_cookie: w.secure_cookie };
            let state = web::State::new(device, pages, link.clone(), Arc::clone(&history), access);
            let server = web::start(listener, Arc::new(state))?;
            let open = if w.token.is_some() { "token required" } else { "open, no token" };
            println!("device page on http://{} ({open}; event history in {})", server.addr, w.database.display());
            if w.token.is_none() && !server.addr.ip().is_loopback() {
                tracing::warn!(
                    "web.listen {}: the device page is reachable from the network without a token; set [web] token_file",
                    server.addr
                );
            }
            Some((server, history))
        }
        None => None,
    };
    watchdog::ready(threads.len());
    let watchdog_stop = Arc::new(AtomicBool::new(false));
    let watchdog = watchdog::start(watched, setup.stall, Arc::clone(&watchdog_stop));
    let stats_stop = Arc::new(AtomicBool::new(false));
    let stats = (!setup.stats_interval.is_zero()).then(|| {
        let (link, topics, device, stop) =
            (link.clone(), topics.clone(), setup.device.clone(), Arc::clone(&stats_stop));
        let interval = setup.stats_interval;
        std::thread::spawn(move || stats_loop(link, topics, device, statuses, interval, stop))
    });
    let mut failed = false;
    for (name, t) in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("error: pipeline `{name}`: {e:#}");
                failed = true;
            }
            Err(_) => {
                eprintln!("error: pipeline `{name}` panicked");
                failed = true;
            }
        }
    }
    if let Some((server, _)) = &server {
        if !stopping.load(Ordering::Relaxed) {
            println!(
                "the pipelines have ended; the device page stays up on http://{} until Ctrl-C (SIGINT or SIGTERM)",
                server.addr
            );
            while !stopping.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    watchdog_stop.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    watchdog::stopping();
    if let Some((server, history)) = server {
        server.stop();
        history.close();
    }
    stats_stop.store(true, Ordering::Relaxed);
    if let Some(t) = stats {
        let _ = t.join();
    }
    let left = link.flush(Duration::from_secs(10));
    let s = link.stats();
    println!(
        "MQTT: {} messages delivered, {} dropped (queue full), {} undelivered at exit",
        s.delivered, s.dropped, left
    );
    link.close();
    if failed {
        return Ok(ExitCode::from(2));
    }
    if left > 0 || s.dropped > 0 {
        eprintln!(
            "error: {} of the run's messages never reached the broker at {} ({left} undelivered at exit, {} dropped from a full queue)",
            left as u64 + s.dropped,
            mqtt.brokers_text(),
            s.dropped
        );
        return Ok(ExitCode::from(EXIT_UNDELIVERED));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_settings_come_from_the_config_then_the_board_then_the_defaults() {
        let rpi4 = Board::load("rpi4").unwrap().camera;
        let none = CameraDefaults::default();
        let o = camera_options(&none, &none);
        assert_eq!((o.index, o.width, o.height, o.fps, o.format), (0, 640, 480, 15, CameraFormatKind::Yuyv));
        let zero = Board::load("rpizero2w").unwrap().camera;
        let o = camera_options(&none, &zero);
        assert_eq!((o.width, o.height, o.fps), (320, 240, 10), "the board's");
        let asked = CameraDefaults { width: Some(1280), height: Some(720), ..Default::default() };
        let o = camera_options(&asked, &rpi4);
        assert_eq!((o.width, o.height, o.fps), (1280, 720, 15), "config over board, board for the rest");
    }
}
