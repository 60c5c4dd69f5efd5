//! `[homeassistant]`: MQTT discovery for Home Assistant.

use serde::Deserialize;

/// `[homeassistant]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistant {
    /// Publish MQTT discovery configs (default false).
    #[serde(default)]
    pub discovery: bool,
    /// Discovery prefix (default `homeassistant`).
    #[serde(default = "default_ha_prefix")]
    pub prefix: String,
}

impl Default for HomeAssistant {
    fn default() -> Self {
        HomeAssistant { discovery: false, prefix: default_ha_prefix() }
    }
}

fn default_ha_prefix() -> String {
    "homeassistant".into()
}
