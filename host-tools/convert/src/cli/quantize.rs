//! `lepton-convert quantize`.

use anyhow::{Context, Result};
use clap::Args;
use lepton_convert::calibrate::Method;
use lepton_convert::quantize::{quantize, Report, Settings};
use lepton_runtime::onnx;
use std::path::PathBuf;

/// Quantize a float model to int8 with calibration data (static post-training quantization).
///
/// DIR holds the calibration samples: one .npy per sample for a single-input model (one
/// subfolder per input, named after it, for several), or pictures/WAVs when the model carries a
/// manifest (they are preprocessed as on the device). 40 in-domain samples are usually enough.
///
/// Weights are quantized per output channel (int8, symmetric), biases to int32, activations to
/// int8 with ranges from the calibration statistics. Float and int8 then run side by side on
/// the calibration set; layers whose quantization hurts (largest SQNR loss) stay in float until
/// the int8 model agrees with float (top-1 ≥ 99 %, or output SQNR ≥ 20 dB for non-classifiers).
/// OUT is standard QDQ ONNX (onnxruntime runs it too) and keeps the manifest.
///
/// Example: lepton-convert quantize model.onnx --calibration calib/ -o model.int8.onnx --report report.json
#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The float ONNX model.
    model: PathBuf,
    /// Folder of calibration samples.
    #[arg(long, value_name = "DIR")]
    calibration: PathBuf,
    /// Where to write the int8 model.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// How activation ranges are chosen from the statistics.
    #[arg(long, value_enum, default_value_t = Method::Percentile)]
    method: Method,
    /// One scale per weight tensor instead of one per output channel.
    #[arg(long)]
    per_tensor: bool,
    /// Write the per-layer report (SQNR, precision, agreement) as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

fn print(r: &Report) {
    println!(
        "{} samples, method {:?}, weights per {}",
        r.samples,
        r.method,
        if r.per_channel { "channel" } else { "tensor" }
    );
    println!("layer                                     op            precision   SQNR dB   loss dB");
    for l in &r.layers {
        println!(
            "  {:<40} {:<13} {:<9} {:>8.1} {:>9.1}",
            truncate(&l.node, 40),
            l.op,
            l.precision,
            l.sqnr_db,
            l.loss_db
        );
    }
    println!("{} activations and {} weight tensors quantized", r.quantized_activations, r.quantized_weights);
    if r.float_layers.is_empty() {
        println!("all layers int8");
    } else {
        println!("kept in float (mixed precision): {}", r.float_layers.join(", "));
    }
    if let Some(a) = r.agreement {
        println!("top-1 agreement with float on the calibration set: {:.2} %", a * 100.0);
    }
    println!("output SQNR: {:.1} dB", r.output_sqnr_db);
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: String = s.chars().rev().take(n - 1).collect::<Vec<_>>().into_iter().rev().collect();
        format!("…{tail}")
    }
}

/// Runs `quantize`.
pub fn run(args: QuantizeArgs) -> Result<u8> {
    let described = lepton_runtime::onnx::OnnxModel::read(&args.model)?;
    let (model, manifest) = (&described.proto, described.manifest.as_ref());
    let samples = lepton_convert::samples::load(&args.calibration, model, manifest)?;
    let settings = Settings { method: args.method, per_channel: !args.per_tensor, ..Default::default() };
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let (q, report) = quantize(model, &samples, &settings, |msg| spinner.set_message(msg.to_string()))
        .with_context(|| format!("quantizing {}", args.model.display()))?;
    spinner.finish_and_clear();
    onnx::write(&q, &args.output)?;
    print(&report);
    if let Some(p) = &args.report {
        std::fs::write(p, serde_json::to_string_pretty(&report)?).with_context(|| format!("{}", p.display()))?;
        println!("report written to {}", p.display());
    }
    println!("wrote {}", args.output.display());
    Ok(0)
}
