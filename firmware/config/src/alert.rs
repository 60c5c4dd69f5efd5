//! `[[pipeline.alert]]`: GPIO outputs (buzzer, relay, LED) switched on by event starts.

use crate::duration::{Millis, Seconds, DAY, MINUTE_MS};
use serde::Deserialize;

/// `[[pipeline.alert]]`: a GPIO line (buzzer, relay, LED) switched on when an event starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertOutput {
    /// GPIO character device (default: the board profile's `[gpio] chip`, else `/dev/gpiochip0`).
    pub chip: Option<String>,
    /// Line offset on the chip (`17`), or a line named in the board profile (`"buzzer"`).
    pub line: GpioLine,
    /// Level meaning "on": `high` (default) or `low`.
    #[serde(default)]
    pub active: ActiveLevelKind,
    /// Seconds the output stays on after the last event start (default 2).
    #[serde(default = "default_hold")]
    pub hold_s: Seconds<DAY>,
    /// Blink while on: `[on_ms, off_ms]` (default: steady).
    pub blink_ms: Option<[Millis<MINUTE_MS>; 2]>,
    /// Labels whose events trigger it (default: every label).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Zones (`[[pipeline.zone]]` names) whose entries trigger it instead of event starts
    /// (default: none, event starts).
    #[serde(default)]
    pub zones: Vec<String>,
}

fn default_hold() -> Seconds<DAY> {
    Seconds(2.0)
}

/// A GPIO line by offset or by the board profile's name for it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum GpioLine {
    /// Offset on the chip.
    Offset(u32),
    /// A name from the board profile's `[gpio]` table.
    Name(String),
}

/// Pin level meaning "on".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ActiveLevelKind {
    /// On = high.
    #[default]
    High,
    /// On = low (active-low relay boards).
    Low,
}
