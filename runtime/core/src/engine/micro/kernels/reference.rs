//! The reference set: the portable kernels of `ops/` (one module per operator, plain integer
//! loops, no_std), the oracle every other set is held to bit for bit. Its table is empty: every
//! op runs its reference kernel.

#[cfg(feature = "host")]
/// The reference set's table: no optimized kernel.
pub(crate) static KERNELS: super::Kernels = super::Kernels::reference();
