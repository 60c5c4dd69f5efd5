//! Arena planning: tensor offsets from their lifetimes, so tensors that are never alive at the
//! same time share bytes.

#[allow(unused_imports)]
use super::*;

pub(super) fn plan(tensors: &[T], specs: &[(Spec, String)], inputs: &[u16], outputs: &[u16]) -> (Vec<u32>, usize) {
    let n = tensors.len();
    let (mut first, mut last) = (vec![usize::MAX; n], vec![0usize; n]);
    for &i in inputs {
        first[i as usize] = 0;
    }
    for (k, (s, _)) in specs.iter().enumerate() {
        let w = s.writes() as usize;
        first[w] = first[w].min(k + 1);
        last[w] = last[w].max(k + 1);
        for r in s.reads() {
            last[r as usize] = last[r as usize].max(k + 1);
        }
    }
    for &o in outputs {
        last[o as usize] = specs.len() + 1;
    }
    let align = |v: usize| (v + 15) & !15;
    let mut order: Vec<usize> = (0..n).filter(|&i| first[i] != usize::MAX).collect();
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
    (offsets, total)
}
