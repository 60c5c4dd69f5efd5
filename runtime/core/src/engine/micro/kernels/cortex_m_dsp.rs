//! The Cortex-M DSP set (armv7e-m: Cortex-M4, M7, M33 with the DSP extension), no_std and
//! allocation-free: what the firmware's interpreter runs. Dual 16-bit multiply-accumulates
//! (`smlad`) on sign-extended pairs, as CMSIS-NN does, on the model's weights as stored in flash
//! (no repacking, so nothing is copied to RAM).
//!
//! - Convolution (groups = 1) and fully connected: each pair of output positions is unfolded
//!   into two columns of 16-bit `x − zx` on the stack (`sxtab16`, 4 values per word, in the
//!   `[0, 2, 1, 3]` order `sxtb16` gives the weights); then each pair of output channels takes
//!   both columns at once: per 4 reduction steps, 2 weight loads, 4 `sxtb16`, 4 column loads and
//!   8 `smlad` for 16 multiply-accumulates.
//! - Depthwise convolution: 4 channels per step (`sxtab16` on one word of activations,
//!   `smlabb`/`smlatt` per channel), taps outside the image skipped.
//! - Requantization: the exact fixed-point step of [`crate::quant::Requant`], with one 32×32→64
//!   multiply and a 32-bit shift when the shift is 32 or more (every shift a realistic scale gives);
//!   for models read from TFLite files, TFLite's rounding ([`Requant::apply_tflite`]): `2^30` more
//!   away from zero before the shift.
//!
//! Other ops, and reductions longer than the stack columns ([`MAX_K`]), run the reference
//! kernels. The firmware's conformance build (`firmware/mcu`, feature `conformance`) holds every
//! kernel here to the reference, bit for bit, on randomized shapes and parameters under
//! qemu-system-arm.

// The DSP instructions are inline assembly; unsafe stays in this file.
#![allow(unsafe_code)]

use crate::engine::micro::format::{rounding, Conv, FullyConnected, Op, TensorDesc, TFLITE_ROUNDING};
use crate::engine::micro::ops;
use crate::quant::{Requant, Rounding};
use core::arch::asm;

/// Longest reduction (kh·kw·cin) the unfolded columns hold (2 × 2 KiB of stack).
pub const MAX_K: usize = 1024;

/// Runs `op` with this set's kernel when it has one for it; `false`: run the reference kernel.
pub fn run(op: &Op<'_>, t: &[TensorDesc<'_>], arena: &mut [u8]) -> bool {
    let d = |id: u16| &t[id as usize];
    match op {
        Op::Conv(c) => {
            let (i, o) = (d(c.input), d(c.output));
            let ([x], y) = ops::io(arena, [i.range()], o.range());
            conv(c, i, x, o, y)
        }
        Op::FullyConnected(f) => {
            let (i, o) = (d(f.input), d(f.output));
            let ([x], y) = ops::io(arena, [i.range()], o.range());
            fully_connected(f, i, x, o, y)
        }
        _ => false,
    }
}

/// Whether [`conv`] takes this convolution: groups = 1 with a reduction within [`MAX_K`], or
/// depthwise with one output channel per input channel.
pub fn conv_supported(c: &Conv<'_>, ti: &TensorDesc<'_>) -> bool {
    let cin = ti.shape[3] as usize;
    let taps = c.kernel[0] as usize * c.kernel[1] as usize;
    (c.groups == 1 && taps * cin <= MAX_K)
        || (c.groups as usize == cin
            && c.weights.len() == cin * taps
            && taps <= MAX_TAPS
            && cin * taps <= MAX_DEPTHWISE)
}

/// The convolution, if [`conv_supported`]; `false` (nothing written) otherwise.
pub fn conv(c: &Conv<'_>, ti: &TensorDesc<'_>, x: &[u8], to: &TensorDesc<'_>, y: &mut [u8]) -> bool {
    if !conv_supported(c, ti) {
        return false;
    }
    let [n, h, w, cin] = ti.shape.map(|d| d as usize);
    let [_, oh, ow, cout] = to.shape.map(|d| d as usize);
    let g = Geometry {
        n,
        h,
        w,
        cin,
        oh,
        ow,
        cout,
        kernel: [c.kernel[0] as usize, c.kernel[1] as usize],
        stride: [c.stride[0] as usize, c.stride[1] as usize],
        dilation: [c.dilation[0] as usize, c.dilation[1] as usize],
        pad: [c.pad[0] as usize, c.pad[1] as usize],
        zx: ti.zero_point,
    };
    let out = Output::new(c.bias, c.requant, c.clamp, to.zero_point);
    if c.groups == 1 {
        gemm(&g, c.weights, &out, x, y);
    } else {
        depthwise(&g, c.weights, &out, x, y);
    }
    true
}

/// The fully connected layer, if its input row fits [`MAX_K`]; `false` otherwise.
pub fn fully_connected(
    f: &FullyConnected<'_>,
    ti: &TensorDesc<'_>,
    x: &[u8],
    to: &TensorDesc<'_>,
    y: &mut [u8],
) -> bool {
    let n = ti.shape[0] as usize;
    let (cin, cout) = (ti.len() / n, to.len() / n);
    if cin > MAX_K {
        return false;
    }
    // A batch of rows is a 1×1 convolution over n positions.
    let g = Geometry {
        n,
        h: 1,
        w: 1,
        cin,
        oh: 1,
        ow: 1,
        cout,
        kernel: [1, 1],
        stride: [1, 1],
        dilation: [1, 1],
        pad: [0, 0],
        zx: ti.zero_point,
    };
    let out = Output::new(f.bias, f.requant, f.clamp, to.zero_point);
    gemm(&g, f.weights, &out, x, y);
    true
}

/// A convolution's shapes (NHWC).
struct Geometry {
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    oh: usize,
    ow: usize,
    cout: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    /// Top, left.
    pad: [usize; 2],
    zx: i32,
}

/// What turns accumulators into outputs.
struct Output<'a> {
    bias: &'a [u8],
    requant: &'a [u8],
    clamp: [i8; 2],
    zy: i32,
    /// TFLite's rounding (the table's flag): `2^30` away from zero, for shifts of 32 or more.
    away: i64,
}

impl<'a> Output<'a> {
    fn new(bias: &'a [u8], requant: &'a [u8], clamp: [i8; 2], zy: i32) -> Self {
        let away = if rounding(requant) == Rounding::Tflite { 1 << 30 } else { 0 };
        Output { bias, requant, clamp, zy, away }
    }

    /// Checks the tables cover `channels` (then [`Output::channel`] reads them unchecked).
    fn check(&self, channels: usize) {
        assert!(self.bias.len() >= channels * 4 && self.requant.len() >= channels * 5);
    }

    /// Bias and requantization of channel `c` (< the channels [`Output::check`]ed).
    #[inline(always)]
    fn channel(&self, c: usize) -> Channel {
        // SAFETY: check() asserted both tables hold c + 1 entries.
        let (bias, multiplier, shift) = unsafe {
            let b = self.bias.as_ptr().add(c * 4);
            let r = self.requant.as_ptr().add(c * 5);
            (load(b) as i32, load(r) as i32, *r.add(4) & !TFLITE_ROUNDING)
        };
        // The rounding term 2^(shift − 1) from 32-bit halves (no 64-bit variable shift).
        let hi = (1u32 << (shift.wrapping_sub(32) & 31)) >> 1;
        let lo = u32::from(shift == 32) << 31;
        let round = ((hi as u64) << 32 | lo as u64) as i64;
        // With a shift under 32, TFLite's rounding is the same single rounding.
        let away = if shift >= 32 { self.away } else { 0 };
        Channel { bias, requant: Requant { multiplier, shift }, round, away }
    }

    /// The output byte for accumulator `acc` of a channel.
    #[inline(always)]
    fn value(&self, ch: &Channel, acc: i32) -> u8 {
        let v = ch.apply(acc).saturating_add(self.zy);
        v.clamp(self.clamp[0] as i32, self.clamp[1] as i32) as i8 as u8
    }
}

/// One output channel's bias and requantization, split for 32-bit arithmetic.
#[derive(Clone, Copy)]
struct Channel {
    bias: i32,
    requant: Requant,
    /// `2^(shift − 1)`, the rounding term, when shift ≥ 32.
    round: i64,
    /// TFLite's extra `2^30` away from zero (0 for Lepton's own rounding).
    away: i64,
}

impl Channel {
    /// `round_half_up(acc · multiplier / 2^shift)`, exactly as [`Requant::apply`] (or
    /// [`Requant::apply_tflite`] for a flagged table), saturated to i32.
    #[inline(always)]
    fn apply(&self, acc: i32) -> i32 {
        let Requant { multiplier, shift } = self.requant;
        if shift >= 32 {
            // (v + 2^(s−1)) >> s = ((v + 2^(s−1)) >> 32) >> (s − 32): one `smlal` and one `asr`;
            // |v| < 2^62, so the high word holds the whole quotient. TFLite's rounding adds 2^30
            // with the product's sign (its sign word: 0 or −1).
            let p = acc as i64 * multiplier as i64;
            let sign = p >> 63;
            let v = self.round + p + ((self.away ^ sign) - sign);
            ((v >> 32) as i32) >> ((shift - 32) & 31)
        } else {
            self.requant.apply(acc as i64).clamp(i32::MIN as i64, i32::MAX as i64) as i32
        }
    }
}

/// One unfolded column: 16-bit entries, two per word.
type Column = [u32; MAX_K / 2];

/// Entry `i` of a column.
#[inline(always)]
fn get(col: &Column, i: usize) -> i32 {
    (col[i / 2] >> ((i & 1) * 16)) as u16 as i16 as i32
}

/// `(v, v)` as two 16-bit halves.
#[inline(always)]
fn pair(v: i32) -> u32 {
    let h = v as i16 as u16 as u32;
    h | (h << 16)
}

impl Geometry {
    fn k(&self) -> usize {
        self.kernel[0] * self.kernel[1] * self.cin
    }

    fn positions(&self) -> usize {
        self.n * self.oh * self.ow
    }

    /// Unfolds output position `p` into `col`: `x − zx` in 16 bits, zero for padding, each full
    /// group of 4 in the order `[0, 2, 1, 3]`.
    fn unfold(&self, x: &[u8], p: usize, col: &mut Column) {
        let k = self.k();
        let (b, oy, ox) = (p / (self.oh * self.ow), p / self.ow % self.oh, p % self.ow);
        let cin = self.cin;
        if !cin.is_multiple_of(4) {
            return self.unfold_bytes(x, (b, oy, ox), col, k);
        }
        let offset = pair(-self.zx);
        let mut kk = 0;
        for ky in 0..self.kernel[0] {
            let iy = (oy * self.stride[0] + ky * self.dilation[0]) as isize - self.pad[0] as isize;
            for kx in 0..self.kernel[1] {
                let ix = (ox * self.stride[1] + kx * self.dilation[1]) as isize - self.pad[1] as isize;
                let inside = iy >= 0 && iy < self.h as isize && ix >= 0 && ix < self.w as isize;
                // kk is a multiple of 4: whole groups; one word of x makes two of the column.
                let dst = &mut col[kk / 2..(kk + cin) / 2];
                if inside {
                    let at = ((b * self.h + iy as usize) * self.w + ix as usize) * cin;
                    for (d, xs) in dst.chunks_exact_mut(2).zip(x[at..at + cin].chunks_exact(4)) {
                        let v = u32::from_le_bytes([xs[0], xs[1], xs[2], xs[3]]);
                        d[0] = sxtab16(offset, v);
                        d[1] = sxtab16_ror8(offset, v);
                    }
                } else {
                    dst.fill(0);
                }
                kk += cin;
            }
        }
    }

    /// [`Geometry::unfold`] for channel counts that are not multiples of 4: `x − zx` in order,
    /// a kernel row at a time (one run of bytes when the whole row is inside), then each full
    /// group of 4 reordered.
    fn unfold_bytes(&self, x: &[u8], (b, oy, ox): (usize, usize, usize), col: &mut Column, k: usize) {
        let cin = self.cin;
        let zx = self.zx as i16;
        let row_len = self.kernel[1] * cin;
        let x0 = (ox * self.stride[1]) as isize - self.pad[1] as isize;
        let x_last = x0 + ((self.kernel[1] - 1) * self.dilation[1]) as isize;
        let contiguous = self.dilation[1] == 1 && x0 >= 0 && x_last < self.w as isize;
        let halves: &mut [i16] = bytemuck::cast_slice_mut(&mut col[..]);
        for ky in 0..self.kernel[0] {
            let iy = (oy * self.stride[0] + ky * self.dilation[0]) as isize - self.pad[0] as isize;
            let dst = &mut halves[ky * row_len..(ky + 1) * row_len];
            if iy < 0 || iy >= self.h as isize {
                dst.fill(0);
            } else if contiguous {
                let at = ((b * self.h + iy as usize) * self.w + x0 as usize) * cin;
                for (d, &v) in dst.iter_mut().zip(&x[at..at + row_len]) {
                    *d = (v as i8 as i16) - zx;
                }
            } else {
                for (kx, d) in dst.chunks_exact_mut(cin).enumerate() {
                    let ix = x0 + (kx * self.dilation[1]) as isize;
                    if ix < 0 || ix >= self.w as isize {
                        d.fill(0);
                    } else {
                        let at = ((b * self.h + iy as usize) * self.w + ix as usize) * cin;
                        for (d, &v) in d.iter_mut().zip(&x[at..at + cin]) {
                            *d = (v as i8 as i16) - zx;
                        }
                    }
                }
            }
        }
        // (x0, x1), (x2, x3) → (x0, x2), (x1, x3).
        for g in col[..k / 4 * 2].chunks_exact_mut(2) {
            let (a, b) = (g[0], g[1]);
            g[0] = (a & 0xFFFF) | (b << 16);
            g[1] = (a >> 16) | (b & 0xFFFF_0000);
        }
    }
}

/// The little-endian word at `p` (any alignment).
///
/// # Safety
/// `p..p + 4` must be readable.
#[inline(always)]
unsafe fn load(p: *const u8) -> u32 {
    // SAFETY: the caller keeps p..p + 4 in bounds.
    unsafe { u32::from_le(core::ptr::read_unaligned(p.cast::<u32>())) }
}

/// `out[p][co]` for every output position and channel: two positions (columns) by two channels
/// (weight rows) at a time.
fn gemm(g: &Geometry, weights: &[u8], out: &Output<'_>, x: &[u8], y: &mut [u8]) {
    let (k, cout, positions) = (g.k(), g.cout, g.positions());
    let k4 = k & !3;
    assert!(k <= MAX_K && weights.len() >= cout * k && y.len() >= positions * cout);
    out.check(cout);
    let mut cols: [Column; 2] = [[0; MAX_K / 2]; 2];
    let mut p = 0;
    while p < positions {
        // An odd last position is computed twice and written once.
        let p1 = (p + 1).min(positions - 1);
        let [c0, c1] = &mut cols;
        g.unfold(x, p, c0);
        g.unfold(x, p1, c1);
        let (c0, c1) = (&cols[0], &cols[1]);
        let mut co = 0;
        while co < cout {
            // An odd last channel likewise.
            let co1 = (co + 1).min(cout - 1);
            let (w0, w1) = (&weights[co * k..co * k + k], &weights[co1 * k..co1 * k + k]);
            let (r0, r1) = (out.channel(co), out.channel(co1));
            let mut acc = [r0.bias, r0.bias, r1.bias, r1.bias];
            dot_2x2(&mut acc, &weights[co * k..], (co1 - co) * k, &cols, k4);
            for j in k4..k {
                let (wa, wb) = (w0[j] as i8 as i32, w1[j] as i8 as i32);
                let (a, b) = (get(c0, j), get(c1, j));
                acc[0] += wa * a;
                acc[1] += wa * b;
                acc[2] += wb * a;
                acc[3] += wb * b;
            }
            // SAFETY: p, p1 < positions and co, co1 < cout; y holds positions·cout (asserted).
            unsafe {
                let y = y.as_mut_ptr();
                *y.add(p * cout + co) = out.value(&r0, acc[0]);
                *y.add(p1 * cout + co) = out.value(&r0, acc[1]);
                *y.add(p * cout + co1) = out.value(&r1, acc[2]);
                *y.add(p1 * cout + co1) = out.value(&r1, acc[3]);
            }
            co += 2;
        }
        p += 2;
    }
}

/// One step of the inner loop in assembly: 4 reduction steps of 2 weight rows (`{wp}`, post-
/// incremented, and `{wp} + {kb}`) by 2 columns (`{cp}` + `$at` bytes, and 2048 bytes further).
macro_rules! step_2x2 {
    ($at:literal, $at4:literal, $far:literal, $far4:literal) => {
        concat!(
            "ldr {wb}, [{wp}, {kb}]\n",
            "ldr {wa}, [{wp}], #4\n",
            "sxtb16 {wa0}, {wa}\n",
            "sxtb16 {wa}, {wa}, ror #8\n",
            "sxtb16 {wb0}, {wb}\n",
            "sxtb16 {wb}, {wb}, ror #8\n",
            "ldr {x}, [{cp}, #",
            $at,
            "]\n",
            "smlad {a00}, {wa0}, {x}, {a00}\n",
            "smlad {a10}, {wb0}, {x}, {a10}\n",
            "ldr {x}, [{cp}, #",
            $at4,
            "]\n",
            "smlad {a00}, {wa}, {x}, {a00}\n",
            "smlad {a10}, {wb}, {x}, {a10}\n",
            "ldr {x}, [{cp}, #",
            $far,
            "]\n",
            "smlad {a01}, {wa0}, {x}, {a01}\n",
            "smlad {a11}, {wb0}, {x}, {a11}\n",
            "ldr {x}, [{cp}, #",
            $far4,
            "]\n",
            "smlad {a01}, {wa}, {x}, {a01}\n",
            "smlad {a11}, {wb}, {x}, {a11}\n",
        )
    };
}

/// The inner loop: `acc[2r + c] += Σ_{j < k4} w_r[j] · col_c[j]` for weight rows `rows` and
/// `rows + kb` and the two columns of `cols` (`k4` a multiple of 4 within both). One assembly
/// loop, 8 reduction steps a turn: 12 registers hold 4 accumulators, 4 extended weights,
/// 3 pointers and a scratch (the end pointer waits on the stack).
#[inline(always)]
fn dot_2x2(acc: &mut [i32; 4], rows: &[u8], kb: usize, cols: &[Column; 2], k4: usize) {
    assert!(k4 <= MAX_K && rows.len() >= kb + k4 && k4.is_multiple_of(4));
    let [mut a00, mut a01, mut a10, mut a11] = *acc;
    let mut j = 0;
    if k4 % 8 == 4 {
        // An odd group of 4 first, so the loop takes 8 at a time.
        let (wa, wb) = (u32::from_le_bytes([rows[0], rows[1], rows[2], rows[3]]), {
            let r = &rows[kb..kb + 4];
            u32::from_le_bytes([r[0], r[1], r[2], r[3]])
        });
        let (wa0, wa1, wb0, wb1) = (sxtb16(wa), sxtb16_ror8(wa), sxtb16(wb), sxtb16_ror8(wb));
        let (x0, x1, z0, z1) = (cols[0][0], cols[0][1], cols[1][0], cols[1][1]);
        a00 = smlad(wa1, x1, smlad(wa0, x0, a00));
        a10 = smlad(wb1, x1, smlad(wb0, x0, a10));
        a01 = smlad(wa1, z1, smlad(wa0, z0, a01));
        a11 = smlad(wb1, z1, smlad(wb0, z0, a11));
        j = 4;
    }
    if j < k4 {
        let cp = cols[0][j / 2..].as_ptr();
        // SAFETY: the loop reads rows[j..k4] and rows[kb + j..kb + k4] (asserted in bounds),
        // and words j/2..k4/2 of both columns: column 1 follows column 0 at +2048 bytes
        // (`[Column; 2]`, MAX_K = 1024 entries of 2 bytes), and the end pointer is one past
        // word k4/2 - 1 of column 0; (k4 - j) is a multiple of 8, so the loop ends on it. It
        // pushes one word and pops it before returning.
        unsafe {
            asm!(
                "push {{{x}}}",
                "2:",
                step_2x2!("0", "4", "2048", "2052"),
                step_2x2!("8", "12", "2056", "2060"),
                "add {cp}, {cp}, #16",
                "ldr {x}, [sp]",
                "cmp {cp}, {x}",
                "bne 2b",
                "add sp, sp, #4",
                a00 = inout(reg) a00,
                a01 = inout(reg) a01,
                a10 = inout(reg) a10,
                a11 = inout(reg) a11,
                wp = inout(reg) rows.as_ptr().add(j) => _,
                kb = in(reg) kb,
                cp = inout(reg) cp => _,
                x = inout(reg) cols[0].as_ptr().add(k4 / 2) => _,
                wa = out(reg) _,
                wa0 = out(reg) _,
                wb = out(reg) _,
                wb0 = out(reg) _,
            );
        }
    }
    *acc = [a00, a01, a10, a11];
}

/// Most channels × taps of a depthwise convolution this set takes (its weights are regrouped on
/// the stack, 4 channels per word).
pub const MAX_DEPTHWISE: usize = 4096;
/// Most taps (kh·kw) of a depthwise convolution this set takes.
pub const MAX_TAPS: usize = 64;
/// Positions a depthwise convolution accumulates before requantizing them.
const CHUNK: usize = 32;

/// Depthwise convolution (one output channel per input channel): per output position, 4
/// channels at a time over the taps inside the image.
fn depthwise(g: &Geometry, weights: &[u8], out: &Output<'_>, x: &[u8], y: &mut [u8]) {
    let c = g.cin;
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let taps = kh * kw;
    let c4 = c & !3;
    let offset = pair(-g.zx);
    out.check(c);
    assert!(y.len() >= g.positions() * c);
    // Weights regrouped as [channel group][tap][4 channels], one word per group and tap.
    let mut packed = [0u8; MAX_DEPTHWISE];
    for ch in 0..c4 {
        for t in 0..taps {
            packed[(ch / 4 * taps + t) * 4 + ch % 4] = weights[ch * taps + t];
        }
    }
    // Every tap as (offset of its x from the first tap's, offset of its word in a group), for
    // positions whose taps are all inside the image; the last tap's offset is the largest.
    let mut full = [(0usize, 0usize); MAX_TAPS];
    for ky in 0..kh {
        for kx in 0..kw {
            full[ky * kw + kx] = ((ky * g.dilation[0] * g.w + kx * g.dilation[1]) * c, (ky * kw + kx) * 4);
        }
    }
    let span = [(kh - 1) * g.dilation[0], (kw - 1) * g.dilation[1]];
    let mut border = [(0usize, 0usize); MAX_TAPS];
    // Accumulators of a run of positions, requantized a channel at a time (its constants stay in
    // registers); every entry read is written first, so it is cleared once, not per group.
    let mut chunk = [[0i32; 4]; CHUNK];
    for group in 0..c4 / 4 {
        let ch = group * 4;
        let channels = [out.channel(ch), out.channel(ch + 1), out.channel(ch + 2), out.channel(ch + 3)];
        let wg = packed[group * taps * 4..(group + 1) * taps * 4].as_ptr();
        let mut p0 = 0;
        while p0 < g.positions() {
            let run = CHUNK.min(g.positions() - p0);
            for (j, accs) in chunk[..run].iter_mut().enumerate() {
                let p = p0 + j;
                let (b, oy, ox) = (p / (g.oh * g.ow), p / g.ow % g.oh, p % g.ow);
                let iy0 = (oy * g.stride[0]) as isize - g.pad[0] as isize;
                let ix0 = (ox * g.stride[1]) as isize - g.pad[1] as isize;
                let interior = iy0 >= 0 && ix0 >= 0 && iy0 as usize + span[0] < g.h && ix0 as usize + span[1] < g.w;
                // Taps inside the image and the x offset they are relative to.
                let (list, origin): (&[(usize, usize)], usize) = if interior {
                    let origin = ((b * g.h + iy0 as usize) * g.w + ix0 as usize) * c + ch;
                    assert!(origin + full[taps - 1].0 + 4 <= x.len());
                    (&full[..taps], origin)
                } else {
                    let mut n = 0;
                    for ky in 0..kh {
                        let iy = iy0 + (ky * g.dilation[0]) as isize;
                        for kx in 0..kw {
                            let ix = ix0 + (kx * g.dilation[1]) as isize;
                            if iy >= 0 && (iy as usize) < g.h && ix >= 0 && (ix as usize) < g.w {
                                let at = ((b * g.h + iy as usize) * g.w + ix as usize) * c + ch;
                                assert!(at + 4 <= x.len());
                                border[n] = (at, (ky * kw + kx) * 4);
                                n += 1;
                            }
                        }
                    }
                    (&border[..n], 0)
                };
                let [mut a0, mut a1, mut a2, mut a3] = channels.map(|r| r.bias);
                let xp = x.as_ptr();
                for &(xo, wo) in list {
                    // SAFETY: origin + xo + 4 <= x.len() (asserted above for every tap of the list)
                    // and wo + 4 <= taps·4, the group's length.
                    let (v, w) = unsafe { (load(xp.add(origin + xo)), load(wg.add(wo))) };
                    let (x02, x13) = (sxtab16(offset, v), sxtab16_ror8(offset, v));
                    let (w02, w13) = (sxtb16(w), sxtb16_ror8(w));
                    a0 = smlabb(x02, w02, a0);
                    a2 = smlatt(x02, w02, a2);
                    a1 = smlabb(x13, w13, a1);
                    a3 = smlatt(x13, w13, a3);
                }
                *accs = [a0, a1, a2, a3];
            }
            for (i, r) in channels.iter().enumerate() {
                for (j, accs) in chunk[..run].iter().enumerate() {
                    // SAFETY: p0 + j < positions and ch + i < c: within y (asserted above).
                    unsafe { *y.as_mut_ptr().add((p0 + j) * c + ch + i) = out.value(r, accs[i]) };
                }
            }
            p0 += run;
        }
    }
    // The last channels (fewer than 4), one at a time.
    for ch in c4..c {
        let r = out.channel(ch);
        for p in 0..g.positions() {
            let (b, oy, ox) = (p / (g.oh * g.ow), p / g.ow % g.oh, p % g.ow);
            let mut acc = r.bias;
            for ky in 0..kh {
                let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.pad[0] as isize;
                for kx in 0..kw {
                    let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize - g.pad[1] as isize;
                    if iy >= 0 && (iy as usize) < g.h && ix >= 0 && (ix as usize) < g.w {
                        let at = ((b * g.h + iy as usize) * g.w + ix as usize) * c + ch;
                        acc += (x[at] as i8 as i32 - g.zx) * weights[ch * taps + ky * kw + kx] as i8 as i32;
                    }
                }
            }
            y[p * c + ch] = out.value(&r, acc);
        }
    }
}

/// `sxtb16 r, x`: bytes 0 and 2 of `x`, sign-extended to the two halves.
#[inline(always)]
fn sxtb16(x: u32) -> u32 {
    let r;
    // SAFETY: a register-only DSP instruction (armv7e-m), no memory, no flags.
    unsafe {
        asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `sxtb16 r, x, ror #8`: bytes 1 and 3.
#[inline(always)]
fn sxtb16_ror8(x: u32) -> u32 {
    let r;
    // SAFETY: as in `sxtb16`.
    unsafe {
        asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `sxtab16 r, a, x`: bytes 0 and 2 of `x`, sign-extended, added to the halves of `a`.
#[inline(always)]
fn sxtab16(a: u32, x: u32) -> u32 {
    let r;
    // SAFETY: as in `sxtb16`.
    unsafe {
        asm!("sxtab16 {r}, {a}, {x}", r = lateout(reg) r, a = in(reg) a, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `sxtab16 r, a, x, ror #8`: bytes 1 and 3 of `x` added to the halves of `a`.
#[inline(always)]
fn sxtab16_ror8(a: u32, x: u32) -> u32 {
    let r;
    // SAFETY: as in `sxtb16`.
    unsafe {
        asm!("sxtab16 {r}, {a}, {x}, ror #8", r = lateout(reg) r, a = in(reg) a, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `smlad r, a, b, acc`: `acc + a.lo·b.lo + a.hi·b.hi` (16-bit halves). The Q flag it may set
/// is never read: accumulators stay within i32 (checked when the model is loaded).
#[inline(always)]
fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let r;
    // SAFETY: register-only; the Q flag is sticky state nothing here reads.
    unsafe {
        asm!("smlad {r}, {a}, {b}, {acc}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, acc = in(reg) acc, options(pure, nomem, nostack))
    };
    r
}

/// `smlabb r, a, b, acc`: `acc + a.lo·b.lo`.
#[inline(always)]
fn smlabb(a: u32, b: u32, acc: i32) -> i32 {
    let r;
    // SAFETY: as in `smlad`.
    unsafe {
        asm!("smlabb {r}, {a}, {b}, {acc}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, acc = in(reg) acc, options(pure, nomem, nostack))
    };
    r
}

/// `smlatt r, a, b, acc`: `acc + a.hi·b.hi`.
#[inline(always)]
fn smlatt(a: u32, b: u32, acc: i32) -> i32 {
    let r;
    // SAFETY: as in `smlad`.
    unsafe {
        asm!("smlatt {r}, {a}, {b}, {acc}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b, acc = in(reg) acc, options(pure, nomem, nostack))
    };
    r
}
