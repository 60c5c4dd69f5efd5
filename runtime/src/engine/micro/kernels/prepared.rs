//! A micro model prepared for fast execution on a host: convolutions and fully connected layers
//! become GEMMs over repacked weights (x86-64 with AVX-512 VNNI), depthwise convolutions a
//! channel-vectorized kernel; everything else runs the reference kernels.

use crate::engine::micro::format::{i32_at, requant_at, Op, TensorDesc};
use crate::engine::micro::ops;

pub use super::Isa;

/// Per-output-channel constants of a GEMM-shaped op, padded to blocks of 16 channels.
#[derive(Debug, Clone)]
pub struct Epilogue {
    /// Accumulator start: bias minus the zero-point correction.
    pub acc_init: Vec<i32>,
    /// Requantization multipliers (i64 lanes).
    pub mult: Vec<i64>,
    /// Rounding terms `1 << (shift - 1)`.
    pub round: Vec<i64>,
    /// Shifts.
    pub shift: Vec<i64>,
    /// Output zero point.
    pub zero_point: i32,
    /// Output clamp.
    pub clamp: [i8; 2],
}

/// A GEMM: `out[p][n] = requant(acc_init[n] + Σ_k a_u8[p][k] · w[n][k])`, activations shifted to
/// unsigned (`a + 128`), the shift and the input zero point folded into `acc_init`.
#[derive(Debug, Clone)]
pub struct Gemm {
    /// Output channels.
    pub n: usize,
    /// Reduction length (before padding to 4).
    pub k: usize,
    /// `k` rounded up to 4.
    pub k4: usize,
    /// Weights `[n/16][k4/4][16][4]`.
    pub packed: Vec<i8>,
    /// Epilogue constants.
    pub epilogue: Epilogue,
}

/// How a convolution feeds its GEMM.
#[derive(Debug, Clone)]
pub enum ConvPlan {
    /// 1×1, stride 1, no padding: rows of the input are the GEMM's rows.
    Pointwise(Gemm),
    /// Any other ungrouped convolution: im2col rows (padding filled with the zero point).
    Im2col(Gemm),
    /// Depthwise (one input channel per group), weights packed for `vpdpwssd`.
    #[cfg(target_arch = "x86_64")]
    Depthwise(super::x86::DepthwisePacked),
}

/// One op and how it runs.
#[derive(Debug, Clone)]
pub enum Step {
    /// Convolution with a fast plan.
    Conv(ConvPlan),
    /// Fully connected as a GEMM.
    Fc(Gemm),
    /// Table lookup, 64 bytes per step.
    Lut,
    /// Add or multiply with `b` shaped like `a` or one value per channel.
    Binary {
        /// `b` holds one value per channel.
        per_channel: bool,
    },
    /// Mean over H and W, vectorized over channels.
    GlobalAverage,
    /// Max pooling, vectorized over channels.
    MaxPool,
    /// The reference kernel.
    Reference,
}

fn epilogue(
    bias: impl Fn(usize) -> i32,
    correction: impl Fn(usize) -> i64,
    requant: &[u8],
    n: usize,
    zero_point: i32,
    clamp: [i8; 2],
) -> Epilogue {
    let np = n.div_ceil(16) * 16;
    let mut e = Epilogue {
        acc_init: vec![0; np],
        mult: vec![0; np],
        round: vec![0; np],
        shift: vec![1; np],
        zero_point,
        clamp,
    };
    for c in 0..n {
        let r = requant_at(requant, c);
        e.acc_init[c] = (bias(c) as i64 - correction(c)) as i32;
        e.mult[c] = r.multiplier as i64;
        e.shift[c] = r.shift as i64;
        e.round[c] = 1i64 << (r.shift - 1);
    }
    e
}

#[allow(clippy::too_many_arguments)]
fn gemm(weights: &[u8], n: usize, k: usize, bias: &[u8], requant: &[u8], zx: i32, zy: i32, clamp: [i8; 2]) -> Gemm {
    let k4 = k.div_ceil(4) * 4;
    let nb = n.div_ceil(16);
    let mut packed = vec![0i8; nb * k4 * 16];
    for co in 0..n {
        for kk in 0..k {
            let (b, lane) = (co / 16, co % 16);
            packed[((b * (k4 / 4) + kk / 4) * 16 + lane) * 4 + kk % 4] = weights[co * k + kk] as i8;
        }
    }
    // Σ (a - zx)·w = Σ (a + 128)·w - (128 + zx)·Σ w
    let wsum = |co: usize| (0..k).map(|kk| weights[co * k + kk] as i8 as i64).sum::<i64>();
    let epilogue = epilogue(|c| i32_at(bias, c), |c| (128 + zx as i64) * wsum(c), requant, n, zy, clamp);
    Gemm { n, k, k4, packed, epilogue }
}

/// Plans every op of a model for `isa`.
pub fn prepare<'m>(
    ops_iter: impl Iterator<Item = Op<'m>>,
    tensors: &[TensorDesc<'_>],
    isa: Isa,
) -> Vec<(Op<'m>, Step)> {
    ops_iter
        .map(|op| {
            let step = if isa == Isa::Reference { Step::Reference } else { plan(&op, tensors) };
            (op, step)
        })
        .collect()
}

fn plan(op: &Op<'_>, t: &[TensorDesc<'_>]) -> Step {
    match op {
        Op::Conv(c) => {
            let (ti, to) = (&t[c.input as usize], &t[c.output as usize]);
            let (cin, cout) = (ti.shape[3] as usize, to.shape[3] as usize);
            let (kh, kw) = (c.kernel[0] as usize, c.kernel[1] as usize);
            #[cfg(target_arch = "x86_64")]
            if c.groups as usize == cin && cin == cout && c.groups > 1 && kh * kw <= 64 {
                let e = epilogue(|ch| i32_at(c.bias, ch), |_| 0, c.requant, cout, to.zero_point, c.clamp);
                let packed =
                    super::x86::pack_depthwise(c.weights, kh * kw, cout, |ch| i32_at(c.bias, ch), &e, ti.zero_point);
                return Step::Conv(ConvPlan::Depthwise(packed));
            }
            if c.groups != 1 {
                return Step::Reference;
            }
            let k = kh * kw * cin;
            let g = gemm(c.weights, cout, k, c.bias, c.requant, ti.zero_point, to.zero_point, c.clamp);
            let pointwise = kh == 1 && kw == 1 && c.stride == [1, 1] && c.pad == [0; 4];
            Step::Conv(if pointwise { ConvPlan::Pointwise(g) } else { ConvPlan::Im2col(g) })
        }
        Op::FullyConnected(f) => {
            let (ti, to) = (&t[f.input as usize], &t[f.output as usize]);
            let n = ti.shape[0] as usize;
            let (cin, cout) = (ti.len() / n, to.len() / n);
            Step::Fc(gemm(f.weights, cout, cin, f.bias, f.requant, ti.zero_point, to.zero_point, f.clamp))
        }
        #[cfg(target_arch = "x86_64")]
        Op::Lut { .. } if super::x86::has_vbmi() => Step::Lut,
        Op::Add(b) | Op::Mul(b) => {
            let (ta, tb) = (&t[b.a as usize], &t[b.b as usize]);
            if tb.shape == ta.shape {
                Step::Binary { per_channel: false }
            } else if tb.len() == ta.shape[3] as usize && tb.shape[3] == ta.shape[3] {
                Step::Binary { per_channel: true }
            } else {
                Step::Reference
            }
        }
        Op::GlobalAvgPool { .. } => Step::GlobalAverage,
        Op::MaxPool(_) => Step::MaxPool,
        _ => Step::Reference,
    }
}

/// Scratch a prepared model needs (im2col rows, unsigned activation rows).
pub fn scratch_bytes(steps: &[(Op<'_>, Step)], t: &[TensorDesc<'_>]) -> usize {
    steps
        .iter()
        .map(|(op, s)| match (op, s) {
            (Op::Conv(c), Step::Conv(ConvPlan::Pointwise(g) | ConvPlan::Im2col(g))) => {
                let to = &t[c.output as usize];
                (to.shape[0] * to.shape[1] * to.shape[2]) as usize * g.k4 + 64
            }
            (Op::FullyConnected(f), Step::Fc(g)) => t[f.input as usize].shape[0] as usize * g.k4 + 64,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// Runs one prepared op.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub fn run(op: &Op<'_>, step: &Step, t: &[TensorDesc<'_>], arena: &mut [u8], scratch: &mut [u8]) {
    match (op, step) {
        #[cfg(target_arch = "x86_64")]
        (Op::Conv(c), Step::Conv(plan)) => {
            let (ti, to) = (&t[c.input as usize], &t[c.output as usize]);
            let ([x], y) = ops::io(arena, [ti.range()], to.range());
            match plan {
                ConvPlan::Pointwise(g) => {
                    let rows = (ti.shape[0] * ti.shape[1] * ti.shape[2]) as usize;
                    let a = pack_rows(x, rows, g.k, g.k4, scratch);
                    super::x86::gemm(a, rows, g, y);
                }
                ConvPlan::Im2col(g) => {
                    let rows = (to.shape[0] * to.shape[1] * to.shape[2]) as usize;
                    let a = im2col(c, ti, to, x, g.k4, scratch);
                    super::x86::gemm(a, rows, g, y);
                }
                ConvPlan::Depthwise(packed) => super::x86::depthwise(c, ti, to, x, y, packed),
            }
        }
        #[cfg(target_arch = "x86_64")]
        (Op::Lut { input, output, table }, Step::Lut) => {
            let ([x], y) = ops::io(arena, [t[*input as usize].range()], t[*output as usize].range());
            super::x86::lut(table, x, y);
        }
        #[cfg(target_arch = "x86_64")]
        (Op::Add(b) | Op::Mul(b), Step::Binary { per_channel }) => {
            let (ta, tb, to) = (&t[b.a as usize], &t[b.b as usize], &t[b.output as usize]);
            let ([xa, xb], y) = ops::io(arena, [ta.range(), tb.range()], to.range());
            super::x86::binary(matches!(op, Op::Mul(_)), b, ta, xa, tb, xb, to, y, *per_channel);
        }
        #[cfg(target_arch = "x86_64")]
        (Op::GlobalAvgPool { input, output, requant }, Step::GlobalAverage) => {
            let (ti, to) = (&t[*input as usize], &t[*output as usize]);
            let ([x], y) = ops::io(arena, [ti.range()], to.range());
            super::x86::global_average(requant, ti, x, to, y);
        }
        #[cfg(target_arch = "x86_64")]
        (Op::MaxPool(p), Step::MaxPool) => {
            let (ti, to) = (&t[p.input as usize], &t[p.output as usize]);
            let ([x], y) = ops::io(arena, [ti.range()], to.range());
            super::x86::max_pool(p, ti, x, to, y);
        }
        #[cfg(target_arch = "x86_64")]
        (Op::FullyConnected(f), Step::Fc(g)) => {
            let (ti, to) = (&t[f.input as usize], &t[f.output as usize]);
            let ([x], y) = ops::io(arena, [ti.range()], to.range());
            let rows = ti.shape[0] as usize;
            let a = pack_rows(x, rows, g.k, g.k4, scratch);
            super::x86::gemm(a, rows, g, y);
        }
        _ => ops::run(op, t, arena),
    }
}

/// Rows of `k` int8 values → rows of `k4` unsigned bytes (`+128`), zero-padded.
#[cfg(target_arch = "x86_64")]
fn pack_rows<'s>(x: &[u8], rows: usize, k: usize, k4: usize, scratch: &'s mut [u8]) -> &'s [u8] {
    let a = &mut scratch[..rows * k4];
    for r in 0..rows {
        let (src, dst) = (&x[r * k..(r + 1) * k], &mut a[r * k4..(r + 1) * k4]);
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s ^ 0x80;
        }
        dst[k..].fill(0);
    }
    a
}

/// im2col rows `[oh·ow][kh][kw][cin]` as unsigned bytes; padding holds the zero point.
#[cfg(target_arch = "x86_64")]
fn im2col<'s>(
    c: &crate::engine::micro::format::Conv<'_>,
    ti: &TensorDesc<'_>,
    to: &TensorDesc<'_>,
    x: &[u8],
    k4: usize,
    scratch: &'s mut [u8],
) -> &'s [u8] {
    let [n, h, w, cin] = ti.shape.map(|d| d as usize);
    let [_, oh, ow, _] = to.shape.map(|d| d as usize);
    let (kh, kw) = (c.kernel[0] as usize, c.kernel[1] as usize);
    let pad = (ti.zero_point as i8 as u8) ^ 0x80;
    let a = &mut scratch[..n * oh * ow * k4];
    let mut row = 0;
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let dst = &mut a[row * k4..(row + 1) * k4];
                let mut k = 0;
                for ky in 0..kh {
                    let iy = (oy * c.stride[0] as usize + ky * c.dilation[0] as usize) as isize - c.pad[0] as isize;
                    for kx in 0..kw {
                        let ix = (ox * c.stride[1] as usize + kx * c.dilation[1] as usize) as isize - c.pad[1] as isize;
                        let inside = iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                        if inside {
                            let s = ((b * h + iy as usize) * w + ix as usize) * cin;
                            for ci in 0..cin {
                                dst[k + ci] = x[s + ci] ^ 0x80;
                            }
                        } else {
                            dst[k..k + cin].fill(pad);
                        }
                        k += cin;
                    }
                }
                dst[k..].fill(0);
                row += 1;
            }
        }
    }
    a
}
