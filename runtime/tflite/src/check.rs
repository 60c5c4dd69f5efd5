//! Reading a file: the FlatBuffer verifier under caps, then every index, shape, quantization and
//! buffer checked against what it refers to.

use crate::types::{ElementType, OpKind, Operator, Quantization, Subgraph, Tensor};
use crate::{schema, TfliteModel, IDENTIFIER, MAX_ELEMENTS, MAX_OPERATORS, MAX_RANK, MAX_SUBGRAPHS, MAX_TENSORS};
use std::path::{Path, PathBuf};

/// Why a `.tflite` file cannot be read; the message names the file and the part at fault.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct TfliteError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and where in the model.
    pub reason: String,
}

/// The verifier's caps: nesting, table count and the largest file (TFLite's own 2 GiB).
fn verifier_options() -> flatbuffers::VerifierOptions {
    flatbuffers::VerifierOptions {
        max_depth: 64,
        max_tables: 4 << 20,
        max_apparent_size: 1 << 31,
        ..Default::default()
    }
}

/// See [`TfliteModel::read`].
pub(crate) fn read<'a>(bytes: &'a [u8], path: &Path) -> Result<TfliteModel<'a>, TfliteError> {
    let fail = |reason: String| TfliteError { path: path.to_path_buf(), reason };
    if !crate::is_tflite(bytes) {
        return Err(fail(format!(
            "not a TFLite model (no `{}` identifier at byte 4; ONNX and .lpm files are told apart the same way)",
            String::from_utf8_lossy(IDENTIFIER)
        )));
    }
    let model = schema::root_as_model_with_opts(&verifier_options(), bytes)
        .map_err(|e| fail(format!("the FlatBuffer is malformed: {e}")))?;
    let buffers: Vec<schema::Buffer<'a>> = model.buffers().map(|b| b.iter().collect()).unwrap_or_default();
    let codes: Vec<schema::OperatorCode<'a>> = model.operator_codes().map(|c| c.iter().collect()).unwrap_or_default();
    let raw_subgraphs = model.subgraphs().ok_or_else(|| fail("the model has no subgraphs".into()))?;
    if raw_subgraphs.is_empty() {
        return Err(fail("the model has no subgraphs".into()));
    }
    if raw_subgraphs.len() > MAX_SUBGRAPHS {
        return Err(fail(format!("{} subgraphs, more than the {MAX_SUBGRAPHS} accepted", raw_subgraphs.len())));
    }
    let buffer_data = |index: u32, at: &dyn Fn() -> String| -> Result<Option<&'a [u8]>, TfliteError> {
        let b = buffers
            .get(index as usize)
            .ok_or_else(|| fail(format!("{}: buffer {index}, but the model has {} buffers", at(), buffers.len())))?;
        Ok(b.data().map(|d| d.bytes()).filter(|d| !d.is_empty()))
    };
    let mut subgraphs = Vec::with_capacity(raw_subgraphs.len());
    for (s, g) in raw_subgraphs.iter().enumerate() {
        let where_ = |what: String| {
            format!(
                "subgraph {s}{}: {what}",
                g.name().map(|n| format!(" (`{}`)", n.escape_debug())).unwrap_or_default()
            )
        };
        let raw_tensors = g.tensors().map(|t| t.iter().collect::<Vec<_>>()).unwrap_or_default();
        if raw_tensors.len() > MAX_TENSORS {
            return Err(fail(where_(format!("{} tensors, more than the {MAX_TENSORS} accepted", raw_tensors.len()))));
        }
        let mut tensors = Vec::with_capacity(raw_tensors.len());
        for (i, t) in raw_tensors.iter().enumerate() {
            let name = t.name().unwrap_or("");
            let at = || where_(format!("tensor {i} (`{}`)", name.escape_debug()));
            let data = buffer_data(t.buffer(), &at)?;
            tensors.push(tensor(t, data).map_err(|r| fail(format!("{}: {r}", at())))?);
        }
        let index = |v: i32, what: &str| -> Result<usize, String> {
            usize::try_from(v)
                .ok()
                .filter(|&v| v < tensors.len())
                .ok_or_else(|| format!("{what} is tensor {v}, but the subgraph has {} tensors", tensors.len()))
        };
        let list = |v: Option<flatbuffers::Vector<'a, i32>>, what: &str| -> Result<Vec<usize>, TfliteError> {
            v.map(|v| v.iter().collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(|i| index(i, what).map_err(|r| fail(where_(r))))
                .collect()
        };
        let inputs = list(g.inputs(), "an input")?;
        let outputs = list(g.outputs(), "an output")?;
        let raw_ops = g.operators().map(|o| o.iter().collect::<Vec<_>>()).unwrap_or_default();
        if raw_ops.len() > MAX_OPERATORS {
            return Err(fail(where_(format!("{} operators, more than the {MAX_OPERATORS} accepted", raw_ops.len()))));
        }
        let mut operators = Vec::with_capacity(raw_ops.len());
        for (k, op) in raw_ops.into_iter().enumerate() {
            let code = codes.get(op.opcode_index() as usize).ok_or_else(|| {
                fail(where_(format!(
                    "operator {k}: operator code {}, but the model has {}",
                    op.opcode_index(),
                    codes.len()
                )))
            })?;
            let kind = op_kind(code);
            let at = |r: String| fail(where_(format!("operator {k} ({}): {r}", kind.name().escape_debug())));
            let inputs = op
                .inputs()
                .map(|v| v.iter().collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(|i| if i == -1 { Ok(None) } else { index(i, "an input").map(Some) })
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            let outputs = op
                .outputs()
                .map(|v| v.iter().collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(|i| index(i, "an output"))
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            operators.push(Operator { kind, version: code.version(), inputs, outputs, raw: op });
        }
        subgraphs.push(Subgraph { name: g.name().unwrap_or(""), tensors, inputs, outputs, operators });
    }
    let mut metadata = Vec::new();
    for (m, entry) in model.metadata().into_iter().flatten().enumerate() {
        let name = entry.name().unwrap_or("");
        let data = buffer_data(entry.buffer(), &|| format!("metadata {m} (`{}`)", name.escape_debug()))?;
        metadata.push((name, data.unwrap_or(&[])));
    }
    Ok(TfliteModel {
        path: path.to_path_buf(),
        version: model.version(),
        description: model.description(),
        subgraphs,
        metadata,
    })
}

/// The op an operator code names: TFLite keeps builtin codes under 127 in the deprecated byte too
/// and takes the larger of the two.
fn op_kind<'a>(code: &schema::OperatorCode<'a>) -> OpKind<'a> {
    let builtin = code.builtin_code().0.max(code.deprecated_builtin_code() as i32);
    let builtin = schema::BuiltinOperator(builtin);
    match (builtin, code.custom_code()) {
        (schema::BuiltinOperator::CUSTOM, Some(name)) => OpKind::Custom(name),
        _ => OpKind::Builtin(builtin),
    }
}

/// One tensor with its buffer's `data`, checked: rank and element count bounded, quantization consistent, data as long as
/// the shape says.
fn tensor<'a>(t: &schema::Tensor<'a>, data: Option<&'a [u8]>) -> Result<Tensor<'a>, String> {
    let element =
        ElementType::from_schema(t.type_()).ok_or_else(|| format!("element type {} is unknown", t.type_().0))?;
    let raw_shape: Vec<i32> = t.shape().map(|s| s.iter().collect()).unwrap_or_default();
    if raw_shape.len() > MAX_RANK {
        return Err(format!("rank {} is above the {MAX_RANK} accepted", raw_shape.len()));
    }
    let shape = raw_shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d} in shape {raw_shape:?} is negative")))
        .collect::<Result<Vec<usize>, _>>()?;
    let elements = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64).filter(|&n| n <= MAX_ELEMENTS));
    let Some(elements) = elements else {
        return Err(format!("shape {raw_shape:?} has more than {MAX_ELEMENTS} elements"));
    };
    let signature: Option<Vec<i64>> = t.shape_signature().map(|s| s.iter().map(i64::from).collect());
    if let Some(sig) = &signature {
        let fits = sig.len() == shape.len() && sig.iter().zip(&shape).all(|(&s, &d)| s == -1 || s == d as i64);
        if !fits {
            return Err(format!("shape signature {sig:?} does not fit shape {raw_shape:?}"));
        }
    }
    let quantization = match t.quantization() {
        Some(q) => quantization(&q, &shape)?,
        None => None,
    };
    let sparse = t.sparsity().is_some();
    if let (Some(d), false) = (data, sparse) {
        if let Some(expected) = element.bytes_for(elements) {
            if d.len() as u64 != expected {
                return Err(format!(
                    "its data is {} bytes, but {elements} {} values take {expected}",
                    d.len(),
                    element.name()
                ));
            }
        }
    }
    Ok(Tensor {
        name: t.name().unwrap_or(""),
        element,
        shape,
        signature,
        quantization,
        data,
        sparse,
        variable: t.is_variable(),
    })
}

/// Quantization parameters: none when the table carries no scale (min/max only, or empty), else
/// one scale and zero point per tensor or per channel of `quantized_dimension`.
fn quantization(q: &schema::QuantizationParameters<'_>, shape: &[usize]) -> Result<Option<Quantization>, String> {
    let scale: Vec<f32> = q.scale().map(|s| s.iter().collect()).unwrap_or_default();
    if scale.is_empty() {
        return Ok(None);
    }
    let zero_point: Vec<i64> = match q.zero_point() {
        Some(z) => z.iter().collect(),
        None => vec![0; scale.len()],
    };
    if zero_point.len() != scale.len() {
        return Err(format!("{} scales but {} zero points", scale.len(), zero_point.len()));
    }
    if let Some(s) = scale.iter().find(|s| !s.is_finite() || **s < 0.0) {
        return Err(format!("quantization scale {s} is not a finite, non-negative number"));
    }
    let axis = usize::try_from(q.quantized_dimension())
        .map_err(|_| format!("quantized_dimension {} is negative", q.quantized_dimension()))?;
    if scale.len() > 1 {
        let Some(&channels) = shape.get(axis) else {
            return Err(format!("quantized_dimension {axis} is outside the tensor's rank {}", shape.len()));
        };
        if channels != scale.len() {
            return Err(format!("{} per-channel scales, but dimension {axis} has {channels} channels", scale.len()));
        }
    }
    Ok(Some(Quantization { scale, zero_point, axis }))
}
