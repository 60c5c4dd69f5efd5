//! `lepton-convert quantize`.

use anyhow::{Context, Result};
use clap::Args;
use lepton_convert::calibrate::Method;
use lepton_convert::quantize::{quantize, Criterion, Report, Settings};
use lepton_runtime::onnx;
use std::path::PathBuf;

/// Quantize a float model to int8 with calibration data (static post-training quantization).
///
/// DIR holds the calibration samples: one .npy per sample for a single-input model (one
/// subfolder per input, named after it, for several), or pictures/WAVs when the model carries a
/// manifest (they are preprocessed as on the device). 40 in-domain samples are usually enough.
///
/// Weights are quantized per output channel (int8, symmetric), biases to int32, activations to
/// int8 with ranges from the calibration statistics (gathered one sample at a time: memory does
/// not grow with the number of samples). Float and int8 then run side by side on the calibration
/// set; layers whose quantization hurts (largest SQNR loss) stay in float, up to a fifth of them,
/// until the int8 model agrees with float, judged by the task in the model's manifest:
///
/// - classifiers (task classify, keyword, vad; without a manifest, an output [1, C]): top-1
///   agreement, target 99 %;
///
/// - detectors (task detect): float and int8 outputs decoded as the device decodes them (the
///   manifest's [detect] format, score threshold and NMS); an int8 box matches a float box of the
///   same label at IoU ≥ 0.5, one to one, as `eval` matches; the agreement is the F1 of matched
///   boxes, 2·matched / (float boxes + int8 boxes), target 95 %;
///
/// - other models: the SQNR of output 0, target 20 dB.
///
/// OUT is standard QDQ ONNX (onnxruntime runs it too) and keeps the manifest. When no attempt
/// reaches the target, OUT is still written (the best attempt), stderr names the figure and the
/// target, and the exit code is 1. Exit codes: 0 target met, 1 target missed, 2 error.
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
    /// The agreement to reach instead of the task's default: a fraction for classifiers (top-1,
    /// default 0.99) and detectors (F1 of matched boxes, default 0.95), dB of output SQNR for
    /// other models (default 20). Above 1 an agreement cannot be met.
    #[arg(long, value_name = "X")]
    target: Option<f64>,
    /// Write the per-layer report (SQNR, precision, the criterion, its figure and target, the
    /// agreement and for detectors the box counts) as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

fn print(r: &Report) {
    println!(
        "{} samples, method {}, weights per {}",
        r.samples,
        method_name(r.method),
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
    // The judged figure (the agreement, or the output SQNR) once, with its target; then the box
    // counts behind a detector's, and the output SQNR when it is not the judged figure.
    println!(
        "{} on the calibration set: {} (target {}, {})",
        r.criterion.describe(),
        r.criterion.format(r.figure),
        r.criterion.format(r.target),
        if r.target_met { "met" } else { "missed" }
    );
    if let (Criterion::BoxF1, Some(b)) = (r.criterion, &r.boxes) {
        println!(
            "  recall {:.2} %, precision {:.2} %: {} of {} float boxes matched by {} int8 boxes at IoU ≥ {}, score threshold {}",
            b.recall * 100.0,
            b.precision * 100.0,
            b.matched,
            b.float_boxes,
            b.int8_boxes,
            b.iou,
            b.score_threshold
        );
    }
    if r.criterion != Criterion::OutputSqnr {
        println!("output SQNR: {:.1} dB", r.output_sqnr_db);
    }
}

/// A method as its `--method` value spells it.
fn method_name(m: Method) -> String {
    use clap::ValueEnum;
    m.to_possible_value().map_or_else(|| format!("{m:?}"), |v| v.get_name().to_string())
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
    let settings =
        Settings { method: args.method, per_channel: !args.per_tensor, target: args.target, ..Default::default() };
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
    if !report.target_met {
        eprintln!(
            "lepton-convert quantize: target missed: {} is {}, under the target of {}, after {} attempts; {} holds the best one (attempt {}, {} layers kept in float{})",
            judged(&report),
            report.criterion.format(report.figure),
            report.criterion.format(report.target),
            report.attempts,
            args.output.display(),
            report.iterations,
            report.float_layers.len(),
            if report.float_layers.is_empty() { String::new() } else { format!(": {}", report.float_layers.join(", ")) },
        );
        return Ok(1);
    }
    Ok(0)
}

/// The judged figure, named for the stderr message.
fn judged(r: &Report) -> String {
    format!("{} on the {} calibration samples", r.criterion.describe(), r.samples)
}
