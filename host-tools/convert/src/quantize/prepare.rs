//! Graph rewrites before calibration: constants as initializers, opset 13, identities removed,
//! biases and BatchNormalization folded, every node named.

use crate::graph;
use anyhow::{anyhow, Context, Result};
use lepton_runtime::onnx::pb::{GraphProto, ModelProto, TensorProto};
use std::collections::{HashMap, HashSet};
use tract_onnx::prelude::*;

/// Constants as initializers, opset ≥ 13, BatchNormalization folded into Conv, value_info dropped,
/// every node named (the report and the float-layer choice go by node name).
pub fn prepare(model: &ModelProto, input_shapes: &[(String, Vec<usize>)]) -> Result<ModelProto> {
    let mut m = model.clone();
    let g = m.graph.as_mut().context("no graph")?;
    g.value_info.clear();
    name_nodes(g);
    // Constant nodes → initializers.
    let mut kept = vec![];
    for n in std::mem::take(&mut g.node) {
        if n.op_type == "Constant" {
            if let (Some(out), Some(t)) = (n.output.first(), graph::attr(&n, "value").and_then(|a| a.t.clone())) {
                g.initializer.push(TensorProto { name: out.clone(), ..t });
                continue;
            }
        }
        kept.push(n);
    }
    g.node = kept;
    let opset = m.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map_or(0, |o| o.version);
    if opset < 13 {
        upgrade_to_13(m.graph.as_mut().context("no graph")?)?;
        for o in m.opset_import.iter_mut().filter(|o| o.domain.is_empty() || o.domain == "ai.onnx") {
            o.version = 13;
        }
        if m.ir_version < 7 {
            m.ir_version = 7;
        }
    }
    // Constant subgraphs (reshaped biases, shape arithmetic) become initializers.
    crate::optimize::optimize(&mut m, &crate::optimize::Plan::default())?;
    fold_batchnorm(m.graph.as_mut().context("no graph")?)?;
    fold_bias_add(m.graph.as_mut().context("no graph")?)?;
    let shapes = lepton_runtime::onnx::tensor_shapes(&m, input_shapes).unwrap_or_default();
    fold_matmul_add(m.graph.as_mut().context("no graph")?, &shapes)?;
    remove_identities(m.graph.as_mut().context("no graph")?);
    Ok(m)
}

/// Names every unnamed node (exported models often leave names empty) after its operator and
/// first output, `Conv:conv1_out`; a name already taken gets a `#2`, `#3`… suffix.
fn name_nodes(g: &mut GraphProto) {
    let mut taken: HashSet<String> = g.node.iter().map(|n| n.name.clone()).filter(|n| !n.is_empty()).collect();
    for (i, n) in g.node.iter_mut().enumerate() {
        if !n.name.is_empty() {
            continue;
        }
        let base = match n.output.first().filter(|o| !o.is_empty()) {
            Some(o) => format!("{}:{o}", n.op_type),
            None => format!("{}#{i}", n.op_type),
        };
        let mut name = base.clone();
        let mut k = 2;
        while taken.contains(&name) {
            name = format!("{base}#{k}");
            k += 1;
        }
        taken.insert(name.clone());
        n.name = name;
    }
}

/// Rewrites the operators whose signature changed by opset 13 (attributes that became inputs).
fn upgrade_to_13(g: &mut GraphProto) -> Result<()> {
    let mut extra = vec![];
    for (i, n) in g.node.iter_mut().enumerate() {
        let moved = match n.op_type.as_str() {
            "Squeeze" | "Unsqueeze" | "ReduceSum" => Some("axes"),
            "Split" => Some("split"),
            _ => None,
        };
        let Some(attr_name) = moved else { continue };
        if let Some(pos) = n.attribute.iter().position(|a| a.name == attr_name) {
            let a = n.attribute.remove(pos);
            let name = format!("{}_{attr_name}_{i}", if n.name.is_empty() { &n.op_type } else { &n.name });
            let t = tract_ndarray::Array1::from_vec(a.ints.clone()).into_dyn().into_tensor();
            extra.push(graph::to_proto(&name, &t)?);
            if n.input.len() == 1 {
                n.input.push(name);
            }
        }
    }
    g.initializer.extend(extra);
    Ok(())
}

/// Removes `Identity` nodes: readers take the input directly; an identity producing a graph
/// output hands that name to its input's producer.
fn remove_identities(g: &mut GraphProto) {
    let outputs: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    let inputs: HashSet<String> = g.input.iter().map(|i| i.name.clone()).collect();
    let mut i = 0;
    while i < g.node.len() {
        if g.node[i].op_type != "Identity" {
            i += 1;
            continue;
        }
        let (src, dst) = (g.node[i].input[0].clone(), g.node[i].output[0].clone());
        let src_is_output = outputs.contains(&src);
        let producer = g.node.iter().position(|n| n.output.contains(&src));
        if outputs.contains(&dst) {
            // Keep the graph output name: the producer of `src` writes `dst` instead.
            let Some(p) = producer.filter(|_| !src_is_output && !inputs.contains(&src)) else {
                i += 1;
                continue;
            };
            for o in g.node[p].output.iter_mut().filter(|o| **o == src) {
                *o = dst.clone();
            }
            for n in g.node.iter_mut() {
                for x in n.input.iter_mut().filter(|x| **x == src) {
                    *x = dst.clone();
                }
            }
        } else {
            for n in g.node.iter_mut() {
                for x in n.input.iter_mut().filter(|x| **x == dst) {
                    *x = src.clone();
                }
            }
        }
        g.node.remove(i);
    }
}

/// Folds `Add(Conv(x), per-channel constant)` into the convolution's bias (exporters such as
/// Paddle2ONNX emit biases that way).
fn fold_bias_add(g: &mut GraphProto) -> Result<()> {
    let mut i = 0;
    while i < g.node.len() {
        let add = &g.node[i];
        if add.op_type != "Add" || add.input.len() != 2 {
            i += 1;
            continue;
        }
        let inits: HashMap<&str, &TensorProto> = g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let (conv_out, constant) = match (inits.get(add.input[0].as_str()), inits.get(add.input[1].as_str())) {
            (None, Some(c)) => (add.input[0].clone(), (*c).clone()),
            (Some(c), None) => (add.input[1].clone(), (*c).clone()),
            _ => {
                i += 1;
                continue;
            }
        };
        let readers = g.node.iter().filter(|n| n.input.contains(&conv_out)).count()
            + usize::from(g.output.iter().any(|o| o.name == conv_out));
        let Some(ci) = g.node.iter().position(|n| n.op_type == "Conv" && n.output.first() == Some(&conv_out)) else {
            i += 1;
            continue;
        };
        let w = inits.get(g.node[ci].input[1].as_str()).map(|t| t.dims.clone()).unwrap_or_default();
        let cout = w.first().copied().unwrap_or(0) as usize;
        // The constant must hold one value per output channel, broadcast over N, H, W.
        let dims: Vec<i64> = constant.dims.clone();
        let per_channel = graph::volume(&constant) as usize == cout
            && cout > 0
            && (dims.len() == 1
                || dims.iter().rev().skip_while(|&&d| d == 1).count() == dims.len().saturating_sub(2).max(1)
                || dims == [1, cout as i64, 1, 1]
                || dims == [cout as i64, 1, 1]);
        if readers != 1 || !per_channel {
            i += 1;
            continue;
        }
        let add_bias = f32s_of(&graph::load(&constant)?)?;
        let old = match g.node[ci].input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => {
                f32s_of(&graph::load(inits.get(b.as_str()).with_context(|| format!("bias `{b}` is not constant"))?)?)?
            }
            None => vec![0.0; cout],
        };
        let bias: Vec<f32> = old.iter().zip(&add_bias).map(|(a, b)| a + b).collect();
        let conv_name = if g.node[ci].name.is_empty() { format!("conv{ci}") } else { g.node[ci].name.clone() };
        let bias_name = format!("{conv_name}.bias_added");
        g.initializer
            .push(graph::to_proto(&bias_name, &tract_ndarray::Array1::from_vec(bias).into_dyn().into_tensor())?);
        let out = g.node[i].output[0].clone();
        let conv = &mut g.node[ci];
        conv.input.truncate(2);
        conv.input.push(bias_name);
        conv.output[0] = out;
        g.node.remove(i);
    }
    Ok(())
}

/// `Add(MatMul(x, W), b)` with a 2-D `x`, constant `W` and a constant `b` → `Gemm(x, W, b)`.
fn fold_matmul_add(g: &mut GraphProto, shapes: &HashMap<String, Vec<usize>>) -> Result<()> {
    let mut i = 0;
    while i < g.node.len() {
        let add = &g.node[i];
        let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        let found = (add.op_type == "Add" && add.input.len() == 2)
            .then(|| {
                let (m, b) = if inits.contains(add.input[1].as_str()) {
                    (&add.input[0], &add.input[1])
                } else {
                    (&add.input[1], &add.input[0])
                };
                let mi = g.node.iter().position(|n| n.op_type == "MatMul" && n.output.first() == Some(m))?;
                let mm = &g.node[mi];
                let two_d = shapes.get(&mm.input[0]).is_some_and(|s| s.len() == 2);
                let readers = g.node.iter().filter(|n| n.input.contains(m)).count();
                (inits.contains(b.as_str()) && inits.contains(mm.input[1].as_str()) && two_d && readers == 1)
                    .then(|| (mi, b.clone()))
            })
            .flatten();
        let Some((mi, bias)) = found else {
            i += 1;
            continue;
        };
        let out = g.node[i].output[0].clone();
        let mm = &mut g.node[mi];
        mm.op_type = "Gemm".into();
        mm.input.push(bias);
        mm.output[0] = out;
        g.node.remove(i);
    }
    Ok(())
}

fn f32s_of(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.cast_to::<f32>()
        .map_err(|e| anyhow!("{e:#}"))?
        .to_plain_array_view::<f32>()
        .map_err(|e| anyhow!("{e:#}"))?
        .iter()
        .copied()
        .collect())
}

/// Folds `BatchNormalization` (inference form) into the `Conv` feeding it, when the Conv's output
/// has no other reader.
fn fold_batchnorm(g: &mut GraphProto) -> Result<()> {
    let readers = |g: &GraphProto, t: &str| {
        g.node.iter().filter(|n| n.input.iter().any(|i| i == t)).count()
            + usize::from(g.output.iter().any(|o| o.name == t))
    };
    let mut i = 0;
    while i < g.node.len() {
        let bn = &g.node[i];
        if bn.op_type != "BatchNormalization" || bn.output.iter().skip(1).any(|o| !o.is_empty()) {
            i += 1;
            continue;
        }
        let x = bn.input[0].clone();
        let Some(ci) = g.node.iter().position(|n| n.op_type == "Conv" && n.output.first() == Some(&x)) else {
            i += 1;
            continue;
        };
        if readers(g, &x) != 1 {
            i += 1;
            continue;
        }
        let inits: HashMap<&str, &TensorProto> = g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let get = |name: &str| inits.get(name).map(|t| graph::load(t)).transpose();
        let (Some(w), Some(scale), Some(bias), Some(mean), Some(var)) = (
            get(&g.node[ci].input[1])?,
            get(&bn.input[1])?,
            get(&bn.input[2])?,
            get(&bn.input[3])?,
            get(&bn.input[4])?,
        ) else {
            i += 1;
            continue;
        };
        let eps = graph::attr_f(bn, "epsilon", 1e-5);
        let conv_bias = match g.node[ci].input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => get(b)?,
            None => None,
        };
        let f = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.cast_to::<f32>()
                .map_err(|e| anyhow!("{e:#}"))?
                .to_plain_array_view::<f32>()
                .map_err(|e| anyhow!("{e:#}"))?
                .iter()
                .copied()
                .collect())
        };
        let (scale, bias, mean, var) = (f(&scale)?, f(&bias)?, f(&mean)?, f(&var)?);
        let cout = scale.len();
        let mut wv = f(&w)?;
        if w.shape()[0] != cout {
            i += 1;
            continue;
        }
        let per = wv.len() / cout;
        let mut b = conv_bias.as_ref().map(f).transpose()?.unwrap_or_else(|| vec![0.0; cout]);
        for c in 0..cout {
            let k = scale[c] / (var[c] + eps).sqrt();
            for v in &mut wv[c * per..(c + 1) * per] {
                *v *= k;
            }
            b[c] = (b[c] - mean[c]) * k + bias[c];
        }
        let conv_name = if g.node[ci].name.is_empty() { format!("conv{ci}") } else { g.node[ci].name.clone() };
        let (wn, bn_name) = (format!("{conv_name}.weight_bnfolded"), format!("{conv_name}.bias_bnfolded"));
        g.initializer
            .push(graph::to_proto(&wn, &tract_ndarray::ArrayD::from_shape_vec(w.shape().to_vec(), wv)?.into_tensor())?);
        g.initializer.push(graph::to_proto(&bn_name, &tract_ndarray::Array1::from_vec(b).into_dyn().into_tensor())?);
        let out = g.node[i].output[0].clone();
        let conv = &mut g.node[ci];
        conv.input.truncate(1);
        conv.input.push(wn);
        conv.input.push(bn_name);
        conv.output[0] = out;
        g.node.remove(i);
    }
    // Initializers nothing reads any more (the unfolded weights).
    let used: HashSet<String> =
        g.node.iter().flat_map(|n| n.input.iter().cloned()).chain(g.output.iter().map(|o| o.name.clone())).collect();
    g.initializer.retain(|t| used.contains(&t.name));
    Ok(())
}
