//! microWakeWord's decision, as ESPHome and pymicro-wakeword take it: frontend features quantized
//! with the model's input scale and zero point, `stride` of them per streaming model run (no
//! overlap: the model keeps its own state), and a detection when the mean of the last
//! `sliding_window` probabilities exceeds the cutoff. After a detection the window starts empty
//! and nothing fires for `refractory_ms`, so one utterance gives one event.

use crate::error::Error;
use crate::event::Detection;

/// Wake-word decision parameters (from the model's JSON, `micro` section).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WakeWordConfig {
    /// Mean probability that must be exceeded (`probability_cutoff`), in 0..=1.
    pub cutoff: f64,
    /// Probabilities averaged (`sliding_window_size`, ≥ 1).
    pub window: usize,
    /// Feature rows per model run (the input's second axis).
    pub stride: usize,
    /// Features per row (the frontend's channels).
    pub channels: usize,
    /// Milliseconds after a detection during which no other fires.
    pub refractory_ms: u64,
}

/// The model input's quantization: `q = round(feature × FEATURE_SCALE / scale + zero)`, clamped to
/// the i8 range (ESPHome clamps; pymicro-wakeword would wrap, which real features never reach).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputQuant {
    /// Input scale.
    pub scale: f32,
    /// Input zero point (in the i8 the engine holds).
    pub zero: i32,
}

impl InputQuant {
    /// One frontend value as the model's int8 input.
    pub fn quantize(&self, value: u16) -> i8 {
        // In f64, rounding half to even, as numpy does on pymicro-features' floats.
        let x = value as f64 * super::micro_frontend::FEATURE_SCALE as f64 / self.scale as f64 + self.zero as f64;
        libm::rint(x).clamp(-128.0, 127.0) as i8
    }

    /// The same function as a table: entry `q + 128` is the least value that quantizes to `q` or
    /// more (the function never decreases), so a quantization is a binary search of 8 integer
    /// comparisons instead of double arithmetic (software floating point on a Cortex-M).
    pub fn thresholds(&self) -> [u32; 256] {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let q = i as i32 - 128;
            // Least v in 0..=65536 with quantize(v) >= q (65536: none).
            let (mut lo, mut hi) = (0u32, 65536u32);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if self.quantize(mid as u16) as i32 >= q {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            *slot = lo;
        }
        t
    }
}

/// `quantize` through [`InputQuant::thresholds`]: the greatest `q` whose threshold is ≤ `value`.
fn quantize_by(thresholds: &[u32; 256], value: u16) -> i8 {
    // thresholds[0] = 0 (everything quantizes to −128 or more): the answer is in 0..256.
    let (mut lo, mut hi) = (0usize, 255usize);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if thresholds[mid] <= value as u32 {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    (lo as i32 - 128) as i8
}

/// Decision state for windows of up to `WINDOW` probabilities.
#[derive(Debug, Clone)]
pub struct WakeWord<const WINDOW: usize> {
    cfg: WakeWordConfig,
    thresholds: [u32; 256],
    probabilities: [f32; WINDOW],
    next: usize,
    filled: usize,
    rows: usize,
    last_fire_ms: Option<u64>,
}

impl<const WINDOW: usize> WakeWord<WINDOW> {
    /// Checks the parameters, naming the one at fault.
    pub fn new(cfg: WakeWordConfig, quant: InputQuant) -> Result<Self, Error> {
        if !(0.0..=1.0).contains(&cfg.cutoff) {
            return Err(Error::InvalidConfig("probability_cutoff"));
        }
        if cfg.window == 0 || cfg.window > WINDOW {
            return Err(Error::InvalidConfig("sliding_window_size"));
        }
        if cfg.stride == 0 || cfg.channels == 0 {
            return Err(Error::InvalidConfig("stride"));
        }
        if !(quant.scale.is_finite() && quant.scale > 0.0) {
            return Err(Error::InvalidScale);
        }
        let thresholds = quant.thresholds();
        Ok(WakeWord { cfg, thresholds, probabilities: [0.0; WINDOW], next: 0, filled: 0, rows: 0, last_fire_ms: None })
    }

    /// The parameters.
    pub fn config(&self) -> &WakeWordConfig {
        &self.cfg
    }

    /// Values in one model input (`stride × channels`).
    pub fn input_len(&self) -> usize {
        self.cfg.stride * self.cfg.channels
    }

    /// Quantizes one row of features into its place in `input`; `true` when the input is complete
    /// and the model is to run.
    pub fn push_features(&mut self, features: &[u16], input: &mut [i8]) -> Result<bool, Error> {
        let c = self.cfg.channels;
        if features.len() != c {
            return Err(Error::LengthMismatch { expected: c, actual: features.len() });
        }
        if input.len() != self.input_len() {
            return Err(Error::LengthMismatch { expected: self.input_len(), actual: input.len() });
        }
        for (q, &v) in input[self.rows * c..(self.rows + 1) * c].iter_mut().zip(features) {
            *q = quantize_by(&self.thresholds, v);
        }
        self.rows += 1;
        if self.rows == self.cfg.stride {
            self.rows = 0;
            return Ok(true);
        }
        Ok(false)
    }

    /// Adds a run's probability at `t_ms`; a detection (class 0, the window's mean) when it fires.
    pub fn push_probability(&mut self, t_ms: u64, probability: f32) -> Option<Detection> {
        self.probabilities[self.next] = probability;
        self.next = (self.next + 1) % self.cfg.window;
        self.filled = (self.filled + 1).min(self.cfg.window);
        if self.filled < self.cfg.window {
            return None;
        }
        let sum: f64 = self.probabilities[..self.cfg.window].iter().map(|&p| p as f64).sum();
        let mean = sum / self.cfg.window as f64;
        let quiet = self.last_fire_ms.is_none_or(|t| t_ms.saturating_sub(t) >= self.cfg.refractory_ms);
        if mean > self.cfg.cutoff && quiet {
            self.last_fire_ms = Some(t_ms);
            self.filled = 0;
            return Some(Detection { class: 0, score: mean as f32, bbox: None });
        }
        None
    }

    /// Forgets features, probabilities and the last detection (a new stream).
    pub fn reset(&mut self) {
        (self.next, self.filled, self.rows, self.last_fire_ms) = (0, 0, 0, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wake() -> WakeWord<8> {
        let cfg = WakeWordConfig { cutoff: 0.85, window: 3, stride: 2, channels: 2, refractory_ms: 1000 };
        WakeWord::new(cfg, InputQuant { scale: 0.101_960_786, zero: -128 }).unwrap()
    }

    #[test]
    fn quantizes_as_pymicro_wakeword_and_clamps() {
        let q = InputQuant { scale: 0.101_960_786, zero: -128 };
        assert_eq!(q.quantize(0), -128);
        // 400 × 0.0390625 / 0.10196 − 128 = 25.24…
        assert_eq!(q.quantize(400), 25);
        assert_eq!(q.quantize(u16::MAX), 127);
    }

    #[test]
    fn the_threshold_table_quantizes_every_value_as_the_formula_does() {
        for (scale, zero) in [(0.101_960_786f32, -128), (0.05, 0), (3.0, 10), (0.001, -128), (1e-5, 127)] {
            let q = InputQuant { scale, zero };
            let t = q.thresholds();
            for v in 0..=u16::MAX {
                assert_eq!(quantize_by(&t, v), q.quantize(v), "{scale} {zero} {v}");
            }
        }
    }

    #[test]
    fn rows_fill_the_input_then_the_model_runs() {
        let mut w = wake();
        let mut input = [0i8; 4];
        assert!(!w.push_features(&[0, 400], &mut input).unwrap());
        assert!(w.push_features(&[400, 0], &mut input).unwrap());
        assert_eq!(input, [-128, 25, 25, -128]);
        assert!(w.push_features(&[1, 2, 3], &mut input).is_err());
    }

    #[test]
    fn fires_on_a_full_window_above_the_cutoff_once() {
        let mut w = wake();
        // Nothing before the window is full, however high.
        assert!(w.push_probability(0, 1.0).is_none());
        assert!(w.push_probability(30, 1.0).is_none());
        let hit = w.push_probability(60, 0.7).unwrap();
        assert!((hit.score - 0.9).abs() < 1e-6);
        // The window starts over, and the refractory period holds after it.
        for t in [90, 120, 150, 180] {
            assert!(w.push_probability(t, 1.0).is_none(), "{t}");
        }
        assert!(w.push_probability(1060, 1.0).is_some());
        // Exactly the cutoff does not fire (probabilities are k/256: exact in f32 and f64).
        let cfg = WakeWordConfig { cutoff: 0.875, ..*wake().config() };
        let mut w = WakeWord::<8>::new(cfg, InputQuant { scale: 0.1, zero: 0 }).unwrap();
        for t in [0, 30, 60] {
            assert!(w.push_probability(t, 0.875).is_none());
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let q = InputQuant { scale: 0.1, zero: 0 };
        let cfg = WakeWordConfig { cutoff: 1.5, window: 3, stride: 3, channels: 40, refractory_ms: 0 };
        assert_eq!(WakeWord::<8>::new(cfg, q).unwrap_err(), Error::InvalidConfig("probability_cutoff"));
        let cfg = WakeWordConfig { cutoff: 0.5, window: 9, ..cfg };
        assert_eq!(WakeWord::<8>::new(cfg, q).unwrap_err(), Error::InvalidConfig("sliding_window_size"));
    }
}
