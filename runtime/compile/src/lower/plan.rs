//! Arena planning: tensor offsets from their lifetimes, so tensors that are never alive at the
//! same time share bytes. A view (rows of another tensor, from operator scheduling) is placed
//! inside its base, which lives as long as any of its views.

#[allow(unused_imports)]
use super::*;

pub(super) fn plan(
    tensors: &[T],
    specs: &[(Spec, String)],
    inputs: &[u16],
    outputs: &[u16],
    views: &[Option<(usize, u32)>],
) -> (Vec<u32>, usize) {
    let n = tensors.len();
    let base = |t: usize| views.get(t).copied().flatten().map_or(t, |(b, _)| b);
    let (mut first, mut last) = (vec![usize::MAX; n], vec![0usize; n]);
    for &i in inputs {
        first[base(i as usize)] = 0;
    }
    for (k, (s, _)) in specs.iter().enumerate() {
        let w = base(s.writes() as usize);
        if let Spec::Variable { .. } = s {
            // State lives from one run to the next: no other tensor may ever share its bytes.
            (first[w], last[w]) = (0, usize::MAX);
            continue;
        }
        first[w] = first[w].min(k + 1);
        last[w] = last[w].max(k + 1);
        for r in s.reads() {
            let r = base(r as usize);
            last[r] = last[r].max(k + 1);
        }
    }
    for &o in outputs {
        last[base(o as usize)] = specs.len() + 1;
    }
    let align = |v: usize| (v + 15) & !15;
    let mut order: Vec<usize> = (0..n).filter(|&i| first[i] != usize::MAX && base(i) == i).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(tensors[i].len()));
    let mut placed: Vec<(usize, usize, usize)> = vec![]; // (tensor, start, end)
    let mut offsets = vec![0u32; n];
    let mut total = 0;
    for i in order {
        let size = align(tensors[i].len().max(1));
        let conflicts: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&(j, _, _)| first[i] <= last[j] && first[j] <= last[i])
            .map(|&(_, s, e)| (s, e))
            .collect();
        let mut candidates: Vec<usize> = std::iter::once(0).chain(conflicts.iter().map(|&(_, e)| e)).collect();
        candidates.sort_unstable();
        let start =
            candidates.into_iter().find(|&c| conflicts.iter().all(|&(s, e)| c + size <= s || c >= e)).unwrap_or(total);
        offsets[i] = start as u32;
        placed.push((i, start, start + size));
        total = total.max(start + size);
    }
    for (t, view) in views.iter().enumerate() {
        if let Some((b, delta)) = view {
            offsets[t] = offsets[*b] + delta;
        }
    }
    (offsets, total)
}

/// Drops the tensors no op reads or writes and that are neither inputs, outputs nor the base of a
/// view, renumbering the others in order; returns the views and outputs renumbered.
pub(super) fn compact(
    tensors: &mut Vec<T>,
    specs: &mut [(Spec, String)],
    inputs: &mut [u16],
    outputs: Vec<u16>,
    views: Vec<Option<(usize, u32)>>,
) -> (Vec<Option<(usize, u32)>>, Vec<u16>) {
    let mut used = vec![false; tensors.len()];
    for &t in inputs.iter().chain(&outputs) {
        used[t as usize] = true;
    }
    for (s, _) in specs.iter() {
        used[s.writes() as usize] = true;
        for r in s.reads() {
            used[r as usize] = true;
        }
    }
    for (t, view) in views.iter().enumerate() {
        if let (true, Some((b, _))) = (used[t], view) {
            used[*b] = true;
        }
    }
    let mut new_id = vec![u16::MAX; tensors.len()];
    let mut next = 0u16;
    for (t, &u) in used.iter().enumerate() {
        if u {
            new_id[t] = next;
            next += 1;
        }
    }
    let map = |t: u16| new_id[t as usize];
    for (s, _) in specs.iter_mut() {
        s.remap(&map);
    }
    for t in inputs.iter_mut() {
        *t = map(*t);
    }
    let outputs = outputs.into_iter().map(map).collect();
    let kept: Vec<T> = std::mem::take(tensors).into_iter().zip(&used).filter(|(_, &u)| u).map(|(t, _)| t).collect();
    *tensors = kept;
    let views = views
        .into_iter()
        .zip(&used)
        .filter(|(_, &u)| u)
        .map(|(v, _)| v.map(|(b, d)| (new_id[b] as usize, d)))
        .collect();
    (views, outputs)
}
