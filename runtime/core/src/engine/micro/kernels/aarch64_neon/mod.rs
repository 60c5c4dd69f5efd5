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
use crate::engine::micro::format::{Conv, TensorDesc};
use core::arch::aarch64::*;

mod elementwise;
use elementwise::narrow16;
pub(super) use elementwise::{binary, global_average, lut, max_pool};

const LAYOUT: GemmLayout = GemmLayout { block: 4, group: 16, unsigned: false, wide: false };

/// The set's table.
// SAFETY: every function here is an `unsafe fn` of this file meeting its type's contract (its
// own assertions re-check the sizes) on a CPU that has this set's extensions, which
// `Isa::kernels` checks before handing the table out.
pub(super) static KERNELS: Kernels = unsafe {
    Kernels::new(
        Isa::Neon,
        Some(GemmKernel::new(LAYOUT, gemm)),
        Some(DEPTHWISE),
        Some(lut),
        Some(binary),
        Some(global_average),
        Some(max_pool),
    )
};

/// The depthwise kernel, shared with the dot-product set (no dot product helps it).
// SAFETY: `pack_depthwise` lays out ⌈c/16⌉·pairs·32 weights and ⌈c/16⌉·16 lanes, and `depthwise`
// reads no more (its assertions re-check), on any aarch64 CPU (NEON is part of the base ISA).
pub(super) const DEPTHWISE: DepthwiseKernel = unsafe { DepthwiseKernel::new(64, 16, pack_depthwise, depthwise) };

/// Requantizes four 32-bit accumulators (channels `c..c+4`) to int8 in the low four lanes.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn requantize4(acc: int32x4_t, e: &Epilogue, c: usize) -> int8x8_t {
    // SAFETY: the epilogue's arrays have its lanes and the callers pass a block `c..c + 4` below
    // them (asserted on entry); NEON is part of every aarch64 CPU.
    unsafe {
        let m = vld1q_s32(e.mult32().as_ptr().add(c));
        if e.q31() {
            // Every shift ≥ 32: the doubling high multiply and a rounding shift, in 32 bits.
            let v = vrshlq_s32(vqdmulhq_s32(acc, m), vld1q_s32(e.q31_shift().as_ptr().add(c)));
            let v16 = vqmovn_s32(vaddq_s32(v, vdupq_n_s32(e.zero_point())));
            let v8 = vqmovn_s16(vcombine_s16(v16, v16));
            return vmin_s8(vmax_s8(v8, vdup_n_s8(e.clamp()[0])), vdup_n_s8(e.clamp()[1]));
        }
        let lo = vmull_s32(vget_low_s32(acc), vget_low_s32(m));
        let hi = vmull_high_s32(acc, m);
        let s_lo = vnegq_s64(vld1q_s64(e.shift().as_ptr().add(c)));
        let s_hi = vnegq_s64(vld1q_s64(e.shift().as_ptr().add(c + 2)));
        let zp = vdupq_n_s64(e.zero_point() as i64);
        let lo = vaddq_s64(vrshlq_s64(lo, s_lo), zp);
        let hi = vaddq_s64(vrshlq_s64(hi, s_hi), zp);
        let v32 = vcombine_s32(vqmovn_s64(lo), vqmovn_s64(hi));
        let v16 = vqmovn_s32(v32);
        let v8 = vqmovn_s16(vcombine_s16(v16, v16));
        vmin_s8(vmax_s8(v8, vdup_n_s8(e.clamp()[0])), vdup_n_s8(e.clamp()[1]))
    }
}

/// Requantizes `lanes` (4 or 2) vectors of four accumulators (channels `c..`) to int8, lowest
/// channel first (lanes past `4·lanes` are unspecified).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn requantize16(acc: [int32x4_t; 4], lanes: usize, e: &Epilogue, c: usize) -> int8x16_t {
    // SAFETY: as in `requantize4`, for lanes `c..c + 4·lanes`.
    unsafe {
        if e.q31() {
            let zp = vdupq_n_s32(e.zero_point());
            let r = |q: usize| {
                let m = vld1q_s32(e.mult32().as_ptr().add(c + 4 * q));
                let s = vld1q_s32(e.q31_shift().as_ptr().add(c + 4 * q));
                vaddq_s32(vrshlq_s32(vqdmulhq_s32(acc[q], m), s), zp)
            };
            let v = if lanes == 4 { narrow16([r(0), r(1), r(2), r(3)]) } else { narrow16([r(0), r(1), zp, zp]) };
            return vminq_s8(vmaxq_s8(v, vdupq_n_s8(e.clamp()[0])), vdupq_n_s8(e.clamp()[1]));
        }
        let mut bytes = [0i8; 16];
        for (q, a) in acc.iter().enumerate().take(lanes) {
            let v = requantize4(*a, e, c + 4 * q);
            vst1_lane_s32::<0>(bytes.as_mut_ptr().add(4 * q) as *mut i32, vreinterpret_s32_s8(v));
        }
        vld1q_s8(bytes.as_ptr())
    }
}

/// Stores the low `count` (≤ 4) bytes of `v` at `out`.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn store4(out: *mut u8, v: int8x8_t, count: usize) {
    // SAFETY: `out..out + count` is writable (the callers' assertions); NEON is part of every aarch64
    // CPU.
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
unsafe fn gemm(a: &[u8], rows: usize, g: &Gemm, out: &mut [u8]) {
    let blocks = g.n().div_ceil(4);
    assert!(g.layout() == LAYOUT && g.kp().is_multiple_of(16) && g.epilogue().acc_init().len() >= blocks * 4);
    assert!(a.len() >= rows * g.kp() && out.len() >= rows * g.n() && g.packed().len() >= blocks * g.kp() * 4);
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
    let groups = g.kp() / 16;
    // SAFETY: `gemm` asserted `a` holds `rows·kp` bytes, `out` `rows·n` and the packed weights and
    // epilogue whole blocks, so rows `p..p + R` and block `b` are in bounds; NEON is part of every
    // aarch64 CPU.
    unsafe {
        let mut acc = [[vdupq_n_s32(0); 4]; R];
        let w = g.packed().as_ptr().add(b * groups * 64) as *const i8;
        let x = a.as_ptr() as *const i8;
        for kk in 0..groups {
            let wv = [
                vld1q_s8(w.add(kk * 64)),
                vld1q_s8(w.add(kk * 64 + 16)),
                vld1q_s8(w.add(kk * 64 + 32)),
                vld1q_s8(w.add(kk * 64 + 48)),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let xv = vld1q_s8(x.add((p + r) * g.kp() + kk * 16));
                for (j, acc) in row.iter_mut().enumerate() {
                    let prod = vmull_s8(vget_low_s8(xv), vget_low_s8(wv[j]));
                    let prod = vmlal_high_s8(prod, xv, wv[j]);
                    *acc = vpadalq_s16(*acc, prod);
                }
            }
        }
        let c = b * 4;
        let init = vld1q_s32(g.epilogue().acc_init().as_ptr().add(c));
        for (r, row) in acc.iter().enumerate() {
            let sums = vpaddq_s32(vpaddq_s32(row[0], row[1]), vpaddq_s32(row[2], row[3]));
            let v = requantize4(vaddq_s32(sums, init), g.epilogue(), c);
            store4(out.as_mut_ptr().add((p + r) * g.n() + c), v, g.n() - c);
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
    let mut e = Epilogue::new(blocks * 16, base.zero_point(), base.clamp());
    for c in 0..channels {
        e.copy_lane(c, base, c);
    }
    DepthwisePacked::new(packed, pairs, channels, taps, e)
}

/// Depthwise convolution on NHWC, 16 channels per block (8 for a last block of 8): taps inside
/// the image, widened and centred on the zero point, multiplied into 32-bit accumulators
/// (`smlal`); taps in the padding (whose centred value is 0) are skipped.
unsafe fn depthwise(
    c: &Conv<'_>,
    ti: &TensorDesc<'_>,
    to: &TensorDesc<'_>,
    x: &[u8],
    y: &mut [u8],
    p: &DepthwisePacked,
) {
    let [n, h, w, ch] = ti.shape.map(|d| d as usize);
    let [_, oh, ow, _] = to.shape.map(|d| d as usize);
    let taps = c.kernel[0] as usize * c.kernel[1] as usize;
    assert!(x.len() >= n * h * w * ch && y.len() >= n * oh * ow * ch && taps <= 64);
    assert!(
        p.weights().len() >= ch.div_ceil(16) * 2 * p.pairs() * 16
            && p.pairs() * 2 >= taps
            && p.epilogue().acc_init().len() >= ch.div_ceil(16) * 16
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
    let stride = 2 * p.pairs() * 16;
    // The taps inside the image at the current output: (tap, input offset).
    let mut inside = [[0usize; 2]; 64];
    let taps_at = super::prepared::Taps::new(c, [n, h, w, ch]);
    let e = p.epilogue();
    // SAFETY: NEON is part of every aarch64 CPU, and the callers in this file keep every pointer and
    // count in bounds (their entry assertions).
    unsafe {
        // Accumulators start at the bias (acc_init): taps in the padding (x = zx) add nothing
        // and are skipped; the others add (x - zx)·w, which fits i16 × i16.
        let start = |lane: usize| vld1q_s32(e.acc_init().as_ptr().add(lane));
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    let count_inside = taps_at.inside([b, oy, ox], &mut inside);
                    let inside = &inside[..count_inside];
                    let out = y.as_mut_ptr().add(((b * oh + oy) * ow + ox) * ch);
                    for (blk, cb) in (0..ch).step_by(16).enumerate() {
                        let count = (ch - cb).min(16);
                        let wb = p.weights().as_ptr().add(blk * stride);
                        let acc = [start(blk * 16), start(blk * 16 + 4), start(blk * 16 + 8), start(blk * 16 + 12)];
                        let (acc, lanes) = match count {
                            16 => (taps16(x.as_ptr().add(cb), wb, inside, zx, acc), 4),
                            8 => (taps8(x.as_ptr().add(cb), wb, inside, zx, acc), 2),
                            _ => {
                                // Other partial blocks through a stack copy of each tap.
                                let mut acc = acc;
                                let mut tmp = [zx as u8; 16];
                                for &[t, off] in inside {
                                    core::ptr::copy_nonoverlapping(x.as_ptr().add(off + cb), tmp.as_mut_ptr(), count);
                                    acc = taps16(tmp.as_ptr(), wb.add(t * 16), &[[0, 0]], zx, acc);
                                }
                                (acc, 4)
                            }
                        };
                        let v = requantize16(acc, lanes, e, blk * 16);
                        match count {
                            16 => vst1q_s8(out.add(cb) as *mut i8, v),
                            8 => vst1_s8(out.add(cb) as *mut i8, vget_low_s8(v)),
                            _ => {
                                let mut bytes = [0i8; 16];
                                vst1q_s8(bytes.as_mut_ptr(), v);
                                core::ptr::copy_nonoverlapping(bytes.as_ptr() as *const u8, out.add(cb), count);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds `Σ (x[off] - zx)·w[t]` over `inside` to 16 channels' accumulators (16 bytes at each
/// `x + off`, 16 i16 weights at each `w + 16·t`).
#[inline(never)]
#[target_feature(enable = "neon")]
unsafe fn taps16(
    x: *const u8,
    w: *const i16,
    inside: &[[usize; 2]],
    zx: i32,
    mut acc: [int32x4_t; 4],
) -> [int32x4_t; 4] {
    // SAFETY: NEON is part of every aarch64 CPU, and the callers in this file keep every pointer and
    // count in bounds (their entry assertions).
    unsafe {
        let zx16 = vdupq_n_s16(zx as i16);
        for &[t, off] in inside {
            let v = vld1q_s8(x.add(off) as *const i8);
            let lo = vsubq_s16(vmovl_s8(vget_low_s8(v)), zx16);
            let hi = vsubq_s16(vmovl_high_s8(v), zx16);
            let wlo = vld1q_s16(w.add(t * 16));
            let whi = vld1q_s16(w.add(t * 16 + 8));
            acc[0] = vmlal_s16(acc[0], vget_low_s16(lo), vget_low_s16(wlo));
            acc[1] = vmlal_high_s16(acc[1], lo, wlo);
            acc[2] = vmlal_s16(acc[2], vget_low_s16(hi), vget_low_s16(whi));
            acc[3] = vmlal_high_s16(acc[3], hi, whi);
        }
        acc
    }
}

/// [`taps16`] for 8 channels (the first two accumulators).
#[inline(never)]
#[target_feature(enable = "neon")]
unsafe fn taps8(
    x: *const u8,
    w: *const i16,
    inside: &[[usize; 2]],
    zx: i32,
    mut acc: [int32x4_t; 4],
) -> [int32x4_t; 4] {
    // SAFETY: NEON is part of every aarch64 CPU, and the callers in this file keep every pointer and
    // count in bounds (their entry assertions).
    unsafe {
        let zx16 = vdupq_n_s16(zx as i16);
        for &[t, off] in inside {
            let lo = vsubq_s16(vmovl_s8(vld1_s8(x.add(off) as *const i8)), zx16);
            let wlo = vld1q_s16(w.add(t * 16));
            acc[0] = vmlal_s16(acc[0], vget_low_s16(lo), vget_low_s16(wlo));
            acc[1] = vmlal_high_s16(acc[1], lo, wlo);
        }
        acc
    }
}
