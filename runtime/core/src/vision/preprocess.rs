//! Frame → model input: pixel format conversion, resize (stretch or letterbox), mean/std
//! normalization and NCHW/NHWC layout, written straight into the caller's input buffer as f32, or as
//! int8/uint8 when the model input is quantized. One pass, no intermediate image, no allocation.
//!
//! Resizing samples bilinearly at half-pixel centres: output pixel `x` reads source coordinate
//! `(x + 0.5) * in_w / out_w - 0.5`, clamped to the image. `models/common/imageops.py` implements
//! the same arithmetic so models are trained on exactly what the device computes.

use crate::error::Error;
use crate::event::BBox;
use crate::tensor::{quantize_i8, quantize_u8};
use serde::{Deserialize, Serialize};

/// How a frame's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// 3 bytes per pixel: red, green, blue.
    Rgb8,
    /// 3 bytes per pixel: blue, green, red.
    Bgr8,
    /// 1 byte per pixel: luma.
    Gray8,
    /// Packed 4:2:2, 4 bytes per 2 pixels: Y0 U Y1 V (V4L2 `YUYV`). BT.601 limited range.
    Yuyv,
    /// Planar 4:2:0: a Y plane, then an interleaved U/V plane of half height. BT.601 limited range.
    Nv12,
    /// Planar 4:2:0 (what H.264 decoders produce): a Y plane, then a U plane and a V plane of half
    /// width and height, rows `stride / 2` bytes apart. BT.601 limited range.
    I420,
}

/// Channel order (and count) the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorOrder {
    /// Three channels: red, green, blue.
    Rgb,
    /// Three channels: blue, green, red.
    Bgr,
    /// One channel: luma (`0.299 R + 0.587 G + 0.114 B`).
    Gray,
}

impl ColorOrder {
    /// Number of channels.
    pub const fn channels(self) -> usize {
        match self {
            ColorOrder::Gray => 1,
            _ => 3,
        }
    }

    /// The name manifests use (`rgb`, `bgr`, `gray`).
    pub const fn name(self) -> &'static str {
        match self {
            ColorOrder::Rgb => "rgb",
            ColorOrder::Bgr => "bgr",
            ColorOrder::Gray => "gray",
        }
    }
}

/// Memory layout of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[1, channels, height, width]`.
    Nchw,
    /// `[1, height, width, channels]`.
    Nhwc,
}

impl Layout {
    /// The name manifests use (`nchw`, `nhwc`).
    pub const fn name(self) -> &'static str {
        match self {
            Layout::Nchw => "nchw",
            Layout::Nhwc => "nhwc",
        }
    }
}

/// How a frame is fitted to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Scale each axis independently to fill the input (aspect ratio not kept).
    Stretch,
    /// Scale uniformly to fit, centre, and fill the borders with the pad value (YOLO-style).
    Letterbox,
}

/// A frame borrowed from a camera, decoder or file.
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    data: &'a [u8],
    width: usize,
    height: usize,
    stride: usize,
    format: PixelFormat,
}

impl<'a> ImageView<'a> {
    /// Wraps a frame with rows `stride` bytes apart; checks the buffer is large enough.
    pub fn new(data: &'a [u8], width: usize, height: usize, stride: usize, format: PixelFormat) -> Result<Self, Error> {
        if width == 0 || height == 0 {
            return Err(Error::BadImageGeometry);
        }
        let (row_bytes, rows) = match format {
            PixelFormat::Rgb8 | PixelFormat::Bgr8 => (width * 3, height),
            PixelFormat::Gray8 => (width, height),
            PixelFormat::Yuyv => {
                if !width.is_multiple_of(2) {
                    return Err(Error::BadImageGeometry);
                }
                (width * 2, height)
            }
            PixelFormat::Nv12 | PixelFormat::I420 => {
                if !width.is_multiple_of(2) || !height.is_multiple_of(2) || !stride.is_multiple_of(2) {
                    return Err(Error::BadImageGeometry);
                }
                (width, height + height / 2)
            }
        };
        if stride < row_bytes {
            return Err(Error::BadImageGeometry);
        }
        let needed = stride * (rows - 1) + row_bytes;
        if data.len() < needed {
            return Err(Error::LengthMismatch { expected: needed, actual: data.len() });
        }
        Ok(ImageView { data, width, height, stride, format })
    }

    /// Wraps a tightly packed frame (no row padding).
    pub fn packed(data: &'a [u8], width: usize, height: usize, format: PixelFormat) -> Result<Self, Error> {
        let stride = match format {
            PixelFormat::Rgb8 | PixelFormat::Bgr8 => width * 3,
            PixelFormat::Gray8 | PixelFormat::Nv12 | PixelFormat::I420 => width,
            PixelFormat::Yuyv => width * 2,
        };
        Self::new(data, width, height, stride, format)
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Pixel format.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// The bytes, rows `stride` apart.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Bytes from one row to the next (of the first plane for planar formats).
    pub fn stride(&self) -> usize {
        self.stride
    }
}

/// BT.601 limited-range YUV → RGB (the colour space of V4L2 YUYV and NV12 webcams).
#[inline]
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [f32; 3] {
    let c = 1.164_383 * (y as f32 - 16.0);
    let d = u as f32 - 128.0;
    let e = v as f32 - 128.0;
    [
        (c + 1.596_027 * e).clamp(0.0, 255.0),
        (c - 0.391_762 * d - 0.812_968 * e).clamp(0.0, 255.0),
        (c + 2.017_232 * d).clamp(0.0, 255.0),
    ]
}

/// Everything preprocessing needs to know about the model input (from the manifest).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreprocessConfig {
    /// Model input width in pixels.
    pub width: usize,
    /// Model input height in pixels.
    pub height: usize,
    /// Channel order and count.
    pub color: ColorOrder,
    /// Input layout.
    pub layout: Layout,
    /// Per-channel mean, subtracted after scaling pixels to 0..1 (in the model's channel order).
    pub mean: [f32; 3],
    /// Per-channel standard deviation, divides after the mean is subtracted; > 0.
    pub std: [f32; 3],
    /// Stretch or letterbox.
    pub resize: ResizeMode,
    /// Letterbox border value, 0..255 in every channel, before normalization.
    pub pad: u8,
}

impl PreprocessConfig {
    /// Number of elements the model input holds (`channels * height * width`).
    pub fn len(&self) -> usize {
        self.color.channels() * self.width * self.height
    }

    /// True for a zero-sized input (never valid).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks sizes and normalization constants.
    pub fn validate(&self) -> Result<(), Error> {
        if self.width == 0 || self.height == 0 {
            return Err(Error::InvalidConfig("input.size"));
        }
        let c = self.color.channels();
        if self.std[..c].iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::InvalidConfig("input.std"));
        }
        if self.mean[..c].iter().any(|m| !m.is_finite()) {
            return Err(Error::InvalidConfig("input.mean"));
        }
        Ok(())
    }
}

/// Where preprocessing writes: the model input buffer, in the model's element type.
#[derive(Debug)]
pub enum InputBuffer<'a> {
    /// Float input.
    F32(&'a mut [f32]),
    /// Quantized signed input: `q = round(x / scale) + zero_point`.
    I8 {
        /// The buffer.
        data: &'a mut [i8],
        /// Input scale.
        scale: f32,
        /// Input zero point.
        zero_point: i32,
    },
    /// Quantized unsigned input.
    U8 {
        /// The buffer.
        data: &'a mut [u8],
        /// Input scale.
        scale: f32,
        /// Input zero point.
        zero_point: i32,
    },
}

impl InputBuffer<'_> {
    fn len(&self) -> usize {
        match self {
            InputBuffer::F32(d) => d.len(),
            InputBuffer::I8 { data, .. } => data.len(),
            InputBuffer::U8 { data, .. } => data.len(),
        }
    }
}

/// Maps model-input coordinates back to source-frame pixels: `src = (model - pad) / scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    /// Model pixels per source pixel, horizontally.
    pub scale_x: f32,
    /// Model pixels per source pixel, vertically.
    pub scale_y: f32,
    /// Left border added by letterboxing, in model pixels.
    pub pad_x: f32,
    /// Top border added by letterboxing, in model pixels.
    pub pad_y: f32,
    /// Source frame width.
    pub source_width: f32,
    /// Source frame height.
    pub source_height: f32,
}

impl Transform {
    /// The identity for a frame of the given size.
    pub fn identity(width: f32, height: f32) -> Self {
        Transform { scale_x: 1.0, scale_y: 1.0, pad_x: 0.0, pad_y: 0.0, source_width: width, source_height: height }
    }

    /// Maps a box in model-input pixels to source pixels, clamped to the frame.
    pub fn to_source(&self, b: BBox) -> BBox {
        let fx = |x: f32| ((x - self.pad_x) / self.scale_x).clamp(0.0, self.source_width);
        let fy = |y: f32| ((y - self.pad_y) / self.scale_y).clamp(0.0, self.source_height);
        BBox { x0: fx(b.x0), y0: fy(b.y0), x1: fx(b.x1), y1: fy(b.y1) }
    }
}

/// Converts `image` into the model input described by `cfg`, writing into `out`.
///
/// `out` must hold exactly [`PreprocessConfig::len`] elements. Returns the transform that maps
/// boxes in model coordinates back to the frame.
pub fn preprocess(image: &ImageView<'_>, cfg: &PreprocessConfig, out: InputBuffer<'_>) -> Result<Transform, Error> {
    cfg.validate()?;
    if out.len() != cfg.len() {
        return Err(Error::LengthMismatch { expected: cfg.len(), actual: out.len() });
    }
    let (in_w, in_h) = (image.width as f32, image.height as f32);
    let (out_w, out_h) = (cfg.width, cfg.height);
    // Region of the input the frame covers, and the scale applied to it.
    let (scale_x, scale_y, x_start, y_start, region_w, region_h) = match cfg.resize {
        ResizeMode::Stretch => (out_w as f32 / in_w, out_h as f32 / in_h, 0, 0, out_w, out_h),
        ResizeMode::Letterbox => {
            let s = (out_w as f32 / in_w).min(out_h as f32 / in_h);
            let rw = (libm::roundf(in_w * s) as usize).clamp(1, out_w);
            let rh = (libm::roundf(in_h * s) as usize).clamp(1, out_h);
            (rw as f32 / in_w, rh as f32 / in_h, (out_w - rw) / 2, (out_h - rh) / 2, rw, rh)
        }
    };
    let channels = cfg.color.channels();
    // Normalization as one multiply-add per value: v * a + b.
    let mut norm = Norm { a: [0.0; 3], b: [0.0; 3] };
    for c in 0..channels {
        norm.a[c] = 1.0 / (255.0 * cfg.std[c]);
        norm.b[c] = -cfg.mean[c] / cfg.std[c];
    }
    let g = Geometry {
        out_w,
        out_h,
        inv_scale_x: 1.0 / scale_x,
        inv_scale_y: 1.0 / scale_y,
        x_start,
        y_start,
        region_w,
        region_h,
        max_x: image.width - 1,
        max_y: image.height - 1,
        pad: cfg.pad as f32,
    };
    // Dispatch once on pixel format and element type; the per-pixel loop is monomorphized.
    match out {
        InputBuffer::F32(o) => dispatch(image, &mut F32Out(o), &g, cfg, &norm),
        InputBuffer::I8 { data, scale, zero_point } => {
            dispatch(image, &mut QuantOut { data, scale, zero_point }, &g, cfg, &norm)
        }
        InputBuffer::U8 { data, scale, zero_point } => {
            dispatch(image, &mut QuantOut { data, scale, zero_point }, &g, cfg, &norm)
        }
    }
    Ok(Transform {
        scale_x,
        scale_y,
        pad_x: x_start as f32,
        pad_y: y_start as f32,
        source_width: in_w,
        source_height: in_h,
    })
}

/// Output geometry shared by every resampling loop.
struct Geometry {
    out_w: usize,
    out_h: usize,
    inv_scale_x: f32,
    inv_scale_y: f32,
    x_start: usize,
    y_start: usize,
    region_w: usize,
    region_h: usize,
    max_x: usize,
    max_y: usize,
    pad: f32,
}

/// Per-channel `v * a + b` normalization, in the model's channel order.
struct Norm {
    a: [f32; 3],
    b: [f32; 3],
}

/// Reads one pixel as RGB floats; one implementation per pixel format.
trait Pixels {
    fn rgb(&self, x: usize, y: usize) -> [f32; 3];
    /// Luma; formats that store it read it directly.
    #[inline(always)]
    fn luma(&self, x: usize, y: usize) -> f32 {
        let p = self.rgb(x, y);
        0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
    }
}

/// 3 bytes per pixel; `SWAP` for BGR.
struct Packed3<'a, const SWAP: bool>(&'a [u8], usize);
impl<const SWAP: bool> Pixels for Packed3<'_, SWAP> {
    #[inline(always)]
    fn rgb(&self, x: usize, y: usize) -> [f32; 3] {
        let i = y * self.1 + x * 3;
        let p = &self.0[i..i + 3];
        if SWAP {
            [p[2] as f32, p[1] as f32, p[0] as f32]
        } else {
            [p[0] as f32, p[1] as f32, p[2] as f32]
        }
    }
}

struct Gray<'a>(&'a [u8], usize);
impl Pixels for Gray<'_> {
    #[inline(always)]
    fn rgb(&self, x: usize, y: usize) -> [f32; 3] {
        let v = self.0[y * self.1 + x] as f32;
        [v, v, v]
    }
    #[inline(always)]
    fn luma(&self, x: usize, y: usize) -> f32 {
        self.0[y * self.1 + x] as f32
    }
}

struct Yuyv<'a>(&'a [u8], usize);
impl Pixels for Yuyv<'_> {
    #[inline(always)]
    fn rgb(&self, x: usize, y: usize) -> [f32; 3] {
        let pair = y * self.1 + (x / 2) * 4;
        let q = &self.0[pair..pair + 4];
        yuv_to_rgb(q[(x & 1) * 2], q[1], q[3])
    }
}

/// NV12 with its height, to find the chroma plane.
struct Nv12<'a>(&'a [u8], usize, usize);
impl Pixels for Nv12<'_> {
    #[inline(always)]
    fn rgb(&self, x: usize, y: usize) -> [f32; 3] {
        let uv = self.1 * (self.2 + y / 2) + (x & !1);
        yuv_to_rgb(self.0[y * self.1 + x], self.0[uv], self.0[uv + 1])
    }
}

/// I420 with its height: the U plane follows the Y plane, the V plane the U plane.
struct I420<'a>(&'a [u8], usize, usize);
impl Pixels for I420<'_> {
    #[inline(always)]
    fn rgb(&self, x: usize, y: usize) -> [f32; 3] {
        let (stride, h) = (self.1, self.2);
        let c = (y / 2) * (stride / 2) + x / 2;
        let u = stride * h + c;
        let v = u + (stride / 2) * (h / 2);
        yuv_to_rgb(self.0[y * stride + x], self.0[u], self.0[v])
    }
    #[inline(always)]
    fn luma(&self, x: usize, y: usize) -> f32 {
        // Luma as the other formats compute it (through RGB), so a model sees the same value.
        let p = self.rgb(x, y);
        0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
    }
}

/// Converts a frame of any format to packed RGB, 3 bytes per pixel, into `out` (resized to fit;
/// its capacity is reused). For snapshots and pictures, not for the per-frame path.
#[cfg(feature = "host")]
pub fn to_rgb8(image: &ImageView<'_>, out: &mut std::vec::Vec<u8>) {
    fn fill<P: Pixels>(px: &P, w: usize, h: usize, out: &mut [u8]) {
        for y in 0..h {
            for x in 0..w {
                let p = px.rgb(x, y);
                let i = (y * w + x) * 3;
                // Values are within 0..=255 already; +0.5 rounds.
                out[i] = (p[0] + 0.5) as u8;
                out[i + 1] = (p[1] + 0.5) as u8;
                out[i + 2] = (p[2] + 0.5) as u8;
            }
        }
    }
    let (w, h, d, st) = (image.width, image.height, image.data, image.stride);
    out.clear();
    out.resize(w * h * 3, 0);
    match image.format {
        PixelFormat::Rgb8 => fill(&Packed3::<false>(d, st), w, h, out),
        PixelFormat::Bgr8 => fill(&Packed3::<true>(d, st), w, h, out),
        PixelFormat::Gray8 => fill(&Gray(d, st), w, h, out),
        PixelFormat::Yuyv => fill(&Yuyv(d, st), w, h, out),
        PixelFormat::Nv12 => fill(&Nv12(d, st, h), w, h, out),
        PixelFormat::I420 => fill(&I420(d, st, h), w, h, out),
    }
}

/// Writes one normalized value; one implementation per element type.
trait Out {
    fn put(&mut self, i: usize, v: f32);
}

struct F32Out<'a>(&'a mut [f32]);
impl Out for F32Out<'_> {
    #[inline(always)]
    fn put(&mut self, i: usize, v: f32) {
        self.0[i] = v;
    }
}

/// Quantizes with `round(v / scale) + zero_point`, saturating (as [`quantize_i8`]/[`quantize_u8`]).
struct QuantOut<'a, T> {
    data: &'a mut [T],
    scale: f32,
    zero_point: i32,
}
impl Out for QuantOut<'_, i8> {
    #[inline(always)]
    fn put(&mut self, i: usize, v: f32) {
        self.data[i] = quantize_i8(v, self.scale, self.zero_point);
    }
}
impl Out for QuantOut<'_, u8> {
    #[inline(always)]
    fn put(&mut self, i: usize, v: f32) {
        self.data[i] = quantize_u8(v, self.scale, self.zero_point);
    }
}

fn dispatch<O: Out>(image: &ImageView<'_>, out: &mut O, g: &Geometry, cfg: &PreprocessConfig, n: &Norm) {
    let (d, st) = (image.data, image.stride);
    match image.format {
        PixelFormat::Rgb8 => resample(&Packed3::<false>(d, st), out, g, cfg, n),
        PixelFormat::Bgr8 => resample(&Packed3::<true>(d, st), out, g, cfg, n),
        PixelFormat::Gray8 => resample(&Gray(d, st), out, g, cfg, n),
        PixelFormat::Yuyv => resample(&Yuyv(d, st), out, g, cfg, n),
        PixelFormat::Nv12 => resample(&Nv12(d, st, image.height), out, g, cfg, n),
        PixelFormat::I420 => resample(&I420(d, st, image.height), out, g, cfg, n),
    }
}

fn resample<P: Pixels, O: Out>(px: &P, out: &mut O, g: &Geometry, cfg: &PreprocessConfig, n: &Norm) {
    if cfg.color == ColorOrder::Gray {
        let (a, b) = (n.a[0], n.b[0]);
        for_each_tap(g, |p, t| match t {
            Some(t) => {
                let (l00, l01) = (px.luma(t.x0, t.y0), px.luma(t.x1, t.y0));
                let (l10, l11) = (px.luma(t.x0, t.y1), px.luma(t.x1, t.y1));
                let top = l00 + (l01 - l00) * t.wx;
                let bottom = l10 + (l11 - l10) * t.wx;
                out.put(p, (top + (bottom - top) * t.wy) * a + b);
            }
            None => out.put(p, g.pad * a + b),
        });
        return;
    }
    let swap = cfg.color == ColorOrder::Bgr;
    // Index of channel c at pixel p: NCHW c*plane + p, NHWC 3p + c.
    let (pixel_step, channel_step) = match cfg.layout {
        Layout::Nchw => (1, g.out_w * g.out_h),
        Layout::Nhwc => (3, 1),
    };
    for_each_tap(g, |p, t| {
        let v = match t {
            Some(t) => {
                let (p00, p01) = (px.rgb(t.x0, t.y0), px.rgb(t.x1, t.y0));
                let (p10, p11) = (px.rgb(t.x0, t.y1), px.rgb(t.x1, t.y1));
                let mut v = [0.0f32; 3];
                for c in 0..3 {
                    let top = p00[c] + (p01[c] - p00[c]) * t.wx;
                    let bottom = p10[c] + (p11[c] - p10[c]) * t.wx;
                    v[c] = top + (bottom - top) * t.wy;
                }
                v
            }
            None => [g.pad; 3],
        };
        let base = p * pixel_step;
        for c in 0..3 {
            let x = if swap { v[2 - c] } else { v[c] };
            out.put(base + c * channel_step, x * n.a[c] + n.b[c]);
        }
    });
}

/// The four source pixels of one output pixel and their weights.
#[derive(Clone, Copy)]
struct Tap {
    x0: usize,
    x1: usize,
    y0: usize,
    y1: usize,
    wx: f32,
    wy: f32,
}

/// Calls `f(pixel index, tap)` for every output pixel in row-major order; `None` on letterbox borders.
#[inline(always)]
fn for_each_tap(g: &Geometry, mut f: impl FnMut(usize, Option<Tap>)) {
    let (max_x, max_y) = (g.max_x as f32, g.max_y as f32);
    for y in 0..g.out_h {
        let row = y * g.out_w;
        if y < g.y_start || y >= g.y_start + g.region_h {
            for x in 0..g.out_w {
                f(row + x, None);
            }
            continue;
        }
        let sy = (((y - g.y_start) as f32 + 0.5) * g.inv_scale_y - 0.5).clamp(0.0, max_y);
        let y0 = sy as usize;
        let y1 = (y0 + 1).min(g.max_y);
        let wy = sy - y0 as f32;
        for x in 0..g.x_start {
            f(row + x, None);
        }
        for x in g.x_start..g.x_start + g.region_w {
            let sx = (((x - g.x_start) as f32 + 0.5) * g.inv_scale_x - 0.5).clamp(0.0, max_x);
            let x0 = sx as usize;
            let x1 = (x0 + 1).min(g.max_x);
            f(row + x, Some(Tap { x0, x1, y0, y1, wx: sx - x0 as f32, wy }));
        }
        for x in g.x_start + g.region_w..g.out_w {
            f(row + x, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(w: usize, h: usize, color: ColorOrder, layout: Layout) -> PreprocessConfig {
        PreprocessConfig {
            width: w,
            height: h,
            color,
            layout,
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
            resize: ResizeMode::Stretch,
            pad: 0,
        }
    }

    #[test]
    fn same_size_rgb_is_copied_in_nchw_and_nhwc() {
        let px: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let img = ImageView::packed(&px, 2, 2, PixelFormat::Rgb8).unwrap();
        let mut out = [0.0f32; 12];
        preprocess(&img, &cfg(2, 2, ColorOrder::Rgb, Layout::Nhwc), InputBuffer::F32(&mut out)).unwrap();
        let expected: [f32; 12] = core::array::from_fn(|i| px[i] as f32);
        assert_eq!(out, expected);
        preprocess(&img, &cfg(2, 2, ColorOrder::Rgb, Layout::Nchw), InputBuffer::F32(&mut out)).unwrap();
        assert_eq!(out, [1.0, 4.0, 7.0, 10.0, 2.0, 5.0, 8.0, 11.0, 3.0, 6.0, 9.0, 12.0]);
        preprocess(&img, &cfg(2, 2, ColorOrder::Bgr, Layout::Nhwc), InputBuffer::F32(&mut out)).unwrap();
        assert_eq!(&out[..3], &[3.0, 2.0, 1.0]);
    }

    #[test]
    fn bgr_source_matches_rgb_source() {
        let rgb: [u8; 6] = [10, 20, 30, 40, 50, 60];
        let bgr: [u8; 6] = [30, 20, 10, 60, 50, 40];
        let c = cfg(1, 1, ColorOrder::Rgb, Layout::Nchw);
        let (mut a, mut b) = ([0.0f32; 3], [0.0f32; 3]);
        preprocess(&ImageView::packed(&rgb, 2, 1, PixelFormat::Rgb8).unwrap(), &c, InputBuffer::F32(&mut a)).unwrap();
        preprocess(&ImageView::packed(&bgr, 2, 1, PixelFormat::Bgr8).unwrap(), &c, InputBuffer::F32(&mut b)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, [25.0, 35.0, 45.0]);
    }

    #[test]
    fn downscale_by_two_averages_two_by_two_blocks() {
        let px: [u8; 16] = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150];
        let img = ImageView::packed(&px, 4, 4, PixelFormat::Gray8).unwrap();
        let mut out = [0.0f32; 4];
        preprocess(&img, &cfg(2, 2, ColorOrder::Gray, Layout::Nchw), InputBuffer::F32(&mut out)).unwrap();
        for (o, e) in out.iter().zip([25.0, 45.0, 105.0, 125.0]) {
            assert!((o - e).abs() < 1e-4, "{out:?}");
        }
    }

    #[test]
    fn normalization_applies_mean_and_std_per_channel() {
        let px: [u8; 3] = [255, 0, 51];
        let img = ImageView::packed(&px, 1, 1, PixelFormat::Rgb8).unwrap();
        let mut c = cfg(1, 1, ColorOrder::Rgb, Layout::Nchw);
        c.mean = [0.5, 0.5, 0.2];
        c.std = [0.5, 0.25, 0.1];
        let mut out = [0.0f32; 3];
        preprocess(&img, &c, InputBuffer::F32(&mut out)).unwrap();
        for (o, e) in out.iter().zip([1.0, -2.0, 0.0]) {
            assert!((o - e).abs() < 1e-5, "{out:?}");
        }
    }

    #[test]
    fn yuyv_and_nv12_decode_to_the_same_colours() {
        // 2x2 frame, all pixels Y=81 U=90 V=240 (pure red in BT.601).
        let yuyv: [u8; 8] = [81, 90, 81, 240, 81, 90, 81, 240];
        let nv12: [u8; 6] = [81, 81, 81, 81, 90, 240];
        let c = cfg(2, 2, ColorOrder::Rgb, Layout::Nhwc);
        let (mut a, mut b) = ([0.0f32; 12], [0.0f32; 12]);
        preprocess(&ImageView::packed(&yuyv, 2, 2, PixelFormat::Yuyv).unwrap(), &c, InputBuffer::F32(&mut a)).unwrap();
        preprocess(&ImageView::packed(&nv12, 2, 2, PixelFormat::Nv12).unwrap(), &c, InputBuffer::F32(&mut b)).unwrap();
        assert_eq!(a, b);
        assert!(a[0] > 250.0 && a[1] < 2.0 && a[2] < 2.0, "{a:?}");
    }

    #[test]
    fn letterbox_pads_and_the_transform_maps_boxes_back() {
        // 4x2 frame into 4x4: scale 1, two rows of padding above and below... centred: pad_y = 1.
        let px = [200u8; 8];
        let img = ImageView::packed(&px, 4, 2, PixelFormat::Gray8).unwrap();
        let mut c = cfg(4, 4, ColorOrder::Gray, Layout::Nchw);
        c.resize = ResizeMode::Letterbox;
        c.pad = 114;
        let mut out = [0.0f32; 16];
        let t = preprocess(&img, &c, InputBuffer::F32(&mut out)).unwrap();
        assert_eq!(&out[..4], &[114.0; 4]);
        assert_eq!(&out[4..12], &[200.0; 8]);
        assert_eq!(&out[12..], &[114.0; 4]);
        assert_eq!((t.pad_x, t.pad_y, t.scale_x, t.scale_y), (0.0, 1.0, 1.0, 1.0));
        let b = t.to_source(BBox { x0: 1.0, y0: 1.0, x1: 3.0, y1: 5.0 });
        assert_eq!(b, BBox { x0: 1.0, y0: 0.0, x1: 3.0, y1: 2.0 });
    }

    #[test]
    fn quantized_input_is_written_directly() {
        let px = [0u8, 255];
        let img = ImageView::packed(&px, 2, 1, PixelFormat::Gray8).unwrap();
        let mut c = cfg(2, 1, ColorOrder::Gray, Layout::Nchw);
        c.std = [1.0; 3];
        let mut q = [0i8; 2];
        preprocess(&img, &c, InputBuffer::I8 { data: &mut q, scale: 1.0 / 255.0, zero_point: -128 }).unwrap();
        assert_eq!(q, [-128, 127]);
    }

    #[test]
    fn bad_buffers_are_errors_not_panics() {
        let px = [0u8; 5];
        assert_eq!(
            ImageView::packed(&px, 2, 1, PixelFormat::Rgb8).unwrap_err(),
            Error::LengthMismatch { expected: 6, actual: 5 }
        );
        assert_eq!(ImageView::packed(&px, 3, 1, PixelFormat::Yuyv).unwrap_err(), Error::BadImageGeometry);
        let img = ImageView::packed(&px, 5, 1, PixelFormat::Gray8).unwrap();
        let mut out = [0.0f32; 3];
        let err = preprocess(&img, &cfg(2, 2, ColorOrder::Gray, Layout::Nchw), InputBuffer::F32(&mut out));
        assert_eq!(err.unwrap_err(), Error::LengthMismatch { expected: 4, actual: 3 });
        let mut c = cfg(1, 1, ColorOrder::Gray, Layout::Nchw);
        c.std = [0.0; 3];
        let err = preprocess(&img, &c, InputBuffer::F32(&mut out[..1]));
        assert_eq!(err.unwrap_err(), Error::InvalidConfig("input.std"));
    }
}
