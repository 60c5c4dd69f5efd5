//! Optimized kernels of the micro engine, prepared once per model on a host: weights repacked for
//! the vector units, per-channel constants expanded. Each computes exactly what the reference
//! kernel in `ops/` defines — integer accumulation is exact and the requantization is the same
//! fixed-point step — so results are identical bit for bit; tests check every kernel against the
//! reference. Ops without an optimized kernel run the reference.
//!
//! Which set runs is chosen once, when a model is loaded: [`Isa::selected`] takes the best set
//! this CPU supports, or the one named by the `LEPTON_KERNELS` environment variable
//! (`LEPTON_KERNELS=reference` runs the portable kernels on any machine, as a CPU without vector
//! extensions would).
//!
//! Soundness by construction: the vectorized kernels are `unsafe fn`s that trust their operands
//! and the CPU; a table of them ([`Kernels`]) is built only by `unsafe` code in the set's own
//! file and handed out only by [`Isa::kernels`] after the CPU check; the one way to run them is
//! through the table's safe entry points, which check every operand's size (overflow-checked)
//! for every set alike; the packed operands (`Gemm`, `DepthwisePacked`, `Epilogue`) have private
//! fields and one constructor each, which sizes them. Nothing of it is reachable from outside the
//! crate but the set's name and its CPU check:
//!
//! ```
//! use lepton_core::engine::micro::kernels::Isa;
//! assert_eq!(Isa::Reference.kernels().unwrap().isa(), Isa::Reference);
//! ```
//!
//! ```compile_fail
//! // The prepared steps and their runner are the engine's own: not public.
//! use lepton_core::engine::micro::kernels::prepared::run;
//! ```
//!
//! ```compile_fail
//! // A table of kernels cannot be assembled outside the kernel files.
//! use lepton_core::engine::micro::kernels::{Isa, Kernels};
//! let k = Kernels { isa: Isa::Reference, gemm: None, depthwise: None, lut: None, binary: None,
//!                   global_average: None, max_pool: None };
//! ```
//!
//! ```compile_fail
//! // Nor through its constructor.
//! use lepton_core::engine::micro::kernels::{Isa, Kernels};
//! let k = unsafe { Kernels::new(Isa::Reference, None, None, None, None, None, None) };
//! ```

#[cfg(all(feature = "host", target_arch = "aarch64"))]
mod aarch64_dot;
#[cfg(all(feature = "host", target_arch = "aarch64"))]
mod aarch64_neon;
#[cfg(all(feature = "host", target_arch = "arm"))]
mod armv7_neon;
#[cfg(lepton_dsp)]
pub mod cortex_m_dsp;
#[cfg(feature = "host")]
pub(crate) mod prepared;
pub mod reference;
#[cfg(feature = "host")]
pub mod taps;
#[cfg(all(feature = "host", target_arch = "x86_64"))]
mod x86_avx2;
#[cfg(all(feature = "host", target_arch = "x86_64"))]
mod x86_avx512;

/// A kernel set: the instruction-set extension the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Portable reference kernels only (every CPU).
    Reference,
    /// x86-64 AVX2 (Haswell and later, Zen and later): 16-bit multiply-adds (`vpmaddwd`).
    Avx2,
    /// x86-64 AVX-512 with VNNI (Ice Lake and later, Zen 4 and later).
    Avx512Vnni,
    /// aarch64 NEON without the dot product (Cortex-A53/A72: Pi 3, Pi 4, Zero 2 W): widening
    /// multiply-accumulates (`smull`/`smlal2`, `sadalp`).
    Neon,
    /// aarch64 with the dot-product extension (Cortex-A76: Pi 5): `sdot`.
    NeonDot,
    /// 32-bit ARM (armv7) with NEON (32-bit Raspberry Pi OS): `vmull.s8`/`vmlal.s8`, `vpadal.s16`.
    Armv7Neon,
    /// Cortex-M with the DSP extension (M4, M7, M33; the firmware): dual 16-bit
    /// multiply-accumulates (`smlad`). Built into the firmware's interpreter, never on a host.
    CortexMDsp,
}

/// Environment variable that forces a kernel set.
pub const KERNELS_ENV: &str = "LEPTON_KERNELS";

impl Isa {
    /// Every kernel set, reference first, then per architecture from the least to the most
    /// capable (detection takes the last one the CPU supports).
    pub const ALL: [Isa; 7] =
        [Isa::Reference, Isa::Avx2, Isa::Avx512Vnni, Isa::Neon, Isa::NeonDot, Isa::Armv7Neon, Isa::CortexMDsp];

    /// The set's name, as `LEPTON_KERNELS` and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Reference => "reference",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::NeonDot => "neondot",
            Isa::Armv7Neon => "armv7neon",
            Isa::CortexMDsp => "cortexmdsp",
        }
    }

    /// The set named `name` (as [`Isa::name`] spells it), if any.
    pub fn from_name(name: &str) -> Option<Isa> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Whether the set's convolutions and fully connected layers compute TFLite's rounding
    /// ([`Rounding::Tflite`](crate::quant::Rounding::Tflite), models read from `.tflite` files);
    /// the others run those ops on the reference kernels.
    pub fn rounds_like_tflite(self) -> bool {
        matches!(self, Isa::Reference | Isa::Avx2 | Isa::CortexMDsp)
    }

    /// The CPU features the set needs, as `/proc/cpuinfo` names them (empty: none).
    pub fn requires(self) -> &'static str {
        match self {
            Isa::Reference => "",
            Isa::Avx2 => "x86-64 avx2",
            Isa::Avx512Vnni => "x86-64 avx512f avx512bw avx512dq avx512vl avx512vnni",
            Isa::Neon => "aarch64 asimd",
            Isa::NeonDot => "aarch64 asimd asimddp",
            Isa::Armv7Neon => "arm neon",
            Isa::CortexMDsp => "a Cortex-M with dsp (firmware only; tested under qemu-system-arm)",
        }
    }
}

#[cfg(feature = "host")]
impl Isa {
    /// Whether this CPU can run the set.
    pub fn supported(self) -> bool {
        match self {
            Isa::Reference => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512dq")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512Vnni => false,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => {
                std::arch::is_aarch64_feature_detected!("neon") && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[cfg(not(target_arch = "aarch64"))]
            Isa::Neon | Isa::NeonDot => false,
            #[cfg(target_arch = "arm")]
            Isa::Armv7Neon => {
                static NEON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
                *NEON.get_or_init(armv7_neon::detected)
            }
            #[cfg(not(target_arch = "arm"))]
            Isa::Armv7Neon => false,
            // The firmware's interpreter runs it directly (no_std, no table); hosts never do.
            Isa::CortexMDsp => false,
        }
    }

    /// The set's kernels, if this CPU can run them: the only way to reach them, so no kernel
    /// runs an instruction the CPU lacks.
    pub fn kernels(self) -> Result<&'static Kernels, KernelsError> {
        if !self.supported() {
            return Err(KernelsError::Unsupported(self));
        }
        Ok(match self {
            Isa::Reference => &reference::KERNELS,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => &x86_avx2::KERNELS,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86_avx512::kernels().ok_or(KernelsError::Unsupported(self))?,
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512Vnni => return Err(KernelsError::Unsupported(self)),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => &aarch64_neon::KERNELS,
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => &aarch64_dot::KERNELS,
            #[cfg(not(target_arch = "aarch64"))]
            Isa::Neon | Isa::NeonDot => return Err(KernelsError::Unsupported(self)),
            #[cfg(target_arch = "arm")]
            Isa::Armv7Neon => &armv7_neon::KERNELS,
            #[cfg(not(target_arch = "arm"))]
            Isa::Armv7Neon => return Err(KernelsError::Unsupported(self)),
            Isa::CortexMDsp => return Err(KernelsError::Unsupported(self)),
        })
    }

    /// The best set this CPU supports.
    pub fn detect() -> Isa {
        Self::ALL.into_iter().rev().find(|i| i.supported()).unwrap_or(Isa::Reference)
    }

    /// The set to use: `LEPTON_KERNELS` when set (an unknown name or a set this CPU cannot run is
    /// an error, never executed), else [`Isa::detect`].
    pub fn selected() -> Result<Isa, KernelsError> {
        match std::env::var(KERNELS_ENV) {
            Ok(name) if !name.is_empty() => Self::require(&name),
            _ => Ok(Self::detect()),
        }
    }

    /// The set named `name`, if this CPU can run it.
    pub fn require(name: &str) -> Result<Isa, KernelsError> {
        let isa = Self::from_name(name).ok_or_else(|| KernelsError::Unknown(name.to_string()))?;
        if !isa.supported() {
            return Err(KernelsError::Unsupported(isa));
        }
        Ok(isa)
    }
}

impl core::fmt::Display for Isa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a requested kernel set cannot be used.
#[cfg(feature = "host")]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelsError {
    /// No set has this name.
    #[error("{KERNELS_ENV}={0}: no such kernel set (sets: {names})", names = Isa::ALL.map(Isa::name).join(", "))]
    Unknown(String),
    /// The CPU lacks what the set needs.
    #[error("kernel set {0}: this CPU cannot run it (it needs {needs}); unset {KERNELS_ENV} to use the best set it has ({best})", needs = .0.requires(), best = Isa::detect())]
    Unsupported(Isa),
}

#[cfg(feature = "host")]
impl From<KernelsError> for crate::error::LeptonError {
    fn from(e: KernelsError) -> Self {
        crate::error::LeptonError::Kernels { reason: e.to_string() }
    }
}

#[cfg(feature = "host")]
pub use self::table::*;

#[cfg(feature = "host")]
#[allow(unsafe_code)]
mod table {
    //! The frame around the kernel sets (tract-linalg's frame/kernel split): each set's kernels
    //! are `unsafe fn`s that trust their operands and the CPU; the safe entry points here check
    //! every operand's size with overflow-checked arithmetic, once, for every set alike, and a
    //! table of kernels can only be built by `unsafe` code (the sets' own statics) and handed out
    //! by [`Isa::kernels`] after the CPU check.

    use super::prepared::{DepthwisePacked, Epilogue, Gemm, GemmLayout};
    use super::Isa;
    use crate::engine::micro::format::{Binary, Conv, Pool, TensorDesc};
    use crate::engine::micro::ops;
    use crate::quant::Requant;

    /// One kernel set's kernels, what the prepared ops (`prepared.rs`) call for each kind of op; `None` runs
    /// that op with the reference kernel. Only [`Isa::kernels`] hands a table out, after
    /// checking the CPU: holding one is the proof its functions may run.
    #[derive(Debug, Clone, Copy)]
    pub struct Kernels {
        isa: Isa,
        gemm: Option<GemmKernel>,
        depthwise: Option<DepthwiseKernel>,
        lut: Option<LutFn>,
        binary: Option<BinaryFn>,
        global_average: Option<GlobalAverageFn>,
        max_pool: Option<MaxPoolFn>,
    }

    /// `y[i] = table[x[i] + 128]`.
    ///
    /// Contract (what the frame checked): `table.len() == 256`, `y.len() >= x.len()`.
    pub(crate) type LutFn = unsafe fn(&[u8], &[u8], &mut [u8]);
    /// Add (`false`) or multiply (`true`), `b` shaped like `a` or one value per channel.
    ///
    /// Contract: `c = a.shape[3] > 0` divides `len = a.len()`; the `a` and `y` slices hold `len`
    /// bytes, `b` holds `c` (per channel) or `len`.
    #[allow(clippy::type_complexity)]
    pub(crate) type BinaryFn =
        unsafe fn(bool, &Binary, &TensorDesc<'_>, &[u8], &TensorDesc<'_>, &[u8], &TensorDesc<'_>, &mut [u8], bool);
    /// Mean over H and W.
    ///
    /// Contract: `x` holds the input's `n·h·w·c` bytes, `y` `n·c`.
    pub(crate) type GlobalAverageFn = unsafe fn(&Requant, &TensorDesc<'_>, &[u8], &TensorDesc<'_>, &mut [u8]);
    /// Max pooling.
    ///
    /// Contract: `x` holds the input's `n·h·w·c` bytes, `y` `n·oh·ow·c` (`n`, `c` of the input).
    pub(crate) type MaxPoolFn = unsafe fn(&Pool, &TensorDesc<'_>, &[u8], &TensorDesc<'_>, &mut [u8]);
    /// A GEMM micro-kernel.
    ///
    /// Contract: the GEMM was packed for the kernel's layout, `a` holds `rows` packed rows
    /// (`rows·kp·elem_bytes` bytes), `out` holds `rows·n` bytes.
    pub(crate) type GemmFn = unsafe fn(&[u8], usize, &Gemm, &mut [u8]);
    /// Packs depthwise weights `[c][taps]` and the natural-order epilogue for a set's kernel.
    pub(crate) type DepthwisePackFn = fn(&[u8], usize, usize, &Epilogue) -> DepthwisePacked;
    /// A depthwise micro-kernel.
    ///
    /// Contract: input and output are NHWC with the same `n` and `c`, `x` and `y` hold them whole,
    /// the weights were packed by the set's own packer for `c` channels and the op's taps (at
    /// most the kernel's `max_taps`): `⌈c/block⌉·pairs·2·block` weights, `⌈c/block⌉·block` lanes.
    pub(crate) type DepthwiseFn =
        unsafe fn(&Conv<'_>, &TensorDesc<'_>, &TensorDesc<'_>, &[u8], &mut [u8], &DepthwisePacked);

    impl Kernels {
        /// A table of `isa`'s kernels.
        ///
        /// # Safety
        /// Every function given must be sound to call on a CPU for which `isa.supported()` is
        /// true, with operands that meet its type's contract.
        #[allow(clippy::too_many_arguments)]
        pub(super) const unsafe fn new(
            isa: Isa,
            gemm: Option<GemmKernel>,
            depthwise: Option<DepthwiseKernel>,
            lut: Option<LutFn>,
            binary: Option<BinaryFn>,
            global_average: Option<GlobalAverageFn>,
            max_pool: Option<MaxPoolFn>,
        ) -> Self {
            Kernels { isa, gemm, depthwise, lut, binary, global_average, max_pool }
        }

        /// The reference set's table: no optimized kernel (every op runs its reference kernel).
        pub(super) const fn reference() -> Self {
            Kernels {
                isa: Isa::Reference,
                gemm: None,
                depthwise: None,
                lut: None,
                binary: None,
                global_average: None,
                max_pool: None,
            }
        }

        /// The same table without the table-lookup kernel (it runs the reference).
        #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
        pub(super) const fn without_lut(&self) -> Self {
            Kernels { lut: None, ..*self }
        }

        /// The set.
        pub fn isa(&self) -> Isa {
            self.isa
        }

        /// The set's GEMM, if it has one.
        pub(crate) fn gemm(&self) -> Option<&GemmKernel> {
            self.gemm.as_ref()
        }

        /// The set's depthwise convolution, if it has one.
        pub(crate) fn depthwise(&self) -> Option<&DepthwiseKernel> {
            self.depthwise.as_ref()
        }

        /// Whether the set has its own table lookup, add/multiply, global average, max pooling.
        pub(crate) fn has(&self) -> [bool; 4] {
            [self.lut.is_some(), self.binary.is_some(), self.global_average.is_some(), self.max_pool.is_some()]
        }

        /// `y[i] = table[x[i] + 128]` with the set's kernel, else the reference.
        pub(crate) fn lut(&self, table: &[u8], x: &[u8], y: &mut [u8]) {
            assert!(table.len() == 256 && y.len() >= x.len(), "table lookup: operands of other sizes");
            match self.lut {
                // SAFETY: the table came from `Isa::kernels` (CPU checked); sizes asserted above.
                Some(f) => unsafe { f(table, x, y) },
                None => ops::lut::reference(table, x, y),
            }
        }

        /// Add or multiply with the set's kernel, else the reference.
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn binary(
            &self,
            mul: bool,
            op: &Binary,
            (ta, a): (&TensorDesc<'_>, &[u8]),
            (tb, b): (&TensorDesc<'_>, &[u8]),
            (to, y): (&TensorDesc<'_>, &mut [u8]),
            per_channel: bool,
        ) {
            let Some(f) = self.binary else { return ops::binary::reference(mul, op, (ta, a), (tb, b), (to, y)) };
            let c = ta.shape[3] as usize;
            let len = ta.len();
            let b_len = if per_channel { c } else { len };
            assert!(
                c > 0 && len.is_multiple_of(c) && a.len() >= len && y.len() >= len && b.len() >= b_len,
                "add/multiply: operands of other sizes"
            );
            // SAFETY: the table came from `Isa::kernels` (CPU checked); the contract's sizes were
            // asserted above (`len` saturates instead of overflowing, and no slice holds usize::MAX).
            unsafe { f(mul, op, ta, a, tb, b, to, y, per_channel) }
        }

        /// Mean over H and W with the set's kernel, else the reference.
        pub(crate) fn global_average(
            &self,
            rq: &Requant,
            (ti, x): (&TensorDesc<'_>, &[u8]),
            (to, y): (&TensorDesc<'_>, &mut [u8]),
        ) {
            let Some(f) = self.global_average else { return ops::pool::global_average(rq, ti, x, to, y) };
            let out = (ti.shape[0] as usize).checked_mul(ti.shape[3] as usize);
            assert!(
                x.len() >= ti.len() && out.is_some_and(|o| y.len() >= o),
                "global average: operands of other sizes"
            );
            // SAFETY: the table came from `Isa::kernels` (CPU checked); sizes asserted above.
            unsafe { f(rq, ti, x, to, y) }
        }

        /// Max pooling with the set's kernel, else the reference.
        pub(crate) fn max_pool(
            &self,
            p: &Pool,
            (ti, x): (&TensorDesc<'_>, &[u8]),
            (to, y): (&TensorDesc<'_>, &mut [u8]),
        ) {
            let Some(f) = self.max_pool else { return ops::pool::reference(true, p, ti, x, to, y) };
            let [n, _, _, c] = ti.shape.map(|d| d as usize);
            let [_, oh, ow, _] = to.shape.map(|d| d as usize);
            let out = n.checked_mul(oh).and_then(|v| v.checked_mul(ow)).and_then(|v| v.checked_mul(c));
            assert!(x.len() >= ti.len() && out.is_some_and(|o| y.len() >= o), "max pooling: operands of other sizes");
            // SAFETY: the table came from `Isa::kernels` (CPU checked); sizes asserted above.
            unsafe { f(p, ti, x, to, y) }
        }
    }

    /// A set's GEMM: its operand layout and the micro-kernel over packed rows.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct GemmKernel {
        layout: GemmLayout,
        run: GemmFn,
    }

    impl GemmKernel {
        /// A GEMM kernel reading operands in `layout`.
        ///
        /// # Safety
        /// `run` must meet [`GemmFn`]'s contract for GEMMs packed in `layout` (on a CPU that runs
        /// the set whose table holds it).
        pub(super) const unsafe fn new(layout: GemmLayout, run: GemmFn) -> Self {
            GemmKernel { layout, run }
        }

        /// How weights and rows are laid out for the kernel.
        pub fn layout(&self) -> GemmLayout {
            self.layout
        }

        /// Runs the kernel on a GEMM packed for it, `out[rows][n]` from `rows` packed rows.
        pub fn run(&self, a: &[u8], rows: usize, g: &Gemm, out: &mut [u8]) {
            assert_eq!(g.layout(), self.layout, "a GEMM packed for another kernel set");
            let need_a = g.row_bytes(rows);
            let need_out = rows.checked_mul(g.n());
            assert!(
                need_a.is_some_and(|n| a.len() >= n) && need_out.is_some_and(|n| out.len() >= n),
                "GEMM: operands of other sizes"
            );
            // SAFETY: a GemmKernel is only in a table from `Isa::kernels` (CPU checked); the
            // layout and both operand sizes were asserted above, and the GEMM's own parts have the
            // sizes `Gemm::pack` gave them (its fields are private).
            unsafe { (self.run)(a, rows, g, out) }
        }
    }

    /// A set's depthwise convolution: how it packs weights and constants, and the micro-kernel.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct DepthwiseKernel {
        max_taps: usize,
        block: usize,
        pack: DepthwisePackFn,
        run: DepthwiseFn,
    }

    impl DepthwiseKernel {
        /// A depthwise kernel over blocks of `block` channels, at most `max_taps` taps.
        ///
        /// # Safety
        /// `pack` must lay out `⌈c/block⌉·pairs·2·block` weights and `⌈c/block⌉·block` epilogue
        /// lanes for `c` channels, and `run` must meet [`DepthwiseFn`]'s contract for them.
        pub(super) const unsafe fn new(max_taps: usize, block: usize, pack: DepthwisePackFn, run: DepthwiseFn) -> Self {
            DepthwiseKernel { max_taps, block, pack, run }
        }

        /// Most taps (kh·kw) the kernel takes.
        pub fn max_taps(&self) -> usize {
            self.max_taps
        }

        /// Packs weights `[c][taps]` and the natural-order epilogue (acc_init = bias; kernels
        /// accumulate `x - zx`).
        pub fn pack(&self, weights: &[u8], taps: usize, channels: usize, base: &Epilogue) -> DepthwisePacked {
            assert!(taps >= 1 && taps <= self.max_taps, "depthwise: {taps} taps");
            (self.pack)(weights, taps, channels, base)
        }

        /// Runs the kernel.
        pub fn run(
            &self,
            c: &Conv<'_>,
            ti: &TensorDesc<'_>,
            to: &TensorDesc<'_>,
            x: &[u8],
            y: &mut [u8],
            p: &DepthwisePacked,
        ) {
            let [n, _, _, ch] = ti.shape.map(|d| d as usize);
            let [on, oh, ow, oc] = to.shape.map(|d| d as usize);
            let taps = c.kernel[0] as usize * c.kernel[1] as usize;
            let blocks = ch.div_ceil(self.block);
            let weights = blocks.checked_mul(p.pairs()).and_then(|v| v.checked_mul(2 * self.block));
            let out = n.checked_mul(oh).and_then(|v| v.checked_mul(ow)).and_then(|v| v.checked_mul(ch));
            assert!(
                n == on
                    && ch == oc
                    && p.packed_for() == (ch, taps)
                    && (1..=self.max_taps).contains(&taps)
                    && p.pairs() * 2 >= taps
                    && weights.is_some_and(|w| p.weights().len() >= w)
                    && p.epilogue().lanes() >= blocks * self.block
                    && x.len() >= ti.len()
                    && out.is_some_and(|o| y.len() >= o),
                "depthwise: operands of other sizes"
            );
            // SAFETY: a DepthwiseKernel is only in a table from `Isa::kernels` (CPU checked); every
            // part of the contract was asserted above.
            unsafe { (self.run)(c, ti, to, x, y, p) }
        }
    }
}
