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

#[cfg(all(feature = "host", target_arch = "aarch64"))]
mod aarch64_dot;
#[cfg(all(feature = "host", target_arch = "aarch64"))]
mod aarch64_neon;
#[cfg(all(feature = "host", target_arch = "arm"))]
mod armv7_neon;
#[cfg(lepton_dsp)]
pub mod cortex_m_dsp;
#[cfg(feature = "host")]
pub mod prepared;
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
            Isa::Avx512Vnni => x86_avx512::kernels(),
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
pub use self::table::*;

#[cfg(feature = "host")]
mod table {
    use super::prepared::{DepthwisePacked, Epilogue, Gemm, GemmLayout};
    use super::Isa;
    use crate::engine::micro::format::{Binary, Conv, Pool, TensorDesc};
    use crate::quant::Requant;

    /// One kernel set's kernels, what [`super::prepared`] calls for each kind of op; `None` runs
    /// that op with the reference kernel. Only [`Isa::kernels`] hands a table out, after
    /// checking the CPU: holding one is the proof its functions may run.
    #[derive(Debug)]
    pub struct Kernels {
        /// The set.
        pub isa: Isa,
        pub(crate) gemm: Option<GemmKernel>,
        pub(crate) depthwise: Option<DepthwiseKernel>,
        pub(crate) lut: Option<LutFn>,
        pub(crate) binary: Option<BinaryFn>,
        pub(crate) global_average: Option<GlobalAverageFn>,
        pub(crate) max_pool: Option<MaxPoolFn>,
    }

    /// `y[i] = table[x[i] + 128]`.
    pub(crate) type LutFn = fn(&[u8], &[u8], &mut [u8]);
    /// Add (`false`) or multiply (`true`), `b` shaped like `a` or one value per channel.
    #[allow(clippy::type_complexity)]
    pub(crate) type BinaryFn =
        fn(bool, &Binary, &TensorDesc<'_>, &[u8], &TensorDesc<'_>, &[u8], &TensorDesc<'_>, &mut [u8], bool);
    /// Mean over H and W.
    pub(crate) type GlobalAverageFn = fn(&Requant, &TensorDesc<'_>, &[u8], &TensorDesc<'_>, &mut [u8]);
    /// Max pooling.
    pub(crate) type MaxPoolFn = fn(&Pool, &TensorDesc<'_>, &[u8], &TensorDesc<'_>, &mut [u8]);

    /// A set's GEMM: its operand layout and the kernel over packed rows.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct GemmKernel {
        /// How weights and rows are laid out for `run`.
        pub layout: GemmLayout,
        /// `out[rows][n]` from `rows` packed rows and the packed weights.
        pub run: fn(&[u8], usize, &Gemm, &mut [u8]),
    }

    impl GemmKernel {
        /// Runs the kernel on a GEMM packed for it.
        pub fn run(&self, a: &[u8], rows: usize, g: &Gemm, out: &mut [u8]) {
            assert_eq!(g.layout, self.layout, "a GEMM packed for another kernel set");
            (self.run)(a, rows, g, out)
        }
    }

    /// A set's depthwise convolution: how it packs weights and constants, and the kernel.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct DepthwiseKernel {
        /// Most taps (kh·kw) the kernel takes.
        pub max_taps: usize,
        /// Packs weights `[c][taps]` and the natural-order epilogue (acc_init = bias; kernels accumulate `x - zx`).
        pub pack: fn(&[u8], usize, usize, &Epilogue) -> DepthwisePacked,
        /// The convolution.
        pub run: fn(&Conv<'_>, &TensorDesc<'_>, &TensorDesc<'_>, &[u8], &mut [u8], &DepthwisePacked),
    }

    impl DepthwiseKernel {
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
            (self.run)(c, ti, to, x, y, p)
        }
    }
}
