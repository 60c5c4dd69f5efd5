//! Before anything runs: each plan's model loaded (checked against `[security]`), its manifest
//! read, its source, snapshots and alert lines checked against the model, and the board's memory
//! budget compared with the peak. `lepton check` and the start of `lepton run` share these.

use super::setup::{source_name, ModelRef, Plan, SourceRef, Trust};
use crate::alert;
use crate::board::Board;
use crate::config::{EngineKind, Source};
use anyhow::{bail, Context, Result};
use lepton_runtime::engine::EngineChoice;
use lepton_runtime::manifest::Manifest;
use lepton_runtime::source::{AudioSource, WavSource};
use lepton_runtime::Model;

/// Peak resident memory of this process so far, in MiB (Linux `VmHWM`).
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Compares the peak memory after loading the models with the board's budget: `Err` when over.
pub fn check_memory_budget(board: Option<&Board>) -> Result<Option<String>> {
    let (Some(b), Some(peak)) = (board, peak_memory_mib()) else { return Ok(None) };
    let Some(budget) = b.memory_budget_mb else { return Ok(None) };
    let line = format!("peak memory {peak:.0} MiB of board {}'s {budget} MiB budget", b.name);
    if peak > budget as f64 {
        bail!("{line}: over budget; use smaller or int8 models, fewer pipelines, or a bigger board");
    }
    Ok(Some(line))
}

fn choice(e: EngineKind) -> EngineChoice {
    match e {
        EngineKind::Auto => EngineChoice::Auto,
        EngineKind::Tract => EngineChoice::Tract,
        EngineKind::Micro => EngineChoice::Micro,
    }
}

/// Loads a plan's model: the bytes read once, checked against `[security]`, then loaded.
pub fn load_model(plan: &Plan, trust: &Trust) -> Result<Model> {
    Ok(match &plan.model {
        ModelRef::File(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("{}", p.display()))?;
            trust.check(&bytes, p)?;
            Model::from_bytes_with(&bytes, p, choice(plan.engine))?
        }
        ModelRef::Bundled(bytes, name) => Model::from_bytes(bytes, name)?,
    })
}

pub(super) fn model_name(plan: &Plan) -> String {
    match &plan.model {
        ModelRef::File(p) => {
            p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
        }
        ModelRef::Bundled(_, name) => name.rsplit('/').next().unwrap_or(name).to_string(),
    }
}

/// The model as a user names it: its path, or the bundled name.
pub(super) fn model_label(plan: &Plan) -> String {
    match &plan.model {
        ModelRef::File(p) => p.display().to_string(),
        ModelRef::Bundled(_, name) => name.to_string(),
    }
}

/// A pipeline that passed every check `run` can make before capturing.
pub struct Checked {
    /// The pipeline.
    pub plan: Plan,
    /// Its model, loaded.
    pub model: Model,
    /// The model's manifest.
    pub manifest: Manifest,
    /// Its alert outputs: (chip, line), each present.
    pub lines: Vec<(String, u32)>,
}

/// Checks one pipeline as far as it can be without capturing or connecting: the model loads and
/// carries a manifest, the source suits the model (kind; a WAV file's sample rate), the alert
/// labels are the model's and their GPIO chips and lines exist. `lepton check` and the start of
/// `lepton run` make the same checks, before anything is published.
pub fn check_plan(plan: Plan, board: Option<&Board>, trust: &Trust) -> Result<Checked> {
    let at = format!("pipeline `{}`", plan.name);
    let model = load_model(&plan, trust).with_context(|| at.clone())?;
    let Some(manifest) = model.manifest().cloned() else {
        bail!(
            "{at}: {} has no manifest; embed one with `lepton-convert pack` (README, \"Model manifest\")",
            model_label(&plan)
        );
    };
    let task = manifest.task;
    let takes = if task.is_vision() {
        "pictures: use an images, camera, rtsp, http or video source"
    } else if task.is_audio() {
        "audio: use a wav or mic source"
    } else {
        "tensors, which no source delivers: pack a manifest with task classify, detect, keyword or vad"
    };
    let suits = match &plan.source {
        SourceRef::Pictures(_)
        | SourceRef::Config(
            Source::Images { .. }
            | Source::Camera { .. }
            | Source::Rtsp { .. }
            | Source::Http { .. }
            | Source::Video { .. },
        ) => task.is_vision(),
        SourceRef::Recording(..) | SourceRef::Config(Source::Wav { .. } | Source::Mic { .. }) => task.is_audio(),
    };
    if !suits {
        bail!(
            "{at}: {} is a {} model, which takes {takes} (not {})",
            model_label(&plan),
            task.name(),
            source_name(&plan.source)
        );
    }
    if let SourceRef::Config(Source::Video { path, .. }) = &plan.source {
        // The container and the codec, as the source will open them (nothing decoded): a file it
        // would refuse is refused here, before the device goes online.
        lepton_runtime::source::video::inspect(path).with_context(|| at.clone())?;
    }
    if task.is_audio() {
        let rate = manifest.audio.as_ref().map_or(16000, |a| a.sample_rate);
        let (from, resample, what) = match &plan.source {
            SourceRef::Config(Source::Wav { path, resample, .. }) => (
                Some(WavSource::open(path).with_context(|| at.clone())?.sample_rate()),
                *resample,
                path.display().to_string(),
            ),
            SourceRef::Config(Source::Mic { rate: r, resample, .. }) => (*r, *resample, "the microphone's rate".into()),
            _ => (None, false, String::new()),
        };
        if let Some(from) = from.filter(|&f| f != rate && !resample) {
            bail!(
                "{at}: {what} is {from} Hz but the model takes {rate} Hz: set resample = true in [pipeline.source] to convert it (or convert the file: sox in.wav -r {rate} out.wav)"
            );
        }
    }
    if plan.snapshot.is_some() && !task.is_vision() {
        bail!("{at}: a {} model hears audio: [pipeline.snapshot] is for vision pipelines; remove it", task.name());
    }
    if !plan.zones.is_empty() {
        if task != lepton_runtime::manifest::Task::Detect {
            bail!(
                "{at}: {} is a {} model: [[pipeline.zone]] counts the boxes of detectors; remove the zones",
                model_label(&plan),
                task.name()
            );
        }
        crate::config::zone::build(&plan.zones, &manifest.labels).with_context(|| at.clone())?;
    }
    let lines = alert::check(&plan.name, &plan.alerts, board, &manifest.labels)?;
    Ok(Checked { plan, model, manifest, lines })
}
