//! `lepton-convert pack`: a model with its manifest, and errors that name the field or file.

use lepton_e2e::{root, run, scratch, text};
use lepton_runtime::Model;

fn digits(file: &str) -> String {
    root().join("models/digits").join(file).display().to_string()
}

#[test]
fn pack_embeds_a_manifest_the_runtime_then_uses() {
    let dir = scratch("pack-ok");
    let out_path = dir.join("digits.onnx");
    let out = run(
        "lepton-convert",
        &[
            "pack",
            &digits("model.raw.onnx"),
            "--manifest",
            &digits("manifest.toml"),
            "-o",
            &out_path.display().to_string(),
        ],
    );
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let model = Model::load(&out_path).unwrap();
    assert_eq!(model.manifest().unwrap().labels.len(), 10);
    let images = lepton_runtime::image::load_dir(root().join("models/digits/samples")).unwrap();
    let p = model.predict(&images[..1]).unwrap();
    assert_eq!(p[0].label(), Some("6"));
    // The shipped model is exactly this: raw model + manifest.
    let shipped = Model::load(digits("model.onnx")).unwrap();
    assert_eq!(shipped.manifest(), model.manifest());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pack_rejects_bad_manifests_and_files_with_the_field_named_and_exit_2() {
    let dir = scratch("pack-bad");
    let manifest = std::fs::read_to_string(digits("manifest.toml")).unwrap();
    let out_path = dir.join("out.onnx").display().to_string();
    let cases = [
        (manifest.replace("size = [16, 16]", "size = [32, 32]"), "input.size"),
        (manifest.replace("std = [0.5]", "sdt = [0.5]"), "unknown field `sdt`"),
        (manifest.replace("\"8\", \"9\"]", "\"8\"]"), "labels"),
        (manifest.replace("top_k = 1", "top_k = \"one\""), "top_k"),
    ];
    for (i, (text_, needle)) in cases.iter().enumerate() {
        let m = dir.join(format!("m{i}.toml"));
        std::fs::write(&m, text_).unwrap();
        let out = run(
            "lepton-convert",
            &["pack", &digits("model.raw.onnx"), "--manifest", &m.display().to_string(), "-o", &out_path],
        );
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(needle) && stderr.contains(&format!("m{i}.toml")), "case {i}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = run(
        "lepton-convert",
        &["pack", &digits("samples/frame-00-digit-6.png"), "--manifest", &digits("manifest.toml"), "-o", &out_path],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("frame-00-digit-6.png") && stderr.contains("not a valid ONNX model"), "{stderr}");
    let out =
        run("lepton-convert", &["pack", &digits("model.raw.onnx"), "--manifest", "no/such.toml", "-o", &out_path]);
    assert!(text(&out).1.contains("no/such.toml"));
    std::fs::remove_dir_all(dir).unwrap();
}
