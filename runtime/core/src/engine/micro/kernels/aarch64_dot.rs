//! aarch64 kernels for cores with the dot-product extension (Cortex-A76: Raspberry Pi 5; Cortex-
//! A55, Neoverse): the GEMM on `sdot`, four int8 products summed into each 32-bit lane per
//! instruction (16 multiply-accumulates), exact. Its intrinsics are not stable in our toolchain,
//! so the instruction is written with `asm!`. Depthwise convolutions use the NEON set's kernel.
//!
//! GEMM layout: 16 output channels per block, reduction in groups of 4, weights
//! `[n/16][k/4][16][4]` (one 64-byte group = four `sdot` operands of 4 channels × 4 values),
//! activation rows int8. Tables and adds/multiplies are the NEON set's. Reachable only through
//! [`KERNELS`], which [`super::Isa::kernels`] hands out after detecting `dotprod`.
#![allow(unsafe_code)]

use super::aarch64_neon::{binary, global_average, lut, max_pool, requantize4, store4, DEPTHWISE};
use super::prepared::{Gemm, GemmLayout};
use super::{GemmKernel, Isa, Kernels};
use core::arch::aarch64::*;
use core::arch::asm;

const LAYOUT: GemmLayout = GemmLayout { block: 16, group: 4, unsigned: false, wide: false };

/// The set's table.
// SAFETY: every function here is an `unsafe fn` of this file meeting its type's contract (its
// own assertions re-check the sizes) on a CPU that has this set's extensions, which
// `Isa::kernels` checks before handing the table out.
pub(super) static KERNELS: Kernels = unsafe {
    Kernels::new(
        Isa::NeonDot,
        Some(GemmKernel::new(LAYOUT, gemm)),
        Some(DEPTHWISE),
        Some(lut),
        Some(binary),
        Some(global_average),
        Some(max_pool),
    )
};

/// `acc += w · broadcast(a[0..4])` per lane: four products of int8 per 32-bit lane.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only; reachable only from functions compiled with `dotprod`, called after
    // it was detected.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[0]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// `out[p][n]` for `rows` rows of `a` (`kp` int8 each); see [`Gemm`].
unsafe fn gemm(a: &[u8], rows: usize, g: &Gemm, out: &mut [u8]) {
    let blocks = g.n().div_ceil(16);
    assert!(g.layout() == LAYOUT && g.kp().is_multiple_of(4) && g.epilogue().acc_init().len() >= blocks * 16);
    assert!(a.len() >= rows * g.kp() && out.len() >= rows * g.n() && g.packed().len() >= blocks * g.kp() * 16);
    // SAFETY: reachable only through `KERNELS`, handed out after `dotprod` was detected; the
    // assertions bound every access of the tiles.
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

/// `R` rows from `p` × the 16 channels of block `b`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile<const R: usize>(a: &[u8], p: usize, b: usize, g: &Gemm, out: &mut [u8]) {
    let groups = g.kp() / 4;
    // SAFETY: `gemm` asserted `a` holds `rows·kp` bytes, `out` `rows·n` and the packed weights and
    // epilogue whole blocks, so rows `p..p + R` and block `b` are in bounds; the table is handed
    // out only after `dotprod` was detected.
    unsafe {
        let init = g.epilogue().acc_init().as_ptr().add(b * 16);
        let start = [vld1q_s32(init), vld1q_s32(init.add(4)), vld1q_s32(init.add(8)), vld1q_s32(init.add(12))];
        let mut acc = [start; R];
        let w = g.packed().as_ptr().add(b * groups * 64) as *const i8;
        let x = a.as_ptr();
        for kk in 0..groups {
            let wv = [
                vld1q_s8(w.add(kk * 64)),
                vld1q_s8(w.add(kk * 64 + 16)),
                vld1q_s8(w.add(kk * 64 + 32)),
                vld1q_s8(w.add(kk * 64 + 48)),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let quad = (x.add((p + r) * g.kp() + kk * 4) as *const i32).read_unaligned();
                let xv = vreinterpretq_s8_s32(vdupq_n_s32(quad));
                for (j, acc) in row.iter_mut().enumerate() {
                    *acc = sdot(*acc, wv[j], xv);
                }
            }
        }
        let c = b * 16;
        for (r, row) in acc.iter().enumerate() {
            for (j, acc) in row.iter().enumerate() {
                let cj = c + 4 * j;
                if cj < g.n() {
                    let v = requantize4(*acc, g.epilogue(), cj);
                    store4(out.as_mut_ptr().add((p + r) * g.n() + cj), v, g.n() - cj);
                }
            }
        }
    }
}
