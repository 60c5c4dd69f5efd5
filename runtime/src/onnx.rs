//! ONNX models: the protobuf tools of `lepton-tract` ([`lepton_tract::onnx`], re-exported here)
//! and [`OnnxModel`], a decoded model with its manifest resolved, which loading, the engine choice
//! and the tools take.

pub use lepton_tract::onnx::*;

use lepton_core::error::Result;
use std::path::Path;

/// An ONNX model decoded once, with what every loading step asks of it: the declared inputs and
/// outputs, the embedded manifest (completed from the model and checked against it) and whether
/// the model is quantized. Loading, the engine choice and the tools take this one description.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// The protobuf.
    pub proto: ModelProto,
    /// Declared graph inputs (initializers excluded).
    pub inputs: Vec<TensorSpec>,
    /// Declared graph outputs.
    pub outputs: Vec<TensorSpec>,
    /// The embedded manifest, resolved against the declared inputs and outputs.
    pub manifest: Option<crate::manifest::Manifest>,
    /// Whether the graph is quantized (QDQ: it has `QuantizeLinear` nodes).
    pub quantized: bool,
}

impl OnnxModel {
    /// Reads, decodes and describes an ONNX file.
    pub fn read(path: &Path) -> Result<Self> {
        Self::describe(read(path)?, path)
    }

    /// Decodes and describes ONNX bytes; `path` names them in errors.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self> {
        Self::describe(decode(bytes, path)?, path)
    }

    /// Describes a decoded model: an embedded manifest that does not fit the model is an error
    /// naming the field.
    pub fn describe(proto: ModelProto, path: &Path) -> Result<Self> {
        let (inputs, outputs) = io_specs(&proto);
        let manifest = resolve_manifest(&proto, &inputs, &outputs, path)?;
        let quantized = proto.graph.as_ref().is_some_and(|g| g.node.iter().any(|n| n.op_type == "QuantizeLinear"));
        Ok(OnnxModel { proto, inputs, outputs, manifest, quantized })
    }
}

/// The embedded manifest, if any, parsed, completed from the declared `inputs` and checked
/// against them and the `outputs`.
pub fn resolve_manifest(
    proto: &ModelProto,
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
    path: &Path,
) -> Result<Option<crate::manifest::Manifest>> {
    match manifest_text(proto) {
        Some(text) => crate::manifest::Manifest::from_toml(text, path)?.resolve(inputs, outputs, path).map(Some),
        None => Ok(None),
    }
}
