//! The motion gate: decides, before preprocessing, whether a frame is worth running the model on.
//!
//! A small grey copy of each frame (at most [`GRID_MAX`] cells a side, each the mean of up to 4×4
//! samples of its pixels: sensor noise averages out) is compared with a running background. A
//! cell changed when it differs from the background by more than `threshold` grey levels after
//! the frame's mean difference is taken out (a cloud or the camera's exposure moving the whole
//! picture is not motion). Changed cells are grouped into 4-connected regions; motion is a region
//! of at least `min_area` of the frame. When more than half the frame changes at once (lights
//! switched, the camera's infrared mode), the background is taken anew and the frame counts as
//! motion, so the model sees the new scene once. The background follows the scene (1/16 of the
//! way each frame, so that slow movement adds up against it), and a changed cell that stopped
//! changing since the last frame (within `threshold / 16` levels, at least 1) is taken into it at once: a car
//! that parks is still from the next frame on, and the gate's refresh keeps it known to the
//! model. Masked cells (a swaying tree, a timestamp overlay) never count.
//!
//! Fixed buffers, no allocation: the detector is about 63 KiB, owned by the pipeline.

use super::preprocess::{ImageView, PixelFormat};
use super::region::Region;
use heapless::Vec;

/// Most cells of the grey copy along the frame's longer side.
pub const GRID_MAX: usize = 96;
const CELLS: usize = GRID_MAX * GRID_MAX;
/// Most mask regions.
pub const MAX_MASKS: usize = 8;
/// Fraction of the frame that changing at once means the light changed, not something moved.
const RECALIBRATE_FRACTION: u32 = 2; // more than 1/2
/// The background moves 1/2^ALPHA_SHIFT of the way to each frame.
const ALPHA_SHIFT: u32 = 4;

const MASKED: u8 = 1;
const CHANGED: u8 = 2;
const SEEN: u8 = 4;

/// How sensitive the detector is, and where it looks.
#[derive(Debug, Clone, PartialEq)]
pub struct MotionConfig {
    /// Grey levels (0-255) a cell must differ from the background by to count as changed.
    pub threshold: u8,
    /// Smallest connected changed area that is motion, as a fraction of the frame (0.0-1.0).
    pub min_area: f32,
    /// Regions where changes are ignored.
    pub masks: Vec<Region, MAX_MASKS>,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig { threshold: 25, min_area: 0.001, masks: Vec::new() }
    }
}

/// What the detector saw on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Motion {
    /// Whether the frame has motion.
    pub moving: bool,
    /// Fraction of the unmasked frame that changed.
    pub changed: f32,
    /// Fraction of the frame covered by the largest connected changed region.
    pub largest: f32,
    /// The background was taken anew on this frame (the first frame, a new frame size, or more
    /// than half the frame changing at once).
    pub recalibrated: bool,
}

/// A frame-difference motion detector over a running background.
pub struct MotionDetector {
    config: MotionConfig,
    frame: (usize, usize),
    cell: usize,
    grid: (usize, usize),
    primed: bool,
    current: [u8; CELLS],
    previous: [u8; CELLS],
    background: [u16; CELLS],
    flags: [u8; CELLS],
    stack: [u16; CELLS],
}

impl MotionDetector {
    /// A detector that has seen no frame yet.
    pub fn new(config: MotionConfig) -> Self {
        MotionDetector {
            config,
            frame: (0, 0),
            cell: 1,
            grid: (0, 0),
            primed: false,
            current: [0; CELLS],
            previous: [0; CELLS],
            background: [0; CELLS],
            flags: [0; CELLS],
            stack: [0; CELLS],
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MotionConfig {
        &self.config
    }

    /// Forgets the background: the next frame is taken as the new one.
    pub fn reset(&mut self) {
        self.primed = false;
    }

    /// Compares `image` with the background, then moves the background towards it.
    pub fn detect(&mut self, image: &ImageView<'_>) -> Motion {
        if self.frame != (image.width(), image.height()) {
            self.layout(image.width(), image.height());
        }
        self.sample(image);
        let n = self.grid.0 * self.grid.1;
        let motion = self.compare(n);
        self.previous[..n].copy_from_slice(&self.current[..n]);
        motion
    }

    /// Compares `current` with the background and the previous frame.
    fn compare(&mut self, n: usize) -> Motion {
        if !self.primed {
            self.take_background(n);
            return Motion { recalibrated: true, ..Motion::default() };
        }
        // The frame's mean difference (in 1/256 grey levels) over the cells that count.
        let (mut sum, mut counted) = (0i64, 0u32);
        for i in 0..n {
            if self.flags[i] & MASKED == 0 {
                sum += ((self.current[i] as i64) << 8) - self.background[i] as i64;
                counted += 1;
            }
        }
        if counted == 0 {
            self.blend(n);
            return Motion::default();
        }
        let mean = sum / counted as i64;
        let threshold = (self.config.threshold as i64) << 8;
        let settled = (self.config.threshold / 16).max(1);
        let mut changed = 0u32;
        for i in 0..n {
            self.flags[i] &= MASKED;
            if self.flags[i] & MASKED == 0 {
                let d = ((self.current[i] as i64) << 8) - self.background[i] as i64 - mean;
                if d.abs() > threshold {
                    self.flags[i] |= CHANGED;
                    changed += 1;
                }
            }
        }
        let changed_fraction = changed as f32 / counted as f32;
        if changed * RECALIBRATE_FRACTION > counted {
            self.take_background(n);
            return Motion { moving: true, changed: changed_fraction, largest: changed_fraction, recalibrated: true };
        }
        // Changed against the background but not since the last frame: something that arrived
        // and stopped. It becomes background now rather than over the next seconds.
        for i in 0..n {
            if self.flags[i] & CHANGED != 0 && self.current[i].abs_diff(self.previous[i]) <= settled {
                self.flags[i] &= !CHANGED;
                self.background[i] = (self.current[i] as u16) << 8;
                changed -= 1;
            }
        }
        let changed_fraction = changed as f32 / counted as f32;
        let largest = self.largest_region();
        self.blend(n);
        let min_cells = (self.config.min_area * n as f32).max(1.0);
        Motion {
            moving: largest as f32 >= min_cells,
            changed: changed_fraction,
            largest: largest as f32 / n as f32,
            recalibrated: false,
        }
    }

    /// Picks the grid for a `width`×`height` frame and rasterizes the masks onto it.
    fn layout(&mut self, width: usize, height: usize) {
        self.frame = (width, height);
        self.cell = width.max(height).div_ceil(GRID_MAX).max(1);
        self.grid = (width.div_ceil(self.cell), height.div_ceil(self.cell));
        let (gw, gh) = self.grid;
        for cy in 0..gh {
            for cx in 0..gw {
                let x = (((cx * self.cell) as f32 + self.cell as f32 / 2.0) / width as f32).min(1.0);
                let y = (((cy * self.cell) as f32 + self.cell as f32 / 2.0) / height as f32).min(1.0);
                let masked = self.config.masks.iter().any(|m| m.contains(x, y));
                self.flags[cy * gw + cx] = if masked { MASKED } else { 0 };
            }
        }
        self.primed = false;
    }

    /// Fills `current` with the mean luma of each cell (up to 4×4 samples a cell).
    fn sample(&mut self, image: &ImageView<'_>) {
        let (gw, gh) = self.grid;
        let (w, h) = self.frame;
        let step = (self.cell / 4).max(1);
        for cy in 0..gh {
            let y0 = cy * self.cell;
            let y1 = (y0 + self.cell).min(h);
            for cx in 0..gw {
                let x0 = cx * self.cell;
                let x1 = (x0 + self.cell).min(w);
                let (mut sum, mut count) = (0u32, 0u32);
                for y in (y0..y1).step_by(step) {
                    for x in (x0..x1).step_by(step) {
                        sum += luma(image, x, y) as u32;
                        count += 1;
                    }
                }
                self.current[cy * gw + cx] = (sum / count.max(1)) as u8;
            }
        }
    }

    fn take_background(&mut self, n: usize) {
        for i in 0..n {
            self.background[i] = (self.current[i] as u16) << 8;
            self.flags[i] &= MASKED;
        }
        self.primed = true;
    }

    fn blend(&mut self, n: usize) {
        for i in 0..n {
            let target = (self.current[i] as i32) << 8;
            let b = self.background[i] as i32;
            self.background[i] = (b + ((target - b) >> ALPHA_SHIFT)) as u16;
        }
    }

    /// Cells in the largest 4-connected region of changed cells.
    fn largest_region(&mut self) -> usize {
        let (gw, gh) = self.grid;
        let mut best = 0;
        for start in 0..gw * gh {
            if self.flags[start] & (CHANGED | SEEN) != CHANGED {
                continue;
            }
            self.flags[start] |= SEEN;
            self.stack[0] = start as u16;
            let (mut top, mut size) = (1usize, 0usize);
            while top > 0 {
                top -= 1;
                let i = self.stack[top] as usize;
                size += 1;
                let (x, y) = (i % gw, i / gw);
                let mut visit = |j: usize, flags: &mut [u8; CELLS], stack: &mut [u16; CELLS]| {
                    if flags[j] & (CHANGED | SEEN) == CHANGED {
                        flags[j] |= SEEN;
                        // Every cell is pushed at most once (marked SEEN), so `top` < CELLS.
                        stack[top] = j as u16;
                        top += 1;
                    }
                };
                if x > 0 {
                    visit(i - 1, &mut self.flags, &mut self.stack);
                }
                if x + 1 < gw {
                    visit(i + 1, &mut self.flags, &mut self.stack);
                }
                if y > 0 {
                    visit(i - gw, &mut self.flags, &mut self.stack);
                }
                if y + 1 < gh {
                    visit(i + gw, &mut self.flags, &mut self.stack);
                }
            }
            best = best.max(size);
        }
        best
    }
}

/// The luma of pixel `(x, y)` (BT.601 weights for RGB; the Y plane as it is for YUV).
fn luma(image: &ImageView<'_>, x: usize, y: usize) -> u8 {
    let d = image.data();
    let row = y * image.stride();
    match image.format() {
        PixelFormat::Rgb8 | PixelFormat::Bgr8 => {
            let p = row + 3 * x;
            let (r, b) = if image.format() == PixelFormat::Rgb8 { (d[p], d[p + 2]) } else { (d[p + 2], d[p]) };
            ((77 * r as u32 + 150 * d[p + 1] as u32 + 29 * b as u32) >> 8) as u8
        }
        PixelFormat::Gray8 | PixelFormat::Nv12 | PixelFormat::I420 => d[row + x],
        PixelFormat::Yuyv => d[row + 2 * x],
    }
}

/// Why the gate let a frame through to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The first frame of the run (or of a new frame size, or after the light changed).
    Scene,
    /// Motion in the frame.
    Motion,
    /// No motion, but `refresh` has passed since the model last ran: stationary objects stay known.
    Refresh,
}

/// The motion detector with its policy: which frames go to the model.
pub struct MotionGate {
    detector: MotionDetector,
    refresh_ms: u64,
    last_run_ms: Option<u64>,
    last: Motion,
}

impl MotionGate {
    /// A gate that also lets a frame through every `refresh_ms` of the pipeline's clock.
    pub fn new(config: MotionConfig, refresh_ms: u64) -> Self {
        MotionGate { detector: MotionDetector::new(config), refresh_ms, last_run_ms: None, last: Motion::default() }
    }

    /// What the detector saw on the last frame.
    pub fn last(&self) -> Motion {
        self.last
    }

    /// Whether the frame taken at `clock_ms` (the pipeline's clock) goes to the model, and why;
    /// `None`: a still frame, the last detections stand.
    pub fn admit(&mut self, image: &ImageView<'_>, clock_ms: u64) -> Option<Wake> {
        let m = self.detector.detect(image);
        self.last = m;
        let wake = if m.recalibrated || self.last_run_ms.is_none() {
            Some(Wake::Scene)
        } else if m.moving {
            Some(Wake::Motion)
        } else if self.last_run_ms.is_some_and(|t| clock_ms.saturating_sub(t) >= self.refresh_ms) {
            Some(Wake::Refresh)
        } else {
            None
        };
        if wake.is_some() {
            self.last_run_ms = Some(clock_ms);
        }
        wake
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 320;
    const H: usize = 180;

    /// A grey frame of `level` with noise of ±`noise` (a fixed pseudo-random sequence per `seed`)
    /// and a dark `size`-pixel square at `at`.
    fn frame(level: u8, noise: u8, seed: u32, square: Option<((usize, usize), usize)>) -> [u8; W * H] {
        let mut f = [0u8; W * H];
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        for (i, p) in f.iter_mut().enumerate() {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let n = if noise == 0 { 0 } else { (s % (2 * noise as u32 + 1)) as i32 - noise as i32 };
            let (x, y) = (i % W, i / W);
            let inside = square.is_some_and(|((sx, sy), size)| x >= sx && x < sx + size && y >= sy && y < sy + size);
            let base = if inside { 30 } else { level as i32 };
            *p = (base + n).clamp(0, 255) as u8;
        }
        f
    }

    fn detect(d: &mut MotionDetector, f: &[u8]) -> Motion {
        d.detect(&ImageView::packed(f, W, H, PixelFormat::Gray8).unwrap())
    }

    #[test]
    fn noise_is_still_and_a_moving_square_is_motion() {
        let mut d = MotionDetector::new(MotionConfig::default());
        assert!(detect(&mut d, &frame(128, 12, 0, None)).recalibrated);
        for k in 1..10 {
            let m = detect(&mut d, &frame(128, 12, k, None));
            assert!(!m.moving && m.changed == 0.0, "sensor noise is not motion: {m:?}");
        }
        // A 16-pixel square (0.44 % of the frame) appears, then moves.
        let m = detect(&mut d, &frame(128, 12, 10, Some(((100, 60), 16))));
        assert!(m.moving && m.largest > 0.001, "{m:?}");
        let m = detect(&mut d, &frame(128, 12, 11, Some(((140, 60), 16))));
        assert!(m.moving, "{m:?}");
    }

    #[test]
    fn small_changes_under_min_area_are_not_motion() {
        let config = MotionConfig { min_area: 0.05, ..MotionConfig::default() };
        let mut d = MotionDetector::new(config);
        detect(&mut d, &frame(128, 0, 0, None));
        let m = detect(&mut d, &frame(128, 0, 0, Some(((100, 60), 16))));
        assert!(!m.moving && m.changed > 0.0, "{m:?}");
    }

    #[test]
    fn a_brightness_change_of_the_whole_frame_is_not_motion() {
        let mut d = MotionDetector::new(MotionConfig::default());
        detect(&mut d, &frame(100, 4, 0, None));
        let m = detect(&mut d, &frame(160, 4, 1, None));
        assert!(!m.moving && !m.recalibrated, "exposure moved the whole frame: {m:?}");
    }

    #[test]
    fn most_of_the_frame_changing_takes_a_new_background() {
        let mut d = MotionDetector::new(MotionConfig::default());
        detect(&mut d, &frame(128, 0, 0, None));
        // Stripes, dark and bright, over the whole frame: not a change of exposure (the mean
        // stays), but the light changed (or the camera moved).
        let mut stripes = [0u8; W * H];
        for (i, p) in stripes.iter_mut().enumerate() {
            *p = if ((i % W) / 20).is_multiple_of(2) { 30 } else { 226 };
        }
        let m = detect(&mut d, &stripes);
        assert!(m.recalibrated && m.moving, "{m:?}");
        let m = detect(&mut d, &stripes);
        assert!(!m.moving && m.changed == 0.0, "the new background holds: {m:?}");
    }

    #[test]
    fn motion_inside_a_mask_is_ignored() {
        let mut masks = Vec::new();
        masks.push(Region::new(&[(0.25, 0.25), (0.5, 0.25), (0.5, 0.6), (0.25, 0.6)]).unwrap()).unwrap();
        let mut d = MotionDetector::new(MotionConfig { masks, ..MotionConfig::default() });
        detect(&mut d, &frame(128, 0, 0, None));
        // Inside the mask (x 80..160, y 45..108).
        assert!(!detect(&mut d, &frame(128, 0, 0, Some(((100, 60), 16)))).moving);
        // Outside it.
        assert!(detect(&mut d, &frame(128, 0, 0, Some(((250, 60), 16)))).moving);
    }

    #[test]
    fn a_parked_object_becomes_background() {
        let mut d = MotionDetector::new(MotionConfig::default());
        detect(&mut d, &frame(128, 0, 0, None));
        let parked = frame(128, 0, 0, Some(((100, 60), 40)));
        assert!(detect(&mut d, &parked).moving, "it arrives");
        let m = detect(&mut d, &parked);
        assert!(!m.moving && m.changed == 0.0, "it stopped: still from the next frame on: {m:?}");
        // A slow mover (3 levels a frame on its cells) adds up against the background.
        let mut d = MotionDetector::new(MotionConfig::default());
        let mut seen = false;
        for k in 0..40u8 {
            let mut f = frame(128, 0, 0, None);
            for y in 60..100 {
                for x in 100..140 {
                    f[y * W + x] = 128 - 3 * k;
                }
            }
            seen |= detect(&mut d, &f).moving;
        }
        assert!(seen, "slow change is motion once it adds up");
    }

    #[test]
    fn the_gate_runs_the_model_on_the_first_frame_on_motion_and_every_refresh() {
        let mut g = MotionGate::new(MotionConfig::default(), 2000);
        let still = frame(128, 0, 0, None);
        let moved = frame(128, 0, 0, Some(((100, 60), 16)));
        fn view(f: &[u8; W * H]) -> ImageView<'_> {
            ImageView::packed(&f[..], W, H, PixelFormat::Gray8).unwrap()
        }
        assert_eq!(g.admit(&view(&still), 0), Some(Wake::Scene));
        assert_eq!(g.admit(&view(&still), 200), None);
        assert_eq!(g.admit(&view(&moved), 400), Some(Wake::Motion));
        // The square stays, 200 ms a frame: still frames, and a refresh every 2 s.
        let mut wakes = [None; 30];
        for (k, w) in wakes.iter_mut().enumerate() {
            *w = g.admit(&view(&moved), 600 + 200 * k as u64);
        }
        let refreshes: usize = wakes.iter().filter(|w| **w == Some(Wake::Refresh)).count();
        assert_eq!(wakes.iter().filter(|w| w.is_none()).count() + refreshes, 30, "{wakes:?}");
        assert_eq!(refreshes, 3, "6 s of still frames, refresh 2 s: {wakes:?}");
    }

    #[test]
    fn every_pixel_format_gives_the_same_grey() {
        let rgb: [u8; 12] = [200, 100, 50, 200, 100, 50, 200, 100, 50, 200, 100, 50];
        let bgr: [u8; 12] = [50, 100, 200, 50, 100, 200, 50, 100, 200, 50, 100, 200];
        let a = luma(&ImageView::packed(&rgb, 2, 2, PixelFormat::Rgb8).unwrap(), 1, 1);
        let b = luma(&ImageView::packed(&bgr, 2, 2, PixelFormat::Bgr8).unwrap(), 1, 1);
        assert_eq!(a, b);
        assert_eq!(a, ((77 * 200 + 150 * 100 + 29 * 50) >> 8) as u8);
        let yuyv: [u8; 8] = [10, 128, 20, 128, 30, 128, 40, 128];
        assert_eq!(luma(&ImageView::packed(&yuyv, 2, 2, PixelFormat::Yuyv).unwrap(), 1, 1), 40);
    }
}
