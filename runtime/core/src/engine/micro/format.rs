//! The Lepton micro model (`.lpm`): a postcard-encoded header, tensor table and op list, laid
//! out so a model in flash is used in place: op weights are byte slices borrowed from the file.
//!
//! File = postcard(`Header`) ‖ `tensor_count` × postcard(`TensorDesc`) ‖ `op_count` × postcard(`Op`).
//! Multi-byte values inside weight slices (biases, requantization tables, per-channel
//! quantization) are little-endian.
//!
//! Every tensor is int8 with a scale and zero point; a model output may instead carry one scale
//! and zero point per channel ([`TensorDesc::channels`]): a concatenation of tensors computed at
//! different scales (a detector's pixel coordinates next to its probabilities) is then a copy, and
//! the host dequantizes each channel with its own scale.
//!
//! Version 2 (version 1 files are refused: recompile them with `lepton-convert compile`): tensors
//! gained [`TensorDesc::channels`] and the [`Layout::ChannelsLast`] order; ops [`Op::Slice`] and
//! [`Op::Const`]. Added since, without a version change (every older file reads the same):
//! [`Op::Variable`] (a streaming model's state) and the [`TFLITE_ROUNDING`] flag of requantization
//! tables (models compiled from TFLite files), which earlier runtimes refuse as a bad shift.

use crate::quant::{Requant, Rounding};
use serde::{Deserialize, Serialize};

/// First bytes of every `.lpm` file.
pub const MAGIC: [u8; 4] = *b"LPM\x01";
/// Format version this runtime reads and writes.
pub const VERSION: u16 = 2;
/// Most model inputs or outputs.
pub const MAX_IO: usize = 4;
/// Marks "no tensor" (an op without scratch).
pub const NONE: u16 = u16::MAX;

/// The file header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header<'a> {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// [`VERSION`].
    pub version: u16,
    /// Arena bytes the model needs: every activation and scratch buffer, planned.
    pub arena_bytes: u32,
    /// Entries in the tensor table.
    pub tensor_count: u16,
    /// Ops, run in order.
    pub op_count: u16,
    /// Model input tensors.
    pub inputs: heapless::Vec<u16, MAX_IO>,
    /// Model output tensors.
    pub outputs: heapless::Vec<u16, MAX_IO>,
    /// The model manifest (TOML), empty if none.
    #[serde(borrow)]
    pub manifest: &'a str,
}

/// How a tensor's elements are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Row-major in the order of `shape` (NHWC for images, [N, C] for vectors).
    Plain,
    /// A model input or output kept in ONNX's NCHW order; `shape` is still N, H, W, C.
    Nchw,
    /// Row-major in the order of `shape`, which is also the ONNX order of its dimensions (without
    /// the H of 1 at rank 3): the channel axis is ONNX's last (a detector's `[N, boxes, fields]`).
    ChannelsLast,
}

/// One tensor of the arena (all int8).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TensorDesc<'a> {
    /// Name in the source model (inputs and outputs keep theirs).
    #[serde(borrow)]
    pub name: &'a str,
    /// Dimensions: `[N, H, W, C]` for images, `[N, C, 1, 1]`… padded with 1 to rank 4.
    pub shape: [u32; 4],
    /// Rank in the source model (2 for `[N, C]`, 4 for images).
    pub rank: u8,
    /// Element order.
    pub layout: Layout,
    /// Quantization scale.
    pub scale: f32,
    /// Quantization zero point.
    pub zero_point: i32,
    /// Per-channel quantization: empty when `scale` and `zero_point` hold for every element; else
    /// one (f32 scale, i32 zero point) pair per channel (`shape[3]`), LE, each valid as `scale`
    /// and `zero_point` must be. Only a [`Op::Concat`] writes such a tensor and no op reads it: it
    /// is a model output.
    #[serde(borrow)]
    pub channels: &'a [u8],
    /// Byte offset in the arena.
    pub offset: u32,
}

impl TensorDesc<'_> {
    /// Elements (= bytes), or `None` when the dimensions' product overflows `usize`.
    pub fn checked_len(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
    }

    /// Checks the description on its own and against an arena of `arena` bytes: dimensions > 0,
    /// rank ≤ 4, size and end offset without overflow and inside the arena, zero point within
    /// int8, scale finite and > 0. After it, [`len`](Self::len) and [`range`](Self::range) cannot
    /// overflow.
    pub fn validate(&self, arena: usize) -> Result<(), &'static str> {
        if self.shape.contains(&0) {
            return Err("a dimension is 0");
        }
        if self.rank > 4 {
            return Err("rank above 4");
        }
        let end = self.checked_len().and_then(|l| (self.offset as usize).checked_add(l)).ok_or("size overflows")?;
        if end > arena {
            return Err("lies outside the arena");
        }
        if !(-128..=127).contains(&self.zero_point) {
            return Err("zero point outside int8");
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err("scale not finite and > 0");
        }
        if !self.channels.is_empty() {
            if self.channels.len() != self.shape[3] as usize * 8 {
                return Err("per-channel quantization needs 8 bytes per channel");
            }
            for c in 0..self.shape[3] as usize {
                let (s, z) = self.channel_quant(c);
                if !(s.is_finite() && s > 0.0) {
                    return Err("a channel's scale is not finite and > 0");
                }
                if !(-128..=127).contains(&z) {
                    return Err("a channel's zero point is outside int8");
                }
            }
        }
        Ok(())
    }

    /// True when the tensor is quantized per channel ([`channels`](Self::channels)).
    pub fn per_channel(&self) -> bool {
        !self.channels.is_empty()
    }

    /// Scale and zero point of channel `c` (the tensor's own when it is quantized per tensor).
    pub fn channel_quant(&self, c: usize) -> (f32, i32) {
        match self.channels.get(c * 8..c * 8 + 8) {
            Some(b) => (f32::from_le_bytes([b[0], b[1], b[2], b[3]]), i32::from_le_bytes([b[4], b[5], b[6], b[7]])),
            None => (self.scale, self.zero_point),
        }
    }

    /// Elements (= bytes); `usize::MAX` when the dimensions' product overflows (no slice is that
    /// long, so a size check against it fails instead of passing on a wrapped product).
    pub fn len(&self) -> usize {
        self.checked_len().unwrap_or(usize::MAX)
    }

    /// True for an empty tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The arena byte range (its end saturates at `usize::MAX`, past any arena).
    pub fn range(&self) -> core::ops::Range<usize> {
        self.offset as usize..(self.offset as usize).saturating_add(self.len())
    }

    /// Its shape in ONNX order (the `.lpm` stores N, H, W, C): the dims buffer and how many of them
    /// are used (the rank).
    pub fn onnx_dims(&self) -> ([usize; 4], usize) {
        onnx_dims(self.shape, self.rank, self.layout)
    }
}

/// The ONNX dimensions of a tensor stored with `shape` (N, H, W, C), `rank` and `layout`: the dims
/// buffer and how many of them are used. Channels are ONNX's axis 1 (`[N, C, H, W]`, `[N, C, L]`,
/// `[N, C]`), except in [`Layout::ChannelsLast`], where the dimensions are `shape`'s own order.
pub fn onnx_dims(shape: [u32; 4], rank: u8, layout: Layout) -> ([usize; 4], usize) {
    let s = shape.map(|d| d as usize);
    match (layout, rank) {
        (_, 0) => ([0; 4], 0),
        (_, 1) => ([s[3], 0, 0, 0], 1),
        (_, 2) => ([s[0], s[3], 0, 0], 2),
        (Layout::ChannelsLast, 3) => ([s[0], s[2], s[3], 0], 3),
        (Layout::ChannelsLast, _) => (s, 4),
        (_, 3) => ([s[0], s[3], s[2], 0], 3),
        _ => ([s[0], s[3], s[1], s[2]], 4),
    }
}

/// A convolution: regular, grouped or depthwise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Conv<'a> {
    /// Input tensor (NHWC).
    pub input: u16,
    /// Output tensor (NHWC).
    pub output: u16,
    /// Kernel height, width.
    pub kernel: [u16; 2],
    /// Stride vertical, horizontal.
    pub stride: [u16; 2],
    /// Dilation vertical, horizontal.
    pub dilation: [u16; 2],
    /// Padding top, left, bottom, right.
    pub pad: [u16; 4],
    /// Groups (input channels for depthwise).
    pub groups: u16,
    /// int8 weights `[Cout][Kh][Kw][Cin/groups]`.
    #[serde(borrow)]
    pub weights: &'a [u8],
    /// int32 biases `[Cout]`, LE, at scale input_scale × weight_scale.
    #[serde(borrow)]
    pub bias: &'a [u8],
    /// Per-output-channel requantization `[Cout]` × (i32 multiplier LE, u8 shift).
    #[serde(borrow)]
    pub requant: &'a [u8],
    /// Output clamp (fused ReLU/ReLU6), within int8.
    pub clamp: [i8; 2],
}

/// A fully connected layer: `[N, Cin] × [Cout, Cin]ᵀ`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FullyConnected<'a> {
    /// Input tensor `[N, Cin]`.
    pub input: u16,
    /// Output tensor `[N, Cout]`.
    pub output: u16,
    /// int8 weights `[Cout][Cin]`.
    #[serde(borrow)]
    pub weights: &'a [u8],
    /// int32 biases `[Cout]`, LE.
    #[serde(borrow)]
    pub bias: &'a [u8],
    /// Per-output requantization, as for [`Conv`].
    #[serde(borrow)]
    pub requant: &'a [u8],
    /// Output clamp.
    pub clamp: [i8; 2],
}

/// An elementwise add or multiply of two int8 tensors; `b` may broadcast over `a` (same rank,
/// dimensions of 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Binary {
    /// Left operand.
    pub a: u16,
    /// Right operand.
    pub b: u16,
    /// Result.
    pub output: u16,
    /// Add: `a` rescale (`a_scale / out_scale`); Mul: `a_scale × b_scale / out_scale`.
    pub ma: Requant,
    /// Add: `b` rescale (`b_scale / out_scale`), on the same shift as `ma`; Mul: unused.
    pub mb: Requant,
    /// Output clamp.
    pub clamp: [i8; 2],
}

/// Max or average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    /// Input (NHWC).
    pub input: u16,
    /// Output (NHWC).
    pub output: u16,
    /// Window height, width.
    pub kernel: [u16; 2],
    /// Stride.
    pub stride: [u16; 2],
    /// Padding top, left, bottom, right.
    pub pad: [u16; 4],
    /// Average: divide by the whole window (count_include_pad) rather than its valid part.
    pub count_include_pad: bool,
    /// Rescale `in_scale / out_scale` (max pooling requires equal scales: 1).
    pub requant: Requant,
}

/// One step of a micro model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Op<'a> {
    /// Convolution.
    Conv(#[serde(borrow)] Conv<'a>),
    /// Fully connected.
    FullyConnected(#[serde(borrow)] FullyConnected<'a>),
    /// `out = a + b` (requantized).
    Add(Binary),
    /// `out = a × b` (requantized).
    Mul(Binary),
    /// Any int8 → int8 elementwise function (activation chains, requantization), as a table.
    Lut {
        /// Input.
        input: u16,
        /// Output.
        output: u16,
        /// 256 entries: output for input -128..=127.
        #[serde(borrow)]
        table: &'a [u8],
    },
    /// Max pooling.
    MaxPool(Pool),
    /// Average pooling.
    AvgPool(Pool),
    /// Mean over H and W: `[N, H, W, C]` → `[N, 1, 1, C]`.
    GlobalAvgPool {
        /// Input.
        input: u16,
        /// Output.
        output: u16,
        /// `in_scale / (out_scale × H × W)`.
        requant: Requant,
    },
    /// Copy (reshape, flatten) in the same element order.
    Copy {
        /// Input.
        input: u16,
        /// Output.
        output: u16,
    },
    /// NCHW ↔ NHWC conversion of a 4-D tensor.
    Transpose {
        /// Input.
        input: u16,
        /// Output.
        output: u16,
        /// True: input NCHW → output NHWC; false: NHWC → NCHW.
        to_nhwc: bool,
    },
    /// Concatenation along the channel (last) axis: a copy, so every input is quantized as its
    /// channels of the output are (a per-tensor output: as the output; a per-channel one: each
    /// input as its channels).
    Concat {
        /// Input tensor ids, u16 LE.
        #[serde(borrow)]
        inputs: &'a [u8],
        /// Output.
        output: u16,
    },
    /// Softmax over the last axis; output scale 1/256, zero point -128.
    Softmax {
        /// Input.
        input: u16,
        /// Output.
        output: u16,
        /// `exp(-d × in_scale)` for d = 0..=255, Q16 u32 LE (1024 bytes).
        #[serde(borrow)]
        table: &'a [u8],
    },
    /// Channels `begin..begin + C_out` of every pixel (a strided copy), quantization kept.
    Slice {
        /// Input.
        input: u16,
        /// Output: the input's N, H, W and quantization, fewer channels.
        output: u16,
        /// First input channel copied.
        begin: u16,
    },
    /// Writes constant int8 values (a grid of cell offsets, anchors) into a tensor.
    Const {
        /// Output.
        output: u16,
        /// Its values in the output's element order and quantization.
        #[serde(borrow)]
        data: &'a [u8],
    },
    /// A tensor that keeps its value from one run to the next: a streaming model's state (a
    /// TFLite resource variable). Set to `init` when the model is loaded and on every reset; a
    /// run skips this op, and the model's ops read the tensor and write it (a [`Op::Copy`]
    /// into it). The compiler places it where no other tensor lives.
    Variable {
        /// The state tensor.
        output: u16,
        /// Its value after a reset, in its element order and quantization.
        #[serde(borrow)]
        init: &'a [u8],
    },
}

impl Op<'_> {
    /// Short name for reports and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::FullyConnected(_) => "FullyConnected",
            Op::Add(_) => "Add",
            Op::Mul(_) => "Mul",
            Op::Lut { .. } => "Lut",
            Op::MaxPool(_) => "MaxPool",
            Op::AvgPool(_) => "AvgPool",
            Op::GlobalAvgPool { .. } => "GlobalAvgPool",
            Op::Copy { .. } => "Copy",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Softmax { .. } => "Softmax",
            Op::Slice { .. } => "Slice",
            Op::Const { .. } => "Const",
            Op::Variable { .. } => "Variable",
        }
    }
}

/// Flag in the shift byte of a requantization table entry ([`Conv::requant`],
/// [`FullyConnected::requant`]): the channel rounds as TFLite's reference kernels do
/// ([`Rounding::Tflite`]); without it, halves up. Every entry of a table carries the same flag.
pub const TFLITE_ROUNDING: u8 = 0x80;

/// Reads entry `i` of a per-channel requantization table (the shift without its rounding flag).
#[inline(always)]
pub fn requant_at(table: &[u8], i: usize) -> Requant {
    let b = &table[i * 5..i * 5 + 5];
    Requant { multiplier: i32::from_le_bytes([b[0], b[1], b[2], b[3]]), shift: b[4] & !TFLITE_ROUNDING }
}

/// How the channels of a requantization table round (its first entry's flag; validation checks
/// that every entry agrees).
#[inline(always)]
pub fn rounding(table: &[u8]) -> Rounding {
    match table.get(4) {
        Some(b) if b & TFLITE_ROUNDING != 0 => Rounding::Tflite,
        _ => Rounding::HalfUp,
    }
}

/// Reads entry `i` of an int32 LE table.
#[inline(always)]
pub fn i32_at(table: &[u8], i: usize) -> i32 {
    let b = &table[i * 4..i * 4 + 4];
    i32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(shape: [u32; 4], offset: u32) -> TensorDesc<'static> {
        TensorDesc {
            name: "t",
            shape,
            rank: 4,
            layout: Layout::Plain,
            scale: 1.0,
            zero_point: 0,
            channels: &[],
            offset,
        }
    }

    #[test]
    fn len_of_a_shape_whose_product_overflows_saturates_instead_of_wrapping() {
        let t = desc([u32::MAX; 4], 16);
        assert_eq!(t.checked_len(), None);
        assert_eq!(t.len(), usize::MAX);
        assert_eq!(t.range(), 16..usize::MAX);
        assert!(t.validate(1 << 20).is_err());
    }

    #[test]
    fn len_of_a_valid_shape_is_its_product() {
        let t = desc([1, 4, 4, 8], 32);
        assert_eq!(t.len(), 128);
        assert_eq!(t.range(), 32..160);
    }
}
