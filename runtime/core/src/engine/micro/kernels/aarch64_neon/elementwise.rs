//! The NEON sets' elementwise kernels: table lookups (`tbl`/`tbx` over the 256-entry table in
//! registers), adds and multiplies (16 lanes per step, the reference's arithmetic), global-average
//! and max pooling. Shared by the NEON and dot-product sets.
#![allow(unsafe_code)]

use crate::engine::micro::format::{Binary, Pool, TensorDesc};
use crate::quant::Requant;
use core::arch::aarch64::*;

/// `y[i] = table[x[i] + 128]`, 16 bytes per step: the table in 16 registers, one `tbl` over its
/// first 64 entries and three `tbx` over the rest (an index past a 64-entry window leaves the
/// lane as it is).
pub(in crate::engine::micro::kernels) fn lut(table: &[u8], x: &[u8], y: &mut [u8]) {
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

/// Per-op constants of [`binary`]'s vector step.
struct BinaryConsts {
    za: int16x8_t,
    zb: int16x8_t,
    zy: int32x4_t,
    zy64: int64x2_t,
    ma: int32x4_t,
    mb: int32x4_t,
    /// `31 - shift` (the doubling-high-multiply path: a product with shift ≥ 32).
    q31_shift: int32x4_t,
    /// `-shift` (the 64-bit path).
    neg_shift: int64x2_t,
    /// Mul with shift ≥ 32: `sqdmulh` and a rounding shift, exact (see `Epilogue::q31_shift`).
    q31: bool,
    lo: int8x16_t,
    hi: int8x16_t,
}

/// Requantizes 64-bit sums `(lo, hi)` (lanes 0–1, 2–3) by the rounding shift, adds the zero
/// point in 64 bits and narrows with saturation to four i32.
#[inline]
#[target_feature(enable = "neon")]
fn shift64(lo: int64x2_t, hi: int64x2_t, k: &BinaryConsts) -> int32x4_t {
    let lo = vaddq_s64(vrshlq_s64(lo, k.neg_shift), k.zy64);
    let hi = vaddq_s64(vrshlq_s64(hi, k.neg_shift), k.zy64);
    vcombine_s32(vqmovn_s64(lo), vqmovn_s64(hi))
}

/// Four lanes of the result from `va`, `vb` (operands minus their zero points, as i32).
#[inline]
#[target_feature(enable = "neon")]
fn binary4(mul: bool, va: int32x4_t, vb: int32x4_t, k: &BinaryConsts) -> int32x4_t {
    if mul {
        // |va·vb| ≤ 255² fits 32 bits.
        let p = vmulq_s32(va, vb);
        if k.q31 {
            return vaddq_s32(vrshlq_s32(vqdmulhq_s32(p, k.ma), k.q31_shift), k.zy);
        }
        shift64(vmull_s32(vget_low_s32(p), vget_low_s32(k.ma)), vmull_high_s32(p, k.ma), k)
    } else {
        let lo = vmlal_s32(vmull_s32(vget_low_s32(va), vget_low_s32(k.ma)), vget_low_s32(vb), vget_low_s32(k.mb));
        let hi = vmlal_high_s32(vmull_high_s32(va, k.ma), vb, k.mb);
        shift64(lo, hi, k)
    }
}

/// Sixteen results of `a` op `b` (int8 lanes), requantized and clamped.
#[inline]
#[target_feature(enable = "neon")]
fn binary16(mul: bool, a: int8x16_t, b: int8x16_t, k: &BinaryConsts) -> int8x16_t {
    // Operands minus zero points fit i16 ([-255, 255]).
    let a_lo = vsubq_s16(vmovl_s8(vget_low_s8(a)), k.za);
    let a_hi = vsubq_s16(vmovl_high_s8(a), k.za);
    let b_lo = vsubq_s16(vmovl_s8(vget_low_s8(b)), k.zb);
    let b_hi = vsubq_s16(vmovl_high_s8(b), k.zb);
    let r0 = binary4(mul, vmovl_s16(vget_low_s16(a_lo)), vmovl_s16(vget_low_s16(b_lo)), k);
    let r1 = binary4(mul, vmovl_high_s16(a_lo), vmovl_high_s16(b_lo), k);
    let r2 = binary4(mul, vmovl_s16(vget_low_s16(a_hi)), vmovl_s16(vget_low_s16(b_hi)), k);
    let r3 = binary4(mul, vmovl_high_s16(a_hi), vmovl_high_s16(b_hi), k);
    let lo = vqmovn_s32(r0);
    let lo = vqmovn_high_s32(lo, r1);
    let hi = vqmovn_s32(r2);
    let hi = vqmovn_high_s32(hi, r3);
    let v = vqmovn_high_s16(vqmovn_s16(lo), hi);
    vminq_s8(vmaxq_s8(v, k.lo), k.hi)
}

/// Elementwise add or multiply where `b` is shaped like `a` or one value per channel, sixteen
/// values per step; the reference's arithmetic (the sum of an add on 64-bit lanes, a product
/// requantized in 32 bits where its shift is ≥ 32, else on 64-bit lanes).
#[allow(clippy::too_many_arguments)]
pub(in crate::engine::micro::kernels) fn binary(
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
    let len = ta.len();
    // Same shape: one run of `len` values; per channel: runs of `c` values against `b[..c]`.
    let c = if per_channel { ta.shape[3] as usize } else { len };
    assert!(c > 0 && len.is_multiple_of(c));
    assert!(a.len() >= len && y.len() >= len && b.len() >= c);
    let shift = op.ma.shift;
    // SAFETY: NEON is part of every aarch64 CPU; whole 16-byte loads and stores inside the
    // slices, the tails through stack buffers, bounded by the assertions.
    unsafe {
        let k = BinaryConsts {
            za: vdupq_n_s16(ta.zero_point as i16),
            zb: vdupq_n_s16(tb.zero_point as i16),
            zy: vdupq_n_s32(to.zero_point),
            zy64: vdupq_n_s64(to.zero_point as i64),
            ma: vdupq_n_s32(op.ma.multiplier),
            mb: vdupq_n_s32(op.mb.multiplier),
            q31_shift: vdupq_n_s32(31 - shift as i32),
            neg_shift: vdupq_n_s64(-(shift as i64)),
            q31: mul && shift >= 32,
            lo: vdupq_n_s8(op.clamp[0]),
            hi: vdupq_n_s8(op.clamp[1]),
        };
        let (pa, pb, py) = (a.as_ptr() as *const i8, b.as_ptr() as *const i8, y.as_mut_ptr() as *mut i8);
        let mut run = 0;
        while run < len {
            let mut i = 0;
            while i + 16 <= c {
                let v = binary16(
                    mul,
                    vld1q_s8(pa.add(run + i)),
                    vld1q_s8(pb.add(if per_channel { i } else { run + i })),
                    &k,
                );
                vst1q_s8(py.add(run + i), v);
                i += 16;
            }
            if i < c {
                let n = c - i;
                let (mut ta16, mut tb16, mut out) = ([0i8; 16], [0i8; 16], [0i8; 16]);
                core::ptr::copy_nonoverlapping(pa.add(run + i), ta16.as_mut_ptr(), n);
                core::ptr::copy_nonoverlapping(pb.add(if per_channel { i } else { run + i }), tb16.as_mut_ptr(), n);
                vst1q_s8(out.as_mut_ptr(), binary16(mul, vld1q_s8(ta16.as_ptr()), vld1q_s8(tb16.as_ptr()), &k));
                core::ptr::copy_nonoverlapping(out.as_ptr(), py.add(run + i), n);
            }
            run += c;
        }
    }
}

/// Requantizes four i32 values with one step, the zero point added (64-bit lanes unless the
/// shift is ≥ 32, where `sqdmulh` and a rounding shift are exact), to i32 with saturation.
#[inline]
#[target_feature(enable = "neon")]
fn requant_uniform4(v: int32x4_t, rq: Requant, zy: i32) -> int32x4_t {
    let m = vdupq_n_s32(rq.multiplier);
    if rq.shift >= 32 {
        return vaddq_s32(vrshlq_s32(vqdmulhq_s32(v, m), vdupq_n_s32(31 - rq.shift as i32)), vdupq_n_s32(zy));
    }
    let s = vdupq_n_s64(-(rq.shift as i64));
    let z = vdupq_n_s64(zy as i64);
    let lo = vaddq_s64(vrshlq_s64(vmull_s32(vget_low_s32(v), vget_low_s32(m)), s), z);
    let hi = vaddq_s64(vrshlq_s64(vmull_high_s32(v, m), s), z);
    vcombine_s32(vqmovn_s64(lo), vqmovn_s64(hi))
}

/// Sixteen i32 values narrowed to int8 with saturation.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn narrow16(r: [int32x4_t; 4]) -> int8x16_t {
    let lo = vqmovn_high_s32(vqmovn_s32(r[0]), r[1]);
    let hi = vqmovn_high_s32(vqmovn_s32(r[2]), r[3]);
    vqmovn_high_s16(vqmovn_s16(lo), hi)
}

/// Stores the first `count` (≤ 16) lanes of `v` at `out`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn store16(out: *mut u8, v: int8x16_t, count: usize) {
    // SAFETY: `out..out + count` is writable (the callers' assertions); NEON is part of every aarch64
    // CPU.
    unsafe {
        if count == 16 {
            vst1q_s8(out as *mut i8, v);
        } else {
            let mut tmp = [0i8; 16];
            vst1q_s8(tmp.as_mut_ptr(), v);
            core::ptr::copy_nonoverlapping(tmp.as_ptr() as *const u8, out, count);
        }
    }
}

/// Loads `count` (≤ 16) bytes at `src`, the other lanes `fill`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load16(src: *const u8, count: usize, fill: i8) -> int8x16_t {
    // SAFETY: `src..src + count` is readable (the callers' assertions); NEON is part of every aarch64
    // CPU.
    unsafe {
        if count == 16 {
            vld1q_s8(src as *const i8)
        } else {
            let mut tmp = [fill; 16];
            core::ptr::copy_nonoverlapping(src as *const i8, tmp.as_mut_ptr(), count);
            vld1q_s8(tmp.as_ptr())
        }
    }
}

/// Mean over H and W, 16 channels per step: sums widened to 32 bits, then the reference's
/// requantization of `Σ x - zx·H·W`.
pub(in crate::engine::micro::kernels) fn global_average(
    rq: &Requant,
    ti: &TensorDesc<'_>,
    x: &[u8],
    to: &TensorDesc<'_>,
    y: &mut [u8],
) {
    let [n, h, w, c] = ti.shape.map(|d| d as usize);
    let hw = h * w;
    assert!(x.len() >= n * hw * c && y.len() >= n * c);
    let (zx, zy) = (ti.zero_point, to.zero_point);
    // SAFETY: NEON is part of every aarch64 CPU; loads and stores bounded by the assertion
    // (partial blocks through stack buffers). Validation caps H·W at 2^22: the sums fit i32.
    unsafe {
        for b in 0..n {
            for cb in (0..c).step_by(16) {
                let count = (c - cb).min(16);
                let mut sum = [vdupq_n_s32(0); 4];
                for p in 0..hw {
                    let v = load16(x.as_ptr().add((b * hw + p) * c + cb), count, 0);
                    let (lo, hi) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
                    sum[0] = vaddw_s16(sum[0], vget_low_s16(lo));
                    sum[1] = vaddw_high_s16(sum[1], lo);
                    sum[2] = vaddw_s16(sum[2], vget_low_s16(hi));
                    sum[3] = vaddw_high_s16(sum[3], hi);
                }
                let bias = vdupq_n_s32(zx * hw as i32);
                let r = sum.map(|s| requant_uniform4(vsubq_s32(s, bias), *rq, zy));
                store16(y.as_mut_ptr().add(b * c + cb), narrow16(r), count);
            }
        }
    }
}

/// Max pooling, 16 channels per step: the max over the window's valid positions, then the
/// reference's requantization of `max - zx`.
pub(in crate::engine::micro::kernels) fn max_pool(
    p: &Pool,
    ti: &TensorDesc<'_>,
    x: &[u8],
    to: &TensorDesc<'_>,
    y: &mut [u8],
) {
    let [n, h, w, c] = ti.shape.map(|d| d as usize);
    let [_, oh, ow, _] = to.shape.map(|d| d as usize);
    assert!(x.len() >= n * h * w * c && y.len() >= n * oh * ow * c);
    let zy = to.zero_point;
    // SAFETY: NEON is part of every aarch64 CPU; loads and stores bounded by the assertion
    // (partial blocks through stack buffers).
    unsafe {
        let zx = vdupq_n_s32(ti.zero_point);
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for cb in (0..c).step_by(16) {
                        let count = (c - cb).min(16);
                        let mut best = vdupq_n_s8(i8::MIN);
                        for ky in 0..p.kernel[0] as usize {
                            let iy = (oy * p.stride[0] as usize + ky) as isize - p.pad[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..p.kernel[1] as usize {
                                let ix = (ox * p.stride[1] as usize + kx) as isize - p.pad[1] as isize;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let at = ((b * h + iy as usize) * w + ix as usize) * c + cb;
                                best = vmaxq_s8(best, load16(x.as_ptr().add(at), count, i8::MIN));
                            }
                        }
                        let (lo, hi) = (vmovl_s8(vget_low_s8(best)), vmovl_high_s8(best));
                        let wide = [
                            vmovl_s16(vget_low_s16(lo)),
                            vmovl_high_s16(lo),
                            vmovl_s16(vget_low_s16(hi)),
                            vmovl_high_s16(hi),
                        ];
                        let r = wide.map(|v| requant_uniform4(vsubq_s32(v, zx), p.requant, zy));
                        store16(y.as_mut_ptr().add(((b * oh + oy) * ow + ox) * c + cb), narrow16(r), count);
                    }
                }
            }
        }
    }
}
