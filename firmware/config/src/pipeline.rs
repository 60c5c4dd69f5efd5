//! `[[pipeline]]`: a model, its source, threshold, presence hold and engine, with its alerts and
//! snapshots; and the checks of one pipeline that the types cannot make.

use crate::alert::AlertOutput;
use crate::clips::Clips;
use crate::duration::{Seconds, DAY};
use crate::lines::{at_line, key_line};
use crate::motion::{Mask, Motion};
use crate::snapshot::Snapshot;
use crate::source::Source;
use crate::track::Track;
use crate::valid_id;
use crate::zone::{check_zones, Zone};
use anyhow::{bail, Result};
use serde::Deserialize;
use std::path::PathBuf;

/// `[[pipeline]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Used in topics.
    pub name: String,
    /// Model file (ONNX with a manifest, or `.lpm`).
    pub model: PathBuf,
    /// Detections below are not published (default 0.5).
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Presence events end after this long without a detection (default 2 s).
    #[serde(default = "default_hold")]
    pub hold_s: Seconds<DAY>,
    /// `auto` (int8 models on the integer engine), `tract` or `micro`.
    #[serde(default)]
    pub engine: EngineKind,
    /// Print each published result on stdout (default true).
    #[serde(default = "default_true")]
    pub print: bool,
    /// Where frames or samples come from.
    pub source: Source,
    /// GPIO outputs driven when an event starts (`[[pipeline.alert]]`).
    #[serde(default, rename = "alert")]
    pub alerts: Vec<AlertOutput>,
    /// JPEG snapshots over MQTT (`[pipeline.snapshot]`; vision pipelines).
    pub snapshot: Option<Snapshot>,
    /// The motion gate (`[pipeline.motion]`; vision pipelines): off without the table.
    pub motion: Option<Motion>,
    /// Regions the motion gate ignores (`[[pipeline.mask]]`).
    #[serde(default, rename = "mask")]
    pub masks: Vec<Mask>,
    /// Object tracking of detectors' boxes (`[pipeline.track]`; on by default).
    #[serde(default)]
    pub track: Track,
    /// Parts of the frame tracked objects enter and leave (`[[pipeline.zone]]`; detectors).
    #[serde(default, rename = "zone")]
    pub zones: Vec<Zone>,
    /// MP4 clips of each event from the camera's own H.264 (`[pipeline.clips]`; RTSP and video
    /// files).
    pub clips: Option<Clips>,
}

fn default_threshold() -> f32 {
    0.5
}
fn default_hold() -> Seconds<DAY> {
    Seconds(2.0)
}
fn default_true() -> bool {
    true
}

/// Engine choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// The runtime's choice.
    #[default]
    Auto,
    /// tract.
    Tract,
    /// The int8 micro engine.
    Micro,
}

impl Pipeline {
    /// Checks one `[[pipeline]]` (the `k`th, from 0) as far as the config alone can; errors name
    /// it and, from `text`, the key's line.
    pub(crate) fn check(&self, k: usize, text: &str) -> Result<()> {
        let p = self;
        let line = |table: &str, key: &str| at_line(key_line(text, table, Some(k), key));
        let f = format!("pipeline `{}`", p.name);
        if !valid_id(&p.name) {
            bail!("{}{f}: name: use letters, digits, `-` and `_`", line("pipeline", "name"));
        }
        for (i, a) in p.alerts.iter().enumerate() {
            let at = format!("{f}, alert #{}", i + 1);
            if a.hold_s.get() < 0.001 {
                bail!("{at}: hold_s = {}: give seconds in (0, 86400]", a.hold_s);
            }
            if a.blink_ms.is_some_and(|[on, off]| on.get() < 1.0 || off.get() < 1.0) {
                bail!("{at}: blink_ms: both durations must be > 0 (omit blink_ms for a steady output)");
            }
            if let Some(z) = a.zones.iter().find(|z| !p.zones.iter().any(|o| o.name == **z)) {
                let names: Vec<&str> = p.zones.iter().map(|o| o.name.as_str()).collect();
                bail!("{at}: zones: no [[pipeline.zone]] is named `{z}` (this pipeline's zones: {})", names.join(", "));
            }
        }
        if !p.model.is_file() {
            bail!("{}{f}: model {} does not exist", line("pipeline", "model"), p.model.display());
        }
        if let Some(s) = &p.snapshot {
            let at = format!("{f}, [pipeline.snapshot]");
            if s.on.is_some() && s.every_s.is_some() {
                bail!("{at}: give on = \"event\" or every_s, not both");
            }
            if s.every_s.is_some_and(|x| x.get() < 0.001) {
                bail!("{}{at}: every_s: give seconds in (0, 86400]", line("pipeline.snapshot", "every_s"));
            }
            if !(1..=100).contains(&s.quality) {
                bail!("{at}: quality = {}: give 1 to 100", s.quality);
            }
            if !(16..=8192).contains(&s.max_width) {
                bail!("{at}: max_width = {}: give 16 to 8192 pixels", s.max_width);
            }
            if matches!(p.source, Source::Wav { .. } | Source::Mic { .. }) {
                bail!("{at}: audio pipelines have no snapshots; remove the table");
            }
        }
        match &p.motion {
            Some(m) => {
                if matches!(p.source, Source::Wav { .. } | Source::Mic { .. }) {
                    bail!("{f}, [pipeline.motion]: audio pipelines have no motion gate; remove the table");
                }
                m.check(&p.masks, &f)?;
            }
            None if !p.masks.is_empty() => {
                bail!("{f}: [[pipeline.mask]] is for the motion gate: add [pipeline.motion] (or remove the masks)");
            }
            None => {}
        }
        p.track.check(&f)?;
        if let Some(c) = &p.clips {
            c.check(&p.source, &f)?;
        }
        if !p.zones.is_empty() {
            if matches!(p.source, Source::Wav { .. } | Source::Mic { .. }) {
                bail!("{f}: [[pipeline.zone]] is for detectors' boxes; audio pipelines have none");
            }
            if !p.track.enabled {
                bail!("{f}: [[pipeline.zone]] counts tracked objects: remove `enabled = false` from [pipeline.track] (or the zones)");
            }
            check_zones(&p.zones, &f)?;
        }
        if !(0.0..=1.0).contains(&p.threshold) {
            bail!("{}{f}: threshold {} must be within 0..=1", line("pipeline", "threshold"), p.threshold);
        }
        let src = |key: &str| line("pipeline.source", key);
        match &p.source {
            Source::Images { path, fps, .. } => {
                if !path.is_dir() {
                    bail!("{}{f}: source.path {} is not a folder", src("path"), path.display());
                }
                if fps.is_some_and(|x| x.is_nan() || x <= 0.0) {
                    bail!("{}{f}: source.fps must be > 0", src("fps"));
                }
            }
            Source::Wav { path, .. } | Source::Video { path, .. } if !path.is_file() => {
                bail!("{}{f}: source.path {} does not exist", src("path"), path.display());
            }
            Source::Rtsp { .. } | Source::Http { .. } => {
                p.source.network().map_err(|e| anyhow::anyhow!("{}{f}: source: {e:#}", src("url")))?;
                let (Source::Rtsp { timeout_s, .. } | Source::Http { timeout_s, .. }) = &p.source else {
                    return Ok(());
                };
                if timeout_s.is_some_and(|t| t.get() < 0.001) {
                    bail!("{}{f}: source.timeout_s: give seconds in (0, 3600]", src("timeout_s"));
                }
                if let Source::Http { fps: Some(fps), .. } = &p.source {
                    if !(*fps > 0.0 && *fps <= 120.0) {
                        bail!("{}{f}: source.fps = {fps}: give polls per second in (0, 120]", src("fps"));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Config;
    #[test]
    fn every_bad_pipeline_is_listed_with_the_resolved_path_and_the_key_line() {
        let d = dir();
        let second = "\n[[pipeline]]\nname = \"back\"\nmodel = \"gone/missing.onnx\"\n[pipeline.source]\nkind = \"images\"\npath = \"nowhere\"\n";
        let text = GOOD.replace("m.onnx", "absent.onnx") + second;
        let e = format!("{:#}", Config::load(&write(&d, &text)).unwrap_err());
        assert!(e.contains("2 pipelines have errors"), "{e}");
        let resolved = d.join("absent.onnx");
        assert!(e.contains(&format!("line 9: pipeline `front`: model {} does not exist", resolved.display())), "{e}");
        assert!(
            e.contains(&format!("line 17: pipeline `back`: model {}", d.join("gone/missing.onnx").display())),
            "{e}"
        );
    }
}
