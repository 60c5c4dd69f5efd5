//! Operator conformance: every operator family the engines accept, on small models built by
//! tests/fixtures/ops/ (the conformance list), against onnxruntime with graph optimizations off
//! (the ONNX definition's arithmetic, the same on every CPU).
//!
//! - Float: `lepton-convert run --engine tract` must equal onnxruntime within each case's
//!   tolerance (relative to max(1, |reference|)).
//! - Int8: the cases marked int8 are quantized by `lepton-convert quantize`, run on the micro
//!   engine (it must take them), and must equal onnxruntime's run of the same QDQ file to within
//!   one step of the output's quantization; steps off are counted and reported.
//! - Recurrent layers (LSTM, GRU, RNN: directions, batches, sequence lengths, initial states):
//!   float, against onnxruntime, or refused with a message naming the node and what it does not
//!   support.

use lepton_e2e::{python, read_npy, run, scratch, text};
use std::path::{Path, PathBuf};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A case folder's `in_<name>.npy` files as `--input name=file` arguments.
fn input_args(dir: &Path) -> Vec<String> {
    let mut args = vec![];
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("in_") && n.ends_with(".npy")))
        .collect();
    files.sort();
    for f in files {
        let name = f.file_stem().and_then(|n| n.to_str()).expect("utf-8 name")["in_".len()..].to_string();
        args.push("--input".into());
        args.push(format!("{name}={}", s(&f)));
    }
    args
}

/// Outputs of `dir/<prefix><name>.npy`, by name.
fn outputs(dir: &Path, prefix: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut v: Vec<(String, Vec<usize>, Vec<f32>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter_map(|p| {
            let n = p.file_name()?.to_str()?.to_string();
            let name = n.strip_prefix(prefix)?.strip_suffix(".npy")?.to_string();
            let (shape, values) = read_npy(&p);
            Some((name, shape, values))
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Runs a model with `lepton-convert run`, writing its outputs to `out`; returns the JSON report,
/// or the error text when the run failed.
fn lepton_run(model: &Path, inputs: &[String], out: &Path, engine: &str) -> Result<serde_json::Value, String> {
    let mut args = vec!["run".to_string(), s(model)];
    args.extend(inputs.iter().cloned());
    args.extend(["--output-dir".into(), s(out), "--json".into(), "--engine".into(), engine.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run("lepton-convert", &args);
    let (stdout, stderr) = text(&o);
    if !o.status.success() {
        return Err(stderr);
    }
    serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}"))
}

/// Largest error relative to max(1, |reference|), and where.
fn worst(reference: &[f32], got: &[f32]) -> (f32, usize) {
    reference.iter().zip(got).enumerate().fold((0.0f32, 0), |(w, at), (i, (r, g))| {
        let e = if r.is_nan() && g.is_nan() { 0.0 } else { (r - g).abs() / r.abs().max(1.0) };
        if e > w || e.is_nan() {
            (if e.is_nan() { f32::INFINITY } else { e }, i)
        } else {
            (w, at)
        }
    })
}

/// Compares every reference output with the run's; one line per failure.
fn compare(case: &str, refs: &[(String, Vec<usize>, Vec<f32>)], got: &Path, tolerance: f32) -> Vec<String> {
    let mut failures = vec![];
    for (name, shape, reference) in refs {
        let file = got.join(format!("{name}.npy"));
        if !file.exists() {
            failures.push(format!("{case}: output `{name}` was not written"));
            continue;
        }
        let (gshape, values) = read_npy(&file);
        if &gshape != shape {
            failures.push(format!("{case}: output `{name}` has shape {gshape:?}, onnxruntime {shape:?}"));
            continue;
        }
        let (err, at) = worst(reference, &values);
        if err > tolerance {
            failures.push(format!(
                "{case}: output `{name}` differs by {err:.3e} (relative) at element {at}: lepton {} vs onnxruntime {} (tolerance {tolerance:.0e})",
                values[at], reference[at]
            ));
        }
    }
    failures
}

/// One entry of the conformance list (cases.json).
struct Case {
    name: String,
    int8: bool,
    tolerance: f32,
}

fn cases(dir: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join("cases.json")).expect("cases.json");
    let list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("cases.json is a list of cases");
    list.iter()
        .map(|c| Case {
            name: c["name"].as_str().expect("name").to_string(),
            int8: c["int8"].as_bool().unwrap_or(false),
            tolerance: c["tolerance"].as_f64().unwrap_or(1e-4) as f32,
        })
        .collect()
}

#[test]
fn every_operator_family_matches_onnxruntime_in_float() {
    let dir = scratch("ops-float");
    python(&["tests/fixtures/ops/make_ops.py", &s(&dir)]);
    let mut failures = vec![];
    let all = cases(&dir);
    for c in &all {
        let d = dir.join(&c.name);
        let out = d.join("lepton");
        match lepton_run(&d.join("model.onnx"), &input_args(&d), &out, "tract") {
            Ok(_) => failures.extend(compare(&c.name, &outputs(&d, "ref_"), &out, c.tolerance)),
            Err(e) => failures.push(format!("{}: does not run: {e}", c.name)),
        }
    }
    eprintln!("{} float cases, {} failing", all.len(), failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn int8_cases_run_on_the_micro_engine_within_one_step_of_onnxruntime() {
    let dir = scratch("ops-int8");
    python(&["tests/fixtures/ops/make_ops.py", &s(&dir)]);
    let mut failures = vec![];
    let (mut total, mut off) = (0usize, 0usize);
    let int8: Vec<Case> = cases(&dir).into_iter().filter(|c| c.int8).collect();
    assert!(int8.len() >= 20, "the conformance list lost its int8 cases");
    for c in &int8 {
        let d = dir.join(&c.name);
        let q = d.join("model.int8.onnx");
        let o = run(
            "lepton-convert",
            &["quantize", &s(&d.join("model.onnx")), "--calibration", &s(&d.join("calibration")), "-o", &s(&q)],
        );
        if !o.status.success() {
            failures.push(format!("{}: quantize failed: {}", c.name, text(&o).1));
            continue;
        }
        let inputs = input_args(&d);
        let feeds: Vec<String> = inputs.iter().filter(|a| a.contains('=')).cloned().collect();
        let mut ort_args = vec!["tests/fixtures/ort_run.py".to_string(), s(&q), s(&d.join("ort-int8"))];
        ort_args.extend(feeds);
        python(&ort_args.iter().map(String::as_str).collect::<Vec<_>>());
        let out = d.join("micro");
        let report = match lepton_run(&q, &inputs, &out, "micro") {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: int8 model does not run: {e}", c.name));
                continue;
            }
        };
        if report["engine"] != "micro" {
            failures
                .push(format!("{}: the int8 model ran on {} instead of the micro engine", c.name, report["engine"]));
            continue;
        }
        for (name, shape, reference) in outputs(&d.join("ort-int8"), "") {
            let (gshape, got) = read_npy(&out.join(format!("{name}.npy")));
            assert_eq!(gshape, shape, "{}: output `{name}`", c.name);
            let row = report["outputs"].as_array().and_then(|o| o.iter().find(|o| o["name"] == name.as_str()));
            // The output's step: one scale, or one per channel (an output quantized per channel).
            let scales: Vec<f32> = match row.map(|o| (&o["scale"], &o["scales"])) {
                Some((s, _)) if s.is_number() => vec![s.as_f64().unwrap_or(0.0) as f32],
                Some((_, serde_json::Value::Array(v))) => v.iter().map(|s| s.as_f64().unwrap_or(0.0) as f32).collect(),
                _ => vec![],
            };
            assert!(
                !scales.is_empty() && scales.iter().all(|&s| s > 0.0),
                "{}: output `{name}` reports no quantization scale: {report}",
                c.name
            );
            let axis = row.and_then(|o| o["channel_axis"].as_u64()).unwrap_or(0) as usize;
            let inner: usize = shape.iter().skip(axis + 1).product();
            for (i, (r, g)) in reference.iter().zip(&got).enumerate() {
                total += 1;
                let step = if scales.len() == 1 { scales[0] } else { scales[(i / inner) % scales.len()] };
                let steps = (r - g).abs() / step;
                if steps > 0.01 {
                    off += 1;
                }
                if steps > 1.01 {
                    failures.push(format!(
                        "{}: output `{name}` element {i}: micro {g} vs onnxruntime {r}: {steps:.2} steps of {step}",
                        c.name
                    ));
                    break;
                }
            }
        }
    }
    eprintln!(
        "{} int8 cases on the micro engine: {off} of {total} output values one step off onnxruntime's exact QDQ arithmetic, none more",
        int8.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn recurrent_layers_match_onnxruntime_or_are_refused_by_name() {
    let dir = scratch("ops-rnn");
    python(&["tests/fixtures/ops/rnn_cases.py", &s(&dir)]);
    let mut failures = vec![];
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("rnn cases")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    names.sort();
    assert!(names.len() >= 20, "the recurrent cases are missing");
    let (mut passed, mut refused) = (0, vec![]);
    for d in &names {
        let case = d.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
        let out = d.join("lepton");
        match lepton_run(&d.join("model.onnx"), &input_args(d), &out, "tract") {
            Ok(_) => {
                let f = compare(&case, &outputs(d, "ref_"), &out, 1e-4);
                if f.is_empty() {
                    passed += 1;
                }
                failures.extend(f);
            }
            // A refusal must name the node's operator and what it does not support.
            Err(e) if e.contains("not supported") && (e.contains("LSTM") || e.contains("GRU") || e.contains("RNN")) => {
                refused.push(case)
            }
            Err(e) => failures.push(format!("{case}: does not run: {e}")),
        }
    }
    eprintln!("{} recurrent cases: {passed} equal to onnxruntime, refused by name: {refused:?}", names.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
