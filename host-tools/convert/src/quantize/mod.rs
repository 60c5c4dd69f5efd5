//! `quantize`: static post-training int8 quantization to standard QDQ ONNX. This file holds the
//! entry point ([`quantize`]), its [`Settings`] and [`Report`], and the mixed-precision loop; each
//! step below lives in its own module.
//!
//! 1. Prepare (`prepare.rs`): constants become initializers, the opset is raised to 13 (per-channel
//!    `DequantizeLinear`), `BatchNormalization` after `Conv` is folded into its weights.
//! 2. Calibrate (`calibration.rs`): the float model runs on the calibration samples one at a time with every
//!    activation exposed; each sample's values are folded into the observers and dropped (pass 1
//!    min/max, pass 2 histograms over those bounds, the float model run again), so memory does not
//!    grow with the number of samples. Ranges come from the observers (min/max, percentile or
//!    entropy).
//! 3. Rewrite (`qdq.rs`): weights of Conv/ConvTranspose/Gemm/MatMul become int8 (per output channel by
//!    default) behind `DequantizeLinear`, biases int32 at `input_scale × weight_scale`, and every
//!    activation read by a quantized operator gets `QuantizeLinear → DequantizeLinear` (int8,
//!    asymmetric).
//! 4. Measure (`score.rs`): float and int8 run side by side on the calibration set, sample by sample: per-layer
//!    and output SQNR from signal and noise energies summed per tensor, and the agreement the
//!    model's task calls for ([`Criterion`]): top-1 for classifiers, matched boxes for detectors.
//!    While the result falls short of the target, the layer that loses most keeps float weights
//!    and activations (mixed precision), and the model is rewritten.

mod calibration;
mod prepare;
mod qdq;
mod score;

pub use calibration::{Capture, SimplePlanRunner, Values};
pub use prepare::prepare;
pub use qdq::{ELEMENTWISE_OPS, MIXED_RANGE_RATIO, QUANTIZED_OPS, WEIGHTED_OPS};
pub use score::{BoxAgreement, Criterion};

use self::calibration::{calibrate, Calibration};
use self::qdq::rewrite;
use self::score::{measure, Judge};
use crate::calibrate::Method;
use crate::samples::Inputs;
use anyhow::{bail, Context, Result};
use lepton_runtime::onnx::pb::ModelProto;
use serde::Serialize;
use std::collections::HashSet;

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
    let Calibration { ranges, float_tensors } = calibrate(&mut float_tap, samples, settings.method, &mut progress)?;
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
        let (q, stats) = rewrite(&prepared, &ranges, &float_tensors, &float_layers, settings.per_channel)?;
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
