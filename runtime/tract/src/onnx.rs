//! ONNX files as protobuf (and TFLite files, translated to ONNX on read): read with clear errors, read and write the embedded manifest
//! (`metadata_props["lepton.manifest"]`), list declared inputs and outputs with their symbolic
//! dimensions, and find operators the engine cannot run before trying to run them.

use lepton_core::error::{LeptonError, Result};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;
pub use tract_onnx::pb;
pub use tract_onnx::pb::ModelProto;

/// Metadata key under which the manifest (TOML text) travels inside the model.
pub const MANIFEST_KEY: &str = "lepton.manifest";

/// Reads and decodes an ONNX file.
pub fn read(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| LeptonError::io(path, e))?;
    decode(&bytes, path)
}

/// Decodes ONNX bytes; `path` names them in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    let not_onnx = |reason: String| LeptonError::NotOnnx { path: path.to_path_buf(), reason };
    if bytes.is_empty() {
        return Err(not_onnx("the file is empty".into()));
    }
    let proto = if lepton_tflite::is_tflite(bytes) {
        // A TFLite model is taken wherever an ONNX one is: translated to ONNX here, once.
        lepton_tflite::import::to_onnx(bytes, path)
            .map_err(|e| LeptonError::Tflite { path: path.to_path_buf(), reason: e.reason })?
    } else {
        ModelProto::decode(bytes).map_err(|e| not_onnx(format!("{e} (truncated or not an ONNX protobuf)")))?
    };
    match &proto.graph {
        Some(g) if !g.node.is_empty() || !g.output.is_empty() => {}
        _ => return Err(not_onnx("it holds no graph".into())),
    }
    if proto.opset_import.is_empty() {
        return Err(not_onnx("it declares no opset (not an ONNX model, or truncated)".into()));
    }
    if let Some(g) = &proto.graph {
        check_outputs(g, &[]).map_err(not_onnx)?;
    }
    Ok(proto)
}

/// Every output of a graph (and of each subgraph, which may also use its parents' names) is
/// produced by something: a node, an initializer or an input.
fn check_outputs(g: &pb::GraphProto, outer: &[&str]) -> std::result::Result<(), String> {
    let mut known: Vec<&str> = outer.to_vec();
    known.extend(g.input.iter().map(|i| i.name.as_str()));
    known.extend(g.initializer.iter().map(|t| t.name.as_str()));
    known.extend(g.node.iter().flat_map(|n| n.output.iter().map(String::as_str)));
    let names: std::collections::HashSet<&str> = known.iter().copied().collect();
    if let Some(o) = g.output.iter().find(|o| !names.contains(o.name.as_str())) {
        return Err(format!("graph `{}`: output `{}` is computed by no node", g.name, o.name));
    }
    for n in &g.node {
        for a in &n.attribute {
            for sub in a.g.iter().chain(a.graphs.iter()) {
                check_outputs(sub, &known)?;
            }
        }
    }
    Ok(())
}

/// Writes a model to `path`.
pub fn write(proto: &ModelProto, path: &Path) -> Result<()> {
    std::fs::write(path, proto.encode_to_vec()).map_err(|e| LeptonError::io(path, e))
}

/// The embedded manifest text, if any.
pub fn manifest_text(proto: &ModelProto) -> Option<&str> {
    proto.metadata_props.iter().find(|p| p.key == MANIFEST_KEY).map(|p| p.value.as_str())
}

/// Embeds (or replaces) the manifest text.
pub fn set_manifest_text(proto: &mut ModelProto, text: &str) {
    proto.metadata_props.retain(|p| p.key != MANIFEST_KEY);
    proto.metadata_props.push(pb::StringStringEntryProto { key: MANIFEST_KEY.into(), value: text.into() });
}

/// The declared form of an engine's input or output (fixed dimensions; int8 for quantized ones).
pub fn spec_of(info: &lepton_core::engine::TensorInfo) -> TensorSpec {
    use lepton_core::tensor::DType;
    let elem_type = match info.dtype {
        Some(DType::F32) => "FLOAT",
        Some(DType::I8) => "INT8",
        Some(DType::U8) => "UINT8",
        Some(DType::I32) => "INT32",
        None => "UNDEFINED",
    };
    TensorSpec {
        name: info.name.clone(),
        elem_type: elem_type.into(),
        dims: Some(info.shape.iter().map(|&d| Dim::Fixed(d)).collect()),
    }
}

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named symbolic size (`batch`, `N`).
    Symbol(String),
    /// Not declared.
    Unknown,
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A graph input or output as the file declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// ONNX element type name (`FLOAT`, `INT64`, ...).
    pub elem_type: String,
    /// Declared shape; `None` when the file declares no shape at all.
    pub dims: Option<Vec<Dim>>,
}

impl TensorSpec {
    /// The shape as `1x3xHxW`-style text.
    pub fn shape_text(&self) -> String {
        match &self.dims {
            None => "(unknown)".into(),
            Some(d) if d.is_empty() => "scalar".into(),
            Some(d) => d.iter().map(Dim::to_string).collect::<Vec<_>>().join("x"),
        }
    }
}

fn spec(v: &pb::ValueInfoProto) -> TensorSpec {
    let tensor = v.r#type.as_ref().and_then(|t| match &t.value {
        Some(pb::type_proto::Value::TensorType(t)) => Some(t),
        _ => None,
    });
    let elem_type = tensor
        .and_then(|t| pb::tensor_proto::DataType::try_from(t.elem_type).ok())
        .map_or("UNDEFINED", |d| d.as_str_name())
        .to_string();
    let dims = tensor.and_then(|t| t.shape.as_ref()).map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as usize),
                Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Symbol(p.clone()),
                _ => Dim::Unknown,
            })
            .collect()
    });
    TensorSpec { name: v.name.clone(), elem_type, dims }
}

/// Declared graph inputs (initializers excluded) and outputs.
pub fn io_specs(proto: &ModelProto) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
    let Some(g) = &proto.graph else {
        return (vec![], vec![]);
    };
    let initializers: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = g.input.iter().filter(|i| !initializers.contains(i.name.as_str())).map(spec).collect();
    let outputs = g.output.iter().map(spec).collect();
    (inputs, outputs)
}

/// Nodes (name, operator) whose operator tract-onnx has no implementation for.
pub fn unsupported_ops(proto: &ModelProto) -> Vec<(String, String)> {
    let register = tract_onnx::onnx().op_register;
    let mut out = vec![];
    let Some(g) = &proto.graph else { return out };
    for (i, n) in g.node.iter().enumerate() {
        if !register.0.contains_key(&n.op_type) {
            let name = if n.name.is_empty() { format!("#{i}") } else { n.name.clone() };
            let op = if n.domain.is_empty() { n.op_type.clone() } else { format!("{}.{}", n.domain, n.op_type) };
            out.push((name, op));
        }
    }
    out
}

impl TensorSpec {
    /// The declared shape made concrete: fixed dimensions as they are, a symbolic or unknown
    /// first (batch) dimension taken as 1; `None` when another dimension is not fixed.
    pub fn concrete_shape(&self) -> Option<Vec<usize>> {
        self.dims.as_ref().and_then(|dims| {
            dims.iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Dim::Fixed(n) => Some(*n),
                    _ if i == 0 => Some(1),
                    _ => None,
                })
                .collect()
        })
    }
}

/// Concrete shapes of the model's inputs: from `given` (by name), else
/// [`TensorSpec::concrete_shape`]. `None` for an input whose other dims are unknown.
pub fn input_shapes(model: &ModelProto, given: &HashMap<String, Vec<usize>>) -> Vec<(String, Option<Vec<usize>>)> {
    let (inputs, _) = io_specs(model);
    inputs
        .into_iter()
        .map(|spec| {
            let shape = given.get(&spec.name).cloned().or_else(|| spec.concrete_shape());
            (spec.name, shape)
        })
        .collect()
}

/// Shapes of every tensor of the top-level graph (by ONNX name), as tract infers them for the
/// given input shapes. The error is tract's explanation when the graph cannot be analysed.
pub fn tensor_shapes(
    model: &ModelProto,
    inputs: &[(String, Vec<usize>)],
) -> std::result::Result<HashMap<String, Vec<usize>>, String> {
    // tract may panic on a malformed graph: that is an error here too.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| infer_shapes(model, inputs)))
        .unwrap_or_else(|p| Err(format!("analysing the graph: tract failed ({})", crate::guard::panic_message(&*p))))
}

fn infer_shapes(
    model: &ModelProto,
    inputs: &[(String, Vec<usize>)],
) -> std::result::Result<HashMap<String, Vec<usize>>, String> {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_hir::infer::Factoid;
    let err = |e: TractError| format!("{e:#}");
    let mut m = tract_onnx::onnx().with_ignore_value_info(true).parse(model, None).map_err(err)?.model;
    let names: Vec<String> = m.input_outlets().map_err(err)?.iter().map(|o| m.node(o.node).name.clone()).collect();
    for (ix, name) in names.iter().enumerate() {
        let shape = inputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| format!("no shape for input `{name}`"))?;
        let dt = m.input_fact(ix).map_err(err)?.datum_type.concretize().unwrap_or(DatumType::F32);
        m.set_input_fact(ix, InferenceFact::dt_shape(dt, shape)).map_err(err)?;
    }
    let typed = m.into_typed().map_err(|e| format!("analysing the graph: {e:#}"))?;
    let mut shapes = HashMap::new();
    for node in typed.nodes() {
        for (ix, fact) in node.outputs.iter().enumerate() {
            let outlet = OutletId::new(node.id, ix);
            let label = typed.outlet_label(outlet).map(str::to_string).unwrap_or_else(|| node.name.clone());
            if let Some(s) = fact.fact.shape.as_concrete() {
                shapes.insert(label, s.to_vec());
            }
        }
    }
    Ok(shapes)
}
