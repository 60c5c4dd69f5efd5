//! HTTP cameras: an MJPEG stream (`multipart/x-mixed-replace`, ESP32-CAM and most cheap boards)
//! read continuously, or a single-JPEG snapshot URL polled at a frame rate. A capture thread keeps
//! the newest JPEG; it is decoded only when the pipeline takes it (a dropped frame costs no
//! decoding). A lost connection is logged once, counted as an outage and retried with backoff.
//! A frame's timestamp is the time its last byte arrived.

use super::latest::{Backoff, LiveSource, Shared};
use super::now_ms;
use super::stream_url::StreamUrl;
use lepton_core::error::{LeptonError, Result};
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
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let body = body_kind(content_type).map_err(|reason| err(url, reason))?;
    Ok((body, response.into_body().into_with_config().limit(u64::MAX).reader()))
}

/// What a `Content-Type` header value says the body is. The media type and parameter names are
/// case-insensitive; the boundary is kept exactly as sent (boundaries are case-sensitive, RFC 2046).
fn body_kind(content_type: &str) -> std::result::Result<Body, String> {
    let mut fields = content_type.split(';');
    let media = fields.next().unwrap_or("").trim().to_ascii_lowercase();
    if media.starts_with("multipart/") {
        let boundary = fields
            .filter_map(|p| p.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
            .map(|(_, value)| value.trim().trim_matches('"').trim_start_matches("--").to_string())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| format!("`{content_type}` without a boundary"))?;
        Ok(Body::Mjpeg(boundary))
    } else if media == "image/jpeg" || media.is_empty() {
        Ok(Body::Snapshot)
    } else {
        Err(format!("serves `{content_type}`; give an MJPEG stream or a JPEG snapshot URL"))
    }
}

/// The parts of a `multipart/x-mixed-replace` body, read through a buffer of our own (a part
/// without Content-Length ends where the next boundary starts, which is read ahead). Each search
/// resumes where the last one stopped, so a part costs work linear in its size however it arrives.
struct Multipart<R> {
    reader: R,
    buf: Vec<u8>,
    /// One read's bytes (kept, so a read does not zero a fresh chunk).
    chunk: Vec<u8>,
    start: Vec<u8>,
    delimiter: Vec<u8>,
    /// Bytes examined by the searches so far (for the linearity test).
    scanned: u64,
}

impl<R: Read> Multipart<R> {
    fn new(reader: R, boundary: &str) -> Self {
        Multipart {
            reader,
            buf: Vec::with_capacity(64 << 10),
            chunk: vec![0; 16 << 10],
            start: format!("--{boundary}").into_bytes(),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            scanned: 0,
        }
    }

    /// Reads more bytes; `false` at the end of the stream.
    fn more(&mut self, url: &StreamUrl) -> Result<bool> {
        let n = self.reader.read(&mut self.chunk).map_err(|e| err(url, e))?;
        self.buf.extend_from_slice(&self.chunk[..n]);
        if self.buf.len() > MAX_PICTURE_BYTES + (64 << 10) {
            return Err(err(url, format!("a part larger than {MAX_PICTURE_BYTES} bytes")));
        }
        Ok(n > 0)
    }

    /// The next part's body into `out`; `Ok(false)` at the end of the stream.
    fn next_part(&mut self, out: &mut Vec<u8>, url: &StreamUrl) -> Result<bool> {
        // Boundary line, then headers up to a blank line.
        let mut from = 0;
        let b = loop {
            if let Some(b) = search(&self.buf, &self.start, &mut from, &mut self.scanned) {
                break b;
            }
            if self.buf.len() > 4096 {
                return Err(err(url, "MJPEG stream out of step: no part boundary"));
            }
            if !self.more(url)? {
                return Ok(false);
            }
        };
        let mut from = b + self.start.len();
        let body = loop {
            if let Some(h) = search(&self.buf, b"\r\n\r\n", &mut from, &mut self.scanned) {
                break h + 4;
            }
            if !self.more(url)? {
                return Ok(false);
            }
        };
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
            None => {
                let mut from = 0;
                loop {
                    if let Some(at) = search(&self.buf, &self.delimiter, &mut from, &mut self.scanned) {
                        break at;
                    }
                    if !self.more(url)? {
                        return Ok(false);
                    }
                }
            }
        };
        out.clear();
        out.extend_from_slice(&self.buf[..end]);
        self.buf.drain(..end);
        Ok(true)
    }
}

/// Finds `needle` in `buf` from `*from` on, adding the bytes examined to `scanned`; on a miss,
/// moves `*from` to where a match could still start once more bytes arrive (the end minus the
/// needle's length), so the next search resumes there instead of rescanning the buffer.
fn search(buf: &[u8], needle: &[u8], from: &mut usize, scanned: &mut u64) -> Option<usize> {
    let at = (*from).min(buf.len());
    *scanned += (buf.len() - at) as u64;
    match find(&buf[at..], needle) {
        Some(i) => Some(at + i),
        None => {
            *from = buf.len().saturating_sub(needle.len().saturating_sub(1)).max(at);
            None
        }
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

    #[test]
    fn the_boundary_keeps_its_case_and_the_media_type_and_parameter_names_do_not_matter() {
        for header in [
            "multipart/x-mixed-replace; boundary=MyBoundary",
            "Multipart/X-Mixed-Replace;Boundary=\"MyBoundary\"",
            "MULTIPART/x-mixed-replace; charset=utf-8; BOUNDARY = --MyBoundary",
        ] {
            match body_kind(header) {
                Ok(Body::Mjpeg(b)) => assert_eq!(b, "MyBoundary", "{header}"),
                other => panic!("{header}: {other:?}"),
            }
        }
        assert!(matches!(body_kind("Image/JPEG"), Ok(Body::Snapshot)));
        assert!(matches!(body_kind(""), Ok(Body::Snapshot)));
        assert!(body_kind("multipart/x-mixed-replace").unwrap_err().contains("without a boundary"));
        assert!(body_kind("text/html; charset=utf-8").unwrap_err().contains("text/html"));
    }

    /// Delivers its bytes `step` at a time, as a network does.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_large_part_in_small_reads_costs_work_linear_in_its_size() {
        let url = StreamUrl::parse("http://cam/stream", &["http"], None, None).unwrap();
        // A 1 MiB part without Content-Length (its end is found by searching for the boundary),
        // bytes that never match the boundary, then a small part; delivered 1000 bytes per read.
        let big: Vec<u8> = (0..1usize << 20).map(|i| b"0123456789abcdef"[i % 16]).collect();
        let mut stream = b"--MyBoundary\r\nContent-Type: image/jpeg\r\n\r\n".to_vec();
        stream.extend_from_slice(&big);
        stream.extend_from_slice(b"\r\n--MyBoundary\r\n\r\nsmall\r\n--MyBoundary--\r\n");
        let mut parts = Multipart::new(Trickle { data: &stream, step: 1000 }, "MyBoundary");
        let mut out = vec![];
        assert!(parts.next_part(&mut out, &url).unwrap());
        assert!(out == big, "the part, whole");
        assert!(parts.next_part(&mut out, &url).unwrap());
        assert_eq!(out, b"small");
        assert!(!parts.next_part(&mut out, &url).unwrap());
        // Each byte is looked at about once (plus a boundary's length per read where a search
        // resumes); rescanning the buffer on every read would examine ~500 MiB here.
        let bound = 2 * stream.len() as u64;
        assert!(parts.scanned <= bound, "{} bytes scanned for a {} byte stream", parts.scanned, stream.len());
    }

    #[test]
    fn a_boundary_split_across_reads_is_found() {
        let url = StreamUrl::parse("http://cam/stream", &["http"], None, None).unwrap();
        let stream = b"--MyBoundary\r\n\r\nfirst part\r\n--MyBoundary\r\n\r\nsecond\r\n--MyBoundary--\r\n";
        for step in 1..12 {
            let mut parts = Multipart::new(Trickle { data: stream, step }, "MyBoundary");
            let mut out = vec![];
            assert!(parts.next_part(&mut out, &url).unwrap());
            assert_eq!(out, b"first part", "reads of {step} bytes");
            assert!(parts.next_part(&mut out, &url).unwrap());
            assert_eq!(out, b"second", "reads of {step} bytes");
            assert!(!parts.next_part(&mut out, &url).unwrap());
        }
    }
}
