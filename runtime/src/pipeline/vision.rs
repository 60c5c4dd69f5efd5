//! Vision stages for the pipeline: the core's preprocessing writing into an engine input, and
//! classification or detection postprocessing of engine outputs. Scratch buffers for dequantizing
//! integer outputs are sized once, from the engine's output shapes.

use super::{Postprocess, Preprocess};
use crate::engine::TensorInfo;
use crate::error::{LeptonError, Result};
use crate::event::Detections;
use crate::manifest::{Manifest, Task};
use crate::source::Frame;
use crate::tensor::{Quantization, TensorDataMut, TensorView, TensorViewMut};
use crate::vision::classify::{top_k, Scores};
use crate::vision::detect::{Decoder, DetectFormat, RawDetections};
use crate::vision::preprocess::{preprocess, InputBuffer};
use crate::vision::{PreprocessConfig, Transform};
use std::path::Path;

/// Boxes kept for NMS per frame (best scores win beyond this).
pub const MAX_CANDIDATES: usize = 512;

/// Image preprocessing into the engine's input 0.
#[derive(Debug, Clone)]
pub struct VisionPreprocess {
    cfg: PreprocessConfig,
}

impl VisionPreprocess {
    /// Preprocessing with the given settings.
    pub fn new(cfg: PreprocessConfig) -> Self {
        VisionPreprocess { cfg }
    }
}

impl Preprocess for VisionPreprocess {
    fn preprocess(&mut self, frame: &Frame<'_>, input: TensorViewMut<'_>) -> Result<Transform> {
        let (_, data, quant) = input.into_parts();
        let (scale, zero_point) = match quant {
            Quantization::PerTensor { scale, zero_point } => (scale, zero_point),
            _ => (1.0, 0),
        };
        let buf = match data {
            TensorDataMut::F32(d) => InputBuffer::F32(d),
            TensorDataMut::I8(data) => InputBuffer::I8 { data, scale, zero_point },
            TensorDataMut::U8(data) => InputBuffer::U8 { data, scale, zero_point },
            TensorDataMut::I32(_) => {
                return Err(LeptonError::Tensor {
                    tensor: "input 0".into(),
                    reason: "an i32 input cannot take an image".into(),
                })
            }
        };
        preprocess(&frame.image, &self.cfg, buf).map_err(|e| {
            LeptonError::core(
                format!("preprocessing frame {} ({})", frame.meta.frame, frame.name.unwrap_or("camera")),
                e,
            )
        })
    }
}

/// Classification or detection postprocessing.
#[derive(Debug)]
pub enum VisionPostprocess {
    /// Top-k classes of output 0.
    Classify {
        /// How to read the scores.
        scores: Scores,
        /// Classes to report.
        top_k: usize,
        /// Scratch for dequantized scores.
        scratch: Vec<f32>,
    },
    /// Decoded, suppressed boxes.
    Detect {
        /// The decoder with its candidate buffer.
        decoder: Box<Decoder<MAX_CANDIDATES>>,
        /// Output layout.
        format: DetectFormat,
        /// Number of classes.
        classes: usize,
        /// Scratch for dequantized outputs (one per output used).
        scratch: [Vec<f32>; 2],
        /// Candidates dropped over the run because more boxes passed the threshold than fit.
        overflowed: u64,
    },
}

impl VisionPostprocess {
    /// Postprocessing for a manifest's task, with scratch sized for `outputs`.
    pub fn from_manifest(m: &Manifest, outputs: &[TensorInfo], path: &Path) -> Result<Self> {
        let volume = |i: usize| outputs.get(i).map_or(0, |o| o.shape.iter().product::<usize>());
        match m.task {
            Task::Classify => {
                let n = volume(0);
                if n != m.labels.len() {
                    return Err(LeptonError::Manifest {
                        path: path.to_path_buf(),
                        field: "labels".into(),
                        reason: format!("has {} entries but the model outputs {n} scores", m.labels.len()),
                    });
                }
                Ok(VisionPostprocess::Classify {
                    scores: m.output.scores,
                    top_k: m.output.top_k,
                    scratch: vec![0.0; n],
                })
            }
            Task::Detect => {
                let cfg = m.detect_config(path)?;
                let d = m.detect.as_ref().map_or(DetectFormat::Yolov8, |d| d.format);
                let needed = if d == DetectFormat::Ssd { 2 } else { 1 };
                if outputs.len() < needed {
                    return Err(LeptonError::Manifest {
                        path: path.to_path_buf(),
                        field: "detect.format".into(),
                        reason: format!(
                            "{} needs {needed} outputs, the model has {}",
                            format!("{d:?}").to_lowercase(),
                            outputs.len()
                        ),
                    });
                }
                let decoder = Decoder::new(cfg).map_err(|e| LeptonError::core(path.display().to_string(), e))?;
                Ok(VisionPostprocess::Detect {
                    decoder: Box::new(decoder),
                    format: d,
                    classes: m.labels.len(),
                    scratch: [vec![0.0; volume(0)], vec![0.0; if needed == 2 { volume(1) } else { 0 }]],
                    overflowed: 0,
                })
            }
            other => Err(LeptonError::Manifest {
                path: path.to_path_buf(),
                field: "task".into(),
                reason: format!("{} is not an image task", other.name()),
            }),
        }
    }
}

impl VisionPostprocess {
    /// Sets a detector's score threshold; classifiers have none (an error).
    pub fn set_score_threshold(&mut self, threshold: f32) -> Result<()> {
        match self {
            VisionPostprocess::Detect { decoder, .. } => {
                decoder.set_score_threshold(threshold).map_err(|e| LeptonError::core("score threshold", e))
            }
            VisionPostprocess::Classify { .. } => {
                Err(LeptonError::core("score threshold", crate::error::Error::InvalidConfig("detect.score_threshold")))
            }
        }
    }
}

/// The output as f32: borrowed when it already is, else dequantized into `scratch`.
fn as_f32<'a>(t: &TensorView<'a>, scratch: &'a mut [f32]) -> Result<&'a [f32]> {
    if let crate::tensor::TensorData::F32(d) = t.data() {
        return Ok(d);
    }
    t.dequantize_into(scratch).map_err(|e| LeptonError::core("dequantizing output", e))?;
    Ok(scratch)
}

impl Postprocess for VisionPostprocess {
    fn postprocess(&mut self, outputs: &[TensorView<'_>], transform: &Transform, out: &mut Detections) -> Result<()> {
        let missing =
            || LeptonError::Tensor { tensor: "output 0".into(), reason: "the model produced no output".into() };
        match self {
            VisionPostprocess::Classify { scores, top_k: k, scratch } => {
                let t = outputs.first().ok_or_else(missing)?;
                let s = as_f32(t, scratch)?;
                top_k(s, *scores, 0.0, out);
                out.truncate(*k);
            }
            VisionPostprocess::Detect { decoder, format, classes, scratch, overflowed } => {
                let [s0, s1] = scratch;
                let t0 = outputs.first().ok_or_else(missing)?;
                let d0 = as_f32(t0, s0)?;
                let raw = match format {
                    DetectFormat::Yolov5 => RawDetections::Yolov5 { data: d0, classes: *classes },
                    DetectFormat::Yolov8 => RawDetections::Yolov8 { data: d0, classes: *classes },
                    DetectFormat::Ssd => {
                        let t1 = outputs.get(1).ok_or_else(missing)?;
                        RawDetections::Ssd { boxes: d0, scores: as_f32(t1, s1)?, classes: *classes }
                    }
                };
                let stats = decoder.decode(raw, transform, out).map_err(|e| LeptonError::Tensor {
                    tensor: "output 0".into(),
                    reason: format!("does not match detect.format: {e}"),
                })?;
                *overflowed += (stats.overflowed + stats.truncated) as u64;
            }
        }
        Ok(())
    }
}
