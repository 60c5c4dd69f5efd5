//! Board profiles (`boards/<name>/board.toml`, bundled in the binary): target triple, camera and
//! microphone defaults, worker threads, memory budget and named GPIO lines. `lepton run --board
//! NAME` or `board = "NAME"` in `[device]` applies one; what the config sets wins over the profile.

use anyhow::{bail, Context, Result};
use lepton_runtime::source::camera::CameraFormatKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/boards.rs"));
}

/// A board profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// Its name (the folder under `boards/`, or the file's stem).
    #[serde(skip)]
    pub name: String,
    /// What board it is.
    pub description: String,
    /// Rust target triple of the board's builds.
    pub target: String,
    /// Threads for tract's matrix products (Linux boards).
    pub threads: Option<usize>,
    /// Memory Lepton may use on the board, in MiB (Linux boards).
    pub memory_budget_mb: Option<u64>,
    /// Camera defaults.
    #[serde(default)]
    pub camera: CameraDefaults,
    /// Microphone defaults.
    #[serde(default)]
    pub mic: MicDefaults,
    /// Named GPIO lines for alerts.
    #[serde(default)]
    pub gpio: Gpio,
    /// Flash in KiB (microcontrollers).
    pub flash_kb: Option<u64>,
    /// RAM in KiB (microcontrollers).
    pub ram_kb: Option<u64>,
    /// The linker memory layout beside the profile (microcontrollers).
    pub memory_x: Option<String>,
    /// Whether the core has the DSP extension (microcontrollers: the firmware's DSP kernels are
    /// built in only then; optional on the Cortex-M33).
    pub dsp: Option<bool>,
}

/// `[camera]` of a profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraDefaults {
    /// Camera index.
    pub index: Option<u32>,
    /// Width.
    pub width: Option<u32>,
    /// Height.
    pub height: Option<u32>,
    /// Frame rate.
    pub fps: Option<u32>,
    /// Pixel format.
    pub format: Option<CameraFormatKind>,
}

/// `[mic]` of a profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MicDefaults {
    /// Device name or part of it.
    pub device: Option<String>,
    /// Sample rate.
    pub rate: Option<u32>,
}

/// `[gpio]` of a profile: the chip and named line offsets (`buzzer = 17`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Gpio {
    /// GPIO character device.
    pub chip: Option<String>,
    /// Line names → offsets on the chip.
    #[serde(flatten)]
    pub lines: BTreeMap<String, u32>,
}

impl Board {
    /// A bundled profile by name, or a profile file by path.
    pub fn load(name_or_path: &str) -> Result<Board> {
        if let Some((name, text)) = bundled::BOARDS.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(name, text, &format!("boards/{name}/board.toml"));
        }
        let path = Path::new(name_or_path);
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
            let name = path.file_stem().map_or_else(|| name_or_path.to_string(), |s| s.to_string_lossy().into_owned());
            return Self::parse(&name, &text, &path.display().to_string());
        }
        bail!("no board `{name_or_path}`; bundled profiles: {} (or give a board.toml path)", Self::names().join(", "))
    }

    fn parse(name: &str, text: &str, origin: &str) -> Result<Board> {
        let mut b: Board = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            anyhow::anyhow!("{origin}: line {line}: {}", e.message())
        })?;
        b.name = name.to_string();
        Ok(b)
    }

    /// Names of the bundled profiles.
    pub fn names() -> Vec<&'static str> {
        bundled::BOARDS.iter().map(|(n, _)| *n).collect()
    }

    /// Every bundled profile.
    pub fn all() -> Result<Vec<Board>> {
        bundled::BOARDS.iter().map(|(n, t)| Self::parse(n, t, &format!("boards/{n}/board.toml"))).collect()
    }

    /// Whether it is a Linux board (the daemon runs there) rather than a microcontroller.
    pub fn is_linux(&self) -> bool {
        self.target.contains("linux")
    }

    /// Loads a profile for the Linux daemon: a microcontroller board is an error that says
    /// where its firmware is.
    pub fn load_linux(name_or_path: &str) -> Result<Board> {
        let b = Self::load(name_or_path)?;
        if !b.is_linux() {
            anyhow::bail!(
                "board {} is a microcontroller ({}, {}): the `lepton` daemon runs on Linux boards; build its firmware from firmware/mcu (boards/README.md, \"Microcontroller profiles\")",
                b.name,
                b.description,
                b.target
            );
        }
        Ok(b)
    }
}

/// `lepton boards`: the bundled profiles.
pub fn list() -> Result<std::process::ExitCode> {
    for b in Board::all()? {
        let mut facts = vec![b.target.clone()];
        if let Some(t) = b.threads {
            facts.push(format!("{t} threads"));
        }
        if let Some(m) = b.memory_budget_mb {
            facts.push(format!("{m} MiB budget"));
        }
        if let (Some(w), Some(h), Some(f)) = (b.camera.width, b.camera.height, b.camera.fps) {
            facts.push(format!("camera {w}x{h}@{f}"));
        }
        if !b.gpio.lines.is_empty() {
            let lines: Vec<String> = b.gpio.lines.iter().map(|(n, o)| format!("{n}={o}")).collect();
            facts.push(format!("gpio {}", lines.join(" ")));
        }
        if let (Some(f), Some(r)) = (b.flash_kb, b.ram_kb) {
            facts.push(format!("{f} KiB flash, {r} KiB RAM"));
        }
        if let Some(dsp) = b.dsp {
            facts.push(if dsp { "DSP".into() } else { "no DSP".into() });
        }
        if let Some(m) = &b.memory_x {
            facts.push(format!("layout boards/{}/{m} (firmware: LEPTON_MCU_BOARD={})", b.name, b.name));
        }
        println!("{:<10} {}\n           {}", b.name, b.description, facts.join(", "));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_profile_parses_and_names_its_target() {
        let all = Board::all().unwrap();
        assert!(all.len() >= 6, "{:?}", Board::names());
        for b in &all {
            assert!(!b.target.is_empty(), "{}", b.name);
            if b.is_linux() {
                assert!(b.threads.is_some() && b.memory_budget_mb.is_some(), "{}", b.name);
            } else {
                assert!(
                    b.flash_kb.is_some() && b.ram_kb.is_some() && b.memory_x.is_some() && b.dsp.is_some(),
                    "{}",
                    b.name
                );
            }
        }
        let rpi4 = Board::load("rpi4").unwrap();
        assert_eq!(rpi4.target, "aarch64-unknown-linux-gnu");
        assert_eq!(rpi4.gpio.lines.get("buzzer"), Some(&17));
        let e = Board::load("rpi9").unwrap_err().to_string();
        assert!(e.contains("rpi4") && e.contains("rpi9"), "{e}");
    }
}
