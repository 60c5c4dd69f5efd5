//! Bundles the demo media: the digit model and its sample pictures are embedded in the `lepton`
//! binary so `lepton run` works anywhere, with nothing else installed.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits");
    let model = root.join("model.onnx");
    let samples = root.join("samples");
    println!("cargo:rerun-if-changed={}", model.display());
    println!("cargo:rerun-if-changed={}", samples.display());
    let mut names: Vec<_> = std::fs::read_dir(&samples)
        .unwrap_or_else(|e| panic!("{}: {e}", samples.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    names.sort();
    let mut code = String::new();
    writeln!(code, "/// The bundled demo model (models/digits/model.onnx).").unwrap();
    writeln!(code, "pub const MODEL: &[u8] = include_bytes!({:?});", model.canonicalize().unwrap()).unwrap();
    writeln!(code, "/// The bundled demo pictures (models/digits/samples), in file-name order.").unwrap();
    writeln!(code, "pub const SAMPLES: &[(&str, &[u8])] = &[").unwrap();
    for p in &names {
        let name = p.file_name().unwrap().to_string_lossy();
        writeln!(code, "    ({name:?}, include_bytes!({:?})),", p.canonicalize().unwrap()).unwrap();
    }
    writeln!(code, "];").unwrap();
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("demo_media.rs");
    std::fs::write(out, code).unwrap();
}
