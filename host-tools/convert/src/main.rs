//! `lepton-convert`: makes ONNX models ready for Lepton devices. This file is the command line only;
//! each verb lives in its own module and calls the runtime library.

mod pack;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Make ONNX models ready for Lepton devices.
///
/// A typical flow: train and export ONNX, then `pack` the manifest that tells devices how to
/// pre- and post-process, and copy the model file to the device.
#[derive(Parser, Debug)]
#[command(name = "lepton-convert", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Pack(pack::PackArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEPTON_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pack(args) => pack::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
