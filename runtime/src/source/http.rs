//! HTTP cameras: an MJPEG stream (`multipart/x-mixed-replace`, ESP32-CAM and most cheap boards)
//! read continuously, or a single-JPEG snapshot URL polled at a frame rate. A capture thread keeps
//! the newest JPEG; it is decoded only when the pipeline takes it (a dropped frame costs no
//! decoding). A lost connection is logged once, counted as an outage and retried with backoff.
//! A frame's timestamp is the time its last byte arrived.

use super::latest::{Backoff, LiveSource, Shared};
use super::now_ms;
use super::stream_url::StreamUrl;
use crate::error::{LeptonError, Result};
use std::io::Read;
use std::time::{Duration, Instant};

/// Largest JPEG picture accepted from a camera (16 MiB).
pub const MAX_PICTURE_BYTES: usize = 16 << 20;

/// What to open.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The camera's URL and credentials (HTTP basic authentication).
    pub url: StreamUrl,
    /// Poll a snapshot URL this often; an MJPEG stream runs at the camera's rate (default 5).
    pub fps: f32,
    /// A connection silent this long counts as lost (default 10 s).
    pub timeout: Duration,
    /// Longest wait between reconnection attempts (default 30 s).
    pub reconnect_max: Duration,
}

impl HttpOptions {
    /// Options with the defaults for `url`.
    pub fn new(url: StreamUrl) -> Self {
        HttpOptions { url, fps: 5.0, timeout: Duration::from_secs(10), reconnect_max: Duration::from_secs(30) }
    }
}

/// Starts the capture thread; frames arrive once the camera answers (it is retried in the
/// background until it does).
pub fn open(opts: HttpOptions) -> Result<LiveSource> {
    LiveSource::spawn(opts.url.to_string(), "http", move |shared| capture(&opts, shared))
}

/// What a camera URL serves.
#[derive(Debug)]
enum Body {
    /// `multipart/x-mixed-replace` with this boundary.
    Mjpeg(String),
    /// One picture per request.
    Snapshot,
}

fn err(url: &StreamUrl, reason: impl std::fmt::Display) -> LeptonError {
    LeptonError::Source { name: url.to_string(), reason: reason.to_string() }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .timeout_per_read(Some(timeout))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// One GET: the kind of body and a reader over it.
fn get(agent: &ureq::Agent, url: &StreamUrl) -> Result<(Body, ureq::BodyReader<'static>)> {
    let mut req = agent.get(url.url().as_str());
    if let Some(user) = url.username() {
        use base64::Engine;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", url.password().unwrap_or("")));
        req = req.header("Authorization", format!("Basic {token}"));
    }
    let response = req.call().map_err(|e| err(url, e))?;
    let status = response.status();
    if status == 401 || status == 403 {
        return Err(err(url, format!("HTTP {status}: the camera refused the credentials (username, password_file)")));
    }
    if !status.is_success() {
        return Err(err(url, format!("HTTP {status}")));
    }
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let body = if content_type.starts_with("multipart/") {
        let boundary = content_type
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("boundary="))
            .next()
            .map(|b| b.trim_matches('"').trim_start_matches("--").to_string())
            .ok_or_else(|| err(url, format!("`{content_type}` without a boundary")))?;
        Body::Mjpeg(boundary)
    } else if content_type.starts_with("image/jpeg") || content_type.is_empty() {
        Body::Snapshot
    } else {
        return Err(err(url, format!("serves `{content_type}`; give an MJPEG stream or a JPEG snapshot URL")));
    };
    Ok((body, response.into_body().into_with_config().limit(u64::MAX).reader()))
}

/// The parts of a `multipart/x-mixed-replace` body, read through a buffer of our own (a part
/// without Content-Length ends where the next boundary starts, which is read ahead).
struct Multipart<R> {
    reader: R,
    buf: Vec<u8>,
    start: Vec<u8>,
    delimiter: Vec<u8>,
}

impl<R: Read> Multipart<R> {
    fn new(reader: R, boundary: &str) -> Self {
        Multipart {
            reader,
            buf: Vec::with_capacity(64 << 10),
            start: format!("--{boundary}").into_bytes(),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
        }
    }

    /// Reads more bytes; `false` at the end of the stream.
    fn more(&mut self, url: &StreamUrl) -> Result<bool> {
        let mut chunk = [0u8; 16 << 10];
        let n = self.reader.read(&mut chunk).map_err(|e| err(url, e))?;
        self.buf.extend_from_slice(&chunk[..n]);
        if self.buf.len() > MAX_PICTURE_BYTES + (64 << 10) {
            return Err(err(url, format!("a part larger than {MAX_PICTURE_BYTES} bytes")));
        }
        Ok(n > 0)
    }

    /// The next part's body into `out`; `Ok(false)` at the end of the stream.
    fn next_part(&mut self, out: &mut Vec<u8>, url: &StreamUrl) -> Result<bool> {
        // Boundary line, then headers up to a blank line.
        let headers_end = loop {
            if let Some(b) = find(&self.buf, &self.start) {
                if let Some(h) = find(&self.buf[b..], b"\r\n\r\n") {
                    break (b, b + h + 4);
                }
            } else if self.buf.len() > 4096 {
                return Err(err(url, "MJPEG stream out of step: no part boundary"));
            }
            if !self.more(url)? {
                return Ok(false);
            }
        };
        let (b, body) = headers_end;
        let head = &self.buf[b + self.start.len()..body];
        if head.starts_with(b"--") {
            return Ok(false);
        }
        let length = content_length(head);
        self.buf.drain(..body);
        let end = match length {
            Some(n) if n > MAX_PICTURE_BYTES => {
                return Err(err(url, format!("a part of {n} bytes (at most {MAX_PICTURE_BYTES})")))
            }
            Some(n) => {
                while self.buf.len() < n {
                    if !self.more(url)? {
                        return Ok(false);
                    }
                }
                n
            }
            None => loop {
                if let Some(at) = find(&self.buf, &self.delimiter) {
                    break at;
                }
                if !self.more(url)? {
                    return Ok(false);
                }
            },
        };
        out.clear();
        out.extend_from_slice(&self.buf[..end]);
        self.buf.drain(..end);
        Ok(true)
    }
}

/// The Content-Length of a part's header lines, read in place (no allocation per part).
fn content_length(head: &[u8]) -> Option<usize> {
    const KEY: &[u8] = b"content-length:";
    head.split(|&b| b == b'\n').find_map(|line| {
        let line = line.trim_ascii();
        if line.len() < KEY.len() || !line[..KEY.len()].eq_ignore_ascii_case(KEY) {
            return None;
        }
        std::str::from_utf8(line[KEY.len()..].trim_ascii()).ok()?.parse().ok()
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The capture loop.
fn capture(opts: &HttpOptions, shared: &Shared) {
    let name = opts.url.to_string();
    let agent = agent(opts.timeout);
    let mut backoff = Backoff::new(opts.reconnect_max);
    let mut picture = vec![];
    let period = Duration::from_secs_f64(1.0 / f64::from(opts.fps.max(0.01)));
    let mut next_poll = Instant::now();
    let mut connected = false;
    while !shared.stopped() {
        let result = get(&agent, &opts.url).and_then(|(body, reader)| match body {
            Body::Mjpeg(boundary) => {
                let mut parts = Multipart::new(reader, &boundary);
                let mut first = true;
                while !shared.stopped() {
                    if !parts.next_part(&mut picture, &opts.url)? {
                        return Err(err(&opts.url, "the camera ended the stream"));
                    }
                    if first {
                        first = false;
                        backoff.connected(shared, &name, &"MJPEG stream");
                        connected = true;
                    }
                    let at = now_ms();
                    shared.put_jpeg(at, |d| std::mem::swap(d, &mut picture));
                }
                Ok(())
            }
            Body::Snapshot => {
                picture.clear();
                reader.take(MAX_PICTURE_BYTES as u64 + 1).read_to_end(&mut picture).map_err(|e| err(&opts.url, e))?;
                if picture.len() > MAX_PICTURE_BYTES {
                    return Err(err(&opts.url, format!("a picture larger than {MAX_PICTURE_BYTES} bytes")));
                }
                if !connected {
                    backoff.connected(shared, &name, &format!("JPEG snapshots polled at {} fps", opts.fps));
                    connected = true;
                }
                let at = now_ms();
                shared.put_jpeg(at, |d| std::mem::swap(d, &mut picture));
                // Poll on a fixed schedule; a late answer takes the next slot, not a burst.
                next_poll += period;
                let now = Instant::now();
                if next_poll < now {
                    next_poll = now;
                }
                while Instant::now() < next_poll && !shared.stopped() {
                    std::thread::sleep((next_poll - Instant::now()).min(Duration::from_millis(50)));
                }
                Ok(())
            }
        });
        if let Err(e) = result {
            if shared.stopped() {
                break;
            }
            connected = false;
            let reason = match e {
                LeptonError::Source { reason, .. } => reason,
                other => other.to_string(),
            };
            backoff.failed(shared, &name, &reason);
            next_poll = Instant::now();
        }
    }
}

/// What `lepton probe` prints for an HTTP camera.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpInfo {
    /// `MJPEG stream` or `JPEG snapshot`.
    pub kind: &'static str,
    /// Picture size.
    pub width: usize,
    /// Picture size.
    pub height: usize,
    /// Measured frames per second (streams only).
    pub fps: Option<f64>,
}

/// Connects once, decodes the first picture, and for a stream measures its rate over `watch`.
pub fn probe(url: &StreamUrl, watch: Duration) -> Result<HttpInfo> {
    let agent = agent(Duration::from_secs(10));
    let (body, reader) = get(&agent, url)?;
    let mut picture = vec![];
    let mut rgb = vec![];
    match body {
        Body::Snapshot => {
            reader.take(MAX_PICTURE_BYTES as u64).read_to_end(&mut picture).map_err(|e| err(url, e))?;
            let (width, height) = crate::image::decode_jpeg_into(&picture, &mut rgb).map_err(|r| err(url, r))?;
            Ok(HttpInfo { kind: "JPEG snapshot", width, height, fps: None })
        }
        Body::Mjpeg(boundary) => {
            let mut parts = Multipart::new(reader, &boundary);
            if !parts.next_part(&mut picture, url)? {
                return Err(err(url, "the stream ended before the first picture"));
            }
            let (width, height) = crate::image::decode_jpeg_into(&picture, &mut rgb).map_err(|r| err(url, r))?;
            let started = Instant::now();
            let mut seen = 0u32;
            while started.elapsed() < watch && parts.next_part(&mut picture, url)? {
                seen += 1;
            }
            let fps = (seen > 0).then(|| f64::from(seen) / started.elapsed().as_secs_f64());
            Ok(HttpInfo { kind: "MJPEG stream", width, height, fps })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn multipart_parts_are_read_with_and_without_content_length() {
        let url = StreamUrl::parse("http://cam/stream", &["http"], None, None).unwrap();
        let stream = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 3\r\n\r\nabc\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\nxyz\r\n--frame\r\nContent-Length: 2\r\n\r\nqq\r\n--frame--\r\n";
        // Delivered a few bytes at a time, as a slow network would.
        let mut parts = Multipart::new(BufReader::with_capacity(4, &stream[..]).take(u64::MAX), "frame");
        let mut out = vec![];
        assert!(parts.next_part(&mut out, &url).unwrap());
        assert_eq!(out, b"abc");
        assert!(parts.next_part(&mut out, &url).unwrap());
        assert_eq!(out, b"xyz", "up to the boundary");
        assert!(parts.next_part(&mut out, &url).unwrap());
        assert_eq!(out, b"qq", "the part after a length-less one");
        assert!(!parts.next_part(&mut out, &url).unwrap(), "closing boundary");
    }
}
