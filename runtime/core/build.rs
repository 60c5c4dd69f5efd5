//! Build script of the runtime: turns on the Cortex-M DSP kernel set (`cfg(lepton_dsp)`) for
//! cores with the DSP extension. Stable Rust has no `target_feature = "dsp"` to test, so:
//!
//! - the microcontroller board the firmware is built for decides when one is named
//!   (`LEPTON_MCU_BOARD`, its profile `boards/<board>/board.toml`, `dsp = true|false`);
//! - else the target: armv7e-m (`thumbv7em`: Cortex-M4/M7) always has DSP, so on; armv8-m
//!   mainline (`thumbv8m.main`: Cortex-M33/M35P/M55) has it as an option, so off (the portable
//!   kernels run on every such core; a DSP instruction faults on a core without it).
//!
//! On `thumbv8m.main`, a board with DSP also needs the assembler to accept its instructions:
//! `-C target-feature=+dsp` in RUSTFLAGS (the build stops saying so otherwise).

use std::path::PathBuf;

/// `dsp = true|false`, a top-level key of a board profile (the line syntax the shipped profiles
/// use; `lepton boards` and the firmware's build script read the whole TOML).
fn dsp_key(profile: &str) -> Option<bool> {
    profile
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "dsp")
        .and_then(|(_, v)| v.trim().parse().ok())
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(lepton_dsp)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=LEPTON_MCU_BOARD");
    let target = std::env::var("TARGET").unwrap_or_default();
    let (v7em, v8m_main) = (target.starts_with("thumbv7em-"), target.starts_with("thumbv8m.main-"));
    if !v7em && !v8m_main {
        return;
    }
    let board = std::env::var("LEPTON_MCU_BOARD").ok().filter(|b| !b.is_empty());
    let from_board = board.as_ref().and_then(|b| {
        let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
        let profile = dir.join("../../boards").join(b).join("board.toml");
        println!("cargo::rerun-if-changed={}", profile.display());
        dsp_key(&std::fs::read_to_string(profile).ok()?)
    });
    let dsp = from_board.unwrap_or(v7em);
    if dsp && v8m_main {
        let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
        if !flags.split('\x1f').any(|f| f.contains("+dsp")) {
            eprintln!(
                "error: board {} has the DSP extension on {target}: build with RUSTFLAGS=\"-C target-feature=+dsp\" \
                 (or set dsp = false in its profile)",
                board.as_deref().unwrap_or("?")
            );
            std::process::exit(1);
        }
    }
    if dsp {
        println!("cargo::rustc-cfg=lepton_dsp");
    }
}
