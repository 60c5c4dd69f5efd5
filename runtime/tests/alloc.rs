//! The per-frame loop allocates nothing outside the engine: a counting global allocator watches
//! the pipeline (source replaying decoded frames → preprocess → tract → postprocess → sink) after
//! warm-up. tract's own allocations are counted separately and reported, not asserted.

use lepton_runtime::engine::{Engine, TensorInfo};
use lepton_runtime::image::load_dir;
use lepton_runtime::pipeline::{FrameReport, Pipeline, Sink};
use lepton_runtime::source::{ImageSource, ImageSourceOptions};
use lepton_runtime::tensor::{TensorView, TensorViewMut};
use lepton_runtime::{LeptonError, Model};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static IN_ENGINE: Cell<bool> = const { Cell::new(false) };
    static OUTSIDE: Cell<u64> = const { Cell::new(0) };
    static ENGINE: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // try_with: the allocator may run while thread-locals are being torn down.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let engine = IN_ENGINE.try_with(Cell::get).unwrap_or(false);
            let counter = if engine { &ENGINE } else { &OUTSIDE };
            let _ = counter.try_with(|n| n.set(n.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Attributes allocations made inside `run` to the engine.
struct Attributed<E>(E);

impl<E: Engine> Engine for Attributed<E> {
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

#[test]
fn the_pipeline_loop_allocates_nothing_per_frame_outside_the_engine() {
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits");
    let images = load_dir(digits.join("samples")).unwrap();
    // Sample names end in "-digit-<label>.png".
    let truth: Vec<u16> = images
        .iter()
        .map(|i| {
            i.name
                .trim_end_matches(".png")
                .rsplit('-')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let stages = Model::load(digits.join("model.onnx"))
        .unwrap()
        .into_vision_stages()
        .unwrap();
    let source = ImageSource::from_images(
        images,
        ImageSourceOptions {
            looping: true,
            ..Default::default()
        },
    );
    let sink = Tally {
        frames: 0,
        best: [0; 64],
    };
    let mut p = Pipeline::new(
        source,
        stages.pre,
        Attributed(stages.engine),
        stages.post,
        sink,
    );
    for _ in 0..5 {
        assert!(p.step().unwrap());
    }
    const FRAMES: u64 = 200;
    COUNTING.with(|c| c.set(true));
    for _ in 0..FRAMES {
        p.step().unwrap();
    }
    COUNTING.with(|c| c.set(false));
    let outside = OUTSIDE.with(Cell::get);
    let engine = ENGINE.with(Cell::get);
    eprintln!(
        "allocations over {FRAMES} frames: {outside} outside the engine, {engine} inside tract ({:.1} per frame)",
        engine as f64 / FRAMES as f64
    );
    assert_eq!(p.sink().frames, FRAMES + 5);
    // The loop really ran the model: every one of the first 64 frames was classified correctly.
    for (f, &class) in p.sink().best.iter().enumerate() {
        assert_eq!(class, truth[f % truth.len()], "frame {f}");
    }
    assert_eq!(
        outside, 0,
        "source, preprocess, postprocess, sink and the loop must not allocate per frame"
    );
}
