//! `quantize`: static post-training int8 quantization to standard QDQ ONNX.
//!
//! 1. Prepare: constants become initializers, the opset is raised to 13 (per-channel
//!    `DequantizeLinear`), `BatchNormalization` after `Conv` is folded into its weights.
//! 2. Calibrate: the float model runs on the calibration samples one at a time with every
//!    activation exposed; each sample's values are folded into the observers and dropped (pass 1
//!    min/max, pass 2 histograms over those bounds, the float model run again), so memory does not
//!    grow with the number of samples. Ranges come from the observers (min/max, percentile or
//!    entropy).
//! 3. Rewrite: weights of Conv/ConvTranspose/Gemm/MatMul become int8 (per output channel by
//!    default) behind `DequantizeLinear`, biases int32 at `input_scale × weight_scale`, and every
//!    activation read by a quantized operator gets `QuantizeLinear → DequantizeLinear` (int8,
//!    asymmetric).
//! 4. Measure: float and int8 run side by side on the calibration set, sample by sample: per-layer
//!    and output SQNR from signal and noise energies summed per tensor, and the agreement the
//!    model's task calls for ([`Criterion`]): top-1 for classifiers, matched boxes for detectors.
//!    While the result falls short of the target, the layer that loses most keeps float weights
//!    and activations (mixed precision), and the model is rewritten.

use crate::calibrate::{int8_params, Energy, Method, Observer};
use crate::graph::{self, attr_i};
use crate::samples::Inputs;
use anyhow::{anyhow, bail, Context, Result};
use lepton_runtime::event::{BBox, Detections};
use lepton_runtime::manifest::{Manifest, Task};
use lepton_runtime::onnx::pb::{self, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use lepton_runtime::pipeline::{Postprocess, VisionPostprocess};
use lepton_runtime::vision::Transform;
use serde::Serialize;
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

/// Quantization settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Activation range method.
    pub method: Method,
    /// Weights per output channel (default) or per tensor.
    pub per_channel: bool,
    /// Top-1 agreement with float on the calibration set to reach before stopping (classifiers).
    pub target_agreement: f64,
    /// Box agreement (F1 of matched boxes, [`Criterion::BoxF1`]) to reach before stopping
    /// (detectors).
    pub target_box_f1: f64,
    /// Output SQNR (dB) to reach before stopping (other models).
    pub target_sqnr_db: f64,
    /// Replaces the default target of whichever criterion judges the model: a fraction for top-1
    /// and box agreement, dB for output SQNR.
    pub target: Option<f64>,
    /// Largest share of layers that may stay float.
    pub max_float_share: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            method: Method::Percentile,
            per_channel: true,
            target_agreement: 0.99,
            target_box_f1: 0.95,
            target_sqnr_db: 20.0,
            target: None,
            max_float_share: 0.2,
        }
    }
}

/// What judges the int8 model against float, from the task in the model's manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// Classifiers (task classify, keyword or vad; without a manifest, an output 0 with a single
    /// dimension above 1): the share of samples whose top class is float's.
    Top1,
    /// Detectors (task detect): float and int8 outputs decoded by the runtime's postprocessing at
    /// the manifest's thresholds; an int8 box matches a float box of the same label at IoU ≥ 0.5
    /// (greedy, one-to-one, as `eval` matches); the figure is F1 = 2·matched / (float boxes +
    /// int8 boxes) over the calibration set, 1 when neither finds a box.
    BoxF1,
    /// Everything else: the SQNR of output 0 in dB.
    OutputSqnr,
}

impl Criterion {
    /// How the figure reads in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Criterion::Top1 => "top-1 agreement with float",
            Criterion::BoxF1 => "box agreement with float (F1 of matched boxes)",
            Criterion::OutputSqnr => "output SQNR",
        }
    }

    /// `figure` with its unit: a percentage for agreements, dB for SQNR.
    pub fn format(self, figure: f64) -> String {
        match self {
            Criterion::Top1 | Criterion::BoxF1 => format!("{:.2} %", figure * 100.0),
            Criterion::OutputSqnr => format!("{figure:.1} dB"),
        }
    }
}

/// Detections of the int8 model matched to the float model's over the calibration set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BoxAgreement {
    /// Boxes the float model reports (after the score threshold and NMS).
    pub float_boxes: usize,
    /// Boxes the int8 model reports.
    pub int8_boxes: usize,
    /// Int8 boxes matched one-to-one to a float box of the same label.
    pub matched: usize,
    /// Matched / float boxes (1 when float reports none).
    pub recall: f64,
    /// Matched / int8 boxes (1 when int8 reports none).
    pub precision: f64,
    /// 2·matched / (float + int8 boxes) (1 when neither reports any): the agreement.
    pub f1: f64,
    /// IoU a match needs.
    pub iou: f32,
    /// The manifest's score threshold the boxes were decoded at.
    pub score_threshold: f32,
}

impl BoxAgreement {
    fn new(float_boxes: usize, int8_boxes: usize, matched: usize, score_threshold: f32) -> Self {
        let share = |n: usize, d: usize| if d == 0 { 1.0 } else { n as f64 / d as f64 };
        BoxAgreement {
            float_boxes,
            int8_boxes,
            matched,
            recall: share(matched, float_boxes),
            precision: share(matched, int8_boxes),
            f1: share(2 * matched, float_boxes + int8_boxes),
            iou: crate::eval_detect::IOU_MATCH,
            score_threshold,
        }
    }
}

/// One layer in the report.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Node name.
    pub node: String,
    /// Operator.
    pub op: String,
    /// `int8` or `float`.
    pub precision: String,
    /// SQNR of its output against float (dB), over the calibration set.
    pub sqnr_db: f64,
    /// SQNR lost by this layer: its input's SQNR minus its output's.
    pub loss_db: f64,
}

/// What quantization did and measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Range method.
    pub method: Method,
    /// Per-channel weights.
    pub per_channel: bool,
    /// Calibration samples.
    pub samples: usize,
    /// Layers (weighted operators), in graph order.
    pub layers: Vec<LayerReport>,
    /// Layers kept in float by mixed precision.
    pub float_layers: Vec<String>,
    /// What judged the int8 model.
    pub criterion: Criterion,
    /// Its figure on the calibration set: a fraction for agreements, dB for output SQNR.
    pub figure: f64,
    /// The figure the model had to reach.
    pub target: f64,
    /// Whether it did; when no attempt does, the best attempt is returned all the same.
    pub target_met: bool,
    /// Agreement with the float model on the calibration set: top-1 for classifiers, box F1 for
    /// detectors; none for models judged by output SQNR.
    pub agreement: Option<f64>,
    /// Detectors: the box counts behind the box agreement.
    pub boxes: Option<BoxAgreement>,
    /// SQNR of output 0 against float (dB).
    pub output_sqnr_db: f64,
    /// Activation tensors quantized.
    pub quantized_activations: usize,
    /// Weight tensors quantized.
    pub quantized_weights: usize,
    /// The attempt this model is (1 + layers moved to float).
    pub iterations: usize,
    /// Attempts made in all (the best one is returned).
    pub attempts: usize,
}

/// Quantizes `float` with `samples`; returns the int8 model and the report. When no attempt
/// reaches the target, the best one is returned and its report says so (`target_met`).
pub fn quantize(
    float: &ModelProto,
    samples: &[Inputs],
    settings: &Settings,
    mut progress: impl FnMut(&str),
) -> Result<(ModelProto, Report)> {
    let Some(first) = samples.first() else { bail!("no calibration samples") };
    let shapes: Vec<(String, Vec<usize>)> = first.iter().map(|(n, t)| (n.clone(), t.shape().to_vec())).collect();
    let prepared = prepare(float, &shapes)?;
    let judge = Judge::of(float)?;
    let criterion = judge.criterion();
    let target = match (settings.target, criterion) {
        (Some(t), _) if !t.is_finite() => bail!("the target must be a finite number, not {t}"),
        (Some(t), Criterion::Top1 | Criterion::BoxF1) if t < 0.0 => {
            bail!("an agreement target is a fraction (0.95 for 95 %), not {t}")
        }
        (Some(t), _) => t,
        (None, Criterion::Top1) => settings.target_agreement,
        (None, Criterion::BoxF1) => settings.target_box_f1,
        (None, Criterion::OutputSqnr) => settings.target_sqnr_db,
    };
    let graph = prepared.graph.as_ref().context("no graph")?;
    let consts: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    // Every float tensor computed by the graph (and the graph inputs) is a candidate activation.
    let mut activations: Vec<String> =
        graph.input.iter().map(|i| i.name.clone()).filter(|n| !consts.contains(n)).collect();
    for n in &graph.node {
        activations.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
    }
    // The float model with every activation exposed, run one sample at a time: each sample's
    // values are folded into the observers and dropped.
    let mut float_tap = Capture::new(&prepared, &activations, first)?;
    let n = samples.len();
    let mut observers: HashMap<String, Observer> = HashMap::new();
    // The tensors that are float (the first sample's f32 values): only those are quantized.
    let mut float_tensors: HashSet<String> = HashSet::new();
    for (i, sample) in samples.iter().enumerate() {
        progress(&format!("calibrating: ranges ({}/{n})", i + 1));
        let values = float_tap.run(sample)?;
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
        let values = float_tap.run(sample)?;
        for (name, v) in values.iter() {
            if let Some(o) = observers.get_mut(name) {
                o.observe_histogram(v);
            }
        }
    }
    let ranges: HashMap<String, (f32, f32)> =
        observers.iter().map(|(k, o)| (k.clone(), o.range(settings.method))).collect();
    drop(observers);
    let layers: Vec<(String, String)> = graph
        .node
        .iter()
        .filter(|n| WEIGHTED_OPS.contains(&n.op_type.as_str()))
        .map(|n| (n.name.clone(), n.op_type.clone()))
        .collect();
    let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    if outputs.is_empty() {
        bail!("the model has no output");
    }
    let max_float = ((layers.len() as f64 * settings.max_float_share).floor() as usize).max(1);
    let mut float_layers: Vec<String> = vec![];
    let mut best: Option<(ModelProto, Report, f64)> = None;
    let mut attempts = 0;
    for iteration in 1..=max_float + 1 {
        attempts = iteration;
        let attempt = format!("attempt {iteration}, {} layers in float", float_layers.len());
        progress(&format!("quantizing ({attempt})"));
        let (q, stats) = rewrite(&prepared, &ranges, &float_tensors, &float_layers, settings)?;
        let measured = measure(&mut float_tap, &q, samples, &stats.outputs_of_layers, &outputs, &judge, |i| {
            progress(&format!("measuring ({attempt}): {i}/{n}"))
        })?;
        let figure = match criterion {
            Criterion::Top1 | Criterion::BoxF1 => measured.agreement.unwrap_or(0.0),
            Criterion::OutputSqnr => measured.output_sqnr_db,
        };
        let good = figure >= target;
        let report = Report {
            method: settings.method,
            per_channel: settings.per_channel,
            samples: samples.len(),
            layers: layers
                .iter()
                .map(|(name, op)| {
                    let (sqnr, loss) = measured.layer_sqnr.get(name).copied().unwrap_or((f64::NAN, f64::NAN));
                    LayerReport {
                        node: name.clone(),
                        op: op.clone(),
                        precision: if float_layers.contains(name) { "float".into() } else { "int8".into() },
                        sqnr_db: sqnr,
                        loss_db: loss,
                    }
                })
                .collect(),
            float_layers: float_layers.clone(),
            criterion,
            figure,
            target,
            target_met: good,
            agreement: measured.agreement,
            boxes: measured.boxes,
            output_sqnr_db: measured.output_sqnr_db,
            quantized_activations: stats.activations,
            quantized_weights: stats.weights,
            iterations: iteration,
            attempts: iteration,
        };
        tracing::info!(
            "attempt {iteration}: {} {} (target {}), output SQNR {:.1} dB, float layers {:?}",
            criterion.describe(),
            criterion.format(figure),
            criterion.format(target),
            measured.output_sqnr_db,
            float_layers
        );
        // An attempt that reaches the target beats every one that does not; then agreement, then
        // output SQNR.
        let score = if good { 1e6 } else { 0.0 }
            + measured.agreement.unwrap_or(0.0) * 1000.0
            + measured.output_sqnr_db.min(60.0);
        // Keep the layer that loses the most SQNR in float, and try again.
        let worst = report
            .layers
            .iter()
            .filter(|l| l.precision == "int8" && l.loss_db.is_finite())
            .max_by(|a, b| a.loss_db.total_cmp(&b.loss_db))
            .map(|l| l.node.clone());
        if best.as_ref().is_none_or(|(_, _, s)| score > *s + 1e-9) {
            best = Some((q, report, score));
        }
        if good || float_layers.len() >= max_float {
            break;
        }
        match worst {
            Some(w) => float_layers.push(w),
            None => break,
        }
    }
    let (q, mut report, _) = best.context("no quantization attempt ran")?;
    report.attempts = attempts;
    Ok((q, report))
}

/// How agreement is measured for one model (see [`Criterion`]).
enum Judge {
    Top1,
    /// Detections decoded as the device decodes them, from the manifest.
    Boxes {
        manifest: Box<Manifest>,
        /// The model input's width and height: boxes are compared in input pixels.
        size: (f32, f32),
    },
    Sqnr,
}

impl Judge {
    /// The manifest's task when there is one (classify, keyword, vad: top-1; detect: boxes);
    /// without one, top-1 when output 0 holds class scores (a single dimension above 1, `[1, C]`).
    /// Other outputs (feature maps, regressions) are judged by their SQNR: the argmax of a feature
    /// map or of box coordinates means nothing.
    fn of(model: &ModelProto) -> Result<Judge> {
        let (inputs, outputs) = lepton_runtime::onnx::io_specs(model);
        let path = std::path::Path::new("model");
        if let Ok(Some(m)) = lepton_runtime::onnx::resolve_manifest(model, &inputs, &outputs, path) {
            return Ok(match m.task {
                Task::Classify | Task::Keyword | Task::Vad => Judge::Top1,
                Task::Detect => {
                    let (_, [w, h], _) =
                        m.image_input(path).context("the detector's manifest: boxes are compared in input pixels")?;
                    Judge::Boxes { manifest: Box::new(m), size: (w as f32, h as f32) }
                }
                Task::Raw => Judge::Sqnr,
            });
        }
        let classes = outputs.first().and_then(|o| o.dims.as_ref()).is_some_and(|dims| {
            dims.iter().filter(|d| !matches!(d, lepton_runtime::onnx::Dim::Fixed(0 | 1))).count() == 1
        });
        Ok(if classes { Judge::Top1 } else { Judge::Sqnr })
    }

    fn criterion(&self) -> Criterion {
        match self {
            Judge::Top1 => Criterion::Top1,
            Judge::Boxes { .. } => Criterion::BoxF1,
            Judge::Sqnr => Criterion::OutputSqnr,
        }
    }
}

/// The runtime's detection postprocessing (decode, score threshold, NMS) for one model's outputs.
struct BoxDecoder {
    post: VisionPostprocess,
    transform: Transform,
    score_threshold: f32,
}

impl BoxDecoder {
    /// Sized from one run's graph outputs (`values` must hold every output in `outputs`).
    fn new(manifest: &Manifest, size: (f32, f32), outputs: &[String], values: &Values) -> Result<Self> {
        let infos = outputs
            .iter()
            .map(|name| {
                let t = values.tensor(name).with_context(|| format!("the detector's output `{name}` is not float"))?;
                Ok(lepton_runtime::engine::TensorInfo {
                    name: name.clone(),
                    shape: t.shape().to_vec(),
                    dtype: Some(lepton_runtime::DType::F32),
                    quant: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let path = std::path::Path::new("model");
        let post = VisionPostprocess::from_manifest(manifest, &infos, path)?;
        let score_threshold = manifest.detect_config(path)?.score_threshold;
        Ok(BoxDecoder { post, transform: Transform::identity(size.0, size.1), score_threshold })
    }

    /// The boxes of one run (label, box in input pixels), best score first.
    fn decode(&mut self, outputs: &[String], values: &Values) -> Result<Vec<(u16, BBox)>> {
        let mut views = vec![];
        for name in outputs {
            let t = values.tensor(name).with_context(|| format!("the detector's output `{name}` is not float"))?;
            let data = f32s(t).with_context(|| format!("the detector's output `{name}` is not float"))?;
            views.push(
                lepton_runtime::TensorView::from_f32(t.shape(), data).map_err(|e| anyhow!("output `{name}`: {e}"))?,
            );
        }
        let mut out = Detections::new();
        self.post.postprocess(&views, &self.transform, &mut out)?;
        let mut found: Vec<_> = out.iter().filter_map(|d| d.bbox.map(|b| (d.score, d.class, b))).collect();
        found.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ok(found.into_iter().map(|(_, c, b)| (c, b)).collect())
    }
}

/// Int8 boxes (best first) matched one-to-one to float boxes as `eval` matches detections to
/// ground truth.
fn matched_boxes(float: &[(u16, BBox)], int8: &[(u16, BBox)]) -> usize {
    let mut used = vec![false; float.len()];
    int8.iter().filter(|(c, b)| crate::eval_detect::match_detection(*c, b, float, &mut used)).count()
}

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
fn f32s(t: &Tensor) -> Option<&[f32]> {
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

/// What a rewrite produced.
struct RewriteStats {
    activations: usize,
    weights: usize,
    /// Layer name → (its float output tensor, the dequantized name consumers read, its float input).
    outputs_of_layers: BTreeMap<String, (String, String, String)>,
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

/// Builds the QDQ model for the given ranges, with `float_layers` left in float.
fn rewrite(
    prepared: &ModelProto,
    ranges: &HashMap<String, (f32, f32)>,
    float_tensors: &HashSet<String>,
    float_layers: &[String],
    s: &Settings,
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
                    let (q_inits, w_dq, w_scales) = quantize_weight(w, axis, s.per_channel)?;
                    out_nodes.push(node(
                        "DequantizeLinear",
                        format!("{w_name}_DequantizeLinear"),
                        vec![format!("{w_name}_quantized"), format!("{w_name}_scale"), format!("{w_name}_zero_point")],
                        vec![w_dq.clone()],
                        if s.per_channel { vec![axis_attr(axis)] } else { vec![] },
                    ));
                    new_inits.extend(q_inits);
                    stats.weights += 1;
                    n.input[1] = w_dq;
                    // Bias: int32 at input_scale × weight_scale.
                    if let (Some(b_name), Some((x_scale, _))) =
                        (n.input.get(2).filter(|b| !b.is_empty()).cloned(), x_params)
                    {
                        if let Some(b) = inits.get(&b_name) {
                            let (b_inits, b_dq) = quantize_bias(b, x_scale, &w_scales, s.per_channel)?;
                            out_nodes.push(node(
                                "DequantizeLinear",
                                format!("{b_name}_DequantizeLinear"),
                                vec![
                                    format!("{b_name}_quantized"),
                                    format!("{b_name}_scale"),
                                    format!("{b_name}_zero_point"),
                                ],
                                vec![b_dq.clone()],
                                if s.per_channel { vec![axis_attr(0)] } else { vec![] },
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

/// Measurements of a quantized model against float on the calibration set.
struct Measured {
    layer_sqnr: HashMap<String, (f64, f64)>,
    agreement: Option<f64>,
    boxes: Option<BoxAgreement>,
    output_sqnr_db: f64,
}

/// Signal and noise energy of one layer's output and input; `None` once a sample lacks the
/// tensor in either model (the layer then has no figure, or its input counts as exact).
struct LayerEnergy {
    output: Option<Energy>,
    input: Option<Energy>,
}

/// Adds one sample's pair to `e`, or gives up on it when either value is missing.
fn fold(e: &mut Option<Energy>, exact: Option<&[f32]>, approx: Option<&[f32]>) {
    match (e.as_mut(), exact, approx) {
        (Some(e), Some(x), Some(y)) => e.add(x, y),
        _ => *e = None,
    }
}

/// Runs float (`float_tap`) and `quant` side by side, one sample at a time, and folds per-layer
/// and output energies and the agreement; `layers` maps each quantized layer to (its float
/// output, the dequantized name readers take, its float input); `outputs` are the graph outputs.
fn measure(
    float_tap: &mut Capture,
    quant: &ModelProto,
    samples: &[Inputs],
    layers: &BTreeMap<String, (String, String, String)>,
    outputs: &[String],
    judge: &Judge,
    mut progress: impl FnMut(usize),
) -> Result<Measured> {
    let Some(first) = samples.first() else { bail!("no calibration samples") };
    let output = outputs.first().context("the model has no output")?;
    let mut wanted: Vec<String> =
        layers.values().flat_map(|(_, dq, x)| [dq.clone(), format!("{x}_dequantized")]).collect();
    wanted.extend(outputs.iter().cloned());
    wanted.sort();
    wanted.dedup();
    let mut q_tap = Capture::new(quant, &wanted, first)?;
    let mut energies: BTreeMap<&str, LayerEnergy> = layers
        .keys()
        .map(|l| (l.as_str(), LayerEnergy { output: Some(Energy::default()), input: Some(Energy::default()) }))
        .collect();
    let mut output_energy = Energy::default();
    let (mut same, mut compared) = (0usize, 0usize);
    let (mut float_boxes, mut int8_boxes, mut matched) = (0usize, 0usize, 0usize);
    let mut decoder: Option<BoxDecoder> = None;
    for (i, sample) in samples.iter().enumerate() {
        progress(i + 1);
        let f = float_tap.run(sample)?;
        let q = q_tap.run(sample)?;
        for (layer, (out, out_dq, x)) in layers {
            let Some(e) = energies.get_mut(layer.as_str()) else { continue };
            fold(&mut e.output, f.get(out), q.get(out_dq));
            fold(&mut e.input, f.get(x), q.get(&format!("{x}_dequantized")));
        }
        if let (Some(a), Some(b)) = (f.get(output), q.get(output)) {
            output_energy.add(a, b);
            let top = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
            same += usize::from(top(a) == top(b));
            compared += 1;
        }
        if let Judge::Boxes { manifest, size } = judge {
            let d = match &mut decoder {
                Some(d) => d,
                None => decoder.insert(BoxDecoder::new(manifest, *size, outputs, &f)?),
            };
            let float_found = d.decode(outputs, &f).context("decoding the float model's detections")?;
            let int8_found = d.decode(outputs, &q).context("decoding the int8 model's detections")?;
            float_boxes += float_found.len();
            int8_boxes += int8_found.len();
            matched += matched_boxes(&float_found, &int8_found);
        }
    }
    let mut layer_sqnr = HashMap::new();
    for (layer, e) in energies {
        let Some(out) = e.output else { continue };
        let sqnr_out = out.db();
        let sqnr_in = e.input.map_or(f64::INFINITY, |e| e.db());
        let loss = if sqnr_in.is_infinite() { 60.0f64.min(100.0 - sqnr_out.min(100.0)) } else { sqnr_in - sqnr_out };
        layer_sqnr.insert(layer.to_string(), (sqnr_out, loss));
    }
    let boxes = match judge {
        Judge::Boxes { .. } => Some(BoxAgreement::new(
            float_boxes,
            int8_boxes,
            matched,
            decoder.as_ref().map_or(f32::NAN, |d| d.score_threshold),
        )),
        _ => None,
    };
    let agreement = match judge {
        Judge::Top1 => Some(same as f64 / compared.max(1) as f64),
        Judge::Boxes { .. } => boxes.map(|b| b.f1),
        Judge::Sqnr => None,
    };
    Ok(Measured { layer_sqnr, agreement, boxes, output_sqnr_db: output_energy.db() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x0: f32, y0: f32, x1: f32, y1: f32) -> BBox {
        BBox { x0, y0, x1, y1 }
    }

    #[test]
    fn boxes_match_by_label_and_iou_one_to_one() {
        let float = [(3, b(0.0, 0.0, 10.0, 10.0)), (5, b(20.0, 0.0, 30.0, 10.0))];
        // Same place and label; a shifted box (IoU 0.6); a wrong label; a duplicate of a box
        // already taken; a box far from everything.
        assert_eq!(matched_boxes(&float, &[(3, b(0.0, 0.0, 10.0, 10.0))]), 1);
        assert_eq!(matched_boxes(&float, &[(5, b(22.5, 0.0, 32.5, 10.0))]), 1);
        assert_eq!(matched_boxes(&float, &[(4, b(0.0, 0.0, 10.0, 10.0))]), 0);
        assert_eq!(matched_boxes(&float, &[(3, b(0.0, 0.0, 10.0, 10.0)), (3, b(0.5, 0.0, 10.5, 10.0))]), 1);
        assert_eq!(matched_boxes(&float, &[(3, b(50.0, 50.0, 60.0, 60.0))]), 0);
        // A box moved by half its width overlaps a third: no match.
        assert_eq!(matched_boxes(&float, &[(3, b(5.0, 0.0, 15.0, 10.0))]), 0);
    }

    #[test]
    fn box_agreement_is_f1_of_matched_boxes() {
        let a = BoxAgreement::new(10, 12, 9, 0.4);
        assert_eq!((a.recall, a.precision), (0.9, 0.75));
        assert!((a.f1 - 18.0 / 22.0).abs() < 1e-12, "{}", a.f1);
        // Nothing found by either: nothing to disagree about.
        assert_eq!(BoxAgreement::new(0, 0, 0, 0.4).f1, 1.0);
        // Float found boxes, int8 none.
        let a = BoxAgreement::new(4, 0, 0, 0.4);
        assert_eq!((a.f1, a.recall), (0.0, 0.0));
    }

    #[test]
    fn judges_follow_the_manifest_task() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let judge = |m: &str| {
            let d = lepton_runtime::onnx::OnnxModel::read(&root.join(m).join("model.onnx")).unwrap();
            Judge::of(&d.proto).unwrap().criterion()
        };
        assert_eq!(judge("detector"), Criterion::BoxF1);
        assert_eq!(judge("keywords"), Criterion::Top1);
        assert_eq!(judge("digits"), Criterion::Top1);
    }
}
