//! Fixed-point requantization, defined once so integer results are identical on every target.
//!
//! A real multiplier `r` (for a convolution `input_scale × weight_scale / output_scale`) is stored
//! as an integer `multiplier` and a right `shift`: `r ≈ multiplier / 2^shift`, with the multiplier
//! in `[2^30, 2^31)` for full precision. Applying it to an accumulator is exact 64-bit integer
//! arithmetic with one rounding (half up): `(acc × multiplier + 2^(shift-1)) >> shift`. SIMD
//! kernels compute the same expression lane by lane, so every implementation agrees bit for bit.

use crate::error::Error;
use serde::{Deserialize, Serialize};

/// A real multiplier in fixed point: `real ≈ multiplier / 2^shift`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requant {
    /// Mantissa, in `[2^30, 2^31)` (or 0 for a zero multiplier).
    pub multiplier: i32,
    /// Right shift, 1..=62.
    pub shift: u8,
}

impl Requant {
    /// Converts a real multiplier (finite, ≥ 0, < 2^30) to fixed point.
    pub fn from_real(real: f64) -> Result<Self, Error> {
        if !real.is_finite() || real < 0.0 || real >= (1u64 << 30) as f64 {
            return Err(Error::InvalidScale);
        }
        if real == 0.0 {
            return Ok(Requant { multiplier: 0, shift: 1 });
        }
        // Largest shift keeping the multiplier below 2^31.
        let mut shift = 31 - (libm::ceil(libm::log2(real)) as i32).max(-31);
        let mut m = libm::round(real * libm::pow(2.0, shift as f64)) as i64;
        while m >= 1i64 << 31 {
            shift -= 1;
            m = libm::round(real * libm::pow(2.0, shift as f64)) as i64;
        }
        while m < 1i64 << 30 && shift < 62 {
            shift += 1;
            m = libm::round(real * libm::pow(2.0, shift as f64)) as i64;
        }
        if shift < 1 {
            return Err(Error::InvalidScale);
        }
        Ok(Requant { multiplier: m as i32, shift: shift as u8 })
    }

    /// The real value this represents.
    pub fn to_real(self) -> f64 {
        self.multiplier as f64 / libm::pow(2.0, self.shift as f64)
    }

    /// `round(value × real)`, rounding halves up.
    #[inline(always)]
    pub fn apply(self, value: i64) -> i64 {
        round_shift(value * self.multiplier as i64, self.shift)
    }
}

/// `value / 2^shift` rounded half up (shift ≥ 1).
#[inline(always)]
pub fn round_shift(value: i64, shift: u8) -> i64 {
    (value + (1i64 << (shift - 1))) >> shift
}

/// Adds the zero point and saturates to `[min, max]` (an activation's clamp within int8).
#[inline(always)]
pub fn saturate(value: i64, zero_point: i32, min: i8, max: i8) -> i8 {
    (value + zero_point as i64).clamp(min as i64, max as i64) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplier_round_trips_with_full_precision() {
        for &r in &[1.0, 0.5, 0.75, 0.003_921_568_6, 1.9e-4, 3.5, 1e-9, 123.456, 1.0 / 3.0] {
            let q = Requant::from_real(r).unwrap();
            assert!((q.to_real() - r).abs() / r < 1e-9, "{r}: {q:?}");
            assert!(q.multiplier >= 1 << 30, "{r}: {q:?}");
        }
        assert_eq!(Requant::from_real(-1.0), Err(Error::InvalidScale));
        assert_eq!(Requant::from_real(f64::NAN), Err(Error::InvalidScale));
        assert_eq!(Requant::from_real(0.0).unwrap().apply(12345), 0);
    }

    #[test]
    fn apply_rounds_half_up_and_matches_real_arithmetic() {
        let half = Requant::from_real(0.5).unwrap();
        assert_eq!((half.apply(5), half.apply(-5), half.apply(4)), (3, -2, 2));
        for &r in &[0.5, 0.0123, 0.999, 2.5, 1.0 / 3.0, 7.3e-4] {
            let q = Requant::from_real(r).unwrap();
            for acc in (-2_000_000i64..2_000_000).step_by(9973) {
                let exact = acc as f64 * r;
                let got = q.apply(acc) as f64;
                assert!((got - exact).abs() <= 0.5 + 1e-6, "acc {acc} x {r}: {got} vs {exact}");
            }
        }
    }

    #[test]
    fn saturate_clamps_after_the_zero_point() {
        assert_eq!(saturate(1000, 0, -128, 127), 127);
        assert_eq!(saturate(-1000, 0, -128, 127), -128);
        assert_eq!(saturate(10, 5, 0, 127), 15);
        assert_eq!(saturate(-10, 5, 0, 127), 0);
    }
}
