//! The shipped models (models/*) hold the figures on their cards: `lepton-convert eval` on each
//! model's committed held-out split, float and int8, must not fall more than one point under the
//! figure its README states, and int8 must stay within one point of float.

use lepton_e2e::{root, run, text};
use serde_json::Value;

/// The figure a card states in its table row `| held-out <metric> (<kind>) | **<x> %** …`.
fn card_figure(model: &str, metric: &str, kind: &str) -> f64 {
    let card = std::fs::read_to_string(root().join("models").join(model).join("README.md")).expect("the model card");
    let key = format!("| held-out {metric} ({kind}) | **");
    let line = card
        .lines()
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("models/{model}/README.md has no row `{key}`"));
    line[key.len()..]
        .split(" %")
        .next()
        .and_then(|x| x.trim().parse().ok())
        .unwrap_or_else(|| panic!("unreadable figure: {line}"))
}

/// Measured with `lepton-convert eval --json`, in percent.
fn measure(model: &str, file: &str, dataset: &str) -> f64 {
    let dir = root().join("models").join(model);
    let out = run(
        "lepton-convert",
        &[
            "eval",
            &dir.join(file).display().to_string(),
            "--dataset",
            &dir.join(dataset).display().to_string(),
            "--json",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "eval {model}/{file}: {stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("eval --json: {e}: {stdout}"));
    let figure = match &v {
        Value::Array(results) => results[0]["metrics"]["map50"].as_f64(),
        _ => v["accuracy"].as_f64(),
    };
    figure.expect("a figure in the JSON") * 100.0
}

fn check(model: &str, metric: &str) {
    let float = measure(model, "model.onnx", "test");
    let int8 = measure(model, "model.int8.onnx", "test");
    let (card_float, card_int8) = (card_figure(model, metric, "float"), card_figure(model, metric, "int8"));
    eprintln!("{model}: {metric} float {float:.2} % (card {card_float}), int8 {int8:.2} % (card {card_int8})");
    assert!(
        float >= card_float - 1.0,
        "{model}: float {metric} {float:.2} % is more than a point under the card's {card_float} %"
    );
    assert!(
        int8 >= card_int8 - 1.0,
        "{model}: int8 {metric} {int8:.2} % is more than a point under the card's {card_int8} %"
    );
    assert!(int8 >= float - 1.0, "{model}: int8 {int8:.2} % is more than a point under float {float:.2} %");
}

#[test]
fn digit_classifier_holds_its_card() {
    check("digits", "accuracy");
}

#[test]
fn meter_digit_detector_holds_its_card() {
    check("detector", "mAP@0.5");
}

#[test]
fn keyword_spotter_holds_its_card() {
    check("keywords", "accuracy");
}

#[test]
fn voice_activity_detector_holds_its_card() {
    check("vad", "accuracy");
}

#[test]
fn the_bundled_int8_detector_reads_every_demo_frame() {
    // The demo frames' labels (models/detector/demo/labels) were written when the frames were made;
    // every frame must read exactly (the digits left to right; nothing on the photo without digits)
    // by the int8 model `lepton run` bundles.
    let dir = root().join("models/detector");
    let out = run(
        "lepton-convert",
        &[
            "eval",
            &dir.join("model.int8.onnx").display().to_string(),
            "--dataset",
            &dir.join("demo").display().to_string(),
            "--json",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let m = &v[0]["metrics"];
    assert_eq!(m["exact_readings"], m["images"], "{m}");
}
