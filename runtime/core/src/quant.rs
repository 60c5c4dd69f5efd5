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

    /// `value × real` as TFLite's reference kernels round it (`MultiplyByQuantizedMultiplier`:
    /// a doubling high multiply rounded half up, then a rounding right shift by `shift - 31`
    /// rounding halves away from zero). The two roundings make one: the product plus
    /// `2^(shift-1)`, plus `2^30` for a product ≥ 0 or minus it for a negative one, shifted
    /// right by `shift`; with `shift ≤ 31` there is no second rounding, and it equals
    /// [`apply`](Self::apply).
    #[inline(always)]
    pub fn apply_tflite(self, value: i64) -> i64 {
        let p = value * self.multiplier as i64;
        if self.shift <= 31 {
            return round_shift(p, self.shift);
        }
        let bias = if p < 0 { -(1i64 << 30) } else { 1i64 << 30 };
        (p + (1i64 << (self.shift - 1)) + bias) >> self.shift
    }

    /// [`apply`](Self::apply) or [`apply_tflite`](Self::apply_tflite), as `rounding` says.
    #[inline(always)]
    pub fn apply_with(self, rounding: Rounding, value: i64) -> i64 {
        match rounding {
            Rounding::HalfUp => self.apply(value),
            Rounding::Tflite => self.apply_tflite(value),
        }
    }
}

/// How a convolution's or fully connected layer's requantization rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// One rounding, halves up: Lepton's own (models compiled from ONNX).
    HalfUp,
    /// TFLite's reference arithmetic ([`Requant::apply_tflite`]): models read from `.tflite`
    /// files, so their results equal LiteRT's bit for bit.
    Tflite,
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

    /// TFLite's two steps as its reference defines them, on 32-bit values: the doubling high
    /// multiply (`(a·b + 2^30) / 2^31`, the quotient truncated toward zero after a nudge of
    /// `1 - 2^30` for negative products) and the rounding divide by a power of two (halves away
    /// from zero).
    fn tflite_two_steps(x: i32, multiplier: i32, right: u32) -> i64 {
        let ab = x as i64 * multiplier as i64;
        let nudge = if ab >= 0 { 1i64 << 30 } else { 1 - (1i64 << 30) };
        let high = (ab + nudge) / (1i64 << 31);
        let mask = (1i64 << right) - 1;
        let remainder = high & mask;
        let threshold = (mask >> 1) + i64::from(high < 0);
        (high >> right) + i64::from(remainder > threshold)
    }

    #[test]
    fn tflite_rounding_equals_its_two_steps() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for &r in &[0.5, 0.25, 0.0123, 0.999, 1.0 / 3.0, 7.3e-4, 2.0f64.powi(-9), 0.75, 1.5, 3.0] {
            let q = Requant::from_real(r).unwrap();
            let right = q.shift.saturating_sub(31) as u32;
            for _ in 0..20_000 {
                let x = match next() % 4 {
                    0 => (next() % 2001) as i32 - 1000,
                    _ => (next() % (1 << 24)) as i32 - (1 << 23),
                };
                if q.shift < 31 {
                    // A left shift first: TFLite multiplies x by 2^(31 - shift) in 32 bits.
                    let left = 31 - q.shift as u32;
                    let Some(xl) = x.checked_mul(1 << left) else { continue };
                    assert_eq!(q.apply_tflite(x as i64), tflite_two_steps(xl, q.multiplier, 0), "{x} x {r}");
                } else {
                    assert_eq!(q.apply_tflite(x as i64), tflite_two_steps(x, q.multiplier, right), "{x} x {r}");
                }
            }
        }
        // Where the two roundings differ from one: a product just under a half, lifted to it.
        let q = Requant { multiplier: 1 << 30, shift: 33 };
        // 3/8: the high multiply gives 2 (quarters), a half, rounded away from zero.
        assert_eq!((q.apply(3), q.apply_tflite(3)), (0, 1));
        // -4/8: a half below zero, away from zero.
        assert_eq!((q.apply(-4), q.apply_tflite(-4)), (0, -1));
    }

    #[test]
    fn saturate_clamps_after_the_zero_point() {
        assert_eq!(saturate(1000, 0, -128, 127), 127);
        assert_eq!(saturate(-1000, 0, -128, 127), -128);
        assert_eq!(saturate(10, 5, 0, 127), 15);
        assert_eq!(saturate(-10, 5, 0, 127), 0);
    }
}
