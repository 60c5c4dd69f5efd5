//! `[[pipeline.zone]]`: named parts of a detector's frame that tracked objects enter and leave,
//! with counts per label (MQTT events, retained counts, Home Assistant sensors).

use crate::valid_id;
use anyhow::{bail, Result};
use lepton_runtime::vision::region::Region;
use lepton_runtime::vision::zone::{Zone as CoreZone, Zones, MAX_ZONES, MAX_ZONE_CLASSES};
use serde::Deserialize;

/// `[[pipeline.zone]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// Used in topics and Home Assistant ids: letters, digits, `-` and `_`.
    pub name: String,
    /// Corners `[[x, y], ...]` in fractions of the frame's width and height (0.0-1.0).
    pub points: Vec<[f32; 2]>,
    /// The labels it counts (default: every label of the model).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Frames in a row an object must stand inside to enter, or outside to leave (default 3).
    #[serde(default = "default_min_frames")]
    pub min_frames: u16,
}

fn default_min_frames() -> u16 {
    3
}

/// Checks a pipeline's zones as far as the config alone can (`at`: where, for errors).
pub(crate) fn check_zones(zones: &[Zone], at: &str) -> Result<()> {
    if zones.len() > MAX_ZONES {
        bail!("{at}: {} zones; at most {MAX_ZONES}", zones.len());
    }
    for (i, z) in zones.iter().enumerate() {
        let at = format!("{at}, zone #{} `{}`", i + 1, z.name);
        if !valid_id(&z.name) || z.name.len() > 64 {
            bail!("{at}: name: use 1 to 64 letters, digits, `-` and `_` (it is part of MQTT topics)");
        }
        if zones[..i].iter().any(|o| o.name == z.name) {
            bail!("{at}: name: another zone of this pipeline has it");
        }
        let points: Vec<(f32, f32)> = z.points.iter().map(|&[x, y]| (x, y)).collect();
        if let Err(e) = Region::new(&points) {
            bail!("{at}: points: {e}");
        }
        if !(1..=1000).contains(&z.min_frames) {
            bail!("{at}: min_frames = {}: give 1 to 1000 frames", z.min_frames);
        }
        if z.labels.len() > MAX_ZONE_CLASSES {
            bail!("{at}: labels: {} labels; at most {MAX_ZONE_CLASSES}", z.labels.len());
        }
        if let Some((k, l)) = z.labels.iter().enumerate().find(|(k, l)| z.labels[..*k].contains(l)) {
            bail!("{at}: labels: `{l}` is listed twice (again as label #{})", k + 1);
        }
    }
    Ok(())
}

/// The zones of a pipeline whose model has `labels`: errors name a zone's label the model lacks.
pub fn build(zones: &[Zone], labels: &[String]) -> Result<Zones> {
    let mut out = Zones::new();
    for z in zones {
        let points: Vec<(f32, f32)> = z.points.iter().map(|&[x, y]| (x, y)).collect();
        let region = Region::new(&points).map_err(|e| anyhow::anyhow!("zone `{}`: points: {e}", z.name))?;
        let mut zone = CoreZone { region, classes: Default::default(), min_frames: z.min_frames };
        for l in &z.labels {
            let Some(c) = labels.iter().position(|m| m == l) else {
                bail!("zone `{}`: label `{l}` is not one of the model's labels ({})", z.name, labels.join(", "));
            };
            if zone.classes.push(c as u16).is_err() {
                bail!("zone `{}`: at most {MAX_ZONE_CLASSES} labels", z.name);
            }
        }
        if out.add(zone).is_err() {
            bail!("at most {MAX_ZONES} zones a pipeline");
        }
    }
    Ok(out)
}

impl Zone {
    /// The labels this zone counts, given the model's `labels` (its own list, else all of them).
    pub fn counted<'a>(&'a self, labels: &'a [String]) -> &'a [String] {
        if self.labels.is_empty() {
            labels
        } else {
            &self.labels
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Config;

    const ZONE: &str = "[[pipeline.zone]]\nname = \"driveway\"\npoints = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]\nlabels = [\"car\"]\n";

    #[test]
    fn zones_are_read_with_defaults_checked_and_built_against_the_model_s_labels() {
        let d = dir();
        let c = Config::load(&write(&d, &format!("{GOOD}{ZONE}"))).unwrap();
        let z = &c.pipelines[0].zones;
        assert_eq!((z.len(), z[0].name.as_str(), z[0].min_frames), (1, "driveway", 3));
        let labels: Vec<String> = ["person", "car"].map(String::from).to_vec();
        let built = super::build(z, &labels).unwrap();
        assert_eq!(built.zones()[0].classes.as_slice(), [1]);
        let e = super::build(z, &["person".to_string()]).unwrap_err().to_string();
        assert!(e.contains("driveway") && e.contains("`car`") && e.contains("person"), "{e}");
        for (bad, says) in [
            ("name = \"driveway\"", "name = \"drive/way\""),
            ("[1.0, 1.0], [0.0, 1.0]]", "[1.0, 1.5]]"),
            ("labels = [\"car\"]", "min_frames = 0"),
            ("labels = [\"car\"]", "labels = [\"car\", \"car\"]"),
        ] {
            let text = format!("{GOOD}{}", ZONE.replace(bad, says));
            let e = Config::load(&write(&d, &text)).unwrap_err().to_string();
            assert!(e.contains("zone #1"), "{says}: {e}");
        }
        let twice = format!("{GOOD}{ZONE}{ZONE}");
        let e = Config::load(&write(&d, &twice)).unwrap_err().to_string();
        assert!(e.contains("zone #2") && e.contains("another zone"), "{e}");
        // An alert on a zone names one of the pipeline's zones.
        let alert = format!("{GOOD}{ZONE}[[pipeline.alert]]\nline = 17\nzones = [\"driveway\"]\n");
        assert_eq!(Config::load(&write(&d, &alert)).unwrap().pipelines[0].alerts[0].zones, ["driveway"]);
        let e = Config::load(&write(&d, &alert.replace("zones = [\"driveway\"]", "zones = [\"garden\"]")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("alert #1") && e.contains("`garden`") && e.contains("driveway"), "{e}");
        // Zones follow tracks: with tracking off they could never count anything.
        let off = format!("{GOOD}{ZONE}[pipeline.track]\nenabled = false\n");
        let e = Config::load(&write(&d, &off)).unwrap_err().to_string();
        assert!(e.contains("[pipeline.track]") && e.contains("zone"), "{e}");
    }
}
