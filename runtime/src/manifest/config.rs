//! A manifest checked on its own, and turned into the stages' settings: preprocessing, the
//! detection decoder, the audio frontend, keyword and VAD decisions, the labels that make events.

use super::labels::check_label;
use super::{
    default_hangover, default_kw_threshold, default_min_speech, default_off, default_on, default_refractory,
    default_smoothing, field_error, Detect, Keyword, Manifest, Task, Vad, WakeWord,
};
use crate::audio::{FrontendConfig, KeywordConfig, MicroFrontendConfig, VadConfig};
use crate::error::{LeptonError, Result};
use crate::vision::detect::{DetectConfig, DetectFormat};
use crate::vision::{ColorOrder, Layout, PreprocessConfig};
use std::path::Path;

/// Most probabilities a wake-word decision averages.
pub const MAX_WAKE_WINDOW: usize = 64;

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
            Task::Keyword if self.wake_word.is_some() => {
                self.micro_frontend_config(path)?;
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
        if self.task == Task::Keyword && self.wake_word.is_none() {
            self.keyword_config(path)?;
        }
        if self.wake_word.is_some() && self.task != Task::Keyword {
            return Err(field_error(path, "wake_word", "only for task = \"keyword\""));
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

    /// A wake-word model's frontend (TFLite Micro's, as microWakeWord trains with, at the
    /// manifest's feature step) and decision table; errors name the field at fault.
    pub fn micro_frontend_config(&self, path: &Path) -> Result<(MicroFrontendConfig, &WakeWord)> {
        let w = self.wake_word.as_ref().ok_or_else(|| field_error(path, "wake_word", "missing"))?;
        if self.audio.is_some() {
            return Err(field_error(
                path,
                "audio",
                "a wake-word model takes TFLite Micro's frontend: leave [audio] out",
            ));
        }
        if self.keyword.is_some() {
            return Err(field_error(path, "keyword", "a wake-word model decides by [wake_word]: leave [keyword] out"));
        }
        if !(0.0..=1.0).contains(&w.probability_cutoff) {
            return Err(field_error(path, "wake_word.probability_cutoff", "must be within 0..=1"));
        }
        if w.sliding_window_size == 0 || w.sliding_window_size > MAX_WAKE_WINDOW {
            return Err(field_error(path, "wake_word.sliding_window_size", format!("must be 1..={MAX_WAKE_WINDOW}")));
        }
        let cfg = MicroFrontendConfig { step_ms: w.feature_step_ms, ..MicroFrontendConfig::MICRO_WAKE_WORD };
        if cfg.step_ms == 0 || cfg.step_ms > cfg.window_ms {
            return Err(field_error(
                path,
                "wake_word.feature_step_ms",
                format!("must be 1..={} (the frontend's window)", cfg.window_ms),
            ));
        }
        if self.labels.len() != 1 {
            return Err(field_error(path, "labels", "a wake-word model has one label: its wake word"));
        }
        Ok((cfg, w))
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::DIGITS;
    use super::*;

    #[test]
    fn a_gray_input_takes_one_mean_value() {
        let e = Manifest::from_toml(&DIGITS.replace("mean = [0.5]", "mean = [0.5, 0.4, 0.3]"), Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("input.mean") && e.contains("`gray` is one channel: give one value"), "{e}");
    }
}
