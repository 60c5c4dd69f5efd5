//! A model file with its manifest, ready to predict: `Model::load("m.onnx")?.predict(&images)?`.
//!
//! ```no_run
//! # fn main() -> Result<(), lepton_runtime::LeptonError> {
//! let model = lepton_runtime::Model::load("models/digits/model.onnx")?;
//! let images = lepton_runtime::image::load_dir("models/digits/samples")?;
//! for (image, prediction) in images.iter().zip(model.predict(&images)?) {
//!     println!("{}: {prediction}", image.name);
//! }
//! # Ok(()) }
//! ```

use crate::engine::micro::host::MicroEngine;
use crate::engine::tract::InputFact;
use crate::engine::{AnyEngine, Engine, EngineChoice};
use crate::error::{LeptonError, Result};
use crate::event::{BBox, Detections, FrameMeta};
use crate::image::Image;
use crate::manifest::{Manifest, Task};
use crate::onnx::OnnxModel;
use crate::pipeline::{Postprocess, Preprocess, VisionPostprocess, VisionPreprocess, MAX_OUTPUTS};
use crate::source::Frame;
use crate::tensor::TensorView;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One labelled result: a class (with a box for detectors).
#[derive(Debug, Clone, PartialEq)]
pub struct Labeled {
    /// The label from the manifest.
    pub label: String,
    /// Class index.
    pub class: u16,
    /// Score in 0..=1.
    pub score: f32,
    /// Box in source pixels (detectors).
    pub bbox: Option<BBox>,
}

/// The result of one image: classes (best first) or detections, and the inference time.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Classes or detections, best first.
    pub results: Vec<Labeled>,
    /// Engine run time.
    pub latency: Duration,
}

impl Prediction {
    /// The best result, if any.
    pub fn top(&self) -> Option<&Labeled> {
        self.results.first()
    }

    /// The best label, if any.
    pub fn label(&self) -> Option<&str> {
        self.top().map(|l| l.label.as_str())
    }
}

impl std::fmt::Display for Prediction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.results.is_empty() {
            return f.write_str("(nothing)");
        }
        for (i, r) in self.results.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {:.3}", r.label, r.score)?;
            if let Some(b) = r.bbox {
                write!(f, " [{:.0},{:.0},{:.0},{:.0}]", b.x0, b.y0, b.x1, b.y1)?;
            }
        }
        Ok(())
    }
}

/// The stages of an image model: preprocess, engine, postprocess.
pub struct VisionStages {
    /// Preprocessing for the model input.
    pub pre: VisionPreprocess,
    /// The engine.
    pub engine: AnyEngine,
    /// Postprocessing of the outputs.
    pub post: VisionPostprocess,
}

/// A model file: its manifest and a ready engine.
pub struct Model {
    path: PathBuf,
    manifest: Option<Manifest>,
    stages: Option<Mutex<VisionStages>>,
    engine: Option<Mutex<AnyEngine>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("path", &self.path).field("manifest", &self.manifest).finish()
    }
}

impl Model {
    /// Loads a model file (ONNX, a quantized `.tflite`, a microWakeWord `.json` beside its
    /// `.tflite`, or a Lepton micro model `.lpm`); its embedded manifest, if any, is parsed and
    /// checked against the model. Quantized models run on the int8 micro engine
    /// when they lower completely, on tract otherwise.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Self::load_with(path, EngineChoice::Auto)
    }

    /// Like [`load`](Self::load), with the engine chosen.
    pub fn load_with(path: impl AsRef<Path>, choice: EngineChoice) -> Result<Model> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| LeptonError::io(path, e))?;
        Self::from_bytes_with(&bytes, path, choice)
    }

    /// Loads a model from bytes (a bundled model); `name` labels it in errors.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Model> {
        Self::from_bytes_with(bytes, Path::new(name), EngineChoice::Auto)
    }

    /// Loads a model from bytes read from `path` (after checking them, say), with the engine chosen.
    pub fn from_bytes_with(bytes: &[u8], path: &Path, choice: EngineChoice) -> Result<Model> {
        if bytes.starts_with(&crate::engine::micro::format::MAGIC) {
            if choice == EngineChoice::Tract {
                return Err(LeptonError::Model {
                    path: path.to_path_buf(),
                    reason: "a micro model (.lpm) runs on the micro engine only; give the ONNX file to run it on tract"
                        .into(),
                });
            }
            return Self::from_lpm(bytes, path);
        }
        if let Some(compiled) = quantized_tflite(bytes, path, choice)? {
            return Self::from_lpm(&compiled, path);
        }
        if crate::wake_word::is_json(bytes) {
            if choice == EngineChoice::Tract {
                return Err(LeptonError::Model {
                    path: path.to_path_buf(),
                    reason: "a microWakeWord model runs on the micro engine (TFLite's int8 arithmetic, bit for bit)"
                        .into(),
                });
            }
            return Self::from_lpm(&crate::wake_word::compile(bytes, path)?, path);
        }
        Self::from_onnx(OnnxModel::decode(bytes, path)?, path, choice)
    }

    fn from_lpm(bytes: &[u8], path: &Path) -> Result<Model> {
        let engine = MicroEngine::from_bytes(bytes.to_vec(), path)?;
        let text = engine.interpreter().header().manifest;
        let manifest = if text.is_empty() {
            None
        } else {
            let specs =
                |infos: &[crate::engine::TensorInfo]| infos.iter().map(crate::onnx::spec_of).collect::<Vec<_>>();
            Some(Manifest::from_toml(text, path)?.resolve(&specs(engine.inputs()), &specs(engine.outputs()), path)?)
        };
        let mut model = Model { path: path.to_path_buf(), manifest: manifest.clone(), stages: None, engine: None };
        let engine = AnyEngine::Micro(engine);
        match manifest {
            Some(m) if matches!(m.task, Task::Classify | Task::Detect) => {
                let pre = VisionPreprocess::new(m.preprocess_config(path)?);
                let post = VisionPostprocess::from_manifest(&m, engine.outputs(), path)?;
                model.stages = Some(Mutex::new(VisionStages { pre, engine, post }));
            }
            _ => model.engine = Some(Mutex::new(engine)),
        }
        Ok(model)
    }

    fn from_onnx(onnx: OnnxModel, path: &Path, choice: EngineChoice) -> Result<Model> {
        let mut model = Model { path: path.to_path_buf(), manifest: onnx.manifest.clone(), stages: None, engine: None };
        match &onnx.manifest {
            Some(m) if matches!(m.task, Task::Classify | Task::Detect) => {
                let stages = build_vision(&onnx, path, m, choice)?;
                model.stages = Some(Mutex::new(stages));
            }
            _ => {
                // Raw or audio models: the engine alone, with the shapes the file declares (a
                // symbolic batch dimension taken as 1).
                let facts = declared_facts(&onnx);
                model.engine = Some(Mutex::new(AnyEngine::from_onnx(&onnx, path, &facts, choice)?));
            }
        }
        Ok(model)
    }

    /// The file the model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The embedded manifest, if any.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Takes the vision stages out of the model, to build a [`crate::pipeline::Pipeline`].
    pub fn into_vision_stages(self) -> Result<VisionStages> {
        let path = self.path.clone();
        let stages = self.stages.ok_or(LeptonError::NoManifest { path: path.clone() })?;
        stages.into_inner().map_err(|_| LeptonError::Model { path, reason: "a previous prediction panicked".into() })
    }

    /// Takes the engine out of a model without an image task (audio and raw models), to build an
    /// [`crate::pipeline::AudioPipeline`].
    pub fn into_engine(self) -> Result<AnyEngine> {
        let path = self.path.clone();
        let task = self.manifest.as_ref().map_or("image", |m| m.task.name());
        let engine = self.engine.ok_or_else(|| LeptonError::Manifest {
            path: path.clone(),
            field: "task".into(),
            reason: format!("a {task} model takes pictures, not audio or tensors"),
        })?;
        engine.into_inner().map_err(|_| LeptonError::Model { path, reason: "a previous run panicked".into() })
    }

    /// Classifies or detects on each image, in order.
    pub fn predict(&self, images: &[Image]) -> Result<Vec<Prediction>> {
        let stages = self.stages.as_ref().ok_or_else(|| match &self.manifest {
            None => LeptonError::NoManifest { path: self.path.clone() },
            Some(m) => LeptonError::Manifest {
                path: self.path.clone(),
                field: "task".into(),
                reason: format!("a {} model does not take pictures", m.task.name()),
            },
        })?;
        let mut stages = stages.lock().map_err(|_| LeptonError::Model {
            path: self.path.clone(),
            reason: "a previous prediction panicked".into(),
        })?;
        let labels = self.manifest.as_ref().map_or(&[][..], |m| m.labels.as_slice());
        let VisionStages { pre, engine, post } = &mut *stages;
        let mut detections = Detections::new();
        let mut out = Vec::with_capacity(images.len());
        for (i, image) in images.iter().enumerate() {
            let frame = Frame {
                image: image.view()?,
                meta: FrameMeta { frame: i as u64, timestamp_ms: 0 },
                name: Some(&image.name),
            };
            let transform = pre.preprocess(&frame, engine.input_mut(0)?)?;
            let t = Instant::now();
            engine.run()?;
            let latency = t.elapsed();
            let mut outputs: heapless::Vec<TensorView<'_>, MAX_OUTPUTS> = heapless::Vec::new();
            for o in 0..engine.outputs().len().min(MAX_OUTPUTS) {
                let _ = outputs.push(engine.output(o)?);
            }
            post.postprocess(&outputs, &transform, &mut detections)?;
            let results = detections
                .iter()
                .map(|d| Labeled {
                    label: labels.get(d.class as usize).cloned().unwrap_or_else(|| d.class.to_string()),
                    class: d.class,
                    score: d.score,
                    bbox: d.bbox,
                })
                .collect();
            out.push(Prediction { results, latency });
        }
        Ok(out)
    }

    /// The outputs of the last [`predict`](Self::predict) (of its last image), dequantized to
    /// float, with their names and shapes.
    pub fn last_outputs(&self) -> Result<Vec<(crate::engine::TensorInfo, Vec<f32>)>> {
        let stages = self.stages.as_ref().ok_or_else(|| LeptonError::NoManifest { path: self.path.clone() })?;
        let stages = stages.lock().map_err(|_| LeptonError::Model {
            path: self.path.clone(),
            reason: "a previous prediction panicked".into(),
        })?;
        let engine = &stages.engine;
        let mut out = vec![];
        for (i, info) in engine.outputs().iter().enumerate() {
            let view = engine.output(i)?;
            let mut values = vec![0f32; view.len()];
            view.dequantize_into(&mut values).map_err(|e| LeptonError::core(format!("output `{}`", info.name), e))?;
            out.push((info.clone(), values));
        }
        Ok(out)
    }

    /// Sets a detector's score threshold for the following predictions (the manifest's
    /// `detect.score_threshold` otherwise); evaluation lowers it to see every candidate.
    pub fn set_score_threshold(&self, threshold: f32) -> Result<()> {
        let stages = self.stages.as_ref().ok_or_else(|| LeptonError::NoManifest { path: self.path.clone() })?;
        let mut stages = stages.lock().map_err(|_| LeptonError::Model {
            path: self.path.clone(),
            reason: "a previous prediction panicked".into(),
        })?;
        stages.post.set_score_threshold(threshold)
    }

    /// Which engine runs the model (`tract` or `micro`) and, for the micro engine, its kernel set.
    pub fn engine_name(&self) -> (&'static str, Option<crate::engine::micro::kernels::Isa>) {
        let from = |e: &AnyEngine| (e.name(), e.kernels());
        match (&self.engine, &self.stages) {
            (Some(e), _) => e.lock().map(|e| from(&e)).unwrap_or(("?", None)),
            (None, Some(s)) => s.lock().map(|s| from(&s.engine)).unwrap_or(("?", None)),
            (None, None) => ("?", None),
        }
    }
}

/// A quantized `.tflite` file compiled for the micro engine (TFLite's int8 arithmetic is the
/// micro engine's; tract has no quantized TFLite reader); `None` for any other file.
pub fn quantized_tflite(bytes: &[u8], path: &Path, choice: EngineChoice) -> Result<Option<Vec<u8>>> {
    if !lepton_tflite::is_tflite(bytes) {
        return Ok(None);
    }
    let model = lepton_tflite::TfliteModel::read(bytes, path)
        .map_err(|e| LeptonError::Model { path: path.to_path_buf(), reason: e.reason })?;
    if !lepton_compile::tflite_quantized(&model) {
        return Ok(None);
    }
    if choice == EngineChoice::Tract {
        return Err(LeptonError::Model {
            path: path.to_path_buf(),
            reason: "a quantized TFLite model runs on the micro engine (TFLite's int8 arithmetic, bit for bit); tract takes float TFLite models only".into(),
        });
    }
    let compiled = lepton_compile::lower_tflite(&model, "")
        .map_err(|e| LeptonError::Model { path: path.to_path_buf(), reason: e.to_string() })?;
    Ok(Some(compiled.bytes))
}

fn build_vision(onnx: &OnnxModel, path: &Path, m: &Manifest, choice: EngineChoice) -> Result<VisionStages> {
    let inputs = &onnx.inputs;
    let input = m.input.as_ref().ok_or_else(|| LeptonError::Manifest {
        path: path.to_path_buf(),
        field: "input".into(),
        reason: "required for image tasks".into(),
    })?;
    let name = match &input.name {
        Some(n) => n.clone(),
        None => inputs.first().map(|s| s.name.clone()).ok_or_else(|| LeptonError::Model {
            path: path.to_path_buf(),
            reason: "the model declares no inputs".into(),
        })?,
    };
    if inputs.len() > 1 {
        return Err(LeptonError::Manifest {
            path: path.to_path_buf(),
            field: "input".into(),
            reason: format!("image tasks need a single-input model; this one has {}", inputs.len()),
        });
    }
    let shape = m.image_input_shape().map(|s| s.to_vec()).unwrap_or_default();
    let engine = AnyEngine::from_onnx(onnx, path, &[InputFact { name, shape, dtype: None }], choice)?;
    let pre = VisionPreprocess::new(m.preprocess_config(path)?);
    let post = VisionPostprocess::from_manifest(m, engine.outputs(), path)?;
    Ok(VisionStages { pre, engine, post })
}

/// Input shapes as the file declares them, with a symbolic or unknown first (batch) dimension
/// taken as 1; inputs with other unknown dimensions are left for the engine to report.
fn declared_facts(onnx: &OnnxModel) -> Vec<InputFact> {
    onnx.inputs
        .iter()
        .filter_map(|spec| Some(InputFact { shape: spec.concrete_shape()?, name: spec.name.clone(), dtype: None }))
        .collect()
}
