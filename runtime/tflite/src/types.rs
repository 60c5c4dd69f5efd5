//! What a checked model holds: tensors, their element types and quantization, operators, subgraphs.

use crate::schema;
use std::borrow::Cow;

/// A tensor's element type, as TFLite names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    /// 32-bit float.
    Float32,
    /// 16-bit float (weights of fp16 models, dequantized on load).
    Float16,
    /// 64-bit float.
    Float64,
    /// Signed 4-bit integer, two per byte.
    Int4,
    /// Signed 8-bit integer.
    Int8,
    /// Unsigned 8-bit integer (legacy asymmetric quantization).
    UInt8,
    /// Signed 16-bit integer.
    Int16,
    /// Unsigned 16-bit integer.
    UInt16,
    /// Signed 32-bit integer (biases, indices, shapes).
    Int32,
    /// Unsigned 32-bit integer.
    UInt32,
    /// Signed 64-bit integer.
    Int64,
    /// Unsigned 64-bit integer.
    UInt64,
    /// Boolean, one byte each.
    Bool,
    /// Variable-length strings.
    String,
    /// Complex of two 32-bit floats.
    Complex64,
    /// Complex of two 64-bit floats.
    Complex128,
    /// A resource handle (VAR_HANDLE's output: a variable of the model's state).
    Resource,
    /// A variant (TensorFlow lists and the like).
    Variant,
}

impl ElementType {
    /// The schema's type, or `None` for a value this schema does not know.
    pub fn from_schema(t: schema::TensorType) -> Option<Self> {
        use schema::TensorType as T;
        Some(match t {
            T::FLOAT32 => Self::Float32,
            T::FLOAT16 => Self::Float16,
            T::FLOAT64 => Self::Float64,
            T::INT4 => Self::Int4,
            T::INT8 => Self::Int8,
            T::UINT8 => Self::UInt8,
            T::INT16 => Self::Int16,
            T::UINT16 => Self::UInt16,
            T::INT32 => Self::Int32,
            T::UINT32 => Self::UInt32,
            T::INT64 => Self::Int64,
            T::UINT64 => Self::UInt64,
            T::BOOL => Self::Bool,
            T::STRING => Self::String,
            T::COMPLEX64 => Self::Complex64,
            T::COMPLEX128 => Self::Complex128,
            T::RESOURCE => Self::Resource,
            T::VARIANT => Self::Variant,
            _ => return None,
        })
    }

    /// TFLite's name (`INT8`, `FLOAT32`), as LiteRT's Python API and the schema spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Float32 => "FLOAT32",
            Self::Float16 => "FLOAT16",
            Self::Float64 => "FLOAT64",
            Self::Int4 => "INT4",
            Self::Int8 => "INT8",
            Self::UInt8 => "UINT8",
            Self::Int16 => "INT16",
            Self::UInt16 => "UINT16",
            Self::Int32 => "INT32",
            Self::UInt32 => "UINT32",
            Self::Int64 => "INT64",
            Self::UInt64 => "UINT64",
            Self::Bool => "BOOL",
            Self::String => "STRING",
            Self::Complex64 => "COMPLEX64",
            Self::Complex128 => "COMPLEX128",
            Self::Resource => "RESOURCE",
            Self::Variant => "VARIANT",
        }
    }

    /// Bytes that `elements` values take in a buffer; `None` for types of no fixed size.
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        let bits: u64 = match self {
            Self::Int4 => 4,
            Self::Int8 | Self::UInt8 | Self::Bool => 8,
            Self::Float16 | Self::Int16 | Self::UInt16 => 16,
            Self::Float32 | Self::Int32 | Self::UInt32 => 32,
            Self::Float64 | Self::Int64 | Self::UInt64 | Self::Complex64 => 64,
            Self::Complex128 => 128,
            Self::String | Self::Resource | Self::Variant => return None,
        };
        Some((elements * bits).div_ceil(8))
    }
}

/// Affine quantization: `real = scale * (q - zero_point)`, per tensor or per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantization {
    /// One scale per tensor, or one per channel along `axis`.
    pub scale: Vec<f32>,
    /// As many zero points as scales.
    pub zero_point: Vec<i64>,
    /// The channel axis (`quantized_dimension`); meaningful with more than one scale.
    pub axis: usize,
}

impl Quantization {
    /// True when each channel has its own scale.
    pub fn per_channel(&self) -> bool {
        self.scale.len() > 1
    }
}

/// One tensor of a subgraph.
#[derive(Debug, Clone)]
pub struct Tensor<'a> {
    /// Its name in the file (what LiteRT's `get_tensor_details` calls it).
    pub name: &'a str,
    /// Element type.
    pub element: ElementType,
    /// Shape (dimensions the file leaves dynamic are 1 here and -1 in `signature`).
    pub shape: Vec<usize>,
    /// The shape signature, where dynamic dimensions are -1, if the file has one.
    pub signature: Option<Vec<i64>>,
    /// Quantization parameters, if the tensor is quantized.
    pub quantization: Option<Quantization>,
    /// Constant contents (weights, biases, shapes), checked to match the shape and type.
    pub data: Option<&'a [u8]>,
    /// True for a sparse constant (its data is in the compressed layout, not checked for length).
    pub sparse: bool,
    /// True for a variable tensor (state kept between runs, e.g. an LSTM's).
    pub variable: bool,
}

impl Tensor<'_> {
    /// Number of elements (checked not to overflow on read).
    pub fn elements(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// What an operator is: a builtin by its schema code, or a custom op by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind<'a> {
    /// A builtin (`CONV_2D`, `FULLY_CONNECTED`, ...).
    Builtin(schema::BuiltinOperator),
    /// A custom op (`TFLite_Detection_PostProcess`, ...).
    Custom(&'a str),
}

impl OpKind<'_> {
    /// TFLite's name of the op; a builtin code this schema does not know is `BUILTIN_<code>`.
    pub fn name(&self) -> Cow<'static, str> {
        match self {
            OpKind::Builtin(b) => match b.variant_name() {
                Some(n) => Cow::Borrowed(n),
                None => Cow::Owned(format!("BUILTIN_{}", b.0)),
            },
            OpKind::Custom(c) => Cow::Owned(c.to_string()),
        }
    }
}

/// One operator of a subgraph, its tensors checked to exist.
#[derive(Debug, Clone)]
pub struct Operator<'a> {
    /// What it computes.
    pub kind: OpKind<'a>,
    /// The op's version (which options and types it may use).
    pub version: i32,
    /// Input tensor indices; `None` for an optional input left out (-1 in the file).
    pub inputs: Vec<Option<usize>>,
    /// Output tensor indices.
    pub outputs: Vec<usize>,
    /// The schema's table, for the builtin options (`builtin_options_as_conv_2_doptions()`, ...).
    pub raw: schema::Operator<'a>,
}

/// One subgraph: tensors, its inputs and outputs, and its operators in execution order.
#[derive(Debug, Clone)]
pub struct Subgraph<'a> {
    /// Its name (`main` for most converters' entry subgraph), possibly empty.
    pub name: &'a str,
    /// Tensors, by index.
    pub tensors: Vec<Tensor<'a>>,
    /// Input tensor indices.
    pub inputs: Vec<usize>,
    /// Output tensor indices.
    pub outputs: Vec<usize>,
    /// Operators in the order they run.
    pub operators: Vec<Operator<'a>>,
}
