//! The audio frontend: framing, Hann window, real FFT, power spectrum, HTK mel filterbank, log, and
//! optionally a DCT-II (orthonormal) to MFCCs. It is incremental: each call consumes only the new
//! samples and computes only the frames they complete (one per `hop`), so a microphone stream costs
//! one frame of work per hop.
//!
//! The definition, which `models/common/audio_features.py` implements identically for training:
//! - frame `k` covers samples `[k*hop, k*hop + window)`; the first frame needs `window` samples;
//! - samples are floats in [-1, 1) (i16 / 32768), multiplied by a periodic Hann window of length
//!   `window`, zero-padded to `fft`;
//! - power `|X[b]|^2` for bins `b = 0..=fft/2`;
//! - `mels` triangular filters with edges evenly spaced on the HTK mel scale
//!   (`2595 log10(1 + f/700)`) from `fmin` to `fmax`, unnormalized;
//! - `ln(energy + 1e-6)`;
//! - if `mfcc > 0`, the first `mfcc` coefficients of the orthonormal DCT-II of the log-mel vector.

use crate::error::Error;
use core::f32::consts::PI;

/// Floor added before the logarithm.
pub const LOG_FLOOR: f32 = 1e-6;

/// Frontend parameters (from the manifest's `[audio]` table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrontendConfig {
    /// Samples per second.
    pub sample_rate: u32,
    /// Samples per frame.
    pub window: usize,
    /// Samples between frame starts.
    pub hop: usize,
    /// FFT length, a power of two ≥ `window`, at most 2048.
    pub fft: usize,
    /// Mel bands.
    pub mels: usize,
    /// MFCC coefficients, or 0 for log-mel features.
    pub mfcc: usize,
    /// Lowest filter edge in Hz.
    pub fmin: f32,
    /// Highest filter edge in Hz (≤ sample_rate / 2).
    pub fmax: f32,
}

impl FrontendConfig {
    /// Values per frame: `mfcc` if set, else `mels`.
    pub fn features(&self) -> usize {
        if self.mfcc > 0 {
            self.mfcc
        } else {
            self.mels
        }
    }

    /// Checks the parameters, naming the first one at fault.
    pub fn validate(&self, max_fft: usize, max_mels: usize) -> Result<(), Error> {
        if self.sample_rate == 0 {
            return Err(Error::InvalidConfig("audio.sample_rate"));
        }
        if !self.fft.is_power_of_two() || self.fft < 16 || self.fft > max_fft.min(2048) {
            return Err(Error::InvalidConfig("audio.fft"));
        }
        if self.window == 0 || self.window > self.fft {
            return Err(Error::InvalidConfig("audio.window"));
        }
        if self.hop == 0 {
            return Err(Error::InvalidConfig("audio.hop"));
        }
        if self.mels == 0 || self.mels > max_mels {
            return Err(Error::InvalidConfig("audio.mels"));
        }
        if self.mfcc > self.mels {
            return Err(Error::InvalidConfig("audio.mfcc"));
        }
        if !(self.fmin >= 0.0 && self.fmax > self.fmin && self.fmax <= self.sample_rate as f32 / 2.0) {
            return Err(Error::InvalidConfig("audio.fmax"));
        }
        Ok(())
    }
}

fn hz_to_mel(f: f32) -> f32 {
    2595.0 * libm::log10f(1.0 + f / 700.0)
}

fn mel_to_hz(m: f32) -> f32 {
    700.0 * (libm::powf(10.0, m / 2595.0) - 1.0)
}

/// Incremental feature extractor with capacities `MAX_FFT` (FFT length) and `MAX_MELS` (bands).
#[derive(Debug, Clone)]
pub struct Frontend<const MAX_FFT: usize, const MAX_MELS: usize> {
    cfg: FrontendConfig,
    hann: [f32; MAX_FFT],
    history: [f32; MAX_FFT],
    write: usize,
    filled: usize,
    since_frame: usize,
    fft_buf: [f32; MAX_FFT],
    edges: [f32; MAX_MELS],
    last_edge: [f32; 2],
    mel: [f32; MAX_MELS],
    out: [f32; MAX_MELS],
    frames: u64,
}

impl<const MAX_FFT: usize, const MAX_MELS: usize> Frontend<MAX_FFT, MAX_MELS> {
    /// A frontend for `cfg`; fails when a parameter is out of range or exceeds the capacities.
    pub fn new(cfg: FrontendConfig) -> Result<Self, Error> {
        cfg.validate(MAX_FFT, MAX_MELS)?;
        let mut hann = [0.0; MAX_FFT];
        for (n, w) in hann.iter_mut().take(cfg.window).enumerate() {
            *w = 0.5 - 0.5 * libm::cosf(2.0 * PI * n as f32 / cfg.window as f32);
        }
        // mels + 2 edge frequencies: the first `mels` in `edges`, the last two in `last_edge`.
        let (lo, hi) = (hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax));
        let edge = |i: usize| mel_to_hz(lo + (hi - lo) * i as f32 / (cfg.mels + 1) as f32);
        let mut edges = [0.0; MAX_MELS];
        for (i, e) in edges.iter_mut().take(cfg.mels).enumerate() {
            *e = edge(i);
        }
        let last_edge = [edge(cfg.mels), edge(cfg.mels + 1)];
        Ok(Frontend {
            cfg,
            hann,
            history: [0.0; MAX_FFT],
            write: 0,
            filled: 0,
            since_frame: 0,
            fft_buf: [0.0; MAX_FFT],
            edges,
            last_edge,
            mel: [0.0; MAX_MELS],
            out: [0.0; MAX_MELS],
            frames: 0,
        })
    }

    /// The parameters.
    pub fn config(&self) -> &FrontendConfig {
        &self.cfg
    }

    /// Frames computed so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Forgets buffered samples (for a new stream).
    pub fn reset(&mut self) {
        self.write = 0;
        self.filled = 0;
        self.since_frame = 0;
        self.frames = 0;
    }

    /// Feeds samples (floats in [-1, 1)); calls `on_frame` with each completed feature vector.
    /// Returns the number of frames produced.
    pub fn push(&mut self, samples: impl IntoIterator<Item = f32>, mut on_frame: impl FnMut(&[f32])) -> usize {
        let w = self.cfg.window;
        let mut produced = 0;
        for s in samples {
            self.history[self.write] = s;
            self.write = (self.write + 1) % w;
            if self.filled < w {
                self.filled += 1;
                if self.filled < w {
                    continue;
                }
            } else {
                self.since_frame += 1;
                if self.since_frame < self.cfg.hop {
                    continue;
                }
            }
            self.since_frame = 0;
            self.compute();
            on_frame(&self.out[..self.cfg.features()]);
            produced += 1;
        }
        produced
    }

    /// Feeds 16-bit PCM samples.
    pub fn push_i16(&mut self, samples: &[i16], on_frame: impl FnMut(&[f32])) -> usize {
        self.push(samples.iter().map(|&s| s as f32 / 32768.0), on_frame)
    }

    /// Computes the features of the last `window` samples into `self.out`.
    fn compute(&mut self) {
        let (w, n) = (self.cfg.window, self.cfg.fft);
        // `write` points at the oldest sample once the history is full.
        for i in 0..w {
            self.fft_buf[i] = self.history[(self.write + i) % w] * self.hann[i];
        }
        self.fft_buf[w..n].fill(0.0);
        // Power spectrum into fft_buf[0..=n/2] (bin b's power overwrites slot b after its read).
        power_spectrum(&mut self.fft_buf[..n]);
        let bin_hz = self.cfg.sample_rate as f32 / n as f32;
        let mels = self.cfg.mels;
        for m in 0..mels {
            let lo = self.edges[m];
            let c = if m + 1 < mels { self.edges[m + 1] } else { self.last_edge[0] };
            let hi = if m + 2 < mels { self.edges[m + 2] } else { self.last_edge[m + 2 - mels] };
            let first = libm::ceilf(lo / bin_hz) as usize;
            let last = (libm::floorf(hi / bin_hz) as usize).min(n / 2);
            let mut e = 0.0f32;
            for b in first..=last {
                let f = b as f32 * bin_hz;
                let weight = if f <= c { (f - lo) / (c - lo) } else { (hi - f) / (hi - c) };
                if weight > 0.0 {
                    e += weight * self.fft_buf[b];
                }
            }
            self.mel[m] = libm::logf(e + LOG_FLOOR);
        }
        if self.cfg.mfcc == 0 {
            self.out[..mels].copy_from_slice(&self.mel[..mels]);
        } else {
            let scale0 = libm::sqrtf(1.0 / mels as f32);
            let scale = libm::sqrtf(2.0 / mels as f32);
            for k in 0..self.cfg.mfcc {
                let mut acc = 0.0f32;
                for (m, &v) in self.mel[..mels].iter().enumerate() {
                    acc += v * libm::cosf(PI / mels as f32 * (m as f32 + 0.5) * k as f32);
                }
                self.out[k] = acc * if k == 0 { scale0 } else { scale };
            }
        }
        self.frames += 1;
    }
}

/// In-place real FFT of `buf` (length a power of two, 16..=2048) replaced by the power of bins
/// `0..=len/2` in `buf[0..=len/2]`.
fn power_spectrum(buf: &mut [f32]) {
    macro_rules! rfft {
        ($f:ident, $n:literal) => {{
            let arr: &mut [f32; $n] = buf.try_into().expect("length checked by the match");
            let spec = microfft::real::$f(arr);
            // Bin 0 holds DC in `re` and Nyquist in `im`.
            let (dc, nyq) = (spec[0].re, spec[0].im);
            let mut powers = [0.0f32; 2];
            powers[0] = dc * dc;
            powers[1] = nyq * nyq;
            for b in 1..$n / 2 {
                let c = spec[b];
                spec[b].re = c.re * c.re + c.im * c.im;
            }
            // Flatten: power of bin b to buf[b]. spec aliases buf as pairs, so walk forward:
            // slot b reads pair b (at 2b), which is ≥ b, never yet overwritten.
            for b in 1..$n / 2 {
                buf[b] = buf[2 * b];
            }
            buf[0] = powers[0];
            buf[$n / 2] = powers[1];
        }};
    }
    match buf.len() {
        16 => rfft!(rfft_16, 16),
        32 => rfft!(rfft_32, 32),
        64 => rfft!(rfft_64, 64),
        128 => rfft!(rfft_128, 128),
        256 => rfft!(rfft_256, 256),
        512 => rfft!(rfft_512, 512),
        1024 => rfft!(rfft_1024, 1024),
        2048 => rfft!(rfft_2048, 2048),
        _ => unreachable!("FrontendConfig::validate admits powers of two 16..=2048"),
    }
}

/// The last `frames` feature vectors in time order, ready to copy into a model input.
/// `CAP` is the capacity in floats (`frames * features` must fit).
#[derive(Debug, Clone)]
pub struct FeatureWindow<const CAP: usize> {
    buf: [f32; CAP],
    frames: usize,
    features: usize,
    next: usize,
    filled: usize,
}

impl<const CAP: usize> FeatureWindow<CAP> {
    /// A window of `frames` vectors of `features` values, initially filled with `fill`.
    pub fn new(frames: usize, features: usize, fill: f32) -> Result<Self, Error> {
        let needed = frames * features;
        if needed == 0 {
            return Err(Error::InvalidConfig("audio.frames"));
        }
        if needed > CAP {
            return Err(Error::CapacityExceeded { needed, capacity: CAP });
        }
        Ok(FeatureWindow { buf: [fill; CAP], frames, features, next: 0, filled: 0 })
    }

    /// Appends one feature vector, replacing the oldest.
    pub fn push(&mut self, features: &[f32]) {
        debug_assert_eq!(features.len(), self.features);
        let start = self.next * self.features;
        self.buf[start..start + self.features].copy_from_slice(&features[..self.features]);
        self.next = (self.next + 1) % self.frames;
        self.filled = (self.filled + 1).min(self.frames);
    }

    /// True once `frames` vectors have been pushed.
    pub fn is_full(&self) -> bool {
        self.filled == self.frames
    }

    /// Copies the window, oldest frame first, into `out` (`frames * features` floats).
    pub fn copy_to(&self, out: &mut [f32]) -> Result<(), Error> {
        let total = self.frames * self.features;
        if out.len() != total {
            return Err(Error::LengthMismatch { expected: total, actual: out.len() });
        }
        let split = self.next * self.features;
        out[..total - split].copy_from_slice(&self.buf[split..total]);
        out[total - split..].copy_from_slice(&self.buf[..split]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FrontendConfig {
        FrontendConfig {
            sample_rate: 16000,
            window: 400,
            hop: 160,
            fft: 512,
            mels: 40,
            mfcc: 0,
            fmin: 20.0,
            fmax: 8000.0,
        }
    }

    fn tone(freq: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..n).map(move |i| 0.5 * libm::sinf(2.0 * PI * freq * i as f32 / 16000.0))
    }

    #[test]
    fn frames_follow_window_and_hop() {
        let mut f: Frontend<512, 40> = Frontend::new(cfg()).unwrap();
        assert_eq!(f.push(tone(440.0, 399), |_| {}), 0);
        assert_eq!(f.push(tone(440.0, 1), |_| {}), 1);
        assert_eq!(f.push(tone(440.0, 159), |_| {}), 0);
        assert_eq!(f.push(tone(440.0, 1), |_| {}), 1);
        // 16000 samples → 1 + (16000 - 400) / 160 = 98 frames, however they are split into blocks.
        let mut g: Frontend<512, 40> = Frontend::new(cfg()).unwrap();
        let all: heapless::Vec<f32, 16000> = tone(300.0, 16000).collect();
        let mut total = 0;
        for block in all.chunks(77) {
            total += g.push(block.iter().copied(), |_| {});
        }
        assert_eq!(total, 98);
    }

    #[test]
    fn incremental_and_one_shot_features_are_identical() {
        let all: heapless::Vec<f32, 4000> = tone(1000.0, 4000).collect();
        let mut one: heapless::Vec<f32, 2000> = heapless::Vec::new();
        let mut f: Frontend<512, 40> = Frontend::new(FrontendConfig { mfcc: 10, ..cfg() }).unwrap();
        f.push(all.iter().copied(), |v| one.extend_from_slice(v).unwrap());
        let mut inc: heapless::Vec<f32, 2000> = heapless::Vec::new();
        let mut g: Frontend<512, 40> = Frontend::new(FrontendConfig { mfcc: 10, ..cfg() }).unwrap();
        for block in all.chunks(33) {
            g.push(block.iter().copied(), |v| inc.extend_from_slice(v).unwrap());
        }
        assert_eq!(one, inc);
        assert_eq!(one.len(), (1 + (4000 - 400) / 160) * 10);
    }

    #[test]
    fn a_tone_peaks_in_the_mel_band_that_contains_it() {
        let mut f: Frontend<512, 40> = Frontend::new(cfg()).unwrap();
        let mut last = [0.0f32; 40];
        f.push(tone(1000.0, 400), |v| last.copy_from_slice(v));
        let peak = (0..40).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap();
        // Band m spans edges m..m+2; 1000 Hz must lie inside the peak band.
        let lo = mel_to_hz(hz_to_mel(20.0) + (hz_to_mel(8000.0) - hz_to_mel(20.0)) * peak as f32 / 41.0);
        let hi = mel_to_hz(hz_to_mel(20.0) + (hz_to_mel(8000.0) - hz_to_mel(20.0)) * (peak + 2) as f32 / 41.0);
        assert!(lo < 1000.0 && 1000.0 < hi, "peak band {peak}: {lo}..{hi}");
        // Silence gives the log floor everywhere.
        let mut s: Frontend<512, 40> = Frontend::new(cfg()).unwrap();
        s.push(core::iter::repeat_n(0.0, 400), |v| last.copy_from_slice(v));
        assert!(last.iter().all(|&v| (v - libm::logf(LOG_FLOOR)).abs() < 1e-3));
    }

    #[test]
    fn power_spectrum_matches_a_direct_dft() {
        let mut buf = [0.0f32; 64];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = libm::sinf(i as f32 * 0.37) + 0.25 * libm::cosf(i as f32 * 1.9) + 0.1;
        }
        let orig = buf;
        power_spectrum(&mut buf);
        for k in 0..=32 {
            let (mut re, mut im) = (0.0f64, 0.0f64);
            for (n, &x) in orig.iter().enumerate() {
                let a = -2.0 * core::f64::consts::PI * (k * n) as f64 / 64.0;
                re += x as f64 * libm::cos(a);
                im += x as f64 * libm::sin(a);
            }
            let p = (re * re + im * im) as f32;
            assert!((buf[k] - p).abs() <= 1e-3 * p.max(1.0), "bin {k}: {} vs {p}", buf[k]);
        }
    }

    #[test]
    fn invalid_parameters_name_the_field() {
        let bad = |c: FrontendConfig| Frontend::<512, 40>::new(c).unwrap_err();
        assert_eq!(bad(FrontendConfig { fft: 500, ..cfg() }), Error::InvalidConfig("audio.fft"));
        assert_eq!(bad(FrontendConfig { window: 600, ..cfg() }), Error::InvalidConfig("audio.window"));
        assert_eq!(bad(FrontendConfig { mels: 64, ..cfg() }), Error::InvalidConfig("audio.mels"));
        assert_eq!(bad(FrontendConfig { fmax: 9000.0, ..cfg() }), Error::InvalidConfig("audio.fmax"));
        assert_eq!(bad(FrontendConfig { hop: 0, ..cfg() }), Error::InvalidConfig("audio.hop"));
    }

    #[test]
    fn feature_window_returns_frames_oldest_first() {
        let mut w: FeatureWindow<6> = FeatureWindow::new(3, 2, 0.0).unwrap();
        for i in 0..4 {
            w.push(&[i as f32, 10.0 + i as f32]);
        }
        let mut out = [0.0; 6];
        w.copy_to(&mut out).unwrap();
        assert_eq!(out, [1.0, 11.0, 2.0, 12.0, 3.0, 13.0]);
        assert!(FeatureWindow::<4>::new(3, 2, 0.0).is_err());
    }
}
