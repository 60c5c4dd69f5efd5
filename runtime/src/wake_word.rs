//! microWakeWord model files as ESPHome and Home Assistant publish them: a JSON description
//! (`"type": "micro"`, the wake word, its decision settings) beside a streaming int8 `.tflite`.
//! The pair becomes one micro model whose manifest says `task = "keyword"` with a `[wake_word]`
//! table, so the daemon, `lepton-convert` and the firmware run it as any keyword model, with TFLite
//! Micro's frontend ([`crate::audio::micro_frontend`]) and microWakeWord's decision
//! ([`crate::audio::wake_word`]).

use crate::error::{LeptonError, Result};
use crate::manifest::{Manifest, Output, Task, WakeWord};
use crate::vision::classify::Scores;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The largest `.tflite` a wake-word JSON may name (microWakeWord's are under 100 KiB).
pub const MAX_TFLITE_BYTES: u64 = 16 << 20;
/// The largest JSON description read.
pub const MAX_JSON_BYTES: usize = 64 << 10;

/// The JSON description (fields Lepton uses; others, such as `author`, are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct MicroWakeWordJson {
    /// `"micro"` for microWakeWord (ESPHome also knows other kinds).
    #[serde(rename = "type")]
    pub kind: String,
    /// The phrase, e.g. "Okay Nabu": the model's label.
    pub wake_word: String,
    /// The `.tflite` file, relative to the JSON.
    pub model: String,
    /// Decision settings.
    pub micro: MicroSection,
}

/// The `micro` section.
#[derive(Debug, Clone, Deserialize)]
pub struct MicroSection {
    /// Mean probability to exceed.
    pub probability_cutoff: f64,
    /// Probabilities averaged.
    pub sliding_window_size: usize,
    /// Milliseconds between feature rows (10 in every published model).
    #[serde(default = "ten")]
    pub feature_step_size: u32,
    /// Arena ESPHome reserves (reported, not needed: the micro engine plans its own).
    #[serde(default)]
    pub tensor_arena_size: Option<u64>,
}

fn ten() -> u32 {
    10
}

/// Whether `bytes` look like a JSON object (a microWakeWord description, or some other JSON that
/// [`compile`] then refuses with its reason).
pub fn is_json(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn model_error(path: &Path, reason: impl Into<String>) -> LeptonError {
    LeptonError::Model { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads the JSON at `path` (its bytes given) and checks it; returns it with the `.tflite` path.
pub fn read(bytes: &[u8], path: &Path) -> Result<(MicroWakeWordJson, PathBuf)> {
    if bytes.len() > MAX_JSON_BYTES {
        return Err(model_error(
            path,
            format!("{} bytes: a wake-word description is at most {MAX_JSON_BYTES}", bytes.len()),
        ));
    }
    let json: MicroWakeWordJson = serde_json::from_slice(bytes).map_err(|e| {
        model_error(path, format!("not a microWakeWord description ({e}); expected {{\"type\": \"micro\", \"wake_word\", \"model\", \"micro\": {{\"probability_cutoff\", \"sliding_window_size\"}}}}"))
    })?;
    if json.kind != "micro" {
        return Err(model_error(
            path,
            format!(
                "`type` is {:?}: only microWakeWord models (\"micro\") run here",
                json.kind.escape_debug().to_string()
            ),
        ));
    }
    let name = Path::new(&json.model);
    let plain = name.components().count() == 1 && name.file_name().is_some_and(|f| f == name.as_os_str());
    if !plain || !json.model.ends_with(".tflite") {
        return Err(model_error(
            path,
            format!(
                "`model` is {:?}: give the .tflite file's name, beside the JSON",
                json.model.escape_debug().to_string()
            ),
        ));
    }
    let tflite = path.parent().unwrap_or(Path::new(".")).join(name);
    Ok((json, tflite))
}

/// The manifest a description stands for: a keyword model with one label and a `[wake_word]` table.
pub fn manifest(json: &MicroWakeWordJson, path: &Path) -> Result<Manifest> {
    let m = Manifest {
        task: Task::Keyword,
        labels: vec![json.wake_word.clone()],
        input: None,
        // The model's output is a probability already.
        output: Output { scores: Scores::Probabilities, ..Output::default() },
        detect: None,
        audio: None,
        keyword: None,
        vad: None,
        wake_word: Some(WakeWord {
            probability_cutoff: json.micro.probability_cutoff,
            sliding_window_size: json.micro.sliding_window_size,
            feature_step_ms: json.micro.feature_step_size,
            refractory_ms: 1000,
        }),
    };
    m.check(path).map_err(|e| match e {
        // Name the JSON's own fields in errors.
        LeptonError::Manifest { field, reason, .. } => {
            let field = match field.as_str() {
                "labels[0]" => "wake_word".into(),
                "wake_word.feature_step_ms" => "micro.feature_step_size".into(),
                f => f.replace("wake_word.", "micro."),
            };
            LeptonError::Manifest { path: path.to_path_buf(), field, reason }
        }
        other => other,
    })?;
    Ok(m)
}

/// Compiles the description at `path` and the `.tflite` beside it into a micro model (`.lpm`
/// bytes) that carries the wake-word manifest.
pub fn compile(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    Ok(lower(bytes, path)?.bytes)
}

/// Like [`compile`], with what the compiler reports (ops, arena, flash).
pub fn lower(bytes: &[u8], path: &Path) -> Result<lepton_compile::Compiled> {
    let (json, tflite) = read(bytes, path)?;
    let manifest = manifest(&json, path)?;
    let unreadable = |e: std::io::Error| model_error(path, format!("`model` names {}: {e}", tflite.display()));
    let size = std::fs::metadata(&tflite).map_err(unreadable)?.len();
    if size > MAX_TFLITE_BYTES {
        return Err(model_error(&tflite, format!("{size} bytes: a wake-word model is at most {MAX_TFLITE_BYTES}")));
    }
    let model_bytes = std::fs::read(&tflite).map_err(unreadable)?;
    if !lepton_tflite::is_tflite(&model_bytes) {
        return Err(model_error(&tflite, "not a TFLite file (no TFL3 identifier)"));
    }
    let model = lepton_tflite::TfliteModel::read(&model_bytes, &tflite)
        .map_err(|e| LeptonError::Model { path: tflite.clone(), reason: e.reason })?;
    if !lepton_compile::tflite_quantized(&model) {
        return Err(model_error(&tflite, "a microWakeWord model is quantized (int8 or uint8); this one is float"));
    }
    let text = toml::to_string(&manifest).map_err(|e| model_error(path, format!("manifest: {e}")))?;
    lepton_compile::lower_tflite(&model, &text).map_err(|e| model_error(&tflite, e.to_string()))
}
