//! Bundles the demo media: the meter-digit detector with its demo frames and the keyword spotter
//! with its demo recording are embedded in the `lepton` binary, so `lepton run` works anywhere
//! with nothing else installed; so are the board profiles (`boards/*/board.toml`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn bytes(code: &mut String, doc: &str, name: &str, path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
    let path = path.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    writeln!(code, "/// {doc}").unwrap();
    writeln!(code, "pub const {name}: &[u8] = include_bytes!({path:?});").unwrap();
}

fn main() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut code = String::new();
    bytes(
        &mut code,
        "The demo detector (models/detector/model.int8.onnx: what devices run).",
        "DETECTOR",
        &models.join("detector/model.int8.onnx"),
    );
    bytes(
        &mut code,
        "The demo keyword spotter (models/keywords/model.int8.onnx: what devices run).",
        "KEYWORDS",
        &models.join("keywords/model.int8.onnx"),
    );
    bytes(&mut code, "The demo recording (models/keywords/demo.wav).", "RECORDING", &models.join("keywords/demo.wav"));
    let frames = models.join("detector/demo/images");
    println!("cargo:rerun-if-changed={}", frames.display());
    let mut names: Vec<PathBuf> = std::fs::read_dir(&frames)
        .unwrap_or_else(|e| panic!("{}: {e}", frames.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "png"))
        .collect();
    names.sort();
    writeln!(code, "/// The demo frames (models/detector/demo/images), in file-name order.").unwrap();
    writeln!(code, "pub const FRAMES: &[(&str, &[u8])] = &[").unwrap();
    for p in &names {
        let name = p.file_name().unwrap().to_string_lossy();
        writeln!(code, "    ({name:?}, include_bytes!({:?})),", p.canonicalize().unwrap()).unwrap();
    }
    writeln!(code, "];").unwrap();
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("demo_media.rs");
    std::fs::write(out, code).unwrap();
    bundle_boards();
}

/// Bundles every board profile (`boards/<name>/board.toml`) as `BOARDS: &[(name, text)]`.
fn bundle_boards() {
    let boards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../boards");
    println!("cargo:rerun-if-changed={}", boards.display());
    let mut names: Vec<PathBuf> = std::fs::read_dir(&boards)
        .unwrap_or_else(|e| panic!("{}: {e}", boards.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("board.toml").is_file())
        .collect();
    names.sort();
    let mut code = String::from(
        "/// The bundled board profiles: (name, board.toml text).\npub const BOARDS: &[(&str, &str)] = &[\n",
    );
    for dir in &names {
        let file = dir.join("board.toml");
        println!("cargo:rerun-if-changed={}", file.display());
        let name = dir.file_name().unwrap().to_string_lossy();
        writeln!(code, "    ({name:?}, include_str!({:?})),", file.canonicalize().unwrap()).unwrap();
    }
    code.push_str("];\n");
    std::fs::write(Path::new(&std::env::var("OUT_DIR").unwrap()).join("boards.rs"), code).unwrap();
}
