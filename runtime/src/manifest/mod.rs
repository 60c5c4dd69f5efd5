//! The model manifest: how to feed a model and read its outputs, as TOML text embedded in the ONNX
//! file (see [`lepton_tract::onnx::MANIFEST_KEY`]), so a model file alone is enough to run it.
//!
//! ```toml
//! task = "classify"            # classify | detect | keyword | vad | raw
//! labels = ["cat", "dog"]
//! [input]
//! layout = "nchw"              # nchw | nhwc (default: read from the model's input shape)
//! size = [224, 224]            # width, height (default: the model's input size)
//! color = "rgb"                # rgb | bgr | gray (default: rgb for 3 channels, gray for 1)
//! mean = [0.485, 0.456, 0.406] # applied after scaling pixels to 0..1
//! std = [0.229, 0.224, 0.225]
//! ```
//!
//! Every key is documented on its struct field below; unknown keys are errors, so a typo is caught
//! when the manifest is packed, not on the device. A manifest is read for a model with
//! [`Manifest::resolve`]: input settings the model's shape implies are filled in, and the rest is
//! checked against the model.
//!
//! Here: the TOML schema (the types and their defaults); the text is read in `parse`, checked
//! and turned into the stages' settings in `config`, resolved against a model in `resolve`, and
//! labels are checked in `labels`.

mod config;
mod labels;
mod parse;
mod resolve;

pub use config::MAX_WAKE_WINDOW;
pub use labels::{check_label, LABEL_REFUSED, MAX_LABEL_CHARS};
pub use parse::toml_error;

use crate::error::LeptonError;
use crate::vision::classify::Scores;
use crate::vision::detect::{BoxEncoding, DetectFormat};
use crate::vision::{ColorOrder, Layout, ResizeMode};
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

impl Task {
    /// The name manifests use (`classify`, `detect`, `keyword`, `vad`, `raw`).
    pub const fn name(self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Detect => "detect",
            Task::Keyword => "keyword",
            Task::Vad => "vad",
            Task::Raw => "raw",
        }
    }

    /// Whether the task takes pictures (classify, detect) rather than audio or tensors.
    pub const fn is_vision(self) -> bool {
        matches!(self, Task::Classify | Task::Detect)
    }

    /// Whether the task takes audio (keyword, vad).
    pub const fn is_audio(self) -> bool {
        matches!(self, Task::Keyword | Task::Vad)
    }
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
    /// microWakeWord decisions (keyword): TFLite Micro's frontend instead of `[audio]`, and
    /// these instead of `[keyword]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_word: Option<WakeWord>,
}

/// `[input]`: how camera frames become the model's image input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    /// Input tensor name; default: the model's first input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `nchw` or `nhwc`; default: read from the model's input shape (`[1, 3, H, W]` is NCHW,
    /// `[1, H, W, 3]` NHWC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// `[width, height]` in pixels; default: the model's input size (required when it is dynamic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<[usize; 2]>,
    /// `rgb`, `bgr` or `gray`; default: `rgb` for a 3-channel input, `gray` for 1 channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<ColorOrder>,
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

/// `[wake_word]`: a microWakeWord model's decision (the `micro` section of its JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WakeWord {
    /// Mean probability to exceed (`probability_cutoff`).
    pub probability_cutoff: f64,
    /// Model runs averaged (`sliding_window_size`).
    pub sliding_window_size: usize,
    /// Milliseconds between feature rows (`feature_step_size`, default 10).
    #[serde(default = "default_feature_step")]
    pub feature_step_ms: u32,
    /// Quiet time after a detection, in ms (default 1000).
    #[serde(default = "default_refractory")]
    pub refractory_ms: u64,
}

fn default_feature_step() -> u32 {
    10
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const DIGITS: &str = r#"
task = "classify"
labels = ["0", "1", "2"]
[input]
layout = "nchw"
size = [16, 16]
color = "gray"
mean = [0.5]
std = [0.5]
"#;

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
}
