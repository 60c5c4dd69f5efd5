//! Elementwise add and multiply with broadcasting of `b` over `a`.
//!
//! Add: `out = sat(zy + round_shift((a - za)·ma + (b - zb)·mb, shift))` (one shared shift).
//! Mul: `out = sat(zy + ma((a - za)·(b - zb)))`.

use crate::engine::micro::format::{Binary, TensorDesc};
use crate::quant::{round_shift, saturate};

/// Checks that `b` broadcasts to `a` and the output is shaped like `a`.
pub fn validate(
    mul: bool,
    op: &Binary,
    a: &TensorDesc<'_>,
    b: &TensorDesc<'_>,
    o: &TensorDesc<'_>,
) -> Result<(), &'static str> {
    super::conv::requant_fits(op.ma)?;
    if !mul && op.mb.shift != op.ma.shift {
        return Err("an add's two multipliers must share their shift");
    }
    super::conv::clamp_fits(op.clamp)?;
    if a.shape != o.shape {
        return Err("output must be shaped like the first operand");
    }
    if a.shape.iter().zip(b.shape).any(|(&x, y)| y != x && y != 1) {
        return Err("second operand does not broadcast to the first");
    }
    Ok(())
}

/// The reference kernel.
pub fn reference(
    mul: bool,
    op: &Binary,
    a: (&TensorDesc<'_>, &[u8]),
    b: (&TensorDesc<'_>, &[u8]),
    out: (&TensorDesc<'_>, &mut [u8]),
) {
    let (ta, xa) = a;
    let (tb, xb) = b;
    let (to, y) = out;
    let s = ta.shape.map(|d| d as usize);
    let bs = tb.shape.map(|d| d as usize);
    // Strides of b, 0 along broadcast axes.
    let mut stride = [0usize; 4];
    let mut acc = 1;
    for k in (0..4).rev() {
        stride[k] = if bs[k] == 1 { 0 } else { acc };
        acc *= bs[k];
    }
    let mut i = 0;
    for d0 in 0..s[0] {
        for d1 in 0..s[1] {
            for d2 in 0..s[2] {
                let base = d0 * stride[0] + d1 * stride[1] + d2 * stride[2];
                for d3 in 0..s[3] {
                    let va = xa[i] as i8 as i64 - ta.zero_point as i64;
                    let vb = xb[base + d3 * stride[3]] as i8 as i64 - tb.zero_point as i64;
                    let v = if mul {
                        op.ma.apply(va * vb)
                    } else {
                        round_shift(va * op.ma.multiplier as i64 + vb * op.mb.multiplier as i64, op.ma.shift)
                    };
                    y[i] = saturate(v, to.zero_point, op.clamp[0], op.clamp[1]) as u8;
                    i += 1;
                }
            }
        }
    }
}
