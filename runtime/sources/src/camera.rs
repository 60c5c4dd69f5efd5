//! Camera frames through nokhwa (V4L2 on Linux). A capture thread keeps only the newest frame:
//! when inference is slower than the camera, older frames are replaced and counted as dropped.
//! A camera that fails or is unplugged is logged and reopened with backoff; the pipeline waits.

use super::latest::{Backoff, LiveSource, Shared};
use super::now_ms;
use lepton_core::error::{LeptonError, Result};
use lepton_core::vision::PixelFormat;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
};
use std::time::Duration;

/// Pixel formats a camera may be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraFormatKind {
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

/// What to open.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraOptions {
    /// Camera index (`/dev/videoN` on Linux).
    pub index: u32,
    /// Requested width.
    pub width: u32,
    /// Requested height.
    pub height: u32,
    /// Requested frames per second.
    pub fps: u32,
    /// Requested pixel format (the closest mode the camera has is used).
    pub format: CameraFormatKind,
}

impl Default for CameraOptions {
    fn default() -> Self {
        CameraOptions { index: 0, width: 640, height: 480, fps: 15, format: CameraFormatKind::Yuyv }
    }
}

/// One camera and its modes, as `lepton devices` lists them.
#[derive(Debug, Clone)]
pub struct CameraInfo {
    /// Index to open it with.
    pub index: u32,
    /// Human name.
    pub name: String,
    /// Modes: (width, height, fps, format).
    pub modes: Vec<(u32, u32, u32, String)>,
}

/// Lists the cameras of this machine with their modes.
pub fn list() -> Result<Vec<CameraInfo>> {
    let found = nokhwa::query(ApiBackend::Auto)
        .map_err(|e| LeptonError::Model { path: "cameras".into(), reason: e.to_string() })?;
    let mut out = vec![];
    for info in found {
        let index = match info.index() {
            CameraIndex::Index(i) => *i,
            CameraIndex::String(_) => continue,
        };
        let mut modes = vec![];
        if let Ok(mut cam) =
            nokhwa::Camera::new(info.index().clone(), RequestedFormat::new::<RgbFormat>(RequestedFormatType::None))
        {
            if let Ok(formats) = cam.compatible_camera_formats() {
                modes =
                    formats.iter().map(|f| (f.width(), f.height(), f.frame_rate(), f.format().to_string())).collect();
            }
        }
        out.push(CameraInfo { index, name: info.human_name(), modes });
    }
    Ok(out)
}

/// Starts capturing from a camera; the first frames arrive as soon as it opens (it is retried in
/// the background if it cannot be opened now).
pub fn open(opts: CameraOptions) -> Result<LiveSource> {
    let name = format!("camera{}", opts.index);
    LiveSource::spawn(name.clone(), &name, move |shared| capture(opts, shared))
}

fn requested(opts: &CameraOptions) -> RequestedFormat<'static> {
    let format = match opts.format {
        CameraFormatKind::Yuyv => FrameFormat::YUYV,
        CameraFormatKind::Mjpeg => FrameFormat::MJPEG,
        CameraFormatKind::Nv12 => FrameFormat::NV12,
        CameraFormatKind::Gray => FrameFormat::GRAY,
        CameraFormatKind::Rgb => FrameFormat::RAWRGB,
    };
    let mode = CameraFormat::new(Resolution::new(opts.width, opts.height), format, opts.fps);
    RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(mode))
}

/// The capture loop: open (with backoff), grab, keep the newest frame.
fn capture(opts: CameraOptions, shared: &Shared) {
    let name = format!("camera {}", opts.index);
    let mut backoff = Backoff::new(Duration::from_secs(10));
    while !shared.stopped() {
        let opened = nokhwa::Camera::new(CameraIndex::Index(opts.index), requested(&opts))
            .and_then(|mut cam| cam.open_stream().map(|()| cam));
        let mut cam = match opened {
            Ok(cam) => cam,
            Err(e) => {
                backoff.failed(shared, &name, &e);
                continue;
            }
        };
        let mode = cam.camera_format();
        let what = format!("{}x{} {} at {} fps", mode.width(), mode.height(), mode.format(), mode.frame_rate());
        backoff.connected(shared, &name, &what);
        while !shared.stopped() {
            let frame = match cam.frame() {
                Ok(f) => f,
                Err(e) => {
                    backoff.failed(shared, &name, &format!("{e} (unplugged?)"));
                    break;
                }
            };
            let captured = now_ms();
            let res = frame.resolution();
            let (w, h) = (res.width() as usize, res.height() as usize);
            let (format, bytes): (PixelFormat, std::borrow::Cow<'_, [u8]>) = match frame.source_frame_format() {
                FrameFormat::YUYV => (PixelFormat::Yuyv, frame.buffer().into()),
                FrameFormat::NV12 => (PixelFormat::Nv12, frame.buffer().into()),
                FrameFormat::GRAY => (PixelFormat::Gray8, frame.buffer().into()),
                FrameFormat::RAWRGB => (PixelFormat::Rgb8, frame.buffer().into()),
                FrameFormat::RAWBGR => (PixelFormat::Bgr8, frame.buffer().into()),
                FrameFormat::MJPEG => match image::load_from_memory(frame.buffer()) {
                    Ok(img) => (PixelFormat::Rgb8, img.into_rgb8().into_raw().into()),
                    Err(e) => {
                        tracing::warn!("{name}: a frame does not decode: {e}");
                        continue;
                    }
                },
            };
            shared.put(w, h, format, captured, |d| d.extend_from_slice(&bytes));
        }
        let _ = cam.stop_stream();
    }
}
