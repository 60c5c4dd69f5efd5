//! The per-frame loop allocates nothing outside the engine: a counting global allocator watches
//! the pipeline (source replaying decoded frames → preprocess → tract → postprocess → sink) after
//! warm-up. tract's own allocations are counted separately and reported, not asserted.
//!
//! This test binary has no libtest harness (`harness = false`): the harness's own threads would
//! allocate while the global counter is on.

use lepton_runtime::engine::{Engine, TensorInfo};
use lepton_runtime::image::{load_dir, Image};
use lepton_runtime::pipeline::{FrameReport, Pipeline, Sink};
use lepton_runtime::source::{ImageSource, ImageSourceOptions};
use lepton_runtime::tensor::{TensorView, TensorViewMut};
use lepton_runtime::vision::motion::{MotionConfig, MotionGate};
use lepton_runtime::vision::region::Region;
use lepton_runtime::vision::track::TrackConfig;
use lepton_runtime::vision::zone::{Zone, Zones};
use lepton_runtime::vision::PixelFormat;
use lepton_runtime::{LeptonError, Model};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

struct Counting;

// Counting is switched on and off globally (the pipeline uses two threads); the engine flag is
// per thread, so only the engine's own allocations are attributed to it.
static COUNTING: AtomicBool = AtomicBool::new(false);
static OUTSIDE: AtomicU64 = AtomicU64::new(0);
static ENGINE: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static IN_ENGINE: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.load(Relaxed) {
        // try_with: the allocator may run while thread-locals are being torn down.
        let engine = IN_ENGINE.try_with(Cell::get).unwrap_or(false);
        if engine { &ENGINE } else { &OUTSIDE }.fetch_add(1, Relaxed);
    }
}

/// Runs `f` with counting on; returns (allocations outside the engine, inside the engine).
fn counted(f: impl FnOnce()) -> (u64, u64) {
    let (o, e) = (OUTSIDE.load(Relaxed), ENGINE.load(Relaxed));
    COUNTING.store(true, Relaxed);
    f();
    COUNTING.store(false, Relaxed);
    (OUTSIDE.load(Relaxed) - o, ENGINE.load(Relaxed) - e)
}

// SAFETY: every call is forwarded unchanged to the system allocator, which meets GlobalAlloc's
// contract; counting touches only atomics and a thread-local flag, never allocating.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's layout contract is passed on as it came.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` above, i.e. from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: as in `dealloc`; the caller's size contract is passed on as it came.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Attributes allocations made inside `run` to the engine.
struct Attributed<E>(E);

impl<E: Engine> Engine for Attributed<E> {
    type Buffer = E::Buffer;
    fn new_buffer(&self, i: usize) -> Result<E::Buffer, LeptonError> {
        self.0.new_buffer(i)
    }
    fn swap_input(&mut self, i: usize, b: &mut E::Buffer) -> Result<(), LeptonError> {
        self.0.swap_input(i, b)
    }
    fn inputs(&self) -> &[TensorInfo] {
        self.0.inputs()
    }
    fn outputs(&self) -> &[TensorInfo] {
        self.0.outputs()
    }
    fn input_mut(&mut self, index: usize) -> Result<TensorViewMut<'_>, LeptonError> {
        self.0.input_mut(index)
    }
    fn run(&mut self) -> Result<(), LeptonError> {
        IN_ENGINE.with(|c| c.set(true));
        let r = self.0.run();
        IN_ENGINE.with(|c| c.set(false));
        r
    }
    fn output(&self, index: usize) -> Result<TensorView<'_>, LeptonError> {
        self.0.output(index)
    }
}

/// Records what it sees in preallocated fields only.
struct Tally {
    frames: u64,
    best: [u16; 64],
}

impl Sink for Tally {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        if let Some(slot) = self.best.get_mut(r.meta.frame as usize) {
            *slot = r.detections.first().map_or(u16::MAX, |d| d.class);
        }
        self.frames += 1;
        Ok(())
    }
}

fn the_pipeline_loop_allocates_nothing_per_frame_outside_the_engine() {
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits");
    let images = load_dir(digits.join("samples")).unwrap();
    // Sample names end in "-digit-<label>.png".
    let truth: Vec<u16> =
        images.iter().map(|i| i.name.trim_end_matches(".png").rsplit('-').next().unwrap().parse().unwrap()).collect();
    let stages = Model::load(digits.join("model.onnx")).unwrap().into_vision_stages().unwrap();
    let source = ImageSource::from_images(images, ImageSourceOptions { looping: true, ..Default::default() });
    let sink = Tally { frames: 0, best: [0; 64] };
    let mut p = Pipeline::new(source, stages.pre, Attributed(stages.engine), stages.post, sink);
    for _ in 0..5 {
        assert!(p.step().unwrap());
    }
    const FRAMES: u64 = 200;
    let (outside, engine) = counted(|| {
        for _ in 0..FRAMES {
            p.step().unwrap();
        }
    });
    eprintln!(
        "allocations over {FRAMES} frames: {outside} outside the engine, {engine} inside tract ({:.1} per frame)",
        engine as f64 / FRAMES as f64
    );
    assert_eq!(p.sink().frames, FRAMES + 5);
    // The loop really ran the model: every one of the first 64 frames was classified correctly.
    for (f, &class) in p.sink().best.iter().enumerate() {
        assert_eq!(class, truth[f % truth.len()], "frame {f}");
    }
    assert_eq!(outside, 0, "source, preprocess, postprocess, sink and the loop must not allocate per frame");
}

/// Switches counting on at frame `from` and off at the last frame, from inside the pipeline.
struct CountFrom {
    from: u64,
    last: u64,
    seen: u64,
    counts: (u64, u64),
}

impl Sink for CountFrom {
    fn frame(&mut self, _: &FrameReport<'_>) -> Result<(), LeptonError> {
        self.seen += 1;
        if self.seen == self.from {
            self.counts = (OUTSIDE.load(Relaxed), ENGINE.load(Relaxed));
            COUNTING.store(true, Relaxed);
        }
        if self.seen == self.last {
            COUNTING.store(false, Relaxed);
            self.counts = (OUTSIDE.load(Relaxed) - self.counts.0, ENGINE.load(Relaxed) - self.counts.1);
        }
        Ok(())
    }
}

fn the_overlapped_two_thread_loop_allocates_nothing_per_frame_outside_the_engine() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    // 320x240 RGB frames into the 96x96 bench model: preprocessing costs more than a thread
    // handoff, so `run` moves it to its own thread.
    let frames: Vec<Image> = load_dir(models.join("digits/samples"))
        .unwrap()
        .iter()
        .map(|g| {
            let mut data = Vec::with_capacity(320 * 240 * 3);
            for y in 0..240 {
                for x in 0..320 {
                    let v = g.data[(y * g.height / 240) * g.width + x * g.width / 320];
                    data.extend_from_slice(&[v, v / 2, 255 - v]);
                }
            }
            Image { name: g.name.clone(), width: 320, height: 240, format: PixelFormat::Rgb8, data }
        })
        .collect();
    let stages = Model::load(models.join("bench/model.onnx")).unwrap().into_vision_stages().unwrap();
    let frames: Vec<Image> = (0..6).flat_map(|_| frames.clone()).collect();
    let total = frames.len() as u64;
    let source = ImageSource::from_images(frames, ImageSourceOptions::default());
    let sink = CountFrom { from: 16, last: total, seen: 0, counts: (0, 0) };
    let mut p = Pipeline::new(source, stages.pre, Attributed(stages.engine), stages.post, sink);
    let stats = p.run().unwrap().clone();
    assert_eq!((stats.frames_in, stats.frames_processed, stats.frames_failed), (total, total, 0));
    let (outside, engine) = p.sink().counts;
    eprintln!("overlapped loop, frames 16..{total}: {outside} allocations outside the engine, {engine} inside tract");
    assert_eq!(outside, 0, "the two-thread loop must not allocate per frame");
}

/// Counts the frames whose detections carry a track id, in a preallocated field.
struct Tracked {
    frames: u64,
    with_ids: u64,
    inferred: u64,
    zone_events: u64,
}

impl Sink for Tracked {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        self.frames += 1;
        self.inferred += u64::from(r.inferred);
        self.with_ids += u64::from(r.tracks.iter().any(|t| t.id.is_some()));
        self.zone_events += r.zone_events.len() as u64;
        Ok(())
    }
}

/// One zone: the right half of the frame, every class.
fn right_half() -> Zones {
    let mut zones = Zones::new();
    let region = Region::new(&[(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]).unwrap();
    zones.add(Zone { region, classes: Default::default(), min_frames: 2 }).unwrap();
    zones
}

fn the_motion_gate_and_the_tracker_allocate_nothing_per_frame() {
    let detector = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/detector");
    let scene = load_dir(detector.join("demo/images")).unwrap().remove(0);
    let px = scene.data.len() / (scene.width * scene.height);
    // The scene sliding right and back, 4 px a frame, each position shown twice (the second is
    // still: the gate holds it back).
    let shifted = |dx: usize| {
        let mut data = Vec::with_capacity(scene.data.len());
        for y in 0..scene.height {
            for x in 0..scene.width {
                let sx = x.saturating_sub(dx);
                let at = (y * scene.width + sx) * px;
                data.extend_from_slice(&scene.data[at..at + px]);
            }
        }
        Image { name: format!("shift{dx}"), data, ..scene.clone() }
    };
    let frames: Vec<Image> =
        (0..40).map(|k| if k < 20 { k } else { 40 - k }).flat_map(|k| [shifted(4 * k), shifted(4 * k)]).collect();
    let stages = Model::load(detector.join("model.onnx")).unwrap().into_vision_stages().unwrap();
    let source = ImageSource::from_images(frames, ImageSourceOptions { looping: true, ..Default::default() });
    let sink = Tracked { frames: 0, with_ids: 0, inferred: 0, zone_events: 0 };
    let mut p = Pipeline::new(source, stages.pre, Attributed(stages.engine), stages.post, sink)
        .with_motion(MotionGate::new(MotionConfig::default(), 60_000))
        .with_tracking(TrackConfig::default(), 0.4)
        .with_zones(right_half())
        .unwrap();
    for _ in 0..10 {
        assert!(p.step().unwrap());
    }
    const FRAMES: u64 = 160;
    let (outside, engine) = counted(|| {
        for _ in 0..FRAMES {
            p.step().unwrap();
        }
    });
    let seen = p.sink();
    eprintln!(
        "motion gate, tracker and zones over {FRAMES} frames: {outside} allocations outside the engine, {engine} inside tract; {} of {} frames through the model, {} with track ids, {} zone events",
        seen.inferred, seen.frames, seen.with_ids, seen.zone_events
    );
    // The gate and the tracker really worked: still frames held back, objects tracked.
    assert!(seen.inferred < seen.frames * 3 / 4, "{} of {}", seen.inferred, seen.frames);
    assert!(seen.with_ids > seen.frames / 2, "{} of {}", seen.with_ids, seen.frames);
    assert!(seen.zone_events > 0, "digits crossed the middle of the frame");
    assert_eq!(outside, 0, "the motion gate, the tracker and the zones must not allocate per frame");
}

fn main() {
    the_pipeline_loop_allocates_nothing_per_frame_outside_the_engine();
    the_overlapped_two_thread_loop_allocates_nothing_per_frame_outside_the_engine();
    the_motion_gate_and_the_tracker_allocate_nothing_per_frame();
    eprintln!("alloc: 3 checks passed");
}
