//! `lepton`: the board daemon. This file is the command line only; the work is in the modules.

mod broker;
mod config;
mod demo;
mod devices;
mod homeassistant;
mod mqtt;
mod run;
mod sink;
mod topics;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Lepton runs inference pipelines on camera frames and audio and reports what it sees over MQTT.
///
/// Start with `lepton run`: without a config it runs the bundled demo (a digit classifier on
/// bundled pictures) with an MQTT broker built in, and prints every detection it publishes.
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
    /// The demo loads the bundled digit classifier (models/digits), starts an MQTT broker on
    /// 127.0.0.1 (first free port from 1883, printed), runs the model on the bundled pictures and
    /// publishes a message per frame to lepton/lepton-demo/digits/detections, printing each.
    /// Finite sources (pictures without `loop`, WAV files) end the run once every queued message
    /// is delivered. SIGINT/SIGTERM stop it gracefully (a second one exits at once).
    Run {
        /// The TOML config.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// List cameras and microphones with their modes.
    Devices,
    /// Validate a config, its models and manifests without starting anything.
    Check {
        /// The TOML config.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEPTON_LOG")
                .unwrap_or_else(|_| "info,rumqttd=off,rumqttc=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config: None } => demo::run(),
        Command::Run { config: Some(path) } => {
            config::Config::load(&path).and_then(|c| run::run(run::Setup::from_config(c)))
        }
        Command::Devices => devices::run(),
        Command::Check { config } => devices::check(&config),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
