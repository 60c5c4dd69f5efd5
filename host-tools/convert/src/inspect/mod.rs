//! `inspect`: what a model is — inputs and outputs, operators, parameters, estimated MACs, the
//! embedded manifest, and how this host runs it: which engine, and for the int8 micro engine
//! which kernel set. ONNX files, micro models (`.lpm`) and TFLite files (`tflite`) alike.

pub mod tflite;

use crate::graph;
use anyhow::Result;
use lepton_runtime::onnx::{self, ModelProto};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One input or output.
#[derive(Debug, Serialize)]
pub struct TensorReport {
    /// Name.
    pub name: String,
    /// ONNX element type.
    pub elem_type: String,
    /// Shape with symbolic dimensions by name (`batchx3x224x224`).
    pub shape: String,
}

/// How the model is quantized and how the engine runs it.
#[derive(Debug, Serialize)]
pub struct Quantization {
    /// `float`, `qdq` (QuantizeLinear/DequantizeLinear around float ops) or `qoperator`
    /// (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger).
    pub format: String,
    /// Quantized operator nodes (QDQ: float nodes fed by DequantizeLinear weights).
    pub quantized_nodes: usize,
    /// How the engine executes it.
    pub execution: String,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The model file.
    pub file: String,
    /// File size in bytes.
    pub file_bytes: u64,
    /// Producer name and version.
    pub producer: String,
    /// Default-domain opset.
    pub opset: i64,
    /// Graph inputs (initializers excluded).
    pub inputs: Vec<TensorReport>,
    /// Graph outputs.
    pub outputs: Vec<TensorReport>,
    /// Operator histogram, subgraphs included.
    pub ops: BTreeMap<String, usize>,
    /// Each subgraph's name and operator histogram, where the format has several (TFLite: the
    /// entry subgraph first, then e.g. CALL_ONCE's initializer); empty for ONNX and `.lpm`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subgraphs: Vec<(String, BTreeMap<String, usize>)>,
    /// Total nodes, subgraphs included.
    pub nodes: usize,
    /// Parameters (elements of initializers and constant tensors).
    pub parameters: u64,
    /// Their size in bytes.
    pub parameter_bytes: u64,
    /// Multiply-accumulates per inference for the shapes in `macs_shapes`, if the graph could be analysed.
    pub macs: Option<u64>,
    /// Why MACs are unknown, when they are.
    pub macs_note: Option<String>,
    /// The input shapes MACs were estimated for.
    pub macs_shapes: Vec<(String, Vec<usize>)>,
    /// The embedded manifest (TOML), if any.
    pub manifest: Option<String>,
    /// Quantization and execution.
    pub quantization: Quantization,
    /// Operators tract cannot run (node, op).
    pub unsupported: Vec<(String, String)>,
    /// Why the engine could not load or analyse the model, if it could not.
    pub load_error: Option<String>,
    /// The engine this host runs it on by default: `tract`, `micro`, or `none` (TFLite files).
    pub engine: String,
    /// The micro engine's kernel set on this host (`LEPTON_KERNELS` forces one).
    pub kernels: Option<String>,
}

fn tensor_report(s: &onnx::TensorSpec) -> TensorReport {
    TensorReport { name: s.name.clone(), elem_type: s.elem_type.clone(), shape: s.shape_text() }
}

/// Builds the report; a model the engine cannot load still gets everything the file itself tells.
pub fn inspect(path: &Path) -> Result<Report> {
    let bytes = std::fs::read(path).map_err(|e| lepton_runtime::LeptonError::io(path, e))?;
    if bytes.starts_with(&lepton_runtime::engine::micro::format::MAGIC) {
        return inspect_lpm(path, &bytes);
    }
    if lepton_runtime::wake_word::is_json(&bytes) {
        // A microWakeWord description: the micro model it compiles to, manifest included.
        return inspect_lpm(path, &lepton_runtime::wake_word::compile(&bytes, path)?);
    }
    if lepton_tflite::is_tflite(&bytes) {
        return tflite::inspect(path, &bytes);
    }
    let model = onnx::decode(&bytes, path)?;
    let file_bytes = bytes.len() as u64;
    let graph = model.graph.as_ref().expect("onnx::decode checks the graph");
    let (inputs, outputs) = onnx::io_specs(&model);
    let mut ops = BTreeMap::new();
    let mut nodes = 0;
    graph::walk_nodes(graph, &mut |n| {
        nodes += 1;
        let op = if n.domain.is_empty() || n.domain == "ai.onnx" {
            n.op_type.clone()
        } else {
            format!("{}.{}", n.domain, n.op_type)
        };
        *ops.entry(op).or_insert(0) += 1;
    });
    let (mut parameters, mut parameter_bytes) = (0u64, 0u64);
    graph::walk_graphs(graph, &mut |g| {
        for t in graph::constants(g).values() {
            parameters += graph::volume(t);
            parameter_bytes += graph::volume(t) * graph::elem_bytes(t.data_type);
        }
    });
    let manifest = onnx::manifest_text(&model).map(str::to_string);
    let given = manifest_shapes(&model, &inputs, &outputs, path);
    let shapes = graph::input_shapes(&model, &given);
    let unsupported = onnx::unsupported_ops(&model);
    let mut load_error = None;
    let mut macs = None;
    let mut macs_note = None;
    let concrete: Option<Vec<(String, Vec<usize>)>> =
        shapes.iter().map(|(n, s)| s.clone().map(|s| (n.clone(), s))).collect();
    match &concrete {
        Some(c) if unsupported.is_empty() => match graph::tensor_shapes(&model, c) {
            Ok(tensor_shapes) => macs = Some(count_macs(&model, &tensor_shapes)),
            Err(e) => load_error = Some(e),
        },
        Some(_) => {
            let (node, op) = &unsupported[0];
            load_error = Some(format!("node `{node}` uses `{op}`, which the engine does not support"));
        }
        None => {
            let dynamic: Vec<&str> = shapes.iter().filter(|(_, s)| s.is_none()).map(|(n, _)| n.as_str()).collect();
            macs_note = Some(format!(
                "input(s) {} have dynamic sizes; embed a manifest (`input.size`) or fix shapes with `lepton-convert optimize --shape`",
                dynamic.join(", ")
            ));
        }
    }
    let mut quantization = quantization(&model, &ops);
    let (mut engine, mut kernels) = ("tract", None);
    if quantization.format == "qdq" {
        if let Some(c) = &concrete {
            quantization.execution = match lepton_runtime::engine::micro::lower::lower(&model, c) {
                Ok(compiled) => {
                    use lepton_runtime::engine::micro::kernels::Isa;
                    let isa = Isa::selected()?;
                    let size = format!("{} integer ops, {} bytes of arena", compiled.ops.len(), compiled.arena_bytes);
                    if isa == Isa::Reference {
                        format!(
                            "lepton runs it on tract on this CPU: the int8 micro engine takes it ({size}) but has only its portable kernels here, slower than tract (--engine micro forces it)"
                        )
                    } else {
                        (engine, kernels) = ("micro", Some(isa));
                        format!("lepton runs it on its int8 micro engine with the {isa} kernels on this CPU: {size}")
                    }
                }
                Err(e) => format!("{}; the int8 micro engine cannot take it: {e}", quantization.execution),
            };
        }
    }
    Ok(Report {
        file: path.display().to_string(),
        file_bytes,
        producer: format!("{} {}", model.producer_name, model.producer_version).trim().to_string(),
        opset: model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(0, |o| o.version),
        inputs: inputs.iter().map(tensor_report).collect(),
        outputs: outputs.iter().map(tensor_report).collect(),
        nodes,
        parameters,
        parameter_bytes,
        macs,
        macs_note,
        macs_shapes: concrete.clone().unwrap_or_default(),
        manifest,
        quantization,
        unsupported,
        load_error,
        ops,
        subgraphs: vec![],
        engine: engine.into(),
        kernels: kernels.map(|k| k.name().to_string()),
    })
}

/// The report of a micro model: its tensors, ops, constants and arena, from the file.
fn inspect_lpm(path: &Path, bytes: &[u8]) -> Result<Report> {
    use lepton_runtime::engine::micro::format::{Op, VERSION};
    use lepton_runtime::engine::micro::host::{onnx_shape, MAX_TENSORS};
    use lepton_runtime::engine::micro::Interpreter;
    let interp = Interpreter::<MAX_TENSORS>::new(bytes)
        .map_err(|e| lepton_runtime::LeptonError::Model { path: path.to_path_buf(), reason: e.to_string() })?;
    let t = interp.tensors();
    let report = |id: &u16| {
        let d = &t[*id as usize];
        let elem_type = if d.per_channel() {
            let channels: Vec<String> =
                (0..d.shape[3] as usize).map(|c| d.channel_quant(c)).map(|(s, z)| format!("{s}/{z}")).collect();
            format!("INT8 (per channel, scale/zero point: {})", channels.join(" "))
        } else {
            format!("INT8 (scale {}, zero point {})", d.scale, d.zero_point)
        };
        TensorReport { name: d.name.to_string(), elem_type, shape: crate::model_file::shape_text(&onnx_shape(d)) }
    };
    let (mut ops, mut nodes, mut parameters, mut parameter_bytes, mut macs) = (BTreeMap::new(), 0, 0u64, 0u64, 0u64);
    for op in interp.ops() {
        let op =
            op.map_err(|e| lepton_runtime::LeptonError::Model { path: path.to_path_buf(), reason: e.to_string() })?;
        nodes += 1;
        *ops.entry(op.name().to_string()).or_insert(0) += 1;
        let vol = |id: u16| t[id as usize].len() as u64;
        match op {
            Op::Conv(c) => {
                parameters += (c.weights.len() + c.bias.len() / 4) as u64;
                parameter_bytes += (c.weights.len() + c.bias.len() + c.requant.len()) as u64;
                macs += vol(c.output) * (c.weights.len() as u64 / (t[c.output as usize].shape[3] as u64).max(1));
            }
            Op::FullyConnected(f) => {
                parameters += (f.weights.len() + f.bias.len() / 4) as u64;
                parameter_bytes += (f.weights.len() + f.bias.len() + f.requant.len()) as u64;
                macs += t[f.input as usize].shape[0] as u64 * f.weights.len() as u64;
            }
            Op::Lut { table, .. } | Op::Softmax { table, .. } | Op::Const { data: table, .. } => {
                parameter_bytes += table.len() as u64
            }
            _ => {}
        }
    }
    let kernels = lepton_runtime::engine::micro::kernels::Isa::selected()?;
    Ok(Report {
        file: path.display().to_string(),
        file_bytes: bytes.len() as u64,
        producer: format!("Lepton micro model (.lpm version {VERSION})"),
        opset: 0,
        inputs: interp.header().inputs.iter().map(report).collect(),
        outputs: interp.header().outputs.iter().map(report).collect(),
        ops,
        nodes,
        parameters,
        parameter_bytes,
        macs: Some(macs),
        macs_note: None,
        macs_shapes: interp
            .header()
            .inputs
            .iter()
            .map(|i| (t[*i as usize].name.to_string(), onnx_shape(&t[*i as usize])))
            .collect(),
        manifest: Some(interp.header().manifest).filter(|m| !m.is_empty()).map(str::to_string),
        quantization: Quantization {
            format: "lpm".into(),
            quantized_nodes: nodes,
            execution: format!(
                "the int8 micro engine runs it with the {kernels} kernels on this CPU, in an arena of {} bytes",
                interp.arena_bytes()
            ),
        },
        unsupported: vec![],
        load_error: None,
        subgraphs: vec![],
        engine: "micro".into(),
        kernels: Some(kernels.name().to_string()),
    })
}

/// Input shapes implied by an embedded manifest (image tasks).
fn manifest_shapes(
    model: &ModelProto,
    inputs: &[onnx::TensorSpec],
    outputs: &[onnx::TensorSpec],
    path: &Path,
) -> HashMap<String, Vec<usize>> {
    let mut given = HashMap::new();
    let Ok(Some(m)) = onnx::resolve_manifest(model, inputs, outputs, path) else {
        return given;
    };
    if let Some(shape) = m.image_input_shape() {
        let name = m.input.as_ref().and_then(|i| i.name.clone()).or_else(|| inputs.first().map(|s| s.name.clone()));
        if let Some(name) = name {
            given.insert(name, shape.to_vec());
        }
    }
    given
}

/// Multiply-accumulates of convolutions and matrix products.
pub fn count_macs(model: &ModelProto, shapes: &HashMap<String, Vec<usize>>) -> u64 {
    let graph = model.graph.as_ref().expect("checked on read");
    let consts = graph::constants(graph);
    let dims_of = |name: &str| -> Option<Vec<usize>> {
        shapes
            .get(name)
            .cloned()
            .or_else(|| consts.get(name).map(|t| t.dims.iter().map(|&d| d.max(0) as usize).collect()))
    };
    let vol = |s: &[usize]| s.iter().product::<usize>() as u64;
    let mut total = 0u64;
    for n in &graph.node {
        let out = n.output.first().and_then(|o| shapes.get(o));
        let w_index = match n.op_type.as_str() {
            "Conv" | "ConvInteger" | "ConvTranspose" => 1,
            "QLinearConv" => 3,
            _ => usize::MAX,
        };
        match n.op_type.as_str() {
            "Conv" | "ConvInteger" | "QLinearConv" => {
                if let (Some(out), Some(w)) = (out, n.input.get(w_index).and_then(|w| dims_of(w))) {
                    total += vol(out) * vol(&w[1..]);
                }
            }
            "ConvTranspose" => {
                if let (Some(x), Some(w)) =
                    (n.input.first().and_then(|x| dims_of(x)), n.input.get(1).and_then(|w| dims_of(w)))
                {
                    total += vol(&x) * vol(&w[1..]);
                }
            }
            "Gemm" | "MatMul" | "MatMulInteger" | "QLinearMatMul" => {
                let a = n.input.first().and_then(|a| dims_of(a));
                if let (Some(out), Some(a)) = (out, a) {
                    let trans_a = n.op_type == "Gemm" && graph::attr_i(n, "transA", 0) != 0;
                    let k = if trans_a { a.get(a.len().wrapping_sub(2)).copied() } else { a.last().copied() };
                    total += vol(out) * k.unwrap_or(0) as u64;
                }
            }
            _ => {}
        }
    }
    total
}

fn quantization(model: &ModelProto, ops: &BTreeMap<String, usize>) -> Quantization {
    let count = |k: &str| ops.get(k).copied().unwrap_or(0);
    let qop = count("QLinearConv") + count("QLinearMatMul") + count("ConvInteger") + count("MatMulInteger");
    let graph = model.graph.as_ref().expect("checked on read");
    let dq_outputs: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "DequantizeLinear")
        .filter_map(|n| n.output.first().map(String::as_str))
        .collect();
    let qdq = graph
        .node
        .iter()
        .filter(|n| matches!(n.op_type.as_str(), "Conv" | "MatMul" | "Gemm" | "ConvTranspose"))
        .filter(|n| n.input.get(1).is_some_and(|w| dq_outputs.contains(w.as_str())))
        .count();
    if qop > 0 {
        Quantization {
            format: "qoperator".into(),
            quantized_nodes: qop,
            execution: "tract runs QLinearConv/QLinearMatMul/ConvInteger/MatMulInteger with integer kernels".into(),
        }
    } else if qdq > 0 {
        Quantization {
            format: "qdq".into(),
            quantized_nodes: qdq,
            execution: "tract runs QDQ convolutions and matrix products as float with fake quantization (int8 storage, float speed or slower)".into(),
        }
    } else {
        Quantization { format: "float".into(), quantized_nodes: 0, execution: "float kernels".into() }
    }
}
