//! x86-64 AVX2 kernels (Haswell and later, every x86-64 laptop and cloud VM of the last decade).
//!
//! Products are exact: activations and weights are widened to 16 bits and multiplied pairwise
//! into 32-bit sums (`vpmaddwd`). (`vpmaddubsw`, twice as wide, saturates its 16-bit pair sums:
//! 255·127 + 255·127 > 32767; it is not used.) The requantization is the reference's expression
//! on 64-bit lanes: `vpmuldq` products, the rounding term, and an arithmetic right shift by a
//! per-channel amount, which AVX2 lacks and which is built from its logical one:
//! `x >> s = ((x ^ 2^63) >>> s) - (2^63 >>> s)`.
//!
//! GEMM layout: 8 output channels per block (one vector of 32-bit accumulators), reduction in
//! pairs, weights `[n/8][k/2][8][2]` i16, activation rows i16. Depthwise: 16 channels per block,
//! two taps per `vpmaddwd`. Reachable only through [`KERNELS`], which [`super::Isa::kernels`]
//! hands out after detecting AVX2.
#![allow(unsafe_code)]

use super::prepared::{DepthwisePacked, Epilogue, Gemm, GemmLayout};
use super::{DepthwiseKernel, GemmKernel, Isa, Kernels};
use crate::engine::micro::format::{Binary, Conv, Pool, TensorDesc};
use crate::quant::Requant;
use core::arch::x86_64::*;

const LAYOUT: GemmLayout = GemmLayout { block: 8, group: 2, unsigned: false, wide: true };

/// The set's table.
// SAFETY: every function here is an `unsafe fn` of this file meeting its type's contract (its
// own assertions re-check the sizes) on a CPU that has this set's extensions, which
// `Isa::kernels` checks before handing the table out.
pub(super) static KERNELS: Kernels = unsafe {
    Kernels::new(
        Isa::Avx2,
        Some(GemmKernel::new(LAYOUT, gemm)),
        Some(DepthwiseKernel::new(64, 16, pack_depthwise, depthwise)),
        Some(lut),
        Some(binary),
        Some(global_average),
        Some(max_pool),
    )
};

/// `(x + round) >> shift` (arithmetic) on four i64 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn round_shift(x: __m256i, round: __m256i, shift: __m256i) -> __m256i {
    let sign = _mm256_set1_epi64x(i64::MIN);
    let x = _mm256_add_epi64(x, round);
    _mm256_sub_epi64(_mm256_srlv_epi64(_mm256_xor_si256(x, sign), shift), _mm256_srlv_epi64(sign, shift))
}

/// Four i64 lanes clamped to ±1024: past it every int8 result saturates alike (|zero point| ≤
/// 128), and the low 32 bits then hold the value.
#[inline]
#[target_feature(enable = "avx2")]
fn clamp_small(v: __m256i) -> __m256i {
    let (hi, lo) = (_mm256_set1_epi64x(1024), _mm256_set1_epi64x(-1024));
    let v = _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
    _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v))
}

/// Two vectors of four i64 (channels 0..4 and 4..8) → eight i32, clamped small.
#[inline]
#[target_feature(enable = "avx2")]
fn join(lo: __m256i, hi: __m256i) -> __m256i {
    let idx = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    let a = _mm256_permutevar8x32_epi32(clamp_small(lo), idx);
    let b = _mm256_permutevar8x32_epi32(clamp_small(hi), idx);
    _mm256_blend_epi32::<0b1111_0000>(a, b)
}

/// Eight i32 (already requantized) → eight int8 in the low half: zero point added, saturated,
/// clamped.
#[inline]
#[target_feature(enable = "avx2")]
fn narrow(v: __m256i, zero_point: i32, clamp: [i8; 2]) -> __m128i {
    let v = _mm256_add_epi32(v, _mm256_set1_epi32(zero_point));
    let w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let b = _mm_packs_epi16(w, w);
    _mm_min_epi8(_mm_max_epi8(b, _mm_set1_epi8(clamp[0])), _mm_set1_epi8(clamp[1]))
}

/// Requantizes eight accumulators with the per-channel constants at `c`: eight int8.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn requantize(acc: __m256i, e: &Epilogue, c: usize) -> __m128i {
    if e.narrow() {
        // Every result fits 32 bits: products on even and odd lanes in place, no 64-bit clamps.
        // SAFETY: `mult32` and `shift_m1` have the epilogue's lanes, and the GEMM and depthwise kernels
        // call this only for a block `c..c + 8` below it (asserted on entry).
        let (m, s) = unsafe {
            (
                _mm256_loadu_si256(e.mult32().as_ptr().add(c) as *const __m256i),
                _mm256_loadu_si256(e.shift_m1().as_ptr().add(c) as *const __m256i),
            )
        };
        let low = _mm256_set1_epi64x(0xffff_ffff);
        let even = shift_half(_mm256_mul_epi32(acc, m), _mm256_and_si256(s, low));
        let odd = shift_half(
            _mm256_mul_epi32(_mm256_srli_epi64::<32>(acc), _mm256_srli_epi64::<32>(m)),
            _mm256_srli_epi64::<32>(s),
        );
        let v = _mm256_blend_epi32::<0b1010_1010>(even, _mm256_slli_epi64::<32>(odd));
        return narrow_fits(v, e.zero_point(), e.clamp());
    }
    // SAFETY: as above: `mult`, `round`, `bias` and `shift` hold lanes `c..c + 8`.
    let load = |v: &[i64], i: usize| unsafe { _mm256_loadu_si256(v.as_ptr().add(i) as *const __m256i) };
    let lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(acc));
    let hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256::<1>(acc));
    let (plo, phi) = (_mm256_mul_epi32(lo, load(e.mult(), c)), _mm256_mul_epi32(hi, load(e.mult(), c + 4)));
    let (mut rlo, mut rhi) = (load(e.round(), c), load(e.round(), c + 4));
    if e.tflite() {
        // TFLite's rounding: 2^30 more away from zero (`Requant::apply_tflite`).
        rlo = _mm256_add_epi64(rlo, away_from_zero(load(e.bias(), c), plo));
        rhi = _mm256_add_epi64(rhi, away_from_zero(load(e.bias(), c + 4), phi));
    }
    let lo = round_shift(plo, rlo, load(e.shift(), c));
    let hi = round_shift(phi, rhi, load(e.shift(), c + 4));
    narrow(join(lo, hi), e.zero_point(), e.clamp())
}

/// `bias` where `p ≥ 0`, `-bias` where `p < 0`, on four i64 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn away_from_zero(bias: __m256i, p: __m256i) -> __m256i {
    let negative = _mm256_cmpgt_epi64(_mm256_setzero_si256(), p);
    _mm256_sub_epi64(_mm256_xor_si256(bias, negative), negative)
}

/// `(x + 2^(s-1)) >> s` on four i64 lanes given `s - 1`, computed as `((x >> (s-1)) + 1) >> 1`;
/// the low 32 bits of each lane hold the result when it fits 32 bits.
#[inline]
#[target_feature(enable = "avx2")]
fn shift_half(x: __m256i, s_minus_1: __m256i) -> __m256i {
    let sign = _mm256_set1_epi64x(i64::MIN);
    let t =
        _mm256_sub_epi64(_mm256_srlv_epi64(_mm256_xor_si256(x, sign), s_minus_1), _mm256_srlv_epi64(sign, s_minus_1));
    _mm256_srli_epi64::<1>(_mm256_add_epi64(t, _mm256_set1_epi64x(1)))
}

/// Eight i32 results (fitting 32 bits) → eight int8: saturated to 16 bits, zero point added with
/// 16-bit saturation (which keeps every out-of-range value out of int8's range), then to int8
/// and clamped; the same as the reference's `clamp(v + zero point)`.
#[inline]
#[target_feature(enable = "avx2")]
fn narrow_fits(v: __m256i, zero_point: i32, clamp: [i8; 2]) -> __m128i {
    let w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let w = _mm_adds_epi16(w, _mm_set1_epi16(zero_point as i16));
    let b = _mm_packs_epi16(w, w);
    _mm_min_epi8(_mm_max_epi8(b, _mm_set1_epi8(clamp[0])), _mm_set1_epi8(clamp[1]))
}

/// Requantizes eight i32 values with one multiplier: eight int8.
#[inline]
#[target_feature(enable = "avx2")]
fn requantize_uniform(v: __m256i, rq: Requant, zero_point: i32, clamp: [i8; 2]) -> __m128i {
    let (m, r, s) = (
        _mm256_set1_epi64x(rq.multiplier as i64),
        _mm256_set1_epi64x(1i64 << (rq.shift - 1)),
        _mm256_set1_epi64x(rq.shift as i64),
    );
    let lo = round_shift(_mm256_mul_epi32(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)), m), r, s);
    let hi = round_shift(_mm256_mul_epi32(_mm256_cvtepi32_epi64(_mm256_extracti128_si256::<1>(v)), m), r, s);
    narrow(join(lo, hi), zero_point, clamp)
}

/// Stores the low `count` (≤ 8) bytes of `v` at `out`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store8(out: *mut u8, v: __m128i, count: usize) {
    // SAFETY: `out..out + count` is writable (the callers' assertions); the 8-byte store is taken
    // only when `count >= 8`, else a stack copy.
    unsafe {
        if count >= 8 {
            _mm_storel_epi64(out as *mut __m128i, v);
        } else {
            let mut tmp = [0u8; 16];
            _mm_storeu_si128(tmp.as_mut_ptr() as *mut __m128i, v);
            core::ptr::copy_nonoverlapping(tmp.as_ptr(), out, count);
        }
    }
}

/// Loads `count` (≤ 8) int8 values at `src` as eight i32 (the missing ones `fill`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load8(src: *const u8, count: usize, fill: u8) -> __m256i {
    // SAFETY: `src..src + count` is readable (the callers' assertions); the 8-byte load is taken only
    // when `count >= 8`, else a stack copy.
    unsafe {
        let v = if count >= 8 {
            _mm_loadl_epi64(src as *const __m128i)
        } else {
            let mut tmp = [fill; 16];
            core::ptr::copy_nonoverlapping(src, tmp.as_mut_ptr(), count);
            _mm_loadu_si128(tmp.as_ptr() as *const __m128i)
        };
        _mm256_cvtepi8_epi32(v)
    }
}

/// `out[p][n]` for `rows` rows of `a` (`kp` i16 each); see [`Gemm`].
unsafe fn gemm(a: &[u8], rows: usize, g: &Gemm, out: &mut [u8]) {
    let blocks = g.n().div_ceil(8);
    assert!(g.layout() == LAYOUT && g.kp().is_multiple_of(2) && g.epilogue().acc_init().len() >= blocks * 8);
    assert!(a.len() >= rows * g.kp() * 2 && out.len() >= rows * g.n() && g.packed().len() >= blocks * g.kp() * 16);
    // SAFETY: reachable only through `KERNELS`, handed out after AVX2 was detected; the
    // assertions bound every access of the tiles.
    unsafe {
        let mut b = 0;
        while b < blocks {
            let two = b + 1 < blocks;
            let mut p = 0;
            while p + 6 <= rows {
                if two {
                    tile::<6, 2>(a, p, b, g, out);
                } else {
                    tile::<6, 1>(a, p, b, g, out);
                }
                p += 6;
            }
            while p < rows {
                if two {
                    tile::<1, 2>(a, p, b, g, out);
                } else {
                    tile::<1, 1>(a, p, b, g, out);
                }
                p += 1;
            }
            b += if two { 2 } else { 1 };
        }
    }
}

/// `R` rows from `p` × `B` blocks of 8 channels from block `b`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tile<const R: usize, const B: usize>(a: &[u8], p: usize, b: usize, g: &Gemm, out: &mut [u8]) {
    let pairs = g.kp() / 2;
    // SAFETY: `gemm` asserted `a` holds `rows·kp` i16, `out` `rows·n` bytes and the packed weights
    // and epilogue whole blocks, so rows `p..p + R` and blocks `b..b + B` are in bounds; AVX2
    // detected.
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); B]; R];
        for (j, init) in acc[0].iter_mut().enumerate() {
            *init = _mm256_loadu_si256(g.epilogue().acc_init().as_ptr().add((b + j) * 8) as *const __m256i);
        }
        for r in 1..R {
            acc[r] = acc[0];
        }
        let w = g.packed().as_ptr() as *const i16;
        let x = a.as_ptr() as *const i16;
        for kk in 0..pairs {
            let mut wv = [_mm256_setzero_si256(); B];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_si256(w.add(((b + j) * pairs + kk) * 16) as *const __m256i);
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let xv = _mm256_set1_epi32((x.add((p + r) * g.kp() + 2 * kk) as *const i32).read_unaligned());
                for (j, acc) in row.iter_mut().enumerate() {
                    *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(xv, wv[j]));
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (j, acc) in row.iter().enumerate() {
                let c = (b + j) * 8;
                let v = requantize(*acc, g.epilogue(), c);
                store8(out.as_mut_ptr().add((p + r) * g.n() + c), v, (g.n() - c).min(8));
            }
        }
    }
}

/// Channel of lane `e` (0..8) of the lo (`hi = false`) or hi accumulator of a 16-channel block:
/// `unpacklo/hi_epi16` interleave within 128-bit lanes.
fn permuted_channel(e: usize, hi: bool) -> usize {
    8 * (e / 4) + e % 4 + if hi { 4 } else { 0 }
}

/// Packs depthwise weights `[c][taps]` and the natural-order epilogue for [`depthwise`]:
/// `[block][pair][lo 16 i16 | hi 16 i16]`, constants `[block][lo 8 | hi 8]`.
fn pack_depthwise(weights: &[u8], taps: usize, channels: usize, base: &Epilogue) -> DepthwisePacked {
    let pairs = taps.div_ceil(2);
    let blocks = channels.div_ceil(16);
    let w = |c: usize, t: usize| if c < channels && t < taps { weights[c * taps + t] as i8 as i16 } else { 0 };
    let mut packed = vec![0i16; blocks * pairs * 32];
    let n = blocks * 16;
    let mut e = Epilogue::new(n, base.zero_point(), base.clamp());
    for b in 0..blocks {
        for (half, hi) in [(0, false), (1, true)] {
            for lane in 0..8 {
                let c = b * 16 + permuted_channel(lane, hi);
                for p in 0..pairs {
                    let o = ((b * pairs + p) * 2 + half) * 16 + 2 * lane;
                    packed[o] = w(c, 2 * p);
                    packed[o + 1] = w(c, 2 * p + 1);
                }
                let i = b * 16 + half * 8 + lane;
                if c < channels {
                    e.copy_lane(i, base, c);
                }
            }
        }
    }
    DepthwisePacked::new(packed, pairs, channels, taps, e)
}

/// Depthwise convolution on NHWC, 16 channels per block, two taps per `vpmaddwd` on inputs
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
    let taps = c.kernel[0] as usize * c.kernel[1] as usize;
    assert!(x.len() >= n * h * w * ch && y.len() >= n * oh * ow * ch && taps <= 64);
    assert!(
        p.weights().len() >= ch.div_ceil(16) * p.pairs() * 32
            && p.pairs() * 2 >= taps
            && p.epilogue().acc_init().len() >= ch.div_ceil(16) * 16
    );
    // SAFETY: reachable only through `KERNELS` (AVX2 detected); loads and stores are of whole
    // 16-byte blocks inside the tensors or go through stack buffers, bounded by the assertions.
    unsafe { depthwise_avx2(c, [n, h, w, ch], [oh, ow], ti.zero_point, x, y, p) }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
unsafe fn depthwise_avx2(
    c: &Conv<'_>,
    [n, h, w, ch]: [usize; 4],
    [oh, ow]: [usize; 2],
    zx: i32,
    x: &[u8],
    y: &mut [u8],
    p: &DepthwisePacked,
) {
    let taps = c.kernel[0] as usize * c.kernel[1] as usize;
    let zx16 = _mm256_set1_epi16(zx as i16);
    // Reads of a tap in the padding: the zero point, which centres to 0.
    let zrow = [zx as i8 as u8; 32];
    let mut offsets = [usize::MAX; 64];
    // The tap pairs with a tap inside the image at the current output: (pair, input offset of
    // each tap or usize::MAX).
    let mut pairs = [(0usize, 0usize, 0usize); 32];
    let taps_at = super::prepared::Taps::new(c, [n, h, w, ch]);
    let e = p.epilogue();
    // SAFETY: the CPU has AVX2 (this file's kernels run only from the table `Isa::kernels` hands out
    // after detection) and the callers in this file keep every pointer and count in bounds.
    unsafe {
        // From the bias: taps in the padding add nothing.
        let start = |lane: usize| _mm256_loadu_si256(e.acc_init().as_ptr().add(lane) as *const __m256i);
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    taps_at.offsets([b, oy, ox], &mut offsets);
                    let mut count_pairs = 0;
                    for pair in 0..p.pairs() {
                        let tap = |t: usize| if t < taps { offsets[t] } else { usize::MAX };
                        let (a, b) = (tap(2 * pair), tap(2 * pair + 1));
                        if a != usize::MAX || b != usize::MAX {
                            pairs[count_pairs] = (pair, a, b);
                            count_pairs += 1;
                        }
                    }
                    let pairs = &pairs[..count_pairs];
                    let out = y.as_mut_ptr().add(((b * oh + oy) * ow + ox) * ch);
                    for (blk, cb) in (0..ch).step_by(16).enumerate() {
                        let count = (ch - cb).min(16);
                        let wb = p.weights().as_ptr().add(blk * p.pairs() * 32);
                        let acc = (start(blk * 16), start(blk * 16 + 8));
                        let (lo, hi) = match count {
                            16 => pairs16::<false>(x.as_ptr().add(cb), zrow.as_ptr(), wb, pairs, zx16, acc),
                            8 => pairs16::<true>(x.as_ptr().add(cb), zrow.as_ptr(), wb, pairs, zx16, acc),
                            _ => {
                                // Other partial blocks through a stack copy of each pair.
                                let mut acc = acc;
                                for &(pair, a, b) in pairs {
                                    let mut tmp = zrow;
                                    for (at, off) in [(0, a), (16, b)] {
                                        if off != usize::MAX {
                                            core::ptr::copy_nonoverlapping(
                                                x.as_ptr().add(off + cb),
                                                tmp.as_mut_ptr().add(at),
                                                count,
                                            );
                                        }
                                    }
                                    acc =
                                        pairs16::<false>(tmp.as_ptr(), zrow.as_ptr(), wb, &[(pair, 0, 16)], zx16, acc);
                                }
                                acc
                            }
                        };
                        let blo = requantize(lo, e, blk * 16);
                        let bhi = requantize(hi, e, blk * 16 + 8);
                        // lo holds channels 0-3, 8-11; hi 4-7, 12-15: interleave the 4-byte groups.
                        let v = _mm_unpacklo_epi32(blo, bhi);
                        if count == 16 {
                            _mm_storeu_si128(out.add(cb) as *mut __m128i, v);
                        } else if count == 8 {
                            _mm_storel_epi64(out.add(cb) as *mut __m128i, v);
                        } else {
                            let mut tmp = [0u8; 16];
                            _mm_storeu_si128(tmp.as_mut_ptr() as *mut __m128i, v);
                            core::ptr::copy_nonoverlapping(tmp.as_ptr(), out.add(cb), count);
                        }
                    }
                }
            }
        }
    }
}

/// Adds the tap pairs' `(x - zx)·w` to a 16-channel block's accumulators (lo, hi; see
/// [`pack_depthwise`]): each pair's taps read 16 bytes (8 when `HALF`) at `x + offset`, or at
/// `zrow` for a tap in the padding.
#[inline(never)]
#[target_feature(enable = "avx2")]
unsafe fn pairs16<const HALF: bool>(
    x: *const u8,
    zrow: *const u8,
    w: *const i16,
    pairs: &[(usize, usize, usize)],
    zx16: __m256i,
    (mut lo, mut hi): (__m256i, __m256i),
) -> (__m256i, __m256i) {
    // SAFETY: `depthwise_avx2` passes offsets of taps inside the image (or `zrow`, 32 bytes), each
    // read 16 (or 8) bytes within the input's channels, and weight pairs below `pairs`; AVX2
    // detected.
    unsafe {
        let load = |off: usize| {
            let src = if off == usize::MAX { zrow } else { x.add(off) } as *const __m128i;
            let v = if HALF { _mm_loadl_epi64(src) } else { _mm_loadu_si128(src) };
            _mm256_sub_epi16(_mm256_cvtepi8_epi16(v), zx16)
        };
        for &(pair, a, b) in pairs {
            let (xa, xb) = (load(a), load(b));
            let wlo = _mm256_loadu_si256(w.add(pair * 32) as *const __m256i);
            let whi = _mm256_loadu_si256(w.add(pair * 32 + 16) as *const __m256i);
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb), wlo));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb), whi));
        }
        (lo, hi)
    }
}

/// `y[i] = table[x[i] + 128]`, 8 bytes per gather.
unsafe fn lut(table: &[u8], x: &[u8], y: &mut [u8]) {
    assert!(table.len() == 256 && y.len() >= x.len());
    // The gather reads four bytes at each index: the table with three bytes of slack.
    let mut padded = [0u8; 260];
    padded[..256].copy_from_slice(table);
    // SAFETY: reachable only through `KERNELS` (AVX2 detected); indices are 0..=255 into the
    // 260-byte copy, loads and stores of whole 8-byte groups inside the slices, the tail through
    // a stack buffer, bounded by the assertion.
    unsafe { lut_avx2(&padded, x, y) }
}

#[target_feature(enable = "avx2")]
unsafe fn lut_avx2(table: &[u8; 260], x: &[u8], y: &mut [u8]) {
    // SAFETY: the CPU has AVX2 (this file's kernels run only from the table `Isa::kernels` hands out
    // after detection) and the callers in this file keep every pointer and count in bounds.
    unsafe {
        let look = |v: __m128i| {
            // x + 128 as unsigned: flip the sign bit, then zero-extend to 32-bit indices.
            let idx = _mm256_cvtepu8_epi32(_mm_xor_si128(v, _mm_set1_epi8(-128)));
            let g = _mm256_i32gather_epi32::<1>(table.as_ptr() as *const i32, idx);
            let g = _mm256_and_si256(g, _mm256_set1_epi32(0xff));
            let w = _mm_packus_epi32(_mm256_castsi256_si128(g), _mm256_extracti128_si256::<1>(g));
            _mm_packus_epi16(w, w)
        };
        let mut i = 0;
        while i + 8 <= x.len() {
            let v = look(_mm_loadl_epi64(x.as_ptr().add(i) as *const __m128i));
            _mm_storel_epi64(y.as_mut_ptr().add(i) as *mut __m128i, v);
            i += 8;
        }
        if i < x.len() {
            let n = x.len() - i;
            let mut tmp = [0u8; 16];
            tmp[..n].copy_from_slice(&x[i..]);
            let mut out = [0u8; 16];
            _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, look(_mm_loadu_si128(tmp.as_ptr() as *const __m128i)));
            y[i..x.len()].copy_from_slice(&out[..n]);
        }
    }
}

/// Elementwise add or multiply where `b` is shaped like `a` or one value per channel.
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
    assert!(c > 0 && len.is_multiple_of(c));
    assert!(a.len() >= len && y.len() >= len && b.len() >= if per_channel { c } else { len });
    // SAFETY: reachable only through `KERNELS` (AVX2 detected); loads and stores of 8 bytes or
    // fewer through stack buffers, bounded by the assertions.
    unsafe { binary_avx2(mul, op, [ta.zero_point, tb.zero_point, to.zero_point], a, b, y, c, len, per_channel) }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
unsafe fn binary_avx2(
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
    let (zav, zbv) = (_mm256_set1_epi32(za), _mm256_set1_epi32(zb));
    let (ma, mb) = (_mm256_set1_epi64x(op.ma.multiplier as i64), _mm256_set1_epi64x(op.mb.multiplier as i64));
    let (round, shift) = (_mm256_set1_epi64x(1i64 << (op.ma.shift - 1)), _mm256_set1_epi64x(op.ma.shift as i64));
    // SAFETY: the CPU has AVX2 (this file's kernels run only from the table `Isa::kernels` hands out
    // after detection) and the callers in this file keep every pointer and count in bounds.
    unsafe {
        let mut p = 0;
        while p < len {
            // One row of `c` channels at a time, so a per-channel operand lines up.
            let mut cb = 0;
            while cb < c {
                let count = (c - cb).min(8);
                let av = _mm256_sub_epi32(load8(a.as_ptr().add(p + cb), count, 0), zav);
                let bsrc = if per_channel { cb } else { p + cb };
                let bv = _mm256_sub_epi32(load8(b.as_ptr().add(bsrc), count, 0), zbv);
                let r = if mul {
                    requantize_uniform(_mm256_mullo_epi32(av, bv), op.ma, zy, op.clamp)
                } else {
                    let lo = |v: __m256i| _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v));
                    let hi = |v: __m256i| _mm256_cvtepi32_epi64(_mm256_extracti128_si256::<1>(v));
                    let sum_lo = _mm256_add_epi64(_mm256_mul_epi32(lo(av), ma), _mm256_mul_epi32(lo(bv), mb));
                    let sum_hi = _mm256_add_epi64(_mm256_mul_epi32(hi(av), ma), _mm256_mul_epi32(hi(bv), mb));
                    narrow(join(round_shift(sum_lo, round, shift), round_shift(sum_hi, round, shift)), zy, op.clamp)
                };
                store8(y.as_mut_ptr().add(p + cb), r, count);
                cb += 8;
            }
            p += c;
        }
    }
}

/// Mean over H and W per channel, 8 channels per vector.
unsafe fn global_average(rq: &Requant, ti: &TensorDesc<'_>, x: &[u8], to: &TensorDesc<'_>, y: &mut [u8]) {
    let [n, h, w, c] = ti.shape.map(|d| d as usize);
    assert!(x.len() >= n * h * w * c && y.len() >= n * c);
    // SAFETY: reachable only through `KERNELS` (AVX2 detected); bounded by the assertion.
    unsafe { gap_avx2(rq, [n, h * w, c], ti.zero_point, x, to.zero_point, y) }
}

#[target_feature(enable = "avx2")]
unsafe fn gap_avx2(rq: &Requant, [n, hw, c]: [usize; 3], zx: i32, x: &[u8], zy: i32, y: &mut [u8]) {
    // SAFETY: the CPU has AVX2 (this file's kernels run only from the table `Isa::kernels` hands out
    // after detection) and the callers in this file keep every pointer and count in bounds.
    unsafe {
        for b in 0..n {
            for cb in (0..c).step_by(8) {
                let count = (c - cb).min(8);
                let mut sum = _mm256_setzero_si256();
                for p in 0..hw {
                    sum = _mm256_add_epi32(sum, load8(x.as_ptr().add((b * hw + p) * c + cb), count, 0));
                }
                let centered = _mm256_sub_epi32(sum, _mm256_set1_epi32(zx * hw as i32));
                let r = requantize_uniform(centered, *rq, zy, [-128, 127]);
                store8(y.as_mut_ptr().add(b * c + cb), r, count);
            }
        }
    }
}

/// Max pooling, 8 channels per vector; the window max is then requantized like the reference.
unsafe fn max_pool(p: &Pool, ti: &TensorDesc<'_>, x: &[u8], to: &TensorDesc<'_>, y: &mut [u8]) {
    let [n, h, w, c] = ti.shape.map(|d| d as usize);
    let [_, oh, ow, _] = to.shape.map(|d| d as usize);
    assert!(x.len() >= n * h * w * c && y.len() >= n * oh * ow * c);
    // SAFETY: reachable only through `KERNELS` (AVX2 detected); bounded by the assertion.
    unsafe { max_pool_avx2(p, [n, h, w, c], [oh, ow], ti.zero_point, x, to.zero_point, y) }
}

#[target_feature(enable = "avx2")]
unsafe fn max_pool_avx2(
    p: &Pool,
    [n, h, w, c]: [usize; 4],
    [oh, ow]: [usize; 2],
    zx: i32,
    x: &[u8],
    zy: i32,
    y: &mut [u8],
) {
    // SAFETY: the CPU has AVX2 (this file's kernels run only from the table `Isa::kernels` hands out
    // after detection) and the callers in this file keep every pointer and count in bounds.
    unsafe {
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for cb in (0..c).step_by(8) {
                        let count = (c - cb).min(8);
                        let mut best = _mm256_set1_epi32(i8::MIN as i32);
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
                                best = _mm256_max_epi32(best, load8(x.as_ptr().add(at), count, 0x80));
                            }
                        }
                        let centered = _mm256_sub_epi32(best, _mm256_set1_epi32(zx));
                        let r = requantize_uniform(centered, p.requant, zy, [-128, 127]);
                        store8(y.as_mut_ptr().add(((b * oh + oy) * ow + ox) * c + cb), r, count);
                    }
                }
            }
        }
    }
}
