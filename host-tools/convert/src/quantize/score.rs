//! Scoring: float and int8 run side by side on the calibration set, per-layer and output SQNR, and
//! the agreement the model's task calls for ([`Criterion`]).

use super::calibration::{f32s, Capture, Values};
use crate::calibrate::Energy;
use crate::samples::Inputs;
use anyhow::{anyhow, bail, Context, Result};
use lepton_runtime::event::{BBox, Detections};
use lepton_runtime::manifest::{Manifest, Task};
use lepton_runtime::onnx::pb::ModelProto;
use lepton_runtime::pipeline::{Postprocess, VisionPostprocess};
use lepton_runtime::vision::Transform;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

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

/// How agreement is measured for one model (see [`Criterion`]).
pub(super) enum Judge {
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
    pub(super) fn of(model: &ModelProto) -> Result<Judge> {
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

    pub(super) fn criterion(&self) -> Criterion {
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

/// Measurements of a quantized model against float on the calibration set.
pub(super) struct Measured {
    /// Per quantized layer: (output SQNR in dB, SQNR lost from its input to its output in dB).
    pub(super) layer_sqnr: HashMap<String, (f64, f64)>,
    /// Top-1 or box agreement (none when judged by SQNR).
    pub(super) agreement: Option<f64>,
    /// The matched boxes, for detectors.
    pub(super) boxes: Option<BoxAgreement>,
    /// SQNR of output 0 in dB.
    pub(super) output_sqnr_db: f64,
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
pub(super) fn measure(
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
