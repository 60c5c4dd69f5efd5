//! Reading and editing ONNX graphs (the protobuf types of tract-onnx): constants, attributes,
//! tensors to and from tract, nodes of subgraphs, and tensor shapes as tract infers them.

use anyhow::{anyhow, bail, Result};
use lepton_runtime::onnx::pb::{self, AttributeProto, GraphProto, NodeProto, TensorProto};
use std::collections::HashMap;
use tract_onnx::prelude::*;

/// Constant tensors of a graph by name: initializers and `Constant` nodes' values.
pub fn constants(graph: &GraphProto) -> HashMap<&str, &TensorProto> {
    let mut c: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    for n in &graph.node {
        if n.op_type == "Constant" {
            if let (Some(out), Some(t)) = (n.output.first(), attr(n, "value").and_then(|a| a.t.as_ref())) {
                c.insert(out.as_str(), t);
            }
        }
    }
    c
}

/// The attribute `name` of a node.
pub fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An integer attribute, or `default`.
pub fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

/// A float attribute, or `default`.
pub fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

/// An integer-list attribute (empty when absent).
pub fn attr_ints<'a>(node: &'a NodeProto, name: &str) -> &'a [i64] {
    attr(node, name).map_or(&[], |a| a.ints.as_slice())
}

/// A string attribute.
pub fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// Calls `f` on `graph` and every subgraph (If branches, Loop and Scan bodies), depth first.
pub fn walk_graphs<'a>(graph: &'a GraphProto, f: &mut impl FnMut(&'a GraphProto)) {
    f(graph);
    for n in &graph.node {
        for a in &n.attribute {
            if let Some(g) = &a.g {
                walk_graphs(g, f);
            }
            for g in &a.graphs {
                walk_graphs(g, f);
            }
        }
    }
}

/// Calls `f` on the subgraphs held by a node's attributes.
pub fn walk_graphs_of<'a>(node: &'a NodeProto, f: &mut impl FnMut(&'a GraphProto)) {
    for a in &node.attribute {
        if let Some(g) = &a.g {
            f(g);
        }
        for g in &a.graphs {
            f(g);
        }
    }
}

/// Calls `f` on every node of `graph` and of its subgraphs (If, Loop, Scan bodies).
pub fn walk_nodes<'a>(graph: &'a GraphProto, f: &mut impl FnMut(&'a NodeProto)) {
    for n in &graph.node {
        f(n);
        for a in &n.attribute {
            if let Some(g) = &a.g {
                walk_nodes(g, f);
            }
            for g in &a.graphs {
                walk_nodes(g, f);
            }
        }
    }
}

/// Number of elements of a tensor proto.
pub fn volume(t: &TensorProto) -> u64 {
    t.dims.iter().map(|&d| d.max(0) as u64).product()
}

/// Bytes per element of an ONNX data type (0 for strings and unknown types).
pub fn elem_bytes(data_type: i32) -> u64 {
    use pb::tensor_proto::DataType as D;
    match D::try_from(data_type) {
        Ok(D::Float | D::Int32 | D::Uint32) => 4,
        Ok(D::Double | D::Int64 | D::Uint64 | D::Complex64) => 8,
        Ok(D::Float16 | D::Bfloat16 | D::Int16 | D::Uint16) => 2,
        Ok(D::Int8 | D::Uint8 | D::Bool | D::Float8e4m3fn | D::Float8e5m2 | D::Float8e4m3fnuz | D::Float8e5m2fnuz) => 1,
        Ok(D::Complex128) => 16,
        _ => 0,
    }
}

/// Loads a tensor proto into a tract tensor (raw, typed or external data).
pub fn load(t: &TensorProto) -> Result<Tensor> {
    let onnx = tract_onnx::onnx();
    tract_onnx::tensor::load_tensor(&*onnx.provider, t, None).map_err(|e| anyhow!("tensor `{}`: {e:#}", t.name))
}

/// A tensor proto holding `t` under `name` (raw little-endian data).
pub fn to_proto(name: &str, t: &Tensor) -> Result<TensorProto> {
    use pb::tensor_proto::DataType as D;
    if t.datum_type() == DatumType::TDim {
        // tract computes integer shape arithmetic as symbolic dims; ONNX stores it as int64.
        let i = t.cast_to::<i64>().map_err(|e| anyhow!("tensor `{name}`: {e:#}"))?;
        return to_proto(name, &i);
    }
    let data_type = match t.datum_type().unquantized() {
        DatumType::F32 => D::Float,
        DatumType::F64 => D::Double,
        DatumType::F16 => D::Float16,
        DatumType::I8 => D::Int8,
        DatumType::I16 => D::Int16,
        DatumType::I32 => D::Int32,
        DatumType::I64 => D::Int64,
        DatumType::U8 => D::Uint8,
        DatumType::U16 => D::Uint16,
        DatumType::U32 => D::Uint32,
        DatumType::U64 => D::Uint64,
        DatumType::Bool => D::Bool,
        other => bail!("tensor `{name}`: element type {other:?} cannot be stored in ONNX"),
    };
    let bytes = t.try_as_plain_ram().map_err(|e| anyhow!("{e:#}"))?.as_bytes().to_vec();
    Ok(TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        raw_data: bytes,
        ..Default::default()
    })
}

pub use lepton_runtime::onnx::{input_shapes, tensor_shapes};
