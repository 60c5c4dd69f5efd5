//! `lepton-convert inspect`.

use anyhow::Result;
use clap::Args;
use lepton_convert::inspect::{inspect, Report};
use std::path::PathBuf;

/// Show what a model is: inputs and outputs, operators, size, MACs, manifest, quantization, and
/// how this host runs it (engine, and the micro engine's kernel set).
///
/// MODEL is an ONNX file, a micro model (.lpm) or a TFLite file (.tflite: tensors keep their
/// TFLite names and types, with their quantization; the engines do not run TFLite files yet). Shapes print with their symbolic dimensions (`batchx3xheightxwidth`). MACs are estimated for the
/// manifest's input size, or the declared shapes with a symbolic batch taken as 1. A model the
/// engine cannot load is still described from the file, with the reason it does not load; the
/// exit code is then 2.
///
/// Example: lepton-convert inspect models/digits/model.onnx
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The model: ONNX, .lpm or .tflite (told apart by content).
    model: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// A name from the model file, with control characters escaped (a file cannot drive the terminal).
fn shown(name: &str) -> String {
    name.escape_debug().to_string()
}

fn print(r: &Report) {
    let opset = if r.opset > 0 { format!(", opset {}", r.opset) } else { String::new() };
    println!(
        "{} ({} bytes, {}{opset})",
        r.file,
        r.file_bytes,
        if r.producer.is_empty() { "unknown producer".to_string() } else { shown(&r.producer) },
    );
    println!("inputs:");
    for t in &r.inputs {
        println!("  {:<24} {:<8} {}", shown(&t.name), t.elem_type, t.shape);
    }
    println!("outputs:");
    for t in &r.outputs {
        println!("  {:<24} {:<8} {}", shown(&t.name), t.elem_type, t.shape);
    }
    println!("parameters: {} ({}B)", human(r.parameters), human(r.parameter_bytes));
    match r.macs {
        Some(m) => {
            let shapes: Vec<String> = r
                .macs_shapes
                .iter()
                .map(|(n, s)| format!("{n}={}", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")))
                .collect();
            println!("MACs: {} per inference (for {})", human(m), shapes.join(", "));
        }
        None => println!("MACs: unknown{}", r.macs_note.as_ref().map_or(String::new(), |n| format!(" ({n})"))),
    }
    println!(
        "quantization: {} ({} quantized nodes) — {}",
        r.quantization.format, r.quantization.quantized_nodes, r.quantization.execution
    );
    match &r.kernels {
        Some(k) => println!(
            "engine on this host: {} ({k} kernels; LEPTON_KERNELS=reference forces the portable ones)",
            r.engine
        ),
        None => println!("engine on this host: {}", r.engine),
    }
    let ops: Vec<String> = r.ops.iter().map(|(k, v)| format!("{}×{v}", shown(k))).collect();
    let what = if r.quantization.format == "lpm" { "ops" } else { "nodes" };
    println!("operators ({} {what}): {}", r.nodes, ops.join(" "));
    if r.subgraphs.len() > 1 {
        for (name, ops) in &r.subgraphs {
            let ops: Vec<String> = ops.iter().map(|(k, v)| format!("{}×{v}", shown(k))).collect();
            println!("  subgraph {}: {}", shown(name), ops.join(" "));
        }
    }
    match &r.manifest {
        Some(m) => {
            println!("manifest:");
            for l in m.lines() {
                println!("  {l}");
            }
        }
        None => println!("manifest: none (embed one with `lepton-convert pack`)"),
    }
    for (node, op) in &r.unsupported {
        println!("unsupported: node `{}` uses `{}`", shown(node), shown(op));
    }
    if let Some(e) = &r.load_error {
        println!("does not load: {e}");
        if r.engine == "none" {
            return;
        }
        println!("  hint: `lepton-convert optimize MODEL -o OUT --fix NAME=VALUE --shape NAME=DIMS` freezes inputs, fixes shapes and folds control flow");
    }
}

/// Runs `inspect`; exit code 2 when the model does not load.
pub fn run(args: InspectArgs) -> Result<u8> {
    let report = inspect(&args.model)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report);
    }
    Ok(if report.load_error.is_some() { 2 } else { 0 })
}
