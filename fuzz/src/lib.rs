//! Fuzz targets: one function per reader of untrusted bytes (model files, manifests, configs,
//! tensors, recordings, pictures, MQTT payloads). Each takes arbitrary bytes and must return:
//! a bad input is an error that names where the bytes came from, never a panic, an abort, a hang
//! or an allocation sized by the input beyond the caps below.
//!
//! `fuzz_targets/*.rs` hand these to libFuzzer (`scripts/fuzz`); `tests/regressions.rs` runs them
//! over the committed corpora and every crash found, in `cargo test`.

use lepton_runtime::engine::micro::host::MAX_TENSORS;
use lepton_runtime::engine::micro::Interpreter;
use lepton_runtime::engine::Engine;
use lepton_runtime::image::Image;
use lepton_runtime::manifest::Task;
use lepton_runtime::source::wav::WavSource;
use lepton_runtime::source::{AudioSource, Resampled};
use lepton_runtime::vision::preprocess::PixelFormat;
use lepton_runtime::{Manifest, Model};
use std::path::Path;

/// The arena the `lpm` target gives a model that asks for more than it: such a model is refused
/// by [`Interpreter::run`] with an error, as on a device whose arena is too small.
const ARENA_CAP: usize = lepton_runtime::engine::micro::host::MAX_ARENA_BYTES;

/// A panic inside tract is caught at the runtime's boundary ([`lepton_runtime::engine::tract::guarded`])
/// and becomes an error; any other panic is a crash. libFuzzer's panic hook aborts on every panic,
/// so this hook lets tract's unwind to that boundary and hands the others to it.
fn tract_panics_unwind() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.location().is_some_and(|l| l.file().contains("/tract-")) {
                abort(info);
            }
        }));
    });
}

/// Asserts that an error message names the input, as every loader's errors must.
fn names(name: &str, message: String) {
    assert!(message.contains(name), "error does not name `{name}`: {message}");
}

/// A micro model (`.lpm`): the interpreter's own validation and one run on each kernel set, then
/// the full loader (manifest, pre/post-processing).
pub fn lpm(data: &[u8]) {
    if let Ok(interp) = Interpreter::<MAX_TENSORS>::new(data) {
        let mut arena = vec![0u8; interp.arena_bytes().min(ARENA_CAP)];
        let _ = interp.run(&mut arena);
        arena.fill(0);
        let _ = interp.run_reference(&mut arena);
    }
    model_bytes(data, "fuzz.lpm");
}

/// A TFLite model: the reader's verification and checks, every tensor and operator of what it
/// accepts walked, then `inspect`'s report and the loaders, which must refuse it by name.
pub fn tflite(data: &[u8]) {
    let name = "fuzz.tflite";
    match lepton_tflite::TfliteModel::read(data, Path::new(name)) {
        Ok(m) => {
            for g in &m.subgraphs {
                for t in &g.tensors {
                    assert!(t.elements() <= lepton_tflite::MAX_ELEMENTS);
                    if let (Some(d), Some(n)) = (t.data, t.element.bytes_for(t.elements())) {
                        assert!(t.sparse || d.len() as u64 == n, "{}: data length unchecked", t.name);
                    }
                }
                for op in &g.operators {
                    let _ = op.kind.name();
                    assert!(op.inputs.iter().flatten().chain(&op.outputs).all(|&i| i < g.tensors.len()));
                }
            }
            if let Err(e) = lepton_convert::inspect::tflite::inspect(Path::new(name), data) {
                names(name, e.to_string());
            }
        }
        Err(e) => names(name, e.to_string()),
    }
    model_bytes(data, name);
}

/// An ONNX model (with or without an embedded manifest): decoding, manifest checks, lowering to the
/// micro engine, tract's load and optimization, and one run.
pub fn model(data: &[u8]) {
    model_bytes(data, "fuzz.onnx");
}

fn model_bytes(data: &[u8], name: &str) {
    tract_panics_unwind();
    let model = match Model::from_bytes(data, name) {
        Ok(m) => m,
        Err(e) => return names(name, e.to_string()),
    };
    let vision = model.manifest().is_some_and(|m| matches!(m.task, Task::Classify | Task::Detect));
    if vision {
        let picture = Image {
            name: "probe.png".into(),
            width: 16,
            height: 12,
            format: PixelFormat::Rgb8,
            data: vec![128; 16 * 12 * 3],
        };
        if let Err(e) = model.predict(&[picture]) {
            names(name, e.to_string());
        }
    } else {
        match model.into_engine() {
            Ok(mut engine) => {
                if let Err(e) = engine.run() {
                    names(name, e.to_string());
                }
            }
            Err(e) => names(name, e.to_string()),
        }
    }
}

/// The int8 models `qdq` edits: every micro op (the conformance model), a small keyword model, the
/// digit classifier.
const QDQ_SEEDS: [&[u8]; 3] = [
    include_bytes!("../../runtime/tests/data/micro_ops/model.int8.onnx"),
    include_bytes!("../../runtime/tests/data/energy_micro/keyword.int8.onnx"),
    include_bytes!("../../models/digits/model.int8.onnx"),
];

/// Op types `qdq` may give a node.
const OPS: [&str; 12] = [
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Mul",
    "Relu",
    "Clip",
    "QuantizeLinear",
    "DequantizeLinear",
    "Concat",
    "Slice",
    "Reshape",
];

/// Structured edits to a valid QDQ model, which byte-level mutation of a protobuf rarely makes:
/// nodes losing inputs or outputs or rewired, attributes with other lengths and values,
/// initializers with other shapes and data, other op types. Then the full loader and one run, as
/// [`model`]. The first byte picks the model; then each 4 bytes are one edit.
pub fn qdq(data: &[u8]) {
    use lepton_runtime::onnx::ModelProto;
    use prost::Message as _;
    let Some((&which, edits)) = data.split_first() else { return };
    let Ok(mut m) = ModelProto::decode(QDQ_SEEDS[which as usize % QDQ_SEEDS.len()]) else { return };
    let Some(g) = m.graph.as_mut() else { return };
    let names: Vec<String> =
        g.node.iter().flat_map(|n| n.output.clone()).chain(g.initializer.iter().map(|t| t.name.clone())).collect();
    for e in edits.chunks_exact(4) {
        let (op, a, b, c) = (e[0], e[1] as usize, e[2] as usize, e[3]);
        let small = c as i8 as i64;
        let nodes = g.node.len().max(1);
        let inits = g.initializer.len().max(1);
        match op % 9 {
            0 => g.node.get_mut(a % nodes).map(|n| n.input.truncate(b % 4)),
            1 => g.node.get_mut(a % nodes).map(|n| n.output.clear()),
            2 => g.node.get_mut(a % nodes).and_then(|n| {
                let len = n.attribute.len().max(1);
                n.attribute.get_mut(b % len).map(|at| {
                    if c & 1 == 0 {
                        at.ints.truncate(c as usize % 5)
                    } else {
                        at.ints.push(small >> 1)
                    }
                })
            }),
            3 => g.node.get_mut(a % nodes).and_then(|n| {
                let len = n.attribute.len().max(1);
                n.attribute.get_mut(b % len).map(|at| {
                    at.i = small;
                    at.f = small as f32 / 16.0;
                })
            }),
            4 => g.initializer.get_mut(a % inits).map(|t| {
                if t.dims.is_empty() {
                    t.dims.push(small)
                } else {
                    let len = t.dims.len();
                    t.dims[b % len] = small
                }
            }),
            5 => g.initializer.get_mut(a % inits).map(|t| {
                t.raw_data.truncate(c as usize * t.raw_data.len() / 256);
                t.float_data.truncate(c as usize % (t.float_data.len() + 1));
            }),
            6 => g.node.get_mut(a % nodes).map(|n| n.op_type = OPS[c as usize % OPS.len()].to_string()),
            7 => g.node.get_mut(a % nodes).and_then(|n| {
                let len = n.input.len().max(1);
                let name = names.get(c as usize % names.len().max(1)).cloned()?;
                n.input.get_mut(b % len).map(|i| *i = name)
            }),
            _ => g.node.get_mut(a % nodes).map(|n| n.attribute.clear()),
        };
    }
    model_bytes(&m.encode_to_vec(), "fuzz-qdq.onnx");
}

/// A manifest's TOML (a `.toml` beside a model, or the text embedded in one) and the stage
/// configurations derived from it.
pub fn manifest(data: &[u8]) {
    let name = "fuzz-manifest.toml";
    let path = Path::new(name);
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Manifest::from_toml(text, path) {
        Ok(m) => {
            let results = [
                m.preprocess_config(path).err(),
                m.detect_config(path).err(),
                m.frontend_config(path).err(),
                m.keyword_config(path).err(),
                m.vad_config(path).err(),
            ];
            for e in results.into_iter().flatten() {
                names(name, e.to_string());
            }
            let _ = m.event_labels();
            let _ = m.to_toml();
        }
        Err(e) => names(name, e.to_string()),
    }
}

/// The daemon's config file.
pub fn config(data: &[u8]) {
    let name = "fuzz-config.toml";
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = lepton_config::Config::from_toml(text, Path::new(name)) {
        names(name, format!("{e:#}"));
    }
}

/// A `.npy` tensor, as `lepton-convert run`, `eval` and `quantize` read them.
pub fn npy(data: &[u8]) {
    let name = "fuzz.npy";
    if let Err(e) = lepton_convert::npy::from_bytes(data, Path::new(name)) {
        names(name, format!("{e:#}"));
    }
}

/// A WAV recording, resampled to 16 kHz and read to its end in windows, as the audio pipeline
/// reads one.
pub fn wav(data: &[u8]) {
    let name = "fuzz.wav";
    let source = match WavSource::from_bytes(data.to_vec(), name) {
        Ok(s) => s,
        Err(e) => return names(name, e.to_string()),
    };
    let _ = source.duration_s();
    let mut source = match Resampled::new(source, 16_000) {
        Ok(s) => s,
        Err(e) => return names(name, e.to_string()),
    };
    let mut window = [0f32; 512];
    loop {
        match source.read(&mut window) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return names(name, e.to_string()),
        }
    }
}

/// A PNG or JPEG picture (image folders, `lepton-convert run` and `eval`).
pub fn image(data: &[u8]) {
    let name = "fuzz.png";
    match Image::decode(data, name) {
        Ok(img) => {
            let _ = img.view();
        }
        Err(e) => names(name, e.to_string()),
    }
}

/// The topics `watch` pairs with its payloads, chosen by the input's first byte.
const TOPICS: [&str; 6] = [
    "lepton/cam/meter/detections",
    "lepton/cam/meter/events/start",
    "lepton/cam/status",
    "lepton/cam/stats",
    "lepton/cam/meter/other",
    "elsewhere/x",
];

/// A message as `lepton-watch` receives it from any client of the broker: a topic and a JSON or
/// postcard payload, decoded and printed.
pub fn watch(data: &[u8]) {
    let Some((&which, payload)) = data.split_first() else { return };
    let topic = TOPICS[which as usize % TOPICS.len()];
    let v = lepton_watch::describe(topic, payload, "lepton");
    let _ = lepton_watch::line(&v);
    let _ = v.to_string();
}
