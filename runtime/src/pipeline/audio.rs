//! The audio pipeline: source samples → incremental frontend → model input → engine → keyword
//! spotting, wake word or VAD → sink. Two frontends: log-mel/MFCC frames in a window that slides
//! by `stride` hops (keyword and VAD models), or TFLite Micro's fixed-point features, `stride`
//! rows per run of a streaming microWakeWord model (state kept by the model, reset at the start).
//! Every sample is consumed in order; samples a live source loses before they reach the pipeline
//! are counted by the source ([`AudioSource::overruns`]) and reported in
//! [`AudioStats::samples_lost`].

use super::{FrameReport, Sink, Stats};
use crate::audio::{FeatureWindow, Frontend, InputQuant, KeywordSpotter, MicroFrontend, Vad, WakeWord, WakeWordConfig};
use crate::engine::{Engine, TensorInfo};
use crate::error::{LeptonError, Result};
use crate::event::{Detections, Event, FrameMeta};
use crate::manifest::{Manifest, Task, MAX_WAKE_WINDOW};
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
    /// A microWakeWord model's decision (it also quantizes the features into the input).
    WakeWord(Box<WakeWord<MAX_WAKE_WINDOW>>),
}

/// What turns samples into model inputs.
enum Features {
    /// Log-mel/MFCC frames in a window that slides by `stride` hops.
    Mel {
        frontend: Box<Frontend<MAX_FFT, MAX_MELS>>,
        window: Box<FeatureWindow<MAX_WINDOW>>,
        stride: usize,
        since_run: usize,
        /// The window as one input.
        values: Vec<f32>,
    },
    /// TFLite Micro's features: rows quantized into `input` by the wake-word decision.
    Micro {
        frontend: Box<MicroFrontend>,
        /// The block as 16-bit samples.
        pcm: Vec<i16>,
        /// The next input, filled row by row.
        input: Vec<i8>,
    },
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
    features: Features,
    sample_rate: u32,
    decision: AudioDecision,
    scores: Scores,
    block: Vec<f32>,
    posteriors: Vec<f32>,
    started_ms: u64,
    stats: AudioStats,
    stop: Arc<AtomicBool>,
}

impl<S: AudioSource, E: Engine, K: Sink> AudioPipeline<S, E, K> {
    /// Assembles the pipeline from a keyword, wake-word or VAD model's manifest.
    pub fn new(source: S, mut engine: E, sink: K, manifest: &Manifest, path: &Path) -> Result<Self> {
        let field =
            |f: &str, reason: String| LeptonError::Manifest { path: path.to_path_buf(), field: f.into(), reason };
        if manifest.wake_word.is_some() {
            let (cfg, w) = manifest.micro_frontend_config(path)?;
            check_rate(&source, cfg.sample_rate, path)?;
            let frontend = MicroFrontend::new(cfg).map_err(|e| LeptonError::core(path.display().to_string(), e))?;
            let input: &TensorInfo =
                engine.inputs().first().ok_or_else(|| field("wake_word", "the model has no input".into()))?;
            let (Some(crate::tensor::DType::I8), Some((scale, zero)), &[1, stride, channels]) =
                (input.dtype, input.quant, &input.shape[..])
            else {
                return Err(field(
                    "wake_word",
                    format!(
                        "a wake-word model takes int8 features shaped [1, stride, {}]; input `{}` is {:?} {:?}",
                        cfg.channels, input.name, input.dtype, input.shape
                    ),
                ));
            };
            if channels != frontend.channels() {
                return Err(field(
                    "wake_word",
                    format!(
                        "input `{}` takes {channels} features per row; the frontend gives {}",
                        input.name,
                        frontend.channels()
                    ),
                ));
            }
            let classes: usize = engine.outputs().first().map_or(0, |o| o.shape.iter().product());
            if classes != 1 {
                return Err(field(
                    "wake_word",
                    format!("a wake-word model gives one probability; this one gives {classes}"),
                ));
            }
            let wcfg = WakeWordConfig {
                cutoff: w.probability_cutoff,
                window: w.sliding_window_size,
                stride,
                channels,
                refractory_ms: w.refractory_ms,
            };
            let wake = WakeWord::new(wcfg, InputQuant { scale, zero })
                .map_err(|e| LeptonError::core(path.display().to_string(), e))?;
            // A new stream: the model's state starts from its initial value.
            engine.reset()?;
            let step = frontend.step();
            return Ok(AudioPipeline {
                source,
                engine,
                sink,
                features: Features::Micro {
                    frontend: Box::new(frontend),
                    pcm: vec![0; step],
                    input: vec![0; stride * channels],
                },
                sample_rate: cfg.sample_rate,
                decision: AudioDecision::WakeWord(Box::new(wake)),
                scores: crate::vision::classify::Scores::Probabilities,
                block: vec![0.0; step],
                posteriors: vec![0.0; 1],
                started_ms: now_ms(),
                stats: AudioStats::default(),
                stop: Arc::new(AtomicBool::new(false)),
            });
        }
        let cfg = manifest.frontend_config(path)?;
        let audio = manifest.audio.as_ref().ok_or_else(|| field("audio", "required".into()))?;
        check_rate(&source, cfg.sample_rate, path)?;
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
            features: Features::Mel {
                frontend: Box::new(frontend),
                window: Box::new(window),
                stride: audio.stride,
                since_run: 0,
                values: vec![0.0; audio.frames * features],
            },
            sample_rate: cfg.sample_rate,
            decision,
            scores: manifest.output.scores,
            block: vec![0.0; cfg.hop],
            posteriors: vec![0.0; classes],
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
        match &mut self.features {
            Features::Mel { frontend, window, stride, since_run, values } => {
                let mut completed = false;
                frontend.push(self.block[..n].iter().copied(), |f| {
                    window.push(f);
                    completed = true;
                });
                if !completed {
                    return Ok(true);
                }
                *since_run += 1;
                if !window.is_full() || *since_run < *stride {
                    return Ok(true);
                }
                *since_run = 0;
                window.copy_to(values).map_err(|e| LeptonError::core("feature window", e))?;
                self.infer()?;
            }
            Features::Micro { pcm, .. } => {
                // Sources give i16 / 32768 (a WAV exactly); others are rounded and clamped.
                for (d, &v) in pcm.iter_mut().zip(&self.block[..n]) {
                    *d = libm::roundf(v * 32768.0).clamp(-32768.0, 32767.0) as i16;
                }
                let mut at = 0;
                while at < n {
                    let ready = match (&mut self.features, &mut self.decision) {
                        (Features::Micro { frontend, pcm, input }, AudioDecision::WakeWord(wake)) => {
                            let (took, row) = frontend.process(&pcm[at..n]);
                            at += took;
                            match row {
                                Some(row) => {
                                    wake.push_features(row, input).map_err(|e| LeptonError::core("wake word", e))?
                                }
                                None => false,
                            }
                        }
                        _ => unreachable!("a micro frontend comes with a wake-word decision"),
                    };
                    if ready {
                        self.infer()?;
                    }
                }
            }
        }
        Ok(true)
    }

    fn infer(&mut self) -> Result<()> {
        let t0 = Instant::now();
        let mut input = self.engine.input_mut(0)?;
        match (&self.features, input.data_mut()) {
            (Features::Mel { values, .. }, TensorDataMut::F32(d)) => d.copy_from_slice(values),
            (Features::Mel { values, .. }, _) => {
                input.quantize_from(values).map_err(|e| LeptonError::core("audio input", e))?
            }
            (Features::Micro { input: q, .. }, TensorDataMut::I8(d)) => d.copy_from_slice(q),
            (Features::Micro { .. }, _) => {
                return Err(LeptonError::core("wake word", crate::error::Error::InvalidConfig("input type")))
            }
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
            AudioDecision::WakeWord(w) => {
                if let Some(hit) = w.push_probability(stream_ms, self.posteriors[0]) {
                    let _ = detections.push(hit);
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
        self.started_ms + self.stats.samples * 1000 / self.sample_rate as u64
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

/// Refuses a source whose rate is not the model's, saying how to fix it.
fn check_rate<S: AudioSource>(source: &S, rate: u32, path: &Path) -> Result<()> {
    if source.sample_rate() == rate {
        return Ok(());
    }
    Err(LeptonError::Manifest {
        path: path.to_path_buf(),
        field: "audio.sample_rate".into(),
        reason: format!(
            "the model expects {rate} Hz but {} delivers {} Hz; resample it first (e.g. `sox in.wav -r {rate} out.wav`)",
            source.name().unwrap_or("the source"),
            source.sample_rate(),
        ),
    })
}
