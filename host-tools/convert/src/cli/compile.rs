//! `lepton-convert compile`.

use anyhow::{bail, Context, Result};
use clap::Args;
use lepton_runtime::engine::micro::lower::{self, lower_within};
use lepton_runtime::onnx;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// Lower an int8 (QDQ) ONNX model or a quantized TFLite model to a Lepton micro model (.lpm) for
/// the integer engine.
///
/// The micro engine runs on microcontrollers (no heap, a static arena whose exact size is known
/// now) and on Linux boards, bit for bit the same. Every QuantizeLinear of the model becomes an
/// int8 tensor and the float ops feeding it one integer op: convolutions (regular, grouped,
/// depthwise), fully connected layers, add, multiply, pooling, reshapes, concatenation, softmax,
/// and tables for chains of elementwise functions (ReLU, hard-swish, sigmoid...). An op with no
/// integer form is an error naming the node; quantize the model first with `lepton-convert quantize`.
///
/// A quantized TFLite file (int8 or uint8; a microWakeWord wake word, a Coral `_quant` model) is
/// lowered operator by operator with TFLite's own arithmetic, so the micro model computes what
/// LiteRT's reference kernels compute, bit for bit; a streaming model's variables become state the
/// engine keeps from one run to the next.
///
/// The arena (RAM for activations) is planned from tensor lifetimes and printed. With
/// `--max-arena BYTES`, convolution pairs whose intermediate tensor sets the peak (a first
/// convolution feeding a depthwise one, typically) run in horizontal bands until the arena fits:
/// less RAM for a little more flash (each band op carries its weights) and a few MACs (rows two
/// bands share are computed twice); results are bit for bit the same. It fails, saying the
/// smallest arena it reached, when the model cannot get there.
///
/// Examples:
///
///   lepton-convert compile model.int8.onnx -o model.lpm --report
///
///   lepton-convert compile model.int8.onnx -o model.lpm --max-arena 32768
///
///   lepton-convert compile okay_nabu.tflite -o okay_nabu.lpm --report
///
/// A microWakeWord model as ESPHome publishes it (`okay_nabu.json` beside `okay_nabu.tflite`)
/// compiles with its wake word and decision settings inside, so the `.lpm` alone is the model:
///
///   lepton-convert compile okay_nabu.json -o okay_nabu.lpm
#[derive(Args, Debug)]
pub struct CompileArgs {
    /// The quantized model: ONNX (from `lepton-convert quantize`), TFLite, or a microWakeWord JSON.
    model: PathBuf,
    /// Where to write the micro model.
    #[arg(short, long, value_name = "OUT.lpm")]
    output: PathBuf,
    /// Input shapes for dynamic inputs: NAME=DIMS (the manifest's input size is used otherwise).
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    shapes: Vec<String>,
    /// List every op with its source node.
    #[arg(long)]
    report: bool,
    /// Largest arena (bytes) the model may need; convolutions run in bands to fit it.
    #[arg(long, value_name = "BYTES")]
    max_arena: Option<usize>,
}

/// Runs `compile`.
pub fn run(args: CompileArgs) -> Result<u8> {
    let bytes = std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    if lepton_runtime::wake_word::is_json(&bytes) {
        if args.max_arena.is_some() || !args.shapes.is_empty() {
            bail!("{}: a wake-word model's shapes are fixed: leave out --shape and --max-arena", args.model.display());
        }
        let compiled = lepton_runtime::wake_word::lower(&bytes, &args.model)?;
        let (json, _) = lepton_runtime::wake_word::read(&bytes, &args.model)?;
        println!(
            "wake word {:?}: fires when the mean of {} probabilities exceeds {}",
            json.wake_word, json.micro.sliding_window_size, json.micro.probability_cutoff
        );
        return finish(&args, compiled);
    }
    if lepton_tflite::is_tflite(&bytes) {
        let model = lepton_tflite::TfliteModel::read(&bytes, &args.model)?;
        if lower::tflite_quantized(&model) {
            if args.max_arena.is_some() || !args.shapes.is_empty() {
                bail!("{}: a TFLite model's shapes are fixed, and its convolutions are not banded: leave out --shape and --max-arena", args.model.display());
            }
            let compiled =
                lower::lower_tflite(&model, "").with_context(|| format!("compiling {}", args.model.display()))?;
            return finish(&args, compiled);
        }
    }
    let model = onnx::read(&args.model)?;
    let (specs, outputs) = onnx::io_specs(&model);
    let mut given: HashMap<String, Vec<usize>> = HashMap::new();
    for (n, d) in lepton_convert::inputs::split_named(&args.shapes, &specs, "shape")? {
        given.insert(n, lepton_convert::inputs::parse_dims(&d)?);
    }
    if let Ok(Some(m)) = onnx::resolve_manifest(&model, &specs, &outputs, &args.model) {
        if let (Some(shape), Some(first)) = (m.image_input_shape(), specs.first()) {
            given
                .entry(m.input.as_ref().and_then(|i| i.name.clone()).unwrap_or_else(|| first.name.clone()))
                .or_insert(shape.to_vec());
        }
    }
    let shapes: Vec<(String, Vec<usize>)> = onnx::input_shapes(&model, &given)
        .into_iter()
        .map(|(n, s)| {
            s.map(|s| (n.clone(), s)).with_context(|| format!("input `{n}` has a dynamic shape; give --shape {n}=DIMS"))
        })
        .collect::<Result<_>>()?;
    let compiled =
        lower_within(&model, &shapes, args.max_arena).with_context(|| format!("compiling {}", args.model.display()))?;
    finish(&args, compiled)
}

/// Writes the micro model and says what it holds.
fn finish(args: &CompileArgs, compiled: lower::Compiled) -> Result<u8> {
    std::fs::write(&args.output, &compiled.bytes).with_context(|| format!("{}", args.output.display()))?;
    let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
    for (kind, _) in &compiled.ops {
        *histogram.entry(kind.as_str()).or_default() += 1;
    }
    if args.report {
        for (i, (kind, node)) in compiled.ops.iter().enumerate() {
            println!("  {i:>4} {kind:<15} {node}");
        }
    }
    let ops: Vec<String> = histogram.iter().map(|(k, v)| format!("{k}×{v}")).collect();
    println!("{} ops: {}", compiled.ops.len(), ops.join(" "));
    println!("flash: {} bytes ({} of weights, biases and tables)", compiled.bytes.len(), compiled.weight_bytes);
    println!("arena: {} bytes (exact), {} tensors", compiled.arena_bytes, compiled.tensors);
    for (first, second, bands) in &compiled.banding.pairs {
        println!("banded to fit --max-arena: {first} → {second} in {bands} bands");
    }
    if !compiled.banding.pairs.is_empty() {
        println!("rows computed twice: {} MACs more", compiled.banding.extra_macs);
    }
    println!("wrote {}", args.output.display());
    Ok(0)
}
