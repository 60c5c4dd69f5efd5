//! aarch64 NEON kernels for cores without the dot-product extension (Cortex-A53/A72: Raspberry
//! Pi 3, Pi 4, Zero 2 W), with the widening multiply-accumulate pattern ruy and XNNPACK use there:
//! `smull`/`smlal2` multiply 16 int8 pairs into 8 16-bit sums of two products, `sadalp` adds
//! those pairwise into 32-bit accumulators. The 16-bit sum of two products overflows only for
//! −128·−128 + −128·−128, so weights are kept in [−127, 127] (the quantizer writes symmetric
//! weights; `.lpm` validation enforces it).
//!
//! The requantization is the reference's expression: where every shift is ≥ 32 (real models),
//! in 32 bits — `sqdmulh` and a rounding shift by `s - 31` are exact there (see
//! [`Epilogue::q31_shift`]); otherwise on 64-bit lanes: `smull` products and a rounding
//! arithmetic right shift (`srshl` by a negative amount adds `2^(s-1)` first), the zero point
//! added in 64 bits before the saturating narrows.
//!
//! GEMM layout: 4 output channels per block, reduction in groups of 16, weights
//! `[n/4][k/16][4][16]`, activation rows int8. Depthwise: 16 channels per block, weights widened
//! to i16 `[block][tap][16]`. Reachable only through [`KERNELS`] (every aarch64 CPU has NEON).
#![allow(unsafe_code)]

use super::prepared::{DepthwisePacked, Epilogue, Gemm, GemmLayout};
use super::{DepthwiseKernel, GemmKernel, Isa, Kernels};
use crate::engine::micro::format::{Binary, Conv, TensorDesc};
use crate::quant::Requant;
use core::arch::aarch64::*;

const LAYOUT: GemmLayout = GemmLayout { block: 4, group: 16, unsigned: false, wide: false };

/// The set's table.
pub(super) static KERNELS: Kernels = Kernels {
    isa: Isa::Neon,
    gemm: Some(GemmKernel { layout: LAYOUT, run: gemm }),
    depthwise: Some(DEPTHWISE),
    lut: Some(lut),
    binary: Some(binary),
    global_average: None,
    max_pool: None,
};

/// The depthwise kernel, shared with the dot-product set (no dot product helps it).
pub(super) const DEPTHWISE: DepthwiseKernel = DepthwiseKernel { max_taps: 64, pack: pack_depthwise, run: depthwise };

/// Requantizes four 32-bit accumulators (channels `c..c+4`) to int8 in the low four lanes.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn requantize4(acc: int32x4_t, e: &Epilogue, c: usize) -> int8x8_t {
    unsafe {
        let m = vld1q_s32(e.mult32.as_ptr().add(c));
        if e.q31 {
            // Every shift ≥ 32: the doubling high multiply and a rounding shift, in 32 bits.
            let v = vrshlq_s32(vqdmulhq_s32(acc, m), vld1q_s32(e.q31_shift.as_ptr().add(c)));
            let v16 = vqmovn_s32(vaddq_s32(v, vdupq_n_s32(e.zero_point)));
            let v8 = vqmovn_s16(vcombine_s16(v16, v16));
            return vmin_s8(vmax_s8(v8, vdup_n_s8(e.clamp[0])), vdup_n_s8(e.clamp[1]));
        }
        let lo = vmull_s32(vget_low_s32(acc), vget_low_s32(m));
        let hi = vmull_high_s32(acc, m);
        let s_lo = vnegq_s64(vld1q_s64(e.shift.as_ptr().add(c)));
        let s_hi = vnegq_s64(vld1q_s64(e.shift.as_ptr().add(c + 2)));
        let zp = vdupq_n_s64(e.zero_point as i64);
        let lo = vaddq_s64(vrshlq_s64(lo, s_lo), zp);
        let hi = vaddq_s64(vrshlq_s64(hi, s_hi), zp);
        let v32 = vcombine_s32(vqmovn_s64(lo), vqmovn_s64(hi));
        let v16 = vqmovn_s32(v32);
        let v8 = vqmovn_s16(vcombine_s16(v16, v16));
        vmin_s8(vmax_s8(v8, vdup_n_s8(e.clamp[0])), vdup_n_s8(e.clamp[1]))
    }
}

/// Stores the low `count` (≤ 4) bytes of `v` at `out`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn store4(out: *mut u8, v: int8x8_t, count: usize) {
    unsafe {
        if count >= 4 {
            vst1_lane_s32::<0>(out as *mut i32, vreinterpret_s32_s8(v));
        } else {
            let mut tmp = [0i8; 8];
            vst1_s8(tmp.as_mut_ptr(), v);
            for (k, &b) in tmp.iter().enumerate().take(count) {
                *out.add(k) = b as u8;
            }
        }
    }
}

/// `out[p][n]` for `rows` rows of `a` (`kp` int8 each); see [`Gemm`].
fn gemm(a: &[u8], rows: usize, g: &Gemm, out: &mut [u8]) {
    let blocks = g.n.div_ceil(4);
    assert!(g.layout == LAYOUT && g.kp.is_multiple_of(16) && g.epilogue.acc_init.len() >= blocks * 4);
    assert!(a.len() >= rows * g.kp && out.len() >= rows * g.n && g.packed.len() >= blocks * g.kp * 4);
    // SAFETY: NEON is part of every aarch64 CPU; the assertions bound every access of the tiles.
    unsafe {
        for b in 0..blocks {
            let mut p = 0;
            while p + 4 <= rows {
                tile::<4>(a, p, b, g, out);
                p += 4;
            }
            while p < rows {
                tile::<1>(a, p, b, g, out);
                p += 1;
            }
        }
    }
}

/// `R` rows from `p` × the 4 channels of block `b`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile<const R: usize>(a: &[u8], p: usize, b: usize, g: &Gemm, out: &mut [u8]) {
    let groups = g.kp / 16;
    unsafe {
        let mut acc = [[vdupq_n_s32(0); 4]; R];
        let w = g.packed.as_ptr().add(b * groups * 64) as *const i8;
        let x = a.as_ptr() as *const i8;
        for kk in 0..groups {
            let wv = [
                vld1q_s8(w.add(kk * 64)),
                vld1q_s8(w.add(kk * 64 + 16)),
                vld1q_s8(w.add(kk * 64 + 32)),
                vld1q_s8(w.add(kk * 64 + 48)),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let xv = vld1q_s8(x.add((p + r) * g.kp + kk * 16));
                for (j, acc) in row.iter_mut().enumerate() {
                    let prod = vmull_s8(vget_low_s8(xv), vget_low_s8(wv[j]));
                    let prod = vmlal_high_s8(prod, xv, wv[j]);
                    *acc = vpadalq_s16(*acc, prod);
                }
            }
        }
        let c = b * 4;
        let init = vld1q_s32(g.epilogue.acc_init.as_ptr().add(c));
        for (r, row) in acc.iter().enumerate() {
            let sums = vpaddq_s32(vpaddq_s32(row[0], row[1]), vpaddq_s32(row[2], row[3]));
            let v = requantize4(vaddq_s32(sums, init), &g.epilogue, c);
            store4(out.as_mut_ptr().add((p + r) * g.n + c), v, g.n - c);
        }
    }
}

/// Packs depthwise weights `[c][taps]` widened to i16 `[block][tap][16]` (taps padded to even),
/// with the epilogue padded to whole blocks of 16 channels, in natural order.
fn pack_depthwise(weights: &[u8], taps: usize, channels: usize, base: &Epilogue) -> DepthwisePacked {
    let pairs = taps.div_ceil(2);
    let blocks = channels.div_ceil(16);
    let mut packed = vec![0i16; blocks * 2 * pairs * 16];
    for c in 0..channels {
        for t in 0..taps {
            packed[((c / 16) * 2 * pairs + t) * 16 + c % 16] = weights[c * taps + t] as i8 as i16;
        }
    }
    let mut e = Epilogue::new(blocks * 16, base.zero_point, base.clamp);
    for c in 0..channels {
        e.copy_lane(c, base, c);
    }
    DepthwisePacked { weights: packed, pairs, epilogue: e }
}

/// Depthwise convolution on NHWC, 16 channels per block: widened taps multiplied into four
/// 32-bit accumulators (`smlal`); taps outside the image read the zero point.
fn depthwise(c: &Conv<'_>, ti: &TensorDesc<'_>, to: &TensorDesc<'_>, x: &[u8], y: &mut [u8], p: &DepthwisePacked) {
    let [n, h, w, ch] = ti.shape.map(|d| d as usize);
    let [_, oh, ow, _] = to.shape.map(|d| d as usize);
    let taps = c.kernel[0] as usize * c.kernel[1] as usize;
    assert!(x.len() >= n * h * w * ch && y.len() >= n * oh * ow * ch && taps <= 64);
    assert!(
        p.weights.len() >= ch.div_ceil(16) * 2 * p.pairs * 16
            && p.pairs * 2 >= taps
            && p.epilogue.acc_init.len() >= ch.div_ceil(16) * 16
    );
    // SAFETY: NEON is part of every aarch64 CPU; loads and stores are of whole 16-byte blocks
    // inside the tensors or go through stack buffers, bounded by the assertions.
    unsafe { depthwise_neon(c, [n, h, w, ch], [oh, ow], ti.zero_point, x, y, p) }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
unsafe fn depthwise_neon(
    c: &Conv<'_>,
    [n, h, w, ch]: [usize; 4],
    [oh, ow]: [usize; 2],
    zx: i32,
    x: &[u8],
    y: &mut [u8],
    p: &DepthwisePacked,
) {
    let (kh, kw) = (c.kernel[0] as usize, c.kernel[1] as usize);
    let taps = kh * kw;
    let stride = 2 * p.pairs * 16;
    let mut offsets = [usize::MAX; 64];
    let taps_at = super::prepared::Taps::new(c, [n, h, w, ch]);
    unsafe {
        let zxv = vdupq_n_s16(zx as i16);
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    taps_at.offsets([b, oy, ox], &mut offsets);
                    let out = y.as_mut_ptr().add(((b * oh + oy) * ow + ox) * ch);
                    for (blk, cb) in (0..ch).step_by(16).enumerate() {
                        let count = (ch - cb).min(16);
                        let e = &p.epilogue;
                        let init = e.acc_init.as_ptr().add(blk * 16);
                        let mut acc =
                            [vld1q_s32(init), vld1q_s32(init.add(4)), vld1q_s32(init.add(8)), vld1q_s32(init.add(12))];
                        let wb = p.weights.as_ptr().add(blk * stride);
                        for (t, &off) in offsets.iter().enumerate().take(taps) {
                            let (lo, hi) = if off == usize::MAX {
                                (zxv, zxv)
                            } else {
                                let src = x.as_ptr().add(off + cb);
                                let v = if count == 16 {
                                    vld1q_s8(src as *const i8)
                                } else {
                                    let mut tmp = [zx as i8; 16];
                                    core::ptr::copy_nonoverlapping(src as *const i8, tmp.as_mut_ptr(), count);
                                    vld1q_s8(tmp.as_ptr())
                                };
                                (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v))
                            };
                            let wlo = vld1q_s16(wb.add(t * 16));
                            let whi = vld1q_s16(wb.add(t * 16 + 8));
                            acc[0] = vmlal_s16(acc[0], vget_low_s16(lo), vget_low_s16(wlo));
                            acc[1] = vmlal_high_s16(acc[1], lo, wlo);
                            acc[2] = vmlal_s16(acc[2], vget_low_s16(hi), vget_low_s16(whi));
                            acc[3] = vmlal_high_s16(acc[3], hi, whi);
                        }
                        let mut bytes = [0i8; 16];
                        for (q, a) in acc.iter().enumerate() {
                            let v = requantize4(*a, e, blk * 16 + 4 * q);
                            vst1_lane_s32::<0>(bytes.as_mut_ptr().add(4 * q) as *mut i32, vreinterpret_s32_s8(v));
                        }
                        core::ptr::copy_nonoverlapping(bytes.as_ptr() as *const u8, out.add(cb), count);
                    }
                }
            }
        }
    }
}

/// `y[i] = table[x[i] + 128]`, 16 bytes per step: the table in 16 registers, one `tbl` over its
/// first 64 entries and three `tbx` over the rest (an index past a 64-entry window leaves the
/// lane as it is).
pub(super) fn lut(table: &[u8], x: &[u8], y: &mut [u8]) {
    assert!(table.len() == 256 && y.len() >= x.len());
    // SAFETY: NEON is part of every aarch64 CPU; whole 16-byte loads and stores inside the
    // slices, the tail through stack buffers, bounded by the assertion.
    unsafe {
        let t = |i: usize| vld1q_u8_x4(table.as_ptr().add(64 * i));
        let (t0, t1, t2, t3) = (t(0), t(1), t(2), t(3));
        let look = |v: uint8x16_t| {
            let idx = veorq_u8(v, vdupq_n_u8(0x80));
            let r = vqtbl4q_u8(t0, idx);
            let r = vqtbx4q_u8(r, t1, vsubq_u8(idx, vdupq_n_u8(64)));
            let r = vqtbx4q_u8(r, t2, vsubq_u8(idx, vdupq_n_u8(128)));
            vqtbx4q_u8(r, t3, vsubq_u8(idx, vdupq_n_u8(192)))
        };
        let mut i = 0;
        while i + 16 <= x.len() {
            vst1q_u8(y.as_mut_ptr().add(i), look(vld1q_u8(x.as_ptr().add(i))));
            i += 16;
        }
        if i < x.len() {
            let n = x.len() - i;
            let mut tmp = [0u8; 16];
            tmp[..n].copy_from_slice(&x[i..]);
            let mut out = [0u8; 16];
            vst1q_u8(out.as_mut_ptr(), look(vld1q_u8(tmp.as_ptr())));
            y[i..x.len()].copy_from_slice(&out[..n]);
        }
    }
}

/// Requantizes four i64 lanes pairs (already multiplied) by shift `s` (rounding), zero point
/// added in 64 bits, to four int8 in the low lanes, clamped.
#[inline]
#[target_feature(enable = "neon")]
fn shift_narrow4(lo: int64x2_t, hi: int64x2_t, shift: u8, zero_point: i32, clamp: [i8; 2]) -> int8x8_t {
    let s = vdupq_n_s64(-(shift as i64));
    let zp = vdupq_n_s64(zero_point as i64);
    let lo = vaddq_s64(vrshlq_s64(lo, s), zp);
    let hi = vaddq_s64(vrshlq_s64(hi, s), zp);
    let v16 = vqmovn_s32(vcombine_s32(vqmovn_s64(lo), vqmovn_s64(hi)));
    let v8 = vqmovn_s16(vcombine_s16(v16, v16));
    vmin_s8(vmax_s8(v8, vdup_n_s8(clamp[0])), vdup_n_s8(clamp[1]))
}

/// Elementwise add or multiply where `b` is shaped like `a` or one value per channel, four
/// values per step.
#[allow(clippy::too_many_arguments)]
pub(super) fn binary(
    mul: bool,
    op: &Binary,
    ta: &TensorDesc<'_>,
    a: &[u8],
    tb: &TensorDesc<'_>,
    b: &[u8],
    to: &TensorDesc<'_>,
    y: &mut [u8],
    per_channel: bool,
) {
    let c = ta.shape[3] as usize;
    let len = ta.len();
    assert!(c > 0 && len.is_multiple_of(c));
    assert!(a.len() >= len && y.len() >= len && b.len() >= if per_channel { c } else { len });
    let (za, zb, zy) = (ta.zero_point, tb.zero_point, to.zero_point);
    // SAFETY: NEON is part of every aarch64 CPU; four-byte loads and stores through stack
    // buffers, bounded by the assertions.
    unsafe {
        let load4 = |src: &[u8], at: usize, count: usize, zp: i32| {
            let mut tmp = [0i32; 4];
            for (k, t) in tmp.iter_mut().enumerate().take(count) {
                *t = src[at + k] as i8 as i32 - zp;
            }
            vld1q_s32(tmp.as_ptr())
        };
        let (ma, mb) = (vdup_n_s32(op.ma.multiplier), vdup_n_s32(op.mb.multiplier));
        let rq: Requant = op.ma;
        let mut p = 0;
        while p < len {
            let mut cb = 0;
            while cb < c {
                let count = (c - cb).min(4);
                let av = load4(a, p + cb, count, za);
                let bv = load4(b, if per_channel { cb } else { p + cb }, count, zb);
                let (lo, hi) = if mul {
                    let prod = vmulq_s32(av, bv);
                    let m = vdup_n_s32(rq.multiplier);
                    (vmull_s32(vget_low_s32(prod), m), vmull_high_s32(prod, vcombine_s32(m, m)))
                } else {
                    let lo = vmlal_s32(vmull_s32(vget_low_s32(av), ma), vget_low_s32(bv), mb);
                    let hi = vmlal_high_s32(vmull_high_s32(av, vcombine_s32(ma, ma)), bv, vcombine_s32(mb, mb));
                    (lo, hi)
                };
                let v = shift_narrow4(lo, hi, rq.shift, zy, op.clamp);
                let mut out = [0i8; 8];
                vst1_s8(out.as_mut_ptr(), v);
                for k in 0..count {
                    y[p + cb + k] = out[k] as u8;
                }
                cb += 4;
            }
            p += c;
        }
    }
}
