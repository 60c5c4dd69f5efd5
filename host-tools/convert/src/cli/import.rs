//! `import`: a TFLite model written as standard ONNX.

use anyhow::{bail, Context, Result};
use clap::Args;
use lepton_runtime::{onnx, Manifest};
use std::path::PathBuf;

/// Write a TFLite model (`.tflite`) as standard ONNX, for tools that want ONNX.
///
/// Every verb and the daemon take `.tflite` files directly (translated the same way when loaded);
/// `import` writes the translation down. The ONNX graph keeps the TFLite tensor names, shapes and
/// layout (NHWC): convolutions and pools sit between transposes, float16 and DEQUANTIZEd weights
/// become float32. onnxruntime loads the result and computes what LiteRT computes (the tests hold
/// both to LiteRT's reference kernels). Float models today; an operator, tensor type or variable
/// that is not translated is refused by name.
///
/// `--manifest` embeds a manifest, checked against the model as `pack` does.
///
/// Example: lepton-convert import face_detection_short_range.tflite -o face.onnx
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The TFLite model.
    model: PathBuf,
    /// Where to write the ONNX model.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// A manifest (TOML) to embed, as `pack` does.
    #[arg(long, value_name = "FILE.toml")]
    manifest: Option<PathBuf>,
}

/// Runs `import`.
pub fn run(args: ImportArgs) -> Result<u8> {
    let bytes = std::fs::read(&args.model).with_context(|| format!("{}", args.model.display()))?;
    if !lepton_tflite::is_tflite(&bytes) {
        bail!("{}: not a TFLite file (no `TFL3` identifier); ONNX models need no import", args.model.display());
    }
    let operators = lepton_tflite::TfliteModel::read(&bytes, &args.model)?.main().operators.len();
    let mut proto = onnx::decode(&bytes, &args.model)?;
    if let Some(path) = &args.manifest {
        let (inputs, outputs) = onnx::io_specs(&proto);
        Manifest::from_file(path)?.resolve(&inputs, &outputs, path)?;
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        onnx::set_manifest_text(&mut proto, &text);
    }
    onnx::write(&proto, &args.output)?;
    let graph = proto.graph.as_ref().context("the translation has a graph")?;
    eprintln!(
        "{} → {}: {operators} TFLite operators → {} ONNX nodes, {} initializers (opset {})",
        args.model.display(),
        args.output.display(),
        graph.node.len(),
        graph.initializer.len(),
        lepton_tflite::import::OPSET
    );
    Ok(0)
}
