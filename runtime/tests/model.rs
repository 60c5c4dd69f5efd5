//! The model path end to end on the shipped digit classifier: parity with the training code and
//! onnxruntime, accuracy on the held-out split, and clear errors for every kind of bad input.

use lepton_runtime::engine::Engine;
use lepton_runtime::image::{load_dir, Image};
use lepton_runtime::onnx::{self, pb};
use lepton_runtime::pipeline::Preprocess;
use lepton_runtime::source::Frame;
use lepton_runtime::{FrameMeta, LeptonError, Model};
use std::path::{Path, PathBuf};

fn digits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lepton-model-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_seed_flow_predicts_the_digit_in_each_sample_picture() {
    let model = Model::load(digits().join("model.onnx")).unwrap();
    let images = load_dir(digits().join("samples")).unwrap();
    let labels = model.predict(&images).unwrap();
    assert_eq!(labels.len(), images.len());
    for (image, p) in images.iter().zip(&labels) {
        // Sample names end in "-digit-<label>.png".
        let truth = image.name.trim_end_matches(".png").rsplit('-').next().unwrap();
        assert_eq!(p.label(), Some(truth), "{}: {p}", image.name);
    }
}

#[test]
fn runtime_preprocessing_and_tract_match_the_training_code_and_onnxruntime() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(digits().join("reference.json")).unwrap()).unwrap();
    let reference = reference.as_object().unwrap();
    let mut stages = Model::load(digits().join("model.onnx")).unwrap().into_vision_stages().unwrap();
    assert_eq!(reference.len(), 10);
    for (name, expected) in reference {
        let image = Image::open(&digits().join("samples").join(name)).unwrap();
        let frame = Frame { image: image.view().unwrap(), meta: FrameMeta { frame: 0, timestamp_ms: 0 }, name: None };
        stages.pre.preprocess(&frame, stages.engine.input_mut(0).unwrap()).unwrap();
        stages.engine.run().unwrap();
        let out = stages.engine.output(0).unwrap();
        let expected: Vec<f32> = expected.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(out.len(), expected.len());
        for i in 0..out.len() {
            assert!((out.real(i) - expected[i]).abs() < 1e-3, "{name} logit {i}: {} vs {}", out.real(i), expected[i]);
        }
    }
}

#[test]
fn digit_classifier_accuracy_on_the_held_out_split_matches_its_card() {
    let model = Model::load(digits().join("model.onnx")).unwrap();
    let (mut correct, mut total) = (0, 0);
    for label in 0..10 {
        let images = load_dir(digits().join("test").join(label.to_string())).unwrap();
        for p in model.predict(&images).unwrap() {
            total += 1;
            correct += usize::from(p.label() == Some(label.to_string().as_str()));
        }
    }
    let accuracy = correct as f64 / total as f64;
    eprintln!("digits held-out accuracy: {correct}/{total} = {:.4}", accuracy);
    assert_eq!(total, 300);
    // The card (models/digits/README.md) states 97.3 %; CI allows one point below.
    assert!(accuracy >= 0.963, "accuracy {accuracy:.4} fell more than one point under the card's 97.3 %");
}

fn expect_err(r: Result<Model, LeptonError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_empty_truncated_and_non_onnx_files_are_errors_naming_the_file() {
    let dir = scratch("bad-files");
    let e = expect_err(Model::load(dir.join("absent.onnx")));
    assert!(e.contains("absent.onnx") && e.contains("No such file"), "{e}");

    std::fs::write(dir.join("empty.onnx"), b"").unwrap();
    let e = expect_err(Model::load(dir.join("empty.onnx")));
    assert!(e.contains("empty.onnx") && e.contains("empty"), "{e}");

    let bytes = std::fs::read(digits().join("model.onnx")).unwrap();
    std::fs::write(dir.join("truncated.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    let e = expect_err(Model::load(dir.join("truncated.onnx")));
    assert!(e.contains("truncated.onnx") && e.contains("not a valid ONNX model"), "{e}");

    std::fs::copy(digits().join("samples/frame-00-digit-6.png"), dir.join("picture.onnx")).unwrap();
    let e = expect_err(Model::load(dir.join("picture.onnx")));
    assert!(e.contains("picture.onnx") && e.contains("not a valid ONNX model"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_image_that_does_not_decode_is_an_error_naming_the_file() {
    let dir = scratch("bad-image");
    std::fs::write(dir.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let e = load_dir(&dir).unwrap_err().to_string();
    assert!(e.contains("broken.png") && e.contains("cannot decode"), "{e}");
    let e = load_dir(dir.join("nowhere")).unwrap_err().to_string();
    assert!(e.contains("nowhere"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn with_manifest(text: &str) -> Result<Model, LeptonError> {
    let mut proto = onnx::read(&digits().join("model.onnx")).unwrap();
    onnx::set_manifest_text(&mut proto, text);
    let dir = scratch("manifest");
    let path = dir.join("m.onnx");
    onnx::write(&proto, &path).unwrap();
    let r = Model::load(&path);
    std::fs::remove_dir_all(dir).unwrap();
    r
}

#[test]
fn a_manifest_that_disagrees_with_the_model_names_the_field() {
    let good = std::fs::read_to_string(digits().join("manifest.toml")).unwrap();
    assert!(with_manifest(&good).is_ok());
    let e = expect_err(with_manifest(&good.replace("size = [16, 16]", "size = [28, 28]")));
    assert!(e.contains("input.size") && e.contains("m.onnx"), "{e}");
    let e = expect_err(with_manifest(&good.replace("color = \"gray\"", "color = \"rgb\"")));
    assert!(e.contains("input.color"), "{e}");
    let e = expect_err(with_manifest(&good.replace(", \"9\"]", "]")));
    assert!(e.contains("labels") && e.contains("9 entries"), "{e}");
    let e = expect_err(with_manifest(&good.replace("layout = \"nchw\"", "layout = \"nhwc\"")));
    assert!(e.contains("input."), "{e}");
    let e = expect_err(with_manifest(&good.replace("task = \"classify\"", "task = \"clasify\"")));
    assert!(e.contains("clasify") && e.contains("line 2"), "{e}");
}

#[test]
fn an_operator_tract_lacks_is_named_with_its_node() {
    let mut proto = onnx::read(&digits().join("model.onnx")).unwrap();
    let node = &mut proto.graph.as_mut().unwrap().node[1];
    node.op_type = "FancyRelu".into();
    let name = node.name.clone();
    let dir = scratch("unsupported");
    onnx::write(&proto, &dir.join("u.onnx")).unwrap();
    let e = expect_err(Model::load(dir.join("u.onnx")));
    assert!(e.contains("u.onnx") && e.contains("FancyRelu") && e.contains(&name), "{e}");
    assert!(e.contains("lepton-convert optimize"), "suggests a way out: {e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn inconsistent_intermediate_value_info_is_retried_transparently() {
    use lepton_runtime::engine::TractEngine;
    let mut proto = onnx::read(&digits().join("model.onnx")).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    // Declare every intermediate tensor with a wrong rank-1 shape of 3 elements, as broken exporters do.
    let mut bogus = graph.output[0].clone();
    if let Some(pb::type_proto::Value::TensorType(t)) = bogus.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        let dim = pb::tensor_shape_proto::Dimension {
            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(3)),
            ..Default::default()
        };
        t.shape = Some(pb::TensorShapeProto { dim: vec![dim] });
    }
    let intermediates: Vec<String> =
        graph.node.iter().flat_map(|n| n.output.clone()).filter(|o| o != &graph.output[0].name).collect();
    for name in intermediates {
        graph.value_info.push(pb::ValueInfoProto { name, ..bogus.clone() });
    }
    let dir = scratch("value-info");
    let path = dir.join("v.onnx");
    onnx::write(&proto, &path).unwrap();
    let strict = tract_onnx_load_fails_strictly(&proto, &path);
    assert!(strict, "the bogus value_info must break a strict load, or this test proves nothing");
    let engine = TractEngine::load(&path, &[]).unwrap();
    assert!(engine.ignored_value_info());
    let model = Model::load(&path).unwrap();
    let images = load_dir(digits().join("samples")).unwrap();
    assert_eq!(model.predict(&images[..1]).unwrap()[0].label(), Some("6"));
    std::fs::remove_dir_all(dir).unwrap();
}

fn tract_onnx_load_fails_strictly(proto: &onnx::ModelProto, _path: &Path) -> bool {
    use lepton_runtime::engine::tract::tract_onnx;
    use tract_onnx::prelude::*;
    let strict = || -> TractResult<()> {
        let model = tract_onnx::onnx().model_for_proto_model(proto)?;
        model.into_optimized()?.into_runnable()?;
        Ok(())
    };
    strict().is_err()
}
