//! x86-64 AVX-512 VNNI kernels: an int8 GEMM on `vpdpbusd` (u8 activations × s8 weights, 64
//! multiply-accumulates per instruction) and a channel-vectorized depthwise convolution, both
//! ending in the shared fixed-point requantization computed on 64-bit lanes.
#![allow(unsafe_code)]

use super::prepared::{Epilogue, Gemm};
use crate::engine::micro::format::{Conv, TensorDesc};
use core::arch::x86_64::*;

/// Requantizes 16 accumulators of channels `[c, c + 16)` and stores up to `count` bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn store_requantized(acc: __m512i, e: &Epilogue, c: usize, out: *mut u8, count: usize) {
    unsafe {
        let mult_lo = _mm512_loadu_si512(e.mult.as_ptr().add(c) as *const _);
        let mult_hi = _mm512_loadu_si512(e.mult.as_ptr().add(c + 8) as *const _);
        let round_lo = _mm512_loadu_si512(e.round.as_ptr().add(c) as *const _);
        let round_hi = _mm512_loadu_si512(e.round.as_ptr().add(c + 8) as *const _);
        let shift_lo = _mm512_loadu_si512(e.shift.as_ptr().add(c) as *const _);
        let shift_hi = _mm512_loadu_si512(e.shift.as_ptr().add(c + 8) as *const _);
        let lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc));
        let hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(acc));
        let lo = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mullo_epi64(lo, mult_lo), round_lo), shift_lo);
        let hi = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mullo_epi64(hi, mult_hi), round_hi), shift_hi);
        // Values fit i32 after the shift (|acc·m| < 2^62, shift ≥ 1); saturating narrows keep
        // out-of-range values pinned, as the reference's clamp does.
        let lo32 = _mm512_cvtsepi64_epi32(lo);
        let hi32 = _mm512_cvtsepi64_epi32(hi);
        let v = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo32), hi32);
        let v = _mm512_add_epi32(v, _mm512_set1_epi32(e.zero_point));
        let b = _mm512_cvtsepi32_epi8(v);
        let b = _mm_max_epi8(b, _mm_set1_epi8(e.clamp[0]));
        let b = _mm_min_epi8(b, _mm_set1_epi8(e.clamp[1]));
        let mask: __mmask16 = if count >= 16 { 0xffff } else { (1u16 << count) - 1 };
        _mm_mask_storeu_epi8(out as *mut i8, mask, b);
    }
}

/// `out[p][n]` for `rows` rows of `a` (`k4` unsigned bytes each); see [`Gemm`].
pub fn gemm(a: &[u8], rows: usize, g: &Gemm, out: &mut [u8]) {
    assert!(a.len() >= rows * g.k4 && out.len() >= rows * g.n && g.packed.len() >= g.n.div_ceil(16) * g.k4 * 16);
    // SAFETY: the caller selected this kernel after detecting AVX-512 F/BW/DQ/VL and VNNI; the
    // assertion above bounds every access below.
    unsafe { gemm_vnni(a, rows, g, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn gemm_vnni(a: &[u8], rows: usize, g: &Gemm, out: &mut [u8]) {
    const R: usize = 8;
    let k4 = g.k4 / 4;
    unsafe {
        for nb in 0..g.n.div_ceil(16) {
            let c = nb * 16;
            let count = (g.n - c).min(16);
            let w = g.packed.as_ptr().add(nb * k4 * 64);
            let init = _mm512_loadu_si512(g.epilogue.acc_init.as_ptr().add(c) as *const _);
            let mut p = 0;
            while p + R <= rows {
                let mut acc = [init; R];
                let base = a.as_ptr().add(p * g.k4);
                for kk in 0..k4 {
                    let wv = _mm512_loadu_si512(w.add(kk * 64) as *const _);
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = (base.add(r * g.k4 + kk * 4) as *const i32).read_unaligned();
                        *acc = _mm512_dpbusd_epi32(*acc, _mm512_set1_epi32(x), wv);
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    store_requantized(*acc, &g.epilogue, c, out.as_mut_ptr().add((p + r) * g.n + c), count);
                }
                p += R;
            }
            while p < rows {
                let mut acc = init;
                let base = a.as_ptr().add(p * g.k4);
                for kk in 0..k4 {
                    let wv = _mm512_loadu_si512(w.add(kk * 64) as *const _);
                    let x = (base.add(kk * 4) as *const i32).read_unaligned();
                    acc = _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(x), wv);
                }
                store_requantized(acc, &g.epilogue, c, out.as_mut_ptr().add(p * g.n + c), count);
                p += 1;
            }
        }
    }
}

/// Depthwise convolution on NHWC, 16 channels per vector.
#[allow(clippy::too_many_arguments)]
pub fn depthwise(
    c: &Conv<'_>,
    ti: &TensorDesc<'_>,
    to: &TensorDesc<'_>,
    x: &[u8],
    y: &mut [u8],
    weights: &[i32],
    cpad: usize,
    e: &Epilogue,
) {
    let [n, h, w, ch] = ti.shape.map(|d| d as usize);
    let [_, oh, ow, _] = to.shape.map(|d| d as usize);
    assert!(
        x.len() >= n * h * w * ch
            && y.len() >= n * oh * ow * ch
            && weights.len() >= c.kernel[0] as usize * c.kernel[1] as usize * cpad
    );
    // SAFETY: AVX-512 detected by the caller; accesses are bounded by the assertion and the
    // masks (channel tails).
    unsafe { depthwise_avx512(c, [n, h, w, ch], [oh, ow], ti.zero_point, x, y, weights, cpad, e) }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn depthwise_avx512(
    c: &Conv<'_>,
    [n, h, w, ch]: [usize; 4],
    [oh, ow]: [usize; 2],
    zx: i32,
    x: &[u8],
    y: &mut [u8],
    weights: &[i32],
    cpad: usize,
    e: &Epilogue,
) {
    let (kh, kw) = (c.kernel[0] as usize, c.kernel[1] as usize);
    let (sy, sx) = (c.stride[0] as usize, c.stride[1] as usize);
    let (dy, dx) = (c.dilation[0] as usize, c.dilation[1] as usize);
    let (pt, pl) = (c.pad[0] as isize, c.pad[1] as isize);
    let zxv = _mm512_set1_epi32(zx);
    unsafe {
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    let out = y.as_mut_ptr().add(((b * oh + oy) * ow + ox) * ch);
                    for cb in (0..ch).step_by(16) {
                        let count = (ch - cb).min(16);
                        let mask: __mmask16 = if count >= 16 { 0xffff } else { (1u16 << count) - 1 };
                        let mut acc = _mm512_loadu_si512(e.acc_init.as_ptr().add(cb) as *const _);
                        for ky in 0..kh {
                            let iy = (oy * sy + ky * dy) as isize - pt;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * sx + kx * dx) as isize - pl;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let src = x.as_ptr().add(((b * h + iy as usize) * w + ix as usize) * ch + cb);
                                let xv = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, src as *const i8));
                                let wv =
                                    _mm512_loadu_si512(weights.as_ptr().add((ky * kw + kx) * cpad + cb) as *const _);
                                acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(_mm512_sub_epi32(xv, zxv), wv));
                            }
                        }
                        store_requantized(acc, e, cb, out.add(cb), count);
                    }
                }
            }
        }
    }
}
