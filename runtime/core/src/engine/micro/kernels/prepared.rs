//! A micro model prepared for fast execution on a host, with one kernel set ([`Kernels`]):
//! convolutions and fully connected layers become GEMMs over weights packed in the set's layout,
//! depthwise convolutions a channel-vectorized kernel, tables, adds, multiplies and pooling the
//! set's vector loops; an op the set has no kernel for runs the reference kernel (`ops/`).
//!
//! Packing is shared: a set declares its GEMM layout ([`GemmLayout`]) and this module lays the
//! weights, the activation rows (im2col included) and the per-channel constants out for it.

use super::{DepthwiseKernel, GemmKernel, Kernels};
use crate::engine::micro::format::{i32_at, requant_at, rounding, Conv, FullyConnected, Op, TensorDesc};
use crate::engine::micro::ops;
use crate::quant::Rounding;

pub use super::taps::Taps;

/// Per-output-channel constants of a GEMM-shaped op, padded to whole blocks of channels.
///
/// Every per-lane array has [`lanes`](Self::lanes) entries: the fields are private and only
/// [`new`](Self::new) sizes them, so a kernel that checked `lanes` may read any array up to it.
#[derive(Debug, Clone)]
pub struct Epilogue {
    acc_init: Vec<i32>,
    mult: Vec<i64>,
    round: Vec<i64>,
    shift: Vec<i64>,
    mult32: Vec<i32>,
    shift_m1: Vec<i32>,
    narrow: bool,
    q31_shift: Vec<i32>,
    q31: bool,
    bias: Vec<i64>,
    tflite: bool,
    zero_point: i32,
    clamp: [i8; 2],
}

impl Epilogue {
    /// `lanes` lanes of zero constants (multiplier 0, shift 1).
    pub fn new(lanes: usize, zero_point: i32, clamp: [i8; 2]) -> Self {
        Epilogue {
            acc_init: vec![0; lanes],
            mult: vec![0; lanes],
            round: vec![1; lanes],
            shift: vec![1; lanes],
            mult32: vec![0; lanes],
            shift_m1: vec![0; lanes],
            narrow: true,
            q31_shift: vec![0; lanes],
            q31: true,
            bias: vec![0; lanes],
            tflite: false,
            zero_point,
            clamp,
        }
    }

    /// Sets lane `i` (< [`lanes`](Self::lanes)): accumulator start, multiplier and shift (1..=62).
    pub fn set(&mut self, i: usize, acc_init: i32, multiplier: i32, shift: u8) {
        assert!((1..=62).contains(&shift), "requantization shift {shift} outside 1..=62");
        self.acc_init[i] = acc_init;
        self.mult[i] = multiplier as i64;
        self.shift[i] = shift as i64;
        self.round[i] = 1i64 << (shift - 1);
        self.mult32[i] = multiplier;
        self.shift_m1[i] = shift as i32 - 1;
        self.narrow &= multiplier == 0 || shift >= 31;
        self.q31_shift[i] = if multiplier == 0 { 0 } else { 31 - shift as i32 };
        self.q31 &= multiplier == 0 || shift >= 32;
    }

    /// Makes lane `i` (set first) round as `rounding` says: for TFLite's rounding with a shift
    /// above 31, the product gains `2^30` away from zero before the shift
    /// ([`Requant::apply_tflite`](crate::quant::Requant::apply_tflite)); the fast paths that
    /// assume rounding halves up ([`narrow`](Self::narrow), [`q31`](Self::q31)) are then off.
    pub fn set_rounding(&mut self, i: usize, rounding: Rounding) {
        self.bias[i] = if rounding == Rounding::Tflite && self.shift[i] > 31 { 1 << 30 } else { 0 };
        if self.bias[i] != 0 {
            (self.narrow, self.q31, self.tflite) = (false, false, true);
        }
    }

    /// Copies lane `from` of `other` into lane `i` (permuted layouts).
    pub fn copy_lane(&mut self, i: usize, other: &Epilogue, from: usize) {
        self.set(i, other.acc_init[from], other.mult32[from], other.shift[from] as u8);
        self.bias[i] = other.bias[from];
        if self.bias[i] != 0 {
            (self.narrow, self.q31, self.tflite) = (false, false, true);
        }
    }

    /// TFLite's second rounding term per lane (`2^30`, added away from zero; 0: halves up).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn bias(&self) -> &[i64] {
        &self.bias
    }

    /// Some lane rounds as TFLite does ([`bias`](Self::bias)); only sets whose
    /// [`Isa::rounds_like_tflite`](super::Isa::rounds_like_tflite) is true get such epilogues.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn tflite(&self) -> bool {
        self.tflite
    }

    /// Lanes: the length of every per-lane array.
    pub fn lanes(&self) -> usize {
        self.acc_init.len()
    }

    /// Accumulator start: bias minus the zero-point correction of the set's activation form.
    pub fn acc_init(&self) -> &[i32] {
        &self.acc_init
    }

    /// Requantization multipliers (i64 lanes).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn mult(&self) -> &[i64] {
        &self.mult
    }

    /// Rounding terms `1 << (shift - 1)`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn round(&self) -> &[i64] {
        &self.round
    }

    /// Shifts.
    pub fn shift(&self) -> &[i64] {
        &self.shift
    }

    /// Multipliers as i32 (for 32×32→64 multiplies on 32-bit lanes).
    pub fn mult32(&self) -> &[i32] {
        &self.mult32
    }

    /// Shifts minus one, as i32 (`(x + 2^(s-1)) >> s = ((x >> (s-1)) + 1) >> 1`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn shift_m1(&self) -> &[i32] {
        &self.shift_m1
    }

    /// Every lane's result fits 32 bits before the zero point (every shift ≥ 31, or a zero
    /// multiplier): kernels may skip their 64-bit clamps.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn narrow(&self) -> bool {
        self.narrow
    }

    /// Right shifts after a doubling high multiply, negated (`31 - shift`; 0 for a zero
    /// multiplier): with shift ≥ 32, `(acc·m + 2^(s-1)) >> s` equals a rounding shift by `s - 31`
    /// of `(2·acc·m) >> 32` (`sqdmulh`), so 32-bit lanes compute the reference exactly.
    #[cfg_attr(not(any(target_arch = "aarch64", target_arch = "arm")), allow(dead_code))]
    pub fn q31_shift(&self) -> &[i32] {
        &self.q31_shift
    }

    /// Every lane has shift ≥ 32 or a zero multiplier: kernels may use [`q31_shift`](Self::q31_shift).
    #[cfg_attr(not(any(target_arch = "aarch64", target_arch = "arm")), allow(dead_code))]
    pub fn q31(&self) -> bool {
        self.q31
    }

    /// Output zero point.
    pub fn zero_point(&self) -> i32 {
        self.zero_point
    }

    /// Output clamp.
    pub fn clamp(&self) -> [i8; 2] {
        self.clamp
    }
}

/// How a set's GEMM kernel reads its operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmLayout {
    /// Output channels per weight block (the kernel's vector width in accumulators).
    pub block: usize,
    /// Reduction elements consumed together per channel (4 for `vpdpbusd`, 2 for `vpmaddwd`).
    pub group: usize,
    /// Activations as unsigned bytes (`a + 128`, for u8×s8 instructions); else signed.
    pub unsigned: bool,
    /// Weights and activations widened to i16 (little-endian pairs of bytes).
    pub wide: bool,
}

impl GemmLayout {
    /// Bytes per element of the packed operands.
    pub fn elem_bytes(&self) -> usize {
        if self.wide {
            2
        } else {
            1
        }
    }

    /// `k` rounded up to whole groups.
    #[allow(dead_code)]
    pub fn padded(&self, k: usize) -> usize {
        k.div_ceil(self.group) * self.group
    }
}

/// A GEMM: `out[p][n] = requant(acc_init[n] + Σ_k a[p][k] · w[n][k])`, operands in the layout of
/// the set that packed it ([`layout`](Self::layout)); the input zero point (and the unsigned
/// offset) are folded into `acc_init`.
///
/// Built only by [`Gemm::pack`], which sizes every part from `n`, `k` and the layout: `packed`
/// holds `⌈n/block⌉·kp·block` elements, the epilogue `⌈n/block⌉·block` lanes, and `kp` is a
/// multiple of the layout's group. Kernels rely on that and on nothing a caller can change.
#[derive(Debug, Clone)]
pub struct Gemm {
    n: usize,
    k: usize,
    kp: usize,
    layout: GemmLayout,
    packed: Vec<u8>,
    epilogue: Epilogue,
}

impl Gemm {
    /// Packs a GEMM's weights `[n][k]` (int8) and constants for `layout`: per output channel, a
    /// bias (i32 LE in `bias`) and requantization constants (`requant`), input zero point `zx`,
    /// output zero point `zy`. `None` when the sizes overflow or the slices are too short.
    #[allow(clippy::too_many_arguments)]
    pub fn pack(
        layout: GemmLayout,
        weights: &[u8],
        n: usize,
        k: usize,
        bias: &[u8],
        requant: &[u8],
        zx: i32,
        zy: i32,
        clamp: [i8; 2],
    ) -> Option<Gemm> {
        let (block, group, eb) = (layout.block, layout.group, layout.elem_bytes());
        if block == 0 || group == 0 || n == 0 || k == 0 {
            return None;
        }
        let kp = k.checked_next_multiple_of(group)?;
        let nb = n.div_ceil(block);
        let bytes = nb.checked_mul(kp)?.checked_mul(block)?.checked_mul(eb)?;
        if weights.len() < n.checked_mul(k)? || bias.len() < n.checked_mul(4)? || requant.len() < n.checked_mul(5)? {
            return None;
        }
        let mut packed = vec![0u8; bytes];
        for co in 0..n {
            for kk in 0..k {
                let (b, lane) = (co / block, co % block);
                let at = ((b * (kp / group) + kk / group) * block + lane) * group + kk % group;
                let w = weights[co * k + kk] as i8;
                if layout.wide {
                    packed[2 * at..2 * at + 2].copy_from_slice(&(w as i16).to_le_bytes());
                } else {
                    packed[at] = w as u8;
                }
            }
        }
        // Σ (a - zx)·w = Σ a'·w - (offset + zx)·Σ w, with a' = a + offset (128 for unsigned rows).
        let offset = if layout.unsigned { 128 } else { 0 };
        let wsum = |co: usize| (0..k).map(|kk| weights[co * k + kk] as i8 as i64).sum::<i64>();
        let acc_init = |c: usize| i32_at(bias, c) as i64 - (offset + zx as i64) * wsum(c);
        let epilogue = epilogue(acc_init, requant, n, nb * block, zy, clamp);
        Some(Gemm { n, k, kp, layout, packed, epilogue })
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Reduction length.
    pub fn k(&self) -> usize {
        self.k
    }

    /// `k` rounded up to the layout's group.
    pub fn kp(&self) -> usize {
        self.kp
    }

    /// The operand layout.
    pub fn layout(&self) -> GemmLayout {
        self.layout
    }

    /// Weights `[n/block][kp/group][block][group]`, `layout.elem_bytes()` bytes each.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// Epilogue constants, `n` rounded up to whole blocks.
    pub fn epilogue(&self) -> &Epilogue {
        &self.epilogue
    }

    /// Bytes of packed activation rows `rows` rows need, `None` on overflow.
    pub fn row_bytes(&self, rows: usize) -> Option<usize> {
        rows.checked_mul(self.kp)?.checked_mul(self.layout.elem_bytes())
    }
}

/// Depthwise weights and constants in a set's own layout (see its kernel), with what they were
/// packed for: the set's [`DepthwiseKernel`] checks channels and taps against the convolution
/// before its kernel reads them.
#[derive(Debug, Clone)]
pub struct DepthwisePacked {
    weights: Vec<i16>,
    pairs: usize,
    channels: usize,
    taps: usize,
    epilogue: Epilogue,
}

impl DepthwisePacked {
    /// Packed weights and epilogue for `channels` channels of `taps` taps.
    pub(super) fn new(weights: Vec<i16>, pairs: usize, channels: usize, taps: usize, epilogue: Epilogue) -> Self {
        DepthwisePacked { weights, pairs, channels, taps, epilogue }
    }

    /// Weights, widened to i16, in the set's order.
    pub fn weights(&self) -> &[i16] {
        &self.weights
    }

    /// Tap pairs (taps rounded up to even).
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// Epilogue, channels in the set's order, `acc_init = bias` (kernels accumulate `x - zx`).
    pub fn epilogue(&self) -> &Epilogue {
        &self.epilogue
    }

    /// The channels and taps the weights were packed for.
    pub fn packed_for(&self) -> (usize, usize) {
        (self.channels, self.taps)
    }
}

/// How a convolution feeds its kernel.
#[derive(Debug, Clone)]
pub enum ConvPlan {
    /// 1×1, stride 1, no padding: rows of the input are the GEMM's rows.
    Pointwise(Gemm),
    /// Any other ungrouped convolution: im2col rows (padding filled with the zero point).
    Im2col(Gemm),
    /// Depthwise (one input channel per group).
    Depthwise(DepthwisePacked),
}

/// One op and how it runs.
#[derive(Debug, Clone)]
pub enum Step {
    /// Convolution with a fast plan.
    Conv(ConvPlan),
    /// Fully connected as a GEMM.
    Fc(Gemm),
    /// The set's table lookup.
    Lut,
    /// The set's add or multiply, with `b` shaped like `a` or one value per channel.
    Binary {
        /// `b` holds one value per channel.
        per_channel: bool,
    },
    /// The set's mean over H and W.
    GlobalAverage,
    /// The set's max pooling.
    MaxPool,
    /// The reference kernel.
    Reference,
}

impl Step {
    /// How the step runs, for profiles: `pointwise`, `im2col`, `depthwise`, `gemm`, `vector` or
    /// `reference`.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Conv(ConvPlan::Pointwise(_)) => "pointwise",
            Step::Conv(ConvPlan::Im2col(_)) => "im2col",
            Step::Conv(ConvPlan::Depthwise(_)) => "depthwise",
            Step::Fc(_) => "gemm",
            Step::Lut | Step::Binary { .. } | Step::GlobalAverage | Step::MaxPool => "vector",
            Step::Reference => "reference",
        }
    }
}

/// The per-channel requantization constants of `n` channels, padded to `np`.
pub fn epilogue(
    acc_init: impl Fn(usize) -> i64,
    requant: &[u8],
    n: usize,
    np: usize,
    zero_point: i32,
    clamp: [i8; 2],
) -> Epilogue {
    let mut e = Epilogue::new(np, zero_point, clamp);
    let rounding = rounding(requant);
    for c in 0..n {
        let r = requant_at(requant, c);
        e.set(c, acc_init(c) as i32, r.multiplier, r.shift);
        e.set_rounding(c, rounding);
    }
    e
}

/// Plans every op of a model for a kernel set.
pub fn prepare<'m>(
    ops_iter: impl Iterator<Item = Op<'m>>,
    tensors: &[TensorDesc<'_>],
    kernels: &Kernels,
) -> Vec<(Op<'m>, Step)> {
    ops_iter
        .map(|op| {
            let step = plan(&op, tensors, kernels);
            (op, step)
        })
        .collect()
}

fn plan(op: &Op<'_>, t: &[TensorDesc<'_>], k: &Kernels) -> Step {
    let [lut, binary, global_average, max_pool] = k.has();
    match op {
        // TFLite's rounding runs on the sets that compute it, and on the reference kernels elsewhere.
        Op::Conv(Conv { requant, .. }) | Op::FullyConnected(FullyConnected { requant, .. })
            if rounding(requant) != Rounding::HalfUp && !k.isa().rounds_like_tflite() =>
        {
            Step::Reference
        }
        Op::Conv(c) => {
            let (ti, to) = (&t[c.input as usize], &t[c.output as usize]);
            let (cin, cout) = (ti.shape[3] as usize, to.shape[3] as usize);
            let (kh, kw) = (c.kernel[0] as usize, c.kernel[1] as usize);
            let depthwise = c.groups as usize == cin && cin == cout && c.groups > 1;
            if depthwise {
                return match k.depthwise() {
                    Some(d) if kh * kw <= d.max_taps() => {
                        // Depthwise kernels accumulate `x - zx` over the taps inside the image
                        // (padding adds nothing), so they start from the bias itself.
                        let base =
                            epilogue(|ch| i32_at(c.bias, ch) as i64, c.requant, cout, cout, to.zero_point, c.clamp);
                        Step::Conv(ConvPlan::Depthwise(d.pack(c.weights, kh * kw, cout, &base)))
                    }
                    _ => Step::Reference,
                };
            }
            let Some(g) = k.gemm().filter(|_| c.groups == 1) else { return Step::Reference };
            let Some(gm) = Gemm::pack(
                g.layout(),
                c.weights,
                cout,
                kh * kw * cin,
                c.bias,
                c.requant,
                ti.zero_point,
                to.zero_point,
                c.clamp,
            ) else {
                return Step::Reference;
            };
            let pointwise = kh == 1 && kw == 1 && c.stride == [1, 1] && c.pad == [0; 4];
            Step::Conv(if pointwise { ConvPlan::Pointwise(gm) } else { ConvPlan::Im2col(gm) })
        }
        Op::FullyConnected(f) => {
            let Some(g) = k.gemm() else { return Step::Reference };
            let (ti, to) = (&t[f.input as usize], &t[f.output as usize]);
            let n = ti.shape[0] as usize;
            let (cin, cout) = (ti.len() / n, to.len() / n);
            Gemm::pack(g.layout(), f.weights, cout, cin, f.bias, f.requant, ti.zero_point, to.zero_point, f.clamp)
                .map_or(Step::Reference, Step::Fc)
        }
        Op::Lut { .. } if lut => Step::Lut,
        Op::Add(b) | Op::Mul(b) if binary => {
            let (ta, tb) = (&t[b.a as usize], &t[b.b as usize]);
            if tb.shape == ta.shape {
                Step::Binary { per_channel: false }
            } else if tb.len() == ta.shape[3] as usize && tb.shape[3] == ta.shape[3] {
                Step::Binary { per_channel: true }
            } else {
                Step::Reference
            }
        }
        Op::GlobalAvgPool { .. } if global_average => Step::GlobalAverage,
        Op::MaxPool(_) if max_pool => Step::MaxPool,
        _ => Step::Reference,
    }
}

/// Scratch a prepared model needs (GEMM rows: im2col or re-laid activations).
pub fn scratch_bytes(steps: &[(Op<'_>, Step)], t: &[TensorDesc<'_>]) -> usize {
    steps
        .iter()
        .map(|(op, s)| match (op, s) {
            (Op::Conv(c), Step::Conv(ConvPlan::Pointwise(g) | ConvPlan::Im2col(g))) => {
                let to = &t[c.output as usize];
                let rows = (to.shape[0] as usize).saturating_mul(to.shape[1] as usize * to.shape[2] as usize);
                g.row_bytes(rows).map_or(usize::MAX, |b| b.saturating_add(64))
            }
            (Op::FullyConnected(f), Step::Fc(g)) => {
                g.row_bytes(t[f.input as usize].shape[0] as usize).map_or(usize::MAX, |b| b.saturating_add(64))
            }
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// Runs one prepared op with the kernels it was planned for (`kernels` must be the set
/// [`prepare`] was given; a step planned for another set panics, it never runs).
pub(crate) fn run(
    op: &Op<'_>,
    step: &Step,
    t: &[TensorDesc<'_>],
    arena: &mut [u8],
    scratch: &mut [u8],
    kernels: &Kernels,
) {
    match (op, step) {
        (Op::Conv(c), Step::Conv(plan)) => {
            let (ti, to) = (&t[c.input as usize], &t[c.output as usize]);
            let ([x], y) = ops::io(arena, [ti.range()], to.range());
            match plan {
                ConvPlan::Pointwise(g) => {
                    let rows = (ti.shape[0] * ti.shape[1] * ti.shape[2]) as usize;
                    let a = pack_rows(x, rows, g, scratch);
                    gemm_kernel(kernels).run(a, rows, g, y);
                }
                ConvPlan::Im2col(g) => {
                    let rows = (to.shape[0] * to.shape[1] * to.shape[2]) as usize;
                    let a = im2col(c, ti, to, x, g, scratch);
                    gemm_kernel(kernels).run(a, rows, g, y);
                }
                ConvPlan::Depthwise(packed) => depthwise_kernel(kernels).run(c, ti, to, x, y, packed),
            }
        }
        (Op::FullyConnected(f), Step::Fc(g)) => {
            let (ti, to) = (&t[f.input as usize], &t[f.output as usize]);
            let ([x], y) = ops::io(arena, [ti.range()], to.range());
            let rows = ti.shape[0] as usize;
            let a = pack_rows(x, rows, g, scratch);
            gemm_kernel(kernels).run(a, rows, g, y);
        }
        (Op::Lut { input, output, table }, Step::Lut) => {
            let ([x], y) = ops::io(arena, [t[*input as usize].range()], t[*output as usize].range());
            kernels.lut(table, x, y);
        }
        (Op::Add(b) | Op::Mul(b), Step::Binary { per_channel }) => {
            let (ta, tb, to) = (&t[b.a as usize], &t[b.b as usize], &t[b.output as usize]);
            let ([xa, xb], y) = ops::io(arena, [ta.range(), tb.range()], to.range());
            kernels.binary(matches!(op, Op::Mul(_)), b, (ta, xa), (tb, xb), (to, y), *per_channel);
        }
        (Op::GlobalAvgPool { input, output, requant }, Step::GlobalAverage) => {
            let (ti, to) = (&t[*input as usize], &t[*output as usize]);
            let ([x], y) = ops::io(arena, [ti.range()], to.range());
            kernels.global_average(requant, (ti, x), (to, y));
        }
        (Op::MaxPool(p), Step::MaxPool) => {
            let (ti, to) = (&t[p.input as usize], &t[p.output as usize]);
            let ([x], y) = ops::io(arena, [ti.range()], to.range());
            kernels.max_pool(p, (ti, x), (to, y));
        }
        _ => ops::run(op, t, arena),
    }
}

fn gemm_kernel(k: &Kernels) -> &GemmKernel {
    k.gemm().expect("a GEMM step is planned only for a set with a GEMM kernel")
}

fn depthwise_kernel(k: &Kernels) -> &DepthwiseKernel {
    k.depthwise().expect("a depthwise step is planned only for a set with a depthwise kernel")
}

/// One form of GEMM operand elements: how a signed activation byte is stored.
trait Form {
    /// Bytes per element.
    const BYTES: usize;
    /// Stores `v` as element `i` of `dst`.
    fn put(dst: &mut [u8], i: usize, v: u8);
    /// Stores `src` as the elements of `dst` (exactly `src.len()` of them).
    #[inline(always)]
    fn put_all(dst: &mut [u8], src: &[u8]) {
        for (i, &v) in src.iter().enumerate() {
            Self::put(dst, i, v);
        }
    }
}

/// `a + 128` as a byte (u8×s8 instructions).
struct Unsigned;
/// The byte as it is.
struct Signed;
/// Sign-extended to i16, little-endian.
struct Wide;

impl Form for Unsigned {
    const BYTES: usize = 1;
    #[inline(always)]
    fn put(dst: &mut [u8], i: usize, v: u8) {
        dst[i] = v ^ 0x80;
    }
}

impl Form for Signed {
    const BYTES: usize = 1;
    #[inline(always)]
    fn put(dst: &mut [u8], i: usize, v: u8) {
        dst[i] = v;
    }
    #[inline(always)]
    fn put_all(dst: &mut [u8], src: &[u8]) {
        dst.copy_from_slice(src);
    }
}

impl Form for Wide {
    const BYTES: usize = 2;
    #[inline(always)]
    fn put(dst: &mut [u8], i: usize, v: u8) {
        let w = (v as i8 as i16).to_le_bytes();
        dst[2 * i] = w[0];
        dst[2 * i + 1] = w[1];
    }
}

#[inline(always)]
fn copy_in<F: Form>(dst: &mut [u8], at: usize, src: &[u8]) {
    F::put_all(&mut dst[at * F::BYTES..(at + src.len()) * F::BYTES], src);
}

#[inline(always)]
fn fill<F: Form>(dst: &mut [u8], at: usize, count: usize, v: u8) {
    let dst = &mut dst[at * F::BYTES..(at + count) * F::BYTES];
    for i in 0..count {
        F::put(dst, i, v);
    }
}

/// Rows of `g.k` int8 values → rows of `g.kp` operand elements in the GEMM's layout, the padding
/// zero (its weights are zero). Signed rows without padding are the input itself: no copy.
fn pack_rows<'s>(x: &'s [u8], rows: usize, g: &Gemm, scratch: &'s mut [u8]) -> &'s [u8] {
    match (g.layout().wide, g.layout().unsigned) {
        (false, false) if g.k() == g.kp() => &x[..rows * g.k()],
        (true, _) => pack_rows_as::<Wide>(x, rows, g, scratch),
        (false, true) => pack_rows_as::<Unsigned>(x, rows, g, scratch),
        (false, false) => pack_rows_as::<Signed>(x, rows, g, scratch),
    }
}

fn pack_rows_as<'s, F: Form>(x: &[u8], rows: usize, g: &Gemm, scratch: &'s mut [u8]) -> &'s [u8] {
    let (k, kp) = (g.k(), g.kp());
    let a = &mut scratch[..rows * kp * F::BYTES];
    for (r, dst) in a.chunks_exact_mut(kp * F::BYTES).enumerate() {
        copy_in::<F>(dst, 0, &x[r * k..(r + 1) * k]);
        fill::<F>(dst, k, kp - k, 0);
    }
    a
}

/// im2col rows `[oh·ow][kh][kw][cin]` in the GEMM's layout; padding holds the zero point.
fn im2col<'s>(
    c: &Conv<'_>,
    ti: &TensorDesc<'_>,
    to: &TensorDesc<'_>,
    x: &[u8],
    g: &Gemm,
    scratch: &'s mut [u8],
) -> &'s [u8] {
    match (g.layout().wide, g.layout().unsigned) {
        (true, _) => im2col_as::<Wide>(c, ti, to, x, g, scratch),
        (false, true) => im2col_as::<Unsigned>(c, ti, to, x, g, scratch),
        (false, false) => im2col_as::<Signed>(c, ti, to, x, g, scratch),
    }
}

fn im2col_as<'s, F: Form>(
    c: &Conv<'_>,
    ti: &TensorDesc<'_>,
    to: &TensorDesc<'_>,
    x: &[u8],
    g: &Gemm,
    scratch: &'s mut [u8],
) -> &'s [u8] {
    let [n, h, w, cin] = ti.shape.map(|d| d as usize);
    let [_, oh, ow, _] = to.shape.map(|d| d as usize);
    let (kh, kw) = (c.kernel[0] as usize, c.kernel[1] as usize);
    let (sy, sx) = (c.stride[0] as usize, c.stride[1] as usize);
    let (dy, dx) = (c.dilation[0] as usize, c.dilation[1] as usize);
    let (pt, pl) = (c.pad[0] as isize, c.pad[1] as isize);
    let kp = g.kp();
    let pad = ti.zero_point as i8 as u8;
    let a = &mut scratch[..n * oh * ow * kp * F::BYTES];
    let mut rows = a.chunks_exact_mut(kp * F::BYTES);
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let dst = rows.next().expect("one row per output position");
                let mut k = 0;
                let ix0 = (ox * sx) as isize - pl;
                // The kw taps of a row of the kernel are one contiguous span of the input when
                // they are adjacent and all inside it.
                let span = dx == 1 && ix0 >= 0 && ix0 as usize + kw <= w;
                for ky in 0..kh {
                    let iy = (oy * sy + ky * dy) as isize - pt;
                    if iy < 0 || iy as usize >= h {
                        fill::<F>(dst, k, kw * cin, pad);
                        k += kw * cin;
                        continue;
                    }
                    let row = (b * h + iy as usize) * w;
                    if span {
                        let s = (row + ix0 as usize) * cin;
                        copy_in::<F>(dst, k, &x[s..s + kw * cin]);
                        k += kw * cin;
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = ix0 + (kx * dx) as isize;
                        if ix >= 0 && (ix as usize) < w {
                            let s = (row + ix as usize) * cin;
                            copy_in::<F>(dst, k, &x[s..s + cin]);
                        } else {
                            fill::<F>(dst, k, cin, pad);
                        }
                        k += cin;
                    }
                }
                fill::<F>(dst, k, kp - k, 0);
            }
        }
    }
    a
}
