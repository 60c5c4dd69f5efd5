//! x86-64 AVX-512 VNNI kernels: an int8 GEMM on `vpdpbusd` (u8 activations × s8 weights, 64
//! multiply-accumulates per instruction) and a channel-vectorized depthwise convolution on
//! `vpdpwssd`, both ending in the shared fixed-point requantization computed on 64-bit lanes;
//! tables on VBMI byte permutes (when the CPU has VBMI), adds, multiplies and pooling.
//!
//! Reachable only through [`kernels`], which [`super::Isa::kernels`] calls after detecting the
//! extensions: the functions here are private to the module.
#![allow(unsafe_code)]

use super::prepared::{DepthwisePacked, Epilogue, Gemm, GemmLayout};
use super::{DepthwiseKernel, GemmKernel, Isa, Kernels};
use crate::engine::micro::format::{Binary, Conv, Pool, TensorDesc};
use crate::quant::Requant;
use core::arch::x86_64::*;

const LAYOUT: GemmLayout = GemmLayout { block: 16, group: 4, unsigned: true, wide: false };

/// With VBMI (byte permutes): the table lookup too.
// SAFETY: every function here is an `unsafe fn` of this file meeting its type's contract (its
// own assertions re-check the sizes) on a CPU that has this set's extensions, which
// `Isa::kernels` checks before handing the table out.
const WITH_VBMI: Kernels = unsafe {
    Kernels::new(
        Isa::Avx512Vnni,
        Some(GemmKernel::new(LAYOUT, gemm)),
        Some(DepthwiseKernel::new(64, 32, pack_depthwise, depthwise)),
        Some(lut),
        Some(binary),
        Some(global_average),
        Some(max_pool),
    )
};

/// Without VBMI (Cascade Lake): tables run the reference.
const WITHOUT_VBMI: Kernels = WITH_VBMI.without_lut();

/// The set's table, if this CPU has AVX-512 F/BW/DQ/VL and VNNI (checked here too, so that no
/// caller can get it without).
pub(super) fn kernels() -> Option<&'static Kernels> {
    if !Isa::Avx512Vnni.supported() {
        return None;
    }
    Some(if std::is_x86_feature_detected!("avx512vbmi") { &WITH_VBMI } else { &WITHOUT_VBMI })
}

/// Requantizes 16 accumulators with per-lane constants at `c` in the epilogue arrays: int8 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn requantize(acc: __m512i, e: &Epilogue, c: usize) -> __m128i {
    // SAFETY: `mult`, `round` and `shift` have the epilogue's lanes, and the callers pass a block
    // `c..c + 16` below it (asserted on entry); AVX-512 detected.
    unsafe {
        let load = |v: &[i64], i: usize| _mm512_loadu_si512(v.as_ptr().add(i) as *const _);
        let lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc));
        let hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(acc));
        let lo = _mm512_srav_epi64(
            _mm512_add_epi64(_mm512_mullo_epi64(lo, load(e.mult(), c)), load(e.round(), c)),
            load(e.shift(), c),
        );
        let hi = _mm512_srav_epi64(
            _mm512_add_epi64(_mm512_mullo_epi64(hi, load(e.mult(), c + 8)), load(e.round(), c + 8)),
            load(e.shift(), c + 8),
        );
        narrow(lo, hi, e.zero_point(), e.clamp())
    }
}

/// Two vectors of 8 requantized i64 values → 16 int8 lanes: zero point added, saturated, clamped.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn narrow(lo: __m512i, hi: __m512i, zero_point: i32, clamp: [i8; 2]) -> __m128i {
    // The zero point is added in 64 bits, as the reference adds it, then the saturating narrows
    // pin out-of-range values as the reference's clamp does (adding it after a saturation to
    // 32 bits would wrap values near the ends of the i32 range).
    let zp = _mm512_set1_epi64(zero_point as i64);
    let lo32 = _mm512_cvtsepi64_epi32(_mm512_add_epi64(lo, zp));
    let hi32 = _mm512_cvtsepi64_epi32(_mm512_add_epi64(hi, zp));
    let v = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo32), hi32);
    let b = _mm512_cvtsepi32_epi8(v);
    _mm_min_epi8(_mm_max_epi8(b, _mm_set1_epi8(clamp[0])), _mm_set1_epi8(clamp[1]))
}

/// Requantizes 16 i32 values with one multiplier.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn requantize_uniform(v: __m512i, rq: Requant, zero_point: i32, clamp: [i8; 2]) -> __m128i {
    let (m, r, s) = (
        _mm512_set1_epi64(rq.multiplier as i64),
        _mm512_set1_epi64(1i64 << (rq.shift - 1)),
        _mm512_set1_epi64(rq.shift as i64),
    );
    let lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
    let hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(v));
    let lo = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mullo_epi64(lo, m), r), s);
    let hi = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mullo_epi64(hi, m), r), s);
    // SAFETY: a register-only helper of this file; AVX-512 detected.
    unsafe { narrow(lo, hi, zero_point, clamp) }
}

#[inline]
fn mask16(count: usize) -> __mmask16 {
    if count >= 16 {
        0xffff
    } else {
        (1u16 << count) - 1
    }
}

/// Requantizes 16 accumulators of channels `[c, c + 16)` and stores up to `count` bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn store_requantized(acc: __m512i, e: &Epilogue, c: usize, out: *mut u8, count: usize) {
    // SAFETY: `e` holds lanes `c..c + 16` and `out..out + count` is writable (the callers'
    // assertions); the store is masked to `count` lanes.
    unsafe {
        let b = requantize(acc, e, c);
        _mm_mask_storeu_epi8(out as *mut i8, mask16(count), b);
    }
}

/// `out[p][n]` for `rows` rows of `a` (`kp` unsigned bytes each); see [`Gemm`].
unsafe fn gemm(a: &[u8], rows: usize, g: &Gemm, out: &mut [u8]) {
    assert!(g.layout() == LAYOUT && g.epilogue().acc_init().len() >= g.n().div_ceil(16) * 16);
    assert!(
        a.len() >= rows * g.kp() && out.len() >= rows * g.n() && g.packed().len() >= g.n().div_ceil(16) * g.kp() * 16
    );
    // SAFETY: reachable only through the table `kernels` hands out after detecting AVX-512
    // F/BW/DQ/VL and VNNI; the assertions above bound every access below.
    unsafe { gemm_vnni(a, rows, g, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn gemm_vnni(a: &[u8], rows: usize, g: &Gemm, out: &mut [u8]) {
    const R: usize = 8;
    let k4 = g.kp() / 4;
    // SAFETY: the CPU has AVX-512 F/BW/DQ/VL and VNNI (this file's kernels run only from the table
    // `kernels()` hands out after detection) and the callers in this file keep every pointer and
    // count in bounds.
    unsafe {
        for nb in 0..g.n().div_ceil(16) {
            let c = nb * 16;
            let count = (g.n() - c).min(16);
            let w = g.packed().as_ptr().add(nb * k4 * 64);
            let init = _mm512_loadu_si512(g.epilogue().acc_init().as_ptr().add(c) as *const _);
            let mut p = 0;
            while p + R <= rows {
                let mut acc = [init; R];
                let base = a.as_ptr().add(p * g.kp());
                for kk in 0..k4 {
                    let wv = _mm512_loadu_si512(w.add(kk * 64) as *const _);
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = (base.add(r * g.kp() + kk * 4) as *const i32).read_unaligned();
                        *acc = _mm512_dpbusd_epi32(*acc, _mm512_set1_epi32(x), wv);
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    store_requantized(*acc, g.epilogue(), c, out.as_mut_ptr().add((p + r) * g.n() + c), count);
                }
                p += R;
            }
            while p < rows {
                let mut acc = init;
                let base = a.as_ptr().add(p * g.kp());
                for kk in 0..k4 {
                    let wv = _mm512_loadu_si512(w.add(kk * 64) as *const _);
                    let x = (base.add(kk * 4) as *const i32).read_unaligned();
                    acc = _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(x), wv);
                }
                store_requantized(acc, g.epilogue(), c, out.as_mut_ptr().add(p * g.n() + c), count);
                p += 1;
            }
        }
    }
}

// Depthwise layout ([`DepthwisePacked`]): 32 channels per block, taps in pairs of i16
// interleaved as `unpacklo/hi_epi16` interleave activations, epilogue constants in the same
// permuted channel order (lo: channels 8L..8L+3 of each 128-bit lane L, hi: 8L+4..8L+7), weights
// `[block][pair][lo 32 i16 | hi 32 i16]`.

/// Channel of lane `e` (0..16) of the lo (`hi = false`) or hi accumulator of a 32-channel block.
fn permuted_channel(e: usize, hi: bool) -> usize {
    8 * (e / 4) + e % 4 + if hi { 4 } else { 0 }
}

/// Packs depthwise weights `[c][kh·kw]` (int8) and the natural-order epilogue for [`depthwise`].
fn pack_depthwise(weights: &[u8], taps: usize, channels: usize, base: &Epilogue) -> DepthwisePacked {
    let pairs = taps.div_ceil(2);
    let blocks = channels.div_ceil(32);
    let w = |c: usize, t: usize| if c < channels && t < taps { weights[c * taps + t] as i8 as i16 } else { 0 };
    let mut packed = vec![0i16; blocks * pairs * 64];
    for b in 0..blocks {
        for p in 0..pairs {
            for (half, hi) in [(0, false), (1, true)] {
                for e in 0..16 {
                    let c = b * 32 + permuted_channel(e, hi);
                    let o = ((b * pairs + p) * 2 + half) * 32 + 2 * e;
                    packed[o] = w(c, 2 * p);
                    packed[o + 1] = w(c, 2 * p + 1);
                }
            }
        }
    }
    let n = blocks * 32;
    let mut e = Epilogue::new(n, base.zero_point(), base.clamp());
    for b in 0..blocks {
        for (half, hi) in [(0, false), (1, true)] {
            for lane in 0..16 {
                let c = b * 32 + permuted_channel(lane, hi);
                let i = b * 32 + half * 16 + lane;
                if c < channels {
                    e.copy_lane(i, base, c);
                }
            }
        }
    }
    DepthwisePacked::new(packed, pairs, channels, taps, e)
}

/// Depthwise convolution on NHWC: 32 channels per block, two taps per `vpdpwssd` on inputs
/// centred on the zero point, from the bias (`acc_init`): taps in the padding add nothing,
/// and a pair of them is skipped.
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
    assert!(x.len() >= n * h * w * ch && y.len() >= n * oh * ow * ch);
    assert!(
        p.weights().len() >= ch.div_ceil(32) * p.pairs() * 64
            && p.pairs() * 2 >= c.kernel[0] as usize * c.kernel[1] as usize
            && c.kernel[0] as usize * c.kernel[1] as usize <= 64
            && p.epilogue().acc_init().len() >= ch.div_ceil(32) * 32
    );
    // SAFETY: AVX-512 F/BW/DQ/VL and VNNI detected by the caller; loads and stores are masked to
    // the channel count and bounded by the assertions.
    unsafe { depthwise_vnni(c, [n, h, w, ch], [oh, ow], ti.zero_point, x, y, p) }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
unsafe fn depthwise_vnni(
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
    let zx16 = _mm512_set1_epi16(zx as i16);
    let mut offsets = [usize::MAX; 64];
    let taps_at = super::prepared::Taps::new(c, [n, h, w, ch]);
    // SAFETY: the CPU has AVX-512 F/BW/DQ/VL and VNNI (this file's kernels run only from the table
    // `kernels()` hands out after detection) and the callers in this file keep every pointer and
    // count in bounds.
    unsafe {
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    taps_at.offsets([b, oy, ox], &mut offsets);
                    let out = y.as_mut_ptr().add(((b * oh + oy) * ow + ox) * ch);
                    for (blk, cb) in (0..ch).step_by(32).enumerate() {
                        let count = (ch - cb).min(32);
                        let mask: __mmask32 = if count >= 32 { u32::MAX } else { (1u32 << count) - 1 };
                        let load = |t: usize| {
                            if t >= taps || offsets[t] == usize::MAX {
                                _mm512_setzero_si512()
                            } else {
                                let v = _mm256_maskz_loadu_epi8(mask, x.as_ptr().add(offsets[t] + cb) as *const i8);
                                _mm512_sub_epi16(_mm512_cvtepi8_epi16(v), zx16)
                            }
                        };
                        let e = p.epilogue();
                        // From the bias: taps in the padding add nothing.
                        let start = |lane: usize| _mm512_loadu_si512(e.acc_init().as_ptr().add(lane) as *const _);
                        let mut lo = start(blk * 32);
                        let mut hi = start(blk * 32 + 16);
                        let wb = p.weights().as_ptr().add(blk * p.pairs() * 64);
                        for pair in 0..p.pairs() {
                            let outside = |t: usize| t >= taps || offsets[t] == usize::MAX;
                            if outside(2 * pair) && outside(2 * pair + 1) {
                                continue;
                            }
                            let (xa, xb) = (load(2 * pair), load(2 * pair + 1));
                            let wlo = _mm512_loadu_si512(wb.add(pair * 64) as *const _);
                            let whi = _mm512_loadu_si512(wb.add(pair * 64 + 32) as *const _);
                            lo = _mm512_dpwssd_epi32(lo, _mm512_unpacklo_epi16(xa, xb), wlo);
                            hi = _mm512_dpwssd_epi32(hi, _mm512_unpackhi_epi16(xa, xb), whi);
                        }
                        let blo = requantize(lo, e, blk * 32);
                        let bhi = requantize(hi, e, blk * 32 + 16);
                        let first = _mm_unpacklo_epi32(blo, bhi);
                        let second = _mm_unpackhi_epi32(blo, bhi);
                        let both = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(first), second);
                        _mm256_mask_storeu_epi8(out.add(cb) as *mut i8, mask, both);
                    }
                }
            }
        }
    }
}

/// `y[i] = table[x[i] + 128]`, 64 bytes per step.
unsafe fn lut(table: &[u8], x: &[u8], y: &mut [u8]) {
    assert!(table.len() == 256 && y.len() >= x.len());
    // SAFETY: in the table only when AVX-512 BW and VBMI were detected; masked tail, bounded by
    // the assertion.
    unsafe { lut_vbmi(table, x, y) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn lut_vbmi(table: &[u8], x: &[u8], y: &mut [u8]) {
    // SAFETY: the CPU has AVX-512 F/BW/DQ/VL and VNNI (this file's kernels run only from the table
    // `kernels()` hands out after detection) and the callers in this file keep every pointer and
    // count in bounds.
    unsafe {
        let t = |i: usize| _mm512_loadu_si512(table.as_ptr().add(64 * i) as *const _);
        let (t0, t1, t2, t3) = (t(0), t(1), t(2), t(3));
        let flip = _mm512_set1_epi8(-128);
        let mut i = 0;
        while i < x.len() {
            let count = (x.len() - i).min(64);
            let mask: __mmask64 = if count >= 64 { u64::MAX } else { (1u64 << count) - 1 };
            let idx = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, x.as_ptr().add(i) as *const i8), flip);
            let low = _mm512_permutex2var_epi8(t0, idx, t1);
            let high = _mm512_permutex2var_epi8(t2, idx, t3);
            let r = _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), low, high);
            _mm512_mask_storeu_epi8(y.as_mut_ptr().add(i) as *mut i8, mask, r);
            i += 64;
        }
    }
}

/// Elementwise add or multiply where `b` is either shaped like `a` (`b_stride_c` = channels) or
/// one value per channel broadcast over N, H, W (`per_channel`).
#[allow(clippy::too_many_arguments)]
unsafe fn binary(
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
    assert!(a.len() >= len && y.len() >= len && b.len() >= if per_channel { c } else { len });
    // SAFETY: AVX-512 detected by the caller; accesses masked and bounded by the assertion.
    unsafe { binary_avx512(mul, op, [ta.zero_point, tb.zero_point, to.zero_point], a, b, y, c, len, per_channel) }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn binary_avx512(
    mul: bool,
    op: &Binary,
    [za, zb, zy]: [i32; 3],
    a: &[u8],
    b: &[u8],
    y: &mut [u8],
    c: usize,
    len: usize,
    per_channel: bool,
) {
    let (zav, zbv) = (_mm512_set1_epi32(za), _mm512_set1_epi32(zb));
    let (ma, mb) = (_mm512_set1_epi64(op.ma.multiplier as i64), _mm512_set1_epi64(op.mb.multiplier as i64));
    let (round, shift) = (_mm512_set1_epi64(1i64 << (op.ma.shift - 1)), _mm512_set1_epi64(op.ma.shift as i64));
    // SAFETY: the CPU has AVX-512 F/BW/DQ/VL and VNNI (this file's kernels run only from the table
    // `kernels()` hands out after detection) and the callers in this file keep every pointer and
    // count in bounds.
    unsafe {
        let mut p = 0;
        while p < len {
            // One row of `c` channels at a time, so the broadcast operand lines up.
            let mut cb = 0;
            while cb < c {
                let count = (c - cb).min(16);
                let m = mask16(count);
                let av = _mm512_sub_epi32(
                    _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, a.as_ptr().add(p + cb) as *const i8)),
                    zav,
                );
                let bsrc = if per_channel { cb } else { p + cb };
                let bv = _mm512_sub_epi32(
                    _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, b.as_ptr().add(bsrc) as *const i8)),
                    zbv,
                );
                let r = if mul {
                    requantize_uniform(_mm512_mullo_epi32(av, bv), op.ma, zy, op.clamp)
                } else {
                    let lo = |v: __m512i| _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
                    let hi = |v: __m512i| _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(v));
                    let sum_lo = _mm512_add_epi64(_mm512_mullo_epi64(lo(av), ma), _mm512_mullo_epi64(lo(bv), mb));
                    let sum_hi = _mm512_add_epi64(_mm512_mullo_epi64(hi(av), ma), _mm512_mullo_epi64(hi(bv), mb));
                    narrow(
                        _mm512_srav_epi64(_mm512_add_epi64(sum_lo, round), shift),
                        _mm512_srav_epi64(_mm512_add_epi64(sum_hi, round), shift),
                        zy,
                        op.clamp,
                    )
                };
                _mm_mask_storeu_epi8(y.as_mut_ptr().add(p + cb) as *mut i8, m, r);
                cb += 16;
            }
            p += c;
        }
    }
}

/// Mean over H and W per channel, 16 channels per vector.
unsafe fn global_average(rq: &Requant, ti: &TensorDesc<'_>, x: &[u8], to: &TensorDesc<'_>, y: &mut [u8]) {
    let [n, h, w, c] = ti.shape.map(|d| d as usize);
    assert!(x.len() >= n * h * w * c && y.len() >= n * c);
    // SAFETY: AVX-512 detected by the caller; masked, bounded by the assertion.
    unsafe { gap_avx512(rq, [n, h * w, c], ti.zero_point, x, to.zero_point, y) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn gap_avx512(rq: &Requant, [n, hw, c]: [usize; 3], zx: i32, x: &[u8], zy: i32, y: &mut [u8]) {
    // SAFETY: the CPU has AVX-512 F/BW/DQ/VL and VNNI (this file's kernels run only from the table
    // `kernels()` hands out after detection) and the callers in this file keep every pointer and
    // count in bounds.
    unsafe {
        for b in 0..n {
            for cb in (0..c).step_by(16) {
                let m = mask16(c - cb);
                let mut sum = _mm512_setzero_si512();
                for p in 0..hw {
                    sum = _mm512_add_epi32(
                        sum,
                        _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(
                            m,
                            x.as_ptr().add((b * hw + p) * c + cb) as *const i8,
                        )),
                    );
                }
                let centered = _mm512_sub_epi32(sum, _mm512_set1_epi32(zx * hw as i32));
                let r = requantize_uniform(centered, *rq, zy, [-128, 127]);
                _mm_mask_storeu_epi8(y.as_mut_ptr().add(b * c + cb) as *mut i8, m, r);
            }
        }
    }
}

/// Max pooling, 16 channels per vector; the window max is then requantized like the reference.
unsafe fn max_pool(p: &Pool, ti: &TensorDesc<'_>, x: &[u8], to: &TensorDesc<'_>, y: &mut [u8]) {
    let [n, h, w, c] = ti.shape.map(|d| d as usize);
    let [_, oh, ow, _] = to.shape.map(|d| d as usize);
    assert!(x.len() >= n * h * w * c && y.len() >= n * oh * ow * c);
    // SAFETY: AVX-512 detected by the caller; masked, bounded by the assertion.
    unsafe { max_pool_avx512(p, [n, h, w, c], [oh, ow], ti.zero_point, x, to.zero_point, y) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn max_pool_avx512(
    p: &Pool,
    [n, h, w, c]: [usize; 4],
    [oh, ow]: [usize; 2],
    zx: i32,
    x: &[u8],
    zy: i32,
    y: &mut [u8],
) {
    // SAFETY: the CPU has AVX-512 F/BW/DQ/VL and VNNI (this file's kernels run only from the table
    // `kernels()` hands out after detection) and the callers in this file keep every pointer and
    // count in bounds.
    unsafe {
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for cb in (0..c).step_by(16) {
                        let m = mask16(c - cb);
                        let mut best = _mm_set1_epi8(i8::MIN);
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
                                let v = _mm_maskz_loadu_epi8(
                                    m,
                                    x.as_ptr().add(((b * h + iy as usize) * w + ix as usize) * c + cb) as *const i8,
                                );
                                best = _mm_max_epi8(best, v);
                            }
                        }
                        let centered = _mm512_sub_epi32(_mm512_cvtepi8_epi32(best), _mm512_set1_epi32(zx));
                        let r = requantize_uniform(centered, p.requant, zy, [-128, 127]);
                        _mm_mask_storeu_epi8(y.as_mut_ptr().add(((b * oh + oy) * ow + ox) * c + cb) as *mut i8, m, r);
                    }
                }
            }
        }
    }
}
