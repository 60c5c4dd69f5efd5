//! RTSP cameras (H.264) through retina, a pure-Rust RTSP client, and OpenH264. A capture thread
//! runs the session on a single-threaded tokio runtime, decodes every frame other frames refer to,
//! and keeps only the newest picture (newest frame wins; a frame nothing refers to is not even
//! decoded while the pipeline is busy). A lost stream is logged once, counted as an outage, and
//! reconnected with backoff; the pipeline waits. A frame's timestamp is the time its last packet
//! arrived, not the time the pipeline took it.

use super::clips::{self, ClipTap, Unit};
use super::h264::H264;
use super::latest::{Backoff, LiveSource, Shared};
use super::now_ms;
use super::stream_url::StreamUrl;
use futures::StreamExt;
use lepton_core::error::{LeptonError, Result};
use lepton_core::vision::PixelFormat;
use retina::client::{
    PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use std::time::{Duration, Instant};

/// How RTP packets travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// Interleaved on the RTSP connection (works through NAT and firewalls; the default).
    #[default]
    Tcp,
    /// Separate UDP ports (LAN only: lost or reordered packets are not recovered).
    Udp,
}

/// What to open.
#[derive(Debug, Clone)]
pub struct RtspOptions {
    /// The stream's URL and credentials.
    pub url: StreamUrl,
    /// TCP or UDP.
    pub transport: RtspTransport,
    /// A stream silent this long counts as lost (default 10 s).
    pub timeout: Duration,
    /// Longest wait between reconnection attempts (default 30 s).
    pub reconnect_max: Duration,
    /// Where the encoded stream also goes (`[pipeline.clips]`).
    pub clips: Option<ClipTap>,
}

impl RtspOptions {
    /// Options with the defaults for `url`.
    pub fn new(url: StreamUrl) -> Self {
        RtspOptions {
            url,
            transport: RtspTransport::Tcp,
            timeout: Duration::from_secs(10),
            reconnect_max: Duration::from_secs(30),
            clips: None,
        }
    }
}

/// Starts the capture thread; frames arrive once the camera answers (it is retried in the
/// background until it does).
pub fn open(opts: RtspOptions) -> Result<LiveSource> {
    LiveSource::spawn(opts.url.to_string(), "rtsp", move |shared| capture(&opts, shared))
}

/// A stream's description, as `lepton probe` prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// Codec name (`H.264`).
    pub codec: String,
    /// Picture size.
    pub width: usize,
    /// Picture size.
    pub height: usize,
    /// Frames per second: as the stream declares it, else measured.
    pub fps: Option<f64>,
    /// How `fps` was found.
    pub fps_from: &'static str,
}

fn err(url: &StreamUrl, reason: impl std::fmt::Display) -> LeptonError {
    // retina's errors add the connection's addresses and times on further lines: logged at debug.
    let full = reason.to_string();
    let first = full.lines().next().unwrap_or("").trim().to_string();
    if first.len() < full.trim().len() {
        tracing::debug!("{url}: {full}");
    }
    LeptonError::Source { name: url.to_string(), reason: first }
}

fn runtime(url: &StreamUrl) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| err(url, format!("tokio: {e}")))
}

/// The capture loop: connect, stream, decode; on loss, back off and connect again.
fn capture(opts: &RtspOptions, shared: &Shared) {
    let name = opts.url.to_string();
    let mut backoff = Backoff::new(opts.reconnect_max);
    let rt = match runtime(&opts.url) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("{e}");
            shared.end();
            return;
        }
    };
    let mut picture = vec![];
    while !shared.stopped() {
        let mut on_first = |info: &StreamInfo| backoff.connected(shared, &name, &describe(info));
        let result = rt.block_on(stream(opts, shared, &mut picture, &mut on_first));
        if shared.stopped() {
            break;
        }
        let reason = match result {
            Ok(()) => "the camera ended the stream".to_string(),
            Err(e) => match e {
                LeptonError::Source { reason, .. } => reason,
                other => other.to_string(),
            },
        };
        backoff.failed(shared, &name, &reason);
    }
}

/// One line about a stream.
pub fn describe(i: &StreamInfo) -> String {
    let fps = i.fps.map_or("unknown fps".into(), |f| format!("{f:.2} fps ({})", i.fps_from));
    format!("{} {}x{}, {fps}", i.codec, i.width, i.height)
}

/// Connects: DESCRIBE, SETUP of the first H.264 video stream, PLAY. Errors name the URL.
async fn connect(opts: &RtspOptions) -> Result<(retina::client::Demuxed, usize)> {
    let url = &opts.url;
    let creds = url
        .username()
        .map(|u| retina::client::Credentials { username: u.into(), password: url.password().unwrap_or("").into() });
    let options = SessionOptions::default().creds(creds).user_agent(format!("lepton/{}", env!("CARGO_PKG_VERSION")));
    let mut session = tokio::time::timeout(opts.timeout, Session::describe(url.url().clone(), options))
        .await
        .map_err(|_| err(url, format!("no answer to DESCRIBE within {:?}", opts.timeout)))?
        .map_err(|e| err(url, e))?;
    let streams = session.streams();
    let video: Vec<&str> = streams.iter().filter(|s| s.media() == "video").map(|s| s.encoding_name()).collect();
    let Some(index) = streams.iter().position(|s| s.media() == "video" && s.encoding_name() == "h264") else {
        let reason = if video.is_empty() {
            "the stream has no video".to_string()
        } else if video.contains(&"h265") {
            "the stream is H.265, which this build does not decode; set the camera's stream to H.264 (most cameras offer it on a second stream)".to_string()
        } else {
            format!("the stream's video is {}; Lepton decodes H.264", video.join(", "))
        };
        return Err(err(url, reason));
    };
    let transport = match opts.transport {
        RtspTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
        RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
    };
    session
        .setup(index, SetupOptions::default().transport(transport).frame_format(FrameFormat::SIMPLE))
        .await
        .map_err(|e| err(url, e))?;
    let playing = session.play(PlayOptions::default()).await.map_err(|e| err(url, e))?;
    let demuxed = playing.demuxed().map_err(|e| err(url, e))?;
    Ok((demuxed, index))
}

/// Streams until the stream fails, goes silent for `timeout`, or the source is stopped.
async fn stream(
    opts: &RtspOptions,
    shared: &Shared,
    picture: &mut Vec<u8>,
    on_first: &mut dyn FnMut(&StreamInfo),
) -> Result<()> {
    let url = &opts.url;
    let (mut demuxed, index) = connect(opts).await?;
    let mut decoder = H264::new(&url.to_string())?;
    // A new session: its clock starts over, and clips resume at its first key frame.
    if let Some(tap) = &opts.clips {
        tap.discontinuity();
    }
    // The last picture (or deliberately skipped frame): a stream whose frames stop, or stop
    // decoding, for `timeout` counts as lost.
    let mut last = Instant::now();
    let mut last_error: Option<String> = None;
    let mut announced = false;
    while !shared.stopped() {
        if last.elapsed() > opts.timeout {
            let secs = opts.timeout.as_secs_f64();
            return Err(err(
                url,
                match last_error.take() {
                    Some(e) => format!("no picture decoded for {secs:.0} s ({e})"),
                    None => format!("no video for {secs:.0} s"),
                },
            ));
        }
        let item = match tokio::time::timeout(Duration::from_millis(200), demuxed.next()).await {
            Err(_) => continue,
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(err(url, e)),
            Ok(Some(Ok(item))) => item,
        };
        let CodecItem::VideoFrame(frame) = item else { continue };
        if frame.stream_id() != index {
            continue;
        }
        let captured = now_ms();
        let fps = match demuxed.streams()[index].parameters() {
            Some(ParametersRef::Video(v)) => v.frame_rate().map(|(num, den)| f64::from(den) / f64::from(num)),
            _ => None,
        };
        let data = frame.data();
        if let Some(tap) = &opts.clips {
            // Lost packets (UDP): the clips being written go on from the next key frame.
            if frame.loss() > 0 {
                tap.discontinuity();
            }
            // RTP times: presentation order; cameras streaming B-frames are rare.
            let t = frame.timestamp();
            let at = clips::to_90k(t.elapsed(), u64::from(t.clock_rate().get()));
            tap.push(Unit {
                ts_ms: captured,
                dts: at,
                pts: at,
                key: frame.is_random_access_point(),
                data: data.to_vec(),
            });
        }
        // A frame nothing refers to, while the last picture still waits: skip its decoding.
        if announced && super::h264::disposable(data) && shared.busy() {
            shared.skipped();
            last = Instant::now();
            continue;
        }
        let t = Instant::now();
        let decoded = decoder.decode(data, picture);
        shared.decoded(t.elapsed());
        match decoded {
            Ok(Some(p)) => {
                last = Instant::now();
                last_error = None;
                if !announced {
                    announced = true;
                    on_first(&StreamInfo {
                        codec: "H.264".into(),
                        width: p.width,
                        height: p.height,
                        fps,
                        fps_from: "declared",
                    });
                }
                shared.put(p.width, p.height, PixelFormat::I420, captured, |d| {
                    // Swap the decoded picture in; the slot's old buffer is decoded into next.
                    std::mem::swap(d, picture);
                });
            }
            Ok(None) => {}
            // A damaged frame (lost packets over UDP): the next key frame repairs the picture.
            Err(e) => {
                tracing::debug!("{e}");
                last_error = Some(match e {
                    LeptonError::Source { reason, .. } => reason,
                    other => other.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Connects once, decodes the first picture and watches the stream for up to `watch` to
/// measure its frame rate when it does not declare one.
pub fn probe(url: &StreamUrl, transport: RtspTransport, watch: Duration) -> Result<StreamInfo> {
    let opts = RtspOptions { transport, ..RtspOptions::new(url.clone()) };
    runtime(url)?.block_on(async {
        let (mut demuxed, index) = connect(&opts).await?;
        let mut decoder = H264::new(&url.to_string())?;
        let mut picture = vec![];
        let mut info: Option<StreamInfo> = None;
        let started = Instant::now();
        let mut stamps: Vec<f64> = vec![];
        while started.elapsed() < watch + opts.timeout {
            let item = match tokio::time::timeout(opts.timeout, demuxed.next()).await {
                Err(_) => return Err(err(url, format!("no video for {:.0} s", opts.timeout.as_secs_f64()))),
                Ok(None) => break,
                Ok(Some(r)) => r.map_err(|e| err(url, e))?,
            };
            let CodecItem::VideoFrame(frame) = item else { continue };
            if frame.stream_id() != index {
                continue;
            }
            stamps.push(frame.timestamp().elapsed_secs());
            if info.is_none() {
                if let Some(p) = decoder.decode(frame.data(), &mut picture)? {
                    let fps = match demuxed.streams()[index].parameters() {
                        Some(ParametersRef::Video(v)) => {
                            v.frame_rate().map(|(num, den)| f64::from(den) / f64::from(num))
                        }
                        _ => None,
                    };
                    info = Some(StreamInfo {
                        codec: "H.264".into(),
                        width: p.width,
                        height: p.height,
                        fps,
                        fps_from: "declared",
                    });
                }
            }
            // Done once a picture decoded and the rate is known, or the watch is over.
            if info.as_ref().is_some_and(|i| i.fps.is_some() || started.elapsed() >= watch) {
                break;
            }
        }
        let mut info = info.ok_or_else(|| err(url, "the stream ended before a picture decoded"))?;
        if info.fps.is_none() && stamps.len() > 2 {
            let span = stamps[stamps.len() - 1] - stamps[0];
            if span > 0.0 {
                info.fps = Some((stamps.len() - 1) as f64 / span);
                info.fps_from = "measured";
            }
        }
        Ok(info)
    })
}
