//! The `lepton` daemon's configuration file (TOML): its schema, and the checks of the file itself.
//! Every key is documented in README.md ("Configuration"); unknown keys are errors naming the key
//! and line, paths are relative to the config file.
//!
//! This crate reads and checks the file only: it opens no camera, broker, video or database. The
//! daemon checks what needs those (a network source's URL, models, GPIO lines) after parsing.

pub mod alert;
pub mod broker;
pub mod clips;
pub mod device;
pub mod duration;
pub mod homeassistant;
pub mod lines;
pub mod motion;
pub mod mqtt;
pub mod pipeline;
pub mod security;
pub mod snapshot;
pub mod source;
pub mod track;
pub mod web;
pub mod zone;

pub use alert::{ActiveLevelKind, AlertOutput, GpioLine};
pub use clips::Clips;
pub use device::Device;
pub use duration::{Days, Millis, Seconds, DAY, HOUR, MINUTE_MS, U32_MAX, YEAR};
pub use homeassistant::HomeAssistant;
pub use motion::{Mask, Motion};
pub use mqtt::{Format, Mqtt, Protocol, ProtocolSetting};
pub use pipeline::{EngineKind, Pipeline};
pub use security::Security;
pub use snapshot::{Snapshot, SnapshotOn};
pub use source::{read_password, Source};
pub use track::Track;
pub use web::Web;
pub use zone::Zone;

use anyhow::{bail, Context, Result};
use duration::{duration_key_line, NOT_A_DURATION};
use lines::{at_line, key_line};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[device]`.
    pub device: Device,
    /// `[mqtt]`; absent: an embedded broker on 127.0.0.1.
    pub mqtt: Option<Mqtt>,
    /// `[homeassistant]`.
    #[serde(default)]
    pub homeassistant: HomeAssistant,
    /// `[[pipeline]]`.
    #[serde(default, rename = "pipeline")]
    pub pipelines: Vec<Pipeline>,
    /// `[security]`.
    #[serde(default)]
    pub security: Security,
    /// `[web]`: the device page; absent: none.
    pub web: Option<Web>,
}

impl Config {
    /// Parses and checks a config file; errors name the key and line.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        Self::from_toml(&text, path)
    }

    /// Parses and checks a config's text; `path` names it in errors and anchors relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config> {
        let mut c: Config = toml::from_str(text).map_err(|e| {
            let mut message = lepton_runtime::manifest::toml_error(text, &e);
            let table_line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let at_header = |l: &usize| text.lines().nth(l - 1).is_some_and(|t| t.trim_start().starts_with('['));
            if let Some(line) = table_line.filter(at_header).filter(|_| e.message().contains(NOT_A_DURATION)) {
                if let Some((k, source)) = duration_key_line(text, line, e.message()) {
                    message = format!("line {k} (`{source}`): {}", e.message());
                }
            }
            anyhow::anyhow!("{}: {message}", path.display())
        })?;
        // Paths are resolved against the config's folder, made absolute, so that messages show
        // the file the daemon looked for, whatever the working directory.
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.is_relative() {
            std::env::current_dir().map_or_else(|_| base.to_path_buf(), |cwd| cwd.join(base))
        } else {
            base.to_path_buf()
        };
        c.resolve(&base);
        c.check_text(path, text)?;
        Ok(c)
    }

    fn resolve(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        // A board given as a profile file is relative to the config, like every other path.
        if let Some(b) = &mut self.device.board {
            if b.ends_with(".toml") && Path::new(b.as_str()).is_relative() {
                *b = base.join(&*b).display().to_string();
            }
        }
        for p in &mut self.pipelines {
            abs(&mut p.model);
            if let Some(c) = &mut p.clips {
                abs(&mut c.dir);
            }
            match &mut p.source {
                Source::Images { path, .. } | Source::Wav { path, .. } | Source::Video { path, .. } => abs(path),
                Source::Rtsp { password_file: Some(p), .. } | Source::Http { password_file: Some(p), .. } => abs(p),
                _ => {}
            }
        }
        self.security.trusted_keys.iter_mut().for_each(abs);
        if let Some(w) = &mut self.web {
            abs(&mut w.database);
            if let Some(p) = &mut w.token_file {
                abs(p);
            }
        }
        if let Some(m) = &mut self.mqtt {
            if let Some(p) = &mut m.tls_ca {
                abs(p);
            }
            if let Some(p) = &mut m.password_file {
                abs(p);
            }
        }
    }

    /// Checks values that the types cannot (errors without line numbers; [`Config::from_toml`]
    /// gives them).
    pub fn check(&self, path: &Path) -> Result<()> {
        self.check_text(path, "")
    }

    /// Checks values that the types cannot; `text` (the file's) gives the lines of keys. Every
    /// pipeline is checked, and the error lists every pipeline's problems, one per line.
    fn check_text(&self, path: &Path, text: &str) -> Result<()> {
        let f = path.display();
        if self.device.stall_s.get() <= 0.0 {
            bail!("{f}: device.stall_s = {}: give a number of seconds above 0", self.device.stall_s);
        }
        if self.security.require_signed && self.security.trusted_keys.is_empty() {
            bail!("{f}: security.require_signed = true needs a key in security.trusted_keys (a NAME.pub from `lepton-convert keygen`)");
        }
        if !valid_id(&self.device.id) {
            bail!("{f}: device.id `{}`: use letters, digits, `-` and `_` (it is part of every topic)", self.device.id);
        }
        if let Some(m) = &self.mqtt {
            if m.qos > 1 {
                bail!("{f}: mqtt.qos = {}: use 0 or 1", m.qos);
            }
            if m.queue_capacity == 0 {
                bail!("{f}: mqtt.queue_capacity must be > 0");
            }
            let line = key_line(text, "mqtt", None, if m.host.is_some() { "host" } else { "hosts" });
            m.check().map_err(|e| anyhow::anyhow!("{f}: {}{e}", at_line(line)))?;
            if m.topic_prefix.is_empty() || m.topic_prefix.contains(['#', '+']) {
                bail!("{f}: mqtt.topic_prefix `{}`: not empty, no `#` or `+`", m.topic_prefix);
            }
            for p in m.tls_ca.iter().chain(m.password_file.iter()) {
                if !p.is_file() {
                    bail!("{f}: mqtt: file {} does not exist", p.display());
                }
            }
        }
        if let Some(w) = &self.web {
            w.addr().map_err(|e| anyhow::anyhow!("{f}: {e}"))?;
            w.token().map_err(|e| anyhow::anyhow!("{f}: {e:#}"))?;
            if w.retain_days.get() <= 0.0 {
                bail!("{f}: web.retain_days = {}: give a number of days above 0", w.retain_days);
            }
            if w.retain_mb == 0 {
                bail!("{f}: web.retain_mb must be > 0");
            }
            if w.session_days.duration() < std::time::Duration::from_secs(1) {
                bail!("{f}: web.session_days = {}: give a number of days above 0", w.session_days);
            }
        }
        let ha = &self.homeassistant.prefix;
        if ha.is_empty() || ha.contains(['#', '+']) || ha.starts_with('/') || ha.ends_with('/') {
            bail!("{f}: homeassistant.prefix `{ha}`: not empty, no `#` or `+`, no leading or trailing `/`");
        }
        if self.pipelines.is_empty() {
            bail!("{f}: no [[pipeline]]: add at least one (see README, Configuration)");
        }
        let mut names = std::collections::HashSet::new();
        let mut errors = vec![];
        for (k, p) in self.pipelines.iter().enumerate() {
            if !names.insert(&p.name) {
                errors.push(format!("{f}: two pipelines are named `{}`", p.name));
                continue;
            }
            if let Err(e) = p.check(k, text) {
                errors.push(format!("{f}: {e}"));
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => bail!("{}", errors[0]),
            n => bail!("{n} pipelines have errors:\n  {}", errors.join("\n  ")),
        }
    }
}

pub(crate) fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
pub(crate) mod testing {
    //! A valid config and a scratch folder, shared by the modules' tests.
    use std::path::{Path, PathBuf};

    pub(crate) fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("lepton.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    pub(crate) fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "lepton-config-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(d.join("frames")).unwrap();
        std::fs::write(d.join("m.onnx"), b"x").unwrap();
        d
    }

    pub(crate) const GOOD: &str = r#"
[device]
id = "porch-cam"
[mqtt]
host = "127.0.0.1"
port = 1883
[[pipeline]]
name = "front"
model = "m.onnx"
[pipeline.source]
kind = "images"
path = "frames"
fps = 5
"#;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn parses_defaults_and_resolves_paths_next_to_the_file() {
        let d = dir();
        let c = Config::load(&write(&d, GOOD)).unwrap();
        let m = c.mqtt.as_ref().unwrap();
        assert_eq!((m.topic_prefix.as_str(), m.qos, m.queue_capacity, m.format), ("lepton", 1, 1000, Format::Json));
        assert_eq!(c.pipelines[0].threshold, 0.5);
        assert_eq!(c.pipelines[0].model, d.join("m.onnx"));
        assert!(matches!(c.pipelines[0].source, Source::Images { fps: Some(5.0), looping: false, .. }));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let d = dir();
        let e = Config::load(&write(&d, &GOOD.replace("port = 1883", "prot = 1883"))).unwrap_err().to_string();
        assert!(e.contains("line 6") && e.contains("prot"), "{e}");
        // An unknown key further down its table: its own line, not the table's.
        let e = Config::load(&write(&d, &GOOD.replace("fps = 5", "fps = 5\nlop = true"))).unwrap_err().to_string();
        assert!(e.contains("line 14 (`lop = true`)"), "{e}");
        let e = Config::load(&write(&d, &GOOD.replace("port = 1883", "port = \"x\""))).unwrap_err().to_string();
        assert!(e.contains("line 6") && e.contains("port"), "{e}");
        let e = Config::load(&write(&d, &GOOD.replace("m.onnx", "missing.onnx"))).unwrap_err().to_string();
        assert!(e.contains("missing.onnx") && e.contains("front"), "{e}");
        let e =
            Config::load(&write(&d, &GOOD.replace("kind = \"images\"", "kind = \"scanner\""))).unwrap_err().to_string();
        assert!(e.contains("scanner"), "{e}");
        let e = Config::load(&write(&d, &GOOD.replace("porch-cam", "porch cam"))).unwrap_err().to_string();
        assert!(e.contains("device.id"), "{e}");
    }
}
