//! `lepton-convert`: makes ONNX models ready for Lepton devices. This file is the command line
//! only; each verb lives in `cli/` and calls the library.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Make ONNX and TFLite models ready for Lepton devices.
///
/// A typical flow: export ONNX from your framework (or take a `.tflite`: every verb reads it, and
/// `import` writes it as ONNX); `inspect` it; `optimize` it if it has dynamic
/// shapes or control flow; `pack` a manifest that tells devices how to pre- and post-process;
/// `quantize` it with calibration data; `eval` float and int8 on a labelled folder; `bench` both;
/// copy the model file to the device (Linux boards run int8 models on the integer engine), or
/// `compile` it to a .lpm for a microcontroller.
///
/// Exit codes: 0 success; 1 the work was done but missed its goal (`quantize`: the int8 model misses
/// its agreement target); 2 error (the message names the file, field, tensor or node).
#[derive(Parser, Debug)]
// `about` and `long_about` come from the doc comment above; the verbs are clap's list of the
// `Command` variants (the package description is not used: it would be a second list to keep).
#[command(name = "lepton-convert", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Inspect(cli::inspect::InspectArgs),
    Import(cli::import::ImportArgs),
    Run(cli::run::RunArgs),
    Bench(cli::bench::BenchArgs),
    Optimize(cli::optimize::OptimizeArgs),
    Quantize(cli::quantize::QuantizeArgs),
    Eval(cli::eval::EvalArgs),
    Compile(cli::compile::CompileArgs),
    Pack(cli::pack::PackArgs),
    Kernels(cli::kernels::KernelsArgs),
    Keygen(cli::sign::KeygenArgs),
    Sign(cli::sign::SignArgs),
    Verify(cli::sign::VerifyArgs),
}

/// Output piped into a program that stops reading (`| head`) ends this one quietly, like other
/// Unix tools, instead of a panic on the failed write.
fn restore_sigpipe() {
    // SAFETY: sets the default disposition of one signal, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    restore_sigpipe();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LEPTON_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => cli::inspect::run(args),
        Command::Import(args) => cli::import::run(args),
        Command::Run(args) => cli::run::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Optimize(args) => cli::optimize::run(args),
        Command::Quantize(args) => cli::quantize::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Compile(args) => cli::compile::run(args),
        Command::Pack(args) => cli::pack::run(args).map(|()| 0),
        Command::Kernels(args) => cli::kernels::run(args),
        Command::Keygen(args) => cli::sign::keygen(args),
        Command::Sign(args) => cli::sign::sign(args),
        Command::Verify(args) => cli::sign::verify(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
