//! Calibration: the float model planned once with chosen tensors exposed ([`Capture`]), run one
//! sample at a time, and the two passes that turn its activations into ranges.

use crate::calibrate::{Method, Observer};
use crate::samples::Inputs;
use anyhow::{anyhow, Context, Result};
use lepton_runtime::onnx::pb::{self, ModelProto};
use std::collections::{HashMap, HashSet};
use tract_onnx::prelude::*;

/// A model planned once with chosen tensors exposed as extra outputs, run one sample at a time:
/// calibration and measurement fold each sample's values and drop them.
pub struct Capture {
    runner: SimplePlanRunner,
    /// The planned model's outputs, in order.
    names: Vec<String>,
    /// The exposed tensors (and graph outputs) that were asked for.
    wanted: HashSet<String>,
}

impl Capture {
    /// Plans `model` with `tensors` exposed as outputs (constants and names nothing produces are
    /// left out), for inputs shaped as in `sample`.
    pub fn new(model: &ModelProto, tensors: &[String], sample: &Inputs) -> Result<Self> {
        let mut m = model.clone();
        let g = m.graph.as_mut().context("no graph")?;
        let existing: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
        let consts: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
        let produced: HashSet<&str> = g
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .chain(g.input.iter().map(|i| i.name.as_str()))
            .collect();
        let exposed: Vec<String> =
            tensors.iter().filter(|t| !consts.contains(*t) && produced.contains(t.as_str())).cloned().collect();
        for t in &exposed {
            if !existing.contains(t) {
                g.output.push(pb::ValueInfoProto { name: t.clone(), ..Default::default() });
            }
        }
        let names: Vec<String> = g.output.iter().map(|o| o.name.clone()).collect();
        let facts: Vec<_> = sample
            .iter()
            .map(|(n, t)| lepton_runtime::engine::tract::InputFact {
                name: n.clone(),
                shape: t.shape().to_vec(),
                dtype: Some(t.datum_type()),
            })
            .collect();
        let runner = load_relaxed(&m, &facts)?;
        Ok(Capture { runner, names, wanted: exposed.into_iter().collect() })
    }

    /// Runs one sample; returns the exposed tensors that are f32 (others are left out).
    pub fn run(&mut self, sample: &Inputs) -> Result<Values> {
        let out = self.runner.run_tensors(sample.iter().map(|(_, t)| t.clone()).collect())?;
        let mut tensors = HashMap::new();
        for (name, t) in self.names.iter().zip(out) {
            if self.wanted.contains(name) && t.datum_type() == DatumType::F32 {
                tensors.insert(name.clone(), t);
            }
        }
        Ok(Values { tensors })
    }
}

/// One sample's captured f32 tensors, by name.
pub struct Values {
    tensors: HashMap<String, Tensor>,
}

impl Values {
    /// A tensor's values, flat in row-major order.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.tensors.get(name).and_then(f32s)
    }

    /// A tensor with its shape.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Every tensor's name and values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[f32])> {
        self.tensors.iter().filter_map(|(n, t)| Some((n.as_str(), f32s(t)?)))
    }
}

/// A float tensor's values, flat in row-major order (none for another type).
pub(super) fn f32s(t: &Tensor) -> Option<&[f32]> {
    t.try_as_plain_ram().ok()?.as_slice::<f32>().ok()
}

/// Loads a model whose extra outputs carry no type information.
fn load_relaxed(m: &ModelProto, facts: &[lepton_runtime::engine::tract::InputFact]) -> Result<SimplePlanRunner> {
    let framework =
        tract_onnx::onnx().with_ignore_output_shapes(true).with_ignore_output_types(true).with_ignore_value_info(true);
    let mut model = framework.model_for_proto_model(m).map_err(|e| anyhow!("{e:#}"))?;
    let names: Vec<String> = model.input_outlets()?.iter().map(|o| model.node(o.node).name.clone()).collect();
    for (ix, name) in names.iter().enumerate() {
        let f = facts.iter().find(|f| &f.name == name).with_context(|| format!("no sample for input `{name}`"))?;
        model.set_input_fact(ix, InferenceFact::dt_shape(f.dtype.unwrap_or(DatumType::F32), f.shape.clone()))?;
    }
    let plan = model.into_optimized().map_err(|e| anyhow!("{e:#}"))?.into_runnable().map_err(|e| anyhow!("{e:#}"))?;
    Ok(SimplePlanRunner { plan })
}

/// A runnable tract plan.
pub struct SimplePlanRunner {
    plan: std::sync::Arc<TypedRunnableModel>,
}

impl SimplePlanRunner {
    fn run_tensors(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let out = self.plan.run(inputs.into_iter().map(|t| t.into_tvalue()).collect()).map_err(|e| anyhow!("{e:#}"))?;
        Ok(out.into_iter().map(|v| v.into_tensor()).collect())
    }
}

/// What calibration found.
pub(super) struct Calibration {
    /// Each float tensor's range (min, max) by the chosen method.
    pub(super) ranges: HashMap<String, (f32, f32)>,
    /// The tensors that are float (the first sample's f32 values): only those are quantized.
    pub(super) float_tensors: HashSet<String>,
}

/// The activation ranges of the float model (`tap`) over `samples` by `method`, and the tensors
/// that are float (the first sample's f32 values: only those are quantized). Pass 1 folds each
/// sample's min/max into the observers, pass 2 (the float model run again) their histograms over
/// the final min/max; each sample's values are dropped once folded.
pub(super) fn calibrate(
    tap: &mut Capture,
    samples: &[Inputs],
    method: Method,
    mut progress: impl FnMut(&str),
) -> Result<Calibration> {
    let n = samples.len();
    let mut observers: HashMap<String, Observer> = HashMap::new();
    // The tensors that are float (the first sample's f32 values): only those are quantized.
    let mut float_tensors: HashSet<String> = HashSet::new();
    for (i, sample) in samples.iter().enumerate() {
        progress(&format!("calibrating: ranges ({}/{n})", i + 1));
        let values = tap.run(sample)?;
        for (name, v) in values.iter() {
            if i == 0 {
                float_tensors.insert(name.to_string());
            }
            observers.entry(name.to_string()).or_default().observe_range(v);
        }
    }
    // Histograms over the final min/max: a second run of the float model.
    for (i, sample) in samples.iter().enumerate() {
        progress(&format!("calibrating: histograms ({}/{n})", i + 1));
        let values = tap.run(sample)?;
        for (name, v) in values.iter() {
            if let Some(o) = observers.get_mut(name) {
                o.observe_histogram(v);
            }
        }
    }
    let ranges: HashMap<String, (f32, f32)> = observers.iter().map(|(k, o)| (k.clone(), o.range(method))).collect();
    Ok(Calibration { ranges, float_tensors })
}
