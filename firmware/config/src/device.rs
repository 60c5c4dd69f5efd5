//! `[device]`: the device's id (part of every topic), name, intervals and board profile.

use crate::duration::{Seconds, DAY};
use serde::Deserialize;

/// `[device]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Used in every topic: letters, digits, `-` and `_`.
    pub id: String,
    /// Friendly name (Home Assistant); default: the id.
    pub name: Option<String>,
    /// Seconds between stats messages (default 10; 0: none).
    #[serde(default = "default_stats")]
    pub stats_interval_s: Seconds<DAY>,
    /// Seconds without a processed frame or audio window after which a pipeline counts as stalled
    /// and the systemd watchdog is no longer fed (default 30; `boards/lepton.service`).
    #[serde(default = "default_stall")]
    pub stall_s: Seconds<DAY>,
    /// A board profile (`boards/<name>`) supplying camera, microphone, thread and GPIO defaults.
    pub board: Option<String>,
}

fn default_stats() -> Seconds<DAY> {
    Seconds(10.0)
}

fn default_stall() -> Seconds<DAY> {
    Seconds(30.0)
}
