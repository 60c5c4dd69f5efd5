//! Voice-activity hysteresis: speech starts after the speech probability stays above `on_threshold`
//! for `min_speech` frames, and ends after it stays below `off_threshold` for `hangover` frames, so
//! short pauses inside a sentence do not split it.

use crate::error::Error;
use crate::event::{Event, EventKind};

/// VAD decision parameters (from the manifest's `[vad]` table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Probability above which a frame counts as speech, in 0..=1.
    pub on_threshold: f32,
    /// Probability below which a frame counts as silence (≤ `on_threshold`).
    pub off_threshold: f32,
    /// Consecutive speech frames needed to start.
    pub min_speech: u32,
    /// Consecutive silent frames needed to end.
    pub hangover: u32,
    /// The class index reported in events.
    pub class: u16,
}

/// Hysteresis state.
#[derive(Debug, Clone)]
pub struct Vad {
    cfg: VadConfig,
    speaking: bool,
    run: u32,
    peak: f32,
}

impl Vad {
    /// A detector in the silent state.
    pub fn new(cfg: VadConfig) -> Result<Self, Error> {
        if !(0.0..=1.0).contains(&cfg.on_threshold) {
            return Err(Error::InvalidConfig("vad.on_threshold"));
        }
        if !(0.0..=cfg.on_threshold).contains(&cfg.off_threshold) {
            return Err(Error::InvalidConfig("vad.off_threshold"));
        }
        Ok(Vad { cfg, speaking: false, run: 0, peak: 0.0 })
    }

    /// True while speech is ongoing.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// Adds one frame's speech probability; returns a start or end event when the state changes.
    pub fn update(&mut self, t_ms: u64, p: f32) -> Option<Event> {
        if self.speaking {
            self.peak = self.peak.max(p);
            if p < self.cfg.off_threshold {
                self.run += 1;
                if self.run >= self.cfg.hangover.max(1) {
                    self.speaking = false;
                    self.run = 0;
                    return Some(Event {
                        class: self.cfg.class,
                        kind: EventKind::End,
                        timestamp_ms: t_ms,
                        score: self.peak,
                    });
                }
            } else {
                self.run = 0;
            }
        } else if p >= self.cfg.on_threshold {
            self.run += 1;
            if self.run >= self.cfg.min_speech.max(1) {
                self.speaking = true;
                self.run = 0;
                self.peak = p;
                return Some(Event { class: self.cfg.class, kind: EventKind::Start, timestamp_ms: t_ms, score: p });
            }
        } else {
            self.run = 0;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_bridges_short_pauses() {
        let cfg = VadConfig { on_threshold: 0.7, off_threshold: 0.3, min_speech: 2, hangover: 3, class: 1 };
        let mut v = Vad::new(cfg).unwrap();
        let probs = [0.1, 0.8, 0.2, 0.8, 0.9, 0.5, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1, 0.1];
        let mut events = heapless::Vec::<(usize, EventKind), 8>::new();
        for (t, &p) in probs.iter().enumerate() {
            if let Some(e) = v.update(t as u64, p) {
                events.push((t, e.kind)).unwrap();
            }
        }
        // Start needs two consecutive frames ≥ 0.7 (t = 3, 4); the pause at 6..7 is bridged by the
        // 0.8 at t = 8; three frames below 0.3 (9..11) end it.
        assert_eq!(events.as_slice(), &[(4, EventKind::Start), (11, EventKind::End)]);
    }

    #[test]
    fn thresholds_are_validated() {
        let cfg = VadConfig { on_threshold: 0.3, off_threshold: 0.5, min_speech: 1, hangover: 1, class: 0 };
        assert_eq!(Vad::new(cfg).unwrap_err(), Error::InvalidConfig("vad.off_threshold"));
    }
}
