//! `lepton-convert pack`: a model with its manifest, and errors that name the field or file.

use lepton_e2e::{json, root, run, scratch, text};
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

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[test]
fn micro_models_go_everywhere_an_onnx_model_goes() {
    let best = text(&run("lepton-convert", &["kernels", "--best"])).0.trim().to_string();
    assert!(!best.is_empty());
    let picture = digits("samples/frame-00-digit-6.png");
    // run: a picture through the manifest the .lpm carries.
    let r = json(&run("lepton-convert", &["run", &digits("model.lpm"), "--input", &picture, "--json"]));
    assert_eq!((r["results"][0]["label"].as_str(), r["engine"].as_str()), (Some("6"), Some("micro")), "{r}");
    assert_eq!(r["kernels"], best.as_str());
    // inspect: tensors, ops, arena, manifest, and the kernels this host runs it with.
    let i = json(&run("lepton-convert", &["inspect", &digits("model.lpm"), "--json"]));
    assert_eq!((i["engine"].as_str(), i["kernels"].as_str()), (Some("micro"), Some(best.as_str())), "{i}");
    assert_eq!(i["inputs"][0]["shape"], "1x1x16x16");
    assert!(i["ops"]["Conv"].as_u64().unwrap() > 0 && i["macs"].as_u64().unwrap() > 0, "{i}");
    assert!(i["manifest"].as_str().unwrap().contains("classify"));
    let (stdout, _) = text(&run("lepton-convert", &["inspect", &digits("model.lpm")]));
    assert!(stdout.contains(&format!("micro ({best} kernels")), "{stdout}");
    // inspect of the int8 ONNX file says which engine this host picks: the micro engine with
    // a vector set, tract when only the portable kernels are there (they are slower than tract).
    let i = json(&run("lepton-convert", &["inspect", &digits("model.int8.onnx"), "--json"]));
    if best == "reference" {
        assert_eq!((i["engine"].as_str(), i["kernels"].as_str()), (Some("tract"), None), "{i}");
    } else {
        assert_eq!((i["engine"].as_str(), i["kernels"].as_str()), (Some("micro"), Some(best.as_str())), "{i}");
    }
    // eval: the .lpm scores what the int8 ONNX file scores (the same integer arithmetic).
    let test = digits("test");
    let a = json(&run("lepton-convert", &["eval", &digits("model.lpm"), "--dataset", &test, "--json"]));
    let b = json(&run(
        "lepton-convert",
        &["eval", &digits("model.int8.onnx"), "--dataset", &test, "--engine", "micro", "--json"],
    ));
    assert_eq!(a["correct"], b["correct"]);
    assert_eq!(a["confusion"], b["confusion"]);
    // bench: the micro engine only; `--engine tract` is an error, not a silent micro run.
    let out = run("lepton-convert", &["bench", &digits("model.lpm"), "--engine", "tract"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("micro engine only"), "{}", text(&out).1);
    let b = json(&run("lepton-convert", &["bench", &digits("model.lpm"), "--runs", "3", "--warmup", "1", "--json"]));
    assert_eq!((b["engine"].as_str(), b["kernels"].as_str()), (Some("micro"), Some(best.as_str())), "{b}");
    // A recording through a keyword .lpm's manifest: the demo words, in order.
    let kw = root().join("models/keywords");
    let r = json(&run(
        "lepton-convert",
        &["run", &s(&kw.join("model.lpm")), "--input", &s(&kw.join("demo.wav")), "--json"],
    ));
    let heard: Vec<&str> = r["events"].as_array().unwrap().iter().filter_map(|e| e["label"].as_str()).collect();
    let spoken = std::fs::read_to_string(kw.join("demo.txt")).unwrap();
    assert_eq!(heard, spoken.split_whitespace().collect::<Vec<_>>(), "{r}");
}

#[test]
fn compile_fits_an_arena_limit_by_running_convolutions_in_bands_with_the_same_results() {
    let dir = scratch("max-arena");
    let kw = root().join("models/keywords");
    let (int8, wav) = (s(&kw.join("model.int8.onnx")), s(&kw.join("demo.wav")));
    let compile = |limit: Option<&str>, out: &std::path::Path| {
        let mut args = vec!["compile", &int8, "-o"];
        let out = s(out);
        args.push(&out);
        if let Some(l) = limit {
            args.extend(["--max-arena", l]);
        }
        run("lepton-convert", &args)
    };
    let whole = dir.join("whole.lpm");
    assert!(compile(None, &whole).status.success());
    let banded = dir.join("banded.lpm");
    let out = compile(Some("30000"), &banded);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("banded to fit --max-arena") && stdout.contains("MACs more"), "{stdout}");
    let bytes = std::fs::read(&banded).unwrap();
    let header: lepton_runtime::engine::micro::Interpreter<'_, 256> =
        lepton_runtime::engine::micro::Interpreter::new(&bytes).unwrap();
    let whole_bytes = std::fs::read(&whole).unwrap();
    let whole_header: lepton_runtime::engine::micro::Interpreter<'_, 256> =
        lepton_runtime::engine::micro::Interpreter::new(&whole_bytes).unwrap();
    assert!(header.arena_bytes() <= 30000, "{}", header.arena_bytes());
    assert!(whole_header.arena_bytes() > 60000, "{}", whole_header.arena_bytes());
    assert!(stdout.contains(&format!("arena: {} bytes", header.arena_bytes())), "{stdout}");
    // Every output of every window of the demo recording, bit for bit.
    for (model, folder) in [(&whole, "out-whole"), (&banded, "out-banded")] {
        let out = run("lepton-convert", &["run", &s(model), "--input", &wav, "--output-dir", &s(&dir.join(folder))]);
        assert!(out.status.success(), "{}", text(&out).1);
    }
    let a = std::fs::read(dir.join("out-whole/logits.npy")).unwrap();
    assert_eq!(a, std::fs::read(dir.join("out-banded/logits.npy")).unwrap(), "banded logits differ");
    // A limit no banding reaches: an error with the smallest arena it got to.
    let out = compile(Some("20000"), &dir.join("small.lpm"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("more than --max-arena 20000"), "{}", text(&out).1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bench_and_run_accept_the_same_shapes() {
    let dir = scratch("shapes");
    let npy = dir.join("x.npy");
    lepton_e2e::python(&[
        "-c",
        &format!("import numpy as np; np.save('{}', np.zeros((1, 1, 20, 20), np.float32))", s(&npy)),
    ]);
    let run_err =
        text(&run("lepton-convert", &["run", &digits("model.onnx"), "--input", &format!("image={}", s(&npy))])).1;
    let out = run("lepton-convert", &["bench", &digits("model.onnx"), "--shape", "image=1x1x20x20"]);
    assert_eq!(out.status.code(), Some(2));
    let bench_err = text(&out).1;
    for e in [&run_err, &bench_err] {
        assert!(e.contains("input `image` has shape 1x1x16x16 but 1x1x20x20 was given"), "{e}");
    }
    let out = run("lepton-convert", &["bench", &digits("model.onnx"), "--shape", "image=1x1x16x16", "--runs", "2"]);
    assert!(out.status.success(), "{}", text(&out).1);
}

#[test]
fn a_picture_run_writes_the_raw_outputs_too() {
    let dir = scratch("run-outputs");
    let out_dir = dir.join("out");
    let out = run(
        "lepton-convert",
        &[
            "run",
            &digits("model.onnx"),
            "--input",
            &digits("samples/frame-00-digit-6.png"),
            "--output-dir",
            &s(&out_dir),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("6 ") && stdout.contains("raw output written to"), "{stdout}");
    let (shape, logits) = lepton_e2e::read_npy(&out_dir.join("logits.npy"));
    assert_eq!(shape, [1, 10]);
    let best = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert_eq!(best, 6);
    // A recording: one row per model run.
    let kw = root().join("models/keywords");
    let out = run(
        "lepton-convert",
        &[
            "run",
            &s(&kw.join("model.int8.onnx")),
            "--input",
            &s(&kw.join("demo.wav")),
            "--output-dir",
            &s(&dir.join("kw")),
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let stdout = text(&out).0;
    let summary = stdout.lines().find(|l| l.contains("model runs over")).expect("a summary line");
    let runs: usize = summary.split_whitespace().next().unwrap().parse().unwrap();
    let written = std::fs::read_dir(dir.join("kw")).unwrap().next().unwrap().unwrap().path();
    let (shape, _) = lepton_e2e::read_npy(&written);
    assert_eq!((shape[0], *shape.last().unwrap()), (runs, 12), "{shape:?}");
}

#[test]
fn eval_without_a_manifest_takes_its_classes_from_the_model() {
    let dir = scratch("eval-classes");
    // y = x · W: three classes, the class is the index of the largest input value among 0..3.
    lepton_e2e::python(&["-c", &format!(
        "import numpy as np, onnx; from onnx import helper, numpy_helper, TensorProto as T; \
         w=np.eye(3, dtype=np.float32); \
         g=helper.make_graph([helper.make_node('MatMul',['x','w'],['y'])],'g',[helper.make_tensor_value_info('x',T.FLOAT,[1,3])],[helper.make_tensor_value_info('y',T.FLOAT,[1,3])],[numpy_helper.from_array(w,'w')]); \
         m=helper.make_model(g, opset_imports=[helper.make_opsetid('',13)]); m.ir_version=8; onnx.save(m, '{model}'); \
         import os; [os.makedirs('{d}/'+c, exist_ok=True) for c in '01']; \
         np.save('{d}/0/a.npy', np.array([[1,0,0]], np.float32)); np.save('{d}/0/b.npy', np.array([[2,1,0]], np.float32)); \
         np.save('{d}/1/a.npy', np.array([[0,1,0]], np.float32)); np.save('{d}/1/b.npy', np.array([[0,1,3]], np.float32))",
        model = s(&dir.join("m.onnx")),
        d = s(&dir.join("data"))
    )]);
    let plot = dir.join("confusion.png");
    let args = ["eval", &s(&dir.join("m.onnx")), "--dataset", &s(&dir.join("data")), "--plot", &s(&plot)];
    let e = json(&run("lepton-convert", &[&args[..], &["--json"]].concat()));
    assert_eq!(e["labels"], serde_json::json!(["0", "1", "2"]), "{e}");
    assert_eq!(e["confusion"], serde_json::json!([[2, 0, 0], [0, 1, 1], [0, 0, 0]]), "{e}");
    assert_eq!(e["per_class"].as_array().unwrap().len(), 3);
    assert_eq!((e["correct"].as_u64(), e["samples"].as_u64()), (Some(3), Some(4)));
    let (stdout, _) = text(&run("lepton-convert", &args));
    assert!(stdout.contains("    2   -  ") || stdout.contains("  2    -  "), "class 2 has its row: {stdout}");
    assert!(!stdout.contains("  1 1 "), "index-named classes print once: {stdout}");
    assert!(plot.exists());
}

#[test]
fn a_manifest_may_leave_layout_size_and_color_to_the_model() {
    let dir = scratch("pack-infer");
    let m = dir.join("m.toml");
    std::fs::write(&m, "task = \"classify\"\nlabels = [\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]\n[input]\nmean = [0.5]\nstd = [0.5]\n").unwrap();
    let packed = dir.join("d.onnx");
    let out = run("lepton-convert", &["pack", &digits("model.raw.onnx"), "--manifest", &s(&m), "-o", &s(&packed)]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("image input: nchw, 16x16, gray"), "{stderr}");
    let r = json(&run(
        "lepton-convert",
        &["run", &s(&packed), "--input", &digits("samples/frame-00-digit-6.png"), "--json"],
    ));
    assert_eq!(r["results"][0]["label"], "6");
    // Three means for a one-channel input: the message says one value.
    std::fs::write(&m, "task = \"classify\"\nlabels = [\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]\n[input]\ncolor = \"gray\"\nmean = [0.5, 0.5, 0.5]\n").unwrap();
    let out = run("lepton-convert", &["pack", &digits("model.raw.onnx"), "--manifest", &s(&m), "-o", &s(&packed)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("`gray` is one channel: give one value"), "{}", text(&out).1);
}

#[test]
fn a_detector_manifest_may_leave_layout_and_size_to_the_model() {
    let dir = scratch("pack-infer-detector");
    let detector = |f: &str| root().join("models/detector").join(f);
    let shipped = std::fs::read_to_string(detector("manifest.toml")).unwrap();
    let manifest: String = shipped
        .lines()
        .filter(|l| !l.starts_with("layout") && !l.starts_with("size") && !l.starts_with("color"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        !manifest.contains("layout") && !manifest.contains("size =") && manifest.contains("[detect]"),
        "{manifest}"
    );
    let m = dir.join("m.toml");
    std::fs::write(&m, &manifest).unwrap();
    let packed = dir.join("d.onnx");
    let out =
        run("lepton-convert", &["pack", &s(&detector("model.raw.onnx")), "--manifest", &s(&m), "-o", &s(&packed)]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("no model to read it from"), "{stderr}");
    assert!(stderr.contains("image input: nchw, 160x120, gray"), "{stderr}");
    // It detects as the shipped model does, on a demo frame.
    let frame = s(&detector("demo/images/frame001.jpg"));
    let ours = json(&run("lepton-convert", &["run", &s(&packed), "--input", &frame, "--json"]));
    let theirs = json(&run("lepton-convert", &["run", &s(&detector("model.onnx")), "--input", &frame, "--json"]));
    assert!(ours["results"][0].is_object(), "{ours}");
    assert_eq!(ours["results"], theirs["results"]);
    // A threshold out of range is still refused before the model is read.
    std::fs::write(&m, manifest.replace("score_threshold = 0.4", "score_threshold = 4.0")).unwrap();
    let out =
        run("lepton-convert", &["pack", &s(&detector("model.raw.onnx")), "--manifest", &s(&m), "-o", &s(&packed)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("detect.score_threshold"), "{}", text(&out).1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bare_lepton_convert_lists_every_verb_and_help_keeps_examples_apart() {
    // The verbs are clap's list of its subcommands; the intro names none of them by hand.
    let out = run("lepton-convert", &[]);
    let (stdout, stderr) = text(&out);
    let help = format!("{stdout}{stderr}");
    let verbs = [
        "inspect", "import", "run", "bench", "optimize", "quantize", "eval", "compile", "pack", "kernels", "keygen",
        "sign", "verify",
    ];
    let listed: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| *v != "help")
        .collect();
    assert_eq!(listed, verbs, "{help}");
    let intro = help.split("Usage:").next().unwrap_or("");
    let named: Vec<&&str> =
        verbs.iter().filter(|v| intro.split(|c: char| !c.is_alphanumeric()).any(|w| w == **v)).collect();
    assert!(named.is_empty(), "the intro lists verbs by hand ({named:?}): {intro}");
    // Each example of `compile --help` on its own line.
    let (help, _) = text(&run("lepton-convert", &["compile", "--help"]));
    assert!(help.lines().all(|l| l.matches("lepton-convert compile ").count() <= 1), "{help}");
    let examples = help.lines().filter(|l| l.trim_start().starts_with("lepton-convert compile model")).count();
    assert_eq!(examples, 2, "{help}");
}

#[test]
fn detector_eval_prints_each_class_once_with_its_meaning() {
    let dir = scratch("eval-detector");
    let test = root().join("models/detector/test");
    for sub in ["images", "labels"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let mut names: Vec<_> = std::fs::read_dir(test.join("images")).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for p in names.iter().take(12) {
        std::fs::copy(p, dir.join("images").join(p.file_name().unwrap())).unwrap();
        let label = p.with_extension("txt");
        let label = test.join("labels").join(label.file_name().unwrap());
        std::fs::copy(&label, dir.join("labels").join(label.file_name().unwrap())).unwrap();
    }
    let model = root().join("models/detector/model.int8.onnx");
    let out = run("lepton-convert", &["eval", &s(&model), "--dataset", &s(&dir)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("per-class AP@0.5 (class index and label, AP, objects in the dataset)"), "{stdout}");
    // Digit classes are named by their index: "0", not "0 0".
    for d in 0..10 {
        assert!(!stdout.contains(&format!(" {d} {d} ")), "class {d} printed twice: {stdout}");
    }
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("    ") && l.contains("objects)")).collect();
    assert_eq!(rows.len(), 10, "{stdout}");
    assert!(rows[3].trim_start().starts_with("3  ") || rows[3].trim_start().starts_with("3 "), "{stdout}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn messages_speak_the_users_words() {
    let dir = scratch("messages");
    // --help keeps each example on its own line.
    let (help, _) = text(&run("lepton-convert", &["run", "--help"]));
    assert!(help.lines().all(|l| l.matches("lepton-convert run ").count() <= 1), "{help}");
    // A micro model's outputs: no Rust debug formatting.
    let x = dir.join("x.npy");
    lepton_e2e::python(&[
        "-c",
        &format!("import numpy as np; np.save('{}', np.zeros((1, 1, 16, 16), np.float32))", s(&x)),
    ]);
    let (stdout, stderr) = text(&run("lepton-convert", &["run", &digits("model.lpm"), "--input", &s(&x)]));
    assert!(
        stdout.contains("int8 scale") && !stdout.contains("Some(") && !stdout.contains("[1, 10]"),
        "{stdout}{stderr}"
    );
    // A picture given to an audio model, a recording to an image model.
    let kw = root().join("models/keywords/model.int8.onnx");
    let out = run("lepton-convert", &["run", &s(&kw), "--input", &digits("samples/frame-00-digit-6.png")]);
    let err = text(&out).1;
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("is a keyword model, which takes recordings (.wav)") && !err.contains("into_"), "{err}");
    // A sample that does not decode is named once.
    let data = dir.join("data/6");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("bad.png"), b"not a picture").unwrap();
    std::fs::copy(digits("samples/frame-00-digit-6.png"), data.join("good.png")).unwrap();
    let out = run("lepton-convert", &["eval", &digits("model.onnx"), "--dataset", &s(&dir.join("data"))]);
    let err = text(&out).1;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(err.matches("bad.png").count(), 1, "{err}");
}

#[test]
fn quantize_names_unnamed_nodes_in_its_report() {
    let dir = scratch("quantize-names");
    lepton_e2e::python(&["-c", &format!(
        "import numpy as np, onnx, os; from onnx import helper, numpy_helper, TensorProto as T; r=np.random.RandomState(1); \
         n=[helper.make_node('Conv',['x','w1','b1'],['a'],pads=[1,1,1,1]), helper.make_node('Relu',['a'],['r']), helper.make_node('Conv',['r','w2'],['y'])]; \
         g=helper.make_graph(n,'g',[helper.make_tensor_value_info('x',T.FLOAT,[1,3,8,8])],[helper.make_tensor_value_info('y',T.FLOAT,[1,4,8,8])], \
           [numpy_helper.from_array(r.randn(6,3,3,3).astype(np.float32)*0.3,'w1'), numpy_helper.from_array(r.randn(6).astype(np.float32),'b1'), numpy_helper.from_array(r.randn(4,6,1,1).astype(np.float32)*0.3,'w2')]); \
         m=helper.make_model(g, opset_imports=[helper.make_opsetid('',13)]); m.ir_version=8; onnx.save(m, '{d}/m.onnx'); \
         os.makedirs('{d}/cal', exist_ok=True); [np.save('{d}/cal/%02d.npy' % i, r.randn(1,3,8,8).astype(np.float32)) for i in range(8)]",
        d = s(&dir)
    )]);
    let report = dir.join("report.json");
    let out = run(
        "lepton-convert",
        &[
            "quantize",
            &s(&dir.join("m.onnx")),
            "--calibration",
            &s(&dir.join("cal")),
            "-o",
            &s(&dir.join("q.onnx")),
            "--report",
            &s(&report),
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let layers = r["layers"].as_array().unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l["node"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["Conv:a", "Conv:y"], "{r}");
    for l in layers {
        assert!(l["sqnr_db"].as_f64().is_some_and(f64::is_finite), "a finite SQNR for every layer: {l}");
    }
    // No manifest and a feature-map output: judged by output SQNR, not by an argmax.
    assert_eq!(r["criterion"], "output_sqnr", "{r}");
    assert_eq!(r["agreement"], serde_json::Value::Null, "{r}");
    assert_eq!(r["figure"], r["output_sqnr_db"], "{r}");
}

/// `quantize` on a shipped model with its calibration folder; returns the process output and the
/// JSON report.
fn quantize_shipped(model: &str, dir: &std::path::Path, extra: &[&str]) -> (std::process::Output, serde_json::Value) {
    let m = root().join("models").join(model);
    let report = dir.join(format!("{model}.json"));
    let mut args = vec![
        "quantize".to_string(),
        s(&m.join("model.onnx")),
        "--calibration".into(),
        s(&m.join("calibration")),
        "-o".into(),
        s(&dir.join(format!("{model}.int8.onnx"))),
        "--report".into(),
        s(&report),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let out = run("lepton-convert", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let r = match std::fs::read_to_string(&report) {
        Ok(t) => serde_json::from_str(&t).unwrap(),
        Err(e) => panic!("no report ({e}): {}", text(&out).1),
    };
    (out, r)
}

#[test]
fn quantize_judges_a_detector_by_matched_boxes_and_a_classifier_by_top1() {
    let dir = scratch("quantize-judges");
    let (out, r) = quantize_shipped("detector", &dir, &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(r["criterion"], "box_f1", "{r}");
    let b = &r["boxes"];
    let count = |k: &str| b[k].as_u64().unwrap_or_else(|| panic!("boxes.{k}: {r}")) as f64;
    let (float, int8, matched) = (count("float_boxes"), count("int8_boxes"), count("matched"));
    // 40 calibration frames of meter digits: the float model finds boxes in them, so the figure is
    // not the vacuous 1 of two empty sets.
    assert!(float >= 40.0, "{r}");
    assert!(matched <= float.min(int8), "{r}");
    let f1 = r["agreement"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&f1), "{r}");
    assert!((f1 - 2.0 * matched / (float + int8)).abs() < 1e-9, "the agreement is the F1 of matched boxes: {r}");
    assert_eq!(r["figure"].as_f64(), Some(f1), "{r}");
    assert!((b["recall"].as_f64().unwrap() - matched / float).abs() < 1e-9, "{r}");
    assert!((b["precision"].as_f64().unwrap() - matched / int8).abs() < 1e-9, "{r}");
    assert_eq!((b["iou"].as_f64(), b["score_threshold"].as_f64()), (Some(0.5), Some(0.4)), "{r}");
    assert_eq!(r["target"].as_f64(), Some(0.95), "{r}");
    assert!(f1 >= 0.95 && r["target_met"] == true, "{r}");
    let stdout = text(&out).0;
    assert!(stdout.contains("box agreement with float") && stdout.contains("target 95.00 %, met"), "{stdout}");
    // The judged figure once, and the method as `--method` spells it.
    assert_eq!(stdout.matches("agreement with float").count(), 1, "{stdout}");
    assert!(stdout.contains("method percentile,") && !stdout.contains("Percentile"), "{stdout}");

    let (out, r) = quantize_shipped("keywords", &dir, &[]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!((r["criterion"].as_str(), r["target"].as_f64()), (Some("top1"), Some(0.99)), "{r}");
    assert_eq!(r["boxes"], serde_json::Value::Null, "{r}");
    let a = r["agreement"].as_f64().unwrap();
    assert!(a >= 0.99 && r["target_met"] == true && r["figure"].as_f64() == Some(a), "{r}");
    let stdout = text(&out).0;
    assert_eq!(stdout.matches("top-1 agreement").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("output SQNR").count(), 1, "{stdout}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn quantize_exits_1_naming_the_figure_when_the_target_is_out_of_reach() {
    let dir = scratch("quantize-missed");
    // F1 cannot exceed 1: every attempt misses.
    let (out, r) = quantize_shipped("detector", &dir, &["--target", "1.01"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("target missed")
            && stderr.contains("box agreement with float (F1 of matched boxes)")
            && stderr.contains("under the target of 101.00 %"),
        "{stderr}"
    );
    assert_eq!((r["target_met"].as_bool(), r["target"].as_f64()), (Some(false), Some(1.01)), "{r}");
    // Mixed precision was tried (7 layers: one may stay float), and the best attempt is written.
    assert_eq!(r["attempts"], 2, "{r}");
    let q = dir.join("detector.int8.onnx");
    assert!(stderr.contains(&s(&q)), "{stderr}");
    let model = Model::load(&q).unwrap();
    let frame = lepton_runtime::image::Image::open(&root().join("models/detector/calibration/calib000.jpg")).unwrap();
    model.predict(std::slice::from_ref(&frame)).unwrap();
    // A target that is not a number is an error (exit 2), and nothing is written.
    let nan = dir.join("nan.onnx");
    let out = run(
        "lepton-convert",
        &[
            "quantize",
            &s(&root().join("models/detector/model.onnx")),
            "--calibration",
            &s(&root().join("models/detector/calibration")),
            "-o",
            &s(&nan),
            "--target",
            "NaN",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
    assert!(text(&out).1.contains("target must be a finite number"), "{}", text(&out).1);
    assert!(!nan.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_confusion_plot_names_the_classes() {
    let dir = scratch("plot-names");
    let plot = dir.join("c.png");
    let kw = root().join("models/keywords");
    let out = run(
        "lepton-convert",
        &["eval", &s(&kw.join("model.int8.onnx")), "--dataset", &s(&kw.join("test")), "--plot", &s(&plot)],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let img = image::open(&plot).unwrap().to_rgb8();
    // 12 classes: 40-pixel cells, text at 2 pixels per dot; the longest name (`_silence_`, 9
    // characters of 8 dots) sets the margin left of and above the grid.
    let margin = 9 * 8 * 2 + 12;
    assert_eq!(img.width(), margin + 12 * 40 + 4);
    for row in 0..12u32 {
        let y = margin + row * 40 + 20;
        let ink = (0..margin - 4).filter(|&x| (y - 6..y + 6).any(|y| img.get_pixel(x, y).0[0] < 120)).count();
        assert!(ink > 6, "row {row} has its name drawn left of the grid");
        let x = margin + row * 40 + 20;
        let ink = (0..margin - 4).filter(|&y| (x - 6..x + 6).any(|x| img.get_pixel(x, y).0[0] < 120)).count();
        assert!(ink > 6, "column {row} has its name drawn above the grid");
    }
}
