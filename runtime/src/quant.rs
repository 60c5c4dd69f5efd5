//! Fixed-point requantization, defined once so integer results are identical on every target.
//!
//! A real multiplier `m` (for example `input_scale * weight_scale / output_scale`) is represented as
//! a Q31 `multiplier` in `[2^30, 2^31)` and a power-of-two `shift`: `m ≈ multiplier * 2^(shift - 31)`.
//! [`requantize`] applies it to an i32 accumulator with round-half-away-from-zero semantics, the
//! arithmetic TFLite Micro and CMSIS-NN use, so results match them bit for bit.

use crate::error::Error;

/// A real multiplier in fixed point: `real ≈ multiplier * 2^(shift - 31)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedMultiplier {
    /// Q31 mantissa in `[2^30, 2^31)`, or 0 for a zero multiplier.
    pub multiplier: i32,
    /// Power-of-two exponent; positive shifts left.
    pub shift: i32,
}

impl FixedMultiplier {
    /// Converts a real multiplier (finite, ≥ 0) to fixed point.
    pub fn from_real(real: f64) -> Result<Self, Error> {
        if !real.is_finite() || real < 0.0 {
            return Err(Error::InvalidScale);
        }
        if real == 0.0 {
            return Ok(FixedMultiplier {
                multiplier: 0,
                shift: 0,
            });
        }
        // real = mantissa * 2^exp with mantissa in [0.5, 1).
        let (mantissa, mut exp) = frexp(real);
        let mut q = libm::round(mantissa * (1u64 << 31) as f64) as i64;
        if q == 1i64 << 31 {
            q /= 2;
            exp += 1;
        }
        if exp < -31 {
            return Ok(FixedMultiplier {
                multiplier: 0,
                shift: 0,
            });
        }
        if exp > 30 {
            return Err(Error::InvalidScale);
        }
        Ok(FixedMultiplier {
            multiplier: q as i32,
            shift: exp,
        })
    }

    /// The real value this represents.
    pub fn to_real(self) -> f64 {
        self.multiplier as f64 * libm::pow(2.0, (self.shift - 31) as f64)
    }
}

/// Splits a positive finite `x` into `(mantissa, exp)` with `x = mantissa * 2^exp`, mantissa in [0.5, 1).
fn frexp(x: f64) -> (f64, i32) {
    let mut exp = libm::ceil(libm::log2(x)) as i32;
    let mut m = x * libm::pow(2.0, -exp as f64);
    // Correct the estimate where log2 rounds across a power of two.
    while m >= 1.0 {
        m /= 2.0;
        exp += 1;
    }
    while m < 0.5 {
        m *= 2.0;
        exp -= 1;
    }
    (m, exp)
}

/// `(a * b * 2) >> 32` with rounding, saturating the single overflow case (`i32::MIN * i32::MIN`).
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Division truncates toward zero (not an arithmetic shift), as in gemmlowp and TFLite.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent`, rounded half away from zero.
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    debug_assert!(exponent <= 31);
    if exponent == 0 {
        return x;
    }
    let mask = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// Multiplies an accumulator by a fixed-point multiplier (two roundings, as TFLite: within 1 of exact).
#[inline]
pub fn requantize(acc: i32, m: FixedMultiplier) -> i32 {
    let left = m.shift.max(0) as u32;
    let right = (-m.shift).max(0) as u32;
    let shifted = acc.saturating_mul(1i32.checked_shl(left).unwrap_or(i32::MAX));
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(shifted, m.multiplier),
        right,
    )
}

/// Requantizes an accumulator, adds the output zero point and saturates to `[min, max]`.
#[inline]
pub fn requantize_to_i8(acc: i32, m: FixedMultiplier, zero_point: i32, min: i8, max: i8) -> i8 {
    requantize(acc, m)
        .saturating_add(zero_point)
        .clamp(min as i32, max as i32) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplier_round_trips_within_q31_precision() {
        for &r in &[1.0, 0.5, 0.75, 0.003_921_568_6, 1.9e-4, 3.5, 1e-9, 123.456] {
            let m = FixedMultiplier::from_real(r).unwrap();
            let rel = ((m.to_real() - r) / r).abs();
            assert!(rel < 1e-9 || r < 1e-9, "{r}: {m:?} -> {}", m.to_real());
            if m.multiplier != 0 {
                assert!(m.multiplier >= 1 << 30);
            }
        }
        assert_eq!(FixedMultiplier::from_real(-1.0), Err(Error::InvalidScale));
        assert_eq!(
            FixedMultiplier::from_real(f64::NAN),
            Err(Error::InvalidScale)
        );
    }

    #[test]
    fn rounding_divide_rounds_half_away_from_zero() {
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(4, 1), 2);
        assert_eq!(rounding_divide_by_pot(-7, 2), -2);
        assert_eq!(rounding_divide_by_pot(6, 2), 2);
    }

    #[test]
    fn requantize_matches_real_arithmetic() {
        for &real in &[0.5, 0.0123, 0.999, 2.5, 1.0 / 3.0] {
            let m = FixedMultiplier::from_real(real).unwrap();
            for acc in (-100_000..100_000).step_by(997) {
                let exact = acc as f64 * real;
                let got = requantize(acc, m) as f64;
                // Two roundings (high multiply, then the power-of-two divide), as in TFLite.
                assert!(
                    (got - exact).abs() <= 1.0,
                    "acc {acc} x {real}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn requantize_to_i8_saturates() {
        let m = FixedMultiplier::from_real(1.0).unwrap();
        assert_eq!(requantize_to_i8(1000, m, 0, -128, 127), 127);
        assert_eq!(requantize_to_i8(-1000, m, 0, -128, 127), -128);
        assert_eq!(requantize_to_i8(10, m, 5, 0, 127), 15);
        assert_eq!(requantize_to_i8(-10, m, 5, 0, 127), 0);
    }
}
