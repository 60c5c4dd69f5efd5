//! `inspect` of a TensorFlow Lite file: tensors with their TFLite names, types and quantization,
//! the operator histogram, parameters and MACs, read from the file with `lepton-tflite`.

use super::{Quantization, Report, TensorReport};
use anyhow::Result;
use lepton_tflite::{ElementType, OpKind, Subgraph, Tensor, TfliteModel};
use std::collections::BTreeMap;
use std::path::Path;

/// How the engines take a TFLite file: translated to ONNX on read (`lepton_tflite::import`).
const TRANSLATED: &str =
    "translated to ONNX on load (float operators on tract); `lepton-convert import` writes the ONNX";

/// How the engines take a quantized TFLite file: compiled for the micro engine on read
/// (`lepton_compile::lower_tflite`).
const COMPILED: &str =
    "compiled for the micro engine on load (TFLite's integer arithmetic, bit for bit as LiteRT's reference kernels)";

/// A tensor's type as `inspect` prints it: `INT8 (scale 0.1, zero point -128)`.
fn elem_type(t: &Tensor<'_>) -> String {
    match &t.quantization {
        None => t.element.name().to_string(),
        Some(q) if q.per_channel() => {
            format!("{} (per channel, {} scales on axis {})", t.element.name(), q.scale.len(), q.axis)
        }
        Some(q) => format!("{} (scale {}, zero point {})", t.element.name(), q.scale[0], q.zero_point[0]),
    }
}

/// A tensor's shape as `inspect` prints it; dynamic dimensions (-1 in the signature) are `?`.
fn shape(t: &Tensor<'_>) -> String {
    match &t.signature {
        Some(sig) if sig.contains(&-1) => {
            sig.iter().map(|&d| if d < 0 { "?".to_string() } else { d.to_string() }).collect::<Vec<_>>().join("x")
        }
        _ => crate::model_file::shape_text(&t.shape),
    }
}

/// Multiply-accumulates of the convolutions and fully connected layers of `g` (TFLite shapes are
/// static: output elements times the weights' reduction size).
fn macs(g: &Subgraph<'_>) -> u64 {
    let mut total = 0u64;
    for op in &g.operators {
        let (Some(&out), Some(Some(w))) = (op.outputs.first(), op.inputs.get(1)) else { continue };
        let (out, w) = (&g.tensors[out], &g.tensors[*w].shape);
        let per_output: u64 = match op.kind.name().as_ref() {
            // Weights OHWI: each output sums H·W·I products.
            "CONV_2D" | "FULLY_CONNECTED" => w.iter().skip(1).map(|&d| d as u64).product(),
            // Weights 1HWO: each output sums H·W products.
            "DEPTHWISE_CONV_2D" => w.iter().skip(1).take(2).map(|&d| d as u64).product(),
            _ => 0,
        };
        total = total.saturating_add(out.elements().saturating_mul(per_output));
    }
    total
}

/// How the model is quantized: int8 or uint8 integer tensors between the ops, or float with
/// weights stored as float16 or int8 (dequantized on load), or plain float.
fn quantization(model: &TfliteModel<'_>, execution: String) -> Quantization {
    let g = model.main();
    let weighted =
        |kind: &OpKind<'_>| matches!(kind.name().as_ref(), "CONV_2D" | "DEPTHWISE_CONV_2D" | "FULLY_CONNECTED");
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    for op in g.operators.iter().filter(|o| weighted(&o.kind)) {
        if let Some(Some(x)) = op.inputs.first() {
            *by_type.entry(g.tensors[*x].element.name()).or_default() += 1;
        }
    }
    let integer = by_type.get("INT8").copied().unwrap_or(0)
        + by_type.get("UINT8").copied().unwrap_or(0)
        + by_type.get("INT16").copied().unwrap_or(0);
    let format = if integer > 0 {
        let kinds: Vec<&str> = by_type.keys().copied().filter(|k| !k.starts_with("FLOAT")).collect();
        kinds.join("+").to_lowercase()
    } else if g.tensors.iter().any(|t| t.element == ElementType::Float16 && t.data.is_some()) {
        "float (float16 weights)".into()
    } else {
        "float".into()
    };
    Quantization { format, quantized_nodes: integer, execution }
}

/// The report of a TFLite file (every subgraph's operators counted; inputs, outputs, MACs of the
/// entry subgraph).
pub fn inspect(path: &Path, bytes: &[u8]) -> Result<Report> {
    let model = TfliteModel::read(bytes, path)?;
    let g = model.main();
    let report = |&i: &usize| TensorReport {
        name: g.tensors[i].name.to_string(),
        elem_type: elem_type(&g.tensors[i]),
        shape: shape(&g.tensors[i]),
    };
    let (mut ops, mut nodes, mut parameters, mut parameter_bytes) = (BTreeMap::new(), 0, 0u64, 0u64);
    let mut subgraphs = Vec::new();
    for (k, s) in model.subgraphs.iter().enumerate() {
        let mut own = BTreeMap::new();
        for op in &s.operators {
            nodes += 1;
            *ops.entry(op.kind.name().into_owned()).or_insert(0) += 1;
            *own.entry(op.kind.name().into_owned()).or_insert(0) += 1;
        }
        subgraphs.push((if s.name.is_empty() { format!("subgraph {k}") } else { s.name.to_string() }, own));
        for t in s.tensors.iter().filter(|t| t.data.is_some()) {
            parameters += t.elements();
            parameter_bytes += t.data.map_or(0, |d| d.len() as u64);
        }
    }
    let runtime =
        model.metadata("min_runtime_version").map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_string());
    let mut producer = format!("TFLite schema v{}", model.version);
    if let Some(d) = model.description.filter(|d| !d.is_empty()) {
        producer += &format!(", {d}");
    }
    if let Some(r) = runtime.filter(|r| !r.is_empty()) {
        producer += &format!(", needs TFLite {r}");
    }
    // What the engines make of it: a quantized model compiled for the micro engine; a float one
    // translated to ONNX, then the operators tract lacks.
    let quantized = lepton_runtime::engine::micro::lower::tflite_quantized(&model);
    let load_error = if quantized {
        lepton_runtime::engine::micro::lower::lower_tflite(&model, "")
            .err()
            .map(|e| format!("not compiled for the micro engine: {e}"))
    } else {
        match lepton_tflite::import::translate(&model) {
            Ok(proto) => lepton_runtime::onnx::unsupported_ops(&proto).first().map(|(node, op)| {
                format!("translated, but node `{node}` uses `{op}`, which the engine does not support")
            }),
            Err(reason) => Some(format!("not translated for the engines: {reason}")),
        }
    };
    let execution = load_error.clone().unwrap_or_else(|| if quantized { COMPILED.into() } else { TRANSLATED.into() });
    Ok(Report {
        file: path.display().to_string(),
        file_bytes: bytes.len() as u64,
        producer,
        opset: 0,
        inputs: g.inputs.iter().map(report).collect(),
        outputs: g.outputs.iter().map(report).collect(),
        ops,
        nodes,
        parameters,
        parameter_bytes,
        macs: Some(macs(g)),
        macs_note: None,
        macs_shapes: g.inputs.iter().map(|&i| (g.tensors[i].name.to_string(), g.tensors[i].shape.clone())).collect(),
        manifest: None,
        quantization: quantization(&model, execution),
        unsupported: vec![],
        engine: match (&load_error, quantized) {
            (Some(_), _) => "none",
            (None, true) => "micro",
            (None, false) => "tract",
        }
        .into(),
        load_error,
        subgraphs,
        kernels: None,
    })
}
