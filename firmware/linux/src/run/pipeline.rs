//! One pipeline's thread: its source opened, its stages built from the model, run into its sink
//! until the source ends or a stop is asked.

use super::capture::{open_frames, Samples};
use super::load::{model_name, Checked};
use super::setup::{source_name, SourceRef};
use super::stop::{register, Stoppers};
use crate::board::Board;
use crate::config::{self, Source};
use crate::console::say;
use crate::sink::DaemonSink;
use anyhow::{bail, Result};
use lepton_runtime::manifest::Task;
use lepton_runtime::pipeline::{AudioPipeline, Pipeline};
use lepton_runtime::source::mic::{MicOptions, MicSource};
use lepton_runtime::source::retain::{FrameRing, Retained};
use lepton_runtime::source::{AudioSource, Resampled, WavSource};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Runs one checked pipeline to its end (or until stopped).
pub(super) fn run_pipeline(
    checked: Checked,
    sink: DaemonSink,
    ring: Option<FrameRing>,
    board: Option<Board>,
    stoppers: Stoppers,
    stopping: Arc<AtomicBool>,
) -> Result<()> {
    let Checked { plan, model, manifest, .. } = checked;
    let cam = board.as_ref().map(|b| b.camera.clone()).unwrap_or_default();
    let mic_defaults = board.as_ref().map(|b| b.mic.clone()).unwrap_or_default();
    let model_path = PathBuf::from(model_name(&plan));
    if manifest.task.is_vision() {
        let frames = open_frames(plan.source, &cam, &stoppers, &stopping, sink.clip_tap())?;
        sink.status().lock().unwrap_or_else(|p| p.into_inner()).source = frames.health();
        let stages = model.into_vision_stages()?;
        // With snapshots, the frames are also kept for the sink to picture.
        let frames = Retained::new(frames, ring);
        let mut p = Pipeline::new(frames, stages.pre, stages.engine, stages.post, sink);
        if let Some(m) = &plan.motion {
            p = p.with_motion(m.gate(&plan.masks)?);
        }
        if manifest.task == Task::Detect && plan.track.enabled {
            p = p.with_tracking(plan.track.config(), plan.threshold);
            if !plan.zones.is_empty() {
                p = p.with_zones(config::zone::build(&plan.zones, &manifest.labels)?)?;
            }
        }
        let flag = p.stop_flag();
        register(&stoppers, &stopping, move || flag.store(true, Ordering::Relaxed));
        p.run()?;
        return Ok(());
    }
    let rate = manifest.audio.as_ref().map_or(16000, |a| a.sample_rate);
    let samples = match plan.source {
        SourceRef::Recording(bytes, name) => Samples::Wav(WavSource::from_bytes(bytes, name)?),
        SourceRef::Config(Source::Wav { path, looping, .. }) => {
            let wav = WavSource::open(&path)?;
            Samples::Wav(if looping { wav.looping() } else { wav })
        }
        SourceRef::Config(Source::Mic { device, rate: r, duration_s, .. }) => {
            let mic = MicSource::open(&MicOptions {
                device: device.or(mic_defaults.device),
                rate: r.or(mic_defaults.rate).unwrap_or(rate),
                duration_s: duration_s.map(config::Seconds::get),
            })?;
            register(&stoppers, &stopping, mic.stopper());
            Samples::Mic(mic)
        }
        other => bail!("an audio model cannot take {} (checked at start)", source_name(&other)),
    };
    if samples.sample_rate() != rate {
        tracing::info!("pipeline {}: resampling {} Hz to the model's {rate} Hz", plan.name, samples.sample_rate());
    }
    let samples = Resampled::new(samples, rate)?;
    let engine = model.into_engine()?;
    let mut p = AudioPipeline::new(samples, engine, sink, &manifest, &model_path)?;
    let flag = p.stop_flag();
    register(&stoppers, &stopping, move || flag.store(true, Ordering::Relaxed));
    let lost = p.run()?.samples_lost;
    if lost > 0 {
        say!(
            "{}: {lost} audio samples lost ({:.2} s): the source delivered faster than the pipeline consumed",
            plan.name,
            lost as f64 / f64::from(rate)
        );
    }
    Ok(())
}
