//! Conformance mode (feature `conformance`): the Cortex-M DSP kernel set held to the reference
//! kernels bit for bit, on the device itself (under QEMU in the tests). Randomized one-op cases
//! (shapes and channel counts that are not multiples of 2 or 4, strides, dilations, padding,
//! extreme zero points, multipliers and shifts that saturate, clamps) for each kernel, then the
//! embedded model on the embedded inputs with both sets. One console line per kernel:
//! `conformance <kernel> cases=<n> mismatches=<n>`, a line per mismatch, then
//! `kernel set <name>: bit-exact` or an error.

use crate::app::AppError;
use core::fmt::Write;
use lepton_core::engine::micro::format::{Conv, FullyConnected, Layout, TensorDesc, TFLITE_ROUNDING};
use lepton_core::engine::micro::kernels::{cortex_m_dsp as dsp, Isa};
use lepton_core::engine::micro::ops::{conv, fully_connected};
use lepton_core::engine::micro::Interpreter;

/// Cases per kernel.
const CASES: usize = 1000;
/// Bytes of each case buffer (input, weights, outputs).
const BUF: usize = 8192;

/// xorshift64*: a fixed seed, so a failing case is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn bytes(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.next() as u8;
        }
    }

    /// Symmetric int8 weights, in [-127, 127].
    fn weights(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.range(-127, 127) as i8 as u8;
        }
    }

    /// One requantization entry (i32 multiplier LE, u8 shift): mostly realistic scales (shift 24..=40,
    /// both sides of 32), sometimes any shift (results far past int8: saturation).
    fn requant(&mut self, out: &mut [u8]) {
        let m = self.range(1 << 30, (1i64 << 31) - 1) as i32;
        let shift = if self.range(0, 7) == 0 { self.range(1, 62) } else { self.range(24, 40) } as u8;
        out[..4].copy_from_slice(&m.to_le_bytes());
        out[4] = shift;
    }

    fn clamp(&mut self) -> [i8; 2] {
        match self.range(0, 3) {
            0 => [-128, 127],
            1 => [0, 127],
            _ => {
                let a = self.range(-128, 127) as i8;
                let b = self.range(a as i64, 127) as i8;
                [a, b]
            }
        }
    }
}

/// Buffers of one case.
struct Case {
    x: [u8; BUF],
    w: [u8; BUF],
    bias: [u8; 4 * 64],
    requant: [u8; 5 * 64],
    want: [u8; BUF],
    got: [u8; BUF],
}

fn desc(name: &str, shape: [u32; 4], zero_point: i32) -> TensorDesc<'_> {
    TensorDesc { name, shape, rank: 4, layout: Layout::Plain, scale: 1.0, zero_point, channels: &[], offset: 0 }
}

/// Biases small enough that `k` products cannot overflow the accumulator.
fn biases(rng: &mut Rng, out: &mut [u8], k: usize) {
    let room = ((1i64 << 31) - 1 - (k as i64) * 255 * 128).max(0);
    let bound = room.min(1 << 20);
    for b in out.chunks_exact_mut(4) {
        b.copy_from_slice(&(rng.range(-bound, bound) as i32).to_le_bytes());
    }
}

/// Counts of one kernel.
#[derive(Default)]
struct Tally {
    cases: usize,
    mismatches: usize,
}

impl Tally {
    fn report(&self, out: &mut impl Write, kernel: &str) -> core::fmt::Result {
        writeln!(out, "conformance {kernel} cases={} mismatches={}", self.cases, self.mismatches)
    }
}

/// Compares a case; writes the first differing output.
fn check(
    out: &mut impl Write,
    kernel: &str,
    case: usize,
    what: &dyn core::fmt::Debug,
    want: &[u8],
    got: &[u8],
    t: &mut Tally,
) -> core::fmt::Result {
    t.cases += 1;
    if let Some(i) = want.iter().zip(got).position(|(a, b)| a != b) {
        t.mismatches += 1;
        writeln!(
            out,
            "mismatch {kernel} case {case} at output {i}: dsp {} reference {} ({what:?})",
            got[i] as i8, want[i] as i8
        )?;
    }
    Ok(())
}

/// Convolutions: regular (`depthwise = false`) or depthwise.
fn convs(out: &mut impl Write, rng: &mut Rng, c: &mut Case, depthwise: bool) -> Result<Tally, AppError> {
    let mut t = Tally::default();
    let mut case = 0;
    while t.cases < CASES {
        case += 1;
        let n = rng.range(1, 2) as u32;
        let (h, w) = (rng.range(1, 9) as u32, rng.range(1, 9) as u32);
        let cin = rng.range(1, if depthwise { 40 } else { 24 }) as u32;
        let cout = if depthwise { cin } else { rng.range(1, 9) as u32 };
        let kernel = [rng.range(1, 5) as u16, rng.range(1, 5) as u16];
        let stride = [rng.range(1, 3) as u16, rng.range(1, 3) as u16];
        let dilation = [rng.range(1, 2) as u16, rng.range(1, 2) as u16];
        let pad = [0; 4].map(|_: u16| rng.range(0, 2) as u16);
        let (Some(oh), Some(ow)) = (
            conv::out_size(h, kernel[0], stride[0], dilation[0], pad[0], pad[2]),
            conv::out_size(w, kernel[1], stride[1], dilation[1], pad[1], pad[3]),
        ) else {
            continue;
        };
        let taps = kernel[0] as usize * kernel[1] as usize;
        let k = if depthwise { taps } else { taps * cin as usize };
        let (xs, ws, ys) = ((n * h * w * cin) as usize, cout as usize * k, (n * oh * ow * cout) as usize);
        if xs > BUF || ws > BUF || ys > BUF || cout > 64 {
            continue;
        }
        let ti = desc("x", [n, h, w, cin], rng.range(-128, 127) as i32);
        let to = desc("y", [n, oh, ow, cout], rng.range(-128, 127) as i32);
        rng.bytes(&mut c.x[..xs]);
        rng.weights(&mut c.w[..ws]);
        biases(rng, &mut c.bias[..4 * cout as usize], k);
        // A third of the cases round as TFLite does (models read from .tflite files).
        let flag = if rng.range(0, 2) == 0 { TFLITE_ROUNDING } else { 0 };
        for ch in 0..cout as usize {
            rng.requant(&mut c.requant[5 * ch..5 * ch + 5]);
            c.requant[5 * ch + 4] |= flag;
        }
        let op = Conv {
            input: 0,
            output: 1,
            kernel,
            stride,
            dilation,
            pad,
            groups: if depthwise { cin as u16 } else { 1 },
            weights: &c.w[..ws],
            bias: &c.bias[..4 * cout as usize],
            requant: &c.requant[..5 * cout as usize],
            clamp: rng.clamp(),
        };
        if conv::validate(&op, &ti, &to).is_err() || !dsp::conv_supported(&op, &ti) {
            continue;
        }
        conv::reference(&op, &ti, &c.x[..xs], &to, &mut c.want[..ys]);
        c.got[..ys].fill(0x55);
        dsp::conv(&op, &ti, &c.x[..xs], &to, &mut c.got[..ys]);
        let name = if depthwise { "depthwise" } else { "conv" };
        check(
            out,
            name,
            case,
            &(ti.shape, to.shape, kernel, stride, dilation, pad),
            &c.want[..ys],
            &c.got[..ys],
            &mut t,
        )?;
    }
    Ok(t)
}

/// Fully connected layers.
fn fcs(out: &mut impl Write, rng: &mut Rng, c: &mut Case) -> Result<Tally, AppError> {
    let mut t = Tally::default();
    let mut case = 0;
    while t.cases < CASES {
        case += 1;
        let n = rng.range(1, 3) as u32;
        let cin = rng.range(1, 300) as u32;
        let cout = rng.range(1, 24) as u32;
        let (xs, ws, ys) = ((n * cin) as usize, (cout * cin) as usize, (n * cout) as usize);
        if xs > BUF || ws > BUF {
            continue;
        }
        let ti = desc("x", [n, 1, 1, cin], rng.range(-128, 127) as i32);
        let to = desc("y", [n, 1, 1, cout], rng.range(-128, 127) as i32);
        rng.bytes(&mut c.x[..xs]);
        rng.weights(&mut c.w[..ws]);
        biases(rng, &mut c.bias[..4 * cout as usize], cin as usize);
        // A third of the cases round as TFLite does (models read from .tflite files).
        let flag = if rng.range(0, 2) == 0 { TFLITE_ROUNDING } else { 0 };
        for ch in 0..cout as usize {
            rng.requant(&mut c.requant[5 * ch..5 * ch + 5]);
            c.requant[5 * ch + 4] |= flag;
        }
        let op = FullyConnected {
            input: 0,
            output: 1,
            weights: &c.w[..ws],
            bias: &c.bias[..4 * cout as usize],
            requant: &c.requant[..5 * cout as usize],
            clamp: rng.clamp(),
        };
        if fully_connected::validate(&op, &ti, &to).is_err() {
            continue;
        }
        fully_connected::reference(&op, &ti, &c.x[..xs], &to, &mut c.want[..ys]);
        c.got[..ys].fill(0x55);
        dsp::fully_connected(&op, &ti, &c.x[..xs], &to, &mut c.got[..ys]);
        check(out, "fully_connected", case, &(n, cin, cout), &c.want[..ys], &c.got[..ys], &mut t)?;
    }
    Ok(t)
}

/// Runs the suite, then the model on every embedded input set with both kernel sets; `reference`
/// is a second arena of the model's size.
pub fn run<const T: usize>(
    out: &mut impl Write,
    model: &Interpreter<'_, T>,
    arena: &mut [u8],
    reference: &mut [u8],
    data: &[u8],
    runs: usize,
) -> Result<usize, AppError> {
    if model.kernel_set() != Isa::CortexMDsp {
        writeln!(out, "conformance: this build has no DSP kernel set (kernel set {})", model.kernel_set())?;
        return Err(AppError::Conformance(1));
    }
    static mut CASE: Case =
        Case { x: [0; BUF], w: [0; BUF], bias: [0; 256], requant: [0; 320], want: [0; BUF], got: [0; BUF] };
    // SAFETY: conformance mode runs once, on one core; nothing else touches CASE.
    let c = unsafe { &mut *core::ptr::addr_of_mut!(CASE) };
    let mut rng = Rng(0x1e97_0d5b_c0de_2026);
    let mut failed = 0;
    for (name, t) in [
        ("conv", convs(out, &mut rng, c, false)?),
        ("depthwise", convs(out, &mut rng, c, true)?),
        ("fully_connected", fcs(out, &mut rng, c)?),
    ] {
        t.report(out, name)?;
        failed += t.mismatches;
    }
    // The embedded model, every input set, both sets.
    let mut model_mismatches = 0;
    let mut offset = 0;
    for _ in 0..runs {
        for i in 0..model.header().inputs.len() {
            let len = model.input(i)?.len();
            let src = data.get(offset..offset + len).ok_or(AppError::Inputs)?;
            model.input_mut(arena, i)?.copy_from_slice(src);
            model.input_mut(reference, i)?.copy_from_slice(src);
            offset += len;
        }
        model.run(arena)?;
        model.run_reference(reference)?;
        for o in 0..model.header().outputs.len() {
            if model.output(arena, o)? != model.output(reference, o)? {
                model_mismatches += 1;
            }
        }
    }
    writeln!(out, "conformance model runs={runs} mismatches={model_mismatches}")?;
    failed += model_mismatches;
    if failed > 0 {
        return Err(AppError::Conformance(failed));
    }
    writeln!(out, "kernel set {}: bit-exact with the reference", model.kernel_set())?;
    Ok(runs)
}
