//! Pipeline overhead: the steady-state per-frame time of the whole pipeline (source → preprocess →
//! tract → postprocess → sink, `Pipeline::run`) against raw tract inference on the same input, and
//! allocations per frame inside and outside the engine.
//!
//! Then the motion gate: CPU time per frame of the detector on a mostly still 640x480 stream, with
//! and without `[pipeline.motion]`.
//!
//! Run: `cargo bench -p lepton-runtime --bench pipeline` (release build). Prints one block per
//! model; nothing is asserted.

use lepton_runtime::engine::{Engine, TensorInfo};
use lepton_runtime::image::{load_dir, Image};
use lepton_runtime::pipeline::{FrameReport, Pipeline, Sink};
use lepton_runtime::source::{ImageSource, ImageSourceOptions};
use lepton_runtime::tensor::{TensorView, TensorViewMut};
use lepton_runtime::vision::motion::{MotionConfig, MotionGate};
use lepton_runtime::vision::PixelFormat;
use lepton_runtime::{LeptonError, Model};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static OUTSIDE: AtomicU64 = AtomicU64::new(0);
static INSIDE: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static IN_ENGINE: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.load(Relaxed) {
        let inside = IN_ENGINE.try_with(Cell::get).unwrap_or(false);
        if inside { &INSIDE } else { &OUTSIDE }.fetch_add(1, Relaxed);
    }
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

/// Attributes the engine's allocations to it.
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
    fn input_mut(&mut self, i: usize) -> Result<TensorViewMut<'_>, LeptonError> {
        self.0.input_mut(i)
    }
    fn run(&mut self) -> Result<(), LeptonError> {
        IN_ENGINE.with(|c| c.set(true));
        let r = self.0.run();
        IN_ENGINE.with(|c| c.set(false));
        r
    }
    fn output(&self, i: usize) -> Result<TensorView<'_>, LeptonError> {
        self.0.output(i)
    }
}

/// Measures the interval between frame `warmup` and frame `warmup + frames`, then stops the run.
struct Clock {
    warmup: u64,
    frames: u64,
    seen: u64,
    start: Option<Instant>,
    elapsed: Duration,
    stop: Arc<AtomicBool>,
}

impl Sink for Clock {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        std::hint::black_box(r.detections.len());
        self.seen += 1;
        if self.seen == self.warmup {
            self.start = Some(Instant::now());
            COUNTING.store(true, Relaxed);
        } else if self.seen == self.warmup + self.frames {
            COUNTING.store(false, Relaxed);
            self.elapsed = self.start.map_or(Duration::ZERO, |s| s.elapsed());
            self.stop.store(true, Relaxed);
        }
        Ok(())
    }
}

fn upscale(img: &Image, width: usize, height: usize) -> Image {
    let c = if img.format == PixelFormat::Gray8 { 1 } else { 3 };
    let mut data = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            let (sx, sy) = (x * img.width / width, y * img.height / height);
            for k in 0..3 {
                data.push(img.data[(sy * img.width + sx) * c + k.min(c - 1)]);
            }
        }
    }
    Image { name: format!("{}@{width}x{height}", img.name), width, height, format: PixelFormat::Rgb8, data }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench(name: &str, model: &Path, frames: Vec<Image>, n: u64) {
    println!("{name}");
    // Raw tract: the engine alone on an input that stays in place.
    let mut stages = Model::load(model).expect("model").into_vision_stages().expect("stages");
    for _ in 0..n / 10 + 5 {
        stages.engine.run().expect("run");
    }
    let mut raw: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            stages.engine.run().expect("run");
            t.elapsed()
        })
        .collect();
    raw.sort();
    let raw_mean = raw.iter().sum::<Duration>() / n as u32;

    let stop = Arc::new(AtomicBool::new(false));
    let clock =
        Clock { warmup: n / 10 + 5, frames: n, seen: 0, start: None, elapsed: Duration::ZERO, stop: stop.clone() };
    let source = ImageSource::from_images(frames, ImageSourceOptions { looping: true, ..Default::default() });
    let mut p = Pipeline::new(source, stages.pre, Attributed(stages.engine), stages.post, clock);
    let pipeline_stop = p.stop_flag();
    std::thread::spawn(move || {
        while !stop.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
        }
        pipeline_stop.store(true, Relaxed);
    });
    let (o0, i0) = (OUTSIDE.load(Relaxed), INSIDE.load(Relaxed));
    let mut stats = p.run().expect("run").clone();
    let (outside, inside) = (OUTSIDE.load(Relaxed) - o0, INSIDE.load(Relaxed) - i0);
    let per_frame = p.sink().elapsed / n as u32;
    println!(
        "  raw tract         mean {:.3} ms  p50 {:.3} ms  p90 {:.3} ms",
        ms(raw_mean),
        ms(raw[raw.len() / 2]),
        ms(raw[raw.len() * 9 / 10])
    );
    println!(
        "  pipeline          {:.3} ms per frame (steady state over {n} frames)  ratio {:.3}",
        ms(per_frame),
        ms(per_frame) / ms(raw_mean)
    );
    println!(
        "  inside            engine p50 {:.3} ms, preprocess p50 {:.3} ms ({}), frames dropped {} failed {}",
        ms(stats.inference.percentile(50.0)),
        ms(stats.preprocess.percentile(50.0)),
        if stats.overlapped { "on its own thread" } else { "same thread" },
        stats.frames_dropped,
        stats.frames_failed
    );
    println!(
        "  allocations/frame outside the engine {:.2}, inside tract {:.1}",
        outside as f64 / n as f64,
        inside as f64 / n as f64
    );
}

/// CPU time of this process so far (user + system; `/proc/self/stat`, in clock ticks of 10 ms:
/// measure over seconds).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// Counts frames and those the model ran on.
#[derive(Default)]
struct Gated {
    frames: u64,
    inferred: u64,
}

impl Sink for Gated {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        std::hint::black_box(r.detections.len());
        self.frames += 1;
        self.inferred += u64::from(r.inferred);
        Ok(())
    }
}

/// The detector on a mostly still 640x480 stream (the scene held for 19 frames, then one frame
/// of it shifted by 16 px: two changes every 20 frames), one thread (`step`), with and without
/// the gate.
fn motion_gate(n: u64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/detector");
    let scene = upscale(&load_dir(root.join("demo/images")).expect("frames").remove(0), 640, 480);
    let mut moved = scene.clone();
    for y in 0..480 {
        for x in (16..640).rev() {
            for k in 0..3 {
                moved.data[(y * 640 + x) * 3 + k] = scene.data[(y * 640 + x - 16) * 3 + k];
            }
        }
    }
    let frames: Vec<Image> = (0..20).map(|k| if k == 19 { moved.clone() } else { scene.clone() }).collect();
    println!("motion gate: detector on 640x480 frames, 2 changes every 20 frames, {n} frames, one thread");
    for gate in [false, true] {
        let stages = Model::load(root.join("model.int8.onnx")).expect("model").into_vision_stages().expect("stages");
        let source =
            ImageSource::from_images(frames.clone(), ImageSourceOptions { looping: true, ..Default::default() });
        let mut p = Pipeline::new(source, stages.pre, stages.engine, stages.post, Gated::default());
        if gate {
            p = p.with_motion(MotionGate::new(MotionConfig::default(), 10_000));
        }
        for _ in 0..40 {
            p.step().expect("step");
        }
        let (c0, t0) = (cpu_time(), Instant::now());
        for _ in 0..n {
            p.step().expect("step");
        }
        let (cpu, wall) = (cpu_time() - c0, t0.elapsed());
        let inferred = p.sink().inferred;
        println!(
            "  {:<14} CPU {:.3} ms per frame, wall {:.3} ms per frame, model ran on {} of {} frames",
            if gate { "with the gate" } else { "without" },
            ms(cpu) / n as f64,
            ms(wall) / n as f64,
            inferred,
            p.sink().frames
        );
    }
}

fn main() {
    // Overlapped preprocessing competes with tract for the machine (on 2 vCPUs that may be
    // hyperthread siblings), so each model is measured three times; compare the rows.
    for round in 1..=3 {
        println!("--- round {round}");
        rounds();
    }
    motion_gate(2_000);
}

fn rounds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let samples = load_dir(root.join("digits/samples")).expect("samples");
    bench(
        "digits: 32x32 gray pictures -> 16x16 classifier (0.1 MMAC)",
        &root.join("digits/model.onnx"),
        samples.clone(),
        20_000,
    );
    let camera: Vec<Image> = samples.iter().map(|s| upscale(s, 640, 480)).collect();
    bench(
        "bench: 640x480 RGB frames -> 96x96 MobileNet-style (5.1 MMAC)",
        &root.join("bench/model.onnx"),
        camera,
        2_000,
    );
}
