//! Lepton on a Cortex-M microcontroller: the micro engine runs a model embedded at build time on
//! a static arena of exactly the size its header states, with no heap.
//!
//! - Classifier mode (default): for each embedded input set and each model output, one console
//!   line `output <input index> <output name> <values>`, the values being the output's int8
//!   elements as stored, comma-separated; then exit code 0.
//! - Speaker mode (feature `speaker`): embedded audio → audio frontend → keyword (or VAD) model →
//!   keyword spotting → one `event <hex>` line per event (the postcard bytes of
//!   `lepton_core::event::Event`), an alert pin (on QEMU a stand-in printing `pin high at <ms>`
//!   / `pin low at <ms>`), then `audio <file> samples=<n> runs=<n> first_run_ms=<ms> events=<n>
//!   overruns=<n> cycles_per_second=<n> clock_hz=<n>` (busy SysTick cycles per second of audio).
//!   A microWakeWord model (`lepton-convert compile MODEL.json`) runs with TFLite Micro's
//!   frontend and the wake-word decision instead (`wake_word.rs`), with the same lines.
//! - Live speaker mode (feature `live`, mps2-an386): the same loops on audio streaming in through
//!   UART0 (`microphone.rs`, `uart.rs`); events leave as COBS-framed postcard on UART1 instead of
//!   console lines; the summary line names `uart0` as its source.
//! - The Arduino Nano 33 BLE Sense (feature `nano33-ble-sense`, `nano33.rs`): the same loops on its
//!   PDM microphone, forever; events on its LED, framed on its TX pin and in defmt logs over RTT.
//! - Conformance mode (feature `conformance`, instead of classifier mode): the DSP kernel set
//!   against the reference kernels on randomized cases and on the embedded model and inputs;
//!   `conformance <kernel> cases=<n> mismatches=<n>` lines, then
//!   `kernel set cortexmdsp: bit-exact with the reference` and exit code 0.
//! - Any error: `error: <what>` and exit code 1.
//!
//! Console lines are plain text on semihosting stderr; defmt logs (model, arena, cycles per run)
//! are defmt frames on semihosting stdout. What is embedded is chosen at build time: see
//! `build.rs` (`LEPTON_MCU_BOARD`, `LEPTON_MCU_MODEL`, `LEPTON_MCU_INPUTS`, `LEPTON_MCU_AUDIO`).
//!
//! Run under QEMU (the runner in `.cargo/config.toml`):
//! `cargo run --release -p lepton-mcu --target thumbv7em-none-eabihf [--features speaker]`.
//! A host build only explains this; `cargo test -p lepton-mcu` runs the firmware's logic on the host.
#![cfg_attr(target_os = "none", no_std, no_main)]
// On the host the firmware's logic is exercised by the unit tests only.
#![cfg_attr(not(target_os = "none"), allow(dead_code))]
// The conformance build leaves classifier mode's helpers unused; the Nano 33 BLE Sense build the
// QEMU console's (summary line, event lines, recordings in flash).
#![cfg_attr(any(feature = "conformance", feature = "nano33-ble-sense"), allow(dead_code))]

mod app;
mod board;
#[cfg(not(any(feature = "speaker", feature = "conformance")))]
mod classifier;
#[cfg(all(feature = "conformance", target_os = "none"))]
mod conformance;
mod embedded;
#[cfg(feature = "speaker")]
mod microphone;
#[cfg(all(target_os = "none", feature = "nano33-ble-sense"))]
mod nano33;
#[cfg(feature = "speaker")]
mod speaker;
#[cfg(all(target_os = "none", not(feature = "nano33-ble-sense")))]
mod target;
#[cfg(all(feature = "live", target_os = "none"))]
mod uart;
#[cfg(all(feature = "speaker", lepton_wake_word))]
mod wake_word;

/// Host build: says how to run the firmware.
#[cfg(not(target_os = "none"))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "lepton-mcu is Cortex-M firmware ({} embedded, arena {} bytes). Run it under QEMU with\n  \
         cargo run --release -p lepton-mcu --target thumbv7em-none-eabihf [--features speaker]\n\
         (qemu-system-arm; the runner is set in .cargo/config.toml). `cargo test -p lepton-mcu` runs its logic here.",
        embedded::MODEL_NAME,
        embedded::ARENA_BYTES
    );
    std::process::ExitCode::from(2)
}
