//! `lepton-convert optimize`.

use anyhow::{Context, Result};
use clap::Args;
use lepton_convert::inputs;
use lepton_convert::optimize::{optimize, parse_value, Plan};
use lepton_runtime::engine::tract::InputFact;
use lepton_runtime::engine::TractEngine;
use lepton_runtime::onnx;
use std::path::PathBuf;

/// Make an exported model loadable and lean: freeze inputs, fix shapes, fold constants and control flow.
///
/// `--fix NAME=VALUE` turns an input into a constant (a number, a comma list, or a .npy file), for
/// example a sample-rate input. `--shape NAME=DIMS` fixes an input's dynamic dimensions. Then
/// constants are folded (evaluated by tract), `If` nodes whose condition became constant are
/// replaced by the branch they take, `Shape`/`Size` of tensors of known shape become constants,
/// stale `value_info` is dropped and unused nodes are removed. OUT is ONNX that lepton and
/// onnxruntime load; its outputs equal the original's for the frozen values.
///
/// Example: lepton-convert optimize silero_vad.onnx -o vad16k.onnx --fix sr=16000 --shape input=1x512 --shape state=2x1x128
#[derive(Args, Debug)]
pub struct OptimizeArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Where to write the optimized model.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Freeze an input: NAME=VALUE (number, comma list, or FILE.npy).
    #[arg(long = "fix", value_name = "NAME=VALUE")]
    fix: Vec<String>,
    /// Fix an input's shape: NAME=DIMS, e.g. x=1x3x224x224.
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    shapes: Vec<String>,
}

/// Runs `optimize`.
pub fn run(args: OptimizeArgs) -> Result<u8> {
    let mut model = onnx::read(&args.model)?;
    let (specs, _) = onnx::io_specs(&model);
    let mut plan = Plan::default();
    for (name, value) in inputs::split_named(&args.fix, &specs, "fix")? {
        let spec = specs.iter().find(|s| s.name == name).context("checked by split_named")?;
        let t = parse_value(&value, &spec.elem_type, spec.dims.as_deref()).with_context(|| format!("--fix {name}"))?;
        plan.fix.push((name, t));
    }
    for (name, dims) in inputs::split_named(&args.shapes, &specs, "shape")? {
        plan.shapes.push((name, inputs::parse_dims(&dims)?));
    }
    let summary = optimize(&mut model, &plan).with_context(|| format!("optimizing {}", args.model.display()))?;
    onnx::write(&model, &args.output)?;
    eprintln!(
        "{} → {}: {} nodes → {} ({} folded, {} If inlined, {} shapes resolved, {} unused removed)",
        args.model.display(),
        args.output.display(),
        summary.nodes_before,
        summary.nodes_after,
        summary.folded,
        summary.ifs_inlined,
        summary.shapes_resolved,
        summary.removed
    );
    // Prove it loads, with the shapes it now declares.
    let (specs, _) = onnx::io_specs(&model);
    let facts: Vec<InputFact> = lepton_convert::graph::input_shapes(&model, &Default::default())
        .into_iter()
        .filter_map(|(name, shape)| {
            let dtype = specs.iter().find(|s| s.name == name).and_then(|s| inputs::datum_type(&s.elem_type));
            shape.map(|shape| InputFact { name, shape, dtype })
        })
        .collect();
    match TractEngine::from_proto(&model, &args.output, &facts) {
        Ok(_) => eprintln!("{} loads in the engine", args.output.display()),
        Err(e) => {
            eprintln!("warning: {} still does not load: {e}", args.output.display());
            eprintln!("  hint: fix more inputs (--fix) or shapes (--shape) so control flow and shapes become constant");
            return Ok(2);
        }
    }
    Ok(0)
}
