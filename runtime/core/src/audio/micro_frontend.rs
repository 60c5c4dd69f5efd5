//! TensorFlow Lite Micro's audio frontend (`micro_frontend`), the features microWakeWord models and
//! TFLM's micro_speech are trained on, computed in the same fixed point so the output is the same
//! integer for integer: a window of 16-bit samples times a 12-bit Hann window, scaled up to use 15
//! bits, a 16-bit fixed-point real FFT (KISS FFT's arithmetic: each radix-4 or radix-2 stage divides
//! by its radix with rounding), energies, mel filterbank with 12-bit triangle weights, integer square
//! root, per-channel noise estimate and subtraction, PCAN gain control (a piecewise quadratic lookup
//! of `(noise + offset)^-strength`) and a fixed-point natural log. Output: one `u16` per channel per
//! step; microWakeWord divides it by 25.6 (`FEATURE_SCALE`).
//!
//! Written from the algorithm's description and held to `pymicro-features` (TFLM's C code, as
//! ESPHome runs it) by the end-to-end tests; tables are computed at construction, nothing
//! allocates, and `process` never panics on any input.

use crate::error::Error;

/// Most samples in one window (30 ms at 16 kHz is 480); the FFT is the next power of two.
pub const MAX_WINDOW: usize = 512;
/// Most filterbank channels.
pub const MAX_CHANNELS: usize = 64;
/// microWakeWord's features are the frontend's integers times this (1 / 25.6).
pub const FEATURE_SCALE: f32 = 0.039_062_5;

const MAX_FFT: usize = 512;
const WINDOW_BITS: u32 = 12;
const FILTERBANK_BITS: i32 = 12;
const NOISE_BITS: u32 = 14;
const SNR_BITS: u32 = 12;
const PCAN_OUTPUT_BITS: u32 = 6;
const WIDE_BITS: usize = 32;
const LUT_LEN: usize = 4 * WIDE_BITS - 3;
const LOG_SCALE_BITS: u32 = 16;
const LOG_SEGMENT_BITS: u32 = 7;
const LOG_COEFF: u64 = 45426; // ln(2) in 16 bits
/// Weights and unweights, padded per channel to blocks of four starting at even bins.
const MAX_WEIGHTS: usize = MAX_FFT / 2 + 1 + 4 * (MAX_CHANNELS + 2) + 2;

/// `log2(1 + x)` correction, 128 segments of `x` in [0, 1), scaled by 2^16 (interpolated linearly).
const LOG_LUT: [u16; 130] = [
    0, 224, 442, 654, 861, 1063, 1259, 1450, 1636, 1817, 1992, 2163, 2329, 2490, 2646, 2797, 2944, 3087, 3224, 3358,
    3487, 3611, 3732, 3848, 3960, 4068, 4172, 4272, 4368, 4460, 4549, 4633, 4714, 4791, 4864, 4934, 5001, 5063, 5123,
    5178, 5231, 5280, 5326, 5368, 5408, 5444, 5477, 5507, 5533, 5557, 5578, 5595, 5610, 5622, 5631, 5637, 5640, 5641,
    5638, 5633, 5626, 5615, 5602, 5586, 5568, 5547, 5524, 5498, 5470, 5439, 5406, 5370, 5332, 5291, 5249, 5203, 5156,
    5106, 5054, 5000, 4944, 4885, 4825, 4762, 4697, 4630, 4561, 4490, 4416, 4341, 4264, 4184, 4103, 4020, 3935, 3848,
    3759, 3668, 3575, 3481, 3384, 3286, 3186, 3084, 2981, 2875, 2768, 2659, 2549, 2437, 2323, 2207, 2090, 1971, 1851,
    1729, 1605, 1480, 1353, 1224, 1094, 963, 830, 695, 559, 421, 282, 142, 0, 0,
];

/// Frontend parameters; [`MicroFrontendConfig::MICRO_WAKE_WORD`] is what microWakeWord trains on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MicroFrontendConfig {
    /// Samples per second.
    pub sample_rate: u32,
    /// Window length in milliseconds.
    pub window_ms: u32,
    /// Step between windows in milliseconds.
    pub step_ms: u32,
    /// Filterbank channels (features per step).
    pub channels: usize,
    /// Lowest filterbank edge in Hz.
    pub lower_hz: f32,
    /// Highest filterbank edge in Hz.
    pub upper_hz: f32,
    /// Extra bits the noise estimate keeps.
    pub smoothing_bits: u32,
    /// Noise estimate update rate of even channels.
    pub even_smoothing: f32,
    /// Noise estimate update rate of odd channels.
    pub odd_smoothing: f32,
    /// Fraction of the signal noise subtraction always leaves.
    pub min_signal_remaining: f32,
    /// Whether PCAN gain control runs.
    pub pcan: bool,
    /// PCAN exponent.
    pub strength: f32,
    /// PCAN offset added to the noise estimate.
    pub offset: f32,
    /// PCAN gain bits.
    pub gain_bits: u32,
    /// Whether the log is taken.
    pub log: bool,
    /// Bits the log output is scaled up by.
    pub scale_shift: u32,
}

impl MicroFrontendConfig {
    /// microWakeWord's (and ESPHome's) settings: 16 kHz, 30 ms windows every 10 ms, 40 channels
    /// from 125 Hz to 7.5 kHz, PCAN on, log scale shift 6.
    pub const MICRO_WAKE_WORD: MicroFrontendConfig = MicroFrontendConfig {
        sample_rate: 16000,
        window_ms: 30,
        step_ms: 10,
        channels: 40,
        lower_hz: 125.0,
        upper_hz: 7500.0,
        smoothing_bits: 10,
        even_smoothing: 0.025,
        odd_smoothing: 0.06,
        min_signal_remaining: 0.05,
        pcan: true,
        strength: 0.95,
        offset: 80.0,
        gain_bits: 21,
        log: true,
        scale_shift: 6,
    };
}

/// A complex number of KISS FFT's 16-bit fixed point.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Cpx {
    r: i16,
    i: i16,
}

/// Rounds a Q15 product back to 16 bits (wrapping as the C code's store does).
fn sround(x: i32) -> i16 {
    (x.wrapping_add(1 << 14) >> 15) as i16
}

fn cmul(a: Cpx, b: Cpx) -> Cpx {
    let (ar, ai, br, bi) = (a.r as i32, a.i as i32, b.r as i32, b.i as i32);
    Cpx { r: sround((ar * br).wrapping_sub(ai * bi)), i: sround((ar * bi).wrapping_add(ai * br)) }
}

fn add(a: Cpx, b: Cpx) -> Cpx {
    Cpx { r: a.r.wrapping_add(b.r), i: a.i.wrapping_add(b.i) }
}

fn sub(a: Cpx, b: Cpx) -> Cpx {
    Cpx { r: a.r.wrapping_sub(b.r), i: a.i.wrapping_sub(b.i) }
}

/// Divides by `radix` as the fixed-point FFT does before each butterfly (times `32767 / radix`).
fn fixdiv(c: Cpx, radix: i32) -> Cpx {
    let k = 32767 / radix;
    Cpx { r: sround(c.r as i32 * k), i: sround(c.i as i32 * k) }
}

/// `e^(i phase)` in Q15, rounded as KISS FFT rounds its twiddles.
fn twiddle(phase: f64) -> Cpx {
    Cpx {
        r: libm::floor(0.5 + 32767.0 * libm::cos(phase)) as i16,
        i: libm::floor(0.5 + 32767.0 * libm::sin(phase)) as i16,
    }
}

/// 32 minus the leading zeros: the position of the highest set bit, 0 for 0.
fn msb32(n: u32) -> u32 {
    32 - n.leading_zeros()
}

/// The real FFT: a complex FFT of half the length over even/odd sample pairs, then a split.
#[derive(Debug, Clone)]
struct Fft {
    /// Real length (a power of two).
    n: usize,
    /// Radices of the complex FFT's stages, first stage first (4s then at most one 2).
    radices: [u8; 8],
    stages: usize,
    twiddles: [Cpx; MAX_FFT / 2],
    split: [Cpx; MAX_FFT / 4],
    input: [Cpx; MAX_FFT / 2],
    spectrum: [Cpx; MAX_FFT / 2],
    out: [Cpx; MAX_FFT / 2 + 1],
}

impl Fft {
    fn new(n: usize) -> Fft {
        let half = n / 2;
        let mut radices = [0u8; 8];
        let (mut stages, mut rest) = (0, half);
        while rest > 1 {
            let p = if rest % 4 == 0 { 4 } else { 2 };
            radices[stages] = p as u8;
            stages += 1;
            rest /= p;
        }
        let mut twiddles = [Cpx::default(); MAX_FFT / 2];
        for (i, t) in twiddles.iter_mut().enumerate().take(half) {
            *t = twiddle(-2.0 * core::f64::consts::PI * i as f64 / half as f64);
        }
        let mut split = [Cpx::default(); MAX_FFT / 4];
        for (i, t) in split.iter_mut().enumerate().take(half / 2) {
            *t = twiddle(-core::f64::consts::PI * ((i + 1) as f64 / half as f64 + 0.5));
        }
        Fft {
            n,
            radices,
            stages,
            twiddles,
            split,
            input: [Cpx::default(); MAX_FFT / 2],
            spectrum: [Cpx::default(); MAX_FFT / 2],
            out: [Cpx::default(); MAX_FFT / 2 + 1],
        }
    }

    /// Decimation in time, recursively: stage `s` of length `p * m` at `out[at..]`, reading every
    /// `stride`-th input from `from`.
    fn work(&mut self, at: usize, from: usize, stride: usize, s: usize) {
        let p = self.radices[s] as usize;
        let m = self.len_after(s);
        if m == 1 {
            for j in 0..p {
                self.spectrum[at + j] = self.input[from + j * stride];
            }
        } else {
            for j in 0..p {
                self.work(at + j * m, from + j * stride, stride * p, s + 1);
            }
        }
        if p == 4 {
            self.radix4(at, stride, m);
        } else {
            self.radix2(at, stride, m);
        }
    }

    /// Length of each sub-transform after stage `s`.
    fn len_after(&self, s: usize) -> usize {
        self.radices[s + 1..self.stages].iter().map(|&p| p as usize).product()
    }

    fn radix2(&mut self, at: usize, stride: usize, m: usize) {
        let (f0, f1) = self.spectrum[at..at + 2 * m].split_at_mut(m);
        let tw = self.twiddles.iter().step_by(stride);
        for ((a, b), &w) in f0.iter_mut().zip(f1.iter_mut()).zip(tw) {
            let x = fixdiv(*a, 2);
            let t = cmul(fixdiv(*b, 2), w);
            *b = sub(x, t);
            *a = add(x, t);
        }
    }

    fn radix4(&mut self, at: usize, stride: usize, m: usize) {
        // The four quarters and their twiddles as iterators: no index checks in the loop.
        let (f0, rest) = self.spectrum[at..at + 4 * m].split_at_mut(m);
        let (f1, rest) = rest.split_at_mut(m);
        let (f2, f3) = rest.split_at_mut(m);
        let tw = &self.twiddles;
        let twiddles = tw.iter().step_by(stride).zip(tw.iter().step_by(2 * stride)).zip(tw.iter().step_by(3 * stride));
        let quarters = f0.iter_mut().zip(f1.iter_mut()).zip(f2.iter_mut()).zip(f3.iter_mut());
        for ((((y0, y1), y2), y3), ((&w1, &w2), &w3)) in quarters.zip(twiddles) {
            let a = fixdiv(*y0, 4);
            let s0 = cmul(fixdiv(*y1, 4), w1);
            let s1 = cmul(fixdiv(*y2, 4), w2);
            let s2 = cmul(fixdiv(*y3, 4), w3);
            let s5 = sub(a, s1);
            let a = add(a, s1);
            let s3 = add(s0, s2);
            let s4 = sub(s0, s2);
            *y2 = sub(a, s3);
            *y0 = add(a, s3);
            *y1 = Cpx { r: s5.r.wrapping_add(s4.i), i: s5.i.wrapping_sub(s4.r) };
            *y3 = Cpx { r: s5.r.wrapping_sub(s4.i), i: s5.i.wrapping_add(s4.r) };
        }
    }

    /// Transforms `samples` (`n` of them) into `out[0..=n/2]`.
    fn real(&mut self, samples: &[i16]) {
        let half = self.n / 2;
        for (c, pair) in self.input.iter_mut().zip(samples.chunks_exact(2)).take(half) {
            *c = Cpx { r: pair[0], i: pair[1] };
        }
        self.work(0, 0, 1, 0);
        let dc = fixdiv(self.spectrum[0], 2);
        self.out[0] = Cpx { r: dc.r.wrapping_add(dc.i), i: 0 };
        self.out[half] = Cpx { r: dc.r.wrapping_sub(dc.i), i: 0 };
        for k in 1..=half / 2 {
            let fpk = fixdiv(self.spectrum[k], 2);
            let mirror = self.spectrum[half - k];
            let fpnk = fixdiv(Cpx { r: mirror.r, i: mirror.i.wrapping_neg() }, 2);
            let f1k = add(fpk, fpnk);
            let tw = cmul(sub(fpk, fpnk), self.split[k - 1]);
            let half_of = |a: i16, b: i32| ((a as i32 + b) >> 1) as i16;
            self.out[k] = Cpx { r: half_of(f1k.r, tw.r as i32), i: half_of(f1k.i, tw.i as i32) };
            self.out[half - k] = Cpx { r: half_of(f1k.r, -(tw.r as i32)), i: half_of(tw.i, -(f1k.i as i32)) };
        }
    }
}

/// The mel filterbank: per channel, a run of bins with weights (rising edge) and unweights
/// (falling edge of the previous channel).
#[derive(Debug, Clone)]
struct Filterbank {
    channels: usize,
    start: usize,
    end: usize,
    bin_starts: [u16; MAX_CHANNELS + 1],
    weight_starts: [u16; MAX_CHANNELS + 1],
    widths: [u16; MAX_CHANNELS + 1],
    weights: [i16; MAX_WEIGHTS],
    unweights: [i16; MAX_WEIGHTS],
}

fn freq_to_mel(hz: f32) -> f32 {
    // fdlibm's log1pf (as musl, newlib and glibc before 2.41 have it), which is not always
    // correctly rounded: its results decide bin edges and weights, so they must be its own.
    1127.0 * libm::log1pf(hz / 700.0)
}

impl Filterbank {
    fn new(cfg: &MicroFrontendConfig, spectrum: usize) -> Result<Filterbank, Error> {
        let n = cfg.channels + 1;
        let mel_low = freq_to_mel(cfg.lower_hz);
        // n + 1 edges split the span: the last channel's upper edge is `upper_hz`.
        let spacing = (freq_to_mel(cfg.upper_hz) - mel_low) / n as f32;
        let mut centers = [0f32; MAX_CHANNELS + 1];
        for (i, c) in centers.iter_mut().enumerate().take(n) {
            *c = mel_low + spacing * (i + 1) as f32;
        }
        let hz_per_bin = 0.5 * cfg.sample_rate as f32 / (spectrum as f32 - 1.0);
        let start = (1.5 + cfg.lower_hz / hz_per_bin) as usize;
        let mut fb = Filterbank {
            channels: cfg.channels,
            start,
            end: 0,
            bin_starts: [0; MAX_CHANNELS + 1],
            weight_starts: [0; MAX_CHANNELS + 1],
            widths: [0; MAX_CHANNELS + 1],
            weights: [0; MAX_WEIGHTS],
            unweights: [0; MAX_WEIGHTS],
        };
        let (mut actual_starts, mut actual_widths) = ([0usize; MAX_CHANNELS + 1], [0usize; MAX_CHANNELS + 1]);
        let (mut bin, mut weight_at, mut zeros) = (start, 0usize, false);
        for chan in 0..n {
            let mut next = bin;
            while next <= spectrum && freq_to_mel(next as f32 * hz_per_bin) <= centers[chan] {
                next += 1;
            }
            let width = next - bin;
            (actual_starts[chan], actual_widths[chan]) = (bin, width);
            if width == 0 {
                // An empty channel reads four zero weights kept at the front.
                (fb.bin_starts[chan], fb.weight_starts[chan], fb.widths[chan]) = (0, 0, 4);
                if !zeros {
                    zeros = true;
                    for w in &mut fb.weight_starts[..chan] {
                        *w += 4;
                    }
                    weight_at += 4;
                }
            } else {
                let aligned = bin / 2 * 2;
                let padded = (bin - aligned + width).div_ceil(4) * 4;
                (fb.bin_starts[chan], fb.weight_starts[chan], fb.widths[chan]) =
                    (aligned as u16, weight_at as u16, padded as u16);
                weight_at += padded;
            }
            if weight_at > MAX_WEIGHTS {
                return Err(Error::CapacityExceeded { needed: weight_at, capacity: MAX_WEIGHTS });
            }
            bin = next;
        }
        for chan in 0..n {
            let denom = if chan == 0 { mel_low } else { centers[chan - 1] };
            let offset = actual_starts[chan] - fb.bin_starts[chan] as usize;
            for j in 0..actual_widths[chan] {
                let f = actual_starts[chan] + j;
                let w = (centers[chan] - freq_to_mel(f as f32 * hz_per_bin)) / (centers[chan] - denom);
                let at = fb.weight_starts[chan] as usize + offset + j;
                fb.weights[at] = libm::floorf(w * 4096.0 + 0.5) as i16;
                fb.unweights[at] = libm::floorf((1.0 - w) * 4096.0 + 0.5) as i16;
            }
            fb.end = fb.end.max(actual_starts[chan] + actual_widths[chan]);
        }
        if fb.end >= spectrum {
            return Err(Error::InvalidConfig("micro_frontend.upper_hz"));
        }
        Ok(fb)
    }
}

/// Integer square root of `num` (< 2^`width`), rounded to nearest and held at `cap`, as the
/// frontend computes it bit by bit.
fn round_sqrt(mut num: u64, width: u32, cap: u64) -> u64 {
    if num == 0 {
        return 0;
    }
    let max_bit = (width - (64 - num.leading_zeros())) | 1;
    let mut bit = 1u64 << (width - 1 - max_bit);
    let mut res = 0u64;
    for _ in 0..(width - 1 - max_bit) / 2 + 1 {
        if num >= res + bit {
            num -= res + bit;
            res = (res >> 1) + bit;
        } else {
            res >>= 1;
        }
        bit >>= 2;
    }
    if num > res && res != cap {
        res += 1;
    }
    res
}

/// Integer square root of a 64-bit value, rounded to nearest: 16 bits for a value that fits 32
/// bits (a root rounding up to 65536 is held at 65535), 32 bits otherwise.
fn sqrt64(num: u64) -> u32 {
    if num >> 32 == 0 {
        round_sqrt(num, 32, 0xFFFF) as u32 & 0xFFFF
    } else {
        round_sqrt(num, 64, 0xFFFF_FFFF) as u32
    }
}

/// PCAN's gain for a noise estimate `x` in `input_bits` fixed point, in Q`gain_bits`, capped at i16.
fn pcan_gain(cfg: &MicroFrontendConfig, input_bits: i32, x: u32) -> i16 {
    let xf = x as f32 / (1u32 << input_bits) as f32;
    // powf of a correctly rounded result (through f64), as the C library's powf gives.
    let p = libm::pow((xf + cfg.offset) as f64, -cfg.strength as f64) as f32;
    let gain = (1u32 << cfg.gain_bits) as f32 * p;
    if gain > 32767.0 {
        32767
    } else {
        (gain + 0.5) as i16
    }
}

/// The piecewise quadratic gain lookup over the noise estimate's highest bit.
fn wide_dynamic(x: u32, lut: &[i16; LUT_LEN]) -> i16 {
    if x <= 2 {
        return lut[x as usize];
    }
    let interval = msb32(x) as usize;
    let base = 4 * interval - 6;
    let frac = (if interval < 11 { x << (11 - interval) } else { x >> (interval - 11) } & 0x3FF) as i32;
    let mut result = (lut[base + 2] as i32 * frac) >> 5;
    result = result.wrapping_add(((lut[base + 1] as i32) as u32).wrapping_shl(5) as i32);
    result = result.wrapping_mul(frac);
    result = (result.wrapping_add(1 << 14)) >> 15;
    result.wrapping_add(lut[base] as i32) as i16
}

fn pcan_shrink(x: u32) -> u32 {
    if x < (2 << SNR_BITS) {
        (x * x) >> (2 + 2 * SNR_BITS - PCAN_OUTPUT_BITS)
    } else {
        (x >> (SNR_BITS - PCAN_OUTPUT_BITS)).wrapping_sub(1 << PCAN_OUTPUT_BITS)
    }
}

/// `ln(x) * 2^scale_shift` in fixed point, for `x > 1`.
fn fixed_log(x: u32, scale_shift: u32) -> u32 {
    let integer = msb32(x) - 1;
    let mut frac = (x as i64 - (1i64 << integer)) as i32;
    if integer < LOG_SCALE_BITS {
        frac <<= LOG_SCALE_BITS - integer;
    } else {
        frac >>= integer - LOG_SCALE_BITS;
    }
    let seg = (frac as u32 >> (LOG_SCALE_BITS - LOG_SEGMENT_BITS)) as usize;
    let (c0, c1) = (LOG_LUT[seg] as i32, LOG_LUT[seg + 1] as i32);
    let seg_base = ((1i32 << LOG_SCALE_BITS) >> LOG_SEGMENT_BITS) * seg as i32;
    let rel = ((c1 - c0).wrapping_mul(frac - seg_base)) >> LOG_SCALE_BITS;
    let fraction = (frac + c0 + rel) as u32;
    let log2 = (integer << LOG_SCALE_BITS).wrapping_add(fraction);
    let round = 1u32 << (LOG_SCALE_BITS - 1);
    let loge = ((LOG_COEFF * log2 as u64 + round as u64) >> LOG_SCALE_BITS) as u32;
    (loge.wrapping_shl(scale_shift).wrapping_add(round)) >> LOG_SCALE_BITS
}

/// The frontend's state: the sample window, tables and the per-channel noise estimates.
#[derive(Debug, Clone)]
pub struct MicroFrontend {
    cfg: MicroFrontendConfig,
    size: usize,
    step: usize,
    coefficients: [i16; MAX_WINDOW],
    input: [i16; MAX_WINDOW],
    used: usize,
    windowed: [i16; MAX_FFT],
    fft: Fft,
    filterbank: Filterbank,
    energy: [i32; MAX_FFT / 2 + 1 + 8],
    work: [u64; MAX_CHANNELS + 1],
    signal: [u32; MAX_CHANNELS],
    smoothing: [u32; 2],
    min_remaining: u32,
    estimate: [u32; MAX_CHANNELS],
    gain_lut: [i16; LUT_LEN],
    snr_shift: u32,
    output: [u16; MAX_CHANNELS],
}

impl MicroFrontend {
    /// Builds the tables; fails, naming the setting, when `cfg` is out of range.
    pub fn new(cfg: MicroFrontendConfig) -> Result<MicroFrontend, Error> {
        let size = (cfg.window_ms as u64 * cfg.sample_rate as u64 / 1000) as usize;
        let step = (cfg.step_ms as u64 * cfg.sample_rate as u64 / 1000) as usize;
        if !(2..=MAX_WINDOW).contains(&size) {
            return Err(Error::InvalidConfig("micro_frontend.window_ms"));
        }
        if step == 0 || step > size {
            return Err(Error::InvalidConfig("micro_frontend.step_ms"));
        }
        if cfg.channels == 0 || cfg.channels > MAX_CHANNELS {
            return Err(Error::InvalidConfig("micro_frontend.channels"));
        }
        if !(cfg.lower_hz >= 0.0 && cfg.upper_hz > cfg.lower_hz && cfg.upper_hz <= cfg.sample_rate as f32 / 2.0) {
            return Err(Error::InvalidConfig("micro_frontend.upper_hz"));
        }
        if cfg.smoothing_bits > 16 || cfg.scale_shift > 16 || !(1..=24).contains(&cfg.gain_bits) {
            return Err(Error::InvalidConfig("micro_frontend.bits"));
        }
        let unit = |x: f32| (0.0..=1.0).contains(&x);
        if !unit(cfg.even_smoothing) || !unit(cfg.odd_smoothing) || !unit(cfg.min_signal_remaining) {
            return Err(Error::InvalidConfig("micro_frontend.smoothing"));
        }
        if !(cfg.strength.is_finite() && cfg.offset.is_finite() && cfg.offset > 0.0) {
            return Err(Error::InvalidConfig("micro_frontend.pcan"));
        }
        let n = size.next_power_of_two().max(4);
        let mut coefficients = [0i16; MAX_WINDOW];
        let arg = core::f32::consts::PI * 2.0 / size as f32;
        for (i, c) in coefficients.iter_mut().enumerate().take(size) {
            let v = 0.5 - 0.5 * cosf(arg * (i as f32 + 0.5));
            *c = libm::floorf(v * (1 << WINDOW_BITS) as f32 + 0.5) as i16;
        }
        let filterbank = Filterbank::new(&cfg, n / 2 + 1)?;
        let scale = (1u32 << NOISE_BITS) as f32;
        let correction = msb32(n as u32) as i32 - 1 - FILTERBANK_BITS / 2;
        let input_bits = cfg.smoothing_bits as i32 - correction;
        let snr_shift = cfg.gain_bits as i32 - correction - SNR_BITS as i32;
        if snr_shift < 0 || !(0..32).contains(&input_bits) {
            return Err(Error::InvalidConfig("micro_frontend.bits"));
        }
        let mut gain_lut = [0i16; LUT_LEN];
        gain_lut[0] = pcan_gain(&cfg, input_bits, 0);
        gain_lut[1] = pcan_gain(&cfg, input_bits, 1);
        for interval in 2..=WIDE_BITS {
            let x0 = 1u32 << (interval - 1);
            let x1 = x0 + (x0 >> 1);
            let x2 = if interval == WIDE_BITS { x0 + (x0 - 1) } else { 2 * x0 };
            let (y0, y1, y2) =
                (pcan_gain(&cfg, input_bits, x0), pcan_gain(&cfg, input_bits, x1), pcan_gain(&cfg, input_bits, x2));
            let (d1, d2) = (y1 as i32 - y0 as i32, y2 as i32 - y0 as i32);
            let a1 = 4 * d1 - d2;
            let base = 4 * interval - 6;
            gain_lut[base] = y0;
            gain_lut[base + 1] = a1 as i16;
            gain_lut[base + 2] = (d2 - a1) as i16;
        }
        Ok(MicroFrontend {
            cfg,
            size,
            step,
            coefficients,
            input: [0; MAX_WINDOW],
            used: 0,
            windowed: [0; MAX_FFT],
            fft: Fft::new(n),
            filterbank,
            energy: [0; MAX_FFT / 2 + 1 + 8],
            work: [0; MAX_CHANNELS + 1],
            signal: [0; MAX_CHANNELS],
            smoothing: [(cfg.even_smoothing * scale) as u32, (cfg.odd_smoothing * scale) as u32],
            min_remaining: (cfg.min_signal_remaining * scale) as u32,
            estimate: [0; MAX_CHANNELS],
            gain_lut,
            snr_shift: snr_shift as u32,
            output: [0; MAX_CHANNELS],
        })
    }

    /// The parameters.
    pub fn config(&self) -> &MicroFrontendConfig {
        &self.cfg
    }

    /// Samples between outputs.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Features per output.
    pub fn channels(&self) -> usize {
        self.cfg.channels
    }

    /// Forgets the samples and the noise estimates, as at construction.
    pub fn reset(&mut self) {
        self.input = [0; MAX_WINDOW];
        self.used = 0;
        self.estimate = [0; MAX_CHANNELS];
    }

    /// Takes samples until a window is full (at most `samples.len()`); returns how many it took
    /// and, when a window completed, its features. Call again with the rest.
    pub fn process(&mut self, samples: &[i16]) -> (usize, Option<&[u16]>) {
        let take = (self.size - self.used).min(samples.len());
        self.input[self.used..self.used + take].copy_from_slice(&samples[..take]);
        self.used += take;
        if self.used < self.size {
            return (take, None);
        }
        self.compute();
        self.input.copy_within(self.step..self.size, 0);
        self.used -= self.step;
        (take, Some(&self.output[..self.cfg.channels]))
    }

    fn compute(&mut self) {
        let size = self.size;
        let mut max_abs = 0i16;
        for ((w, &x), &c) in self.windowed.iter_mut().zip(&self.input[..size]).zip(&self.coefficients[..size]) {
            let v = ((x as i32 * c as i32) >> WINDOW_BITS) as i16;
            *w = v;
            max_abs = max_abs.max(v.wrapping_abs());
        }
        let shift = 15 - msb32(max_abs as u32);
        let n = self.fft.n;
        for w in &mut self.windowed[..size] {
            *w = ((*w as u16 as u32) << shift) as i16;
        }
        self.windowed[size..n].fill(0);
        self.fft.real(&self.windowed[..n]);

        // Energies of the bins the filterbank weighs; the others stay 0 from construction (and
        // carry zero weights anyway).
        let fb = &self.filterbank;
        for (e, c) in self.energy[fb.start..fb.end].iter_mut().zip(&self.fft.out[fb.start..fb.end]) {
            let (r, i) = (c.r as i32, c.i as i32);
            *e = (r * r).wrapping_add(i * i);
        }
        let (mut weighted, mut unweighted) = (0u64, 0u64);
        for chan in 0..=fb.channels {
            let (bins, ws, width) =
                (fb.bin_starts[chan] as usize, fb.weight_starts[chan] as usize, fb.widths[chan] as usize);
            let run = self.energy[bins..bins + width]
                .iter()
                .zip(&fb.weights[ws..ws + width])
                .zip(&fb.unweights[ws..ws + width]);
            for ((&e, &w), &u) in run {
                let m = e as i64 as u64;
                weighted = weighted.wrapping_add((w as i64 as u64).wrapping_mul(m));
                unweighted = unweighted.wrapping_add((u as i64 as u64).wrapping_mul(m));
            }
            self.work[chan] = weighted;
            weighted = unweighted;
            unweighted = 0;
        }
        let channels = self.cfg.channels;
        for c in 0..channels {
            self.signal[c] = sqrt64(self.work[c + 1]) >> shift;
        }

        let bits = self.cfg.smoothing_bits;
        for c in 0..channels {
            let smoothing = self.smoothing[c & 1] as u64;
            let scaled = self.signal[c].wrapping_shl(bits);
            let estimate = ((scaled as u64 * smoothing + self.estimate[c] as u64 * ((1u64 << NOISE_BITS) - smoothing))
                >> NOISE_BITS) as u32;
            self.estimate[c] = estimate;
            let floor = ((self.signal[c] as u64 * self.min_remaining as u64) >> NOISE_BITS) as u32;
            let subtracted = (scaled - estimate.min(scaled)) >> bits;
            self.signal[c] = subtracted.max(floor);
        }

        if self.cfg.pcan {
            for c in 0..channels {
                let gain = wide_dynamic(self.estimate[c], &self.gain_lut) as i32 as u32;
                let snr = ((self.signal[c] as u64 * gain as u64) >> self.snr_shift) as u32;
                self.signal[c] = pcan_shrink(snr);
            }
        }

        let correction = msb32(n as u32) as i32 - 1 - FILTERBANK_BITS / 2;
        for c in 0..channels {
            let mut v = self.signal[c];
            if self.cfg.log {
                v = if correction < 0 { v >> -correction } else { v.wrapping_shl(correction as u32) };
                v = if v > 1 { fixed_log(v, self.cfg.scale_shift) } else { 0 };
            }
            self.output[c] = v.min(0xFFFF) as u16;
        }
    }
}

/// `cosf` correctly rounded (through f64), as the C library's cosf gives on these arguments.
fn cosf(x: f32) -> f32 {
    libm::cos(x as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_roots_round_to_nearest() {
        for x in [0u64, 1, 2, 3, 4, 8, 15, 16, 17, 99, 1 << 20, 0xFFFE_0000, 1 << 40, (1 << 40) + 12345] {
            let r = sqrt64(x) as f64;
            assert!((r - (x as f64).sqrt()).abs() <= 0.5 + 1e-9, "{x}: {r}");
        }
        // A 32-bit input's root is 16 bits: one that rounds up to 65536 is held at 65535.
        assert_eq!(sqrt64(u32::MAX as u64), 0xFFFF);
    }

    #[test]
    fn fixed_log_follows_ln() {
        for x in [2u32, 3, 10, 100, 1000, 65535, 1 << 24, u32::MAX] {
            let want = (x as f64).ln() * 64.0;
            let got = fixed_log(x, 6) as f64;
            assert!((got - want).abs() < 1.0, "{x}: {got} vs {want}");
        }
    }

    #[test]
    fn fft_of_a_cosine_peaks_at_its_bin() {
        let mut fft = Fft::new(512);
        let samples: [i16; 512] = core::array::from_fn(|i| {
            (8000.0 * libm::cos(2.0 * core::f64::consts::PI * 32.0 * i as f64 / 512.0)) as i16
        });
        fft.real(&samples);
        let mag = |c: Cpx| (c.r as i32).pow(2) + (c.i as i32).pow(2);
        let peak = (0..=256).max_by_key(|&k| mag(fft.out[k])).unwrap();
        assert_eq!(peak, 32);
        // The fixed-point FFT divides by its length: a cosine of amplitude A gives A / 2 at its bin.
        assert!((fft.out[32].r as i32 - 4000).abs() <= 8, "{:?}", fft.out[32]);
    }

    #[test]
    fn silence_gives_zero_features_and_windows_advance_by_step() {
        let mut fe = MicroFrontend::new(MicroFrontendConfig::MICRO_WAKE_WORD).unwrap();
        let zeros = [0i16; 160];
        let mut outputs = 0;
        for _ in 0..10 {
            let mut rest: &[i16] = &zeros;
            while !rest.is_empty() {
                let (took, out) = fe.process(rest);
                if let Some(f) = out {
                    assert_eq!(f.len(), 40);
                    assert!(f.iter().all(|&v| v == 0));
                    outputs += 1;
                }
                rest = &rest[took..];
            }
        }
        // 1600 samples: the first window at 480, then one per 160.
        assert_eq!(outputs, 8);
    }

    #[test]
    fn extreme_signals_never_overflow_or_panic() {
        // Debug builds check every arithmetic overflow: full-scale square waves, a constant
        // −32768, alternating extremes and noise, in blocks of every awkward size.
        let mut fe = MicroFrontend::new(MicroFrontendConfig::MICRO_WAKE_WORD).unwrap();
        let mut seed = 0x9e37_79b9u32;
        let signals: [&dyn Fn(usize) -> i16; 5] = [
            &|i| if i % 2 == 0 { i16::MIN } else { i16::MAX },
            &|_| i16::MIN,
            &|i| if (i / 8) % 2 == 0 { i16::MAX } else { i16::MIN },
            &|i| if i % 480 < 240 { i16::MIN } else { 0 },
            &|i| (i as u32).wrapping_mul(2_654_435_761) as i16,
        ];
        for signal in signals {
            let samples: [i16; 2000] = core::array::from_fn(signal);
            for block in [1usize, 159, 160, 161, 2000] {
                let mut rest: &[i16] = &samples;
                while !rest.is_empty() {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let n = block.min(rest.len()).max(1 + seed as usize % block.min(rest.len()));
                    let (took, out) = fe.process(&rest[..n]);
                    assert!(out.is_none_or(|f| f.len() == 40));
                    rest = &rest[took..];
                }
            }
            fe.reset();
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let mut cfg = MicroFrontendConfig::MICRO_WAKE_WORD;
        cfg.window_ms = 100;
        assert_eq!(MicroFrontend::new(cfg).unwrap_err(), Error::InvalidConfig("micro_frontend.window_ms"));
        let mut cfg = MicroFrontendConfig::MICRO_WAKE_WORD;
        cfg.upper_hz = 9000.0;
        assert_eq!(MicroFrontend::new(cfg).unwrap_err(), Error::InvalidConfig("micro_frontend.upper_hz"));
    }
}
