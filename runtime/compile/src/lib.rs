//! The compiler: lowers a quantized (QDQ) ONNX model, or a quantized TFLite model, to a Lepton
//! micro model (`.lpm`, the format of [`lepton_core::engine::micro::format`]) that the int8 micro
//! engine runs, on a host and on a microcontroller alike.
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod lower;

pub use lower::{lower, lower_tflite, tflite_quantized, Compiled, LowerError};

use lepton_core::engine::micro::host::MicroEngine;
use lepton_core::error::{LeptonError, Result};
use lepton_tract::onnx::ModelProto;
use std::path::Path;

/// Compiles a quantized (QDQ) ONNX model with the given input shapes and loads the result on the
/// micro engine; `path` names the model in errors.
pub fn micro_engine(
    model: &ModelProto,
    path: &Path,
    input_shapes: &[(String, Vec<usize>)],
) -> Result<(MicroEngine, Compiled)> {
    let compiled = lower(model, input_shapes)
        .map_err(|e| LeptonError::Model { path: path.to_path_buf(), reason: e.to_string() })?;
    Ok((MicroEngine::from_bytes(compiled.bytes.clone(), path)?, compiled))
}
