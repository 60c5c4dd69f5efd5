//! Optimized kernels of the micro engine, prepared once per model on a host: weights repacked for
//! the vector units, per-channel constants expanded. Each computes exactly what the reference
//! kernel in `ops/` defines — integer accumulation is exact and the requantization is the same
//! fixed-point step — so results are identical bit for bit; tests check every kernel against the
//! reference. Ops without an optimized kernel run the reference.

#[cfg(feature = "std")]
pub mod prepared;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub mod x86;
