//! Borrowed tensor views: a shape, an element type, affine quantization parameters and a slice the
//! caller owns. Nothing here allocates; the std engine hands out views into its own buffers.

use crate::error::Error;
use serde::{Deserialize, Serialize};

/// Largest rank a [`Shape`] holds.
pub const MAX_RANK: usize = 6;

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    F32,
    /// Signed 8-bit integer (usually quantized).
    I8,
    /// Unsigned 8-bit integer (usually quantized).
    U8,
    /// Signed 32-bit integer (biases, accumulators).
    I32,
}

impl DType {
    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::I8 | DType::U8 => 1,
        }
    }

    /// Lower-case name (`f32`, `i8`, `u8`, `i32`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I32 => "i32",
        }
    }
}

/// A tensor shape of at most [`MAX_RANK`] dimensions, stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    dims: [usize; MAX_RANK],
    rank: usize,
}

impl Shape {
    /// Builds a shape; fails with [`Error::RankTooLarge`] past [`MAX_RANK`] dimensions.
    pub fn new(dims: &[usize]) -> Result<Self, Error> {
        if dims.len() > MAX_RANK {
            return Err(Error::RankTooLarge { rank: dims.len(), max: MAX_RANK });
        }
        let mut d = [0; MAX_RANK];
        d[..dims.len()].copy_from_slice(dims);
        Ok(Shape { dims: d, rank: dims.len() })
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of elements (1 for a scalar).
    pub fn volume(&self) -> usize {
        self.dims().iter().product()
    }

    /// Number of elements between consecutive indices of `axis` (row-major).
    pub fn stride(&self, axis: usize) -> usize {
        self.dims()[axis + 1..].iter().product()
    }
}

impl core::fmt::Debug for Shape {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.dims()).finish()
    }
}

impl core::fmt::Display for Shape {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, d) in self.dims().iter().enumerate() {
            if i > 0 {
                f.write_str("x")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Affine quantization: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quantization<'a> {
    /// Plain values (float or unquantized integers).
    None,
    /// One scale and zero point for the whole tensor.
    PerTensor {
        /// Step between consecutive integer values, > 0.
        scale: f32,
        /// Integer that represents real 0.
        zero_point: i32,
    },
    /// One scale and zero point per index of `axis` (weights quantized per output channel).
    PerChannel {
        /// The channel axis.
        axis: usize,
        /// One scale per channel, each > 0.
        scale: &'a [f32],
        /// One zero point per channel.
        zero_point: &'a [i32],
    },
}

impl Quantization<'_> {
    /// Scale and zero point that apply to flat element `index` of a tensor with `shape`.
    pub fn params_at(&self, shape: &Shape, index: usize) -> (f32, i32) {
        match *self {
            Quantization::None => (1.0, 0),
            Quantization::PerTensor { scale, zero_point } => (scale, zero_point),
            Quantization::PerChannel { axis, scale, zero_point } => {
                let c = (index / shape.stride(axis)) % shape.dims()[axis];
                (scale[c], zero_point[c])
            }
        }
    }

    /// Checks scales are finite and positive and zero points fit `dtype`.
    pub fn validate(&self, dtype: DType) -> Result<(), Error> {
        let check = |s: f32, z: i32| -> Result<(), Error> {
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::InvalidScale);
            }
            let ok = match dtype {
                DType::I8 => (-128..=127).contains(&z),
                DType::U8 => (0..=255).contains(&z),
                DType::I32 | DType::F32 => true,
            };
            if ok {
                Ok(())
            } else {
                Err(Error::ZeroPointOutOfRange)
            }
        };
        match *self {
            Quantization::None => Ok(()),
            Quantization::PerTensor { scale, zero_point } => check(scale, zero_point),
            Quantization::PerChannel { scale, zero_point, .. } => {
                if scale.len() != zero_point.len() {
                    return Err(Error::LengthMismatch { expected: scale.len(), actual: zero_point.len() });
                }
                scale.iter().zip(zero_point).try_for_each(|(&s, &z)| check(s, z))
            }
        }
    }
}

/// Borrowed element data of a [`TensorView`].
#[derive(Debug, Clone, Copy)]
pub enum TensorData<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// i8 elements.
    I8(&'a [i8]),
    /// u8 elements.
    U8(&'a [u8]),
    /// i32 elements.
    I32(&'a [i32]),
}

impl TensorData<'_> {
    /// Element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::I32(_) => DType::I32,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(d) => d.len(),
            TensorData::I8(d) => d.len(),
            TensorData::U8(d) => d.len(),
            TensorData::I32(d) => d.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A read-only tensor: shape, data and quantization, all borrowed.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    shape: Shape,
    data: TensorData<'a>,
    quant: Quantization<'a>,
}

impl<'a> TensorView<'a> {
    /// Builds a view, checking the data length against the shape and the quantization parameters.
    pub fn new(dims: &[usize], data: TensorData<'a>, quant: Quantization<'a>) -> Result<Self, Error> {
        let shape = Shape::new(dims)?;
        if shape.volume() != data.len() {
            return Err(Error::LengthMismatch { expected: shape.volume(), actual: data.len() });
        }
        quant.validate(data.dtype())?;
        if let Quantization::PerChannel { axis, scale, .. } = quant {
            if axis >= shape.rank() || scale.len() != shape.dims()[axis] {
                return Err(Error::BadShape);
            }
        }
        Ok(TensorView { shape, data, quant })
    }

    /// A plain f32 tensor.
    pub fn from_f32(dims: &[usize], data: &'a [f32]) -> Result<Self, Error> {
        Self::new(dims, TensorData::F32(data), Quantization::None)
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The data.
    pub fn data(&self) -> TensorData<'a> {
        self.data
    }

    /// The quantization parameters.
    pub fn quantization(&self) -> Quantization<'a> {
        self.quant
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for a tensor without elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The real value of flat element `index` (dequantized when the tensor is quantized).
    pub fn real(&self, index: usize) -> f32 {
        let (scale, zp) = self.quant.params_at(&self.shape, index);
        match self.data {
            TensorData::F32(d) => d[index],
            TensorData::I8(d) => dequantize(d[index] as i32, scale, zp),
            TensorData::U8(d) => dequantize(d[index] as i32, scale, zp),
            TensorData::I32(d) => dequantize(d[index], scale, zp),
        }
    }

    /// Writes every element's real value into `out` (which must hold [`len`](Self::len) floats).
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<(), Error> {
        if out.len() != self.len() {
            return Err(Error::LengthMismatch { expected: self.len(), actual: out.len() });
        }
        if let TensorData::F32(d) = self.data {
            out.copy_from_slice(d);
            return Ok(());
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.real(i);
        }
        Ok(())
    }
}

/// Mutable element data of a [`TensorViewMut`].
#[derive(Debug)]
pub enum TensorDataMut<'a> {
    /// f32 elements.
    F32(&'a mut [f32]),
    /// i8 elements.
    I8(&'a mut [i8]),
    /// u8 elements.
    U8(&'a mut [u8]),
    /// i32 elements.
    I32(&'a mut [i32]),
}

impl TensorDataMut<'_> {
    /// Element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorDataMut::F32(_) => DType::F32,
            TensorDataMut::I8(_) => DType::I8,
            TensorDataMut::U8(_) => DType::U8,
            TensorDataMut::I32(_) => DType::I32,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorDataMut::F32(d) => d.len(),
            TensorDataMut::I8(d) => d.len(),
            TensorDataMut::U8(d) => d.len(),
            TensorDataMut::I32(d) => d.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A writable tensor (an engine input buffer, a preprocessing target).
#[derive(Debug)]
pub struct TensorViewMut<'a> {
    shape: Shape,
    data: TensorDataMut<'a>,
    quant: Quantization<'a>,
}

impl<'a> TensorViewMut<'a> {
    /// Builds a mutable view, checking length and quantization like [`TensorView::new`].
    pub fn new(dims: &[usize], data: TensorDataMut<'a>, quant: Quantization<'a>) -> Result<Self, Error> {
        let shape = Shape::new(dims)?;
        if shape.volume() != data.len() {
            return Err(Error::LengthMismatch { expected: shape.volume(), actual: data.len() });
        }
        quant.validate(data.dtype())?;
        Ok(TensorViewMut { shape, data, quant })
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The quantization parameters.
    pub fn quantization(&self) -> Quantization<'a> {
        self.quant
    }

    /// The data, for writing.
    pub fn data_mut(&mut self) -> &mut TensorDataMut<'a> {
        &mut self.data
    }

    /// Splits the view into its parts.
    pub fn into_parts(self) -> (Shape, TensorDataMut<'a>, Quantization<'a>) {
        (self.shape, self.data, self.quant)
    }

    /// Writes real values, quantizing them when the tensor is an integer type.
    pub fn quantize_from(&mut self, values: &[f32]) -> Result<(), Error> {
        if values.len() != self.data.len() {
            return Err(Error::LengthMismatch { expected: self.data.len(), actual: values.len() });
        }
        let (shape, quant) = (self.shape, self.quant);
        match &mut self.data {
            TensorDataMut::F32(d) => d.copy_from_slice(values),
            TensorDataMut::I8(d) => {
                for (i, (o, &v)) in d.iter_mut().zip(values).enumerate() {
                    let (s, z) = quant.params_at(&shape, i);
                    *o = quantize_i8(v, s, z);
                }
            }
            TensorDataMut::U8(d) => {
                for (i, (o, &v)) in d.iter_mut().zip(values).enumerate() {
                    let (s, z) = quant.params_at(&shape, i);
                    *o = quantize_u8(v, s, z);
                }
            }
            TensorDataMut::I32(d) => {
                for (i, (o, &v)) in d.iter_mut().zip(values).enumerate() {
                    let (s, z) = quant.params_at(&shape, i);
                    *o = quantize_i32(v, s, z);
                }
            }
        }
        Ok(())
    }
}

/// `round(x / scale) + zero_point`, rounded half away from zero, saturated to i8.
#[inline]
pub fn quantize_i8(x: f32, scale: f32, zero_point: i32) -> i8 {
    quantize_i32(x, scale, zero_point).clamp(-128, 127) as i8
}

/// `round(x / scale) + zero_point`, rounded half away from zero, saturated to u8.
#[inline]
pub fn quantize_u8(x: f32, scale: f32, zero_point: i32) -> u8 {
    quantize_i32(x, scale, zero_point).clamp(0, 255) as u8
}

/// `round(x / scale) + zero_point`, rounded half away from zero, saturated to i32 (NaN gives the zero point).
#[inline]
pub fn quantize_i32(x: f32, scale: f32, zero_point: i32) -> i32 {
    let q = libm::roundf(x / scale);
    let q = if q.is_nan() { 0.0 } else { q };
    // `as` saturates for floats out of range.
    (q as i32).saturating_add(zero_point)
}

/// `scale * (q - zero_point)`.
#[inline]
pub fn dequantize(q: i32, scale: f32, zero_point: i32) -> f32 {
    scale * (q - zero_point) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rounds_half_away_and_saturates() {
        assert_eq!(quantize_i8(0.25, 0.5, 0), 1);
        assert_eq!(quantize_i8(-0.25, 0.5, 0), -1);
        assert_eq!(quantize_i8(1000.0, 0.1, 0), 127);
        assert_eq!(quantize_i8(-1000.0, 0.1, 3), -128);
        assert_eq!(quantize_u8(-1.0, 0.1, 128), 118);
        assert_eq!(quantize_u8(f32::NAN, 0.1, 7), 7);
        assert_eq!(quantize_i32(f32::INFINITY, 1.0, 5), i32::MAX);
    }

    #[test]
    fn quantize_dequantize_round_trip_is_within_half_a_step() {
        let (s, z) = (0.05, -3);
        for i in -200..200 {
            let x = i as f32 * 0.013;
            let back = dequantize(quantize_i8(x, s, z) as i32, s, z);
            if (-6.25..=6.4).contains(&x) {
                assert!((back - x).abs() <= s / 2.0 + 1e-6, "{x} -> {back}");
            }
        }
    }

    #[test]
    fn view_rejects_wrong_length_and_bad_quantization() {
        let d = [0.0f32; 6];
        assert_eq!(TensorView::from_f32(&[2, 4], &d).unwrap_err(), Error::LengthMismatch { expected: 8, actual: 6 });
        let q = [0i8; 4];
        let bad = Quantization::PerTensor { scale: 0.0, zero_point: 0 };
        assert_eq!(TensorView::new(&[4], TensorData::I8(&q), bad).unwrap_err(), Error::InvalidScale);
        let bad = Quantization::PerTensor { scale: 1.0, zero_point: 300 };
        assert_eq!(TensorView::new(&[4], TensorData::I8(&q), bad).unwrap_err(), Error::ZeroPointOutOfRange);
        assert_eq!(Shape::new(&[1; 7]).unwrap_err(), Error::RankTooLarge { rank: 7, max: MAX_RANK });
    }

    #[test]
    fn per_channel_dequantization_uses_the_channel_of_each_element() {
        // Shape [2, 3], channel axis 0: row 0 scale 0.5, row 1 scale 2 with zero point 1.
        let q = [2i8, 4, 6, 1, 2, 3];
        let scales = [0.5, 2.0];
        let zps = [0, 1];
        let quant = Quantization::PerChannel { axis: 0, scale: &scales, zero_point: &zps };
        let t = TensorView::new(&[2, 3], TensorData::I8(&q), quant).unwrap();
        let mut out = [0.0; 6];
        t.dequantize_into(&mut out).unwrap();
        assert_eq!(out, [1.0, 2.0, 3.0, 0.0, 2.0, 4.0]);
    }

    #[test]
    fn quantize_from_writes_integer_tensors() {
        let mut buf = [0u8; 3];
        let quant = Quantization::PerTensor { scale: 0.5, zero_point: 10 };
        let mut t = TensorViewMut::new(&[3], TensorDataMut::U8(&mut buf), quant).unwrap();
        t.quantize_from(&[0.0, 1.0, -10.0]).unwrap();
        assert_eq!(buf, [10, 12, 0]);
    }
}
