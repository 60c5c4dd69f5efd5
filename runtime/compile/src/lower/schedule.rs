//! Operator scheduling for a smaller arena (`lepton-convert compile --max-arena`): a convolution
//! whose output only the next op reads, itself a convolution, runs with it in horizontal bands —
//! the first computes the rows of its output that one band of the second's output needs, into a
//! small buffer, then the second computes that band — so the intermediate tensor is never whole
//! in the arena. Bands read and write rows of the tensors around them in place (views); rows two
//! bands both need are computed twice, and each band op carries its own copy of the weights:
//! flash and a few MACs for RAM. Results are bit for bit those of the unbanded model.

#[allow(unused_imports)]
use super::*;

/// Where each tensor lives when it is a run of rows of another: (base tensor, byte offset).
pub(super) type Views = Vec<Option<(usize, u32)>>;

/// What banding did to the model.
#[derive(Debug, Clone, Default)]
pub struct Banding {
    /// Pairs of convolutions run in bands: (first node, second node, bands).
    pub pairs: Vec<(String, String, usize)>,
    /// MACs added by rows computed twice.
    pub extra_macs: u64,
}

/// Bands convolution pairs, the one with the largest intermediate tensor first, until the arena
/// fits `limit` bytes. Errs with the smallest arena it reached when it cannot.
pub(super) fn fit(
    tensors: &mut Vec<T>,
    specs: &mut Vec<(Spec, String)>,
    inputs: &[u16],
    outputs: &[u16],
    limit: usize,
) -> Result<(Views, Banding), LowerError> {
    let mut views: Views = vec![None; tensors.len()];
    let mut banding = Banding::default();
    // Pairs (by their first op's node) banding did not help: not tried again.
    let mut tried: Vec<String> = vec![];
    loop {
        let (_, arena) = plan::plan(tensors, specs, inputs, outputs, &views);
        if arena <= limit {
            return Ok((views, banding));
        }
        let candidate = (0..specs.len().saturating_sub(1))
            .filter(|&k| !tried.contains(&specs[k].1) && bandable(tensors, specs, outputs, &views, k))
            .max_by_key(|&k| match &specs[k].0 {
                Spec::Conv { c, .. } => tensors[c.output as usize].len(),
                _ => 0,
            });
        let Some(k) = candidate else {
            return Err(LowerError::Model(format!(
                "the arena needs {arena} bytes, more than --max-arena {limit}: no more convolution pairs to run in bands"
            )));
        };
        // The fewest bands (least duplication) that fit, else the smallest arena this pair gives.
        let rows = out_rows(tensors, specs, k);
        let mut best: Option<(usize, usize)> = None; // (arena, rows per band)
        for per_band in (1..rows).rev() {
            let (mut t, mut s, mut v) = (tensors.clone(), specs.clone(), views.clone());
            band(&mut t, &mut s, &mut v, k, per_band);
            let (_, a) = plan::plan(&t, &s, inputs, outputs, &v);
            if best.is_none_or(|(b, _)| a < b) {
                best = Some((a, per_band));
            }
            if a <= limit {
                break;
            }
        }
        let (first, second) = (specs[k].1.clone(), specs[k + 1].1.clone());
        let bands = match best {
            Some((a, per_band)) if a < arena => band(tensors, specs, &mut views, k, per_band),
            _ => (0, 0),
        };
        match bands {
            (0, _) => tried.push(first),
            (count, extra) => {
                banding.pairs.push((first, second, count));
                banding.extra_macs += extra;
            }
        }
    }
}

/// Output rows of the second convolution of pair `k`.
fn out_rows(tensors: &[T], specs: &[(Spec, String)], k: usize) -> usize {
    match &specs[k + 1].0 {
        Spec::Conv { c, .. } => tensors[c.output as usize].shape[1] as usize,
        _ => 0,
    }
}

/// Whether ops `k` and `k + 1` are a convolution feeding only a convolution, on plain NHWC
/// tensors of one image, with an intermediate tensor of at least two rows, neither of them a band
/// already (a band reads rows of its input as a view).
fn bandable(tensors: &[T], specs: &[(Spec, String)], outputs: &[u16], views: &Views, k: usize) -> bool {
    let (Spec::Conv { c: a, .. }, Spec::Conv { c: b, .. }) = (&specs[k].0, &specs[k + 1].0) else {
        return false;
    };
    let x = a.output;
    let readers = specs.iter().filter(|(s, _)| s.reads().contains(&x)).count();
    let plain = |id: u16| {
        let t = &tensors[id as usize];
        t.shape[0] == 1 && t.channels.is_empty() && matches!(t.layout, Layout::Plain)
    };
    b.input == x
        && readers == 1
        && !outputs.contains(&x)
        && views[x as usize].is_none()
        && views[a.input as usize].is_none()
        && [a.input, x, b.output].into_iter().all(plain)
        && tensors[b.output as usize].shape[1] >= 2
}

/// A tensor that is rows `[r0, r1)` of `base` (composed when `base` is itself a view).
fn rows_of(tensors: &mut Vec<T>, views: &mut Views, base: u16, r0: usize, r1: usize) -> u16 {
    let t = &tensors[base as usize];
    let row_bytes = (t.shape[2] * t.shape[3]) as usize;
    let mut v = t.clone();
    v.name = format!("{}[rows {r0}..{r1}]", t.name);
    v.shape[1] = (r1 - r0) as u32;
    let (root, offset) = views[base as usize].unwrap_or((base as usize, 0));
    tensors.push(v);
    views.push(Some((root, offset + (r0 * row_bytes) as u32)));
    (tensors.len() - 1) as u16
}

/// Input rows `[i0, i1)` (clamped to the input) and the padding `[top, bottom]` a convolution
/// needs for its output rows `[o0, o1)`.
fn needs(c: &ConvParams, height: usize, o0: usize, o1: usize) -> (usize, usize, [u16; 2]) {
    let span = (c.kernel[0] as isize - 1) * c.dilation[0] as isize + 1;
    let first = (o0 * c.stride[0] as usize) as isize - c.pad[0] as isize;
    let end = ((o1 - 1) * c.stride[0] as usize) as isize - c.pad[0] as isize + span;
    let (i0, i1) = (first.max(0), end.min(height as isize));
    (i0 as usize, i1 as usize, [(i0 - first) as u16, (end - i1) as u16])
}

/// Replaces ops `k` (A) and `k + 1` (B) by bands of `per_band` rows of B's output; returns the
/// bands and the MACs added by A's rows computed twice.
fn band(
    tensors: &mut Vec<T>,
    specs: &mut Vec<(Spec, String)>,
    views: &mut Views,
    k: usize,
    per_band: usize,
) -> (usize, u64) {
    let (a_spec, a_name) = specs[k].clone();
    let (b_spec, b_name) = specs[k + 1].clone();
    let (Spec::Conv { c: a, .. }, Spec::Conv { c: b, .. }) = (&a_spec, &b_spec) else {
        return (0, 0);
    };
    let (a, b) = (*a, *b);
    let (hi, hx, hy) = (
        tensors[a.input as usize].shape[1] as usize,
        tensors[a.output as usize].shape[1] as usize,
        tensors[b.output as usize].shape[1] as usize,
    );
    let x = tensors[a.output as usize].clone();
    let macs_per_row = {
        let w = match &a_spec {
            Spec::Conv { weights, .. } => weights.len() as u64,
            _ => 0,
        };
        w * x.shape[2] as u64
    };
    // Every band must read at least one row of each tensor (an output row made only of padding
    // cannot be a band of its own): otherwise leave the pair whole.
    let mut r0 = 0;
    while r0 < hy {
        let r1 = (r0 + per_band).min(hy);
        let (x0, x1, _) = needs(&b, hx, r0, r1);
        let (i0, i1, _) = needs(&a, hi, x0, x1.max(x0 + 1));
        if x1 <= x0 || i1 <= i0 {
            return (0, 0);
        }
        r0 = r1;
    }
    let mut replaced = vec![];
    let mut rows_computed = 0;
    let mut r0 = 0;
    while r0 < hy {
        let r1 = (r0 + per_band).min(hy);
        let (x0, x1, pad_b) = needs(&b, hx, r0, r1);
        let (i0, i1, pad_a) = needs(&a, hi, x0, x1);
        rows_computed += x1 - x0;
        let input = rows_of(tensors, views, a.input, i0, i1);
        let mut rows = x.clone();
        rows.name = format!("{}[rows {x0}..{x1}]", x.name);
        rows.shape[1] = (x1 - x0) as u32;
        // The first band's rows take the intermediate tensor's place in the table (nothing else
        // reads it, and a tensor no op touches would still have to fit the arena).
        let buffer = if r0 == 0 {
            tensors[a.output as usize] = rows;
            a.output
        } else {
            tensors.push(rows);
            views.push(None);
            (tensors.len() - 1) as u16
        };
        let output = rows_of(tensors, views, b.output, r0, r1);
        let with = |spec: &Spec, input: u16, output: u16, pad: [u16; 2]| {
            let mut s = spec.clone();
            if let Spec::Conv { c, .. } = &mut s {
                c.input = input;
                c.output = output;
                c.pad[0] = pad[0];
                c.pad[2] = pad[1];
            }
            s
        };
        replaced.push((with(&a_spec, input, buffer, pad_a), format!("{a_name} (rows {x0}..{x1})")));
        replaced.push((with(&b_spec, buffer, output, pad_b), format!("{b_name} (rows {r0}..{r1})")));
        r0 = r1;
    }
    let bands = replaced.len() / 2;
    specs.splice(k..k + 2, replaced);
    (bands, (rows_computed.saturating_sub(hx)) as u64 * macs_per_row)
}
