//! `lepton`: the board daemon. This file is the command line only; the work is in the modules.

mod alert;
mod board;
mod broker;
mod check;
mod console;
mod demo;
mod devices;
mod homeassistant;
mod mqtt;
mod run;
mod sink;
mod snapshot;
mod status;
mod topics;
mod watchdog;
mod web;

use clap::{Parser, Subcommand};
use lepton_firmware::config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Lepton runs inference pipelines on camera frames and audio and reports what it sees over MQTT.
///
/// Start with `lepton run`: without a config it runs the bundled demo (a meter-digit detector on
/// bundled camera frames and a keyword spotter on a bundled recording) with an MQTT broker built
/// in, and prints every detection and event it publishes.
/// Then write a config (README, "Configuration"), `lepton check --config FILE` it, and run it.
#[derive(Parser, Debug)]
#[command(name = "lepton", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the pipelines of a config; without one, the bundled demo.
    ///
    /// The demo loads two bundled models: the meter-digit detector (models/detector), run on 8
    /// bundled camera frames, and the keyword spotter (models/keywords), run on a bundled
    /// recording. It starts an MQTT broker on 127.0.0.1 (first free port from 1883, printed) and
    /// publishes to lepton/lepton-demo/meter/... and lepton/lepton-demo/keywords/..., printing
    /// each detection (boxes left to right) and each start/end event.
    /// It also serves the device page on http://127.0.0.1:8080 (first free port from 8080,
    /// printed): live view with boxes drawn, event history, stats, /metrics; it stays up after
    /// the demo's media end, until Ctrl-C. A config serves it with a `[web]` section.
    /// Finite sources (pictures without `loop`, WAV files) end the run once every queued message
    /// is delivered (with a device page: once it is stopped). SIGINT/SIGTERM stop it gracefully
    /// (a second one exits at once).
    Run {
        /// The TOML config.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// A board profile (`lepton boards` lists them) or a board.toml; overrides the config's.
        #[arg(long, value_name = "NAME")]
        board: Option<String>,
    },
    /// List cameras and microphones with their modes.
    Devices,
    /// Connect once to a network camera (or open a video file) and print codec, size and rate.
    ///
    /// `lepton probe rtsp://cam.lan:554/stream1` (DESCRIBE, SETUP, PLAY, first picture decoded),
    /// `lepton probe http://cam.lan/stream` (MJPEG stream or JPEG snapshot URL), or
    /// `lepton probe clip.mp4`. Credentials may be in the URL or given with --username and
    /// --password-file (or LEPTON_PROBE_PASSWORD); they are never printed. Exit 0 when a
    /// picture decodes, 2 otherwise, with the reason.
    Probe {
        /// rtsp:// or http(s):// URL, or a video file.
        target: String,
        /// RTSP transport: tcp or udp.
        #[arg(long, default_value = "tcp")]
        transport: String,
        /// User name (else the URL's).
        #[arg(long)]
        username: Option<String>,
        /// File holding the password (else LEPTON_PROBE_PASSWORD, else the URL's).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Seconds to watch a stream to measure its frame rate when it does not declare one.
        #[arg(long, default_value_t = 2.0)]
        watch: f64,
    },
    /// List the bundled board profiles.
    ///
    /// A profile gives a board's default camera and microphone settings, inference threads,
    /// memory budget and named GPIO lines; `lepton run --board NAME` or `board = "NAME"` in the
    /// config's `[device]` applies it, and every key the config sets wins over the profile.
    Boards,
    /// Validate a config, its models and manifests without starting anything.
    ///
    /// With a board profile, also loads the models and compares the peak memory with the
    /// board's budget.
    Check {
        /// The TOML config.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// A board profile or board.toml; overrides the config's.
        #[arg(long, value_name = "NAME")]
        board: Option<String>,
    },
}

/// The one-shot commands end quietly when their output is piped into a program that stops
/// reading (`lepton devices | head`), like other Unix tools. `lepton run` and `lepton probe`
/// keep Rust's default (SIGPIPE ignored): a write to a connection the broker or camera reset is
/// an error they handle, never a signal that kills the device; see `console`.
fn restore_sigpipe() {
    // SAFETY: sets the default disposition of one signal, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. } | Command::Probe { .. }) {
        restore_sigpipe();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEPTON_LOG")
                .unwrap_or_else(|_| "info,rumqttd=off,rumqttc=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Run { config: None, board } => demo::run(board.as_deref()),
        Command::Run { config: Some(path), board } => {
            check::load(&path).and_then(|c| run::Setup::from_config(c, board.as_deref())).and_then(run::run)
        }
        Command::Devices => devices::run(),
        Command::Boards => board::list(),
        Command::Check { config, board } => devices::check(&config, board.as_deref()),
        Command::Probe { target, transport, username, password_file, watch } => {
            devices::probe(&target, &transport, username.as_deref(), password_file.as_deref(), watch)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
