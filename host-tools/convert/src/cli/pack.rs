//! `pack`: embed a manifest (TOML) into an ONNX model after checking it against the model.

use anyhow::{Context, Result};
use clap::Args;
use lepton_runtime::{onnx, Manifest};
use std::path::PathBuf;

/// Embed a manifest into a model, so the model file alone tells devices how to run it.
///
/// The manifest is validated first: its syntax and keys, then against the model (input rank and
/// size, layout, colour channels, label count against the output size). Errors name the field.
/// The output is the same ONNX model with the manifest in `metadata_props["lepton.manifest"]`;
/// any manifest already there is replaced.
///
/// Example: lepton-convert pack model.raw.onnx --manifest manifest.toml -o model.onnx
#[derive(Args, Debug)]
pub struct PackArgs {
    /// The ONNX model.
    model: PathBuf,
    /// The manifest, a TOML file (schema: README.md, "Model manifest").
    #[arg(long, value_name = "FILE.toml")]
    manifest: PathBuf,
    /// Where to write the model with its manifest (may be MODEL itself).
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
}

/// Runs `pack`.
pub fn run(args: PackArgs) -> Result<()> {
    let mut proto = onnx::read(&args.model)?;
    let (inputs, outputs) = onnx::io_specs(&proto);
    let manifest = Manifest::from_file(&args.manifest)?.resolve(&inputs, &outputs, &args.manifest)?;
    let text = std::fs::read_to_string(&args.manifest).with_context(|| format!("{}", args.manifest.display()))?;
    onnx::set_manifest_text(&mut proto, &text);
    onnx::write(&proto, &args.output)?;
    // Prove the result loads with its manifest, as a device would load it.
    lepton_runtime::Model::load(&args.output)
        .with_context(|| format!("{}: packed model does not load", args.output.display()))?;
    eprintln!(
        "packed {} ({}, {} labels) into {}",
        args.manifest.display(),
        manifest.task.name(),
        manifest.labels.len(),
        args.output.display()
    );
    if let Ok((layout, [w, h], color)) = manifest.image_input(&args.manifest) {
        eprintln!("  image input: {}, {w}x{h}, {}", layout.name(), color.name());
    }
    Ok(())
}
