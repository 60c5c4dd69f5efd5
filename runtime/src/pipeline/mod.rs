//! The pipeline: source → preprocess → engine → postprocess → sink, generic over each stage, with
//! counters. Buffers are allocated when the pipeline is built; the per-frame loop allocates
//! nothing of its own (the engine's internal allocations are tract's).
//!
//! [`Pipeline::run`] uses two threads: one takes frames from the source and preprocesses them
//! into one of two staging buffers, the other copies a ready buffer into the engine, runs it,
//! postprocesses and feeds the sink. Preprocessing frame N+1 thus overlaps inference of frame N,
//! and the per-frame time is close to the engine's alone. [`Pipeline::step`] does the same work
//! sequentially on the caller's thread.
//!
//! Motion gate ([`Pipeline::with_motion`]): before preprocessing, a frame is compared with the
//! scene's background ([`crate::vision::motion`]); a still frame skips preprocessing and the
//! engine, and is reported with the detections of the last frame the model saw
//! ([`FrameReport::inferred`] false). [`Stats::frames_inferred`] counts the frames the model ran on.
//!
//! Tracking ([`Pipeline::with_tracking`]): after postprocessing, a detector's boxes go through
//! the tracker ([`crate::vision::track`]); each detection's track is reported beside it
//! ([`FrameReport::tracks`]), with what happened to tracks on that frame. Zones
//! ([`Pipeline::with_zones`], [`crate::vision::zone`]) then report tracked objects entering and
//! leaving parts of the frame ([`FrameReport::zone_events`]).
//!
//! Drop policy: a live source hands over only its newest frame when inference lags, and counts the
//! ones it skipped ([`FrameSource::dropped`]); they appear in [`Stats::frames_dropped`]. A frame
//! that fails to decode is logged, counted in [`Stats::frames_failed`], and the run continues.

pub mod audio;
mod exchange;
pub mod vision;

use crate::engine::{Engine, StagingBuffer};
use crate::error::Result;
use crate::event::{Detection, Detections, Event, FrameMeta};
use crate::source::{Frame, FrameSource};
use crate::tensor::{TensorView, TensorViewMut};
use crate::vision::motion::{MotionGate, Wake};
use crate::vision::track::{TrackConfig, TrackEvent, TrackTag, Tracker, MAX_TRACK_EVENTS};
use crate::vision::zone::{ZoneEvent, Zones, MAX_ZONE_EVENTS};
use crate::vision::Transform;
use exchange::Exchange;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
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
    fn postprocess(&mut self, outputs: &[TensorView<'_>], transform: &Transform, out: &mut Detections) -> Result<()>;
}

/// What the pipeline reports for one processed frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameReport<'a> {
    /// Frame index and capture time (wall clock, or a recording's own timeline): for timestamps.
    pub meta: FrameMeta,
    /// When the frame was taken, on the pipeline's clock (from its start): for durations
    /// (presence holds, intervals). A recording's own timeline for sources that have one
    /// ([`FrameSource::own_timeline`]), else a monotonic clock ([`Instant`]); never the wall
    /// clock, which steps when it is set (a board without a real-time clock at NTP sync).
    pub clock: Duration,
    /// File name for file sources.
    pub source: Option<&'a str>,
    /// Detections (classes for a classifier, keywords heard), best first.
    pub detections: &'a [Detection],
    /// Debounced events that happened on this frame (speech start/end).
    pub events: &'a [Event],
    /// Each detection's track, in the order of `detections`; empty without tracking.
    pub tracks: &'a [TrackTag],
    /// Tracks confirmed, lost, stopped or moving again on this frame (none on a still frame).
    pub track_events: &'a [TrackEvent],
    /// Tracked objects that entered or left a zone on this frame (none on a still frame).
    pub zone_events: &'a [ZoneEvent],
    /// Whether the model ran on this frame; false for a still frame the motion gate held back,
    /// whose detections are those of the last frame the model saw.
    pub inferred: bool,
    /// Engine run time (zero when the model did not run).
    pub inference: Duration,
    /// Engine run + postprocessing time (preprocessing runs ahead, on its own thread in
    /// [`Pipeline::run`]).
    pub processing: Duration,
    /// Losses so far: frames the source skipped (vision) or samples it overran (audio).
    pub dropped: u64,
    /// Frames that failed to decode or preprocess so far (skipped).
    pub failed: u64,
}

/// Consumes results: stdout, MQTT, alerts.
pub trait Sink {
    /// Called once per processed frame.
    fn frame(&mut self, report: &FrameReport<'_>) -> Result<()>;
    /// Called once at the end of [`Pipeline::run`], before [`finish`](Self::finish), with tracking:
    /// every track still followed is lost (`track_events`), and the objects in zones leave them
    /// (`zone_events`).
    fn tracks_ended(&mut self, _stats: &Stats, _track_events: &[TrackEvent], _zone_events: &[ZoneEvent]) -> Result<()> {
        Ok(())
    }
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

    /// The samples of the recent window, oldest first when the window has not wrapped.
    pub fn recent(&self) -> impl Iterator<Item = Duration> + '_ {
        self.samples[..self.len].iter().map(|&us| Duration::from_micros(us as u64))
    }

    /// Samples recorded since creation.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of all samples since creation.
    pub fn total(&self) -> Duration {
        Duration::from_micros(self.total)
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
    /// Frames processed end to end (reported to the sink), still frames included.
    pub frames_processed: u64,
    /// Frames the model ran on: all processed frames without a motion gate; with one, those with
    /// motion, the first and the refreshes.
    pub frames_inferred: u64,
    /// Frames the source skipped because processing lagged (newest frame wins).
    pub frames_dropped: u64,
    /// Frames that failed to decode or preprocess (logged, skipped).
    pub frames_failed: u64,
    /// Boxes that could not start a track because the tracker followed its most tracks
    /// ([`crate::vision::track::MAX_TRACKS`]): reported without an id.
    pub untracked: u64,
    /// Preprocessing ran on its own thread, overlapping inference.
    pub overlapped: bool,
    /// Preprocessing times.
    pub preprocess: LatencyStats,
    /// Engine run times.
    pub inference: LatencyStats,
    /// Engine run + postprocessing times.
    pub processing: LatencyStats,
    /// Where the source's timeline stood when the run ended, in ms since the Unix epoch, for
    /// sources with a timeline of their own (a recording read faster than real time: its start
    /// plus its duration); `None` when frames carry wall-clock times. Events ending at the end of
    /// a run are stamped with it, so they never precede the detections of the same source.
    pub end_ms: Option<u64>,
    /// The pipeline's clock ([`FrameReport::clock`]) when the run ended: the end of a
    /// recording's timeline, else the monotonic time since the pipeline started.
    pub end_clock: Duration,
}

/// The pipeline's clock for durations ([`FrameReport::clock`]): a source's own timeline, else a
/// monotonic clock started with the pipeline. It never goes backwards.
#[derive(Debug, Clone, Copy)]
struct Clock {
    started: Instant,
    first_ms: Option<u64>,
    last: Duration,
}

impl Clock {
    fn new() -> Self {
        Clock { started: Instant::now(), first_ms: None, last: Duration::ZERO }
    }

    /// The clock of a frame just taken from a source (`own_timeline`: its timestamp is on the
    /// source's timeline).
    fn stamp(&mut self, own_timeline: bool, timestamp_ms: u64) -> Duration {
        let t = if own_timeline {
            let first = *self.first_ms.get_or_insert(timestamp_ms);
            Duration::from_millis(timestamp_ms.saturating_sub(first))
        } else {
            self.started.elapsed()
        };
        self.last = self.last.max(t);
        self.last
    }

    /// The clock at the end of a run: the last frame's on a source's own timeline, else now.
    fn end(&self, own_timeline: bool) -> Duration {
        if own_timeline {
            self.last
        } else {
            self.last.max(self.started.elapsed())
        }
    }
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
    clock: Clock,
    motion: Option<Box<MotionGate>>,
    tracking: Option<Box<Tracking>>,
}

/// The tracker of a pipeline and what it reported on the last frame the model saw.
struct Tracking {
    tracker: Tracker,
    high: f32,
    tags: heapless::Vec<TrackTag, { crate::event::MAX_DETECTIONS }>,
    events: heapless::Vec<TrackEvent, MAX_TRACK_EVENTS>,
    zones: Zones,
    zone_events: heapless::Vec<ZoneEvent, MAX_ZONE_EVENTS>,
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
            clock: Clock::new(),
            motion: None,
            tracking: None,
        }
    }

    /// Tracks the detections' boxes (detectors); `high`: the score that may start a track (the
    /// publication threshold).
    pub fn with_tracking(mut self, config: TrackConfig, high: f32) -> Self {
        self.tracking = Some(Box::new(Tracking {
            tracker: Tracker::new(config),
            high,
            tags: heapless::Vec::new(),
            events: heapless::Vec::new(),
            zones: Zones::new(),
            zone_events: heapless::Vec::new(),
        }));
        self
    }

    /// Reports tracked objects entering and leaving `zones` (after [`with_tracking`](Self::with_tracking):
    /// zones follow track ids, and an error says so without it).
    pub fn with_zones(mut self, zones: Zones) -> Result<Self> {
        match self.tracking.as_deref_mut() {
            Some(t) => t.zones = zones,
            None => {
                return Err(crate::LeptonError::Core {
                    context: "pipeline zones".into(),
                    error: crate::error::Error::InvalidConfig("zones follow tracked objects: enable tracking first"),
                })
            }
        }
        Ok(self)
    }

    /// Runs the model only on frames the motion gate admits (see the module's documentation).
    pub fn with_motion(mut self, gate: MotionGate) -> Self {
        self.motion = Some(Box::new(gate));
        self
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
        let own_timeline = self.source.own_timeline();
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
        let clock = self.clock.stamp(own_timeline, frame.meta.timestamp_ms);
        if admit(self.motion.as_deref_mut(), &frame, clock).is_none() {
            let (meta, name) = (frame.meta, frame.name);
            let tracks = self.tracking.as_deref().map_or(&[][..], |t| &t.tags[..]);
            return still(&mut self.sink, &self.detections, tracks, &mut self.stats, meta, clock, name).map(|()| true);
        }
        let t0 = Instant::now();
        let transform = match self.engine.input_mut(0).and_then(|input| self.pre.preprocess(&frame, input)) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("frame {} skipped: {e}", frame.meta.frame);
                self.stats.frames_failed += 1;
                return Ok(true);
            }
        };
        self.stats.preprocess.record(t0.elapsed());
        let (meta, name) = (frame.meta, frame.name);
        infer(
            &mut self.engine,
            &mut self.post,
            &mut self.sink,
            &mut self.detections,
            self.tracking.as_deref_mut(),
            &mut self.stats,
            meta,
            clock,
            name,
            &transform,
        )?;
        Ok(true)
    }

    /// Runs until the source is exhausted or the stop flag is set; returns the counters.
    ///
    /// The first frames run sequentially to measure preprocessing. When it costs more than handing
    /// a frame between threads (measured here too), preprocessing moves to a second thread and
    /// overlaps inference; otherwise the loop stays on this thread.
    pub fn run(&mut self) -> Result<&Stats>
    where
        S: Send,
        P: Send,
    {
        // A run that fails still ends its objects and finishes its sink; the first error wins.
        let ran = self.run_frames();
        let ended = self.end();
        ran.and(ended)?;
        Ok(&self.stats)
    }

    /// The frames until the source is exhausted, the stop flag is set or a step fails.
    fn run_frames(&mut self) -> Result<()>
    where
        S: Send,
        P: Send,
    {
        const PROBE_FRAMES: usize = 8;
        let mut more = true;
        for _ in 0..PROBE_FRAMES {
            more = !self.stop.load(Ordering::Relaxed) && self.step()?;
            if !more {
                break;
            }
        }
        if more {
            let preprocess = self.stats.preprocess.percentile(50.0);
            if preprocess > handoff_cost() {
                self.stats.overlapped = true;
                self.run_overlapped()?;
            } else {
                while !self.stop.load(Ordering::Relaxed) && self.step()? {}
            }
        }
        Ok(())
    }

    /// The end of a run: the objects still followed are lost (and leave their zones), then the
    /// sink finishes.
    fn end(&mut self) -> Result<()> {
        self.stats.frames_dropped = self.source.dropped();
        self.stats.end_clock = self.clock.end(self.source.own_timeline());
        let tracked = match self.tracking.as_deref_mut() {
            Some(t) => {
                t.events.clear();
                t.tracker.finish(&mut t.events);
                // Only losses: every object inside a zone leaves it.
                t.zones.update(1.0, 1.0, &[], &[], &t.events, &mut t.zone_events);
                self.sink.tracks_ended(&self.stats, &t.events, &t.zone_events)
            }
            None => Ok(()),
        };
        let finished = self.sink.finish(&self.stats);
        tracked.and(finished)
    }

    /// The two-thread loop: preprocessing of frame N+1 overlaps inference of frame N.
    fn run_overlapped(&mut self) -> Result<()>
    where
        S: Send,
        P: Send,
    {
        // Two spare input buffers circulate: one being filled while the other waits for the engine.
        let slot = |engine: &E| -> Result<Prepared<E::Buffer>> {
            Ok(Prepared {
                buffer: engine.new_buffer(0)?,
                meta: FrameMeta { frame: 0, timestamp_ms: 0 },
                clock: Duration::ZERO,
                name: heapless::String::new(),
                transform: Transform::identity(1.0, 1.0),
                still: false,
            })
        };
        let exchange = Exchange::new([slot(&self.engine)?, slot(&self.engine)?]);
        let Pipeline { source, pre, engine, post, sink, detections, stats, stop, clock, motion, tracking } = self;
        let motion = motion.as_deref_mut();
        let stop: &AtomicBool = stop;
        let exchange = &exchange;
        let (in0, failed0) = (stats.frames_in, stats.frames_failed);
        let dropped = std::sync::atomic::AtomicU64::new(stats.frames_dropped);
        let dropped = &dropped;
        std::thread::scope(|scope| -> Result<()> {
            let producer = scope.spawn(move || produce(source, pre, exchange, stop, dropped, clock, motion));
            let mut result = Ok(());
            while let Some(mut p) = exchange.take_ready() {
                stats.frames_dropped = dropped.load(Ordering::Relaxed);
                let name = (!p.name.is_empty()).then_some(p.name.as_str());
                let step = if p.still {
                    let tracks = tracking.as_deref().map_or(&[][..], |t| &t.tags[..]);
                    still(sink, detections, tracks, stats, p.meta, p.clock, name)
                } else {
                    engine.swap_input(0, &mut p.buffer).and_then(|()| {
                        let tracking = tracking.as_deref_mut();
                        infer(engine, post, sink, detections, tracking, stats, p.meta, p.clock, name, &p.transform)
                    })
                };
                exchange.release(p);
                if let Err(e) = step {
                    result = Err(e);
                    break;
                }
            }
            exchange.consumer_done();
            if let Ok(counts) = producer.join() {
                stats.frames_in = in0 + counts.frames_in;
                stats.frames_failed = failed0 + counts.frames_failed;
                for d in counts.preprocess.recent() {
                    stats.preprocess.record(d);
                }
            }
            result
        })
    }
}

/// Median round trip of a message between two threads: what overlapping costs per frame.
fn handoff_cost() -> Duration {
    let (to_tx, to_rx) = mpsc::sync_channel::<Instant>(1);
    let (back_tx, back_rx) = mpsc::sync_channel::<Instant>(1);
    let echo = std::thread::spawn(move || {
        while let Ok(t) = to_rx.recv() {
            if back_tx.send(t).is_err() {
                break;
            }
        }
    });
    let mut trips = [Duration::ZERO; 33];
    for trip in trips.iter_mut() {
        let _ = to_tx.send(Instant::now());
        *trip = back_rx.recv().map_or(Duration::MAX, |t| t.elapsed());
    }
    drop(to_tx);
    let _ = echo.join();
    trips.sort_unstable();
    trips[trips.len() / 2]
}

/// A preprocessed frame travelling from the preprocessing thread to the engine thread.
struct Prepared<B> {
    buffer: B,
    meta: FrameMeta,
    clock: Duration,
    name: heapless::String<128>,
    transform: Transform,
    /// Held back by the motion gate: no preprocessing, no engine run.
    still: bool,
}

/// Frame counters kept by the preprocessing thread.
#[derive(Default)]
struct SourceCounts {
    frames_in: u64,
    frames_failed: u64,
    preprocess: LatencyStats,
}

/// The preprocessing thread: source → preprocess → spare buffer → engine thread.
fn produce<S: FrameSource, P: Preprocess, B: StagingBuffer>(
    source: &mut S,
    pre: &mut P,
    exchange: &Exchange<Prepared<B>>,
    stop: &AtomicBool,
    dropped: &std::sync::atomic::AtomicU64,
    clock: &mut Clock,
    mut motion: Option<&mut MotionGate>,
) -> SourceCounts {
    let mut counts = SourceCounts::default();
    // Wait for a free buffer first, so a live source hands over its newest frame.
    while let Some(mut slot) = exchange.take_free() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        dropped.store(source.dropped(), Ordering::Relaxed);
        let own_timeline = source.own_timeline();
        let frame = match source.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("frame skipped: {e}");
                counts.frames_in += 1;
                counts.frames_failed += 1;
                exchange.put_free(slot);
                continue;
            }
        };
        counts.frames_in += 1;
        let at = clock.stamp(own_timeline, frame.meta.timestamp_ms);
        slot.meta = frame.meta;
        slot.clock = at;
        slot.name.clear();
        if let Some(n) = frame.name {
            // Names longer than 128 bytes are cut at a character boundary.
            for ch in n.chars() {
                if slot.name.push(ch).is_err() {
                    break;
                }
            }
        }
        slot.still = admit(motion.as_deref_mut(), &frame, at).is_none();
        if slot.still {
            exchange.put_ready(slot);
            continue;
        }
        let t0 = Instant::now();
        let t = slot.buffer.view_mut().and_then(|v| pre.preprocess(&frame, v));
        counts.preprocess.record(t0.elapsed());
        match t {
            Ok(transform) => {
                slot.transform = transform;
                exchange.put_ready(slot);
            }
            Err(e) => {
                tracing::warn!("frame {} skipped: {e}", frame.meta.frame);
                counts.frames_failed += 1;
                exchange.put_free(slot);
            }
        }
    }
    exchange.producer_done();
    counts
}

/// Runs the engine on its current input, postprocesses, updates counters and feeds the sink.
#[allow(clippy::too_many_arguments)]
fn infer<E: Engine, Q: Postprocess, K: Sink>(
    engine: &mut E,
    post: &mut Q,
    sink: &mut K,
    detections: &mut Detections,
    tracking: Option<&mut Tracking>,
    stats: &mut Stats,
    meta: FrameMeta,
    clock: Duration,
    source: Option<&str>,
    transform: &Transform,
) -> Result<()> {
    let t = Instant::now();
    engine.run()?;
    let inference = t.elapsed();
    let mut outputs: heapless::Vec<TensorView<'_>, MAX_OUTPUTS> = heapless::Vec::new();
    for i in 0..engine.outputs().len().min(MAX_OUTPUTS) {
        // Cannot overflow: bounded by MAX_OUTPUTS above.
        let _ = outputs.push(engine.output(i)?);
    }
    post.postprocess(&outputs, transform, detections)?;
    let (tracks, track_events, zone_events): (&[TrackTag], &[TrackEvent], &[ZoneEvent]) = match tracking {
        Some(tr) => {
            tr.events.clear();
            tr.tracker.update(clock.as_millis() as u64, detections, tr.high, &mut tr.tags, &mut tr.events);
            stats.untracked = tr.tracker.over_capacity;
            let (w, h) = (transform.source_width, transform.source_height);
            tr.zones.update(w, h, detections, &tr.tags, &tr.events, &mut tr.zone_events);
            (&tr.tags, &tr.events, &tr.zone_events)
        }
        None => (&[], &[], &[]),
    };
    let processing = t.elapsed();
    stats.frames_processed += 1;
    stats.frames_inferred += 1;
    stats.inference.record(inference);
    stats.processing.record(processing);
    let report = FrameReport {
        meta,
        clock,
        source,
        detections,
        events: &[],
        tracks,
        track_events,
        zone_events,
        inferred: true,
        inference,
        processing,
        dropped: stats.frames_dropped,
        failed: stats.frames_failed,
    };
    sink.frame(&report)
}

/// Asks the motion gate, when there is one, whether `frame` goes to the model.
fn admit(gate: Option<&mut MotionGate>, frame: &Frame<'_>, clock: Duration) -> Option<Wake> {
    match gate {
        Some(g) => g.admit(&frame.image, clock.as_millis() as u64),
        None => Some(Wake::Motion),
    }
}

/// Reports a still frame: the detections of the last frame the model saw stand.
fn still<K: Sink>(
    sink: &mut K,
    detections: &Detections,
    tracks: &[TrackTag],
    stats: &mut Stats,
    meta: FrameMeta,
    clock: Duration,
    source: Option<&str>,
) -> Result<()> {
    stats.frames_processed += 1;
    sink.frame(&FrameReport {
        meta,
        clock,
        source,
        detections,
        events: &[],
        tracks,
        track_events: &[],
        zone_events: &[],
        inferred: false,
        inference: Duration::ZERO,
        processing: Duration::ZERO,
        dropped: stats.frames_dropped,
        failed: stats.frames_failed,
    })
}
