//! Classification postprocessing: scores (logits or probabilities) → the top-k classes.

use crate::event::Detection;
use serde::{Deserialize, Serialize};

/// What a classifier's output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scores {
    /// Unnormalized logits: softmax is applied.
    Logits,
    /// Probabilities already (the model ends with a softmax): used as they are.
    Probabilities,
    /// Independent per-class logits (multi-label): a sigmoid is applied to each.
    Sigmoid,
}

/// Converts model scores in place to probabilities according to `kind` (softmax for logits,
/// sigmoid per class, or unchanged); the audio pipelines on hosts and microcontrollers share it.
pub fn to_probabilities(v: &mut [f32], kind: Scores) {
    match kind {
        Scores::Probabilities => {}
        Scores::Sigmoid => v.iter_mut().for_each(|x| *x = 1.0 / (1.0 + libm::expf(-*x))),
        Scores::Logits => {
            let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for x in v.iter_mut() {
                *x = libm::expf(*x - max);
                sum += *x;
            }
            v.iter_mut().for_each(|x| *x /= sum);
        }
    }
}

/// Writes the `K` best classes (at most `out`'s capacity) with score ≥ `threshold` into `out`, best
/// first. Softmax is computed without a scratch buffer: `p_i = exp(x_i - max) / Σ exp(x_j - max)`.
pub fn top_k<const K: usize>(scores: &[f32], kind: Scores, threshold: f32, out: &mut heapless::Vec<Detection, K>) {
    out.clear();
    if scores.is_empty() {
        return;
    }
    let (max, denom) = match kind {
        Scores::Logits => {
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = scores.iter().map(|&x| libm::expf(x - max)).sum();
            (max, sum)
        }
        _ => (0.0, 1.0),
    };
    let prob = |x: f32| match kind {
        Scores::Logits => libm::expf(x - max) / denom,
        Scores::Probabilities => x,
        Scores::Sigmoid => 1.0 / (1.0 + libm::expf(-x)),
    };
    for (i, &x) in scores.iter().enumerate() {
        let p = prob(x);
        // NaN scores compare false and are skipped.
        if p.is_nan() || p < threshold {
            continue;
        }
        let d = Detection { class: i as u16, score: p, bbox: None };
        // Insertion into a short sorted list: K is small (≤ 10 in practice).
        let pos = out.iter().position(|o| o.score < p).unwrap_or(out.len());
        if pos < K {
            if out.is_full() {
                out.pop();
            }
            // Cannot fail: there is room after the pop and pos ≤ len.
            let _ = out.insert(pos, d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_top_k_is_sorted_and_normalized() {
        let logits = [1.0, 3.0, 2.0, -1.0];
        let mut out: heapless::Vec<Detection, 2> = heapless::Vec::new();
        top_k(&logits, Scores::Logits, 0.0, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].class, out[1].class), (1, 2));
        let total: f32 = logits.iter().map(|x| libm::expf(*x)).sum();
        assert!((out[0].score - libm::expf(3.0) / total).abs() < 1e-6);
    }

    #[test]
    fn threshold_filters_and_probabilities_pass_through() {
        let probs = [0.1, 0.7, 0.2];
        let mut out: heapless::Vec<Detection, 5> = heapless::Vec::new();
        top_k(&probs, Scores::Probabilities, 0.15, &mut out);
        assert_eq!(out.iter().map(|d| d.class).collect::<heapless::Vec<u16, 5>>().as_slice(), &[1, 2]);
        top_k(&[0.0, f32::NAN], Scores::Sigmoid, 0.0, &mut out);
        assert_eq!(out.len(), 1, "NaN scores are never reported");
        assert_eq!(out[0].score, 0.5);
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let mut out: heapless::Vec<Detection, 1> = heapless::Vec::new();
        top_k(&[1000.0, 999.0], Scores::Logits, 0.0, &mut out);
        assert!((out[0].score - 0.731_058_6).abs() < 1e-5);
    }
}
