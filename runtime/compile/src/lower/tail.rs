//! Lowering of float tails: float tensors computed from int8 ones without a `QuantizeLinear`
//! after them (a detector's decoding: sigmoids, grid offsets, exponentials, a softmax, the final
//! concatenation). Each becomes an int8 tensor whose scale and zero point come from the exact
//! values it can take — a table's 256 outputs, the interval of a sum or product — so no
//! calibration is needed: chains of unary functions become tables, adds and multiplies with
//! constant tensors become `Const` + `Add`/`Mul`, a softmax the integer `Softmax`, and a
//! concatenation of differently quantized tensors that is a model output a copy into a tensor
//! quantized per channel.

#[allow(unused_imports)]
use super::*;

/// Scale and zero point giving `lo..=hi` (widened to include 0) the whole int8 range.
pub(super) fn quant_for_range(lo: f64, hi: f64) -> (f32, i32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { ((hi - lo) / 255.0) as f32 } else { 1.0 };
    let zero_point = (-128.0 - lo / scale as f64).round().clamp(-128.0, 127.0) as i32;
    (scale, zero_point)
}

/// A chain of elementwise nodes: the nodes (graph indices) and the tensors it starts from.
pub(super) struct Chain {
    pub(super) nodes: Vec<usize>,
    pub(super) roots: Vec<String>,
}

impl<'a> Ctx<'a> {
    /// Elements of a constant tensor (`None`: not a constant).
    fn const_len(&self, name: &str) -> Option<usize> {
        self.inits.get(name).map(|t| t.dims.iter().product::<i64>().max(0) as usize)
    }

    /// Whether node `n` is an elementwise function of one tensor: an elementwise operator whose
    /// other inputs are constant scalars.
    fn unary(&self, n: &NodeProto) -> bool {
        ELEMENTWISE.contains(&n.op_type.as_str())
            && n.input.iter().filter(|i| !i.is_empty()).all(|i| self.const_len(i).is_none_or(|l| l == 1))
    }

    /// The elementwise chain computing `tensor`: walks back through unary elementwise nodes (and
    /// elementwise nodes joining tensors of the same chain, as hard-swish does) to the tensors it
    /// starts from: int8 activations, float tensors already lowered, or tensors computed by
    /// anything else.
    pub(super) fn chain(&self, tensor: &str) -> Chain {
        let mut nodes: Vec<usize> = vec![];
        let mut roots: Vec<String> = vec![];
        let mut stack = vec![tensor.to_string()];
        let mut seen = HashSet::new();
        while let Some(t) = stack.pop() {
            if !seen.insert(t.clone()) || self.inits.contains_key(t.as_str()) {
                continue;
            }
            let ix = self.producer.get(t.as_str()).copied();
            let elementwise = ix.is_some_and(|ix| self.unary(&self.g.node[ix]));
            match ix {
                Some(ix) if elementwise && self.dq(&t).is_none() && !self.by_float.contains_key(&t) => {
                    nodes.push(ix);
                    stack.extend(self.g.node[ix].input.iter().filter(|i| !i.is_empty()).cloned());
                }
                _ => roots.push(t),
            }
        }
        nodes.sort_unstable();
        nodes.dedup();
        Chain { nodes, roots }
    }

    /// The int8 tensor of a chain root: an int8 activation, or a float tensor lowered now.
    pub(super) fn root(&mut self, tensor: &str) -> Result<u16, LowerError> {
        match self.dq(tensor) {
            Some(id) => Ok(id),
            None => self.lower_float(tensor, false),
        }
    }

    /// The int8 tensor holding float tensor `tensor` (an int8 activation's dequantized value, or a
    /// float tail lowered here). `output`: it is a model output, which may be quantized per channel.
    pub(super) fn lower_float(&mut self, tensor: &str, output: bool) -> Result<u16, LowerError> {
        if let Some(id) = self.dq(tensor).or_else(|| self.by_float.get(tensor).copied()) {
            return Ok(id);
        }
        let Some(n) = self.node(tensor) else {
            return Err(LowerError::Model(format!(
                "`{tensor}` is a float input or constant: quantize the model (lepton-convert quantize) so the integer engine starts from int8"
            )));
        };
        let mut specs = vec![];
        let id = match n.op_type.as_str() {
            "Concat" => self.float_concat(n, output, &mut specs)?,
            "Softmax" => self.float_softmax(n, &mut specs)?,
            "Slice" => {
                let (s, id) = self.lower_slice(n)?;
                specs = s;
                id
            }
            "Transpose" => self.float_transpose(n, &mut specs)?,
            op if ELEMENTWISE.contains(&op) => self.float_elementwise(tensor, n, &mut specs)?,
            _ => return Err(unsupported(n, "no integer equivalent for this operator on float data")),
        };
        for s in specs {
            self.specs.push((s, n.name.clone()));
        }
        self.by_float.insert(tensor.to_string(), id);
        Ok(id)
    }

    /// An elementwise node: the chain of unary functions ending at it as one table, or an add,
    /// subtraction or multiplication of two tensors (one may be a constant tensor).
    fn float_elementwise(&mut self, tensor: &str, n: &NodeProto, specs: &mut Vec<Spec>) -> Result<u16, LowerError> {
        let chain = self.chain(tensor);
        if self.unary(n) {
            match chain.roots.as_slice() {
                [root] => {
                    let root = root.clone();
                    let x = self.root(&root)?;
                    let tx = self.tensors[x as usize].clone();
                    let xs: Vec<f32> = (-128i32..=127).map(|v| (v - tx.zero_point) as f32 * tx.scale).collect();
                    let ys = self.evaluate_chain(&chain.nodes, &root, tensor, &xs, n)?;
                    if ys.iter().any(|y| !y.is_finite()) {
                        return Err(unsupported(n, "the elementwise chain gives non-finite values on its int8 input"));
                    }
                    let lo = ys.iter().fold(f32::INFINITY, |a, &b| a.min(b)) as f64;
                    let hi = ys.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                    let (scale, zero_point) = quant_for_range(lo, hi);
                    let out =
                        self.add_tensor(T { scale, zero_point, values: Some((lo, hi)), ..tx.like(tensor.to_string()) });
                    let table = ys
                        .iter()
                        .map(|&y| ((y / scale).round_ties_even() + zero_point as f32).clamp(-128.0, 127.0) as i8 as u8)
                        .collect();
                    specs.push(Spec::Lut { input: x, output: out, table });
                    return Ok(out);
                }
                [] => return Err(unsupported(n, "computes a constant")),
                _ => {}
            }
        }
        let inputs: Vec<&String> = n.input.iter().filter(|i| !i.is_empty()).collect();
        if !matches!(n.op_type.as_str(), "Add" | "Sub" | "Mul") || inputs.len() != 2 {
            return Err(unsupported(
                n,
                format!("`{tensor}` depends on several int8 tensors or constant tensors through float ops"),
            ));
        }
        let (a_const, b_const) = (self.const_len(inputs[0]).is_some(), self.const_len(inputs[1]).is_some());
        let (a, b) = match (a_const, b_const) {
            (false, false) => (self.root(inputs[0])?, self.root(inputs[1])?),
            (false, true) => {
                let a = self.root(inputs[0])?;
                (a, self.const_tensor(inputs[1], a, n, specs)?)
            }
            (true, false) => {
                let b = self.root(inputs[1])?;
                (self.const_tensor(inputs[0], b, n, specs)?, b)
            }
            (true, true) => return Err(unsupported(n, "computes a constant")),
        };
        let (ta, tb) = (&self.tensors[a as usize], &self.tensors[b as usize]);
        if ta.layout != tb.layout {
            return Err(unsupported(n, "operands in different layouts"));
        }
        let ((alo, ahi), (blo, bhi)) = (ta.range(), tb.range());
        let (lo, hi) = match n.op_type.as_str() {
            "Add" => (alo + blo, ahi + bhi),
            "Sub" => (alo - bhi, ahi - blo),
            _ => {
                let p = [alo * blo, alo * bhi, ahi * blo, ahi * bhi];
                (p.iter().copied().fold(f64::INFINITY, f64::min), p.iter().copied().fold(f64::NEG_INFINITY, f64::max))
            }
        };
        let (scale, zero_point) = quant_for_range(lo, hi);
        // The result has the shape of the operand the other broadcasts to.
        let big = if ta.len() >= tb.len() { ta } else { tb };
        let out = self.add_tensor(T { scale, zero_point, values: Some((lo, hi)), ..big.like(tensor.to_string()) });
        specs.push(self.lower_binary(n, a, b, out)?);
        Ok(out)
    }

    /// A constant operand of an elementwise op with `like` as its other operand: its values in
    /// `like`'s layout (broadcast dimensions kept at 1), exact when they are small integers,
    /// else quantized over their range; written by a `Const` op.
    fn const_tensor(&mut self, name: &str, like: u16, n: &NodeProto, specs: &mut Vec<Spec>) -> Result<u16, LowerError> {
        let c = self.init(name).ok_or_else(|| unsupported(n, "operand is not a constant"))??;
        let values = f32s(&c)?;
        let tl = self.tensors[like as usize].clone();
        let like_dims = format::onnx_dims(tl.shape, tl.rank, tl.layout);
        let like_dims = &like_dims.0[..like_dims.1];
        let cdims = c.shape().to_vec();
        if cdims.len() > like_dims.len() {
            return Err(unsupported(n, "constant operand of higher rank than the other"));
        }
        let mut dims = vec![1usize; like_dims.len() - cdims.len()];
        dims.extend(&cdims);
        if dims.iter().zip(like_dims).any(|(&d, &l)| d != l && d != 1) {
            return Err(unsupported(n, "constant operand does not broadcast to the other"));
        }
        // Its shape in the arena, and its values in arena order.
        let (shape, data): ([u32; 4], Vec<f32>) = match (tl.layout, dims.len()) {
            (Layout::ChannelsLast, 3) => ([dims[0] as u32, 1, dims[1] as u32, dims[2] as u32], values),
            (Layout::ChannelsLast, 4) => (std::array::from_fn(|i| dims[i] as u32), values),
            (_, r) if r >= 3 => {
                // ONNX [N, C, spatial...] → [N, spatial..., C].
                let (nb, ch) = (dims[0], dims[1]);
                let sp: usize = dims[2..].iter().product();
                let mut out = vec![0f32; values.len()];
                for b in 0..nb {
                    for c in 0..ch {
                        for p in 0..sp {
                            out[(b * sp + p) * ch + c] = values[(b * ch + c) * sp + p];
                        }
                    }
                }
                (nhwc(&dims)?, out)
            }
            _ => (nhwc(&dims)?, values),
        };
        let lo = data.iter().fold(f32::INFINITY, |a, &b| a.min(b)) as f64;
        let hi = data.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let small_integers = data.iter().all(|v| v.fract() == 0.0 && (-128.0..=127.0).contains(v));
        let (scale, zero_point) = if small_integers { (1.0, 0) } else { quant_for_range(lo, hi) };
        let t = T {
            name: name.to_string(),
            shape,
            rank: tl.rank,
            layout: tl.layout,
            scale,
            zero_point,
            channels: vec![],
            values: Some((lo, hi)),
        };
        let bytes = data
            .iter()
            .map(|&v| ((v / scale).round_ties_even() + zero_point as f32).clamp(-128.0, 127.0) as i8 as u8)
            .collect();
        let id = self.add_tensor(t);
        specs.push(Spec::Const { output: id, data: bytes });
        Ok(id)
    }

    /// Softmax over the channel axis (which must be the last).
    fn float_softmax(&mut self, n: &NodeProto, specs: &mut Vec<Spec>) -> Result<u16, LowerError> {
        let x = self.root(&n.input[0])?;
        let t = self.tensors[x as usize].clone();
        let opset = self
            .model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(13, |o| o.version);
        let rank = t.rank as i64;
        let axis = int(n, "axis", if opset >= 13 { -1 } else { 1 });
        let axis = if axis < 0 { axis + rank } else { axis };
        if axis != rank - 1 || t.channel_axis() as i64 != axis {
            return Err(unsupported(n, "softmax only over the last axis, when it is the channel axis"));
        }
        let s = t.scale as f64;
        let table: Vec<u8> =
            (0..256).flat_map(|d| (((-(d as f64) * s).exp() * 65536.0).round() as u32).to_le_bytes()).collect();
        let name = n.output[0].clone();
        let out = self.add_tensor(T { scale: 1.0 / 256.0, zero_point: -128, values: Some((0.0, 1.0)), ..t.like(name) });
        specs.push(Spec::Softmax { input: x, output: out, table });
        Ok(out)
    }

    /// A transpose moving the channel axis last (or back): the same bytes in the arena, another
    /// layout; a copy.
    fn float_transpose(&mut self, n: &NodeProto, specs: &mut Vec<Spec>) -> Result<u16, LowerError> {
        let (x, layout) = self
            .channel_view(&n.input[0])
            .ok_or_else(|| unsupported(n, "only a transpose moving the channel axis last or back"))?;
        let t = self.tensors[x as usize].clone();
        let out = self.add_tensor(T { layout, name: n.output[0].clone(), ..t });
        specs.push(Spec::Copy { input: x, output: out });
        Ok(out)
    }

    /// An int8 tensor whose arena bytes hold float tensor `tensor` as a tensor of `layout`: an int8
    /// activation (its own layout), or one seen through a transpose that only moves the channel
    /// axis last (`[0, 2, …, r−1, 1]`: plain → channels-last) or back (channels-last → plain).
    pub(super) fn channel_view(&self, tensor: &str) -> Option<(u16, Layout)> {
        if let Some(id) = self.dq(tensor).or_else(|| self.by_float.get(tensor).copied()) {
            return Some((id, self.tensors[id as usize].layout));
        }
        let n = self.node(tensor).filter(|n| n.op_type == "Transpose")?;
        let (x, layout) = self.channel_view(&n.input[0])?;
        let t = &self.tensors[x as usize];
        let r = t.rank as i64;
        if r < 3 {
            return None;
        }
        let perm = ints(n, "perm");
        let last: Vec<i64> = [0].into_iter().chain(2..r).chain([1]).collect();
        let back: Vec<i64> = [0, r - 1].into_iter().chain(1..r - 1).collect();
        match layout {
            Layout::Plain if perm == last => Some((x, Layout::ChannelsLast)),
            Layout::ChannelsLast if perm == back => Some((x, Layout::Plain)),
            _ => None,
        }
    }

    /// A slice along the channel axis: a `Slice` op into a new tensor quantized as its source.
    pub(super) fn lower_slice(&mut self, n: &NodeProto) -> Result<(Vec<Spec>, u16), LowerError> {
        let (x, layout) = self
            .channel_view(&n.input[0])
            .ok_or_else(|| unsupported(n, "input is not an int8 activation (or a transpose of one)"))?;
        let t = T { layout, ..self.tensors[x as usize].clone() };
        // Bounds are inputs since opset 10, attributes before.
        let konst = |i: usize, name: &str| -> Result<Option<Vec<i64>>, LowerError> {
            match n.input.get(i).filter(|s| !s.is_empty()) {
                None => Ok(attr(n, name).map(|a| a.ints.clone())),
                Some(s) => {
                    Ok(Some(i64s(&self.init(s).ok_or_else(|| unsupported(n, "slice bounds are not constant"))??)?))
                }
            }
        };
        let (starts, ends) = (konst(1, "starts")?.unwrap_or_default(), konst(2, "ends")?.unwrap_or_default());
        let rank = t.rank as i64;
        let axes = konst(3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        if let Some(steps) = konst(4, "steps")? {
            if steps.iter().any(|&s| s != 1) {
                return Err(unsupported(n, "only slices with step 1"));
            }
        }
        let dims = format::onnx_dims(t.shape, t.rank, t.layout);
        let (mut begin, mut end) = (0usize, t.shape[3] as usize);
        for ((&s, &e), &a) in starts.iter().zip(&ends).zip(&axes) {
            let a = if a < 0 { a + rank } else { a };
            let d = dims.0[a.clamp(0, 3) as usize] as i64;
            let clip = |v: i64| if v < 0 { (v + d).max(0) } else { v.min(d) };
            let (s, e) = (clip(s), clip(e));
            if a as usize != t.channel_axis() {
                if (s, e) != (0, d) {
                    return Err(unsupported(n, "only slices along the channel axis"));
                }
                continue;
            }
            (begin, end) = (s as usize, e as usize);
        }
        if end <= begin {
            return Err(unsupported(n, "an empty slice"));
        }
        let mut shape = t.shape;
        shape[3] = (end - begin) as u32;
        let out = self.add_tensor(T { shape, ..t.like(n.output[0].clone()) });
        Ok((vec![Spec::Slice { input: x, output: out, begin: begin as u16 }], out))
    }

    /// Concatenation along the channel axis. Inputs quantized alike are copied; otherwise a model
    /// output is quantized per channel (a copy still) and anything else requantized to the union
    /// of the inputs' ranges.
    fn float_concat(&mut self, n: &NodeProto, output: bool, specs: &mut Vec<Spec>) -> Result<u16, LowerError> {
        let mut ids = vec![];
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            ids.push(self.root(i)?);
        }
        let first = self.tensors[ids[0] as usize].clone();
        let rank = first.rank as i64;
        let axis = int(n, "axis", 1);
        let axis = if axis < 0 { axis + rank } else { axis };
        if axis != first.channel_axis() as i64 {
            return Err(unsupported(n, "concatenation only along the channel axis"));
        }
        let mut channels = 0;
        for &id in &ids {
            let t = &self.tensors[id as usize];
            if t.layout != first.layout || t.shape[..3] != first.shape[..3] || t.rank != first.rank {
                return Err(unsupported(n, "inputs differ outside the channel axis, or in layout"));
            }
            channels += t.shape[3];
        }
        let quant = |id: &u16| (self.tensors[*id as usize].scale, self.tensors[*id as usize].zero_point);
        let alike = ids.iter().all(|id| quant(id) == quant(&ids[0]));
        let mut shape = first.shape;
        shape[3] = channels;
        let mut out_t = T { shape, ..first.like(n.output[0].clone()) };
        // Outputs go back to ONNX order by a transpose unless they are in it already; only a copy
        // may write a per-channel tensor.
        let ordered = out_t.layout == Layout::ChannelsLast || out_t.rank < 3 || shape[1] * shape[2] == 1;
        if !alike && output && ordered {
            out_t.channels = ids
                .iter()
                .flat_map(|id| {
                    let t = &self.tensors[*id as usize];
                    std::iter::repeat_n((t.scale, t.zero_point), t.shape[3] as usize)
                })
                .collect();
            (out_t.scale, out_t.zero_point) = out_t.channels[0];
        } else if !alike {
            let (lo, hi) = ids
                .iter()
                .map(|id| self.tensors[*id as usize].range())
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), (a, b)| (l.min(a), h.max(b)));
            (out_t.scale, out_t.zero_point) = quant_for_range(lo, hi);
            for id in ids.iter_mut() {
                let t = &self.tensors[*id as usize];
                if (t.scale, t.zero_point) != (out_t.scale, out_t.zero_point) {
                    let tmp =
                        T { scale: out_t.scale, zero_point: out_t.zero_point, ..t.like(format!("{}:requant", t.name)) };
                    let r = self.add_tensor(tmp);
                    specs.push(self.identity_table(*id, r));
                    *id = r;
                }
            }
        }
        let out = self.add_tensor(out_t);
        specs.push(Spec::Concat { inputs: ids.iter().flat_map(|id| id.to_le_bytes()).collect(), output: out });
        Ok(out)
    }
}
