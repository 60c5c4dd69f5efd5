//! The pipeline: source → preprocess → engine → postprocess → sink, generic over each stage, with
//! counters. Buffers are allocated when the pipeline is built; the per-frame loop allocates
//! nothing of its own (the engine's internal allocations are tract's).
//!
//! Drop policy: a live source hands over only its newest frame when inference lags, and counts the
//! ones it skipped ([`FrameSource::dropped`]); they appear in [`Stats::frames_dropped`]. A frame
//! that fails to decode is logged, counted in [`Stats::frames_failed`], and the run continues.

pub mod audio;
pub mod vision;

use crate::engine::Engine;
use crate::error::Result;
use crate::event::{Detection, Detections, Event, FrameMeta};
use crate::source::{Frame, FrameSource};
use crate::tensor::{TensorView, TensorViewMut};
use crate::vision::Transform;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use audio::{AudioPipeline, AudioStats};
pub use vision::{VisionPostprocess, VisionPreprocess};

/// Most outputs a model may have in the pipeline.
pub const MAX_OUTPUTS: usize = 8;

/// Writes a frame into the engine's input.
pub trait Preprocess {
    /// Converts `frame` into `input`; returns the transform mapping model coordinates to the frame.
    fn preprocess(&mut self, frame: &Frame<'_>, input: TensorViewMut<'_>) -> Result<Transform>;
}

/// Turns the engine's outputs into detections.
pub trait Postprocess {
    /// Reads `outputs` (model order) and writes the detections of this frame into `out`.
    fn postprocess(
        &mut self,
        outputs: &[TensorView<'_>],
        transform: &Transform,
        out: &mut Detections,
    ) -> Result<()>;
}

/// What the pipeline reports for one processed frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameReport<'a> {
    /// Frame index and capture time.
    pub meta: FrameMeta,
    /// File name for file sources.
    pub source: Option<&'a str>,
    /// Detections (classes for a classifier, keywords heard), best first.
    pub detections: &'a [Detection],
    /// Debounced events that happened on this frame (speech start/end).
    pub events: &'a [Event],
    /// Engine run time.
    pub inference: Duration,
    /// Preprocess + inference + postprocess time.
    pub processing: Duration,
}

/// Consumes results: stdout, MQTT, alerts.
pub trait Sink {
    /// Called once per processed frame.
    fn frame(&mut self, report: &FrameReport<'_>) -> Result<()>;
    /// Called once when the source is exhausted or the pipeline is stopped.
    fn finish(&mut self, _stats: &Stats) -> Result<()> {
        Ok(())
    }
}

/// Latency samples of the last [`LatencyStats::WINDOW`] frames, in microseconds, in fixed buffers.
#[derive(Debug, Clone)]
pub struct LatencyStats {
    samples: Box<[u32]>,
    scratch: Box<[u32]>,
    next: usize,
    len: usize,
    total: u64,
    count: u64,
}

impl Default for LatencyStats {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyStats {
    /// Number of recent samples kept for percentiles.
    pub const WINDOW: usize = 1024;

    /// Empty statistics (allocates its two buffers once).
    pub fn new() -> Self {
        LatencyStats {
            samples: vec![0; Self::WINDOW].into_boxed_slice(),
            scratch: vec![0; Self::WINDOW].into_boxed_slice(),
            next: 0,
            len: 0,
            total: 0,
            count: 0,
        }
    }

    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u32::MAX as u128) as u32;
        self.samples[self.next] = us;
        self.next = (self.next + 1) % Self::WINDOW;
        self.len = (self.len + 1).min(Self::WINDOW);
        self.total += us as u64;
        self.count += 1;
    }

    /// Samples recorded since creation.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean over all samples since creation.
    pub fn mean(&self) -> Duration {
        Duration::from_micros(self.total.checked_div(self.count).unwrap_or(0))
    }

    /// The `p`-th percentile (0..=100) of the recent window; zero when empty.
    pub fn percentile(&mut self, p: f64) -> Duration {
        if self.len == 0 {
            return Duration::ZERO;
        }
        let s = &mut self.scratch[..self.len];
        s.copy_from_slice(&self.samples[..self.len]);
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * (self.len - 1) as f64).round() as usize;
        let (_, v, _) = s.select_nth_unstable(rank);
        Duration::from_micros(*v as u64)
    }
}

/// Counters of a pipeline run.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Frames received from the source.
    pub frames_in: u64,
    /// Frames processed end to end.
    pub frames_processed: u64,
    /// Frames the source skipped because processing lagged (newest frame wins).
    pub frames_dropped: u64,
    /// Frames that failed to decode or preprocess (logged, skipped).
    pub frames_failed: u64,
    /// Engine run times.
    pub inference: LatencyStats,
    /// Preprocess + inference + postprocess times.
    pub processing: LatencyStats,
}

/// A vision pipeline over a frame source, stages and a sink.
pub struct Pipeline<S, P, E, Q, K> {
    source: S,
    pre: P,
    engine: E,
    post: Q,
    sink: K,
    detections: Detections,
    stats: Stats,
    stop: Arc<AtomicBool>,
}

impl<S: FrameSource, P: Preprocess, E: Engine, Q: Postprocess, K: Sink> Pipeline<S, P, E, Q, K> {
    /// Assembles a pipeline; every buffer it uses is allocated here.
    pub fn new(source: S, pre: P, engine: E, post: Q, sink: K) -> Self {
        Pipeline {
            source,
            pre,
            engine,
            post,
            sink,
            detections: Detections::new(),
            stats: Stats::default(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A flag that stops [`run`](Self::run) after the current frame when set (signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The engine (for its inputs and outputs).
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The engine, to run it alone (benchmarks) or inspect it.
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }

    /// The sink.
    pub fn sink(&self) -> &K {
        &self.sink
    }

    /// Processes one frame; `Ok(false)` when the source is exhausted.
    pub fn step(&mut self) -> Result<bool> {
        self.stats.frames_dropped = self.source.dropped();
        let frame = match self.source.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(false),
            Err(e) => {
                tracing::warn!("frame skipped: {e}");
                self.stats.frames_in += 1;
                self.stats.frames_failed += 1;
                return Ok(true);
            }
        };
        self.stats.frames_in += 1;
        let t0 = Instant::now();
        let transform = match self
            .engine
            .input_mut(0)
            .and_then(|input| self.pre.preprocess(&frame, input))
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("frame {} skipped: {e}", frame.meta.frame);
                self.stats.frames_failed += 1;
                return Ok(true);
            }
        };
        let t1 = Instant::now();
        self.engine.run()?;
        let inference = t1.elapsed();
        let mut outputs: heapless::Vec<TensorView<'_>, MAX_OUTPUTS> = heapless::Vec::new();
        for i in 0..self.engine.outputs().len().min(MAX_OUTPUTS) {
            // Cannot overflow: bounded by MAX_OUTPUTS above.
            let _ = outputs.push(self.engine.output(i)?);
        }
        self.post
            .postprocess(&outputs, &transform, &mut self.detections)?;
        let processing = t0.elapsed();
        self.stats.frames_processed += 1;
        self.stats.inference.record(inference);
        self.stats.processing.record(processing);
        let report = FrameReport {
            meta: frame.meta,
            source: frame.name,
            detections: &self.detections,
            events: &[],
            inference,
            processing,
        };
        self.sink.frame(&report)?;
        Ok(true)
    }

    /// Runs until the source is exhausted or the stop flag is set; returns the counters.
    pub fn run(&mut self) -> Result<&Stats> {
        while !self.stop.load(Ordering::Relaxed) && self.step()? {}
        self.stats.frames_dropped = self.source.dropped();
        self.sink.finish(&self.stats)?;
        Ok(&self.stats)
    }
}
