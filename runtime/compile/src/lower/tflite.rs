//! Lowering a quantized TFLite model straight to a micro model. TFLite's int8 tensors are the
//! micro engine's own (row-major NHWC, a scale and zero point, weights per channel), so each
//! operator becomes one integer op computing what LiteRT's reference kernels compute, bit for
//! bit: requantization multipliers derived from the scales as TFLite derives them and rounded as
//! its kernels round ([`Rounding::Tflite`]), tables of element-wise functions filled as LiteRT
//! fills its own. Reshapes, and slices and splits of contiguous bytes, are views of their input
//! (no copy). Streaming state (VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE, with the initial
//! values CALL_ONCE's subgraph assigns) becomes `Variable` tensors the engine keeps between runs.
//!
//! uint8 tensors (legacy asymmetric quantization) are held as int8 with the zero point moved by
//! 128, which is exact. Anything else is refused naming the operator and why.

use super::*;
use lepton_core::quant::Rounding;
use lepton_tflite::schema::{ActivationFunctionType as Act, BuiltinOperator as B, Padding};
use lepton_tflite::{ElementType, OpKind, Operator, Subgraph, Tensor as TfTensor, TfliteModel};

/// Whether a checked TFLite model computes on int8 or uint8 activations (inputs, operator
/// outputs or state): the micro engine's kind of model. Float models (fp16 or dequantized
/// int8 weights included) are not.
pub fn tflite_quantized(model: &lepton_tflite::TfliteModel<'_>) -> bool {
    use lepton_tflite::ElementType::{Int8, UInt8};
    let g = model.main();
    let int8 = |i: &usize| matches!(g.tensors[*i].element, Int8 | UInt8) && g.tensors[*i].data.is_none();
    g.inputs.iter().any(int8) || g.operators.iter().flat_map(|o| o.outputs.iter()).any(int8)
}

/// Lowers a TFLite model whose activations are int8 or uint8; `manifest` is embedded as is.
pub fn lower_tflite(model: &TfliteModel<'_>, manifest: &str) -> Result<Compiled, LowerError> {
    let g = model.main();
    let mut l = Lowering::new(g);
    l.variables(model)?;
    for &i in &g.inputs {
        let id = l.activation(i, "input").map_err(LowerError::Model)?;
        l.inputs.push(id);
    }
    for (k, op) in g.operators.iter().enumerate() {
        l.op(k, op).map_err(|reason| LowerError::Unsupported {
            node: format!("operator {k}"),
            op: op.kind.name().escape_debug().to_string(),
            reason,
        })?;
    }
    let mut outputs = vec![];
    for &o in &g.outputs {
        let id = l.by_tensor[o].ok_or_else(|| {
            LowerError::Model(format!("output `{}` is not computed by any operator", g.tensors[o].name.escape_debug()))
        })?;
        outputs.push(id);
    }
    if l.inputs.len() > format::MAX_IO || outputs.len() > format::MAX_IO {
        return Err(LowerError::Model(format!("at most {} inputs and outputs", format::MAX_IO)));
    }
    if l.tensors.len() > u16::MAX as usize || l.specs.len() > u16::MAX as usize {
        return Err(LowerError::Model(format!(
            "{} tensors and {} ops: at most 65535 each",
            l.tensors.len(),
            l.specs.len()
        )));
    }
    // The initial values go first: `reset` writes them, runs skip them.
    let mut specs: Vec<(Spec, String)> = l.variable_specs.drain(..).chain(std::mem::take(&mut l.specs)).collect();
    let views = std::mem::take(&mut l.views);
    let (views, outputs) = plan::compact(&mut l.tensors, &mut specs, &mut l.inputs, outputs, views);
    encode(&l.tensors, &specs, &l.inputs, &outputs, &views, manifest, Banding::default())
}

/// A variable of the model's state, by its shared name.
struct Variable {
    /// The micro tensor holding it, once its shape is known (at its first read or assignment).
    id: Option<u16>,
    /// Its initial value (int8 bytes), from the initializer subgraph.
    init: Option<Vec<u8>>,
}

struct Lowering<'g, 'a> {
    g: &'g Subgraph<'a>,
    tensors: Vec<T>,
    views: Vec<Option<(usize, u32)>>,
    /// The micro tensor of each TFLite tensor (activations only).
    by_tensor: Vec<Option<u16>>,
    specs: Vec<(Spec, String)>,
    variable_specs: Vec<(Spec, String)>,
    inputs: Vec<u16>,
    /// Variables by shared name, and the name each resource tensor of the entry subgraph holds.
    variables: HashMap<String, Variable>,
    handles: HashMap<usize, String>,
}

/// TFLite dimensions as the micro engine's `[N, H, W, C]` (channels last, padded on the left).
fn dims4(shape: &[usize]) -> Result<[u32; 4], String> {
    if let Some(&bad) = shape.iter().find(|&&d| d == 0 || d > u16::MAX as usize) {
        return Err(format!("a dimension of {bad} in {shape:?}: the micro engine takes 1 to 65535"));
    }
    let d = |i: usize| shape[i] as u32;
    Ok(match shape.len() {
        0 => [1, 1, 1, 1],
        1 => [1, 1, 1, d(0)],
        2 => [d(0), 1, 1, d(1)],
        3 => [d(0), 1, d(1), d(2)],
        4 => [d(0), d(1), d(2), d(3)],
        r => return Err(format!("a rank {r} tensor: the micro engine takes up to 4")),
    })
}

/// Scale and zero point of an int8 or uint8 activation, as the int8 the engine holds.
fn quant_of(t: &TfTensor<'_>) -> Result<(f32, i32), String> {
    let name = t.name.escape_debug();
    let q = t.quantization.as_ref().filter(|q| !q.scale.is_empty());
    let shift = match t.element {
        ElementType::Int8 => 0,
        ElementType::UInt8 => 128,
        other => return Err(format!("tensor `{name}` is {}: the micro engine takes int8 and uint8", other.name())),
    };
    let q = q.ok_or_else(|| format!("tensor `{name}` is {} without a scale", t.element.name()))?;
    if q.per_channel() {
        return Err(format!("activation `{name}` is quantized per channel"));
    }
    let (scale, zero) = (q.scale[0], q.zero_point.first().copied().unwrap_or(0) - shift);
    if !(scale.is_finite() && scale > 0.0 && (-128..=127).contains(&zero)) {
        return Err(format!("activation `{name}`: scale {scale} or zero point {zero} out of range"));
    }
    Ok((scale, zero as i32))
}

/// TFLite's output range of a fused activation, on an int8 output of `(scale, zero point)`.
fn clamp(act: Act, (scale, zero): (f32, i32)) -> Result<[i8; 2], String> {
    let q = |v: f32| zero + (v / scale).round() as i32;
    let (lo, hi) = match act {
        Act::NONE => (-128, 127),
        Act::RELU => (zero.max(-128), 127),
        Act::RELU6 => (zero.max(-128), q(6.0).min(127)),
        Act::RELU_N1_TO_1 => (q(-1.0).max(-128), q(1.0).min(127)),
        other => return Err(format!("fused activation {:?} has no integer form", other.variant_name())),
    };
    if lo > hi {
        return Err("the fused activation leaves no output value".into());
    }
    Ok([lo as i8, hi as i8])
}

/// A requantization table for `reals`, each multiplier as TFLite computes it, flagged to round
/// as TFLite does.
fn tflite_requant(reals: &[f64]) -> Result<Vec<u8>, String> {
    let mut out = vec![];
    for &r in reals {
        let q = Requant::from_real(r).map_err(|_| format!("requantization multiplier {r} out of range"))?;
        out.extend_from_slice(&q.multiplier.to_le_bytes());
        out.push(q.shift | format::TFLITE_ROUNDING);
    }
    Ok(out)
}

fn i32s(data: &[u8]) -> Vec<i64> {
    data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect()
}

impl<'g, 'a> Lowering<'g, 'a> {
    fn new(g: &'g Subgraph<'a>) -> Self {
        Lowering {
            g,
            tensors: vec![],
            views: vec![],
            by_tensor: vec![None; g.tensors.len()],
            specs: vec![],
            variable_specs: vec![],
            inputs: vec![],
            variables: HashMap::new(),
            handles: HashMap::new(),
        }
    }

    fn add(&mut self, t: T, view: Option<(usize, u32)>) -> u16 {
        self.tensors.push(t);
        self.views.push(view);
        (self.tensors.len() - 1) as u16
    }

    /// The micro tensor for TFLite tensor `i` (an activation), made on first use.
    fn activation(&mut self, i: usize, what: &str) -> Result<u16, String> {
        if let Some(id) = self.by_tensor[i] {
            return Ok(id);
        }
        let t = &self.g.tensors[i];
        if t.data.is_some() {
            return Err(format!("{what} `{}` is a constant where an activation is expected", t.name.escape_debug()));
        }
        let id = self.add(self.describe(i)?, None);
        self.by_tensor[i] = Some(id);
        Ok(id)
    }

    /// The micro description of TFLite tensor `i`.
    fn describe(&self, i: usize) -> Result<T, String> {
        let t = &self.g.tensors[i];
        let (scale, zero_point) = quant_of(t)?;
        Ok(T {
            name: t.name.to_string(),
            shape: dims4(&t.shape)?,
            rank: t.shape.len() as u8,
            layout: Layout::ChannelsLast,
            scale,
            zero_point,
            channels: vec![],
            values: None,
        })
    }

    /// A new tensor `t` sharing the bytes of micro tensor `of` from `delta` bytes into it (a
    /// view of a view is one of the same base).
    fn alias(&mut self, of: u16, delta: u32, t: T) -> u16 {
        let (base, d0) = self.views[of as usize].unwrap_or((of as usize, 0));
        self.add(t, Some((base, d0 + delta)))
    }

    /// A view of micro tensor `of`, `delta` bytes into it, described as TFLite tensor `i`.
    fn view(&mut self, of: u16, delta: u32, i: usize) -> Result<u16, String> {
        let t = self.describe(i)?;
        let id = self.alias(of, delta, t);
        self.by_tensor[i] = Some(id);
        Ok(id)
    }

    /// A new tensor of its own for TFLite tensor `i` (an op's output).
    fn output(&mut self, i: usize) -> Result<u16, String> {
        if self.by_tensor[i].is_some() {
            return Err(format!("tensor `{}` is written twice", self.g.tensors[i].name.escape_debug()));
        }
        self.activation(i, "output")
    }

    fn push(&mut self, spec: Spec, source: &str) {
        self.specs.push((spec, source.to_string()));
    }

    /// Variables: the initial values the CALL_ONCE subgraphs assign, by shared name.
    fn variables(&mut self, model: &TfliteModel<'_>) -> Result<(), LowerError> {
        let name_of = |op: &Operator<'_>| -> Option<String> {
            let o = op.raw.builtin_options_as_var_handle_options()?;
            Some(format!("{}/{}", o.container().unwrap_or(""), o.shared_name().unwrap_or("")))
        };
        for op in &model.main().operators {
            if op.kind != OpKind::Builtin(B::CALL_ONCE) {
                continue;
            }
            let index = op.raw.builtin_options_as_call_once_options().map(|o| o.init_subgraph_index());
            let init = index
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| model.subgraphs.get(i))
                .ok_or_else(|| LowerError::Model("CALL_ONCE names no subgraph".into()))?;
            let mut handles: HashMap<usize, String> = HashMap::new();
            for op in &init.operators {
                match op.kind {
                    OpKind::Builtin(B::VAR_HANDLE) => {
                        if let (Some(name), Some(&out)) = (name_of(op), op.outputs.first()) {
                            handles.insert(out, name);
                        }
                    }
                    OpKind::Builtin(B::ASSIGN_VARIABLE) => {
                        let (Some(Some(r)), Some(Some(v))) = (op.inputs.first(), op.inputs.get(1)) else {
                            return Err(LowerError::Model("ASSIGN_VARIABLE without its two inputs".into()));
                        };
                        let value = &init.tensors[*v];
                        let (Some(name), Some(data)) = (handles.get(r), value.data) else {
                            return Err(LowerError::Model(format!(
                                "the initializer assigns `{}`, which is not a constant, to a variable",
                                value.name.escape_debug()
                            )));
                        };
                        if !matches!(value.element, ElementType::Int8 | ElementType::UInt8) {
                            return Err(LowerError::Model(format!(
                                "variable initial value `{}` is {}: int8 state only",
                                value.name.escape_debug(),
                                value.element.name()
                            )));
                        }
                        let bytes = if value.element == ElementType::UInt8 {
                            data.iter().map(|b| b ^ 0x80).collect()
                        } else {
                            data.to_vec()
                        };
                        self.variables.insert(name.clone(), Variable { id: None, init: Some(bytes) });
                    }
                    OpKind::Builtin(B::CALL_ONCE) => {}
                    _ => {
                        return Err(LowerError::Model(format!(
                            "the initializer subgraph runs {}: only variable assignments are taken",
                            op.kind.name().escape_debug()
                        )))
                    }
                }
            }
        }
        for op in &model.main().operators {
            if op.kind == OpKind::Builtin(B::VAR_HANDLE) {
                if let (Some(name), Some(&out)) = (name_of(op), op.outputs.first()) {
                    self.variables.entry(name.clone()).or_insert(Variable { id: None, init: None });
                    self.handles.insert(out, name);
                }
            }
        }
        Ok(())
    }

    /// The micro tensor of the variable behind resource tensor `r`, shaped and quantized like
    /// TFLite tensor `like` (its value), made on first use.
    fn variable(&mut self, r: usize, like: usize) -> Result<u16, String> {
        let name = self.handles.get(&r).cloned().ok_or("a variable not made by VAR_HANDLE")?;
        let var = self.variables.get(&name).ok_or("unknown variable")?;
        if let Some(id) = var.id {
            let (have, want) = (&self.tensors[id as usize], self.describe(like)?);
            if have.shape != want.shape || have.scale != want.scale || have.zero_point != want.zero_point {
                return Err(format!(
                    "variable `{}` is read or written with another shape or quantization",
                    name.escape_debug()
                ));
            }
            return Ok(id);
        }
        let init = var.init.clone().ok_or_else(|| {
            format!("variable `{}` has no initial value (no CALL_ONCE assigns it)", name.escape_debug())
        })?;
        let t = T { name: format!("state:{name}"), ..self.describe(like)? };
        if t.len() != init.len() {
            return Err(format!(
                "variable `{}` holds {} values, its initial value {}",
                name.escape_debug(),
                t.len(),
                init.len()
            ));
        }
        let id = self.add(t, None);
        self.variable_specs.push((Spec::Variable { output: id, init }, name.clone()));
        if let Some(v) = self.variables.get_mut(&name) {
            v.id = Some(id);
        }
        Ok(id)
    }

    /// Whether a READ_VARIABLE at op `k` may be the variable itself (no copy): nothing derived
    /// from its output (through views) is read after the variable's next assignment.
    fn read_may_alias(&self, k: usize, out: usize, r: usize) -> bool {
        let Some(name) = self.handles.get(&r) else { return false };
        let mut derived = HashSet::from([out]);
        let mut assigned = false;
        for op in &self.g.operators[k + 1..] {
            let reads_derived = op.inputs.iter().flatten().any(|i| derived.contains(i));
            if assigned && reads_derived {
                return false;
            }
            if let OpKind::Builtin(B::ASSIGN_VARIABLE) = op.kind {
                if op.inputs.first().copied().flatten().and_then(|h| self.handles.get(&h)) == Some(name) {
                    assigned = true;
                }
            }
            if reads_derived
                && matches!(
                    op.kind,
                    OpKind::Builtin(
                        B::RESHAPE | B::SQUEEZE | B::EXPAND_DIMS | B::STRIDED_SLICE | B::SPLIT | B::SPLIT_V
                    )
                )
            {
                derived.extend(op.outputs.iter().copied());
            }
        }
        true
    }

    fn constant(&self, i: usize) -> Result<&'g TfTensor<'a>, String> {
        let t = &self.g.tensors[i];
        if t.data.is_none() {
            return Err(format!("`{}` is not a constant", t.name.escape_debug()));
        }
        Ok(t)
    }

    fn ints(&self, i: usize) -> Result<Vec<i64>, String> {
        let t = self.constant(i)?;
        match t.element {
            ElementType::Int32 => Ok(i32s(t.data.unwrap_or_default())),
            other => Err(format!("`{}` is {} where int32 is expected", t.name.escape_debug(), other.name())),
        }
    }

    /// Per-output-channel weight scales along `axis` of weights `w` (int8, zero point 0).
    fn weight_scales(&self, w: usize, channels: usize, axis: usize) -> Result<Vec<f32>, String> {
        let t = self.constant(w)?;
        if t.element != ElementType::Int8 {
            return Err(format!("weights `{}` are {}: int8 only", t.name.escape_debug(), t.element.name()));
        }
        let q = t.quantization.as_ref().filter(|q| !q.scale.is_empty()).ok_or("weights without a scale")?;
        if q.zero_point.iter().any(|&z| z != 0) {
            return Err("weights with a zero point other than 0".into());
        }
        if q.per_channel() && (q.axis != axis || q.scale.len() != channels) {
            return Err(format!(
                "{} weight scales along axis {} for {channels} output channels",
                q.scale.len(),
                q.axis
            ));
        }
        Ok((0..channels).map(|c| q.scale[if q.per_channel() { c } else { 0 }]).collect())
    }

    /// int32 biases (or zeros), as the `.lpm` stores them.
    fn bias(&self, b: Option<usize>, channels: usize) -> Result<Vec<u8>, String> {
        let Some(b) = b else { return Ok(vec![0; channels * 4]) };
        let v = self.ints(b)?;
        if v.len() != channels {
            return Err(format!("{} biases for {channels} output channels", v.len()));
        }
        Ok(self.constant(b)?.data.unwrap_or_default().to_vec())
    }

    /// One operator.
    fn op(&mut self, k: usize, op: &Operator<'a>) -> Result<(), String> {
        let OpKind::Builtin(code) = op.kind else {
            return Err("a custom operator: the micro engine has none".into());
        };
        let source = format!("{} #{k}", op.kind.name().escape_debug());
        let input = |i: usize| -> Result<usize, String> {
            op.inputs.get(i).copied().flatten().ok_or_else(|| format!("input {i} is missing"))
        };
        let output = |i: usize| -> Result<usize, String> {
            op.outputs.get(i).copied().ok_or_else(|| format!("output {i} is missing"))
        };
        let raw = &op.raw;
        match code {
            B::VAR_HANDLE | B::CALL_ONCE => Ok(()),
            B::READ_VARIABLE => {
                let (r, out) = (input(0)?, output(0)?);
                let var = self.variable(r, out)?;
                if self.read_may_alias(k, out, r) {
                    self.by_tensor[out] = Some(var);
                } else {
                    let y = self.output(out)?;
                    self.push(Spec::Copy { input: var, output: y }, &source);
                }
                Ok(())
            }
            B::ASSIGN_VARIABLE => {
                let (r, v) = (input(0)?, input(1)?);
                let var = self.variable(r, v)?;
                let x = self.activation(v, "value")?;
                self.push(Spec::Copy { input: x, output: var }, &source);
                Ok(())
            }
            B::DEQUANTIZE => {
                // A float output of int8 values: the engine gives the int8 values and their
                // scale, which is what dequantizing computes.
                let (x, y) = (input(0)?, output(0)?);
                let id = self.activation(x, "input")?;
                let ty = &self.g.tensors[y];
                let t = T {
                    name: ty.name.to_string(),
                    shape: dims4(&ty.shape)?,
                    rank: ty.shape.len() as u8,
                    ..self.describe(x)?
                };
                if t.len() != self.tensors[id as usize].len() {
                    return Err("output size differs from the input's".into());
                }
                let v = self.alias(id, 0, t);
                self.by_tensor[y] = Some(v);
                Ok(())
            }
            B::RESHAPE | B::SQUEEZE | B::EXPAND_DIMS => {
                let (x, y) = (input(0)?, output(0)?);
                let id = self.activation(x, "input")?;
                let (a, b) = (self.describe(x)?, self.describe(y)?);
                if (a.scale, a.zero_point) != (b.scale, b.zero_point) || a.len() != b.len() {
                    return Err("output differs from the input in size or quantization".into());
                }
                self.view(id, 0, y)?;
                Ok(())
            }
            B::CONV_2D | B::DEPTHWISE_CONV_2D => self.conv(op, code == B::DEPTHWISE_CONV_2D, &source),
            B::FULLY_CONNECTED => self.fully_connected(op, &source),
            B::CONCATENATION => {
                let o = raw.builtin_options_as_concatenation_options().ok_or("no ConcatenationOptions")?;
                if o.fused_activation_function() != Act::NONE {
                    return Err("a fused activation on a concatenation".into());
                }
                let y = output(0)?;
                let shape = self.g.tensors[y].shape.clone();
                let rank = shape.len() as i64;
                let axis = if o.axis() < 0 { o.axis() as i64 + rank } else { o.axis() as i64 };
                if !(0..rank).contains(&axis) {
                    return Err(format!("axis {} of a rank {rank} tensor", o.axis()));
                }
                let axis = axis as usize;
                let out = self.output(y)?;
                let to = self.tensors[out as usize].clone();
                let xs: Vec<usize> = op.inputs.iter().flatten().copied().collect();
                let mut ids = vec![];
                for &x in &xs {
                    let id = self.activation(x, "input")?;
                    let ti = &self.tensors[id as usize];
                    if (ti.scale, ti.zero_point) != (to.scale, to.zero_point) {
                        return Err(format!(
                            "input `{}` is quantized differently from the output",
                            self.g.tensors[x].name.escape_debug()
                        ));
                    }
                    ids.push(id);
                }
                let total: usize = ids.iter().map(|&id| self.tensors[id as usize].len()).sum();
                if total != to.len() {
                    return Err(format!("inputs of {total} values for an output of {}", to.len()));
                }
                if shape[..axis].iter().all(|&d| d == 1) {
                    // The inputs' bytes one after the other: a copy of each into its part.
                    let mut delta = 0u32;
                    for &id in &ids {
                        let piece = T { name: format!("{}:part", to.name), ..self.tensors[id as usize].clone() };
                        let len = piece.len() as u32;
                        let p = self.alias(out, delta, piece);
                        self.push(Spec::Copy { input: id, output: p }, &source);
                        delta += len;
                    }
                    Ok(())
                } else if axis + 1 == shape.len() {
                    let bytes = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
                    self.push(Spec::Concat { inputs: bytes, output: out }, &source);
                    Ok(())
                } else {
                    Err(format!("concatenation along axis {axis} of {shape:?}: the micro engine takes the last axis, or one whose leading dimensions are 1"))
                }
            }
            B::STRIDED_SLICE => {
                let o = raw.builtin_options_as_strided_slice_options().ok_or("no StridedSliceOptions")?;
                if o.ellipsis_mask() != 0 || o.new_axis_mask() != 0 {
                    return Err("ellipsis or new-axis masks".into());
                }
                let (x, y) = (input(0)?, output(0)?);
                let dims = self.g.tensors[x].shape.clone();
                let (begin, end, strides) = (self.ints(input(1)?)?, self.ints(input(2)?)?, self.ints(input(3)?)?);
                if begin.len() != dims.len() || end.len() != dims.len() || strides.len() != dims.len() {
                    return Err("begin, end and strides must give every axis".into());
                }
                let mut ranges = vec![];
                for a in 0..dims.len() {
                    if strides[a] != 1 {
                        return Err(format!("stride {} on axis {a}: only 1", strides[a]));
                    }
                    let d = dims[a] as i64;
                    let norm = |v: i64| (if v < 0 { v + d } else { v }).clamp(0, d);
                    let b = if o.begin_mask() >> a & 1 == 1 { 0 } else { norm(begin[a]) };
                    let e = if o.shrink_axis_mask() >> a & 1 == 1 {
                        b + 1
                    } else if o.end_mask() >> a & 1 == 1 {
                        d
                    } else {
                        norm(end[a])
                    };
                    if e <= b {
                        return Err(format!("an empty range on axis {a}"));
                    }
                    ranges.push((b as usize, e as usize));
                }
                self.slice(x, y, &dims, &ranges, &source)
            }
            B::SPLIT | B::SPLIT_V => {
                let (x, axis_t) = if code == B::SPLIT { (input(1)?, input(0)?) } else { (input(0)?, input(2)?) };
                let dims = self.g.tensors[x].shape.clone();
                let axis = *self.ints(axis_t)?.first().ok_or("no axis")?;
                let axis = if axis < 0 { axis + dims.len() as i64 } else { axis };
                if !(0..dims.len() as i64).contains(&axis) {
                    return Err(format!("axis {axis} of a rank {} tensor", dims.len()));
                }
                let axis = axis as usize;
                let mut start = 0usize;
                for &y in &op.outputs {
                    let size = *self.g.tensors[y].shape.get(axis).ok_or("an output of another rank")?;
                    let ranges: Vec<(usize, usize)> = dims
                        .iter()
                        .enumerate()
                        .map(|(a, &d)| if a == axis { (start, start + size) } else { (0, d) })
                        .collect();
                    if start + size > dims[axis] {
                        return Err("the parts exceed the input".into());
                    }
                    self.slice(x, y, &dims, &ranges, &source)?;
                    start += size;
                }
                Ok(())
            }
            B::LOGISTIC | B::TANH => {
                let (x, y) = (input(0)?, output(0)?);
                let id = self.activation(x, "input")?;
                let out = self.output(y)?;
                let (ti, to) = (&self.tensors[id as usize], &self.tensors[out as usize]);
                let f: fn(f32) -> f32 = if code == B::LOGISTIC { |v| 1.0 / (1.0 + (-v).exp()) } else { f32::tanh };
                let table = float_table(ti, to, f);
                self.push(Spec::Lut { input: id, output: out, table }, &source);
                Ok(())
            }
            B::QUANTIZE => {
                let (x, y) = (input(0)?, output(0)?);
                if self.g.tensors[x].element == ElementType::Float32 {
                    return Err("a float input: give the model int8 input (the micro engine takes no float)".into());
                }
                let id = self.activation(x, "input")?;
                let out = self.output(y)?;
                let (ti, to) = (self.tensors[id as usize].clone(), self.tensors[out as usize].clone());
                let table = requantize_table(&ti, &to)?;
                self.push(Spec::Lut { input: id, output: out, table }, &source);
                Ok(())
            }
            _ => Err("the micro engine has no such operator yet".into()),
        }
    }

    /// TFLite tensor `y` as `ranges` (begin, end per axis) of `x`: a view when its bytes are
    /// contiguous in `x`, channels of every position otherwise.
    fn slice(
        &mut self,
        x: usize,
        y: usize,
        dims: &[usize],
        ranges: &[(usize, usize)],
        source: &str,
    ) -> Result<(), String> {
        let id = self.activation(x, "input")?;
        if dims.is_empty() || ranges.len() != dims.len() {
            return Err("a slice of a scalar".into());
        }
        let want: usize = ranges.iter().map(|(b, e)| e - b).product();
        if want as u64 != self.g.tensors[y].elements() {
            return Err("the output's size does not follow from the slice".into());
        }
        let (a, b) = (self.describe(x)?, self.describe(y)?);
        if (a.scale, a.zero_point) != (b.scale, b.zero_point) {
            return Err("output quantized differently from the input".into());
        }
        // Contiguous: every axis after the first that keeps more than one element is whole (the
        // axes before it keep one element each, at any offset).
        let wide = (0..dims.len()).find(|&a| ranges[a].1 - ranges[a].0 != 1);
        let contiguous = wide.is_none_or(|p| (p + 1..dims.len()).all(|a| ranges[a] == (0, dims[a])));
        if contiguous {
            let mut delta = 0usize;
            let mut stride = 1usize;
            for a in (0..dims.len()).rev() {
                delta += ranges[a].0 * stride;
                stride *= dims[a];
            }
            self.view(id, delta as u32, y)?;
            return Ok(());
        }
        let last = dims.len() - 1;
        if (0..last).all(|a| ranges[a] == (0, dims[a])) {
            let out = self.output(y)?;
            let begin = u16::try_from(ranges[last].0).map_err(|_| "slice start past 65535")?;
            self.push(Spec::Slice { input: id, output: out, begin }, source);
            return Ok(());
        }
        Err(format!("a slice {ranges:?} of {dims:?}: contiguous bytes or last-axis slices only"))
    }

    fn conv(&mut self, op: &Operator<'a>, depthwise: bool, source: &str) -> Result<(), String> {
        let x = op.inputs.first().copied().flatten().ok_or("no input")?;
        let w = op.inputs.get(1).copied().flatten().ok_or("no filter")?;
        let b = op.inputs.get(2).copied().flatten();
        let y = *op.outputs.first().ok_or("no output")?;
        let (stride, dilation, padding, act) = if depthwise {
            let o = op.raw.builtin_options_as_depthwise_conv_2_doptions().ok_or("no DepthwiseConv2DOptions")?;
            (
                (o.stride_h(), o.stride_w()),
                (o.dilation_h_factor(), o.dilation_w_factor()),
                o.padding(),
                o.fused_activation_function(),
            )
        } else {
            let o = op.raw.builtin_options_as_conv_2_doptions().ok_or("no Conv2DOptions")?;
            (
                (o.stride_h(), o.stride_w()),
                (o.dilation_h_factor(), o.dilation_w_factor()),
                o.padding(),
                o.fused_activation_function(),
            )
        };
        let id = self.activation(x, "input")?;
        let out = self.output(y)?;
        let (ti, to) = (self.tensors[id as usize].clone(), self.tensors[out as usize].clone());
        let wt = self.constant(w)?;
        if wt.shape.len() != 4 || ti.rank != 4 || to.rank != 4 {
            return Err("input, filter and output must be 4-D".into());
        }
        let [_, ih, iw, cin] = ti.shape.map(|d| d as usize);
        let cout = to.shape[3] as usize;
        let (kh, kw) = (wt.shape[1], wt.shape[2]);
        if kh == 0 || kw == 0 || wt.element != ElementType::Int8 {
            return Err(format!("filter {:?} of {}: int8 with a kernel of at least 1×1", wt.shape, wt.element.name()));
        }
        let data = wt.data.unwrap_or_default();
        let (weights, groups, scales) = if depthwise {
            if wt.shape[0] != 1 || wt.shape[3] != cout || !cout.is_multiple_of(cin) {
                return Err(format!("depthwise filter {:?} for {cin} → {cout} channels", wt.shape));
            }
            // [1, KH, KW, C·M] → [C·M, KH, KW, 1].
            let mut v = vec![0u8; data.len()];
            for t in 0..kh * kw {
                for c in 0..cout {
                    v[c * kh * kw + t] = data[t * cout + c];
                }
            }
            (v, cin, self.weight_scales(w, cout, 3)?)
        } else {
            let fic = wt.shape[3];
            if wt.shape[0] != cout || fic == 0 || !cin.is_multiple_of(fic) {
                return Err(format!("filter {:?} for {cin} → {cout} channels", wt.shape));
            }
            (data.to_vec(), cin / fic, self.weight_scales(w, cout, 0)?)
        };
        let pos = |v: i32, what: &str| u16::try_from(v).ok().filter(|&v| v > 0).ok_or(format!("{what} {v}"));
        let (sh, sw) = (pos(stride.0, "stride")?, pos(stride.1, "stride")?);
        let (dh, dw) = (pos(dilation.0, "dilation")?, pos(dilation.1, "dilation")?);
        let pad_axis = |input: usize, k: usize, s: u16, d: u16, out: usize| -> (u16, u16) {
            if padding != Padding::SAME {
                return (0, 0);
            }
            let span = (k - 1) * d as usize + 1;
            let total = ((out - 1) * s as usize + span).saturating_sub(input);
            ((total / 2) as u16, (total - total / 2) as u16)
        };
        let (pt, pb) = pad_axis(ih, kh, sh, dh, to.shape[1] as usize);
        let (pl, pr) = pad_axis(iw, kw, sw, dw, to.shape[2] as usize);
        let reals: Vec<f64> = scales.iter().map(|&s| ti.scale as f64 * s as f64 / to.scale as f64).collect();
        let c = ConvParams {
            input: id,
            output: out,
            kernel: [kh as u16, kw as u16],
            stride: [sh, sw],
            dilation: [dh, dw],
            pad: [pt, pl, pb, pr],
            groups: groups as u16,
        };
        let spec = Spec::Conv {
            c,
            weights,
            bias: self.bias(b, cout)?,
            requant: tflite_requant(&reals)?,
            reals,
            clamp: clamp(act, (to.scale, to.zero_point))?,
        };
        self.push(spec, source);
        Ok(())
    }

    fn fully_connected(&mut self, op: &Operator<'a>, source: &str) -> Result<(), String> {
        let o = op.raw.builtin_options_as_fully_connected_options().ok_or("no FullyConnectedOptions")?;
        if o.weights_format().variant_name() != Some("DEFAULT") {
            return Err("shuffled weights".into());
        }
        let x = op.inputs.first().copied().flatten().ok_or("no input")?;
        let w = op.inputs.get(1).copied().flatten().ok_or("no weights")?;
        let b = op.inputs.get(2).copied().flatten();
        let y = *op.outputs.first().ok_or("no output")?;
        let wt = self.constant(w)?;
        if wt.shape.len() != 2 {
            return Err(format!("weights of shape {:?}, not [out, in]", wt.shape));
        }
        let (cout, cin) = (wt.shape[0], wt.shape[1]);
        if cout == 0 || cin == 0 {
            return Err(format!("weights of shape {:?}", wt.shape));
        }
        let mut id = self.activation(x, "input")?;
        let out = self.output(y)?;
        let (ti, to) = (self.tensors[id as usize].clone(), self.tensors[out as usize].clone());
        if !ti.len().is_multiple_of(cin) || to.len() != ti.len() / cin * cout {
            return Err(format!("input of {} values for rows of {cin}, output of {}", ti.len(), to.len()));
        }
        let rows = (ti.len() / cin) as u32;
        if ti.shape[0] != rows {
            // The micro engine's rows are the first dimension: look at the input as [rows, cin].
            let t = T { shape: [rows, 1, 1, cin as u32], rank: 2, ..ti.like(format!("{}:rows", ti.name)) };
            id = self.alias(id, 0, t);
        }
        let mut out_id = out;
        if to.shape[0] != rows {
            let t = T { shape: [rows, 1, 1, cout as u32], rank: 2, ..to.like(format!("{}:rows", to.name)) };
            out_id = self.alias(out, 0, t);
        }
        let scales = self.weight_scales(w, cout, 0)?;
        // As TFLite's GetQuantizedConvolutionMultipler: the scales' product in float, then double.
        let reals: Vec<f64> = scales.iter().map(|&s| (ti.scale * s) as f64 / to.scale as f64).collect();
        let spec = Spec::Fc {
            input: id,
            output: out_id,
            weights: wt.data.unwrap_or_default().to_vec(),
            bias: self.bias(b, cout)?,
            requant: tflite_requant(&reals)?,
            reals,
            clamp: clamp(o.fused_activation_function(), (to.scale, to.zero_point))?,
        };
        self.push(spec, source);
        Ok(())
    }
}

/// A 256-entry table of `f` from `ti`'s values to `to`'s, as LiteRT fills its own (float32
/// arithmetic, halves rounded away from zero).
fn float_table(ti: &T, to: &T, f: fn(f32) -> f32) -> Vec<u8> {
    let inverse = 1.0 / to.scale;
    (-128i32..=127)
        .map(|q| {
            let real = ti.scale * (q - ti.zero_point) as f32;
            let v = (f(real) * inverse).round() as i32 + to.zero_point;
            v.clamp(-128, 127) as i8 as u8
        })
        .collect()
}

/// QUANTIZE between integer types: TFLite's requantization of each of the 256 inputs. uint8
/// values are held as int8 with their zero point moved by 128, so the range to clamp to is
/// int8's for both.
fn requantize_table(ti: &T, to: &T) -> Result<Vec<u8>, String> {
    let real = ti.scale as f64 / to.scale as f64;
    let q = Requant::from_real(real).map_err(|_| format!("requantization multiplier {real} out of range"))?;
    Ok((-128i64..=127)
        .map(|v| {
            let r = q.apply_with(Rounding::Tflite, v - ti.zero_point as i64) + to.zero_point as i64;
            r.clamp(-128, 127) as i8 as u8
        })
        .collect())
}
