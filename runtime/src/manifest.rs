//! The model manifest: how to feed a model and read its outputs, as TOML text embedded in the ONNX
//! file (see [`crate::onnx::MANIFEST_KEY`]), so a model file alone is enough to run it.
//!
//! ```toml
//! task = "classify"            # classify | detect | keyword | vad | raw
//! labels = ["cat", "dog"]
//! [input]
//! layout = "nchw"              # nchw | nhwc
//! size = [224, 224]            # width, height
//! color = "rgb"                # rgb | bgr | gray
//! mean = [0.485, 0.456, 0.406] # applied after scaling pixels to 0..1
//! std = [0.229, 0.224, 0.225]
//! ```
//!
//! Every key is documented on its struct field below; unknown keys are errors, so a typo is caught
//! when the manifest is packed, not on the device.

use crate::audio::{FrontendConfig, KeywordConfig, VadConfig};
use crate::error::{LeptonError, Result};
use crate::onnx::{Dim, TensorSpec};
use crate::vision::classify::Scores;
use crate::vision::detect::{BoxEncoding, DetectConfig, DetectFormat};
use crate::vision::{ColorOrder, Layout, PreprocessConfig, ResizeMode};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What the model does, which selects pre- and post-processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Image classification: top-k labels.
    Classify,
    /// Object detection: labelled boxes.
    Detect,
    /// Keyword spotting on audio features.
    Keyword,
    /// Voice activity detection on audio features.
    Vad,
    /// No pre/post-processing: tensors in, tensors out.
    Raw,
}

/// The manifest (TOML). See the module docs for an example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// What the model does.
    pub task: Task,
    /// Class names, in output order.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Image input description (classify, detect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<ImageInput>,
    /// How to read the outputs.
    #[serde(default)]
    pub output: Output,
    /// Detection decoding (detect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect: Option<Detect>,
    /// Audio frontend (keyword, vad).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Audio>,
    /// Keyword decisions (keyword).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword: Option<Keyword>,
    /// Voice activity decisions (vad).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vad: Option<Vad>,
}

/// `[input]`: how camera frames become the model's image input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    /// Input tensor name; default: the model's first input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `nchw` or `nhwc`.
    pub layout: Layout,
    /// `[width, height]` in pixels.
    pub size: [usize; 2],
    /// `rgb`, `bgr` or `gray`.
    pub color: ColorOrder,
    /// Per-channel mean subtracted after scaling pixels to 0..1 (one value applies to all channels).
    #[serde(default = "default_mean")]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation dividing after the mean (one value applies to all channels).
    #[serde(default = "default_std")]
    pub std: Vec<f32>,
    /// `stretch` (default) or `letterbox`.
    #[serde(default = "default_resize")]
    pub resize: ResizeMode,
    /// Letterbox border value, 0..255 (default 114, as YOLO).
    #[serde(default = "default_pad")]
    pub pad: u8,
}

fn default_mean() -> Vec<f32> {
    vec![0.0]
}
fn default_std() -> Vec<f32> {
    vec![1.0]
}
fn default_resize() -> ResizeMode {
    ResizeMode::Stretch
}
fn default_pad() -> u8 {
    114
}

/// `[output]`: how to read the model's outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// `logits` (softmax applied; default), `probabilities` (used as is) or `sigmoid` (multi-label).
    #[serde(default = "default_scores")]
    pub scores: Scores,
    /// Classes reported per frame by a classifier (default 1).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

impl Default for Output {
    fn default() -> Self {
        Output { scores: default_scores(), top_k: default_top_k() }
    }
}

fn default_scores() -> Scores {
    Scores::Logits
}
fn default_top_k() -> usize {
    1
}

/// `[detect]`: how to decode a detector's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detect {
    /// `yolov5` (`[N, 5+C]`), `yolov8` (`[4+C, N]`) or `ssd` (boxes and scores outputs).
    pub format: DetectFormat,
    /// `cxcywh` (default), `xyxy` or `yxyx`.
    #[serde(default = "default_boxes")]
    pub boxes: BoxEncoding,
    /// Coordinates are fractions of the input size instead of input pixels (default false).
    #[serde(default)]
    pub normalized: bool,
    /// Boxes below this score are discarded before NMS (default 0.25).
    #[serde(default = "default_score_threshold")]
    pub score_threshold: f32,
    /// IoU above which same-class boxes are merged (default 0.45).
    #[serde(default = "default_iou")]
    pub iou_threshold: f32,
    /// Suppress overlaps across classes too: one object per place (default false: per class).
    #[serde(default)]
    pub class_agnostic: bool,
    /// SSD: index of the background class, never reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_class: Option<u16>,
}

fn default_boxes() -> BoxEncoding {
    BoxEncoding::Cxcywh
}
fn default_score_threshold() -> f32 {
    0.25
}
fn default_iou() -> f32 {
    0.45
}

/// `[audio]`: the feature frontend an audio model was trained with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audio {
    /// Samples per second (input audio is resampled to this).
    pub sample_rate: u32,
    /// Samples per analysis window.
    pub window: usize,
    /// Samples between windows.
    pub hop: usize,
    /// FFT length (power of two ≥ window).
    pub fft: usize,
    /// Mel bands.
    pub mels: usize,
    /// MFCC coefficients (0: log-mel features).
    #[serde(default)]
    pub mfcc: usize,
    /// Lowest mel edge in Hz (default 20).
    #[serde(default = "default_fmin")]
    pub fmin: f32,
    /// Highest mel edge in Hz (default sample_rate / 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmax: Option<f32>,
    /// Feature frames in one model input.
    pub frames: usize,
    /// Hops between model runs (default 1: run on every new frame).
    #[serde(default = "default_stride")]
    pub stride: usize,
}

fn default_fmin() -> f32 {
    20.0
}
fn default_stride() -> usize {
    1
}

/// `[keyword]`: turning posteriors into keyword events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyword {
    /// Smoothed score needed to fire (default 0.7).
    #[serde(default = "default_kw_threshold")]
    pub threshold: f32,
    /// Model runs averaged (default 3).
    #[serde(default = "default_smoothing")]
    pub smoothing: usize,
    /// Quiet time after a keyword, in ms (default 1000).
    #[serde(default = "default_refractory")]
    pub refractory_ms: u64,
}

fn default_kw_threshold() -> f32 {
    0.7
}
fn default_smoothing() -> usize {
    3
}
fn default_refractory() -> u64 {
    1000
}

/// `[vad]`: speech start/end hysteresis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vad {
    /// Speech probability to count a run as speech (default 0.6).
    #[serde(default = "default_on")]
    pub on_threshold: f32,
    /// Probability below which a run counts as silence (default 0.4).
    #[serde(default = "default_off")]
    pub off_threshold: f32,
    /// Speech runs needed to start (default 2).
    #[serde(default = "default_min_speech")]
    pub min_speech: u32,
    /// Silent runs needed to end (default 5).
    #[serde(default = "default_hangover")]
    pub hangover: u32,
}

fn default_on() -> f32 {
    0.6
}
fn default_off() -> f32 {
    0.4
}
fn default_min_speech() -> u32 {
    2
}
fn default_hangover() -> u32 {
    5
}

fn field_error(path: &Path, field: &str, reason: impl Into<String>) -> LeptonError {
    LeptonError::Manifest { path: path.to_path_buf(), field: field.into(), reason: reason.into() }
}

impl Manifest {
    /// Parses manifest TOML; `path` names its origin in errors (a `.toml` file or a model).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let m: Manifest = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = match line {
                Some(l) => {
                    let source = text.lines().nth(l - 1).unwrap_or("").trim();
                    format!("line {l} (`{source}`): {}", e.message())
                }
                None => e.message().to_string(),
            };
            LeptonError::ManifestSyntax { path: path.to_path_buf(), message }
        })?;
        m.check(path)?;
        Ok(m)
    }

    /// Reads a manifest from a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LeptonError::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// The manifest as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks the manifest on its own: sections present for the task, values in range.
    pub fn check(&self, path: &Path) -> Result<()> {
        match self.task {
            Task::Classify | Task::Detect => {
                let input = self.input.as_ref().ok_or_else(|| field_error(path, "input", "required for this task"))?;
                self.preprocess_config(path)?;
                if input.size[0] == 0 || input.size[1] == 0 {
                    return Err(field_error(path, "input.size", "width and height must be > 0"));
                }
            }
            Task::Keyword | Task::Vad => {
                self.frontend_config(path)?;
            }
            Task::Raw => {}
        }
        if self.task == Task::Detect {
            let d =
                self.detect.as_ref().ok_or_else(|| field_error(path, "detect", "required for task = \"detect\""))?;
            self.detect_config(path)?;
            if d.format == DetectFormat::Ssd && d.background_class.is_some_and(|b| b as usize >= self.labels.len()) {
                return Err(field_error(path, "detect.background_class", "must index into labels"));
            }
        }
        if self.task == Task::Keyword {
            self.keyword_config(path)?;
        }
        if self.task == Task::Vad {
            self.vad_config(path)?;
        }
        if matches!(self.task, Task::Classify | Task::Detect | Task::Keyword) && self.labels.is_empty() {
            return Err(field_error(path, "labels", "required for this task"));
        }
        if self.output.top_k == 0 || self.output.top_k > crate::event::MAX_DETECTIONS {
            return Err(field_error(path, "output.top_k", format!("must be 1..={}", crate::event::MAX_DETECTIONS)));
        }
        Ok(())
    }

    /// Preprocessing settings for image tasks.
    pub fn preprocess_config(&self, path: &Path) -> Result<PreprocessConfig> {
        let i = self.input.as_ref().ok_or_else(|| field_error(path, "input", "missing"))?;
        let c = i.color.channels();
        let per_channel = |v: &[f32], name: &str| -> Result<[f32; 3]> {
            match v.len() {
                1 => Ok([v[0]; 3]),
                n if n == c => {
                    let mut a = [v[0]; 3];
                    a[..c].copy_from_slice(v);
                    Ok(a)
                }
                n => Err(field_error(
                    path,
                    name,
                    format!("has {n} values; give 1 or {c} (one per channel of `{:?}`)", i.color),
                )),
            }
        };
        let cfg = PreprocessConfig {
            width: i.size[0],
            height: i.size[1],
            color: i.color,
            layout: i.layout,
            mean: per_channel(&i.mean, "input.mean")?,
            std: per_channel(&i.std, "input.std")?,
            resize: i.resize,
            pad: i.pad,
        };
        cfg.validate().map_err(|e| match e {
            crate::Error::InvalidConfig(f) => field_error(path, f, "out of range (std must be > 0, values finite)"),
            other => LeptonError::core(path.display().to_string(), other),
        })?;
        Ok(cfg)
    }

    /// Detection decoder settings.
    pub fn detect_config(&self, path: &Path) -> Result<DetectConfig> {
        let d = self.detect.as_ref().ok_or_else(|| field_error(path, "detect", "missing"))?;
        let i = self.input.as_ref().ok_or_else(|| field_error(path, "input", "missing"))?;
        for (v, name) in [(d.score_threshold, "detect.score_threshold"), (d.iou_threshold, "detect.iou_threshold")] {
            if !(0.0..=1.0).contains(&v) {
                return Err(field_error(path, name, "must be within 0..=1"));
            }
        }
        Ok(DetectConfig {
            boxes: d.boxes,
            normalized: d.normalized,
            input_width: i.size[0] as f32,
            input_height: i.size[1] as f32,
            score_threshold: d.score_threshold,
            iou_threshold: d.iou_threshold,
            class_agnostic: d.class_agnostic,
            background_class: d.background_class,
        })
    }

    /// Audio frontend settings.
    pub fn frontend_config(&self, path: &Path) -> Result<FrontendConfig> {
        let a = self.audio.as_ref().ok_or_else(|| field_error(path, "audio", "required for audio tasks"))?;
        let cfg = FrontendConfig {
            sample_rate: a.sample_rate,
            window: a.window,
            hop: a.hop,
            fft: a.fft,
            mels: a.mels,
            mfcc: a.mfcc,
            fmin: a.fmin,
            fmax: a.fmax.unwrap_or(a.sample_rate as f32 / 2.0),
        };
        cfg.validate(2048, 128).map_err(|e| match e {
            crate::Error::InvalidConfig(f) => field_error(path, f, "out of range (see the [audio] docs: fft a power of two 16..=2048 ≥ window, mels ≤ 128, mfcc ≤ mels, fmax ≤ sample_rate/2)"),
            other => LeptonError::core(path.display().to_string(), other),
        })?;
        if a.frames == 0 {
            return Err(field_error(path, "audio.frames", "must be > 0"));
        }
        if a.stride == 0 {
            return Err(field_error(path, "audio.stride", "must be > 0"));
        }
        Ok(cfg)
    }

    /// Keyword decision settings; classes whose label starts with `_` are background.
    pub fn keyword_config(&self, path: &Path) -> Result<KeywordConfig> {
        let k = self.keyword.clone().unwrap_or(Keyword {
            threshold: default_kw_threshold(),
            smoothing: default_smoothing(),
            refractory_ms: default_refractory(),
        });
        if !(0.0..=1.0).contains(&k.threshold) {
            return Err(field_error(path, "keyword.threshold", "must be within 0..=1"));
        }
        if k.smoothing == 0 || k.smoothing > 32 {
            return Err(field_error(path, "keyword.smoothing", "must be 1..=32"));
        }
        if self.labels.len() > 64 {
            return Err(field_error(path, "labels", "a keyword model has at most 64 labels"));
        }
        let background =
            self.labels.iter().enumerate().filter(|(_, l)| l.starts_with('_')).fold(0u64, |m, (i, _)| m | 1 << i);
        Ok(KeywordConfig { threshold: k.threshold, smoothing: k.smoothing, refractory_ms: k.refractory_ms, background })
    }

    /// VAD settings; the speech class is the label `speech` if present, else the last class.
    pub fn vad_config(&self, path: &Path) -> Result<VadConfig> {
        let v = self.vad.clone().unwrap_or(Vad {
            on_threshold: default_on(),
            off_threshold: default_off(),
            min_speech: default_min_speech(),
            hangover: default_hangover(),
        });
        if !(0.0..=1.0).contains(&v.on_threshold) {
            return Err(field_error(path, "vad.on_threshold", "must be within 0..=1"));
        }
        if !(0.0..=v.on_threshold).contains(&v.off_threshold) {
            return Err(field_error(path, "vad.off_threshold", "must be within 0..=on_threshold"));
        }
        let class = self.labels.iter().position(|l| l == "speech").unwrap_or(self.labels.len().saturating_sub(1));
        Ok(VadConfig {
            on_threshold: v.on_threshold,
            off_threshold: v.off_threshold,
            min_speech: v.min_speech,
            hangover: v.hangover,
            class: class as u16,
        })
    }

    /// The input shape the manifest implies for image tasks: `[1, C, H, W]` or `[1, H, W, C]`.
    pub fn image_input_shape(&self) -> Option<[usize; 4]> {
        let i = self.input.as_ref()?;
        let (w, h, c) = (i.size[0], i.size[1], i.color.channels());
        Some(match i.layout {
            Layout::Nchw => [1, c, h, w],
            Layout::Nhwc => [1, h, w, c],
        })
    }

    /// Checks the manifest against the model's declared inputs and outputs: input rank and size,
    /// layout, label count against the output size. Errors name the manifest field.
    pub fn validate_against(&self, inputs: &[TensorSpec], outputs: &[TensorSpec], path: &Path) -> Result<()> {
        let fixed = |d: &Dim| {
            if let Dim::Fixed(n) = d {
                Some(*n)
            } else {
                None
            }
        };
        if let (Some(expected), Some(input)) = (self.image_input_shape(), self.input.as_ref()) {
            let spec = match &input.name {
                Some(n) => inputs.iter().find(|s| &s.name == n).ok_or_else(|| {
                    field_error(path, "input.name", format!("the model has no input `{n}` (inputs: {})", names(inputs)))
                })?,
                None => inputs.first().ok_or_else(|| field_error(path, "input", "the model has no inputs"))?,
            };
            if let Some(dims) = &spec.dims {
                if dims.len() != 4 {
                    return Err(field_error(
                        path,
                        "input",
                        format!(
                            "describes an image (rank 4) but input `{}` has rank {} ({})",
                            spec.name,
                            dims.len(),
                            spec.shape_text()
                        ),
                    ));
                }
                let axis_names = match input.layout {
                    Layout::Nchw => {
                        ["batch", "channels (input.color)", "height (input.size[1])", "width (input.size[0])"]
                    }
                    Layout::Nhwc => {
                        ["batch", "height (input.size[1])", "width (input.size[0])", "channels (input.color)"]
                    }
                };
                for (axis, (d, want)) in dims.iter().zip(expected).enumerate().skip(1) {
                    if let Some(n) = fixed(d) {
                        if n != want {
                            let field = if axis_names[axis].starts_with("channels") {
                                "input.color"
                            } else if matches!((input.layout, axis), (Layout::Nchw, 1) | (Layout::Nhwc, 3)) {
                                "input.layout"
                            } else {
                                "input.size"
                            };
                            return Err(field_error(
                                path,
                                field,
                                format!(
                                    "implies {} = {want}, but input `{}` is {} (layout {:?})",
                                    axis_names[axis],
                                    spec.name,
                                    spec.shape_text(),
                                    input.layout
                                ),
                            ));
                        }
                    }
                }
            }
        }
        let out_last = |o: &TensorSpec| o.dims.as_ref().and_then(|d| d.last()).and_then(fixed);
        match self.task {
            Task::Classify | Task::Keyword | Task::Vad if !self.labels.is_empty() => {
                if let Some(n) = outputs.first().and_then(out_last) {
                    if n != self.labels.len() {
                        return Err(field_error(
                            path,
                            "labels",
                            format!(
                                "has {} entries but output `{}` has {n} classes",
                                self.labels.len(),
                                outputs[0].name
                            ),
                        ));
                    }
                }
            }
            Task::Detect => {
                let d = self.detect.as_ref().ok_or_else(|| field_error(path, "detect", "missing"))?;
                let c = self.labels.len();
                let first = outputs.first().ok_or_else(|| field_error(path, "detect", "the model has no outputs"))?;
                let dims: Vec<Option<usize>> = first.dims.iter().flatten().map(fixed).collect();
                let (axis_value, want, what) = match d.format {
                    DetectFormat::Yolov5 => (dims.last().copied().flatten(), 5 + c, "5 + labels (last axis)"),
                    DetectFormat::Yolov8 => {
                        (dims.get(dims.len().wrapping_sub(2)).copied().flatten(), 4 + c, "4 + labels (axis -2)")
                    }
                    DetectFormat::Ssd => {
                        let scores = outputs.get(1).ok_or_else(|| {
                            field_error(path, "detect.format", "ssd needs two outputs (boxes, scores)")
                        })?;
                        (out_last(scores), c, "labels (scores' last axis)")
                    }
                };
                if let Some(v) = axis_value {
                    if v != want {
                        return Err(field_error(
                            path,
                            "labels",
                            format!(
                                "has {c} entries, so output `{}` should have {what} = {want}, but it has {v} ({})",
                                first.name,
                                first.shape_text()
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn names(specs: &[TensorSpec]) -> String {
    specs.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGITS: &str = r#"
task = "classify"
labels = ["0", "1", "2"]
[input]
layout = "nchw"
size = [16, 16]
color = "gray"
mean = [0.5]
std = [0.5]
"#;

    fn spec(name: &str, dims: &[usize]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            elem_type: "FLOAT".into(),
            dims: Some(dims.iter().map(|&d| Dim::Fixed(d)).collect()),
        }
    }

    #[test]
    fn parses_the_documented_example_and_fills_defaults() {
        let m = Manifest::from_toml(DIGITS, Path::new("m.toml")).unwrap();
        assert_eq!(m.task, Task::Classify);
        let p = m.preprocess_config(Path::new("m.toml")).unwrap();
        assert_eq!((p.width, p.height, p.resize, p.mean[0], p.std[0]), (16, 16, ResizeMode::Stretch, 0.5, 0.5));
        assert_eq!(m.output.top_k, 1);
        assert_eq!(m.image_input_shape(), Some([1, 1, 16, 16]));
        let again = Manifest::from_toml(&m.to_toml(), Path::new("x")).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_field() {
        let err = Manifest::from_toml(&DIGITS.replace("std =", "sdt ="), Path::new("m.toml")).unwrap_err().to_string();
        assert!(err.contains("sdt") && err.contains("line"), "{err}");
        let err =
            Manifest::from_toml(&DIGITS.replace("[0.5]\nstd", "[0.5, 0.1]\nstd"), Path::new("m.toml")).unwrap_err();
        assert!(err.to_string().contains("input.mean"), "{err}");
        let err = Manifest::from_toml(&DIGITS.replace("std = [0.5]", "std = [0.0]"), Path::new("m.toml")).unwrap_err();
        assert!(err.to_string().contains("input.std"), "{err}");
        let err = Manifest::from_toml(
            "task = \"detect\"\nlabels=[\"a\"]\n[input]\nlayout=\"nchw\"\nsize=[8,8]\ncolor=\"rgb\"",
            Path::new("d.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`detect`"), "{err}");
    }

    #[test]
    fn disagreements_with_the_model_name_the_field() {
        let m = Manifest::from_toml(DIGITS, Path::new("m.toml")).unwrap();
        let p = Path::new("model.onnx");
        m.validate_against(&[spec("image", &[1, 1, 16, 16])], &[spec("logits", &[1, 3])], p).unwrap();
        let e = m.validate_against(&[spec("image", &[1, 1, 28, 28])], &[spec("logits", &[1, 3])], p).unwrap_err();
        assert!(e.to_string().contains("input.size"), "{e}");
        let e = m.validate_against(&[spec("image", &[1, 3, 16, 16])], &[spec("logits", &[1, 3])], p).unwrap_err();
        assert!(e.to_string().contains("input.color"), "{e}");
        let e = m.validate_against(&[spec("image", &[1, 16, 16])], &[spec("logits", &[1, 3])], p).unwrap_err();
        assert!(e.to_string().contains("rank 3"), "{e}");
        let e = m.validate_against(&[spec("image", &[1, 1, 16, 16])], &[spec("logits", &[1, 10])], p).unwrap_err();
        assert!(e.to_string().contains("`labels`") && e.to_string().contains("10 classes"), "{e}");
        // Symbolic dimensions are accepted.
        let sym = TensorSpec {
            name: "image".into(),
            elem_type: "FLOAT".into(),
            dims: Some(vec![Dim::Symbol("N".into()), Dim::Fixed(1), Dim::Unknown, Dim::Unknown]),
        };
        m.validate_against(&[sym], &[spec("logits", &[1, 3])], p).unwrap();
    }

    #[test]
    fn detect_label_count_is_checked_against_the_output_layout() {
        let text = "task = \"detect\"\nlabels=[\"a\",\"b\"]\n[input]\nlayout=\"nchw\"\nsize=[64,64]\ncolor=\"rgb\"\n[detect]\nformat=\"yolov8\"";
        let m = Manifest::from_toml(text, Path::new("d.toml")).unwrap();
        let inputs = [spec("images", &[1, 3, 64, 64])];
        m.validate_against(&inputs, &[spec("out", &[1, 6, 84])], Path::new("d.onnx")).unwrap();
        let e = m.validate_against(&inputs, &[spec("out", &[1, 84, 6])], Path::new("d.onnx")).unwrap_err();
        assert!(e.to_string().contains("4 + labels"), "{e}");
    }
}
