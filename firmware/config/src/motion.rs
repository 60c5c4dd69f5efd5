//! `[pipeline.motion]` and `[[pipeline.mask]]`: the motion gate of a vision pipeline, which runs
//! the model only on frames with motion (and one every `refresh_s`), and the regions it ignores.

use crate::duration::{Seconds, DAY};
use anyhow::{bail, Result};
use lepton_runtime::vision::motion::{MotionConfig, MotionGate, MAX_MASKS};
use lepton_runtime::vision::region::Region;
use serde::Deserialize;

/// `[pipeline.motion]`: a cheap frame-difference detector decides which frames reach the model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Motion {
    /// Gate the model on motion (default true once the table is given).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Grey levels (1-255) a spot must change by to count (default 25; lower is more sensitive).
    #[serde(default = "default_threshold")]
    pub threshold: u8,
    /// Smallest moving area, as a fraction of the frame (default 0.001).
    #[serde(default = "default_min_area")]
    pub min_area: f32,
    /// Run the model at least this often without motion, so stationary objects stay known
    /// (default 10 s).
    #[serde(default = "default_refresh")]
    pub refresh_s: Seconds<DAY>,
}

/// `[[pipeline.mask]]`: a polygon where motion is ignored (a swaying tree, a timestamp overlay).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mask {
    /// Corners `[[x, y], ...]` in fractions of the frame's width and height (0.0-1.0).
    pub points: Vec<[f32; 2]>,
}

fn default_true() -> bool {
    true
}
fn default_threshold() -> u8 {
    25
}
fn default_min_area() -> f32 {
    0.001
}
fn default_refresh() -> Seconds<DAY> {
    Seconds(10.0)
}

impl Motion {
    /// Checks the keys the types cannot (`at`: where, for errors).
    pub(crate) fn check(&self, masks: &[Mask], at: &str) -> Result<()> {
        if self.threshold == 0 {
            bail!("{at}, [pipeline.motion]: threshold = 0 makes every frame motion: give 1 to 255 grey levels");
        }
        if !(self.min_area > 0.0 && self.min_area <= 1.0) {
            bail!("{at}, [pipeline.motion]: min_area = {}: give a fraction of the frame in (0, 1]", self.min_area);
        }
        check_masks(masks, at)
    }

    /// The gate this table describes, with `masks`.
    pub fn gate(&self, masks: &[Mask]) -> Result<MotionGate> {
        let mut config = MotionConfig { threshold: self.threshold, min_area: self.min_area, ..MotionConfig::default() };
        for m in masks {
            let points: Vec<(f32, f32)> = m.points.iter().map(|&[x, y]| (x, y)).collect();
            let region = Region::new(&points).map_err(|e| anyhow::anyhow!("[[pipeline.mask]]: {e}"))?;
            if config.masks.push(region).is_err() {
                bail!("[[pipeline.mask]]: at most {MAX_MASKS} masks");
            }
        }
        Ok(MotionGate::new(config, (self.refresh_s.get() * 1e3) as u64))
    }
}

/// Checks each mask's corners (`at`: where, for errors).
pub(crate) fn check_masks(masks: &[Mask], at: &str) -> Result<()> {
    if masks.len() > MAX_MASKS {
        bail!("{at}: {} masks; at most {MAX_MASKS} (join neighbouring ones)", masks.len());
    }
    for (i, m) in masks.iter().enumerate() {
        let points: Vec<(f32, f32)> = m.points.iter().map(|&[x, y]| (x, y)).collect();
        if let Err(e) = Region::new(&points) {
            bail!("{at}, mask #{}: points: {e}", i + 1);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Config;

    #[test]
    fn motion_and_masks_are_read_with_defaults_and_checked() {
        let d = dir();
        let text = format!(
            "{GOOD}[pipeline.motion]\nrefresh_s = 30\n[[pipeline.mask]]\npoints = [[0.0, 0.0], [0.3, 0.0], [0.3, 0.1]]\n"
        );
        let c = Config::load(&write(&d, &text)).unwrap();
        let p = &c.pipelines[0];
        let m = p.motion.as_ref().unwrap();
        assert!(m.enabled && m.threshold == 25 && m.min_area == 0.001 && m.refresh_s.get() == 30.0);
        assert_eq!(p.masks.len(), 1);
        assert!(m.gate(&p.masks).is_ok());

        let bad = text.replace("[0.3, 0.1]]", "[1.3, 0.1]]");
        let e = Config::load(&write(&d, &bad)).unwrap_err().to_string();
        assert!(e.contains("mask #1") && e.contains("1.3") && e.contains("0.0 to 1.0"), "{e}");
        let two = text.replace(", [0.3, 0.1]]", "]");
        let e = Config::load(&write(&d, &two)).unwrap_err().to_string();
        assert!(e.contains("at least 3 points"), "{e}");
        let e = Config::load(&write(&d, &text.replace("refresh_s = 30", "min_area = 0"))).unwrap_err().to_string();
        assert!(e.contains("min_area"), "{e}");
        let e = Config::load(&write(&d, &text.replace("refresh_s = 30", "threshold = 300"))).unwrap_err().to_string();
        assert!(e.contains("threshold"), "{e}");
        // Masks without a motion gate do nothing: said, not ignored.
        let lone = text.replace("[pipeline.motion]\nrefresh_s = 30\n", "");
        let e = Config::load(&write(&d, &lone)).unwrap_err().to_string();
        assert!(e.contains("[pipeline.motion]"), "{e}");
    }
}
