//! Snapshots: a JPEG picture of the frame an event started on (or one every N seconds), with each
//! detection's box, label and score drawn where the detection says, on the very frame the boxes
//! came from (kept by the source side in a [`FrameRing`]). Scaled down to a maximum width.

use crate::config;
use image::RgbImage;
use lepton_runtime::draw::Outline;
use lepton_runtime::source::retain::FrameRing;
use lepton_runtime::vision::preprocess::to_rgb8;
use lepton_runtime::Detection;

/// When to take a picture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// At each event start, the frame that started it.
    Event,
    /// Every this many milliseconds (the first frame processed after each interval).
    Every(u64),
}

/// A pipeline's snapshot settings and the buffers it draws in.
pub struct Snapshotter {
    trigger: Trigger,
    style: Style,
    ring: FrameRing,
    rgb: Vec<u8>,
    /// The pipeline clock of the last picture, in ms.
    last_ms: Option<u64>,
}

/// One snapshot: JPEG bytes and the picture's size.
pub struct Picture {
    /// JPEG bytes.
    pub jpeg: Vec<u8>,
    /// Width after scaling.
    pub width: u32,
    /// Height after scaling.
    pub height: u32,
}

impl Snapshotter {
    /// From a pipeline's `[pipeline.snapshot]`; frames come from `ring`.
    pub fn new(c: &config::Snapshot, ring: FrameRing) -> Self {
        let trigger = match c.every_s {
            Some(s) => Trigger::Every((s.get() * 1000.0).round() as u64),
            None => Trigger::Event,
        };
        Snapshotter {
            trigger,
            style: Style { annotate: c.annotate, quality: c.quality, max_width: c.max_width },
            ring,
            rgb: vec![],
            last_ms: None,
        }
    }

    /// Whether the frame at `clock_ms` (on the pipeline's monotonic clock) gets a picture: it
    /// starts an event (`Event`), or the interval has passed (`Every`).
    pub fn due(&self, clock_ms: u64, starts_event: bool) -> bool {
        match self.trigger {
            Trigger::Event => starts_event,
            Trigger::Every(ms) => self.last_ms.is_none_or(|last| clock_ms.saturating_sub(last) >= ms),
        }
    }

    /// Pictures frame `index` (still in the ring) with `dets` drawn; `None` if the frame is gone.
    pub fn take(
        &mut self,
        index: u64,
        clock_ms: u64,
        dets: &[Detection],
        label: impl Fn(u16) -> String,
    ) -> Option<Picture> {
        let pic = render(&self.ring, index, dets, |_, c| label(c), &[], self.style, &mut self.rgb)?;
        self.last_ms = Some(clock_ms);
        Some(pic)
    }
}

/// How a picture is made.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Draw the detections.
    pub annotate: bool,
    /// JPEG quality.
    pub quality: u8,
    /// Scaled down to this width (aspect kept).
    pub max_width: u32,
}

/// Pictures frame `index` of `ring` with `overlay` and `dets` drawn (scaled to `style.max_width`;
/// `label(k, class)` names the `k`th detection), as JPEG;
/// `None` if the frame is no longer in the ring. `rgb` is a reused conversion buffer.
pub fn render(
    ring: &FrameRing,
    index: u64,
    dets: &[Detection],
    label: impl Fn(usize, u16) -> String,
    overlay: &[Outline],
    style: Style,
    rgb: &mut Vec<u8>,
) -> Option<Picture> {
    let (w, h) = ring.with(index, |view| {
        to_rgb8(view, rgb);
        (view.width() as u32, view.height() as u32)
    })?;
    let mut img = RgbImage::from_raw(w, h, std::mem::take(rgb))?;
    let mut scale = 1.0f32;
    if w > style.max_width {
        let nh = ((h as f32 * style.max_width as f32 / w as f32).round() as u32).max(1);
        scale = style.max_width as f32 / w as f32;
        let scaled = image::imageops::resize(&img, style.max_width, nh, image::imageops::FilterType::Triangle);
        *rgb = img.into_raw();
        img = scaled;
    }
    if style.annotate {
        lepton_runtime::draw::outlines(&mut img, overlay);
        lepton_runtime::draw::detections(&mut img, dets, label, scale);
    }
    let mut jpeg = Vec::with_capacity(64 << 10);
    let encoded = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, style.quality).encode_image(&img);
    let (width, height) = (img.width(), img.height());
    if scale == 1.0 {
        *rgb = img.into_raw();
    }
    match encoded {
        Ok(()) => Some(Picture { jpeg, width, height }),
        Err(e) => {
            tracing::warn!("snapshot: JPEG encoding failed: {e}");
            None
        }
    }
}
