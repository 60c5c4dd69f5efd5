//! Fusion passes over the lowered ops: ReLU/ReLU6 tables folded into the clamp of the
//! convolution or fully connected layer they follow.

#[allow(unused_imports)]
use super::*;

/// Greedy arena plan: tensors whose lifetimes overlap get disjoint byte ranges (16-byte aligned).
/// A real value in tensor `t`'s int8 quantization (round half to even, saturated).
pub(super) fn quantize_real(v: f64, t: &T) -> i8 {
    ((v / t.scale as f64).round_ties_even() + t.zero_point as f64).clamp(-128.0, 127.0) as i8
}

/// The activation a lookup table applies, when it is a clamp of the real value (ReLU, ReLU6, Clip)
/// from tensor `x` to tensor `y`: the real bounds `(lo, hi)`.
pub(super) fn clamp_of(table: &[u8], x: &T, y: &T) -> Option<(f64, f64)> {
    let quant = |v: f64| quantize_real(v, y);
    let reals: Vec<f64> = (-128i32..=127).map(|q| (q - x.zero_point) as f64 * x.scale as f64).collect();
    [(0.0, f64::INFINITY), (0.0, 6.0)].into_iter().find(|&(lo, hi)| {
        reals.iter().zip(table).all(|(&r, &t)| {
            let want = quant(r.clamp(lo, hi));
            // The table rounds in f32; allow its last-bit ties.
            (i16::from(want) - i16::from(t as i8)).abs() <= 1
        })
    })
}

/// Folds a ReLU/ReLU6 table that is the only reader of a Conv or FullyConnected output into that
/// layer: the layer requantizes straight to the activation's output and clamps (TFLite's fused
/// activations). One rounding instead of two, one tensor fewer alive: the arena shrinks.
pub(super) fn fuse_activations(
    tensors: &[T],
    specs: &mut Vec<(Spec, String)>,
    outputs: &[u16],
) -> Result<(), LowerError> {
    let mut i = 0;
    while i + 1 < specs.len() {
        let (Spec::Lut { input, output, table }, _) = &specs[i + 1] else {
            i += 1;
            continue;
        };
        let (mid, out) = (*input, *output);
        let layer_writes_mid = matches!(&specs[i].0, Spec::Conv { c, .. } if c.output == mid)
            || matches!(&specs[i].0, Spec::Fc { output, .. } if *output == mid);
        let readers = specs.iter().filter(|(s, _)| s.reads().contains(&mid)).count();
        let bounds = clamp_of(table, &tensors[mid as usize], &tensors[out as usize]);
        let (Some((lo, hi)), true, 1, false) = (bounds, layer_writes_mid, readers, outputs.contains(&mid)) else {
            i += 1;
            continue;
        };
        let (ym, yo) = (&tensors[mid as usize], &tensors[out as usize]);
        let new_clamp = [quantize_real(lo, yo), if hi.is_finite() { quantize_real(hi, yo) } else { 127 }];
        let ratio = ym.scale as f64 / yo.scale as f64;
        let name = specs[i].1.clone();
        match &mut specs[i].0 {
            Spec::Conv { c, requant, reals, clamp, .. } => {
                c.output = out;
                fold(requant, reals, clamp, ratio, new_clamp, &name)?;
            }
            Spec::Fc { output, requant, reals, clamp, .. } => {
                *output = out;
                fold(requant, reals, clamp, ratio, new_clamp, &name)?;
            }
            _ => unreachable!("checked above"),
        }
        specs.remove(i + 1);
        i += 1;
    }
    Ok(())
}

/// Rescales a layer's requantization by `ratio` and sets its clamp.
pub(super) fn fold(
    requant: &mut Vec<u8>,
    reals: &mut [f64],
    clamp: &mut [i8; 2],
    ratio: f64,
    new_clamp: [i8; 2],
    name: &str,
) -> Result<(), LowerError> {
    let mut table = vec![];
    for r in reals.iter_mut() {
        *r *= ratio;
        let q = Requant::from_real(*r)
            .map_err(|_| LowerError::Model(format!("`{name}`: requantization multiplier {r} out of range")))?;
        table.extend_from_slice(&q.multiplier.to_le_bytes());
        table.push(q.shift);
    }
    *requant = table;
    *clamp = new_clamp;
    Ok(())
}

/// Composes a table with the table that computes its input, when nothing else reads that
/// intermediate tensor (a slice's requantization followed by a sigmoid): one lookup, the same
/// bytes out (`b[a[x]]` is what the two lookups give).
pub(super) fn fuse_tables(specs: &mut Vec<(Spec, String)>, outputs: &[u16]) {
    let mut j = 0;
    while j < specs.len() {
        let Spec::Lut { input: mid, .. } = specs[j].0 else {
            j += 1;
            continue;
        };
        let writer = specs[..j].iter().rposition(|(s, _)| s.writes() == mid);
        let readers = specs.iter().filter(|(s, _)| s.reads().contains(&mid)).count();
        let (Some(i), 1, false) = (writer, readers, outputs.contains(&mid)) else {
            j += 1;
            continue;
        };
        let Spec::Lut { input: first, table: a, .. } = &specs[i].0 else {
            j += 1;
            continue;
        };
        let (first, a) = (*first, a.clone());
        if let Spec::Lut { input, table, .. } = &mut specs[j].0 {
            *table = a.iter().map(|&v| table[(v ^ 0x80) as usize]).collect();
            *input = first;
        }
        specs.remove(i);
        // The fused table is now at `j - 1`: it may compose with the table before it too.
        j -= 1;
    }
}
