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

#[cfg(feature = "std")]
pub mod prepared;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub mod x86;

/// A kernel set: the instruction-set extension the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Portable reference kernels only (every CPU).
    Reference,
    /// x86-64 AVX-512 with VNNI (Ice Lake and later, Zen 4 and later).
    Avx512Vnni,
}

/// Environment variable that forces a kernel set.
pub const KERNELS_ENV: &str = "LEPTON_KERNELS";

impl Isa {
    /// Every kernel set, reference first.
    pub const ALL: [Isa; 2] = [Isa::Reference, Isa::Avx512Vnni];

    /// The set's name, as `LEPTON_KERNELS` and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Reference => "reference",
            Isa::Avx512Vnni => "avx512vnni",
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
            Isa::Avx512Vnni => "x86-64 avx512f avx512bw avx512dq avx512vl avx512vnni",
        }
    }
}

#[cfg(feature = "std")]
impl Isa {
    /// Whether this CPU can run the set.
    pub fn supported(self) -> bool {
        match self {
            Isa::Reference => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512dq")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512Vnni => false,
        }
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
#[cfg(feature = "std")]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelsError {
    /// No set has this name.
    #[error("{KERNELS_ENV}={0}: no such kernel set (sets: {names})", names = Isa::ALL.map(Isa::name).join(", "))]
    Unknown(String),
    /// The CPU lacks what the set needs.
    #[error("kernel set {0}: this CPU cannot run it (it needs {needs}); unset {KERNELS_ENV} to use the best set it has ({best})", needs = .0.requires(), best = Isa::detect())]
    Unsupported(Isa),
}
