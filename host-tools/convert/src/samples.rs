//! Calibration samples: model inputs from a folder of `.npy` tensors (one per sample; one
//! subfolder per input for several inputs), or of pictures/recordings preprocessed through the
//! model's manifest exactly as the device does.

use anyhow::{bail, Context, Result};
use lepton_runtime::audio::{FeatureWindow, Frontend};
use lepton_runtime::image::{is_image_file, Image};
use lepton_runtime::manifest::{Manifest, Task};
use lepton_runtime::onnx::{ModelProto, TensorSpec};
use lepton_runtime::pipeline::{Preprocess, VisionPreprocess};
use lepton_runtime::source::{Frame, WavSource};
use lepton_runtime::tensor::{Quantization, TensorDataMut, TensorViewMut};
use lepton_runtime::FrameMeta;
use std::path::{Path, PathBuf};
use tract_onnx::prelude::*;

/// One set of model inputs, in model input order.
pub type Inputs = Vec<(String, Tensor)>;

fn files(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && keep(p))
        .collect();
    v.sort();
    Ok(v)
}

fn is_npy(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

fn is_wav(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav"))
}

/// Loads every sample of `dir` for `model` (its manifest, if any, in `manifest`).
pub fn load(dir: &Path, model: &ModelProto, manifest: Option<&Manifest>) -> Result<Vec<Inputs>> {
    let (specs, _) = lepton_runtime::onnx::io_specs(model);
    if specs.is_empty() {
        bail!("the model has no inputs");
    }
    let npys = files(dir, is_npy)?;
    let media = files(dir, |p| is_image_file(p) || is_wav(p))?;
    let samples = if specs.len() > 1 {
        multi_input(dir, &specs)?
    } else if !npys.is_empty() {
        npys.iter()
            .map(|p| {
                let t = crate::npy::read(p)?;
                crate::inputs::check(&specs[0], &t, p)?;
                Ok(vec![(specs[0].name.clone(), t)])
            })
            .collect::<Result<Vec<_>>>()?
    } else if !media.is_empty() {
        let m = manifest.with_context(|| {
            format!("{}: pictures and recordings need the model's manifest to be preprocessed; pack one, or give .npy tensors", dir.display())
        })?;
        media
            .iter()
            .map(|p| Ok(vec![(specs[0].name.clone(), shaped(preprocess_file(p, m)?, &specs[0], p)?)]))
            .collect::<Result<Vec<_>>>()?
    } else {
        vec![]
    };
    if samples.is_empty() {
        bail!(
            "{}: no calibration samples; put one .npy per sample there (or pictures/WAVs for a model with a manifest; one subfolder per input for several inputs)",
            dir.display()
        );
    }
    Ok(samples)
}

/// `t` laid out as the input declares (audio features come flat; the model takes e.g. 1x1xTxF).
fn shaped(t: Tensor, spec: &TensorSpec, path: &Path) -> Result<Tensor> {
    let Some(dims) = &spec.dims else { return Ok(t) };
    let fixed: Option<Vec<usize>> =
        dims.iter().map(|d| if let lepton_runtime::onnx::Dim::Fixed(n) = d { Some(*n) } else { None }).collect();
    let Some(shape) = fixed else { return Ok(t) };
    if shape == t.shape() {
        return Ok(t);
    }
    if shape.iter().product::<usize>() != t.len() {
        bail!(
            "{}: preprocessing gives {} values, input `{}` takes {} ({}); check the manifest's [audio] or [preprocess] section",
            path.display(),
            t.len(),
            spec.name,
            shape.iter().product::<usize>(),
            spec.shape_text()
        );
    }
    t.into_shape(&shape)
}

fn multi_input(dir: &Path, specs: &[TensorSpec]) -> Result<Vec<Inputs>> {
    let mut per_input = vec![];
    for s in specs {
        let sub = dir.join(&s.name);
        let f = files(&sub, is_npy).with_context(|| {
            format!("the model has {} inputs: expected one subfolder per input, named after it", specs.len())
        })?;
        per_input.push(f);
    }
    let n = per_input[0].len();
    if let Some((s, f)) = specs.iter().zip(&per_input).find(|(_, f)| f.len() != n) {
        bail!("{}: {} samples for input `{}`, {} for `{}`", dir.display(), f.len(), s.name, n, specs[0].name);
    }
    (0..n)
        .map(|i| {
            specs
                .iter()
                .zip(&per_input)
                .map(|(s, f)| {
                    let t = crate::npy::read(&f[i])?;
                    crate::inputs::check(s, &t, &f[i])?;
                    Ok((s.name.clone(), t))
                })
                .collect()
        })
        .collect()
}

/// A picture or recording turned into the model input, as the device computes it.
pub fn preprocess_file(path: &Path, m: &Manifest) -> Result<Tensor> {
    match m.task {
        Task::Classify | Task::Detect => {
            let cfg = m.preprocess_config(path)?;
            let shape = m.image_input_shape().context("checked by preprocess_config")?;
            let image = Image::open(path)?;
            let mut data = vec![0.0f32; cfg.len()];
            let view = TensorViewMut::new(&shape, TensorDataMut::F32(&mut data), Quantization::None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let frame =
                Frame { image: image.view()?, meta: FrameMeta { frame: 0, timestamp_ms: 0 }, name: Some(&image.name) };
            VisionPreprocess::new(cfg).preprocess(&frame, view)?;
            Ok(tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), data)?.into_tensor())
        }
        Task::Keyword | Task::Vad => {
            Ok(tract_ndarray::Array1::from_vec(clip_features(path, m)?).into_dyn().into_tensor())
        }
        Task::Raw => bail!("{}: a raw model takes .npy tensors", path.display()),
    }
}

/// Features of a whole clip: the last `frames` frames (silence-padded), flattened. A clip at
/// another rate is resampled to the model's first, as the daemon's `resample = true` does.
pub fn clip_features(path: &Path, m: &Manifest) -> Result<Vec<f32>> {
    let cfg = m.frontend_config(path)?;
    let audio = m.audio.as_ref().context("checked by frontend_config")?;
    let mut wav = lepton_runtime::source::Resampled::new(WavSource::open(path)?, cfg.sample_rate)?;
    let samples = lepton_runtime::source::read_all(&mut wav)?;
    let mut frontend: Box<Frontend<2048, 128>> = Box::new(Frontend::new(cfg).map_err(|e| anyhow::anyhow!("{e}"))?);
    let floor = lepton_runtime::audio::frontend::LOG_FLOOR.ln();
    let mut window: Box<FeatureWindow<16384>> =
        Box::new(FeatureWindow::new(audio.frames, cfg.features(), floor).map_err(|e| anyhow::anyhow!("{e}"))?);
    frontend.push(samples.iter().copied(), |f| window.push(f));
    let mut features = vec![0.0f32; audio.frames * cfg.features()];
    window.copy_to(&mut features).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(features)
}
