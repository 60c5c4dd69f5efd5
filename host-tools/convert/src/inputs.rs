//! Model inputs given on the command line: `NAME=FILE` (`.npy`, or an image/WAV for models with a
//! manifest) and `NAME=DIMS` shapes, checked against what the model declares.

use crate::model_file::ModelFile;
use crate::npy;
use anyhow::{bail, Context, Result};
use lepton_runtime::onnx::{Dim, TensorSpec};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;

/// What a `--input` file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A `.npy` tensor.
    Tensor,
    /// A PNG or JPEG picture.
    Image,
    /// A WAV recording.
    Wav,
}

/// Classifies a file by extension.
pub fn kind(path: &Path) -> Result<InputKind> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    Ok(match ext.as_str() {
        "npy" => InputKind::Tensor,
        "png" | "jpg" | "jpeg" => InputKind::Image,
        "wav" => InputKind::Wav,
        _ => {
            bail!("{}: unknown input type; give a .npy tensor, a .png/.jpg picture or a .wav recording", path.display())
        }
    })
}

fn names(specs: &[TensorSpec]) -> String {
    specs.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", ")
}

/// Splits `NAME=VALUE` arguments; a bare `VALUE` names the model's only input.
pub fn split_named(args: &[String], inputs: &[TensorSpec], what: &str) -> Result<Vec<(String, String)>> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((n, v)) if inputs.iter().any(|s| s.name == n) => Ok((n.to_string(), v.to_string())),
            Some((n, _)) if !n.contains('/') && !n.contains('.') => {
                bail!("{what} `{a}`: the model has no input `{n}` (inputs: {})", names(inputs))
            }
            _ if inputs.len() == 1 => Ok((inputs[0].name.clone(), a.clone())),
            _ => bail!("{what} `{a}`: write NAME={}; the model's inputs are {}", what.to_uppercase(), names(inputs)),
        })
        .collect()
}

/// Parses `1x3x224x224`.
pub fn parse_dims(text: &str) -> Result<Vec<usize>> {
    text.split(['x', 'X', ','])
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .with_context(|| format!("`{text}`: dimensions are numbers separated by x (1x3x224x224)"))
        })
        .collect()
}

/// ONNX element type name of a tract datum type, as `TensorSpec::elem_type` spells it.
pub fn onnx_name(dt: DatumType) -> &'static str {
    match dt.unquantized() {
        DatumType::F32 => "FLOAT",
        DatumType::F64 => "DOUBLE",
        DatumType::F16 => "FLOAT16",
        DatumType::I8 => "INT8",
        DatumType::I16 => "INT16",
        DatumType::I32 => "INT32",
        DatumType::I64 => "INT64",
        DatumType::U8 => "UINT8",
        DatumType::U16 => "UINT16",
        DatumType::U32 => "UINT32",
        DatumType::U64 => "UINT64",
        DatumType::Bool => "BOOL",
        _ => "?",
    }
}

/// The tract type for an ONNX element type name.
pub fn datum_type(elem_type: &str) -> Option<DatumType> {
    Some(match elem_type {
        "FLOAT" => DatumType::F32,
        "DOUBLE" => DatumType::F64,
        "FLOAT16" => DatumType::F16,
        "INT8" => DatumType::I8,
        "INT16" => DatumType::I16,
        "INT32" => DatumType::I32,
        "INT64" => DatumType::I64,
        "UINT8" => DatumType::U8,
        "UINT16" => DatumType::U16,
        "UINT32" => DatumType::U32,
        "UINT64" => DatumType::U64,
        "BOOL" => DatumType::Bool,
        _ => return None,
    })
}

/// Checks a tensor against an input's declared type and fixed dimensions.
pub fn check(spec: &TensorSpec, t: &Tensor, file: &Path) -> Result<()> {
    check_type(spec, t, file)?;
    check_shape(spec, t.shape(), file)
}

/// Checks a tensor's element type against an input's.
pub fn check_type(spec: &TensorSpec, t: &Tensor, file: &Path) -> Result<()> {
    if spec.elem_type != "UNDEFINED" && onnx_name(t.datum_type()) != spec.elem_type {
        bail!(
            "{}: input `{}` takes {} but the file holds {}; save it with that type (numpy: .astype(...))",
            file.display(),
            spec.name,
            spec.elem_type,
            onnx_name(t.datum_type())
        );
    }
    Ok(())
}

/// Checks a shape against an input's declared dimensions (symbolic ones take any size); `from`
/// says where the shape came from (a file, or `--shape`).
pub fn check_shape(spec: &TensorSpec, shape: &[usize], from: &Path) -> Result<()> {
    if let Some(dims) = &spec.dims {
        let fits =
            dims.len() == shape.len() && dims.iter().zip(shape).all(|(d, &n)| !matches!(d, Dim::Fixed(f) if *f != n));
        if !fits {
            bail!(
                "{}: input `{}` has shape {} but {} was given",
                from.display(),
                spec.name,
                spec.shape_text(),
                crate::model_file::shape_text(shape)
            );
        }
    }
    Ok(())
}

/// Reads `.npy` inputs, in model input order; every input must be given exactly once. A micro
/// model's int8 inputs also take float tensors (quantized with the input's scale).
pub fn read_tensors(model: &ModelFile, given: &[(String, PathBuf)]) -> Result<Vec<(String, Tensor)>> {
    let specs = &model.inputs;
    let read = read_tensors_partial(model, given)?;
    specs
        .iter()
        .map(|spec| {
            read.iter()
                .find(|(n, _)| n == &spec.name)
                .cloned()
                .with_context(|| format!("input `{}` is not given (the model's inputs: {})", spec.name, names(specs)))
        })
        .collect()
}

/// Reads the `.npy` inputs given (each at most once), checked against the model's inputs, in
/// model input order; inputs not given are left out.
pub fn read_tensors_partial(model: &ModelFile, given: &[(String, PathBuf)]) -> Result<Vec<(String, Tensor)>> {
    let specs = &model.inputs;
    let mut by_name: HashMap<&str, &PathBuf> = HashMap::new();
    for (n, p) in given {
        if by_name.insert(n, p).is_some() {
            bail!("input `{n}` is given twice");
        }
    }
    let mut out = vec![];
    for spec in specs {
        let Some(path) = by_name.get(spec.name.as_str()) else { continue };
        let t = npy::read(path)?;
        // A micro model also takes a stream: one more leading axis than the input, a run per
        // entry, its state carried from one to the next.
        let shape = match &spec.dims {
            Some(d) if model.is_lpm() && t.rank() == d.len() + 1 => &t.shape()[1..],
            _ => t.shape(),
        };
        if !(model.is_lpm() && matches!(t.datum_type(), DatumType::F32 | DatumType::F64)) {
            check_type(spec, &t, path)?;
        }
        check_shape(spec, shape, path)?;
        out.push((spec.name.clone(), t));
    }
    Ok(out)
}

/// A tensor of `shape` and type `dt` filled with seeded pseudo-random values (benchmarks).
pub fn random_tensor(dt: DatumType, shape: &[usize], seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as f64) / ((1u64 << 31) as f64)
    };
    macro_rules! fill {
        ($t:ty, $f:expr) => {
            tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), (0..n).map(|_| $f(next())).collect::<Vec<$t>>())?
                .into_tensor()
        };
    }
    Ok(match dt.unquantized() {
        DatumType::F32 => fill!(f32, |u: f64| (u * 2.0 - 1.0) as f32),
        DatumType::F64 => fill!(f64, |u: f64| u * 2.0 - 1.0),
        DatumType::I8 => fill!(i8, |u: f64| (u * 255.0 - 128.0) as i8),
        DatumType::U8 => fill!(u8, |u: f64| (u * 255.0) as u8),
        DatumType::I32 => fill!(i32, |u: f64| (u * 100.0) as i32),
        DatumType::I64 => fill!(i64, |u: f64| (u * 100.0) as i64),
        DatumType::Bool => fill!(bool, |u: f64| u > 0.5),
        other => bail!("cannot make random {other:?} inputs; give a .npy file"),
    })
}
