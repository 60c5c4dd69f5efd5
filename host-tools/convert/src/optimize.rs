//! `optimize`: freeze inputs to constants, fix dynamic dimensions, fold constants (evaluated by
//! tract, node by node) and `If` nodes whose condition became constant (the taken branch is
//! inlined), replace `Shape`/`Size` of tensors whose shape is known, drop stale `value_info`, and
//! remove what no output needs. The result is plain ONNX that tract and onnxruntime both load.

use crate::graph::{self, attr};
use anyhow::{anyhow, bail, Context, Result};
use lepton_runtime::onnx::pb::{self, GraphProto, ModelProto, NodeProto, TensorProto};
use std::collections::{HashMap, HashSet};
use tract_onnx::prelude::*;

/// Largest tensor (elements) constant folding may create; bigger results stay computed at run time.
pub const MAX_FOLDED_ELEMENTS: usize = 1 << 22;

/// What to do.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Inputs frozen to these values.
    pub fix: Vec<(String, Tensor)>,
    /// Inputs given these concrete shapes.
    pub shapes: Vec<(String, Vec<usize>)>,
}

/// What was done.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    /// Nodes before.
    pub nodes_before: usize,
    /// Nodes after (top level).
    pub nodes_after: usize,
    /// Nodes replaced by constants.
    pub folded: usize,
    /// `If` nodes replaced by their taken branch.
    pub ifs_inlined: usize,
    /// `Shape`/`Size` nodes replaced by constants.
    pub shapes_resolved: usize,
    /// Nodes removed as unused.
    pub removed: usize,
}

/// Optimizes `model` in place.
pub fn optimize(model: &mut ModelProto, plan: &Plan) -> Result<Summary> {
    let opsets = model.opset_import.clone();
    let ir_version = model.ir_version;
    let graph = model.graph.as_mut().context("the model has no graph")?;
    let mut summary = Summary { nodes_before: count_nodes(graph), ..Default::default() };
    for (name, value) in &plan.fix {
        let pos = graph
            .input
            .iter()
            .position(|i| &i.name == name)
            .with_context(|| format!("--fix {name}: the model has no input `{name}`"))?;
        graph.input.remove(pos);
        graph.initializer.retain(|t| &t.name != name);
        graph.initializer.push(graph::to_proto(name, value)?);
    }
    for (name, shape) in &plan.shapes {
        let input = graph
            .input
            .iter_mut()
            .find(|i| &i.name == name)
            .with_context(|| format!("--shape {name}: the model has no input `{name}`"))?;
        set_shape(input, shape).with_context(|| format!("--shape {name}"))?;
    }
    clear_value_info(graph);
    loop {
        let mut changed = false;
        let (folded, inlined) = fold(graph, &opsets, ir_version)?;
        summary.folded += folded;
        summary.ifs_inlined += inlined;
        changed |= folded + inlined > 0;
        let resolved = resolve_shapes(graph, &opsets, ir_version);
        summary.shapes_resolved += resolved;
        changed |= resolved > 0;
        if !changed {
            break;
        }
    }
    summary.removed = remove_unused(graph);
    summary.nodes_after = graph.node.len();
    Ok(summary)
}

fn count_nodes(g: &GraphProto) -> usize {
    let mut n = 0;
    graph::walk_nodes(g, &mut |_| n += 1);
    n
}

fn set_shape(v: &mut pb::ValueInfoProto, shape: &[usize]) -> Result<()> {
    let Some(pb::type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
        bail!("input `{}` is not a tensor", v.name);
    };
    if let Some(old) = &t.shape {
        if !old.dim.is_empty() && old.dim.len() != shape.len() {
            bail!("input `{}` has rank {}, the shape given has rank {}", v.name, old.dim.len(), shape.len());
        }
        for (d, &n) in old.dim.iter().zip(shape) {
            if let Some(pb::tensor_shape_proto::dimension::Value::DimValue(v0)) = d.value {
                if v0 as usize != n {
                    bail!("dimension is fixed to {v0} in the model, the shape gives {n}");
                }
            }
        }
    }
    let dim = shape
        .iter()
        .map(|&n| pb::tensor_shape_proto::Dimension {
            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(n as i64)),
            ..Default::default()
        })
        .collect();
    t.shape = Some(pb::TensorShapeProto { dim });
    Ok(())
}

/// Drops intermediate `value_info` everywhere (exporters often leave it inconsistent).
fn clear_value_info(g: &mut GraphProto) {
    g.value_info.clear();
    for n in &mut g.node {
        for a in &mut n.attribute {
            if let Some(sub) = a.g.as_mut() {
                clear_value_info(sub);
            }
            for sub in &mut a.graphs {
                clear_value_info(sub);
            }
        }
    }
}

/// Names of every constant: initializers and outputs of `Constant` nodes.
fn constant_values(g: &GraphProto) -> HashMap<String, TensorProto> {
    graph::constants(g)
        .into_iter()
        .map(|(k, v)| (k.to_string(), TensorProto { name: k.to_string(), ..v.clone() }))
        .collect()
}

/// One pass over the top-level nodes: folds constant nodes and inlines `If`s with a constant
/// condition. Returns (nodes folded, ifs inlined).
fn fold(g: &mut GraphProto, opsets: &[pb::OperatorSetIdProto], ir: i64) -> Result<(usize, usize)> {
    let mut consts = constant_values(g);
    let mut folded = 0;
    let mut inlined = 0;
    let mut out_nodes: Vec<NodeProto> = Vec::with_capacity(g.node.len());
    let nodes = std::mem::take(&mut g.node);
    let mut counter = 0usize;
    for node in nodes {
        if node.op_type == "Constant" {
            out_nodes.push(node);
            continue;
        }
        if node.op_type == "If" {
            if let Some(cond) = node.input.first().and_then(|c| consts.get(c)) {
                let cond = graph::load(cond)?;
                let taken = cond
                    .cast_to::<bool>()
                    .map_err(|e| anyhow!("{e:#}"))?
                    .to_plain_array_view::<bool>()
                    .map_err(|e| anyhow!("{e:#}"))?
                    .iter()
                    .next()
                    .copied();
                if let Some(taken) = taken {
                    let branch = attr(&node, if taken { "then_branch" } else { "else_branch" })
                        .and_then(|a| a.g.clone())
                        .with_context(|| format!("If node `{}` has no branch graph", node.name))?;
                    counter += 1;
                    let prefix = format!(
                        "{}/{}#{}",
                        if node.name.is_empty() { "if" } else { &node.name },
                        if taken { "then" } else { "else" },
                        counter
                    );
                    let (nodes, inits) = inline(branch, &node, &prefix);
                    for t in &inits {
                        consts.insert(t.name.clone(), t.clone());
                    }
                    g.initializer.extend(inits);
                    out_nodes.extend(nodes);
                    inlined += 1;
                    continue;
                }
            }
            out_nodes.push(node);
            continue;
        }
        let has_subgraph = node.attribute.iter().any(|a| a.g.is_some() || !a.graphs.is_empty());
        let inputs_constant = node.input.iter().all(|i| i.is_empty() || consts.contains_key(i));
        let random = matches!(
            node.op_type.as_str(),
            "RandomNormal" | "RandomUniform" | "RandomNormalLike" | "RandomUniformLike" | "Multinomial"
        );
        if has_subgraph || !inputs_constant || random || !node.domain.is_empty() && node.domain != "ai.onnx" {
            out_nodes.push(node);
            continue;
        }
        match evaluate(&node, &consts, opsets, ir) {
            Ok(values) if values.iter().all(|t| t.len() <= MAX_FOLDED_ELEMENTS) => {
                for (name, t) in node.output.iter().zip(values) {
                    if name.is_empty() {
                        continue;
                    }
                    let p = graph::to_proto(name, &t)?;
                    consts.insert(name.clone(), p.clone());
                    g.initializer.push(p);
                }
                folded += 1;
            }
            Ok(_) => out_nodes.push(node),
            Err(e) => {
                tracing::debug!("not folding `{}` ({}): {e:#}", node.name, node.op_type);
                out_nodes.push(node)
            }
        }
    }
    g.node = out_nodes;
    Ok((folded, inlined))
}

/// Evaluates one node whose inputs are all constant, with tract.
fn evaluate(
    node: &NodeProto,
    consts: &HashMap<String, TensorProto>,
    opsets: &[pb::OperatorSetIdProto],
    ir: i64,
) -> Result<Vec<Tensor>> {
    let initializer: Vec<TensorProto> = node
        .input
        .iter()
        .filter(|i| !i.is_empty())
        .filter_map(|i| {
            // A Constant node's tensor carries no name (or another one): name it as the input.
            consts.get(i).map(|t| TensorProto { name: i.clone(), ..t.clone() })
        })
        .collect();
    let output = node
        .output
        .iter()
        .filter(|o| !o.is_empty())
        .map(|o| pb::ValueInfoProto { name: o.clone(), ..Default::default() })
        .collect();
    let mini = ModelProto {
        ir_version: ir,
        opset_import: opsets.to_vec(),
        graph: Some(GraphProto {
            node: vec![node.clone()],
            initializer,
            output,
            name: "fold".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let model = tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_output_types(true)
        .model_for_proto_model(&mini)
        .map_err(|e| anyhow!("{e:#}"))?;
    let plan = model.into_typed().map_err(|e| anyhow!("{e:#}"))?.into_runnable().map_err(|e| anyhow!("{e:#}"))?;
    let out = plan.run(tvec!()).map_err(|e| anyhow!("{e:#}"))?;
    Ok(out.into_iter().map(|v| v.into_tensor()).collect())
}

/// The taken branch's nodes and initializers, with names local to the branch prefixed and its
/// outputs wired to the `If` node's outputs.
fn inline(branch: GraphProto, if_node: &NodeProto, prefix: &str) -> (Vec<NodeProto>, Vec<TensorProto>) {
    let mut local: HashSet<String> = branch.initializer.iter().map(|t| t.name.clone()).collect();
    for n in &branch.node {
        local.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
    }
    let rename = |s: &str| {
        if local.contains(s) {
            format!("{prefix}/{s}")
        } else {
            s.to_string()
        }
    };
    let mut nodes: Vec<NodeProto> = branch
        .node
        .into_iter()
        .map(|mut n| {
            for i in n.input.iter_mut().chain(n.output.iter_mut()) {
                if !i.is_empty() {
                    *i = rename(i);
                }
            }
            for a in &mut n.attribute {
                if let Some(sub) = a.g.as_mut() {
                    rename_references(sub, &local, prefix);
                }
                for sub in &mut a.graphs {
                    rename_references(sub, &local, prefix);
                }
            }
            if !n.name.is_empty() {
                n.name = format!("{prefix}/{}", n.name);
            }
            n
        })
        .collect();
    let inits = branch
        .initializer
        .into_iter()
        .map(|mut t| {
            t.name = rename(&t.name);
            t
        })
        .collect();
    for (branch_out, if_out) in branch.output.iter().zip(&if_node.output) {
        nodes.push(NodeProto {
            op_type: "Identity".into(),
            name: format!("{prefix}/output:{if_out}"),
            input: vec![rename(&branch_out.name)],
            output: vec![if_out.clone()],
            ..Default::default()
        });
    }
    (nodes, inits)
}

/// Renames references to `local` names inside a nested subgraph (names it defines itself shadow).
fn rename_references(g: &mut GraphProto, local: &HashSet<String>, prefix: &str) {
    let mut own: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    own.extend(g.input.iter().map(|i| i.name.clone()));
    for n in &g.node {
        own.extend(n.output.iter().cloned());
    }
    let visible: HashSet<String> = local.difference(&own).cloned().collect();
    for n in &mut g.node {
        for i in n.input.iter_mut() {
            if visible.contains(i.as_str()) {
                *i = format!("{prefix}/{i}");
            }
        }
        for a in &mut n.attribute {
            if let Some(sub) = a.g.as_mut() {
                rename_references(sub, &visible, prefix);
            }
            for sub in &mut a.graphs {
                rename_references(sub, &visible, prefix);
            }
        }
    }
    for o in &mut g.output {
        if visible.contains(o.name.as_str()) {
            o.name = format!("{prefix}/{}", o.name);
        }
    }
}

/// Replaces nodes whose outputs tract's analysis can compute without running the model
/// (`Shape`, `Size` and the arithmetic on them, conditions derived from shapes). The analysis
/// goes as far as it can: parts it cannot analyse yet (an `If` not folded) are skipped.
/// Returns how many nodes were replaced.
fn resolve_shapes(g: &mut GraphProto, opsets: &[pb::OperatorSetIdProto], ir: i64) -> usize {
    let Some(values) = analysed_values(g, opsets, ir) else {
        return 0;
    };
    let mut resolved = 0;
    let mut i = 0;
    while i < g.node.len() {
        let n = &g.node[i];
        let foldable = n.op_type != "Constant"
            && !n.output.is_empty()
            && n.output.iter().all(|o| o.is_empty() || values.get(o).is_some_and(|t| t.len() <= MAX_FOLDED_ELEMENTS));
        if foldable {
            let protos: Option<Vec<TensorProto>> =
                n.output.iter().filter(|o| !o.is_empty()).map(|o| graph::to_proto(o, &values[o]).ok()).collect();
            if let Some(protos) = protos {
                g.initializer.extend(protos);
                g.node.remove(i);
                resolved += 1;
                continue;
            }
        }
        i += 1;
    }
    resolved
}

/// Values of tensors that tract's (partial) analysis determines from constants and input shapes.
fn analysed_values(g: &GraphProto, opsets: &[pb::OperatorSetIdProto], ir: i64) -> Option<HashMap<String, Tensor>> {
    use tract_onnx::tract_hir::infer::{Factoid, InferenceModelExt};
    let model =
        ModelProto { ir_version: ir, opset_import: opsets.to_vec(), graph: Some(g.clone()), ..Default::default() };
    let (specs, _) = lepton_runtime::onnx::io_specs(&model);
    let mut m = tract_onnx::onnx().with_ignore_value_info(true).parse(&model, None).ok()?.model;
    let names: Vec<String> = m.input_outlets().ok()?.iter().map(|o| m.node(o.node).name.clone()).collect();
    for (ix, name) in names.iter().enumerate() {
        let spec = specs.iter().find(|s| &s.name == name)?;
        let shape: Vec<usize> = spec
            .dims
            .as_ref()?
            .iter()
            .map(|d| if let lepton_runtime::onnx::Dim::Fixed(n) = d { Some(*n) } else { None })
            .collect::<Option<_>>()?;
        let dt = crate::inputs::datum_type(&spec.elem_type).unwrap_or(DatumType::F32);
        m.set_input_fact(ix, InferenceFact::dt_shape(dt, shape)).ok()?;
    }
    // Obstinate: keep going past nodes that cannot be analysed yet.
    let _ = m.analyse(true);
    let mut values = HashMap::new();
    for node in m.nodes() {
        for (ix, o) in node.outputs.iter().enumerate() {
            let Some(label) = m.outlet_label(OutletId::new(node.id, ix)) else {
                continue;
            };
            if let Some(v) = o.fact.value.concretize() {
                values.insert(label.to_string(), v.into_tensor());
            }
        }
    }
    Some(values)
}

/// Removes nodes and initializers no graph output depends on. Returns nodes removed.
fn remove_unused(g: &mut GraphProto) -> usize {
    let mut needed: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    let mut keep = vec![false; g.node.len()];
    for (i, n) in g.node.iter().enumerate().rev() {
        if n.output.iter().any(|o| needed.contains(o)) {
            keep[i] = true;
            needed.extend(n.input.iter().filter(|x| !x.is_empty()).cloned());
            graph::walk_graphs_of(n, &mut |sub| {
                graph::walk_nodes(sub, &mut |m| needed.extend(m.input.iter().cloned()));
            });
        }
    }
    let before = g.node.len();
    let mut k = keep.into_iter();
    g.node.retain(|_| k.next().unwrap_or(true));
    g.initializer.retain(|t| needed.contains(&t.name));
    before - g.node.len()
}

/// Parses a `--fix` value: a number (typed like the input), a comma list, or a `.npy` file.
pub fn parse_value(text: &str, elem_type: &str, dims: Option<&[lepton_runtime::onnx::Dim]>) -> Result<Tensor> {
    if text.ends_with(".npy") {
        return crate::npy::read(std::path::Path::new(text));
    }
    let numbers: Vec<f64> = text
        .split(',')
        .map(|v| {
            v.trim().parse::<f64>().with_context(|| format!("`{text}`: expected a number, a comma list or a .npy file"))
        })
        .collect::<Result<_>>()?;
    let scalar = numbers.len() == 1 && dims.is_none_or(|d| d.is_empty());
    let shape: Vec<usize> = if scalar { vec![] } else { vec![numbers.len()] };
    let dt = crate::inputs::datum_type(elem_type).unwrap_or(DatumType::F32);
    let f = tract_ndarray::ArrayD::from_shape_vec(shape, numbers)?.into_tensor();
    f.cast_to_dt(dt).map(|t| t.into_owned()).map_err(|e| anyhow!("{e:#}"))
}
