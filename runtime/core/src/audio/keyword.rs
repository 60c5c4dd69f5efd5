//! Keyword-spotting postprocessing: posteriors of successive model runs are averaged over a short
//! window; a keyword fires when its smoothed score crosses the threshold, then stays quiet for the
//! refractory period so one utterance gives one event.

use crate::error::Error;
use crate::event::Detection;

/// Keyword decision parameters (from the manifest's `[keyword]` table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeywordConfig {
    /// Smoothed score needed to fire, in 0..=1.
    pub threshold: f32,
    /// Number of successive posteriors averaged (≥ 1).
    pub smoothing: usize,
    /// Milliseconds after a detection during which no other fires.
    pub refractory_ms: u64,
    /// Bit `i` set: class `i` is background (`_silence_`, `_unknown_`) and never fires.
    pub background: u64,
}

/// Smoother and decision state for up to `LABELS` classes and `WINDOW` posteriors.
#[derive(Debug, Clone)]
pub struct KeywordSpotter<const LABELS: usize, const WINDOW: usize> {
    cfg: KeywordConfig,
    history: [[f32; LABELS]; WINDOW],
    classes: usize,
    next: usize,
    filled: usize,
    last_fire_ms: Option<u64>,
}

impl<const LABELS: usize, const WINDOW: usize> KeywordSpotter<LABELS, WINDOW> {
    /// A spotter for `classes` classes.
    pub fn new(cfg: KeywordConfig, classes: usize) -> Result<Self, Error> {
        if classes == 0 || classes > LABELS || classes > 64 {
            return Err(Error::CapacityExceeded { needed: classes, capacity: LABELS.min(64) });
        }
        if cfg.smoothing == 0 || cfg.smoothing > WINDOW {
            return Err(Error::InvalidConfig("keyword.smoothing"));
        }
        if !(0.0..=1.0).contains(&cfg.threshold) {
            return Err(Error::InvalidConfig("keyword.threshold"));
        }
        Ok(KeywordSpotter { cfg, history: [[0.0; LABELS]; WINDOW], classes, next: 0, filled: 0, last_fire_ms: None })
    }

    /// Adds the posteriors of one model run at time `t_ms`; returns the keyword that fired, if any.
    pub fn update(&mut self, t_ms: u64, posteriors: &[f32]) -> Result<Option<Detection>, Error> {
        if posteriors.len() != self.classes {
            return Err(Error::LengthMismatch { expected: self.classes, actual: posteriors.len() });
        }
        self.history[self.next][..self.classes].copy_from_slice(posteriors);
        self.next = (self.next + 1) % self.cfg.smoothing;
        self.filled = (self.filled + 1).min(self.cfg.smoothing);
        // Averaged over the whole window (missing history counts as 0), so a lone spike at the
        // start of a stream cannot fire.
        let n = self.cfg.smoothing as f32;
        let mut best = (0usize, f32::NEG_INFINITY);
        for c in (0..self.classes).filter(|&c| c >= 64 || self.cfg.background & (1 << c) == 0) {
            let avg = self.history[..self.filled].iter().map(|h| h[c]).sum::<f32>() / n;
            if avg > best.1 {
                best = (c, avg);
            }
        }
        let quiet = self.last_fire_ms.is_none_or(|t| t_ms.saturating_sub(t) >= self.cfg.refractory_ms);
        if best.1 >= self.cfg.threshold && quiet {
            self.last_fire_ms = Some(t_ms);
            return Ok(Some(Detection { class: best.0 as u16, score: best.1, bbox: None }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spotter() -> KeywordSpotter<4, 8> {
        let cfg = KeywordConfig { threshold: 0.6, smoothing: 3, refractory_ms: 1000, background: 0b01 };
        KeywordSpotter::new(cfg, 3).unwrap()
    }

    #[test]
    fn fires_once_per_utterance_after_smoothing() {
        let mut k = spotter();
        // A single spike is smoothed away.
        assert_eq!(k.update(0, &[0.0, 1.0, 0.0]).unwrap(), None);
        assert_eq!(k.update(100, &[1.0, 0.0, 0.0]).unwrap(), None);
        assert_eq!(k.update(200, &[1.0, 0.0, 0.0]).unwrap(), None);
        // Sustained keyword 2 fires once, then the refractory period holds.
        assert_eq!(k.update(300, &[0.1, 0.0, 0.9]).unwrap(), None);
        let hit = k.update(400, &[0.0, 0.0, 1.0]).unwrap().unwrap();
        assert_eq!(hit.class, 2);
        assert!((hit.score - (0.9 + 1.0) / 3.0).abs() < 1e-6);
        assert_eq!(k.update(500, &[0.0, 0.0, 1.0]).unwrap(), None);
        assert_eq!(k.update(1300, &[0.0, 0.0, 1.0]).unwrap(), None);
        assert!(k.update(1400, &[0.0, 0.0, 1.0]).unwrap().is_some());
    }

    #[test]
    fn background_classes_never_fire() {
        let mut k = spotter();
        for t in 0..10 {
            assert_eq!(k.update(t * 100, &[1.0, 0.0, 0.0]).unwrap(), None);
        }
        assert!(k.update(1, &[0.5]).is_err());
    }
}
