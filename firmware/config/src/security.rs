//! `[security]`: the keys whose model signatures the daemon trusts.

use serde::Deserialize;
use std::path::PathBuf;

/// `[security]`: which model files the daemon accepts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// Public keys (`lepton-convert keygen`'s NAME.pub) whose signatures are trusted.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// Refuse a model without a valid signature (MODEL.sig) by a trusted key (default false).
    /// Without it, a model that has a `.sig` is still checked against `trusted_keys` when any
    /// are given.
    #[serde(default)]
    pub require_signed: bool,
}
