//! Pipeline overhead: per-frame time of the whole pipeline (source → preprocess → tract →
//! postprocess → sink) against raw tract inference on the same input, and allocations per frame
//! inside and outside the engine.
//!
//! Run: `cargo bench -p lepton-runtime --bench pipeline` (release build). Prints one table row per
//! model; nothing is asserted.

use lepton_runtime::engine::{Engine, TensorInfo};
use lepton_runtime::image::{load_dir, Image};
use lepton_runtime::pipeline::{FrameReport, Pipeline, Sink};
use lepton_runtime::source::{ImageSource, ImageSourceOptions};
use lepton_runtime::tensor::{TensorView, TensorViewMut};
use lepton_runtime::vision::PixelFormat;
use lepton_runtime::{LeptonError, Model};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

struct Counting;
static OUTSIDE: AtomicU64 = AtomicU64::new(0);
static INSIDE: AtomicU64 = AtomicU64::new(0);
static IN_ENGINE: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if IN_ENGINE.load(Relaxed) {
            &INSIDE
        } else {
            &OUTSIDE
        }
        .fetch_add(1, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if IN_ENGINE.load(Relaxed) {
            &INSIDE
        } else {
            &OUTSIDE
        }
        .fetch_add(1, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Times and attributes the engine's runs.
struct Timed<E> {
    inner: E,
    total: Duration,
}

impl<E: Engine> Engine for Timed<E> {
    fn inputs(&self) -> &[TensorInfo] {
        self.inner.inputs()
    }
    fn outputs(&self) -> &[TensorInfo] {
        self.inner.outputs()
    }
    fn input_mut(&mut self, i: usize) -> Result<TensorViewMut<'_>, LeptonError> {
        self.inner.input_mut(i)
    }
    fn run(&mut self) -> Result<(), LeptonError> {
        IN_ENGINE.store(true, Relaxed);
        let t = Instant::now();
        let r = self.inner.run();
        self.total += t.elapsed();
        IN_ENGINE.store(false, Relaxed);
        r
    }
    fn output(&self, i: usize) -> Result<TensorView<'_>, LeptonError> {
        self.inner.output(i)
    }
}

struct Discard;
impl Sink for Discard {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        std::hint::black_box(r.detections.len());
        Ok(())
    }
}

fn upscale(img: &Image, width: usize, height: usize) -> Image {
    let c = if img.format == PixelFormat::Gray8 {
        1
    } else {
        3
    };
    let mut data = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            let (sx, sy) = (x * img.width / width, y * img.height / height);
            for k in 0..3 {
                data.push(img.data[(sy * img.width + sx) * c + k.min(c - 1)]);
            }
        }
    }
    Image {
        name: format!("{}@{width}x{height}", img.name),
        width,
        height,
        format: PixelFormat::Rgb8,
        data,
    }
}

fn bench(name: &str, model: &Path, frames: Vec<Image>, iterations: usize) {
    let stages = Model::load(model)
        .expect("model")
        .into_vision_stages()
        .expect("stages");
    let source = ImageSource::from_images(
        frames,
        ImageSourceOptions {
            looping: true,
            ..Default::default()
        },
    );
    let engine = Timed {
        inner: stages.engine,
        total: Duration::ZERO,
    };
    let mut p = Pipeline::new(source, stages.pre, engine, stages.post, Discard);
    for _ in 0..iterations / 10 + 5 {
        p.step().expect("warm-up");
    }
    // Raw tract: the same engine, same input, nothing else.
    let mut raw = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        p.engine_mut().run().expect("run");
        raw.push(t.elapsed());
    }
    let (out0, in0) = (OUTSIDE.load(Relaxed), INSIDE.load(Relaxed));
    let mut whole = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        p.step().expect("step");
        whole.push(t.elapsed());
    }
    let (outside, inside) = (OUTSIDE.load(Relaxed) - out0, INSIDE.load(Relaxed) - in0);
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    let (raw_mean, whole_mean) = (mean(&raw), mean(&whole));
    let (raw_p50, whole_p50) = (median(&mut raw), median(&mut whole));
    println!(
        "{name:<28} raw p50 {:>8.3} ms  pipeline p50 {:>8.3} ms  ratio(mean) {:.3}  ratio(p50) {:.3}  allocs/frame outside {:.2} tract {:.1}",
        raw_p50.as_secs_f64() * 1e3,
        whole_p50.as_secs_f64() * 1e3,
        whole_mean.as_secs_f64() / raw_mean.as_secs_f64(),
        whole_p50.as_secs_f64() / raw_p50.as_secs_f64(),
        outside as f64 / iterations as f64,
        inside as f64 / iterations as f64,
    );
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let samples = load_dir(root.join("digits/samples")).expect("samples");
    bench(
        "digits 16x16 (0.1 MMAC)",
        &root.join("digits/model.onnx"),
        samples.clone(),
        20_000,
    );
    let camera: Vec<Image> = samples.iter().map(|s| upscale(s, 640, 480)).collect();
    bench(
        "bench 96x96 from 640x480 (5.1 MMAC)",
        &root.join("bench/model.onnx"),
        camera,
        2_000,
    );
}
