//! armv7 NEON kernels (32-bit Raspberry Pi OS on Cortex-A7/A53/A72): the widening
//! multiply-accumulate pattern of the aarch64 NEON set in its 32-bit spelling — `vmull.s8` and
//! `vmlal.s8` multiply 16 int8 pairs into 8 16-bit sums of two products, `vpadal.s16` adds those
//! pairwise into 32-bit accumulators (weights in [−127, 127], enforced at load, so the 16-bit sums
//! cannot overflow); depthwise taps widened with `vmovl.s8` and accumulated with `vmlal.s16`.
//!
//! Rust's NEON intrinsics and `target_feature(enable = "neon")` are not stable for 32-bit ARM, and
//! the `armv7-unknown-linux-gnueabihf` target builds without NEON, so the kernels are inline
//! assembly (`.fpu neon`) that uses only `q0`–`q7` (`d0`–`d15`), registers the compiler knows and
//! saves as clobbers. NEON is detected at run time from the kernel's `AT_HWCAP`; [`KERNELS`] is
//! handed out only after that check.
//!
//! The requantization is the reference's expression: where every shift is ≥ 32 (real models),
//! in 32 bits — `vqdmulh.s32` and a rounding shift by `s - 31` are exact there (see
//! [`Epilogue::q31_shift`]); otherwise on 64-bit lanes: `vmull.s32` products, a rounding right
//! shift (`vrshl.s64` by the negated shift adds `2^(s-1)` first), the zero point added in 64 bits
//! before the saturating narrows (`vqmovn`) and the clamp.
//!
//! GEMM layout: 4 output channels per block, reduction in groups of 16, weights
//! `[n/4][k/16][4][16]` (the aarch64 NEON layout), activation rows int8. Depthwise: 8 channels per
//! block, weights widened to i16 `[block][tap][8]`; a trailing block of fewer than 8 channels runs
//! the same arithmetic in scalar code.
#![allow(unsafe_code)]

use super::prepared::{DepthwisePacked, Epilogue, Gemm, GemmLayout};
use super::{DepthwiseKernel, GemmKernel, Isa, Kernels};
use crate::engine::micro::format::{Binary, Conv, TensorDesc};
use crate::quant::{round_shift, saturate};
use core::arch::asm;

const LAYOUT: GemmLayout = GemmLayout { block: 4, group: 16, unsigned: false, wide: false };

/// Depthwise channels per block.
const DW: usize = 8;

/// The set's table.
// SAFETY: every function here is an `unsafe fn` of this file meeting its type's contract (its
// own assertions re-check the sizes) on a CPU that has this set's extensions, which
// `Isa::kernels` checks before handing the table out.
pub(super) static KERNELS: Kernels = unsafe {
    Kernels::new(
        Isa::Armv7Neon,
        Some(GemmKernel::new(LAYOUT, gemm)),
        Some(DepthwiseKernel::new(64, DW, pack_depthwise, depthwise)),
        None,
        Some(binary),
        None,
        None,
    )
};

/// Whether the CPU has NEON: bit 12 (`HWCAP_NEON`) of `AT_HWCAP` (16) in `/proc/self/auxv`.
pub(super) fn detected() -> bool {
    const AT_HWCAP: u32 = 16;
    const HWCAP_NEON: u32 = 1 << 12;
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else { return false };
    auxv.chunks_exact(8)
        .map(|e| (u32::from_ne_bytes([e[0], e[1], e[2], e[3]]), u32::from_ne_bytes([e[4], e[5], e[6], e[7]])))
        .find(|&(key, _)| key == AT_HWCAP)
        .is_some_and(|(_, caps)| caps & HWCAP_NEON != 0)
}

/// Requantizes four accumulators (channels `c..c+4` of `e`, `acc_init` added here) to four int8
/// in the bytes of the result, lowest channel first.
///
/// # Safety
/// The CPU has NEON, and `e` has lanes `c..c+4`.
#[inline]
unsafe fn requantize4(acc: &[i32; 4], e: &Epilogue, c: usize) -> [u8; 4] {
    let packed: u32;
    let clamp = (e.clamp()[0] as u8 as u32) | ((e.clamp()[1] as u8 as u32) << 8);
    if e.q31() {
        // Every shift ≥ 32: the doubling high multiply and a rounding shift, in 32 bits.
        // SAFETY: the caller guarantees NEON; every pointer reads four lanes inside its vector.
        unsafe {
            asm!(
                ".fpu neon",
                "vld1.32 {{d8, d9}}, [{acc}]",
                "vld1.32 {{d0, d1}}, [{init}]",
                "vadd.i32 q4, q4, q0",
                "vld1.32 {{d2, d3}}, [{mult}]",
                "vqdmulh.s32 q4, q4, q1",
                "vld1.32 {{d0, d1}}, [{shift}]",
                "vrshl.s32 q4, q4, q0",
                "vdup.32 q1, {zp}",
                "vadd.i32 q4, q4, q1",
                "vqmovn.s32 d8, q4",
                "vqmovn.s16 d8, q4",
                "vdup.8 d0, {clamp}",
                "lsr {clamp}, {clamp}, #8",
                "vdup.8 d1, {clamp}",
                "vmax.s8 d8, d8, d0",
                "vmin.s8 d8, d8, d1",
                "vmov.32 {packed}, d8[0]",
                acc = in(reg) acc.as_ptr(),
                init = in(reg) e.acc_init().as_ptr().add(c),
                mult = in(reg) e.mult32().as_ptr().add(c),
                shift = in(reg) e.q31_shift().as_ptr().add(c),
                zp = in(reg) e.zero_point(),
                clamp = inout(reg) clamp => _,
                packed = lateout(reg) packed,
                out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d8") _, out("d9") _,
                options(nostack, readonly, preserves_flags),
            );
        }
        return packed.to_le_bytes();
    }
    // SAFETY: the caller guarantees NEON; every pointer reads four lanes inside its vector.
    unsafe {
        asm!(
            ".fpu neon",
            "vld1.32 {{d8, d9}}, [{acc}]",
            "vld1.32 {{d0, d1}}, [{init}]",
            "vadd.i32 q4, q4, q0",
            "vld1.32 {{d2, d3}}, [{mult}]",
            "vmull.s32 q5, d8, d2",
            "vmull.s32 q6, d9, d3",
            "vld1.64 {{d0, d1, d2, d3}}, [{shift}]",
            "vmov.i32 q7, #0",
            "vsub.i64 q0, q7, q0",
            "vsub.i64 q1, q7, q1",
            "vrshl.s64 q5, q5, q0",
            "vrshl.s64 q6, q6, q1",
            "vdup.32 d0, {zp}",
            "vmovl.s32 q0, d0",
            "vadd.i64 q5, q5, q0",
            "vadd.i64 q6, q6, q0",
            "vqmovn.s64 d8, q5",
            "vqmovn.s64 d9, q6",
            "vqmovn.s32 d8, q4",
            "vqmovn.s16 d8, q4",
            "vdup.8 d0, {clamp}",
            "lsr {clamp}, {clamp}, #8",
            "vdup.8 d1, {clamp}",
            "vmax.s8 d8, d8, d0",
            "vmin.s8 d8, d8, d1",
            "vmov.32 {packed}, d8[0]",
            acc = in(reg) acc.as_ptr(),
            init = in(reg) e.acc_init().as_ptr().add(c),
            mult = in(reg) e.mult32().as_ptr().add(c),
            shift = in(reg) e.shift().as_ptr().add(c),
            zp = in(reg) e.zero_point(),
            clamp = inout(reg) clamp => _,
            packed = lateout(reg) packed,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d8") _, out("d9") _,
            out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _, out("d15") _,
            options(nostack, readonly, preserves_flags),
        );
    }
    packed.to_le_bytes()
}

/// `out[p][n]` for `rows` rows of `a` (`kp` int8 each); see [`Gemm`].
unsafe fn gemm(a: &[u8], rows: usize, g: &Gemm, out: &mut [u8]) {
    let blocks = g.n().div_ceil(4);
    let groups = g.kp() / 16;
    assert!(
        g.layout() == LAYOUT && g.kp().is_multiple_of(16) && groups > 0 && g.epilogue().acc_init().len() >= blocks * 4
    );
    assert!(g.epilogue().mult32().len() >= blocks * 4 && g.epilogue().shift().len() >= blocks * 4);
    assert!(g.epilogue().q31_shift().len() >= blocks * 4);
    assert!(a.len() >= rows * g.kp() && out.len() >= rows * g.n() && g.packed().len() >= blocks * g.kp() * 4);
    for b in 0..blocks {
        let c = b * 4;
        let count = (g.n() - c).min(4);
        for p in 0..rows {
            // SAFETY: KERNELS is reached only after NEON was detected; the assertions bound the
            // `groups` 16-byte row loads, the 64-byte weight groups and the epilogue lanes.
            let bytes = unsafe {
                let acc = dot4(a.as_ptr().add(p * g.kp()), g.packed().as_ptr().add(b * groups * 64), groups);
                requantize4(&acc, g.epilogue(), c)
            };
            out[p * g.n() + c..p * g.n() + c + count].copy_from_slice(&bytes[..count]);
        }
    }
}

/// Sums of one activation row (`groups`·16 int8 at `x`) with the four channels of a weight block
/// (`groups`·64 int8 at `w`).
///
/// # Safety
/// The CPU has NEON, `groups` ≥ 1, and both pointers have that many groups behind them.
#[inline]
unsafe fn dot4(x: *const u8, w: *const u8, groups: usize) -> [i32; 4] {
    let mut acc = [0i32; 4];
    // SAFETY: the caller guarantees what the `# Safety` section above asks.
    unsafe {
        asm!(
            ".fpu neon",
            "vmov.i32 q4, #0",
            "vmov.i32 q5, #0",
            "vmov.i32 q6, #0",
            "vmov.i32 q7, #0",
            "2:",
            "vld1.8 {{d0, d1}}, [{x}]!",
            "vld1.8 {{d2, d3, d4, d5}}, [{w}]!",
            "vmull.s8 q3, d0, d2",
            "vmlal.s8 q3, d1, d3",
            "vpadal.s16 q4, q3",
            "vmull.s8 q3, d0, d4",
            "vmlal.s8 q3, d1, d5",
            "vpadal.s16 q5, q3",
            "vld1.8 {{d2, d3, d4, d5}}, [{w}]!",
            "vmull.s8 q3, d0, d2",
            "vmlal.s8 q3, d1, d3",
            "vpadal.s16 q6, q3",
            "vmull.s8 q3, d0, d4",
            "vmlal.s8 q3, d1, d5",
            "vpadal.s16 q7, q3",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vpadd.i32 d8, d8, d9",
            "vpadd.i32 d9, d10, d11",
            "vpadd.i32 d10, d12, d13",
            "vpadd.i32 d11, d14, d15",
            "vpadd.i32 d8, d8, d9",
            "vpadd.i32 d9, d10, d11",
            "vst1.32 {{d8, d9}}, [{acc}]",
            x = inout(reg) x => _,
            w = inout(reg) w => _,
            n = inout(reg) groups => _,
            acc = in(reg) acc.as_mut_ptr(),
            out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _,
            out("d15") _,
            options(nostack),
        );
    }
    acc
}

/// Packs depthwise weights `[c][taps]` widened to i16 `[block][tap][8]` (taps padded to even),
/// with the epilogue padded to whole blocks of 8 channels, in natural order.
fn pack_depthwise(weights: &[u8], taps: usize, channels: usize, base: &Epilogue) -> DepthwisePacked {
    let pairs = taps.div_ceil(2);
    let blocks = channels.div_ceil(DW);
    let mut packed = vec![0i16; blocks * 2 * pairs * DW];
    for c in 0..channels {
        for t in 0..taps {
            packed[((c / DW) * 2 * pairs + t) * DW + c % DW] = weights[c * taps + t] as i8 as i16;
        }
    }
    let mut e = Epilogue::new(blocks * DW, base.zero_point(), base.clamp());
    for c in 0..channels {
        e.copy_lane(c, base, c);
    }
    DepthwisePacked::new(packed, pairs, channels, taps, e)
}

/// Depthwise convolution on NHWC, 8 channels per block: the taps inside the image, centred on
/// the zero point, accumulated from the bias (`acc_init`); taps in the padding add nothing
/// and are skipped.
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
    let stride = 2 * p.pairs() * DW;
    let e = p.epilogue();
    assert!(x.len() >= n * h * w * ch && y.len() >= n * oh * ow * ch && (1..=64).contains(&taps));
    assert!(p.weights().len() >= ch.div_ceil(DW) * stride && p.pairs() * 2 >= taps);
    assert!(e.acc_init().len() >= ch.div_ceil(DW) * DW && e.mult32().len() >= e.acc_init().len());
    assert!(e.shift().len() >= e.acc_init().len() && e.q31_shift().len() >= e.acc_init().len());
    let zx = ti.zero_point;
    let full = ch / DW * DW;
    let taps_at = super::prepared::Taps::new(c, [n, h, w, ch]);
    // The taps inside the image at the current output: [tap, input offset].
    let mut inside = [[0usize; 2]; 64];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let count = taps_at.inside([b, oy, ox], &mut inside);
                let inside = &inside[..count];
                let at = ((b * oh + oy) * ow + ox) * ch;
                for cb in (0..full).step_by(DW) {
                    // From 0: requantize4 adds acc_init (the bias).
                    let mut acc = [0i32; 8];
                    if !inside.is_empty() {
                        // SAFETY: NEON detected before KERNELS was handed out; each tap's offset
                        // plus `cb + 8` is within `x` (Taps lists taps inside the image), its
                        // weights row of 8 i16 within the block (tap < taps ≤ 2·pairs).
                        unsafe {
                            taps8(x.as_ptr().add(cb), p.weights().as_ptr().add(cb / DW * stride), inside, zx, &mut acc)
                        };
                    }
                    // SAFETY: NEON detected; the epilogue has lanes `cb..cb+8` (asserted).
                    let (lo, hi) = unsafe {
                        (
                            requantize4(&[acc[0], acc[1], acc[2], acc[3]], e, cb),
                            requantize4(&[acc[4], acc[5], acc[6], acc[7]], e, cb + 4),
                        )
                    };
                    y[at + cb..at + cb + 4].copy_from_slice(&lo);
                    y[at + cb + 4..at + cb + 8].copy_from_slice(&hi);
                }
                // The last channels (fewer than a block): the same arithmetic, one at a time.
                for ci in full..ch {
                    let wb = &p.weights()[ci / DW * stride + ci % DW..];
                    let mut acc = e.acc_init()[ci];
                    for &[t, off] in inside {
                        acc = acc.wrapping_add((x[off + ci] as i8 as i32 - zx) * wb[t * DW] as i32);
                    }
                    let r = round_shift(acc as i64 * e.mult()[ci], e.shift()[ci] as u8);
                    y[at + ci] = saturate(r, e.zero_point(), e.clamp()[0], e.clamp()[1]) as u8;
                }
            }
        }
    }
}

/// Adds `Σ (x[off] - zx)·w[t]` over `inside` ([tap, offset] pairs) to 8 channels' accumulators
/// (8 bytes at each `x + off`, 8 i16 weights at each `w + 8·t`).
///
/// # Safety
/// The CPU has NEON, `inside` is not empty, and every pair's reads are in bounds.
#[inline]
unsafe fn taps8(x: *const u8, w: *const i16, inside: &[[usize; 2]], zx: i32, acc: &mut [i32; 8]) {
    // SAFETY: the caller guarantees what the `# Safety` section above asks.
    unsafe {
        asm!(
            ".fpu neon",
            "vld1.32 {{d8, d9, d10, d11}}, [{acc}]",
            "vdup.16 q6, {zx}",
            "2:",
            "ldr {t}, [{list}], #4",
            "ldr {off}, [{list}], #4",
            "add {off}, {x}, {off}",
            "vld1.8 {{d0}}, [{off}]",
            "add {t}, {w}, {t}, lsl #4",
            "vld1.16 {{d2, d3}}, [{t}]",
            "vmovl.s8 q0, d0",
            "vsub.i16 q0, q0, q6",
            "vmlal.s16 q4, d0, d2",
            "vmlal.s16 q5, d1, d3",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vst1.32 {{d8, d9, d10, d11}}, [{acc}]",
            list = inout(reg) inside.as_ptr() => _,
            n = inout(reg) inside.len() => _,
            x = in(reg) x,
            w = in(reg) w,
            zx = in(reg) zx,
            acc = in(reg) acc.as_mut_ptr(),
            t = out(reg) _,
            off = out(reg) _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _,
            options(nostack),
        );
    }
}

/// Elementwise multiply (where `b` is shaped like `a` or one value per channel) with shift ≥ 32,
/// 8 values per step: `(a - za)·(b - zb)` widened exactly (`vsubl.s8`, `vmull.s16`), then the
/// reference's requantization in 32 bits (`vqdmulh.s32` and a rounding shift, exact for such
/// shifts). Adds, and multiplies with a smaller shift, run the reference kernel.
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
    let len = ta.len();
    let c = if per_channel { ta.shape[3] as usize } else { len };
    if !mul || op.ma.shift < 32 {
        return crate::engine::micro::ops::binary::reference(mul, op, (ta, a), (tb, b), (to, y));
    }
    assert!(c > 0 && len.is_multiple_of(c));
    assert!(a.len() >= len && y.len() >= len && b.len() >= c);
    let (za, zb, zy) = (ta.zero_point, tb.zero_point, to.zero_point);
    let consts = MulConsts {
        m: [op.ma.multiplier; 4],
        shift: [31 - op.ma.shift as i32; 4],
        zeros: core::array::from_fn(|i| if i < 8 { za as i8 } else { zb as i8 }),
        zy: [zy; 4],
        clamp: core::array::from_fn(|i| op.clamp[i / 8]),
    };
    let steps = c / 8;
    let mut run = 0;
    while run < len {
        let bb = if per_channel { 0 } else { run };
        if steps > 0 {
            // SAFETY: NEON detected before KERNELS was handed out; `steps` groups of 8 bytes from
            // `run` in `a` and `y` and from `bb` in `b` are inside the slices (asserted).
            unsafe { mul8(a.as_ptr().add(run), b.as_ptr().add(bb), y.as_mut_ptr().add(run), steps, &consts) };
        }
        for i in steps * 8..c {
            let v = (a[run + i] as i8 as i64 - za as i64) * (b[bb + i] as i8 as i64 - zb as i64);
            y[run + i] = saturate(op.ma.apply(v), zy, op.clamp[0], op.clamp[1]) as u8;
        }
        run += c;
    }
}

/// Constants of [`mul8`], in the order it loads them.
#[repr(C)]
struct MulConsts {
    m: [i32; 4],
    shift: [i32; 4],
    /// Eight `za`, then eight `zb`.
    zeros: [i8; 16],
    zy: [i32; 4],
    /// Eight lower clamps, then eight upper.
    clamp: [i8; 16],
}

/// `steps` groups of 8 products, requantized (see [`binary`]).
///
/// # Safety
/// The CPU has NEON, `steps` ≥ 1, and `steps`·8 bytes at `a`, `b` and `y` are in bounds.
#[inline]
unsafe fn mul8(a: *const u8, b: *const u8, y: *mut u8, steps: usize, k: &MulConsts) {
    // SAFETY: the caller guarantees what the `# Safety` section above asks.
    unsafe {
        asm!(
            ".fpu neon",
            "vld1.32 {{d8, d9, d10, d11}}, [{k}]!",
            "vld1.8 {{d12, d13}}, [{k}]!",
            "vld1.32 {{d14, d15}}, [{k}]!",
            "vld1.8 {{d0, d1}}, [{k}]",
            "2:",
            "vld1.8 {{d4}}, [{a}]!",
            "vld1.8 {{d5}}, [{b}]!",
            "vsubl.s8 q1, d4, d12",
            "vsubl.s8 q2, d5, d13",
            "vmull.s16 q3, d2, d4",
            "vmull.s16 q1, d3, d5",
            "vqdmulh.s32 q3, q3, q4",
            "vqdmulh.s32 q1, q1, q4",
            "vrshl.s32 q3, q3, q5",
            "vrshl.s32 q1, q1, q5",
            "vadd.i32 q3, q3, q7",
            "vadd.i32 q1, q1, q7",
            "vqmovn.s32 d6, q3",
            "vqmovn.s32 d7, q1",
            "vqmovn.s16 d6, q3",
            "vmax.s8 d6, d6, d0",
            "vmin.s8 d6, d6, d1",
            "vst1.8 {{d6}}, [{y}]!",
            "subs {n}, {n}, #1",
            "bne 2b",
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            y = inout(reg) y => _,
            n = inout(reg) steps => _,
            k = inout(reg) k as *const MulConsts => _,
            out("d0") _, out("d1") _, out("d2") _, out("d3") _, out("d4") _, out("d5") _, out("d6") _, out("d7") _,
            out("d8") _, out("d9") _, out("d10") _, out("d11") _, out("d12") _, out("d13") _, out("d14") _,
            out("d15") _,
            options(nostack),
        );
    }
}
