//! `lepton`: the board daemon. This file is the command line only; the work is in the modules.

mod demo;
mod sink;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Lepton runs inference pipelines on camera frames and audio and reports what it sees.
///
/// Start with `lepton run`: with no arguments it runs the bundled demo (a digit classifier on
/// bundled pictures) and prints one line per frame.
#[derive(Parser, Debug)]
#[command(name = "lepton", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run pipelines. Without arguments: the bundled demo.
    ///
    /// The demo loads the bundled digit classifier (models/digits) and runs it on the bundled
    /// sample pictures, printing for each frame the prediction, its score and the inference time,
    /// then a summary (frames, dropped, failed, latency percentiles).
    Run,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LEPTON_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run => demo::run(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
