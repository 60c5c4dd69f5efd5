//! The audio pipeline: source samples → incremental frontend (log-mel/MFCC) → feature window →
//! engine every `stride` hops → keyword spotting or VAD → sink. Every sample is consumed in order;
//! samples a live source loses before they reach the pipeline are counted by the source
//! ([`AudioSource::overruns`]) and reported in [`AudioStats::samples_lost`].

use super::{FrameReport, Sink, Stats};
use crate::audio::{FeatureWindow, Frontend, KeywordSpotter, Vad};
use crate::engine::{Engine, TensorInfo};
use crate::error::{LeptonError, Result};
use crate::event::{Detections, Event, FrameMeta};
use crate::manifest::{Manifest, Task};
use crate::source::{now_ms, AudioSource};
use crate::tensor::TensorDataMut;
use crate::vision::classify::{to_probabilities, Scores};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Largest FFT the frontend takes.
pub const MAX_FFT: usize = 2048;
/// Most mel bands.
pub const MAX_MELS: usize = 128;
/// Most floats in one model input (frames × features).
pub const MAX_WINDOW: usize = 16384;
/// Most classes of a keyword model.
pub const MAX_KEYWORDS: usize = 64;
/// Most posteriors a keyword decision smooths over.
pub const MAX_SMOOTHING: usize = 32;

/// What turns posteriors into results.
#[derive(Debug)]
pub enum AudioDecision {
    /// Keyword spotting.
    Keyword(Box<KeywordSpotter<MAX_KEYWORDS, MAX_SMOOTHING>>),
    /// Voice activity, on the probability of `class`.
    Vad(Vad, usize),
}

/// Counters of an audio run.
#[derive(Debug, Clone, Default)]
pub struct AudioStats {
    /// Model runs, engine and window timings.
    pub runs: Stats,
    /// Samples consumed.
    pub samples: u64,
    /// Samples the source lost before the pipeline read them (overruns).
    pub samples_lost: u64,
}

/// An audio pipeline over a source, an engine and a sink; buffers are allocated here.
pub struct AudioPipeline<S, E, K> {
    source: S,
    engine: E,
    sink: K,
    frontend: Box<Frontend<MAX_FFT, MAX_MELS>>,
    window: Box<FeatureWindow<MAX_WINDOW>>,
    decision: AudioDecision,
    scores: Scores,
    stride: usize,
    block: Vec<f32>,
    features: Vec<f32>,
    posteriors: Vec<f32>,
    since_run: usize,
    started_ms: u64,
    stats: AudioStats,
    stop: Arc<AtomicBool>,
}

impl<S: AudioSource, E: Engine, K: Sink> AudioPipeline<S, E, K> {
    /// Assembles the pipeline from a keyword or VAD model's manifest.
    pub fn new(source: S, engine: E, sink: K, manifest: &Manifest, path: &Path) -> Result<Self> {
        let field =
            |f: &str, reason: String| LeptonError::Manifest { path: path.to_path_buf(), field: f.into(), reason };
        let cfg = manifest.frontend_config(path)?;
        let audio = manifest.audio.as_ref().ok_or_else(|| field("audio", "required".into()))?;
        if source.sample_rate() != cfg.sample_rate {
            return Err(field(
                "audio.sample_rate",
                format!(
                    "the model expects {} Hz but {} delivers {} Hz; resample it first (e.g. `sox in.wav -r {} out.wav`)",
                    cfg.sample_rate,
                    source.name().unwrap_or("the source"),
                    source.sample_rate(),
                    cfg.sample_rate
                ),
            ));
        }
        let frontend = Frontend::new(cfg).map_err(|e| LeptonError::core(path.display().to_string(), e))?;
        let features = cfg.features();
        let window = FeatureWindow::new(audio.frames, features, libm::logf(crate::audio::frontend::LOG_FLOOR))
            .map_err(|e| field("audio.frames", format!("{e} (frames × features must be ≤ {MAX_WINDOW})")))?;
        let input: &TensorInfo =
            engine.inputs().first().ok_or_else(|| field("audio", "the model has no input".into()))?;
        let volume: usize = input.shape.iter().product();
        if volume != audio.frames * features {
            return Err(field(
                "audio.frames",
                format!(
                    "{} frames × {features} features = {} values, but input `{}` holds {volume} ({:?})",
                    audio.frames,
                    audio.frames * features,
                    input.name,
                    input.shape
                ),
            ));
        }
        let classes: usize = engine.outputs().first().map_or(0, |o| o.shape.iter().product());
        let decision = match manifest.task {
            Task::Keyword => {
                let k = KeywordSpotter::new(manifest.keyword_config(path)?, classes)
                    .map_err(|e| field("labels", format!("{e} (output has {classes} classes)")))?;
                AudioDecision::Keyword(Box::new(k))
            }
            Task::Vad => {
                let v = manifest.vad_config(path)?;
                let class = v.class as usize;
                if class >= classes.max(1) {
                    return Err(field("labels", format!("speech class {class} but the output has {classes} values")));
                }
                AudioDecision::Vad(Vad::new(v).map_err(|e| LeptonError::core(path.display().to_string(), e))?, class)
            }
            other => return Err(field("task", format!("{} is not an audio task", other.name()))),
        };
        // Read one hop per block, so each block completes at most one frame.
        Ok(AudioPipeline {
            source,
            engine,
            sink,
            frontend: Box::new(frontend),
            window: Box::new(window),
            decision,
            scores: manifest.output.scores,
            stride: audio.stride,
            block: vec![0.0; cfg.hop],
            features: vec![0.0; audio.frames * features],
            posteriors: vec![0.0; classes],
            since_run: 0,
            started_ms: now_ms(),
            stats: AudioStats::default(),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A flag that stops [`run`](Self::run) when set.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Counters so far.
    pub fn stats(&self) -> &AudioStats {
        &self.stats
    }

    /// The sink.
    pub fn sink(&self) -> &K {
        &self.sink
    }

    /// The engine (its outputs hold the last run's results).
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// Consumes one block of samples; `Ok(false)` at the end of the source.
    pub fn step(&mut self) -> Result<bool> {
        let n = self.source.read(&mut self.block)?;
        self.stats.samples_lost = self.source.overruns();
        if n == 0 {
            return Ok(false);
        }
        self.stats.samples += n as u64;
        let mut completed = false;
        let window = &mut self.window;
        self.frontend.push(self.block[..n].iter().copied(), |f| {
            window.push(f);
            completed = true;
        });
        if !completed {
            return Ok(true);
        }
        self.since_run += 1;
        if !self.window.is_full() || self.since_run < self.stride {
            return Ok(true);
        }
        self.since_run = 0;
        self.infer()?;
        Ok(true)
    }

    fn infer(&mut self) -> Result<()> {
        let t0 = Instant::now();
        self.window.copy_to(&mut self.features).map_err(|e| LeptonError::core("feature window", e))?;
        let mut input = self.engine.input_mut(0)?;
        match input.data_mut() {
            TensorDataMut::F32(d) => d.copy_from_slice(&self.features),
            _ => input.quantize_from(&self.features).map_err(|e| LeptonError::core("audio input", e))?,
        }
        let t1 = Instant::now();
        self.engine.run()?;
        let inference = t1.elapsed();
        self.engine
            .output(0)?
            .dequantize_into(&mut self.posteriors)
            .map_err(|e| LeptonError::core("audio output", e))?;
        to_probabilities(&mut self.posteriors, self.scores);
        let stream_ms = self.stream_now_ms() - self.started_ms;
        let mut detections = Detections::new();
        let mut events: heapless::Vec<Event, 2> = heapless::Vec::new();
        match &mut self.decision {
            AudioDecision::Keyword(k) => {
                if let Some(hit) = k.update(stream_ms, &self.posteriors).map_err(|e| LeptonError::core("keyword", e))? {
                    let _ = detections.push(hit);
                }
            }
            AudioDecision::Vad(v, class) => {
                if let Some(mut e) = v.update(stream_ms, self.posteriors[*class]) {
                    e.timestamp_ms += self.started_ms;
                    let _ = events.push(e);
                }
            }
        }
        let processing = t0.elapsed();
        let runs = &mut self.stats.runs;
        let meta = FrameMeta { frame: runs.frames_processed, timestamp_ms: self.started_ms + stream_ms };
        runs.frames_in += 1;
        runs.frames_processed += 1;
        runs.frames_inferred += 1;
        runs.inference.record(inference);
        runs.processing.record(processing);
        let report = FrameReport {
            meta,
            // The audio consumed is this pipeline's clock: monotonic on a file and a microphone.
            clock: std::time::Duration::from_millis(stream_ms),
            source: self.source.name(),
            detections: &detections,
            events: &events,
            tracks: &[],
            track_events: &[],
            zone_events: &[],
            inferred: true,
            inference,
            processing,
            dropped: self.stats.samples_lost,
            failed: 0,
        };
        self.sink.frame(&report)
    }

    /// The time on this source's timeline now: its start plus the audio consumed.
    fn stream_now_ms(&self) -> u64 {
        self.started_ms + self.stats.samples * 1000 / self.frontend.config().sample_rate as u64
    }

    /// Ends the run after the last [`step`](Self::step): tells the sink, with the end of the
    /// source's timeline.
    pub fn finish(&mut self) -> Result<&AudioStats> {
        self.stats.runs.end_ms = Some(self.stream_now_ms());
        self.stats.runs.end_clock = std::time::Duration::from_millis(self.stream_now_ms() - self.started_ms);
        self.sink.finish(&self.stats.runs)?;
        Ok(&self.stats)
    }

    /// Runs until the source ends or the stop flag is set.
    pub fn run(&mut self) -> Result<&AudioStats> {
        while !self.stop.load(Ordering::Relaxed) && self.step()? {}
        self.finish()
    }
}
