//! ONNX constructs tract-onnx 0.23 computes wrong, made right before it sees the model: each is
//! rewritten into an equivalent form tract gets right, or refused with the node and the
//! attribute named, so a model never runs with silently wrong arithmetic. Every case here was
//! found by the operator conformance suite against onnxruntime (tests/tests/ops.rs).
//!
//! `Pad` in `reflect` or `edge` mode with a `constant_value` input padded with the constant: the
//! input (meaningless in those modes) is dropped.
//!
//! Recurrent layers (LSTM, GRU, RNN): tract reads only some of their attributes.
//! - `direction = "reverse"` ran forward: the sequence is reversed around a forward layer (`X` and
//!   `Y` through a reversing `Slice`; `Y_h`, `Y_c` are the same).
//! - `layout = 1` (batch first) broke bidirectional layers: `X`, `initial_h`, `initial_c` are
//!   transposed to sequence first and the outputs back.
//! - `clip`, `input_forget`, non-default `activations` and `activation_alpha`/`_beta` were
//!   ignored: refused.
//! - An LSTM without initial states whose cell state is an output failed to run for a batch and
//!   a sequence longer than 1: it gets zero peepholes (the same arithmetic, another path in tract).
//!
//! The other half of the fix is in the engine: ONNX runs are stateless, and tract's loops keep
//! their last state for the next run unless told to reset (`TractEngine`).

use crate::onnx::pb::{self, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use lepton_core::error::{LeptonError, Result};
use std::borrow::Cow;
use std::path::Path;

const RECURRENT: [&str; 3] = ["LSTM", "GRU", "RNN"];

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn attr_s(n: &NodeProto, name: &str) -> Option<String> {
    attr(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

fn node_name(n: &NodeProto, i: usize) -> String {
    if n.name.is_empty() {
        format!("#{i} ({})", n.op_type)
    } else {
        n.name.clone()
    }
}

/// The activations a layer uses when it does not say: per direction.
fn default_activations(op: &str) -> &'static [&'static str] {
    match op {
        "LSTM" => &["Sigmoid", "Tanh", "Tanh"],
        "GRU" => &["Sigmoid", "Tanh"],
        _ => &["Tanh"],
    }
}

/// Refuses a recurrent node whose attributes tract would ignore.
fn check(n: &NodeProto, i: usize, path: &Path) -> Result<()> {
    let refuse = |attribute: &str, reason: String| LeptonError::UnsupportedAttribute {
        path: path.to_path_buf(),
        node: node_name(n, i),
        op: n.op_type.clone(),
        attribute: attribute.into(),
        reason,
    };
    if let Some(a) = attr(n, "clip") {
        return Err(refuse("clip", format!("clips cell inputs to ±{}", a.f)));
    }
    if attr(n, "input_forget").is_some_and(|a| a.i != 0) {
        return Err(refuse("input_forget", "couples the input and forget gates".into()));
    }
    for a in ["activation_alpha", "activation_beta"] {
        if attr(n, a).is_some_and(|a| !a.floats.is_empty()) {
            return Err(refuse(a, "parametrizes the activations".into()));
        }
    }
    if let Some(a) = attr(n, "activations") {
        let given: Vec<String> = a.strings.iter().map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()).collect();
        let default = default_activations(&n.op_type);
        let standard =
            given.chunks(default.len()).all(|c| c.iter().zip(default).all(|(g, d)| g == &d.to_ascii_lowercase()));
        if !standard || !given.len().is_multiple_of(default.len()) {
            return Err(refuse("activations", format!("uses {given:?} instead of {default:?}")));
        }
    }
    Ok(())
}

/// An LSTM without initial states or peepholes whose cell state is an output: tract's loop fails
/// to resolve the batch dimension of its zero initial state when the batch and the sequence are
/// longer than 1 ("Clashing resolution for expression"); with zero peepholes it takes another
/// path that resolves it.
fn lstm_needs_peepholes(n: &NodeProto) -> bool {
    let given = |k: usize| n.input.get(k).is_some_and(|s| !s.is_empty());
    n.op_type == "LSTM" && !given(5) && !given(6) && !given(7) && n.output.get(2).is_some_and(|s| !s.is_empty())
}

/// Fresh tensor names for what a rewrite inserts.
struct Names {
    taken: std::collections::HashSet<String>,
}

impl Names {
    fn of(g: &GraphProto) -> Self {
        let mut taken = std::collections::HashSet::new();
        for n in &g.node {
            taken.extend(n.input.iter().chain(&n.output).cloned());
        }
        taken.extend(g.initializer.iter().map(|t| t.name.clone()));
        taken.extend(g.input.iter().chain(&g.output).map(|v| v.name.clone()));
        Names { taken }
    }

    fn fresh(&mut self, base: &str) -> String {
        let mut k = 0;
        loop {
            let name = format!("{base}:lepton{k}");
            if self.taken.insert(name.clone()) {
                return name;
            }
            k += 1;
        }
    }
}

fn ints(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn transpose(input: &str, output: &str, perm: &[i64]) -> NodeProto {
    NodeProto {
        op_type: "Transpose".into(),
        input: vec![input.into()],
        output: vec![output.into()],
        attribute: vec![AttributeProto {
            name: "perm".into(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ints: perm.to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn set_attr(n: &mut NodeProto, name: &str, value: AttributeProto) {
    n.attribute.retain(|a| a.name != name);
    n.attribute.push(AttributeProto { name: name.into(), ..value });
}

/// Rewrites a graph's recurrent nodes (see the module docs); true when something changed.
fn rewrite_graph(g: &mut GraphProto, path: &Path) -> Result<bool> {
    let mut names = Names::of(g);
    let mut out: Vec<NodeProto> = Vec::with_capacity(g.node.len());
    let mut changed = false;
    for (i, mut n) in std::mem::take(&mut g.node).into_iter().enumerate() {
        if !RECURRENT.contains(&n.op_type.as_str()) {
            out.push(n);
            continue;
        }
        check(&n, i, path)?;
        if lstm_needs_peepholes(&n) {
            // Zero peepholes change nothing in the arithmetic and take tract's other path.
            let hidden = attr(&n, "hidden_size").map_or(0, |a| a.i);
            let dirs = if attr_s(&n, "direction").as_deref() == Some("bidirectional") { 2 } else { 1 };
            let name = names.fresh("peepholes");
            g.initializer.push(TensorProto {
                name: name.clone(),
                dims: vec![dirs, 3 * hidden],
                data_type: pb::tensor_proto::DataType::Float as i32,
                float_data: vec![0.0; (dirs * 3 * hidden).max(0) as usize],
                ..Default::default()
            });
            n.input.resize(8, String::new());
            n.input[7] = name;
            changed = true;
        }
        let batch_first = attr(&n, "layout").is_some_and(|a| a.i == 1);
        let reverse = attr_s(&n, "direction").as_deref() == Some("reverse");
        if !batch_first && !reverse {
            out.push(n);
            continue;
        }
        changed = true;
        let mut before = vec![];
        let mut after = vec![];
        let slice = if reverse {
            // Reverses along axis 0, the sequence axis once the layer is sequence first.
            let consts = names.fresh("reverse");
            let [starts, ends, axes, steps] = ["starts", "ends", "axes", "steps"].map(|k| format!("{consts}/{k}"));
            g.initializer.extend([
                ints(&starts, &[-1]),
                ints(&ends, &[i64::MIN]),
                ints(&axes, &[0]),
                ints(&steps, &[-1]),
            ]);
            Some(move |input: &str, output: &str| NodeProto {
                op_type: "Slice".into(),
                input: vec![input.into(), starts.clone(), ends.clone(), axes.clone(), steps.clone()],
                output: vec![output.into()],
                ..Default::default()
            })
        } else {
            None
        };
        // Inputs: X, W, R, B, sequence_lens, initial_h, initial_c (LSTM), P (LSTM). X becomes
        // sequence first, then reversed; the states become direction first.
        let states: &[usize] = if n.op_type == "LSTM" { &[0, 5, 6] } else { &[0, 5] };
        for &k in states {
            let Some(name) = n.input.get(k).filter(|s| !s.is_empty()).cloned() else { continue };
            let mut current = name.clone();
            if batch_first {
                let t = names.fresh(&name);
                before.push(transpose(&current, &t, &[1, 0, 2]));
                current = t;
            }
            if let (0, Some(slice)) = (k, &slice) {
                let t = names.fresh(&name);
                before.push(slice(&current, &t));
                current = t;
            }
            n.input[k] = current;
        }
        // Outputs: Y [seq, dirs, batch, hidden] is reversed back, then made batch first
        // ([batch, seq, dirs, hidden]); Y_h, Y_c [dirs, batch, hidden] become [batch, dirs, hidden].
        for k in 0..3usize {
            let Some(name) = n.output.get(k).filter(|s| !s.is_empty()).cloned() else { continue };
            let reversing = k == 0 && slice.is_some();
            if !reversing && !batch_first {
                continue;
            }
            let mut current = names.fresh(&name);
            n.output[k] = current.clone();
            if let (true, Some(slice)) = (reversing, &slice) {
                let next = if batch_first { names.fresh(&name) } else { name.clone() };
                after.push(slice(&current, &next));
                current = next;
            }
            if batch_first {
                let perm: &[i64] = if k == 0 { &[2, 0, 1, 3] } else { &[1, 0, 2] };
                after.push(transpose(&current, &name, perm));
            }
        }
        let int = pb::attribute_proto::AttributeType::Int as i32;
        let string = pb::attribute_proto::AttributeType::String as i32;
        if batch_first {
            set_attr(&mut n, "layout", AttributeProto { r#type: int, i: 0, ..Default::default() });
        }
        if reverse {
            set_attr(
                &mut n,
                "direction",
                AttributeProto { r#type: string, s: b"forward".to_vec(), ..Default::default() },
            );
        }
        out.extend(before);
        out.push(n);
        out.extend(after);
    }
    g.node = out;
    Ok(changed)
}

/// A `Pad` that pads by reflection or by repeating the edge and also names a constant: tract
/// would pad with the constant.
fn pads_with_ignored_constant(n: &NodeProto) -> bool {
    n.op_type == "Pad"
        && n.input.get(2).is_some_and(|v| !v.is_empty())
        && attr_s(n, "mode").is_some_and(|m| m != "constant")
}

/// The model as tract should see it: what tract gets wrong rewritten (see the module docs), or an
/// error naming the node and attribute it cannot run. Untouched models are borrowed as they are.
pub fn prepare<'m>(model: &'m ModelProto, path: &Path) -> Result<Cow<'m, ModelProto>> {
    let Some(g) = &model.graph else { return Ok(Cow::Borrowed(model)) };
    let pads = g.node.iter().any(pads_with_ignored_constant);
    let recurrent = g.node.iter().any(|n| RECURRENT.contains(&n.op_type.as_str()));
    if !pads && !recurrent {
        return Ok(Cow::Borrowed(model));
    }
    let opset =
        model.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map_or(0, |o| o.version);
    let mut m = model.clone();
    let g = m.graph.as_mut().expect("checked above");
    for n in g.node.iter_mut().filter(|n| pads_with_ignored_constant(n)) {
        n.input.truncate(2);
    }
    let reversed =
        g.node.iter().enumerate().find(|(_, n)| {
            RECURRENT.contains(&n.op_type.as_str()) && attr_s(n, "direction").as_deref() == Some("reverse")
        });
    if let (Some((i, n)), true) = (reversed, opset < 10) {
        return Err(LeptonError::UnsupportedAttribute {
            path: path.to_path_buf(),
            node: node_name(n, i),
            op: n.op_type.clone(),
            attribute: "direction".into(),
            reason: format!("is \"reverse\" in opset {opset} (re-export with opset 10 or later)"),
        });
    }
    rewrite_graph(g, path)?;
    Ok(Cow::Owned(m))
}
