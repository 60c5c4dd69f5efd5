//! Camera frames through nokhwa (V4L2 on Linux). A capture thread keeps only the newest frame:
//! when inference is slower than the camera, older frames are replaced and counted as dropped.
//! A camera that fails or is unplugged is logged and reopened with backoff; the pipeline waits.

use super::{now_ms, Frame, FrameSource};
use crate::error::{LeptonError, Result};
use crate::event::FrameMeta;
use crate::vision::{ImageView, PixelFormat};
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
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

struct Slot {
    data: Vec<u8>,
    width: usize,
    height: usize,
    format: PixelFormat,
    fresh: bool,
    captured: u64,
}

struct Shared {
    slot: Mutex<Slot>,
    ready: Condvar,
    stop: AtomicBool,
    dropped: AtomicU64,
}

/// Frames from a camera, newest first.
pub struct CameraSource {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    local: Slot,
    name: String,
}

impl CameraSource {
    /// Starts capturing; the first frames arrive as soon as the camera opens (it is retried in
    /// the background if it cannot be opened now).
    pub fn open(opts: CameraOptions) -> Result<Self> {
        let empty = || Slot { data: vec![], width: 0, height: 0, format: PixelFormat::Rgb8, fresh: false, captured: 0 };
        let shared = Arc::new(Shared {
            slot: Mutex::new(empty()),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        let worker = Arc::clone(&shared);
        let name = format!("camera{}", opts.index);
        let thread = std::thread::Builder::new()
            .name(format!("lepton-{name}"))
            .spawn(move || capture(opts, &worker))
            .map_err(|e| LeptonError::io("camera thread", e))?;
        Ok(CameraSource { shared, thread: Some(thread), local: empty(), name })
    }
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
    let mut backoff = Duration::from_millis(500);
    let mut logged_failure = false;
    while !shared.stop.load(Ordering::Relaxed) {
        let opened = nokhwa::Camera::new(CameraIndex::Index(opts.index), requested(&opts))
            .and_then(|mut cam| cam.open_stream().map(|()| cam));
        let mut cam = match opened {
            Ok(cam) => {
                if logged_failure {
                    tracing::info!("camera {}: open again", opts.index);
                }
                logged_failure = false;
                backoff = Duration::from_millis(500);
                cam
            }
            Err(e) => {
                if !logged_failure {
                    tracing::warn!("camera {}: {e}; retrying with backoff", opts.index);
                    logged_failure = true;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let mode = cam.camera_format();
        tracing::info!(
            "camera {}: {}x{} {} at {} fps",
            opts.index,
            mode.width(),
            mode.height(),
            mode.format(),
            mode.frame_rate()
        );
        while !shared.stop.load(Ordering::Relaxed) {
            let frame = match cam.frame() {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("camera {}: {e} (unplugged?); reopening", opts.index);
                    logged_failure = true;
                    break;
                }
            };
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
                        tracing::warn!("camera {}: a frame does not decode: {e}", opts.index);
                        continue;
                    }
                },
            };
            let mut slot = shared.slot.lock().unwrap_or_else(|p| p.into_inner());
            if slot.fresh {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            slot.data.clear();
            slot.data.extend_from_slice(&bytes);
            (slot.width, slot.height, slot.format, slot.fresh) = (w, h, format, true);
            slot.captured += 1;
            shared.ready.notify_all();
        }
        let _ = cam.stop_stream();
    }
}

impl FrameSource for CameraSource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>> {
        let mut slot = self.shared.slot.lock().unwrap_or_else(|p| p.into_inner());
        while !slot.fresh {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            slot =
                self.shared.ready.wait_timeout(slot, Duration::from_millis(200)).unwrap_or_else(|p| p.into_inner()).0;
        }
        // Take the newest frame by swapping buffers: no copy, the capture thread refills the other.
        std::mem::swap(&mut slot.data, &mut self.local.data);
        (self.local.width, self.local.height, self.local.format) = (slot.width, slot.height, slot.format);
        self.local.captured = slot.captured;
        slot.fresh = false;
        drop(slot);
        let image = ImageView::packed(&self.local.data, self.local.width, self.local.height, self.local.format)
            .map_err(|e| LeptonError::core(format!("{} frame", self.name), e))?;
        Ok(Some(Frame {
            image,
            meta: FrameMeta { frame: self.local.captured - 1, timestamp_ms: now_ms() },
            name: None,
        }))
    }

    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.ready.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl CameraSource {
    /// A handle that stops capturing from another thread; `next_frame` then returns `None`.
    pub fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || {
            shared.stop.store(true, Ordering::Relaxed);
            shared.ready.notify_all();
        }
    }
}
