//! `eval`: accuracy of a classifier on a labelled folder (`DIR/<label>/*`), per-class recall, the
//! confusion matrix (also drawn as a PNG), and top-1 agreement with a reference model.

use crate::model_file::{Format, ModelFile};
use anyhow::{bail, Context, Result};
use lepton_runtime::engine::tract::InputFact;
use lepton_runtime::engine::{AnyEngine, Engine, TractEngine};
use lepton_runtime::image::Image;
use lepton_runtime::manifest::{Manifest, Task};
use lepton_runtime::Model;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// File types a dataset may hold.
pub const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "wav", "npy"];

/// A labelled sample.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The file.
    pub path: PathBuf,
    /// Its folder name.
    pub label: String,
}

/// Samples of `DIR/<label>/*.{png,jpg,jpeg,wav,npy}`, sorted by label then file name.
pub fn dataset(dir: &Path) -> Result<Vec<Sample>> {
    let mut samples = vec![];
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    for f in folders {
        let label = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&f)
            .with_context(|| format!("{}", f.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        files.sort();
        samples.extend(files.into_iter().map(|path| Sample { path, label: label.clone() }));
    }
    if samples.is_empty() {
        bail!("{}: no samples; expected {}/<label>/*.{{png,jpg,wav,npy}}", dir.display(), dir.display());
    }
    Ok(samples)
}

/// Classifies one file at a time with a model (ONNX or `.lpm`): pictures and recordings through
/// the manifest, `.npy` tensors directly (argmax of output 0).
pub struct Classifier {
    path: PathBuf,
    model: Option<Model>,
    manifest: Option<Manifest>,
    tensors: TensorRunner,
    audio: Option<AudioClassifier>,
    /// Class names, in output order (manifest labels; empty without a manifest).
    pub labels: Vec<String>,
    /// Classes the model's first output holds, when its size is declared.
    pub classes: Option<usize>,
}

/// How `.npy` samples run: tract on the ONNX file (engine rebuilt when the shape changes), or
/// the micro engine on a `.lpm` (fixed shape).
enum TensorRunner {
    Onnx { model: Box<lepton_runtime::onnx::OnnxModel>, engine: Option<Box<(TractEngine, Vec<usize>)>> },
    Micro(Option<AnyEngine>),
}

struct AudioClassifier {
    engine: AnyEngine,
    manifest: Manifest,
}

impl Classifier {
    /// Loads a model for classification on the engine `choice` picks.
    pub fn load(path: &Path, choice: lepton_runtime::engine::EngineChoice) -> Result<Self> {
        let file = ModelFile::read(path)?;
        let manifest = file.manifest.clone();
        let labels = manifest.as_ref().map(|m| m.labels.clone()).unwrap_or_default();
        // Classes of the first output: its size without the batch dimension.
        let classes = file.outputs.first().and_then(|o| o.concrete_shape()).map(|s| s.iter().skip(1).product());
        let lpm = file.is_lpm();
        let tensors = match file.format {
            Format::Onnx(model) => TensorRunner::Onnx { model, engine: None },
            Format::Lpm(_) => TensorRunner::Micro(None),
        };
        let mut c = Classifier {
            path: path.to_path_buf(),
            model: None,
            manifest: manifest.clone(),
            tensors,
            audio: None,
            labels,
            classes,
        };
        match manifest.as_ref().map(|m| m.task) {
            Some(Task::Classify) => c.model = Some(Model::load_with(path, choice)?),
            Some(Task::Keyword | Task::Vad) => {
                let engine = Model::load_with(path, choice)?.into_engine()?;
                c.audio = Some(AudioClassifier { engine, manifest: manifest.clone().expect("matched Some") });
            }
            Some(Task::Detect) => bail!(
                "{} is a detector: give a YOLO-labelled folder (DIR/images/*.jpg with DIR/labels/<name>.txt)",
                path.display()
            ),
            _ if lpm => c.tensors = TensorRunner::Micro(Some(Model::load_with(path, choice)?.into_engine()?)),
            _ => {}
        }
        Ok(c)
    }

    /// The class index of a file and its score.
    pub fn classify(&mut self, file: &Path) -> Result<(usize, f32)> {
        let ext = file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
        match ext.as_str() {
            "npy" => self.classify_tensor(file),
            "wav" => {
                let a = self.audio.as_mut().with_context(|| {
                    format!("{}: a WAV sample needs a keyword or VAD model with a manifest", self.path.display())
                })?;
                classify_clip(a, file)
            }
            _ => {
                let model = self.model.as_ref().with_context(|| {
                    format!("{}: a picture needs a classifier with a manifest", self.path.display())
                })?;
                let image = Image::open(file)?;
                let p = model.predict(std::slice::from_ref(&image))?.remove(0);
                let top = p.top().with_context(|| format!("{}: the model reported no class", file.display()))?;
                Ok((top.class as usize, top.score))
            }
        }
    }

    fn classify_tensor(&mut self, file: &Path) -> Result<(usize, f32)> {
        let t = crate::npy::read(file)?;
        let path = &self.path;
        let scores: Vec<f32> = match &mut self.tensors {
            TensorRunner::Onnx { model, engine } => {
                if engine.as_ref().is_none_or(|e| e.1.as_slice() != t.shape()) {
                    let spec = model.inputs.first().context("the model has no input")?;
                    crate::inputs::check(spec, &t, file)?;
                    let fact =
                        InputFact { name: spec.name.clone(), shape: t.shape().to_vec(), dtype: Some(t.datum_type()) };
                    *engine =
                        Some(Box::new((TractEngine::from_proto(&model.proto, path, &[fact])?, t.shape().to_vec())));
                }
                let (engine, _) = &mut **engine.as_mut().expect("set above");
                let out = engine.run_tensors(vec![t])?;
                let scores = out
                    .first()
                    .context("the model produced no output")?
                    .cast_to::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:#}"))?;
                let v = scores.to_plain_array_view::<f32>().map_err(|e| anyhow::anyhow!("{e:#}"))?;
                v.iter().copied().collect()
            }
            TensorRunner::Micro(engine) => {
                let engine =
                    engine.as_mut().context("a micro model with a manifest classifies pictures or recordings")?;
                let spec = lepton_runtime::onnx::spec_of(engine.inputs().first().context("the model has no input")?);
                crate::inputs::check_shape(&spec, t.shape(), file)?;
                let v: Vec<f32> = t.cast_to::<f32>()?.to_plain_array_view::<f32>()?.iter().copied().collect();
                engine.input_mut(0)?.quantize_from(&v).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                engine.run()?;
                let out = engine.output(0)?;
                let mut v = vec![0f32; out.len()];
                out.dequantize_into(&mut v).map_err(|e| anyhow::anyhow!("{e}"))?;
                v
            }
        };
        argmax(scores.into_iter())
    }

    /// The manifest, if any.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }
}

fn argmax(v: impl Iterator<Item = f32>) -> Result<(usize, f32)> {
    v.enumerate()
        .fold(None, |best: Option<(usize, f32)>, (i, x)| match best {
            Some((_, b)) if b >= x => best,
            _ => Some((i, x)),
        })
        .context("empty output")
}

/// Classifies a whole recording: features of the clip (the last `frames` frames, padded with
/// silence when shorter), one model run, argmax of the probabilities.
fn classify_clip(a: &mut AudioClassifier, file: &Path) -> Result<(usize, f32)> {
    let features = crate::samples::clip_features(file, &a.manifest)?;
    let mut input = a.engine.input_mut(0)?;
    input.quantize_from(&features).map_err(|e| anyhow::anyhow!("{e}"))?;
    a.engine.run()?;
    let out = a.engine.output(0)?;
    let mut probs = vec![0.0f32; out.len()];
    out.dequantize_into(&mut probs).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut best: heapless::Vec<lepton_runtime::Detection, 1> = heapless::Vec::new();
    lepton_runtime::vision::classify::top_k(&probs, a.manifest.output.scores, 0.0, &mut best);
    let d = best.first().context("empty output")?;
    Ok((d.class as usize, d.score))
}

/// The results of an evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// Class names (rows and columns of the confusion matrix).
    pub labels: Vec<String>,
    /// Samples evaluated (failed ones excluded).
    pub samples: usize,
    /// Correct top-1 predictions.
    pub correct: usize,
    /// correct / samples.
    pub accuracy: f64,
    /// Per class: (label, recall, support).
    pub per_class: Vec<(String, Option<f64>, usize)>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    /// Top-1 agreement with the reference model, if one was given.
    pub agreement: Option<f64>,
    /// Samples that could not be evaluated: (file, error).
    pub failed: Vec<(String, String)>,
}

/// Index of a folder label among the model's classes.
pub fn class_of(label: &str, labels: &[String]) -> Option<usize> {
    labels.iter().position(|l| l == label).or_else(|| if labels.is_empty() { label.parse().ok() } else { None })
}

/// Evaluates `model` (and optionally `reference`) on `samples`, calling `progress` after each.
///
/// The classes are the model's: its manifest labels, else one per value of its output (class
/// indices `0`, `1`, …), so a prediction of a class no folder holds still gets its column in the
/// confusion matrix and its row in the per-class table.
pub fn evaluate(
    model: &mut Classifier,
    mut reference: Option<&mut Classifier>,
    samples: &[Sample],
    mut progress: impl FnMut(),
) -> Result<Metrics> {
    let mut labels: Vec<String> = if model.labels.is_empty() {
        let folders = samples.iter().filter_map(|s| s.label.parse::<usize>().ok()).max().map_or(0, |m| m + 1);
        (0..model.classes.unwrap_or(0).max(folders)).map(|i| i.to_string()).collect()
    } else {
        model.labels.clone()
    };
    for s in samples {
        if class_of(&s.label, &labels).is_none() {
            let hint = if model.labels.is_empty() {
                "the model has no manifest: name folders by class index (0, 1, …)"
            } else {
                "name folders after the manifest labels"
            };
            bail!("folder `{}` is not one of the model's classes ({}); {hint}", s.label, labels.join(", "));
        }
    }
    let mut pairs = vec![];
    let (mut agree, mut compared) = (0, 0);
    let mut failed = vec![];
    for s in samples {
        let truth = class_of(&s.label, &labels).expect("checked above");
        match model.classify(&s.path) {
            Ok((pred, _)) => {
                pairs.push((truth, pred));
                if let Some(r) = reference.as_deref_mut() {
                    match r.classify(&s.path) {
                        Ok((rp, _)) => {
                            compared += 1;
                            agree += usize::from(rp == pred);
                        }
                        Err(e) => failed.push((format!("{} (reference)", s.path.display()), format!("{e:#}"))),
                    }
                }
            }
            Err(e) => failed.push((s.path.display().to_string(), format!("{e:#}"))),
        }
        progress();
    }
    // A model without a declared output size may still predict past the classes known so far.
    let predicted = pairs.iter().map(|&(_, p)| p + 1).max().unwrap_or(0);
    for i in labels.len()..predicted {
        labels.push(i.to_string());
    }
    let n = labels.len();
    let mut confusion = vec![vec![0usize; n]; n];
    for &(truth, pred) in &pairs {
        confusion[truth][pred] += 1;
    }
    let correct = pairs.iter().filter(|(t, p)| t == p).count();
    let done = pairs.len();
    let per_class = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let support: usize = confusion[i].iter().sum();
            (l.clone(), (support > 0).then(|| confusion[i][i] as f64 / support as f64), support)
        })
        .collect();
    Ok(Metrics {
        labels,
        samples: done,
        correct,
        accuracy: if done > 0 { correct as f64 / done as f64 } else { 0.0 },
        per_class,
        confusion,
        agreement: reference.map(|_| if compared > 0 { agree as f64 / compared as f64 } else { 0.0 }),
        failed,
    })
}

/// `file: message`, unless the message already names the file.
pub fn failure_line(file: &str, message: &str) -> String {
    let name = Path::new(file).file_name().map_or(file.into(), |n| n.to_string_lossy());
    if message.contains(file) || message.contains(name.as_ref()) {
        message.to_string()
    } else {
        format!("{file}: {message}")
    }
}

/// Label text for the axes: at most 16 characters.
fn axis_label(label: &str) -> String {
    if label.chars().count() <= 16 {
        label.to_string()
    } else {
        label.chars().take(15).chain(['~']).collect()
    }
}

/// Draws the confusion matrix: rows are true classes, columns predictions, cells shaded by
/// row-normalized counts with the count printed; class names along the left and (upwards) the top.
pub fn plot(m: &Metrics, path: &Path) -> Result<()> {
    let n = m.labels.len().max(1) as u32;
    let cell = (480 / n).clamp(20, 64);
    let scale = if cell >= 40 { 2 } else { 1 };
    let names: Vec<String> = m.labels.iter().map(|l| axis_label(l)).collect();
    let longest = names.iter().map(|l| l.chars().count() as u32).max().unwrap_or(1).max(1);
    let margin = longest * 8 * scale + 12;
    let size = margin + n * cell + 4;
    let mut img = image::RgbImage::from_pixel(size, size, image::Rgb([255, 255, 255]));
    let ink = [60, 60, 60];
    for i in 0..n {
        let name = names.get(i as usize).map_or("", String::as_str);
        let w = name.chars().count() as u32 * 8 * scale;
        let mid = margin + i * cell + cell / 2;
        lepton_runtime::draw::text(&mut img, name, margin - 6 - w, mid - 4 * scale, scale, false, ink);
        lepton_runtime::draw::text(&mut img, name, mid - 4 * scale, margin - 6, scale, true, ink);
        let total: usize = m.confusion[i as usize].iter().sum();
        for j in 0..n {
            let count = m.confusion[i as usize][j as usize];
            let frac = if total > 0 { count as f32 / total as f32 } else { 0.0 };
            let shade = |base: f32| (255.0 - frac * (255.0 - base)) as u8;
            let color = if i == j {
                [shade(30.0), shade(110.0), shade(60.0)]
            } else {
                [shade(200.0), shade(40.0), shade(40.0)]
            };
            for y in 1..cell {
                for x in 1..cell {
                    img.put_pixel(margin + j * cell + x, margin + i * cell + y, image::Rgb(color));
                }
            }
            if count > 0 {
                let text = count.to_string();
                let fg = if frac > 0.5 { [255, 255, 255] } else { [0, 0, 0] };
                let s = if text.len() as u32 * 8 * scale > cell - 2 { 1 } else { scale };
                let (cx, cy) = (margin + j * cell + cell / 2, margin + i * cell + cell / 2);
                lepton_runtime::draw::text(
                    &mut img,
                    &text,
                    cx.saturating_sub(text.len() as u32 * 4 * s),
                    cy - 4 * s,
                    s,
                    false,
                    fg,
                );
            }
        }
    }
    img.save(path).with_context(|| format!("{}", path.display()))?;
    Ok(())
}
