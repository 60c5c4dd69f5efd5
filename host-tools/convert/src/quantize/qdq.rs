//! QDQ rewriting: which operators are quantized, int8 weights and int32 biases behind
//! `DequantizeLinear`, `QuantizeLinear → DequantizeLinear` on the activations they read.

use crate::calibrate::int8_params;
use crate::graph::{self, attr_i};
use anyhow::{anyhow, bail, Context, Result};
use lepton_runtime::onnx::pb::{self, AttributeProto, ModelProto, NodeProto, TensorProto};
use std::collections::{BTreeMap, HashMap, HashSet};
use tract_onnx::prelude::*;

/// Operators whose float activation inputs are quantized, besides the elementwise ones.
pub const QUANTIZED_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Concat",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Resize",
    "Softmax",
];

/// Elementwise operators: with one non-constant input (or several derived from the same tensor)
/// they are unary functions, quantized as a whole chain; the micro engine runs such a chain as a
/// table. The runtime's list, so that what is quantized as a chain is what lowers to a table.
pub use lepton_runtime::engine::micro::lower::ELEMENTWISE as ELEMENTWISE_OPS;

/// A Concat whose inputs' ranges differ by more than this factor stays float.
pub const MIXED_RANGE_RATIO: f32 = 16.0;

/// Operators with weights: the layers mixed precision chooses among.
pub const WEIGHTED_OPS: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul"];

/// What a rewrite produced.
pub(super) struct RewriteStats {
    /// Activations quantized.
    pub(super) activations: usize,
    /// Weights quantized.
    pub(super) weights: usize,
    /// Layer name → (its float output tensor, the dequantized name consumers read, its float input).
    pub(super) outputs_of_layers: BTreeMap<String, (String, String, String)>,
}

fn scalar_f32(name: &str, v: f32) -> Result<TensorProto> {
    graph::to_proto(name, &tract_ndarray::arr0(v).into_dyn().into_tensor())
}

fn scalar_i8(name: &str, v: i8) -> Result<TensorProto> {
    graph::to_proto(name, &tract_ndarray::arr0(v).into_dyn().into_tensor())
}

fn node(
    op: &str,
    name: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto { op_type: op.into(), name, input: inputs, output: outputs, attribute, ..Default::default() }
}

fn axis_attr(axis: i64) -> AttributeProto {
    AttributeProto {
        name: "axis".into(),
        i: axis,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    }
}

/// Builds the QDQ model for the given ranges, with `float_layers` left in float; weights per
/// output channel when `per_channel`, else per tensor.
pub(super) fn rewrite(
    prepared: &ModelProto,
    ranges: &HashMap<String, (f32, f32)>,
    float_tensors: &HashSet<String>,
    float_layers: &[String],
    per_channel: bool,
) -> Result<(ModelProto, RewriteStats)> {
    let mut m = prepared.clone();
    let g = m.graph.as_mut().context("no graph")?;
    let inits: HashMap<String, TensorProto> = g.initializer.iter().map(|t| (t.name.clone(), t.clone())).collect();
    let is_float = |name: &str| float_tensors.contains(name);
    // A Concat joining tensors of very different ranges (a detector's pixel coordinates next to
    // its 0..1 scores) stays float: one int8 scale for all would leave the small ones a few levels.
    let mixed_concats: HashSet<String> = g
        .node
        .iter()
        .filter(|n| n.op_type == "Concat")
        .filter(|n| {
            let widths: Vec<f32> = n
                .input
                .iter()
                .filter(|i| !inits.contains_key(*i))
                .filter_map(|i| ranges.get(i))
                .map(|(lo, hi)| (hi - lo).max(f32::MIN_POSITIVE))
                .collect();
            let (min, max) = widths.iter().fold((f32::MAX, 0f32), |(a, b), &w| (a.min(w), b.max(w)));
            widths.len() > 1 && max / min > MIXED_RANGE_RATIO
        })
        .map(|n| n.name.clone())
        .collect();
    let quantized_node = |n: &NodeProto| {
        (QUANTIZED_OPS.contains(&n.op_type.as_str()) || ELEMENTWISE_OPS.contains(&n.op_type.as_str()))
            && !float_layers.contains(&n.name)
            && !mixed_concats.contains(&n.name)
    };
    // Chains of elementwise operators on one tensor (x+3, clip, ×1/6, hard-sigmoid, x·relu6(x+3)/6)
    // are unary functions of the tensor that starts them: that root is quantized, the chain runs
    // on it, and only its end is quantized again. An int8 engine runs such a chain as one lookup
    // table, exactly; requantizing every step would only add noise.
    let mut root: HashMap<String, String> = HashMap::new();
    let mut unary: HashSet<usize> = HashSet::new();
    for (ix, n) in g.node.iter().enumerate() {
        let roots: HashSet<String> = n
            .input
            .iter()
            .filter(|i| !i.is_empty() && !inits.contains_key(*i))
            .map(|i| root.get(i).cloned().unwrap_or_else(|| i.clone()))
            .collect();
        let is_unary = ELEMENTWISE_OPS.contains(&n.op_type.as_str()) && roots.len() == 1;
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            let r = if is_unary { roots.iter().next().cloned().unwrap_or_else(|| o.clone()) } else { o.clone() };
            root.insert(o.clone(), r);
        }
        if is_unary {
            unary.insert(ix);
        }
    }
    let is_root = |t: &str| root.get(t).is_none_or(|r| r == t);
    let mut act: Vec<String> = vec![];
    let mut seen = HashSet::new();
    for (ix, n) in g.node.iter().enumerate().filter(|(_, n)| quantized_node(n)) {
        let limit = if WEIGHTED_OPS.contains(&n.op_type.as_str()) && n.op_type != "MatMul" { 1 } else { n.input.len() };
        for i in n.input.iter().take(limit) {
            let wanted = !unary.contains(&ix) || is_root(i);
            if wanted
                && !i.is_empty()
                && !inits.contains_key(i)
                && is_float(i)
                && ranges.contains_key(i)
                && seen.insert(i.clone())
            {
                act.push(i.clone());
            }
        }
    }
    // Graph outputs computed by quantized operators are quantized too, so an int8 engine ends in
    // int8; the output keeps its name (it becomes the dequantized value).
    let producers: HashMap<&str, &NodeProto> =
        g.node.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect();
    let mut quantized_outputs: Vec<String> = vec![];
    for o in &g.output {
        let Some(p) = producers.get(o.name.as_str()) else { continue };
        // Softmax probabilities stay float: an int8 engine gives them its fixed 1/256 grid itself
        // (and tract 0.23 mis-evaluates a quantized softmax output).
        if p.op_type != "Softmax"
            && quantized_node(p)
            && is_float(&o.name)
            && ranges.contains_key(&o.name)
            && seen.insert(o.name.clone())
        {
            act.push(o.name.clone());
            quantized_outputs.push(o.name.clone());
        }
    }
    let mut stats = RewriteStats { activations: act.len(), weights: 0, outputs_of_layers: BTreeMap::new() };
    let act_set: HashSet<String> = act.iter().cloned().collect();
    let mut act_params: HashMap<String, (f32, i8)> = HashMap::new();
    let mut new_inits: Vec<TensorProto> = vec![];
    for t in &act {
        let (lo, hi) = ranges[t];
        let (scale, zp) = int8_params(lo, hi);
        act_params.insert(t.clone(), (scale, zp));
        new_inits.push(scalar_f32(&format!("{t}_scale"), scale)?);
        new_inits.push(scalar_i8(&format!("{t}_zero_point"), zp)?);
    }
    let dq = |t: &str| format!("{t}_dequantized");
    // Q/DQ nodes for each activation, placed right after its producer (or first, for inputs).
    let qdq_nodes = |t: &str| -> Vec<NodeProto> {
        vec![
            node(
                "QuantizeLinear",
                format!("{t}_QuantizeLinear"),
                vec![t.into(), format!("{t}_scale"), format!("{t}_zero_point")],
                vec![format!("{t}_quantized")],
                vec![],
            ),
            node(
                "DequantizeLinear",
                format!("{t}_DequantizeLinear"),
                vec![format!("{t}_quantized"), format!("{t}_scale"), format!("{t}_zero_point")],
                vec![dq(t)],
                vec![],
            ),
        ]
    };
    let mut out_nodes: Vec<NodeProto> = vec![];
    for i in &g.input {
        if act_set.contains(&i.name) {
            out_nodes.extend(qdq_nodes(&i.name));
        }
    }
    let old_nodes = std::mem::take(&mut g.node);
    for mut n in old_nodes {
        let quantize_this = quantized_node(&n);
        if quantize_this && WEIGHTED_OPS.contains(&n.op_type.as_str()) {
            let x = n.input[0].clone();
            if let Some(name) = (!n.name.is_empty()).then(|| n.name.clone()) {
                let out = n.output[0].clone();
                stats.outputs_of_layers.insert(
                    name,
                    (out.clone(), if act_set.contains(&out) { dq(&out) } else { out.clone() }, x.clone()),
                );
            }
            let x_params = act_params.get(&x).copied();
            if let Some((w_name, axis)) = weight_of(&n) {
                if let Some(w) = inits.get(&w_name) {
                    let (q_inits, w_dq, w_scales) = quantize_weight(w, axis, per_channel)?;
                    out_nodes.push(node(
                        "DequantizeLinear",
                        format!("{w_name}_DequantizeLinear"),
                        vec![format!("{w_name}_quantized"), format!("{w_name}_scale"), format!("{w_name}_zero_point")],
                        vec![w_dq.clone()],
                        if per_channel { vec![axis_attr(axis)] } else { vec![] },
                    ));
                    new_inits.extend(q_inits);
                    stats.weights += 1;
                    n.input[1] = w_dq;
                    // Bias: int32 at input_scale × weight_scale.
                    if let (Some(b_name), Some((x_scale, _))) =
                        (n.input.get(2).filter(|b| !b.is_empty()).cloned(), x_params)
                    {
                        if let Some(b) = inits.get(&b_name) {
                            let (b_inits, b_dq) = quantize_bias(b, x_scale, &w_scales, per_channel)?;
                            out_nodes.push(node(
                                "DequantizeLinear",
                                format!("{b_name}_DequantizeLinear"),
                                vec![
                                    format!("{b_name}_quantized"),
                                    format!("{b_name}_scale"),
                                    format!("{b_name}_zero_point"),
                                ],
                                vec![b_dq.clone()],
                                if per_channel { vec![axis_attr(0)] } else { vec![] },
                            ));
                            new_inits.extend(b_inits);
                            n.input[2] = b_dq;
                        }
                    }
                }
            }
        }
        if quantize_this {
            for i in n.input.iter_mut() {
                if act_set.contains(i.as_str()) {
                    *i = dq(i);
                }
            }
        }
        let outs: Vec<String> = n.output.clone();
        out_nodes.push(n);
        for o in outs {
            if act_set.contains(&o) {
                out_nodes.extend(qdq_nodes(&o));
            }
        }
    }
    g.node = out_nodes;
    g.initializer.extend(new_inits);
    // Quantized graph outputs: the producer writes `<o>_float`, the dequantized value is `<o>`.
    for o in &quantized_outputs {
        let (float, deq) = (format!("{o}_float"), dq(o));
        for v in stats.outputs_of_layers.values_mut() {
            if v.1 == deq {
                v.1 = o.clone();
            }
        }
        for n in g.node.iter_mut() {
            for name in n.output.iter_mut().chain(n.input.iter_mut()) {
                if name == o {
                    *name = float.clone();
                } else if *name == deq {
                    *name = o.clone();
                }
            }
        }
    }
    let used: HashSet<String> =
        g.node.iter().flat_map(|n| n.input.iter().cloned()).chain(g.output.iter().map(|o| o.name.clone())).collect();
    g.initializer.retain(|t| used.contains(&t.name));
    Ok((m, stats))
}

/// The weight input of a weighted operator and its output-channel axis.
fn weight_of(n: &NodeProto) -> Option<(String, i64)> {
    let w = n.input.get(1)?.clone();
    let axis = match n.op_type.as_str() {
        "Conv" => 0,
        "ConvTranspose" => 1,
        "Gemm" => {
            if attr_i(n, "transB", 0) != 0 {
                0
            } else {
                1
            }
        }
        "MatMul" => 1,
        _ => return None,
    };
    Some((w, axis))
}

/// int8 symmetric weights (zero point 0), per channel along `axis` or per tensor.
fn quantize_weight(w: &TensorProto, axis: i64, per_channel: bool) -> Result<(Vec<TensorProto>, String, Vec<f32>)> {
    let t = graph::load(w)?;
    let v = t.cast_to::<f32>().map_err(|e| anyhow!("{e:#}"))?;
    let a = v.to_plain_array_view::<f32>().map_err(|e| anyhow!("{e:#}"))?;
    let shape = a.shape().to_vec();
    let axis = axis as usize;
    if per_channel && axis >= shape.len() {
        bail!("weight `{}` has rank {} < channel axis {axis}", w.name, shape.len());
    }
    let channels = if per_channel { shape[axis] } else { 1 };
    let mut max = vec![0.0f32; channels];
    for (idx, &x) in a.indexed_iter() {
        let c = if per_channel { idx[axis] } else { 0 };
        max[c] = max[c].max(x.abs());
    }
    let scales: Vec<f32> = max.iter().map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 }).collect();
    let q: Vec<i8> = a
        .indexed_iter()
        .map(|(idx, &x)| {
            let c = if per_channel { idx[axis] } else { 0 };
            (x / scales[c]).round().clamp(-127.0, 127.0) as i8
        })
        .collect();
    let name = &w.name;
    let qt = tract_ndarray::ArrayD::from_shape_vec(shape, q)?.into_tensor();
    let (scale_t, zp_t) = if per_channel {
        (
            tract_ndarray::Array1::from_vec(scales.clone()).into_dyn().into_tensor(),
            tract_ndarray::Array1::from_vec(vec![0i8; channels]).into_dyn().into_tensor(),
        )
    } else {
        (tract_ndarray::arr0(scales[0]).into_dyn().into_tensor(), tract_ndarray::arr0(0i8).into_dyn().into_tensor())
    };
    Ok((
        vec![
            graph::to_proto(&format!("{name}_quantized"), &qt)?,
            graph::to_proto(&format!("{name}_scale"), &scale_t)?,
            graph::to_proto(&format!("{name}_zero_point"), &zp_t)?,
        ],
        format!("{name}_dequantized"),
        scales,
    ))
}

/// int32 bias at scale `x_scale × w_scale[c]`.
fn quantize_bias(
    b: &TensorProto,
    x_scale: f32,
    w_scales: &[f32],
    per_channel: bool,
) -> Result<(Vec<TensorProto>, String)> {
    let t = graph::load(b)?;
    let v = t.cast_to::<f32>().map_err(|e| anyhow!("{e:#}"))?;
    let a: Vec<f32> = v.to_plain_array_view::<f32>().map_err(|e| anyhow!("{e:#}"))?.iter().copied().collect();
    let scale_of =
        |c: usize| x_scale * if per_channel { w_scales.get(c).copied().unwrap_or(w_scales[0]) } else { w_scales[0] };
    let q: Vec<i32> = a
        .iter()
        .enumerate()
        .map(|(c, &x)| (x as f64 / scale_of(c) as f64).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32)
        .collect();
    let name = &b.name;
    let n = a.len();
    let (scale_t, zp_t) = if per_channel {
        (
            tract_ndarray::Array1::from_vec((0..n).map(scale_of).collect()).into_dyn().into_tensor(),
            tract_ndarray::Array1::from_vec(vec![0i32; n]).into_dyn().into_tensor(),
        )
    } else {
        (tract_ndarray::arr0(scale_of(0)).into_dyn().into_tensor(), tract_ndarray::arr0(0i32).into_dyn().into_tensor())
    };
    Ok((
        vec![
            graph::to_proto(
                &format!("{name}_quantized"),
                &tract_ndarray::ArrayD::from_shape_vec(t.shape().to_vec(), q)?.into_tensor(),
            )?,
            graph::to_proto(&format!("{name}_scale"), &scale_t)?,
            graph::to_proto(&format!("{name}_zero_point"), &zp_t)?,
        ],
        format!("{name}_dequantized"),
    ))
}
