//! A checked TFLite model as standard ONNX (opset 13), for the engines and for users who want ONNX.
//!
//! The graph keeps TFLite's layout (NHWC) and names: its inputs and outputs are the TFLite ones,
//! with their shapes; convolutions and pools, which ONNX defines on NCHW, are wrapped in a pair
//! of transposes. Weights stored as float16, or as int8 behind a DEQUANTIZE, become float32
//! initializers (what LiteRT computes with). Each operator is translated by `ops`, which refuses
//! by name what it does not translate: never a guess.
//!
//! Float models only, for now: a model whose activations are quantized (int8 or uint8 tensors
//! between operators) is refused with that reason, as is a model with state (variables); those
//! run on the micro engine as they are (`lepton-compile`'s `lower_tflite`).

mod ops;

use crate::{ElementType, Subgraph, Tensor, TfliteError, TfliteModel};
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::pb;

/// The ONNX opset the translation writes.
pub const OPSET: i64 = 13;

/// Reads a `.tflite` file's bytes and translates its entry subgraph to ONNX; errors name `path`,
/// and the operator or tensor at fault.
pub fn to_onnx(bytes: &[u8], path: &Path) -> Result<pb::ModelProto, TfliteError> {
    let model = TfliteModel::read(bytes, path)?;
    translate(&model).map_err(|reason| TfliteError { path: path.to_path_buf(), reason })
}

/// Translates a checked model; the error says which operator or tensor cannot be translated.
pub fn translate(model: &TfliteModel<'_>) -> Result<pb::ModelProto, String> {
    let g = model.main();
    let mut b = Builder::new(g);
    for (i, t) in g.tensors.iter().enumerate() {
        if t.variable || t.element == ElementType::Resource {
            return Err(format!(
                "tensor {i} (`{}`) is a variable: ONNX has no state for a streaming model; the micro engine runs the file as it is (`lepton-convert run`, `compile`)",
                t.name.escape_debug()
            ));
        }
    }
    for &i in &g.inputs {
        let t = float_only(&g.tensors[i], "input")?;
        b.graph.input.push(value_info(&b.names[i], t));
    }
    for (k, op) in g.operators.iter().enumerate() {
        ops::translate(&mut b, op).map_err(|e| format!("operator {k} ({}): {e}", op.kind.name()))?;
    }
    for &i in &g.outputs {
        let t = float_only(&g.tensors[i], "output")?;
        b.graph.output.push(value_info(&b.names[i], t));
    }
    b.graph.name = if g.name.is_empty() { "tflite".into() } else { g.name.to_string() };
    Ok(pb::ModelProto {
        ir_version: 8,
        producer_name: "lepton-convert import".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: model.description.map(|d| format!("translated from TFLite ({d})")).unwrap_or_default(),
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
        graph: Some(b.graph),
        ..Default::default()
    })
}

/// `t`, a graph input or output (`what`), if it is float32: only float models are translated yet.
fn float_only<'t, 'a>(t: &'t Tensor<'a>, what: &str) -> Result<&'t Tensor<'a>, String> {
    if t.element == ElementType::Float32 {
        return Ok(t);
    }
    Err(format!(
        "{what} `{}` is {}: only float models are translated to ONNX yet; the micro engine runs quantized ones as they are (`lepton-convert run`, `compile`)",
        t.name.escape_debug(),
        t.element.name()
    ))
}

/// The graph being written, and the ONNX name of each TFLite tensor.
pub(crate) struct Builder<'g, 'a> {
    /// The TFLite subgraph translated.
    pub g: &'g Subgraph<'a>,
    /// ONNX name of each tensor: its TFLite name where unique, else the name and its index.
    pub names: Vec<String>,
    /// Tensors already written as initializers (constants), by index.
    written: Vec<bool>,
    /// Float32 values of constants, where an operator folded them (DEQUANTIZE of weights).
    pub folded: HashMap<usize, Vec<f32>>,
    /// The ONNX graph.
    pub graph: pb::GraphProto,
    /// Counter for the names of the nodes and helper tensors added.
    serial: usize,
}

impl<'g, 'a> Builder<'g, 'a> {
    fn new(g: &'g Subgraph<'a>) -> Self {
        let mut count: HashMap<&str, usize> = HashMap::new();
        for t in &g.tensors {
            *count.entry(t.name).or_default() += 1;
        }
        let names =
            g.tensors
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    if t.name.is_empty() || count[t.name] > 1 {
                        format!("{}#{i}", t.name)
                    } else {
                        t.name.to_string()
                    }
                })
                .collect();
        Builder {
            g,
            names,
            written: vec![false; g.tensors.len()],
            folded: HashMap::new(),
            graph: pb::GraphProto::default(),
            serial: 0,
        }
    }

    /// The tensor at `index`.
    pub fn tensor(&self, index: usize) -> &'g Tensor<'a> {
        &self.g.tensors[index]
    }

    /// A fresh name for a helper tensor or node.
    pub fn fresh(&mut self, what: &str) -> String {
        self.serial += 1;
        format!("lepton.{what}.{}", self.serial)
    }

    /// Adds a node.
    pub fn node(&mut self, op: &str, inputs: Vec<String>, outputs: Vec<String>, attribute: Vec<pb::AttributeProto>) {
        let name = self.fresh(op);
        self.graph.node.push(pb::NodeProto {
            op_type: op.into(),
            name,
            input: inputs,
            output: outputs,
            attribute,
            ..Default::default()
        });
    }

    /// Adds a float32 initializer under a fresh name; returns the name.
    pub fn const_f32(&mut self, what: &str, dims: &[usize], values: Vec<f32>) -> String {
        let name = self.fresh(what);
        self.graph.initializer.push(f32_tensor(&name, dims, values));
        name
    }

    /// Adds an int64 initializer under a fresh name; returns the name.
    pub fn const_i64(&mut self, what: &str, values: Vec<i64>) -> String {
        let name = self.fresh(what);
        self.graph.initializer.push(pb::TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: values,
            ..Default::default()
        });
        name
    }

    /// The float32 values of constant tensor `index` (float32, float16, or folded), if it is one.
    pub fn constant_f32(&self, index: usize) -> Result<Option<Vec<f32>>, String> {
        let t = self.tensor(index);
        if let Some(v) = self.folded.get(&index) {
            // A DEQUANTIZE's output declares its own shape: it must hold what was folded into it.
            if v.len() as u64 != t.elements() {
                return Err(format!(
                    "tensor `{}` has {} elements, but the DEQUANTIZE writing it gives {}",
                    t.name.escape_debug(),
                    t.elements(),
                    v.len()
                ));
            }
            return Ok(Some(v.clone()));
        }
        let Some(data) = t.data else { return Ok(None) };
        Ok(Some(match t.element {
            ElementType::Float32 => {
                data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            ElementType::Float16 => {
                data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            other => {
                return Err(format!(
                    "tensor `{}` is a {} constant where float is needed",
                    t.name.escape_debug(),
                    other.name()
                ))
            }
        }))
    }

    /// The int32 or int64 values of constant tensor `index`, if it is one.
    pub fn constant_ints(&self, index: usize) -> Result<Option<Vec<i64>>, String> {
        let t = self.tensor(index);
        let Some(data) = t.data else { return Ok(None) };
        Ok(Some(match t.element {
            ElementType::Int32 => {
                data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect()
            }
            ElementType::Int64 => {
                data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
            }
            other => {
                return Err(format!("tensor `{}` is {} where integers are needed", t.name.escape_debug(), other.name()))
            }
        }))
    }

    /// The ONNX name of float tensor `index` as an operator's input: an activation, or a constant
    /// written once as a float32 initializer. Quantized activations are refused.
    pub fn input(&mut self, index: usize) -> Result<String, String> {
        let t = self.tensor(index);
        if t.data.is_some() || self.folded.contains_key(&index) {
            if !self.written[index] {
                let values = self.constant_f32(index)?.expect("a constant");
                let name = self.names[index].clone();
                self.graph.initializer.push(f32_tensor(&name, &t.shape, values));
                self.written[index] = true;
            }
        } else if t.element != ElementType::Float32 {
            return Err(format!(
                "tensor `{}` is {}: quantized activations are not translated yet (float models only)",
                t.name.escape_debug(),
                t.element.name()
            ));
        }
        Ok(self.names[index].clone())
    }
}

/// A float32 initializer.
fn f32_tensor(name: &str, dims: &[usize], values: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: values,
        ..Default::default()
    }
}

/// The ONNX declaration of a graph input or output: float32 and the TFLite shape.
fn value_info(name: &str, t: &Tensor<'_>) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = |d: usize| Dimension { value: Some(Value::DimValue(d as i64)), ..Default::default() };
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim: t.shape.iter().map(|&d| dim(d)).collect() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
