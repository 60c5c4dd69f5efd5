//! The fuzz targets' checks in `cargo test`: every committed corpus input and every crash the
//! fuzzers found (`fuzz/regressions/TARGET/`, one file per crash, named after what it broke) goes
//! through the same function libFuzzer calls, so a fixed crash stays fixed.

use std::path::Path;

fn each(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            if std::panic::catch_unwind(|| check(&bytes)).is_err() {
                panic!("{}: the `{target}` target panicked on this input", file.display());
            }
            seen += 1;
        }
    }
    assert!(seen > 0, "no inputs for the `{target}` target");
}

#[test]
fn lpm() {
    each("lpm", lepton_fuzz::lpm);
}

#[test]
fn model() {
    each("model", lepton_fuzz::model);
}

#[test]
fn manifest() {
    each("manifest", lepton_fuzz::manifest);
}

#[test]
fn config() {
    each("config", lepton_fuzz::config);
}

#[test]
fn npy() {
    each("npy", lepton_fuzz::npy);
}

#[test]
fn wav() {
    each("wav", lepton_fuzz::wav);
}

#[test]
fn image() {
    each("image", lepton_fuzz::image);
}

#[test]
fn watch() {
    each("watch", lepton_fuzz::watch);
}

#[test]
fn qdq() {
    each("qdq", lepton_fuzz::qdq);
}

/// The seeds reach past the first check: each shipped model in the corpus loads and runs, so the
/// fuzzers start from inputs that exercise the whole loader.
#[test]
fn the_model_seeds_load_and_run() {
    use lepton_runtime::engine::Engine;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["corpus/model", "corpus/lpm"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = e.unwrap().path();
            let model = lepton_runtime::Model::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if model.manifest().is_none_or(|m| !m.task.is_vision()) {
                model.into_engine().unwrap().run().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    }
}

#[test]
fn tflite() {
    each("tflite", lepton_fuzz::tflite);
}
