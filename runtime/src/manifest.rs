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

use crate::audio::{FrontendConfig, KeywordConfig, VadConfig};
use crate::error::{LeptonError, Result};
use crate::vision::classify::Scores;
use crate::vision::detect::{BoxEncoding, DetectConfig, DetectFormat};
use crate::vision::{ColorOrder, Layout, PreprocessConfig, ResizeMode};
use lepton_tract::onnx::{Dim, TensorSpec};
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

/// A TOML error as `line N (`the line`): message`. The parser places an unknown key at its
/// table's header; the line shown is the key's own (the first `key =` after that point).
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else { return e.message().to_string() };
    let start = span.start.min(text.len());
    let mut line = text[..start].matches('\n').count() + 1;
    let message = e.message();
    if let Some(key) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
        let assigns = |l: &str| {
            let l = l.trim_start();
            l.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
                || l.strip_prefix(&format!("\"{key}\"")).is_some_and(|rest| rest.trim_start().starts_with('='))
        };
        if let Some(k) = text.lines().enumerate().skip(line - 1).find(|(_, l)| assigns(l)).map(|(k, _)| k) {
            line = k + 1;
        }
    }
    let source = text.lines().nth(line - 1).unwrap_or("").trim();
    format!("line {line} (`{source}`): {message}")
}

/// The longest label, in characters.
pub const MAX_LABEL_CHARS: usize = 64;

/// ASCII punctuation a label may not hold: MQTT topic levels and wildcards (`/`, `+`, `#`), and
/// markup and quoting (`<`, `>`, `"`, `` ` ``, `\\`).
pub const LABEL_REFUSED: &str = "/+#<>\"`\\";

/// Whether `c` is invisible or not text: format characters (soft hyphen, zero-width and
/// direction marks, bidirectional overrides, BOM, tags), private use and noncharacters.
fn invisible(c: char) -> bool {
    let u = c as u32;
    matches!(
        u,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xE000..=0xF8FF
            | 0xFDD0..=0xFDEF
            | 0xE0000..=0xE007F
            | 0xF0000..
    ) || u & 0xFFFE == 0xFFFE
}

/// Checks one label: 1 to [`MAX_LABEL_CHARS`] characters; ASCII letters, digits, the space and
/// ASCII punctuation other than [`LABEL_REFUSED`], and any other character that is printed
/// (letters and marks of any script, symbols) but no control, other space or line separator,
/// or invisible formatting character; no leading or trailing space. So a label is plain text,
/// safe as an MQTT topic level and in Home Assistant entities. The reason names the character.
pub fn check_label(label: &str) -> core::result::Result<(), String> {
    let n = label.chars().count();
    if n == 0 {
        return Err("is empty: give every class a name".into());
    }
    if n > MAX_LABEL_CHARS {
        return Err(format!("{label:?} has {n} characters; at most {MAX_LABEL_CHARS}"));
    }
    if label.starts_with(' ') || label.ends_with(' ') {
        return Err(format!("{label:?} starts or ends with a space"));
    }
    let allowed = |c: char| {
        if c.is_ascii() {
            c.is_ascii_alphanumeric() || c == ' ' || (c.is_ascii_punctuation() && !LABEL_REFUSED.contains(c))
        } else {
            !(c.is_control() || c.is_whitespace() || invisible(c))
        }
    };
    if let Some((at, c)) = label.chars().enumerate().find(|&(_, c)| !allowed(c)) {
        return Err(format!(
            "{label:?} has {c:?} (character {}): a label holds letters, digits, spaces and ASCII punctuation except {}",
            at + 1,
            LABEL_REFUSED.chars().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(" ")
        ));
    }
    Ok(())
}

fn field_error(path: &Path, field: &str, reason: impl Into<String>) -> LeptonError {
    LeptonError::Manifest { path: path.to_path_buf(), field: field.into(), reason: reason.into() }
}

/// Checks a detector's score and IoU thresholds (within 0..=1).
fn detect_thresholds(d: &Detect, path: &Path) -> Result<()> {
    for (v, name) in [(d.score_threshold, "detect.score_threshold"), (d.iou_threshold, "detect.iou_threshold")] {
        if !(0.0..=1.0).contains(&v) {
            return Err(field_error(path, name, "must be within 0..=1"));
        }
    }
    Ok(())
}

/// A mean or std list as three per-channel values: one value applies to every channel, else one
/// per channel of `color` (1 or 3 values when the color is not known yet).
fn per_channel(
    v: &[f32],
    channels: Option<usize>,
    color: Option<ColorOrder>,
    field: &str,
    path: &Path,
) -> Result<[f32; 3]> {
    let fits = match channels {
        Some(c) => v.len() == 1 || v.len() == c,
        None => v.len() == 1 || v.len() == 3,
    };
    if !fits {
        let reason = match (channels, color) {
            (Some(1), Some(c)) => format!("has {} values, but `{}` is one channel: give one value", v.len(), c.name()),
            (Some(n), Some(c)) => {
                format!("has {} values; give one, or {n} (one per channel of `{}`)", v.len(), c.name())
            }
            _ => format!("has {} values; give one, or one per channel", v.len()),
        };
        return Err(field_error(path, field, reason));
    }
    let mut a = [v[0]; 3];
    if v.len() > 1 {
        a[..v.len()].copy_from_slice(v);
    }
    Ok(a)
}

impl Manifest {
    /// Parses manifest TOML; `path` names its origin in errors (a `.toml` file or a model).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let m: Manifest = toml::from_str(text)
            .map_err(|e| LeptonError::ManifestSyntax { path: path.to_path_buf(), message: toml_error(text, &e) })?;
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

    /// Checks the manifest on its own: labels (see [`check_label`]), sections present for the
    /// task, values in range.
    pub fn check(&self, path: &Path) -> Result<()> {
        for (k, label) in self.labels.iter().enumerate() {
            check_label(label).map_err(|reason| field_error(path, &format!("labels[{k}]"), reason))?;
        }
        match self.task {
            Task::Classify | Task::Detect => {
                let input = self.input.as_ref().ok_or_else(|| field_error(path, "input", "required for this task"))?;
                if input.size.is_some_and(|[w, h]| w == 0 || h == 0) {
                    return Err(field_error(path, "input.size", "width and height must be > 0"));
                }
                let channels = input.color.map(ColorOrder::channels);
                per_channel(&input.mean, channels, input.color, "input.mean", path)?;
                per_channel(&input.std, channels, input.color, "input.std", path)?;
                if input.layout.is_some() && input.size.is_some() && input.color.is_some() {
                    self.preprocess_config(path)?;
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
            if self.image_input(path).is_ok() {
                self.detect_config(path)?;
            } else {
                // Layout, size or color left to the model: `complete` reads them from it.
                detect_thresholds(d, path)?;
            }
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

    /// The image input's layout, size and color: as written, or as [`resolve`](Self::resolve)
    /// filled them in from the model.
    pub fn image_input(&self, path: &Path) -> Result<(Layout, [usize; 2], ColorOrder)> {
        let i = self.input.as_ref().ok_or_else(|| field_error(path, "input", "missing"))?;
        let unset = |f: &str| field_error(path, f, "not set, and no model to read it from");
        Ok((
            i.layout.ok_or_else(|| unset("input.layout"))?,
            i.size.ok_or_else(|| unset("input.size"))?,
            i.color.ok_or_else(|| unset("input.color"))?,
        ))
    }

    /// Preprocessing settings for image tasks.
    pub fn preprocess_config(&self, path: &Path) -> Result<PreprocessConfig> {
        let i = self.input.as_ref().ok_or_else(|| field_error(path, "input", "missing"))?;
        let (layout, [width, height], color) = self.image_input(path)?;
        let cfg = PreprocessConfig {
            width,
            height,
            color,
            layout,
            mean: per_channel(&i.mean, Some(color.channels()), Some(color), "input.mean", path)?,
            std: per_channel(&i.std, Some(color.channels()), Some(color), "input.std", path)?,
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
        detect_thresholds(d, path)?;
        let (_, [width, height], _) = self.image_input(path)?;
        Ok(DetectConfig {
            boxes: d.boxes,
            normalized: d.normalized,
            input_width: width as f32,
            input_height: height as f32,
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

    /// A VAD's speech class: the label `speech` if present, else the last class.
    fn speech_class(&self) -> usize {
        self.labels.iter().position(|l| l == "speech").unwrap_or(self.labels.len().saturating_sub(1))
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
        let class = self.speech_class();
        Ok(VadConfig {
            on_threshold: v.on_threshold,
            off_threshold: v.off_threshold,
            min_speech: v.min_speech,
            hangover: v.hangover,
            class: class as u16,
        })
    }

    /// The labels that can produce events: a keyword model's words (not its `_background_`
    /// classes, which are never reported), a VAD's speech class, every label of an image model.
    pub fn event_labels(&self) -> Vec<&str> {
        match self.task {
            Task::Keyword => self.labels.iter().filter(|l| !l.starts_with('_')).map(String::as_str).collect(),
            Task::Vad => self.labels.get(self.speech_class()).map(String::as_str).into_iter().collect(),
            _ => self.labels.iter().map(String::as_str).collect(),
        }
    }

    /// The input shape the manifest implies for image tasks: `[1, C, H, W]` or `[1, H, W, C]`.
    pub fn image_input_shape(&self) -> Option<[usize; 4]> {
        let i = self.input.as_ref()?;
        let ([w, h], c) = (i.size?, i.color?.channels());
        Some(match i.layout? {
            Layout::Nchw => [1, c, h, w],
            Layout::Nhwc => [1, h, w, c],
        })
    }

    /// The manifest for a model: input settings left out are read from the model's declared input
    /// (layout and size from its shape, color from its channels), then everything is checked
    /// against the model's inputs and outputs ([`validate_against`](Self::validate_against)).
    pub fn resolve(mut self, inputs: &[TensorSpec], outputs: &[TensorSpec], path: &Path) -> Result<Self> {
        self.complete(inputs, path)?;
        self.validate_against(inputs, outputs, path)?;
        Ok(self)
    }

    /// Fills `input.layout`, `input.size` and `input.color` from the model's input where the
    /// manifest leaves them out; an error names the field that the model cannot tell.
    pub fn complete(&mut self, inputs: &[TensorSpec], path: &Path) -> Result<()> {
        if !matches!(self.task, Task::Classify | Task::Detect) {
            return Ok(());
        }
        let Some(input) = self.input.as_mut() else { return Ok(()) };
        if input.layout.is_some() && input.size.is_some() && input.color.is_some() {
            return self.preprocess_config(path).map(|_| ());
        }
        let spec = image_spec(input, inputs, path)?;
        let dims: Vec<Option<usize>> = match &spec.dims {
            Some(d) if d.len() == 4 => d.iter().map(|d| if let Dim::Fixed(n) = d { Some(*n) } else { None }).collect(),
            Some(d) => return Err(rank_error(spec, d.len(), path)),
            None => vec![None; 4],
        };
        let shape = spec.shape_text();
        let is_channels = |d: Option<usize>| matches!(d, Some(1 | 3));
        let layout = match input.layout {
            Some(l) => l,
            None => match (is_channels(dims[1]), is_channels(dims[3])) {
                (true, false) => Layout::Nchw,
                (false, true) => Layout::Nhwc,
                _ => {
                    return Err(field_error(
                        path,
                        "input.layout",
                        format!("input `{}` is {shape}: give layout = \"nchw\" or \"nhwc\"", spec.name),
                    ))
                }
            },
        };
        let (c, h, w) = match layout {
            Layout::Nchw => (dims[1], dims[2], dims[3]),
            Layout::Nhwc => (dims[3], dims[1], dims[2]),
        };
        let color = match (input.color, c) {
            (Some(color), _) => color,
            (None, Some(3)) => ColorOrder::Rgb,
            (None, Some(1)) => ColorOrder::Gray,
            (None, _) => {
                return Err(field_error(
                    path,
                    "input.color",
                    format!(
                        "input `{}` is {shape}: its channels do not tell; give color = \"rgb\", \"bgr\" or \"gray\"",
                        spec.name
                    ),
                ))
            }
        };
        let size = match (input.size, w, h) {
            (Some(size), _, _) => size,
            (None, Some(w), Some(h)) if w > 0 && h > 0 => [w, h],
            (None, _, _) => {
                return Err(field_error(
                    path,
                    "input.size",
                    format!(
                        "input `{}` is {shape}, with a dynamic height or width: give size = [WIDTH, HEIGHT]",
                        spec.name
                    ),
                ))
            }
        };
        input.layout = Some(layout);
        input.color = Some(color);
        input.size = Some(size);
        self.preprocess_config(path)?;
        Ok(())
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
        if let (Some(expected), Some(input), Some(layout)) =
            (self.image_input_shape(), self.input.as_ref(), self.input.as_ref().and_then(|i| i.layout))
        {
            let spec = image_spec(input, inputs, path)?;
            if let Some(dims) = &spec.dims {
                if dims.len() != 4 {
                    return Err(rank_error(spec, dims.len(), path));
                }
                let axis_names = match layout {
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
                            } else if matches!((layout, axis), (Layout::Nchw, 1) | (Layout::Nhwc, 3)) {
                                "input.layout"
                            } else {
                                "input.size"
                            };
                            return Err(field_error(
                                path,
                                field,
                                format!(
                                    "implies {} = {want}, but input `{}` is {} (layout {})",
                                    axis_names[axis],
                                    spec.name,
                                    spec.shape_text(),
                                    layout.name()
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

/// The model input an image manifest describes: `input.name`, else the first input.
fn image_spec<'s>(input: &ImageInput, inputs: &'s [TensorSpec], path: &Path) -> Result<&'s TensorSpec> {
    match &input.name {
        Some(n) => inputs.iter().find(|s| &s.name == n).ok_or_else(|| {
            field_error(path, "input.name", format!("the model has no input `{n}` (inputs: {})", names(inputs)))
        }),
        None => inputs.first().ok_or_else(|| field_error(path, "input", "the model has no inputs")),
    }
}

fn rank_error(spec: &TensorSpec, rank: usize, path: &Path) -> LeptonError {
    field_error(
        path,
        "input",
        format!("describes an image (rank 4) but input `{}` has rank {rank} ({})", spec.name, spec.shape_text()),
    )
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
    fn layout_size_and_color_left_out_are_read_from_the_model() {
        let p = Path::new("model.onnx");
        let text = "task = \"classify\"\nlabels = [\"a\", \"b\"]\n[input]\nmean = [0.5]\n";
        let m = Manifest::from_toml(text, p).unwrap();
        let logits = [spec("logits", &[1, 2])];
        let nchw = m.clone().resolve(&[spec("x", &[1, 3, 48, 192])], &logits, p).unwrap();
        assert_eq!(nchw.image_input(p).unwrap(), (Layout::Nchw, [192, 48], ColorOrder::Rgb));
        let nhwc = m.clone().resolve(&[spec("x", &[1, 32, 64, 1])], &logits, p).unwrap();
        assert_eq!(nhwc.image_input(p).unwrap(), (Layout::Nhwc, [64, 32], ColorOrder::Gray));
        assert_eq!(nhwc.image_input_shape(), Some([1, 32, 64, 1]));
        // A dynamic size must be written; an ambiguous shape needs the layout.
        let dynamic = TensorSpec {
            name: "x".into(),
            elem_type: "FLOAT".into(),
            dims: Some(vec![Dim::Symbol("N".into()), Dim::Fixed(3), Dim::Symbol("H".into()), Dim::Symbol("W".into())]),
        };
        let e = m.clone().resolve(&[dynamic], &logits, p).unwrap_err().to_string();
        assert!(e.contains("input.size") && e.contains("Nx3xHxW") && e.contains("size = [WIDTH, HEIGHT]"), "{e}");
        let e = m.clone().resolve(&[spec("x", &[1, 3, 8, 3])], &logits, p).unwrap_err().to_string();
        assert!(e.contains("input.layout") && e.contains("1x3x8x3"), "{e}");
        // Written values win, and are still checked against the model.
        let bgr = Manifest::from_toml(&text.replace("mean", "color = \"bgr\"\nmean"), p).unwrap();
        let r = bgr.clone().resolve(&[spec("x", &[1, 3, 8, 8])], &logits, p).unwrap();
        assert_eq!(r.image_input(p).unwrap().2, ColorOrder::Bgr);
        let e = bgr.resolve(&[spec("x", &[1, 1, 8, 8])], &logits, p).unwrap_err().to_string();
        assert!(e.contains("input.color"), "{e}");
        // Without a model, the unset values are named.
        let e = m.preprocess_config(p).unwrap_err().to_string();
        assert!(e.contains("input.layout") && e.contains("not set"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_reported_at_its_own_line() {
        let text =
            "task = \"classify\"\nlabels = [\"a\"]\n[input]\nlayout = \"nchw\"\nsize = [8, 8]\ncolour = \"rgb\"\n";
        let e = Manifest::from_toml(text, Path::new("m.toml")).unwrap_err().to_string();
        assert!(e.contains("line 6 (`colour = \"rgb\"`)") && e.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn a_gray_input_takes_one_mean_value() {
        let e = Manifest::from_toml(&DIGITS.replace("mean = [0.5]", "mean = [0.5, 0.4, 0.3]"), Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("input.mean") && e.contains("`gray` is one channel: give one value"), "{e}");
    }

    #[test]
    fn labels_are_plain_text_safe_in_topics_and_markup() {
        for ok in [
            "0",
            "_silence_",
            "traffic light",
            "jack-o'-lantern",
            "tench, Tinca tinca",
            "chat",
            "猫",
            "año",
            "हिन्दी",
            "🐱",
        ] {
            assert!(check_label(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("<img src=x onerror=alert(1)>", "'<'"),
            ("a/b", "'/'"),
            ("a+", "'+'"),
            ("#1", "'#'"),
            ("a\0b", "'\\0'"),
            ("tab\there", "'\\t'"),
            ("rtl\u{202e}", "character 4"),
            ("zero\u{200b}width", "character 5"),
            ("q\"", "'\"'"),
            ("nb\u{a0}sp", "character 3"),
            ("", "empty"),
            (" pad", "space"),
        ] {
            let e = check_label(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert!(check_label(&"x".repeat(64)).is_ok());
        assert!(check_label(&"x".repeat(65)).unwrap_err().contains("at most 64"));
        let text = DIGITS.replace("\"1\"", "\"<img src=x onerror=alert(1)>\"");
        let e = Manifest::from_toml(&text, Path::new("evil.onnx")).unwrap_err().to_string();
        assert!(e.contains("evil.onnx") && e.contains("labels[1]") && e.contains("'<'"), "{e}");
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
