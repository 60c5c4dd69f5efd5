//! Fully connected layer: `out[n, co] = sat(zy + rq[co](bias[co] + Σ (x[n, ci] - zx) · w[co, ci]))`.

use crate::engine::micro::format::{i32_at, requant_at, rounding, FullyConnected, TensorDesc};
use crate::quant::saturate;

/// Checks shapes and table sizes.
pub fn validate(f: &FullyConnected<'_>, i: &TensorDesc<'_>, o: &TensorDesc<'_>) -> Result<(), &'static str> {
    let n = i.shape[0] as usize;
    if n == 0 || o.shape[0] as usize != n || !i.len().is_multiple_of(n) || !o.len().is_multiple_of(n) {
        return Err("input and output batches differ");
    }
    let (cin, cout) = (i.len() / n, o.len() / n);
    if Some(f.weights.len()) != cin.checked_mul(cout)
        || Some(f.bias.len()) != cout.checked_mul(4)
        || Some(f.requant.len()) != cout.checked_mul(5)
    {
        return Err("weights, bias or requantization sizes do not match the tensors");
    }
    super::conv::requant_table_fits(f.requant, cout)?;
    super::conv::clamp_fits(f.clamp)?;
    super::conv::weights_fit(f.weights)?;
    super::conv::accumulator_fits(cin, f.bias)
}

/// The reference kernel.
pub fn reference(f: &FullyConnected<'_>, ti: &TensorDesc<'_>, x: &[u8], to: &TensorDesc<'_>, y: &mut [u8]) {
    let n = ti.shape[0] as usize;
    let (cin, cout) = (ti.len() / n, to.len() / n);
    let rounding = rounding(f.requant);
    for b in 0..n {
        for co in 0..cout {
            let mut acc = i32_at(f.bias, co);
            for ci in 0..cin {
                acc += (x[b * cin + ci] as i8 as i32 - ti.zero_point) * f.weights[co * cin + ci] as i8 as i32;
            }
            let v = requant_at(f.requant, co).apply_with(rounding, acc as i64);
            y[b * cout + co] = saturate(v, to.zero_point, f.clamp[0], f.clamp[1]) as u8;
        }
    }
}
