//! `.npy` tensors to and from tract tensors, for any element type models take.

use anyhow::{bail, Context, Result};
use npyz::{DType, TypeChar, WriterBuilder};
use std::path::Path;
use tract_onnx::prelude::*;

/// Reads a `.npy` file (f32, f64, i8..i64, u8..u64, bool; C or Fortran order) into a tensor.
pub fn read(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    from_bytes(&bytes, path)
}

/// Longest `.npy` header read (numpy's own `max_header_size`).
const MAX_HEADER_BYTES: usize = 10_000;
/// Deepest bracket nesting in a `.npy` header (a structured dtype's fields with sub-shapes).
const MAX_HEADER_NESTING: i32 = 6;

/// Reads `.npy` bytes; `path` names them in errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Tensor> {
    // The header's length field sizes a buffer in the reader: it must fit in the file first.
    if bytes.len() >= 10 && bytes.starts_with(b"\x93NUMPY") {
        let (start, len) = match bytes[6] {
            1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
            _ if bytes.len() >= 12 => (12, u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize),
            _ => (12, usize::MAX), // a version 2 or 3 header shorter than its length field
        };
        if len > bytes.len().saturating_sub(start) {
            bail!("{}: not a .npy file: its header claims more bytes than the file's {}", path.display(), bytes.len());
        }
        // numpy itself reads headers of at most 10,000 bytes; and a header is a flat dict (a
        // structured dtype nests a few levels): deeper nesting makes the header parser backtrack
        // for minutes.
        if len > MAX_HEADER_BYTES {
            bail!("{}: .npy header of {len} bytes; numpy writes at most {MAX_HEADER_BYTES}", path.display());
        }
        let (mut depth, mut deepest) = (0i32, 0i32);
        for &b in &bytes[start..start + len] {
            match b {
                b'[' | b'(' | b'{' => depth += 1,
                b']' | b')' | b'}' => depth -= 1,
                _ => {}
            }
            deepest = deepest.max(depth);
        }
        if deepest > MAX_HEADER_NESTING {
            bail!("{}: .npy header nests brackets {deepest} deep; a header is a dict of at most {MAX_HEADER_NESTING} levels", path.display());
        }
    }
    let npy = npyz::NpyFile::new(bytes).with_context(|| format!("{}: not a .npy file", path.display()))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let fortran = npy.order() == npyz::Order::Fortran;
    let DType::Plain(ty) = npy.dtype() else {
        bail!("{}: structured dtypes are not supported", path.display());
    };
    // The header's shape sizes the tensor: it must fit in the bytes the file holds.
    let elements = npy.shape().iter().try_fold(1u64, |n, &d| n.checked_mul(d));
    let item = ty.num_bytes().unwrap_or(1).max(1) as u64;
    match elements.and_then(|n| n.checked_mul(item)) {
        Some(need) if need <= bytes.len() as u64 => {}
        _ => bail!(
            "{}: shape {:?} of {item}-byte elements needs more data than the file's {} bytes",
            path.display(),
            npy.shape(),
            bytes.len()
        ),
    }
    let ctx = || format!("{}: reading data", path.display());
    macro_rules! load {
        ($t:ty) => {
            if fortran {
                // Column-major data: build the reversed shape and transpose back.
                let rev: Vec<usize> = shape.iter().rev().copied().collect();
                let a = tract_ndarray::ArrayD::from_shape_vec(rev, npy.into_vec::<$t>().with_context(ctx)?)?
                    .reversed_axes();
                Ok(a.as_standard_layout().into_owned().into_tensor())
            } else {
                tensor_from(&shape, npy.into_vec::<$t>().with_context(ctx)?)
            }
        };
    }
    let t = match (ty.type_char(), ty.num_bytes()) {
        (TypeChar::Float, Some(4)) => load!(f32),
        (TypeChar::Float, Some(8)) => load!(f64),
        (TypeChar::Int, Some(1)) => load!(i8),
        (TypeChar::Int, Some(2)) => load!(i16),
        (TypeChar::Int, Some(4)) => load!(i32),
        (TypeChar::Int, Some(8)) => load!(i64),
        (TypeChar::Uint, Some(1)) => load!(u8),
        (TypeChar::Uint, Some(2)) => load!(u16),
        (TypeChar::Uint, Some(4)) => load!(u32),
        (TypeChar::Uint, Some(8)) => load!(u64),
        (TypeChar::Bool, _) => load!(bool),
        (c, n) => bail!("{}: element type {c:?} of {n:?} bytes is not supported", path.display()),
    };
    t.with_context(|| format!("{}: shape {:?} does not match its data", path.display(), shape))
}

fn tensor_from<T: Datum>(shape: &[usize], data: Vec<T>) -> Result<Tensor> {
    Ok(tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), data)?.into_tensor())
}

/// Writes a tensor as `.npy` (element types numpy has).
pub fn write(path: &Path, t: &Tensor) -> Result<()> {
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("{}", path.display()))?);
    macro_rules! save {
        ($t:ty) => {{
            let view = t.to_plain_array_view::<$t>()?;
            let mut w = npyz::WriteOptions::<$t>::new().default_dtype().shape(&shape).writer(&mut file).begin_nd()?;
            w.extend(view.iter().copied())?;
            w.finish()?;
        }};
    }
    match t.datum_type().unquantized() {
        DatumType::F32 => save!(f32),
        DatumType::F64 => save!(f64),
        DatumType::I8 => save!(i8),
        DatumType::I16 => save!(i16),
        DatumType::I32 => save!(i32),
        DatumType::I64 => save!(i64),
        DatumType::U8 => save!(u8),
        DatumType::U16 => save!(u16),
        DatumType::U32 => save!(u32),
        DatumType::U64 => save!(u64),
        DatumType::Bool => save!(bool),
        DatumType::F16 => {
            let f = t.cast_to::<f32>()?;
            return write(path, &f);
        }
        other => bail!("{}: cannot write element type {other:?} as .npy", path.display()),
    }
    Ok(())
}

/// A file name for a tensor: characters outside `A-Za-z0-9._-` become `_`.
pub fn file_name(tensor: &str) -> String {
    let s: String = tensor
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    format!("{s}.npy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_common_types() {
        let dir = std::env::temp_dir().join(format!("lepton-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            tensor_from(&[2, 3], vec![1.5f32, -2.0, 3.0, 4.0, 5.0, 6.25]).unwrap(),
            tensor_from(&[4], vec![1i64, -2, 3, i64::MAX]).unwrap(),
            tensor_from(&[2, 2], vec![0u8, 255, 7, 9]).unwrap(),
            tensor_from(&[3], vec![-128i8, 0, 127]).unwrap(),
            tensor_from(&[], vec![true]).unwrap(),
        ];
        for (i, t) in cases.iter().enumerate() {
            let p = dir.join(format!("t{i}.npy"));
            write(&p, t).unwrap();
            assert_eq!(&read(&p).unwrap(), t);
        }
        // A Fortran-ordered file as numpy writes np.asfortranarray(np.arange(6.).reshape(2, 3)) in f32.
        let mut header = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }".to_string();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut fortran = b"\x93NUMPY\x01\x00".to_vec();
        fortran.extend_from_slice(&(header.len() as u16).to_le_bytes());
        fortran.extend_from_slice(header.as_bytes());
        for v in [0.0f32, 3.0, 1.0, 4.0, 2.0, 5.0] {
            fortran.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(dir.join("f.npy"), &fortran).unwrap();
        let t = read(&dir.join("f.npy")).unwrap();
        assert_eq!(t, tensor_from(&[2, 3], vec![0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap());
        std::fs::write(dir.join("bad.npy"), b"nope").unwrap();
        assert!(read(&dir.join("bad.npy")).unwrap_err().to_string().contains("bad.npy"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_names_are_sanitized() {
        assert_eq!(file_name("save_infer_model/scale_0.tmp_1"), "save_infer_model_scale_0.tmp_1.npy");
        assert_eq!(file_name("out:0"), "out_0.npy");
    }
}
