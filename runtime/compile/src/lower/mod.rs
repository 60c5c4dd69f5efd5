//! Lowering a quantized (QDQ) ONNX model to a micro model: every `QuantizeLinear` marks an int8
//! tensor, and the float subgraph that computes its input — a convolution, a matrix product, an
//! add or multiply, a pooling, a reshape, or a chain of elementwise functions of one int8 tensor
//! (which becomes a 256-entry table) — becomes one integer op. Activations are NHWC in the arena;
//! its layout is planned from tensor lifetimes. A float tail left after the last
//! `QuantizeLinear` (a detector's decoding: sigmoids, grid offsets, a softmax, a concatenation)
//! is lowered too, each float tensor quantized from the exact values its int8 inputs can give
//! ([`tail`](self)).

mod conv;
mod elementwise;
mod fusion;
mod layout;
mod plan;
mod schedule;
mod tail;
mod tflite;

pub use tflite::{lower_tflite, tflite_quantized};

use lepton_core::engine::micro::format::{
    self, Binary, Conv, FullyConnected, Header, Layout, Op, Pool, TensorDesc, MAGIC, VERSION,
};
use lepton_core::quant::Requant;
use lepton_tract::onnx::pb::{self, GraphProto, ModelProto, NodeProto};
use std::collections::{HashMap, HashSet};
use tract_onnx::prelude::*;

/// Why a model cannot be lowered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LowerError {
    /// A node has no integer equivalent (yet), or is not quantized.
    #[error("node `{node}` ({op}): {reason}")]
    Unsupported {
        /// Node name.
        node: String,
        /// Operator.
        op: String,
        /// Why.
        reason: String,
    },
    /// The model as a whole does not fit (no graph, shapes unknown, a float output).
    #[error("{0}")]
    Model(String),
}

/// A compiled micro model and what it contains.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The `.lpm` bytes.
    pub bytes: Vec<u8>,
    /// Ops in order: (kind, source node).
    pub ops: Vec<(String, String)>,
    /// Arena bytes at run time.
    pub arena_bytes: usize,
    /// Bytes of weights, biases and tables.
    pub weight_bytes: usize,
    /// Tensors in the table.
    pub tensors: usize,
    /// Convolution pairs run in bands to fit an arena limit.
    pub banding: Banding,
}

/// Kernel, stride and padding of a pooling.
type PoolGeometry = ([u16; 2], [u16; 2], [u16; 4]);

#[derive(Clone)]
struct T {
    name: String,
    shape: [u32; 4],
    rank: u8,
    layout: Layout,
    scale: f32,
    zero_point: i32,
    /// Per-channel (scale, zero point); empty: per tensor.
    channels: Vec<(f32, i32)>,
    /// The real values it can hold, when known more closely than its int8 range (a constant, a
    /// table's outputs).
    values: Option<(f64, f64)>,
}

impl T {
    fn len(&self) -> usize {
        self.shape.iter().map(|&d| d as usize).product()
    }

    /// A tensor shaped and quantized like `self`, named `name`, quantized per tensor.
    fn like(&self, name: String) -> T {
        T { name, channels: vec![], values: None, ..self.clone() }
    }

    /// The per-channel quantization as the `.lpm` stores it.
    fn channel_bytes(&self) -> Vec<u8> {
        self.channels.iter().flat_map(|(s, z)| s.to_le_bytes().into_iter().chain(z.to_le_bytes())).collect()
    }

    /// Whether the ONNX element order differs from the arena's: a plain (NHWC) tensor with both
    /// channels and several positions.
    fn reordered(&self) -> bool {
        self.layout == Layout::Plain && self.rank >= 3 && self.shape[1] * self.shape[2] > 1 && self.shape[3] > 1
    }

    /// The ONNX axis its channels (`shape[3]`) are.
    fn channel_axis(&self) -> usize {
        match (self.layout, self.rank) {
            (_, 0 | 1) => 0,
            (Layout::ChannelsLast, r) => r as usize - 1,
            _ => 1,
        }
    }

    /// The real values it can hold: known ones, else its int8 range.
    fn range(&self) -> (f64, f64) {
        let (s, z) = (self.scale as f64, self.zero_point as f64);
        self.values.unwrap_or(((-128.0 - z) * s, (127.0 - z) * s))
    }
}

/// Owned form of [`Op`], borrowed at encoding time.
#[derive(Clone)]
enum Spec {
    Conv { c: ConvParams, weights: Vec<u8>, bias: Vec<u8>, requant: Vec<u8>, reals: Vec<f64>, clamp: [i8; 2] },
    Fc { input: u16, output: u16, weights: Vec<u8>, bias: Vec<u8>, requant: Vec<u8>, reals: Vec<f64>, clamp: [i8; 2] },
    Add(Binary),
    Mul(Binary),
    Lut { input: u16, output: u16, table: Vec<u8> },
    MaxPool(Pool),
    AvgPool(Pool),
    Gap { input: u16, output: u16, requant: Requant },
    Copy { input: u16, output: u16 },
    Transpose { input: u16, output: u16, to_nhwc: bool },
    Concat { inputs: Vec<u8>, output: u16 },
    Softmax { input: u16, output: u16, table: Vec<u8> },
    Slice { input: u16, output: u16, begin: u16 },
    Const { output: u16, data: Vec<u8> },
    Variable { output: u16, init: Vec<u8> },
}

#[derive(Clone, Copy)]
struct ConvParams {
    input: u16,
    output: u16,
    kernel: [u16; 2],
    stride: [u16; 2],
    dilation: [u16; 2],
    pad: [u16; 4],
    groups: u16,
}

impl Spec {
    fn op(&self) -> Op<'_> {
        match self {
            Spec::Conv { c, weights, bias, requant, clamp, .. } => Op::Conv(Conv {
                input: c.input,
                output: c.output,
                kernel: c.kernel,
                stride: c.stride,
                dilation: c.dilation,
                pad: c.pad,
                groups: c.groups,
                weights,
                bias,
                requant,
                clamp: *clamp,
            }),
            Spec::Fc { input, output, weights, bias, requant, clamp, .. } => Op::FullyConnected(FullyConnected {
                input: *input,
                output: *output,
                weights,
                bias,
                requant,
                clamp: *clamp,
            }),
            Spec::Add(b) => Op::Add(*b),
            Spec::Mul(b) => Op::Mul(*b),
            Spec::Lut { input, output, table } => Op::Lut { input: *input, output: *output, table },
            Spec::MaxPool(p) => Op::MaxPool(*p),
            Spec::AvgPool(p) => Op::AvgPool(*p),
            Spec::Gap { input, output, requant } => {
                Op::GlobalAvgPool { input: *input, output: *output, requant: *requant }
            }
            Spec::Copy { input, output } => Op::Copy { input: *input, output: *output },
            Spec::Transpose { input, output, to_nhwc } => {
                Op::Transpose { input: *input, output: *output, to_nhwc: *to_nhwc }
            }
            Spec::Concat { inputs, output } => Op::Concat { inputs, output: *output },
            Spec::Softmax { input, output, table } => Op::Softmax { input: *input, output: *output, table },
            Spec::Slice { input, output, begin } => Op::Slice { input: *input, output: *output, begin: *begin },
            Spec::Const { output, data } => Op::Const { output: *output, data },
            Spec::Variable { output, init } => Op::Variable { output: *output, init },
        }
    }

    fn reads(&self) -> Vec<u16> {
        match self {
            Spec::Conv { c, .. } => vec![c.input],
            Spec::Fc { input, .. }
            | Spec::Lut { input, .. }
            | Spec::Gap { input, .. }
            | Spec::Copy { input, .. }
            | Spec::Transpose { input, .. }
            | Spec::Softmax { input, .. }
            | Spec::Slice { input, .. } => vec![*input],
            Spec::Const { .. } | Spec::Variable { .. } => vec![],
            Spec::Add(b) | Spec::Mul(b) => vec![b.a, b.b],
            Spec::MaxPool(p) | Spec::AvgPool(p) => vec![p.input],
            Spec::Concat { inputs, .. } => inputs.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect(),
        }
    }

    fn writes(&self) -> u16 {
        match self {
            Spec::Conv { c, .. } => c.output,
            Spec::Fc { output, .. }
            | Spec::Lut { output, .. }
            | Spec::Gap { output, .. }
            | Spec::Copy { output, .. }
            | Spec::Transpose { output, .. }
            | Spec::Concat { output, .. }
            | Spec::Softmax { output, .. }
            | Spec::Slice { output, .. }
            | Spec::Const { output, .. }
            | Spec::Variable { output, .. } => *output,
            Spec::Add(b) | Spec::Mul(b) => b.output,
            Spec::MaxPool(p) | Spec::AvgPool(p) => p.output,
        }
    }

    /// Renumbers every tensor the op refers to.
    fn remap(&mut self, f: &impl Fn(u16) -> u16) {
        match self {
            Spec::Conv { c, .. } => (c.input, c.output) = (f(c.input), f(c.output)),
            Spec::Fc { input, output, .. }
            | Spec::Lut { input, output, .. }
            | Spec::Gap { input, output, .. }
            | Spec::Copy { input, output }
            | Spec::Transpose { input, output, .. }
            | Spec::Softmax { input, output, .. }
            | Spec::Slice { input, output, .. } => (*input, *output) = (f(*input), f(*output)),
            Spec::Const { output, .. } | Spec::Variable { output, .. } => *output = f(*output),
            Spec::Add(b) | Spec::Mul(b) => (b.a, b.b, b.output) = (f(b.a), f(b.b), f(b.output)),
            Spec::MaxPool(p) | Spec::AvgPool(p) => (p.input, p.output) = (f(p.input), f(p.output)),
            Spec::Concat { inputs, output } => {
                for id in inputs.chunks_exact_mut(2) {
                    let new = f(u16::from_le_bytes([id[0], id[1]]));
                    id.copy_from_slice(&new.to_le_bytes());
                }
                *output = f(*output);
            }
        }
    }

    fn weight_bytes(&self) -> usize {
        match self {
            Spec::Conv { weights, bias, requant, .. } | Spec::Fc { weights, bias, requant, .. } => {
                weights.len() + bias.len() + requant.len()
            }
            Spec::Lut { table, .. }
            | Spec::Softmax { table, .. }
            | Spec::Const { data: table, .. }
            | Spec::Variable { init: table, .. } => table.len(),
            _ => 0,
        }
    }
}

/// Elementwise ops a table can stand for, when all their non-constant inputs derive from one tensor.
/// The quantizer (`lepton-convert quantize`) quantizes chains of exactly these at their ends only:
/// one list for both.
pub const ELEMENTWISE: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Pow",
    "Neg",
    "Abs",
    "Exp",
    "Sqrt",
    "Erf",
    "Elu",
    "Softplus",
    "Identity",
];

struct Ctx<'a> {
    model: &'a ModelProto,
    g: &'a GraphProto,
    inits: HashMap<&'a str, &'a pb::TensorProto>,
    producer: HashMap<&'a str, usize>,
    shapes: HashMap<String, Vec<usize>>,
    tensors: Vec<T>,
    /// Micro tensor holding the int8 value of a `QuantizeLinear` output.
    by_q: HashMap<String, u16>,
    /// Micro tensor holding a float tensor of the tail (quantized from its exact values).
    by_float: HashMap<String, u16>,
    specs: Vec<(Spec, String)>,
    inputs: Vec<u16>,
}

fn unsupported(n: &NodeProto, reason: impl Into<String>) -> LowerError {
    LowerError::Unsupported { node: n.name.clone(), op: n.op_type.clone(), reason: reason.into() }
}

fn attr<'n>(n: &'n NodeProto, name: &str) -> Option<&'n pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn ints(n: &NodeProto, name: &str) -> Vec<i64> {
    attr(n, name).map_or(vec![], |a| a.ints.clone())
}

fn int(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}

fn f32s(t: &Tensor) -> Result<Vec<f32>, LowerError> {
    let f = t.cast_to::<f32>().map_err(|e| LowerError::Model(format!("{e:#}")))?;
    Ok(f.to_plain_array_view::<f32>().map_err(|e| LowerError::Model(format!("{e:#}")))?.iter().copied().collect())
}

fn i64s(t: &Tensor) -> Result<Vec<i64>, LowerError> {
    let f = t.cast_to::<i64>().map_err(|e| LowerError::Model(format!("{e:#}")))?;
    Ok(f.to_plain_array_view::<i64>().map_err(|e| LowerError::Model(format!("{e:#}")))?.iter().copied().collect())
}

/// Inputs every node of an op type needs before lowering looks at them (the others are optional).
fn min_inputs(op: &str) -> usize {
    match op {
        "Constant" => 0,
        "QuantizeLinear" | "DequantizeLinear" | "Conv" | "Gemm" | "MatMul" | "Add" | "Sub" | "Mul" | "Div"
        | "Reshape" | "Pow" => 2,
        _ => 1,
    }
}

/// Every node has the inputs its op needs and an output, before anything indexes them: a file
/// that lacks one is an error naming the node, never a panic.
fn check_arity(g: &pb::GraphProto) -> Result<(), LowerError> {
    for n in &g.node {
        let need = min_inputs(&n.op_type);
        if n.input.len() < need || n.input.iter().take(need).any(String::is_empty) {
            return Err(unsupported(
                n,
                format!("needs {need} input(s), has {}", n.input.iter().filter(|i| !i.is_empty()).count()),
            ));
        }
        if n.output.first().is_none_or(String::is_empty) {
            return Err(unsupported(n, "has no output"));
        }
    }
    Ok(())
}

/// NCHW-order ONNX dims → the micro engine's NHWC dims, padded to rank 4.
fn nhwc(dims: &[usize]) -> Result<[u32; 4], LowerError> {
    if let Some(&bad) = dims.iter().find(|&&d| d == 0 || d > u16::MAX as usize) {
        return Err(LowerError::Model(format!("a dimension of {bad} in {dims:?}: the micro engine takes 1 to 65535")));
    }
    let d = |i: usize| dims[i] as u32;
    Ok(match dims.len() {
        0 => [1, 1, 1, 1],
        1 => [1, 1, 1, d(0)],
        2 => [d(0), 1, 1, d(1)],
        3 => [d(0), 1, d(2), d(1)],
        4 => [d(0), d(2), d(3), d(1)],
        r => return Err(LowerError::Model(format!("rank {r} tensors are not supported"))),
    })
}

fn requant(real: f64, n: &NodeProto) -> Result<Requant, LowerError> {
    Requant::from_real(real).map_err(|_| unsupported(n, format!("requantization multiplier {real} out of range")))
}

fn requant_table(values: impl IntoIterator<Item = f64>, n: &NodeProto) -> Result<Vec<u8>, LowerError> {
    let mut out = vec![];
    for r in values {
        let q = requant(r, n)?;
        out.extend_from_slice(&q.multiplier.to_le_bytes());
        out.push(q.shift);
    }
    Ok(out)
}

impl<'a> Ctx<'a> {
    fn init(&self, name: &str) -> Option<Result<Tensor, LowerError>> {
        self.inits.get(name).map(|t| {
            let onnx = tract_onnx::onnx();
            tract_onnx::tensor::load_tensor(&*onnx.provider, t, None)
                .map_err(|e| LowerError::Model(format!("tensor `{name}`: {e:#}")))
        })
    }

    fn node(&self, tensor: &str) -> Option<&'a NodeProto> {
        self.producer.get(tensor).map(|&i| &self.g.node[i])
    }

    /// Scale and zero point of a QuantizeLinear/DequantizeLinear node (per-tensor).
    fn qparams(&self, n: &NodeProto) -> Result<(f32, i32), LowerError> {
        let scale =
            n.input.get(1).and_then(|s| self.init(s)).ok_or_else(|| unsupported(n, "scale is not a constant"))??;
        let scale = f32s(&scale)?;
        if scale.len() != 1 {
            return Err(unsupported(n, "per-channel activation quantization"));
        }
        let zp = match n.input.get(2).filter(|z| !z.is_empty()).and_then(|z| self.init(z)) {
            Some(z) => {
                let z = z?;
                if z.datum_type().unquantized() != DatumType::I8 {
                    return Err(unsupported(n, format!("activations must be int8, not {:?}", z.datum_type())));
                }
                *i64s(&z)?.first().ok_or_else(|| unsupported(n, "empty zero point"))? as i32
            }
            None => return Err(unsupported(n, "activations must be int8 (no zero point given means uint8)")),
        };
        Ok((scale[0], zp))
    }

    /// The micro tensor a float tensor dequantizes, if it is `DequantizeLinear(int8 activation)`.
    fn dq(&self, tensor: &str) -> Option<u16> {
        let n = self.node(tensor)?;
        (n.op_type == "DequantizeLinear").then(|| self.by_q.get(&n.input[0]).copied()).flatten()
    }

    fn add_tensor(&mut self, t: T) -> u16 {
        self.tensors.push(t);
        (self.tensors.len() - 1) as u16
    }

    fn shape(&self, tensor: &str) -> Result<Vec<usize>, LowerError> {
        self.shapes.get(tensor).cloned().ok_or_else(|| LowerError::Model(format!("shape of `{tensor}` unknown")))
    }

    /// A constant weight behind DequantizeLinear: int8 values, per-channel scales along `axis`.
    fn weight(&self, tensor: &str, n: &NodeProto) -> Result<(Tensor, Vec<f32>, usize), LowerError> {
        let dq = self
            .node(tensor)
            .filter(|d| d.op_type == "DequantizeLinear")
            .ok_or_else(|| unsupported(n, "weights are not quantized"))?;
        let w = self.init(&dq.input[0]).ok_or_else(|| unsupported(n, "weights are not constant"))??;
        if w.datum_type().unquantized() != DatumType::I8 {
            return Err(unsupported(n, "weights must be int8"));
        }
        let scales = f32s(&self.init(&dq.input[1]).ok_or_else(|| unsupported(n, "weight scale not constant"))??)?;
        let rank = w.rank() as i64;
        let axis = int(dq, "axis", 1);
        let axis = if axis < 0 { axis + rank } else { axis };
        if !(0..rank.max(1)).contains(&axis) {
            return Err(unsupported(
                n,
                format!("weight quantization axis {} for rank {rank} weights", int(dq, "axis", 1)),
            ));
        }
        if scales.is_empty() || (scales.len() != 1 && Some(&scales.len()) != w.shape().get(axis as usize)) {
            return Err(unsupported(
                n,
                format!("{} weight scales for {:?} weights along axis {axis}", scales.len(), w.shape()),
            ));
        }
        if let Some(z) = dq.input.get(2).filter(|z| !z.is_empty()).and_then(|z| self.init(z)) {
            if i64s(&z?)?.iter().any(|&v| v != 0) {
                return Err(unsupported(n, "weights must be symmetric (zero point 0)"));
            }
        }
        Ok((w, scales, axis as usize))
    }

    /// A bias (quantized or float) as int32 at `x_scale × w_scale[c]`.
    fn bias(
        &self,
        tensor: Option<&String>,
        x_scale: f32,
        w_scales: &[f32],
        cout: usize,
        n: &NodeProto,
    ) -> Result<Vec<u8>, LowerError> {
        let real: Vec<f32> = match tensor.filter(|b| !b.is_empty()) {
            None => vec![0.0; cout],
            Some(b) => match self.node(b).filter(|d| d.op_type == "DequantizeLinear") {
                Some(dq) => {
                    let q = i64s(&self.init(&dq.input[0]).ok_or_else(|| unsupported(n, "bias not constant"))??)?;
                    let s = f32s(&self.init(&dq.input[1]).ok_or_else(|| unsupported(n, "bias scale not constant"))??)?;
                    if s.is_empty() || (s.len() != 1 && s.len() != q.len()) {
                        return Err(unsupported(n, format!("{} bias scales for {} biases", s.len(), q.len())));
                    }
                    q.iter().enumerate().map(|(c, &v)| v as f32 * s[if s.len() == 1 { 0 } else { c }]).collect()
                }
                None => f32s(&self.init(b).ok_or_else(|| unsupported(n, "bias not constant"))??)?,
            },
        };
        if real.len() != cout {
            return Err(unsupported(n, "bias length differs from output channels"));
        }
        if w_scales.is_empty() || (w_scales.len() != 1 && w_scales.len() != cout) {
            return Err(unsupported(n, format!("{} weight scales for {cout} output channels", w_scales.len())));
        }
        let mut out = vec![];
        for (c, r) in real.iter().enumerate() {
            let s = x_scale as f64 * w_scales[if w_scales.len() == 1 { 0 } else { c }] as f64;
            let v = (*r as f64 / s).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32;
            out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(out)
    }

    /// Lowers the subgraph computing `tensor` (the float input of a QuantizeLinear) into `out`.
    fn lower_producer(&mut self, tensor: &str, out: u16, q: &NodeProto) -> Result<Vec<Spec>, LowerError> {
        let Some(n) = self.node(tensor) else {
            return Err(unsupported(q, format!("`{tensor}` is neither computed nor an input")));
        };
        let dq_inputs: Vec<Option<u16>> =
            n.input.iter().map(|i| if i.is_empty() { None } else { self.dq(i) }).collect();
        match n.op_type.as_str() {
            "Conv" => Ok(vec![self.lower_conv(n, out)?]),
            "Gemm" | "MatMul" => Ok(vec![self.lower_fc(n, out)?]),
            "Add" | "Mul" | "Sub"
                if dq_inputs.len() == 2 && dq_inputs.iter().all(Option::is_some) && dq_inputs[0] != dq_inputs[1] =>
            {
                Ok(vec![self.lower_binary(
                    n,
                    dq_inputs[0].unwrap_or_default(),
                    dq_inputs[1].unwrap_or_default(),
                    out,
                )?])
            }
            "GlobalAveragePool" => {
                let x = dq_inputs[0].ok_or_else(|| unsupported(n, "input is not an int8 activation"))?;
                let (tx, to) = (&self.tensors[x as usize], &self.tensors[out as usize]);
                let hw = (tx.shape[1] * tx.shape[2]) as f64;
                let rq = requant(tx.scale as f64 / (to.scale as f64 * hw), n)?;
                Ok(vec![Spec::Gap { input: x, output: out, requant: rq }])
            }
            "MaxPool" | "AveragePool" => {
                let x = dq_inputs[0].ok_or_else(|| unsupported(n, "input is not an int8 activation"))?;
                if n.output.len() > 1 && !n.output[1].is_empty() {
                    return Err(unsupported(n, "MaxPool indices output"));
                }
                let (kernel, stride, pad) = self.pool_params(n, x)?;
                let (tx, to) = (&self.tensors[x as usize], &self.tensors[out as usize]);
                let rq = requant(tx.scale as f64 / to.scale as f64, n)?;
                let p = Pool {
                    input: x,
                    output: out,
                    kernel,
                    stride,
                    pad,
                    count_include_pad: int(n, "count_include_pad", 0) != 0,
                    requant: rq,
                };
                Ok(vec![if n.op_type == "MaxPool" { Spec::MaxPool(p) } else { Spec::AvgPool(p) }])
            }
            "Slice" => {
                let (mut specs, id) = self.lower_slice(n)?;
                let (ts, to) = (&self.tensors[id as usize], &self.tensors[out as usize]);
                // The sliced tensor keeps its source's layout: the output takes it.
                let (shape, layout) = (ts.shape, ts.layout);
                let same = ts.scale == to.scale && ts.zero_point == to.zero_point;
                let to = &mut self.tensors[out as usize];
                (to.shape, to.layout) = (shape, layout);
                match (same, specs.last_mut()) {
                    (true, Some(Spec::Slice { output, .. })) => *output = out,
                    _ => specs.push(self.identity_table(id, out)),
                }
                Ok(specs)
            }
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
                let x = dq_inputs[0].ok_or_else(|| unsupported(n, "input is not an int8 activation"))?;
                self.lower_reshape(n, x, out)
            }
            "Concat" => {
                let rank = self.shape(&n.input[0])?.len() as i64;
                let axis = int(n, "axis", 1);
                let axis = if axis < 0 { axis + rank } else { axis };
                if axis != 1 || (rank != 4 && rank != 2) {
                    return Err(unsupported(n, "concatenation only along channels"));
                }
                let mut specs = vec![];
                let mut ids = vec![];
                for (k, id) in dq_inputs.iter().enumerate() {
                    let id = id.ok_or_else(|| unsupported(n, format!("input {k} is not an int8 activation")))?;
                    let (ti, to) = (&self.tensors[id as usize], &self.tensors[out as usize]);
                    let id = if ti.scale != to.scale || ti.zero_point != to.zero_point {
                        let tmp = T {
                            name: format!("{}:requant", ti.name),
                            layout: Layout::Plain,
                            scale: to.scale,
                            zero_point: to.zero_point,
                            ..ti.like(String::new())
                        };
                        let t = self.add_tensor(tmp);
                        specs.push(self.identity_table(id, t));
                        t
                    } else {
                        id
                    };
                    ids.extend_from_slice(&id.to_le_bytes());
                }
                specs.push(Spec::Concat { inputs: ids, output: out });
                Ok(specs)
            }
            _ => Ok(vec![self.lower_chain(tensor, out, q)?]),
        }
    }

    fn run(&mut self) -> Result<Vec<u16>, LowerError> {
        let graph_inputs: HashSet<&str> =
            self.g.input.iter().map(|i| i.name.as_str()).filter(|n| !self.inits.contains_key(n)).collect();
        for n in &self.g.node {
            if n.op_type != "QuantizeLinear" {
                continue;
            }
            let (scale, zero_point) = self.qparams(n)?;
            let x = &n.input[0];
            let dims = self.shape(x)?;
            let shape = nhwc(&dims)?;
            let rank = dims.len() as u8;
            let qname = n.output[0].clone();
            // The int8 tensor, NHWC in the arena.
            let quantized = T {
                name: qname.clone(),
                shape,
                rank,
                layout: Layout::Plain,
                scale,
                zero_point,
                channels: vec![],
                values: None,
            };
            if graph_inputs.contains(x.as_str()) {
                let layout = if rank == 4 { Layout::Nchw } else { Layout::Plain };
                let input = self.add_tensor(T { layout, ..quantized.like(x.clone()) });
                self.inputs.push(input);
                let id = if rank == 4 {
                    let id = self.add_tensor(quantized);
                    self.specs.push((Spec::Transpose { input, output: id, to_nhwc: true }, n.name.clone()));
                    id
                } else {
                    input
                };
                self.by_q.insert(qname, id);
                continue;
            }
            let out = self.add_tensor(quantized);
            let source = self.node(x).map_or_else(|| n.name.clone(), |p| p.name.clone());
            for s in self.lower_producer(x, out, n)? {
                self.specs.push((s, source.clone()));
            }
            self.by_q.insert(qname, out);
        }
        if self.inputs.is_empty() {
            return Err(LowerError::Model(
                "no quantized input: the model is float; quantize it (lepton-convert quantize) so it starts with QuantizeLinear on its input".into(),
            ));
        }
        // Outputs: dequantized int8 tensors, or float tails computed from them.
        let mut outputs = vec![];
        for o in &self.g.output {
            let n =
                self.node(&o.name).ok_or_else(|| LowerError::Model(format!("output `{}` is not computed", o.name)))?;
            let id = self.lower_float(&o.name, true)?;
            let t = &self.tensors[id as usize];
            // Outputs are in ONNX element order: a plain NHWC tensor goes back to NCHW.
            let id = if t.layout == Layout::Plain && t.rank >= 3 && t.shape[1] * t.shape[2] > 1 {
                let tmp = T { layout: Layout::Nchw, ..t.like(o.name.clone()) };
                let out = self.add_tensor(tmp);
                self.specs.push((Spec::Transpose { input: id, output: out, to_nhwc: false }, n.name.clone()));
                out
            } else {
                self.tensors[id as usize].name = o.name.clone();
                id
            };
            outputs.push(id);
        }
        Ok(outputs)
    }
}

pub use schedule::Banding;

/// Lowers a QDQ model whose inputs have the given concrete shapes.
pub fn lower(model: &ModelProto, input_shapes: &[(String, Vec<usize>)]) -> Result<Compiled, LowerError> {
    lower_within(model, input_shapes, None)
}

/// [`lower`], with an arena of at most `max_arena` bytes when given: convolution pairs run in
/// bands until it fits (see [`Banding`]); an error says the smallest arena reached otherwise.
pub fn lower_within(
    model: &ModelProto,
    input_shapes: &[(String, Vec<usize>)],
    max_arena: Option<usize>,
) -> Result<Compiled, LowerError> {
    let g = model.graph.as_ref().ok_or_else(|| LowerError::Model("no graph".into()))?;
    check_arity(g)?;
    let shapes = lepton_tract::onnx::tensor_shapes(model, input_shapes).map_err(LowerError::Model)?;
    let mut producer = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in &n.output {
            producer.insert(o.as_str(), i);
        }
    }
    let mut inits: HashMap<&str, &pb::TensorProto> = g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    for n in &g.node {
        if n.op_type == "Constant" {
            if let (Some(o), Some(t)) = (n.output.first(), attr(n, "value").and_then(|a| a.t.as_ref())) {
                inits.insert(o.as_str(), t);
            }
        }
    }
    let mut ctx = Ctx {
        model,
        g,
        inits,
        producer,
        shapes,
        tensors: vec![],
        by_q: HashMap::new(),
        by_float: HashMap::new(),
        specs: vec![],
        inputs: vec![],
    };
    let outputs = ctx.run()?;
    fusion::fuse_activations(&ctx.tensors, &mut ctx.specs, &outputs)?;
    fusion::fuse_tables(&mut ctx.specs, &outputs);
    if ctx.tensors.len() > u16::MAX as usize || ctx.specs.len() > u16::MAX as usize {
        return Err(LowerError::Model(format!(
            "{} tensors and {} ops: at most 65535 each",
            ctx.tensors.len(),
            ctx.specs.len()
        )));
    }
    if ctx.inputs.len() > format::MAX_IO || outputs.len() > format::MAX_IO {
        return Err(LowerError::Model(format!("at most {} inputs and outputs", format::MAX_IO)));
    }
    let (views, banding) = match max_arena {
        Some(limit) => schedule::fit(&mut ctx.tensors, &mut ctx.specs, &ctx.inputs, &outputs, limit)?,
        None => (vec![None; ctx.tensors.len()], Banding::default()),
    };
    // Tensors no op touches (quantized values nothing reads, outputs fused away) leave the table.
    let (views, outputs) = plan::compact(&mut ctx.tensors, &mut ctx.specs, &mut ctx.inputs, outputs, views);
    let manifest = lepton_tract::onnx::manifest_text(model).unwrap_or("");
    encode(&ctx.tensors, &ctx.specs, &ctx.inputs, &outputs, &views, manifest, banding)
}

/// Plans the arena and writes the `.lpm` bytes of a lowered model.
fn encode(
    tensors: &[T],
    specs: &[(Spec, String)],
    inputs: &[u16],
    outputs: &[u16],
    views: &[Option<(usize, u32)>],
    manifest: &str,
    banding: Banding,
) -> Result<Compiled, LowerError> {
    let (offsets, arena) = plan::plan(tensors, specs, inputs, outputs, views);
    if arena > u32::MAX as usize {
        return Err(LowerError::Model(format!("an arena of {arena} bytes: at most 4 GiB")));
    }
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        arena_bytes: arena as u32,
        tensor_count: tensors.len() as u16,
        op_count: specs.len() as u16,
        inputs: inputs.iter().copied().collect(),
        outputs: outputs.iter().copied().collect(),
        manifest,
    };
    let encode_err = |e: postcard::Error| LowerError::Model(format!("encoding: {e}"));
    let mut bytes = postcard::to_stdvec(&header).map_err(encode_err)?;
    for (t, &offset) in tensors.iter().zip(&offsets) {
        let channels = t.channel_bytes();
        let d = TensorDesc {
            name: &t.name,
            shape: t.shape,
            rank: t.rank,
            layout: t.layout,
            scale: t.scale,
            zero_point: t.zero_point,
            channels: &channels,
            offset,
        };
        bytes.extend(postcard::to_stdvec(&d).map_err(encode_err)?);
    }
    for (s, _) in specs {
        bytes.extend(postcard::to_stdvec(&s.op()).map_err(encode_err)?);
    }
    Ok(Compiled {
        ops: specs.iter().map(|(s, src)| (s.op().name().to_string(), src.clone())).collect(),
        weight_bytes: specs.iter().map(|(s, _)| s.weight_bytes()).sum(),
        tensors: tensors.len(),
        arena_bytes: arena,
        banding,
        bytes,
    })
}
