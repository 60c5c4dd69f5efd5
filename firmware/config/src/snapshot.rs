//! `[pipeline.snapshot]`: JPEG pictures of event starts (or one every period) over MQTT.

use crate::duration::{Seconds, DAY};
use serde::Deserialize;

/// `[pipeline.snapshot]`: a JPEG of the frame each event started on (or one every `every_s`),
/// published retained to `{prefix}/{device}/{pipeline}/snapshot` and `.../snapshot/{label}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// `event` (the default): at each event start, the frame that started it.
    pub on: Option<SnapshotOn>,
    /// Instead of events: one picture every this many seconds.
    pub every_s: Option<Seconds<DAY>>,
    /// Draw each detection's box, label and score (default true).
    #[serde(default = "default_true")]
    pub annotate: bool,
    /// JPEG quality 1–100 (default 80).
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Pictures wider than this are scaled down, keeping the aspect ratio (default 1280).
    #[serde(default = "default_max_width")]
    pub max_width: u32,
}

/// When snapshots are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotOn {
    /// At each event start.
    Event,
}

fn default_true() -> bool {
    true
}
fn default_quality() -> u8 {
    80
}
fn default_max_width() -> u32 {
    1280
}
