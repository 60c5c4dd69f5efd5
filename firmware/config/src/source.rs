//! `[pipeline.source]`: where a pipeline's frames or samples come from (pictures, WAV files,
//! cameras, network cameras, video files, microphones), and a network source's credentials.

use crate::duration::{Seconds, HOUR, YEAR};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

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
        format: Option<CameraFormat>,
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

fn default_true() -> bool {
    true
}

impl Source {
    /// A network source's URL as written and its credentials: the password file (read) or
    /// environment variable (set). Connects to nothing and parses no URL (the daemon does, with
    /// the video code); errors never show a password.
    pub fn network(&self) -> Result<NetworkSource<'_>> {
        let (url, schemes, username, password_file, password_env): (_, &'static [&'static str], _, _, _) = match self {
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
        Ok(NetworkSource { url, schemes, username: username.as_deref(), password })
    }
}

/// A network source's address and credentials as configured ([`Source::network`]).
pub struct NetworkSource<'a> {
    /// The URL as written (it may hold credentials: never show it as it is).
    pub url: &'a str,
    /// The schemes this kind of source takes, the usual one first.
    pub schemes: &'static [&'static str],
    /// `username`, if set (else the URL's).
    pub username: Option<&'a str>,
    /// The password from `password_file` or `password_env`, if either is set.
    pub password: Option<String>,
}

impl std::fmt::Debug for NetworkSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the URL (it may hold credentials) nor the password, even in debug output.
        write!(f, "NetworkSource({:?}, user {:?})", self.schemes, self.username)
    }
}

/// Pixel formats a camera may be asked for (`format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraFormat {
    /// Packed YUV 4:2:2 (most USB webcams; no decoding needed).
    Yuyv,
    /// Motion JPEG (decoded per frame).
    Mjpeg,
    /// Planar YUV 4:2:0.
    Nv12,
    /// 8-bit luma.
    Gray,
    /// Packed RGB.
    Rgb,
}

/// How an RTSP camera's RTP packets travel (`transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// Interleaved on the RTSP connection (works through NAT and firewalls; the default).
    #[default]
    Tcp,
    /// Separate UDP ports (LAN only: lost or reordered packets are not recovered).
    Udp,
}

/// A password file's content without its final line break; errors name `what` and the file,
/// never the content.
pub fn read_password(file: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{what} {}", file.display()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}
