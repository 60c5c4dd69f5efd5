//! `eval`: accuracy of a classifier on a labelled folder (`DIR/<label>/*`), per-class recall, the
//! confusion matrix (also drawn as a PNG), and top-1 agreement with a reference model.

use anyhow::{bail, Context, Result};
use lepton_runtime::audio::{FeatureWindow, Frontend};
use lepton_runtime::engine::tract::InputFact;
use lepton_runtime::engine::{Engine, TractEngine};
use lepton_runtime::image::Image;
use lepton_runtime::manifest::{Manifest, Task};
use lepton_runtime::source::{AudioSource, WavSource};
use lepton_runtime::{onnx, Model};
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

/// Classifies one file at a time with a model: pictures and recordings through the manifest,
/// `.npy` tensors directly (argmax of output 0).
pub struct Classifier {
    path: PathBuf,
    model: Option<Model>,
    manifest: Option<Manifest>,
    tensor_engine: Option<(TractEngine, Vec<usize>)>,
    audio: Option<AudioClassifier>,
    /// Class names, in output order (manifest labels, or indices).
    pub labels: Vec<String>,
}

struct AudioClassifier {
    engine: lepton_runtime::engine::AnyEngine,
    manifest: Manifest,
}

impl Classifier {
    /// Loads a model for classification.
    pub fn load(path: &Path) -> Result<Self> {
        let proto = onnx::read(path)?;
        let manifest = lepton_runtime::model::read_manifest(&proto, path)?;
        let labels = manifest.as_ref().map(|m| m.labels.clone()).unwrap_or_default();
        let mut c = Classifier {
            path: path.to_path_buf(),
            model: None,
            manifest: manifest.clone(),
            tensor_engine: None,
            audio: None,
            labels,
        };
        match manifest.as_ref().map(|m| m.task) {
            Some(Task::Classify) => c.model = Some(Model::load(path)?),
            Some(Task::Keyword | Task::Vad) => {
                let engine = Model::load(path)?.into_engine()?;
                c.audio = Some(AudioClassifier { engine, manifest: manifest.clone().expect("matched Some") });
            }
            Some(Task::Detect) => bail!(
                "{} is a detector: give a YOLO-labelled folder (DIR/images/*.jpg with DIR/labels/<name>.txt)",
                path.display()
            ),
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
        if self.tensor_engine.as_ref().is_none_or(|(_, s)| s.as_slice() != t.shape()) {
            let proto = onnx::read(&self.path)?;
            let (specs, _) = onnx::io_specs(&proto);
            let spec = specs.first().context("the model has no input")?;
            crate::inputs::check(spec, &t, file)?;
            let fact = InputFact { name: spec.name.clone(), shape: t.shape().to_vec(), dtype: Some(t.datum_type()) };
            self.tensor_engine = Some((TractEngine::from_proto(&proto, &self.path, &[fact])?, t.shape().to_vec()));
        }
        let (engine, _) = self.tensor_engine.as_mut().expect("set above");
        let out = engine.run_tensors(vec![t])?;
        let scores = out
            .first()
            .context("the model produced no output")?
            .cast_to::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let v = scores.to_plain_array_view::<f32>().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        argmax(v.iter().copied())
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
    let m = &a.manifest;
    let cfg = m.frontend_config(file)?;
    let audio = m.audio.as_ref().context("checked by frontend_config")?;
    let mut wav = WavSource::open(file)?;
    if wav.sample_rate() != cfg.sample_rate {
        bail!("{}: {} Hz, the model takes {} Hz", file.display(), wav.sample_rate(), cfg.sample_rate);
    }
    let samples = wav.read_all()?;
    let mut frontend: Box<Frontend<2048, 128>> = Box::new(Frontend::new(cfg).map_err(|e| anyhow::anyhow!("{e}"))?);
    let floor = (lepton_runtime::audio::frontend::LOG_FLOOR).ln();
    let mut window: Box<FeatureWindow<16384>> =
        Box::new(FeatureWindow::new(audio.frames, cfg.features(), floor).map_err(|e| anyhow::anyhow!("{e}"))?);
    frontend.push(samples.iter().copied(), |f| window.push(f));
    let mut features = vec![0.0f32; audio.frames * cfg.features()];
    window.copy_to(&mut features).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut input = a.engine.input_mut(0)?;
    input.quantize_from(&features).map_err(|e| anyhow::anyhow!("{e}"))?;
    a.engine.run()?;
    let out = a.engine.output(0)?;
    let mut probs = vec![0.0f32; out.len()];
    out.dequantize_into(&mut probs).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut best: heapless::Vec<lepton_runtime::Detection, 1> = heapless::Vec::new();
    lepton_runtime::vision::classify::top_k(&probs, m.output.scores, 0.0, &mut best);
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
    /// confusion[true][predicted].
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
pub fn evaluate(
    model: &mut Classifier,
    mut reference: Option<&mut Classifier>,
    samples: &[Sample],
    mut progress: impl FnMut(),
) -> Result<Metrics> {
    let labels: Vec<String> = if model.labels.is_empty() {
        let n = samples.iter().filter_map(|s| s.label.parse::<usize>().ok()).max().map_or(0, |m| m + 1);
        (0..n).map(|i| i.to_string()).collect()
    } else {
        model.labels.clone()
    };
    for s in samples {
        if class_of(&s.label, &labels).is_none() {
            bail!(
                "folder `{}` is not one of the model's labels ({}); name folders after the manifest labels",
                s.label,
                labels.join(", ")
            );
        }
    }
    let n = labels.len();
    let mut confusion = vec![vec![0usize; n]; n];
    let (mut correct, mut agree, mut compared, mut done) = (0, 0, 0, 0);
    let mut failed = vec![];
    for s in samples {
        let truth = class_of(&s.label, &labels).expect("checked above");
        match model.classify(&s.path) {
            Ok((pred, _)) => {
                done += 1;
                if pred < n {
                    confusion[truth][pred] += 1;
                }
                correct += usize::from(pred == truth);
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

/// 3x5 pixel digits for the confusion-matrix picture.
const DIGITS: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b010, 0b010, 0b010],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

fn draw_number(img: &mut image::RgbImage, n: usize, cx: u32, cy: u32, scale: u32, color: [u8; 3]) {
    let text = n.to_string();
    let w = text.len() as u32 * 4 * scale;
    let (x0, y0) = (cx.saturating_sub(w / 2), cy.saturating_sub(5 * scale / 2));
    for (k, ch) in text.bytes().enumerate() {
        let glyph = DIGITS[(ch - b'0') as usize];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let x = x0 + (k as u32 * 4 + col) * scale + dx;
                            let y = y0 + row as u32 * scale + dy;
                            if x < img.width() && y < img.height() {
                                img.put_pixel(x, y, image::Rgb(color));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Draws the confusion matrix: rows are true classes, columns predictions, cells shaded by
/// row-normalized counts with the count printed; class indices along the top and left.
pub fn plot(m: &Metrics, path: &Path) -> Result<()> {
    let n = m.labels.len().max(1) as u32;
    let cell = (480 / n).clamp(16, 64);
    let margin = cell;
    let size = margin + n * cell + 4;
    let mut img = image::RgbImage::from_pixel(size, size, image::Rgb([255, 255, 255]));
    let scale = (cell / 16).max(1);
    for i in 0..n {
        draw_number(&mut img, i as usize, margin + i * cell + cell / 2, margin / 2, scale, [60, 60, 60]);
        draw_number(&mut img, i as usize, margin / 2, margin + i * cell + cell / 2, scale, [60, 60, 60]);
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
                let ink = if frac > 0.5 { [255, 255, 255] } else { [0, 0, 0] };
                draw_number(&mut img, count, margin + j * cell + cell / 2, margin + i * cell + cell / 2, scale, ink);
            }
        }
    }
    img.save(path).with_context(|| format!("{}", path.display()))?;
    Ok(())
}
