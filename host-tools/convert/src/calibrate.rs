//! Activation ranges from calibration data: a min/max observer plus a histogram, and three ways
//! to pick the range from them (min/max, percentile, entropy).

use serde::Serialize;

/// Histogram bins.
pub const BINS: usize = 2048;

/// How to choose an activation range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The observed minimum and maximum.
    Minmax,
    /// The 0.01 % and 99.99 % percentiles: ignores rare outliers.
    Percentile,
    /// The clipping threshold minimizing the KL divergence between the float and quantized
    /// distributions (TensorRT's calibration).
    Entropy,
}

/// Observes one tensor over the calibration set: first its min/max, then (second pass) a histogram.
#[derive(Debug, Clone)]
pub struct Observer {
    /// Smallest value seen.
    pub min: f32,
    /// Largest value seen.
    pub max: f32,
    hist: Vec<u64>,
    abs_hist: Vec<u64>,
    count: u64,
}

impl Default for Observer {
    fn default() -> Self {
        Observer { min: f32::INFINITY, max: f32::NEG_INFINITY, hist: vec![], abs_hist: vec![], count: 0 }
    }
}

impl Observer {
    /// Pass 1: extends the min/max.
    pub fn observe_range(&mut self, values: &[f32]) {
        for &v in values {
            if v.is_finite() {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
            }
        }
    }

    /// Pass 2: adds values to the histogram over [min, max] (after pass 1 over all samples).
    pub fn observe_histogram(&mut self, values: &[f32]) {
        if self.hist.is_empty() {
            self.hist = vec![0; BINS];
            self.abs_hist = vec![0; BINS];
        }
        let (lo, hi) = self.bounds();
        let width = (hi - lo) / BINS as f32;
        let abs_width = hi.max(-lo) / BINS as f32;
        for &v in values {
            if v.is_finite() {
                let b = (((v - lo) / width) as usize).min(BINS - 1);
                self.hist[b] += 1;
                // Zero is exact in every range (it is the zero point): it needs no bin, and the
                // spike ReLU leaves there would otherwise dominate the divergence.
                if v != 0.0 {
                    self.abs_hist[((v.abs() / abs_width) as usize).min(BINS - 1)] += 1;
                }
                self.count += 1;
            }
        }
    }

    /// The histogram's range: min/max widened to include 0 and never empty.
    fn bounds(&self) -> (f32, f32) {
        let lo = self.min.min(0.0);
        let mut hi = self.max.max(0.0);
        if hi <= lo || hi.is_nan() {
            hi = lo + 1e-6;
        }
        if !lo.is_finite() || !hi.is_finite() {
            return (0.0, 1e-6);
        }
        (lo, hi)
    }

    /// The chosen range, always containing 0.
    pub fn range(&self, method: Method) -> (f32, f32) {
        let (lo, hi) = self.bounds();
        if self.count == 0 || method == Method::Minmax {
            return (lo, hi);
        }
        let width = (hi - lo) / BINS as f32;
        let edge = |b: usize| lo + b as f32 * width;
        match method {
            Method::Minmax => (lo, hi),
            Method::Percentile => {
                let tail = (self.count as f64 * 1e-4) as u64;
                let (mut a, mut acc) = (0, 0u64);
                while a < BINS && acc + self.hist[a] <= tail {
                    acc += self.hist[a];
                    a += 1;
                }
                let (mut b, mut acc) = (BINS, 0u64);
                while b > a + 1 && acc + self.hist[b - 1] <= tail {
                    acc += self.hist[b - 1];
                    b -= 1;
                }
                (edge(a).min(0.0), edge(b).max(0.0))
            }
            Method::Entropy => self.entropy_range(lo, hi),
        }
    }

    /// TensorRT's entropy calibration on |x|: the threshold T whose 128-level quantization of
    /// [0, T] loses the least information; the range is the observed one clipped to [-T, T].
    fn entropy_range(&self, lo: f32, hi: f32) -> (f32, f32) {
        let abs_width = hi.max(-lo) / BINS as f32;
        let mut best = (f64::INFINITY, BINS);
        for end in (128..=BINS).step_by(16) {
            let kl = kl_divergence(&self.abs_hist, 0, end, 128);
            if kl < best.0 {
                best = (kl, end);
            }
        }
        let t = best.1 as f32 * abs_width;
        (lo.max(-t), hi.min(t))
    }
}

/// KL divergence between the histogram clipped to bins [a, b) — outliers folded into the edge
/// bins, as clipping does to them — and its `levels`-level quantization computed without the
/// outliers (TensorRT's formulation: a clip that discards much mass is penalized).
fn kl_divergence(hist: &[u64], a: usize, b: usize, levels: usize) -> f64 {
    let n = b - a;
    let inside: Vec<f64> = hist[a..b].iter().map(|&c| c as f64).collect();
    let mut p = inside.clone();
    p[0] += hist[..a].iter().sum::<u64>() as f64;
    p[n - 1] += hist[b..].iter().sum::<u64>() as f64;
    let mut q = vec![0.0f64; n];
    for l in 0..levels {
        let s = l * n / levels;
        let e = ((l + 1) * n / levels).max(s + 1).min(n);
        let total: f64 = inside[s..e].iter().sum();
        let nonzero = p[s..e].iter().filter(|&&v| v > 0.0).count();
        if nonzero == 0 {
            continue;
        }
        for i in s..e {
            if p[i] > 0.0 {
                q[i] = total / nonzero as f64;
            }
        }
    }
    let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if ps == 0.0 || qs == 0.0 {
        return f64::INFINITY;
    }
    p.iter()
        .zip(&q)
        .filter(|(&pi, _)| pi > 0.0)
        .map(|(&pi, &qi)| {
            let (pi, qi) = (pi / ps, (qi / qs).max(1e-12));
            pi * (pi / qi).ln()
        })
        .sum()
}

/// Asymmetric int8 parameters for a range: `(scale, zero_point)`, zero exactly representable.
pub fn int8_params(lo: f32, hi: f32) -> (f32, i8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = ((hi - lo) / 255.0).max(1e-9);
    let zp = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i8;
    (scale, zp)
}

/// Signal and noise energy of an approximation, summed over any number of tensor pairs: the
/// SQNR of a whole calibration set is folded sample by sample without keeping the values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Energy {
    /// Σ x² of the exact values.
    pub signal: f64,
    /// Σ (x − y)² between exact and approximate values.
    pub noise: f64,
}

impl Energy {
    /// Adds the pairs of `exact` and `approx` (up to the shorter length).
    pub fn add(&mut self, exact: &[f32], approx: &[f32]) {
        for (&x, &y) in exact.iter().zip(approx) {
            self.signal += (x as f64) * (x as f64);
            self.noise += ((x - y) as f64).powi(2);
        }
    }

    /// The SQNR in dB: +∞ without noise, −∞ for noise on a zero signal.
    pub fn db(&self) -> f64 {
        if self.noise == 0.0 {
            return f64::INFINITY;
        }
        if self.signal == 0.0 {
            return f64::NEG_INFINITY;
        }
        10.0 * (self.signal / self.noise).log10()
    }
}

/// Signal-to-quantization-noise ratio in dB of `approx` against `exact`.
pub fn sqnr_db(exact: &[f32], approx: &[f32]) -> f64 {
    let mut e = Energy::default();
    e.add(exact, approx);
    e.db()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observer(values: &[f32]) -> Observer {
        let mut o = Observer::default();
        o.observe_range(values);
        o.observe_histogram(values);
        o
    }

    #[test]
    fn minmax_is_the_observed_range_widened_to_zero() {
        let o = observer(&[0.5, 2.0, 1.0]);
        assert_eq!(o.range(Method::Minmax), (0.0, 2.0));
    }

    #[test]
    fn percentile_and_entropy_clip_rare_outliers() {
        // 100k values in [-1, 1] and one outlier at 100.
        let mut v: Vec<f32> = (0..100_000).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
        v.push(100.0);
        let o = observer(&v);
        let (_, hi_p) = o.range(Method::Percentile);
        assert!(hi_p < 5.0, "percentile ignores the outlier: {hi_p}");
        let (lo_e, hi_e) = o.range(Method::Entropy);
        assert!(hi_e < 50.0 && lo_e <= -0.5, "entropy clips the outlier but keeps the bulk: {lo_e}..{hi_e}");
        assert_eq!(o.range(Method::Minmax).1, 100.0);
    }

    #[test]
    fn int8_params_represent_zero_exactly() {
        let (s, z) = int8_params(-1.0, 3.0);
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(((0.0 / s).round() as i32 + z as i32), z as i32);
        assert_eq!(z, -64);
        let (_, z) = int8_params(0.0, 6.0);
        assert_eq!(z, -128);
    }

    #[test]
    fn sqnr_of_small_noise_is_high() {
        let x: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let y: Vec<f32> = x.iter().map(|v| v + 0.01).collect();
        assert!(sqnr_db(&x, &y) > 60.0);
        assert_eq!(sqnr_db(&x, &x), f64::INFINITY);
    }

    #[test]
    fn energy_folded_in_pieces_is_the_sqnr_of_the_whole() {
        let x: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 10.0 - 5.0).collect();
        let y: Vec<f32> = x.iter().enumerate().map(|(i, v)| v + ((i % 7) as f32 - 3.0) * 0.01).collect();
        let mut e = Energy::default();
        for (a, b) in x.chunks(77).zip(y.chunks(77)) {
            e.add(a, b);
        }
        assert_eq!(e.db(), sqnr_db(&x, &y), "same sums in the same order: the same figure, bit for bit");
        assert_eq!(Energy { signal: 0.0, noise: 1.0 }.db(), f64::NEG_INFINITY);
    }
}
