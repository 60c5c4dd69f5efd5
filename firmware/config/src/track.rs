//! `[pipeline.track]`: how a detector's boxes are followed across frames (on by default for
//! detectors; the table tunes it or turns it off).

use crate::duration::{Seconds, DAY};
use anyhow::{bail, Result};
use lepton_runtime::vision::track::TrackConfig;
use serde::Deserialize;

/// `[pipeline.track]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Track {
    /// Track detectors' boxes (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Smallest overlap (intersection over union, 0-1) of a box with a track's predicted box
    /// (default 0.2).
    #[serde(default = "default_min_iou")]
    pub min_iou: f32,
    /// Frames in a row that confirm a new object (default 3; 1 confirms at once).
    #[serde(default = "default_confirm")]
    pub confirm_frames: u16,
    /// An object unseen this long is gone (default 2 s).
    #[serde(default = "default_max_missed")]
    pub max_missed_s: Seconds<DAY>,
    /// An object in place this long is stationary (default 10 s).
    #[serde(default = "default_stationary")]
    pub stationary_s: Seconds<DAY>,
}

impl Default for Track {
    fn default() -> Self {
        Track {
            enabled: true,
            min_iou: default_min_iou(),
            confirm_frames: default_confirm(),
            max_missed_s: default_max_missed(),
            stationary_s: default_stationary(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_min_iou() -> f32 {
    0.2
}
fn default_confirm() -> u16 {
    3
}
fn default_max_missed() -> Seconds<DAY> {
    Seconds(2.0)
}
fn default_stationary() -> Seconds<DAY> {
    Seconds(10.0)
}

impl Track {
    /// Checks the keys the types cannot (`at`: where, for errors).
    pub(crate) fn check(&self, at: &str) -> Result<()> {
        if !(self.min_iou > 0.0 && self.min_iou < 1.0) {
            bail!("{at}, [pipeline.track]: min_iou = {}: give an overlap in (0, 1)", self.min_iou);
        }
        if !(1..=100).contains(&self.confirm_frames) {
            bail!("{at}, [pipeline.track]: confirm_frames = {}: give 1 to 100 frames", self.confirm_frames);
        }
        Ok(())
    }

    /// The tracker's settings.
    pub fn config(&self) -> TrackConfig {
        TrackConfig {
            min_iou: self.min_iou,
            confirm: self.confirm_frames,
            max_missed_ms: (self.max_missed_s.get() * 1e3) as u64,
            stationary_ms: (self.stationary_s.get() * 1e3) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Config;

    #[test]
    fn tracking_is_on_by_default_and_its_table_is_read_and_checked() {
        let d = dir();
        let c = Config::load(&write(&d, GOOD)).unwrap();
        assert!(c.pipelines[0].track.enabled);
        assert_eq!(c.pipelines[0].track.config(), lepton_runtime::vision::track::TrackConfig::default());
        let text = format!("{GOOD}[pipeline.track]\nconfirm_frames = 5\nstationary_s = 30\n");
        let c = Config::load(&write(&d, &text)).unwrap();
        let t = c.pipelines[0].track.config();
        assert_eq!((t.confirm, t.stationary_ms, t.max_missed_ms), (5, 30_000, 2000));
        let e = Config::load(&write(&d, &text.replace("confirm_frames = 5", "confirm_frames = 0")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("confirm_frames"), "{e}");
        let e = Config::load(&write(&d, &text.replace("confirm_frames = 5", "min_iou = 1.5"))).unwrap_err().to_string();
        assert!(e.contains("min_iou"), "{e}");
        let off = format!("{GOOD}[pipeline.track]\nenabled = false\n");
        assert!(!Config::load(&write(&d, &off)).unwrap().pipelines[0].track.enabled);
    }
}
