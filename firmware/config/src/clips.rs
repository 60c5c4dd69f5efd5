//! `[pipeline.clips]`: MP4 clips of the camera's own H.264 around each tracked object (or each
//! presence event without tracking), remuxed without re-encoding, with a disk budget.

use crate::duration::{Days, Seconds, HOUR};
use crate::source::Source;
use anyhow::{bail, Result};
use serde::Deserialize;
use std::path::PathBuf;

/// `[pipeline.clips]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clips {
    /// Folder of the clips (default `clips`, relative to the config): each pipeline writes in
    /// `{dir}/{pipeline}/`, created when missing.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Seconds of video before the event (from the key frame at or before), default 5.
    #[serde(default = "default_pre")]
    pub pre_s: Seconds<60>,
    /// Seconds of video after the event ends, default 5.
    #[serde(default = "default_post")]
    pub post_s: Seconds<60>,
    /// A clip is cut at this length, even if its object is still there (default 300 s).
    #[serde(default = "default_max")]
    pub max_s: Seconds<HOUR>,
    /// Clips older than this many days are deleted (default 7).
    #[serde(default = "default_retain_days")]
    pub retain_days: Days<3_650>,
    /// The pipeline's clips are kept under this many MiB, oldest deleted first (default 1024).
    #[serde(default = "default_retain_mb")]
    pub retain_mb: u64,
}

fn default_dir() -> PathBuf {
    "clips".into()
}
fn default_pre() -> Seconds<60> {
    Seconds(5.0)
}
fn default_post() -> Seconds<60> {
    Seconds(5.0)
}
fn default_max() -> Seconds<HOUR> {
    Seconds(300.0)
}
fn default_retain_days() -> Days<3_650> {
    Days(7.0)
}
fn default_retain_mb() -> u64 {
    1024
}

impl Clips {
    /// Checks the table against its pipeline's source (`at`: where, for errors).
    pub(crate) fn check(&self, source: &Source, at: &str) -> Result<()> {
        let at = format!("{at}, [pipeline.clips]");
        match source {
            Source::Rtsp { .. } | Source::Video { .. } => {}
            Source::Wav { .. } | Source::Mic { .. } => bail!("{at}: audio pipelines have no clips; remove the table"),
            _ => bail!(
                "{at}: clips are the camera's own H.264, remuxed: the source must be `rtsp` or `video` (this build does not encode the frames of local cameras, HTTP cameras or pictures)"
            ),
        }
        if self.max_s.get() < 1.0 {
            bail!("{at}: max_s = {}: give 1 to 3600 seconds", self.max_s);
        }
        if self.retain_days.get() <= 0.0 {
            bail!("{at}: retain_days = {}: give days in (0, 3650]", self.retain_days);
        }
        if !(1..=1_048_576).contains(&self.retain_mb) {
            bail!("{at}: retain_mb = {}: give 1 to 1048576 MiB", self.retain_mb);
        }
        if self.dir.as_os_str().is_empty() {
            bail!("{at}: dir: give a folder");
        }
        if self.dir.exists() && !self.dir.is_dir() {
            bail!("{at}: dir {} is not a folder", self.dir.display());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Config;

    #[test]
    fn clips_need_an_h264_source_and_bounded_values() {
        let d = dir();
        std::fs::write(d.join("cam.mp4"), b"x").unwrap();
        let video =
            GOOD.replace("kind = \"images\"\npath = \"frames\"\nfps = 5", "kind = \"video\"\npath = \"cam.mp4\"");
        assert_ne!(video, GOOD, "the shared config reads images from `frames`");
        let c = Config::load(&write(&d, &format!("{video}[pipeline.clips]\npre_s = 2\n"))).unwrap();
        let clips = c.pipelines[0].clips.as_ref().unwrap();
        assert_eq!(
            (clips.dir.clone(), clips.pre_s.get(), clips.post_s.get(), clips.retain_mb),
            (d.join("clips"), 2.0, 5.0, 1024)
        );
        let err = |base: &str, table: &str| {
            format!("{:#}", Config::load(&write(&d, &format!("{base}[pipeline.clips]\n{table}"))).unwrap_err())
        };
        let e = err(GOOD, "");
        assert!(e.contains("[pipeline.clips]") && e.contains("`rtsp` or `video`"), "{e}");
        for (table, says) in [
            ("retain_mb = 0\n", "retain_mb"),
            ("retain_days = 0\n", "retain_days"),
            ("max_s = 0.5\n", "max_s"),
            ("pre_s = 61\n", "pre_s"),
            ("dir = \"cam.mp4\"\n", "not a folder"),
        ] {
            let e = err(&video, table);
            assert!(e.contains(says), "{table}: {e}");
        }
    }
}
