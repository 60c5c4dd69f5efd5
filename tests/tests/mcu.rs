//! The Cortex-M firmware (`firmware/mcu`, crate lepton-mcu) on an emulated Cortex-M4: built for
//! thumbv7em-none-eabihf (release) with a model and inputs embedded, booted on QEMU's MPS2 AN386
//! board with the runner of `.cargo/config.toml`, and its console compared value for value with
//! the host engine (`lepton-convert run` on the same `.lpm` and inputs); in speaker mode, its
//! postcard events and alert pin with the host's audio pipeline on the same recording; in live
//! speaker mode (feature `live`), the recording streamed into its UART by `lepton-mcu-listen` and
//! the events it sends back on another.

use lepton_e2e::{bin, root, run, scratch, text};
use lepton_runtime::audio::frontend::FrontendConfig;
use lepton_runtime::engine::micro::Interpreter;
use lepton_runtime::engine::Engine;
use lepton_runtime::event::{decode, Event, EventKind};
use lepton_runtime::pipeline::{AudioPipeline, FrameReport, Preprocess, Sink};
use lepton_runtime::source::{Frame, WavSource};
use lepton_runtime::tensor::TensorDataMut;
use lepton_runtime::{FrameMeta, LeptonError, Model};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TARGET: &str = "thumbv7em-none-eabihf";
/// The alert of `firmware/mcu/src/board.rs`: on for 1.5 s after the last keyword, blinking 250/250 ms.
const HOLD_MS: u64 = 1500;
const BLINK_MS: u64 = 250;

fn data(path: &str) -> PathBuf {
    root().join(path)
}

/// The QEMU command line of the cargo runner for the firmware's target (`.cargo/config.toml`).
fn runner() -> Vec<String> {
    runner_for(TARGET)
}

/// The QEMU command line of the cargo runner for `target` (`.cargo/config.toml`).
fn runner_for(target: &str) -> Vec<String> {
    let config = std::fs::read_to_string(root().join(".cargo/config.toml")).expect(".cargo/config.toml");
    let section = config
        .split(&format!("[target.{target}]"))
        .nth(1)
        .unwrap_or_else(|| panic!("a [target.{target}] section in .cargo/config.toml"));
    let line = section.lines().find(|l| l.trim_start().starts_with("runner")).expect("a runner for the firmware");
    let command = line.split('"').nth(1).expect("runner = \"...\"");
    let words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    match Command::new(&words[0]).arg("--version").output() {
        Ok(o) if o.status.success() => words,
        _ => panic!(
            "{} is not installed: the firmware tests boot it on QEMU. Install the Debian package qemu-system-arm \
             (apt-get install qemu-system-arm; scripts/install-deps --test does it)",
            words[0]
        ),
    }
}

/// Builds the firmware (release, for the Cortex-M4F) with `features` and the given LEPTON_MCU_*
/// variables (the others unset), and copies the ELF to `dir`. Builds are serialized: they share
/// one output file.
fn build(dir: &Path, features: &[&str], vars: &[(&str, PathBuf)]) -> Result<PathBuf, String> {
    build_for(TARGET, dir, features, vars)
}

/// [`build`] for another target.
fn build_for(target: &str, dir: &Path, features: &[&str], vars: &[(&str, PathBuf)]) -> Result<PathBuf, String> {
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let mut cmd = lepton_e2e::cargo();
    cmd.args(["build", "--quiet", "--release", "-p", "lepton-mcu", "--target", target]).current_dir(root());
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    if features.contains(&"nano33-ble-sense") {
        // A real board: no semihosting console (the default feature).
        cmd.arg("--no-default-features");
    }
    for v in [
        "LEPTON_MCU_BOARD",
        "LEPTON_MCU_MODEL",
        "LEPTON_MCU_INPUTS",
        "LEPTON_MCU_AUDIO",
        "LEPTON_MCU_TRUSTED_KEYS",
        "LEPTON_MCU_RING",
    ] {
        cmd.env_remove(v);
    }
    cmd.envs(vars.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().expect("running cargo build");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    // target/<profile>/deps/<test binary> → target/
    let exe = std::env::current_exe().expect("test binary path");
    let target_dir = exe.ancestors().nth(3).expect("test binary under target/<profile>/deps");
    let elf = dir.join("lepton-mcu.elf");
    std::fs::copy(target_dir.join(target).join("release/lepton-mcu"), &elf).expect("copying the firmware");
    Ok(elf)
}

/// Held while a firmware build writes target/thumbv7em-none-eabihf/release/lepton-mcu and until
/// it is copied away.
static BUILD: Mutex<()> = Mutex::new(());

/// What the firmware wrote: its exit code and its console (semihosting stderr) lines.
struct Boot {
    code: Option<i32>,
    lines: Vec<String>,
    took: Duration,
}

fn boot(elf: &Path) -> Boot {
    boot_with(runner(), elf)
}

/// [`boot`] with another QEMU command line.
fn boot_with(words: Vec<String>, elf: &Path) -> Boot {
    let start = Instant::now();
    let mut child = Command::new(&words[0])
        .args(&words[1..])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting qemu-system-arm");
    let stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = start + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for qemu") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the firmware did not exit within 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let console = reader.join().unwrap_or_default();
    Boot { code: status.code(), lines: console.lines().map(str::to_string).collect(), took: start.elapsed() }
}

/// `output <run> <name> <values>` lines: (run, output name, int8 values).
fn outputs(b: &Boot) -> Vec<(usize, String, Vec<i8>)> {
    b.lines
        .iter()
        .filter(|l| l.starts_with("output "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 4, "{l}");
            let values = f[3].split(',').map(|v| v.parse().unwrap_or_else(|_| panic!("{l}: `{v}`"))).collect();
            (f[1].parse().unwrap_or_else(|_| panic!("{l}")), f[2].to_string(), values)
        })
        .collect()
}

fn read_i8(path: &Path) -> Vec<i8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    npyz::NpyFile::new(&bytes[..])
        .and_then(|f| f.into_vec::<i8>())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn npy_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "npy"))
        .collect();
    v.sort();
    v
}

/// The committed `.lpm` is what `lepton-convert compile` makes of the committed int8 model.
fn assert_compiled_from(lpm: &Path, int8: &Path, dir: &Path) {
    let fresh = dir.join("fresh.lpm");
    let out = run("lepton-convert", &["compile", &int8.display().to_string(), "-o", &fresh.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(
        std::fs::read(lpm).unwrap() == std::fs::read(&fresh).unwrap(),
        "{} is stale: run `lepton-convert compile {} -o {}`",
        lpm.display(),
        int8.display(),
        lpm.display()
    );
}

/// Runs the firmware on `inputs` (one list of (input name, file) per run) and compares every
/// output line with `lepton-convert run` on the same model and files.
fn compare_with_host(boot: &Boot, lpm: &Path, inputs: &[Vec<(String, PathBuf)>], dir: &Path) {
    assert_eq!(boot.code, Some(0), "firmware console:\n{}", boot.lines.join("\n"));
    let lines = outputs(boot);
    let bytes = std::fs::read(lpm).unwrap();
    let model: Interpreter<'_, 1024> = Interpreter::new(&bytes).unwrap();
    let names: Vec<&str> = model.header().outputs.iter().map(|&i| model.tensors()[i as usize].name).collect();
    assert_eq!(
        lines.len(),
        inputs.len() * names.len(),
        "one line per input set and output:\n{}",
        boot.lines.join("\n")
    );
    for (k, set) in inputs.iter().enumerate() {
        let out_dir = dir.join(format!("host-{k}"));
        let mut args = vec!["run".to_string(), lpm.display().to_string()];
        for (name, file) in set {
            args.extend(["--input".into(), format!("{name}={}", file.display())]);
        }
        args.extend(["--output-dir".into(), out_dir.display().to_string()]);
        let out = run("lepton-convert", &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}", text(&out).1);
        for (o, name) in names.iter().enumerate() {
            let (run_index, line_name, values) = &lines[k * names.len() + o];
            assert_eq!((*run_index, line_name.as_str()), (k, *name));
            let host = read_i8(&out_dir.join(format!("{name}.npy")));
            assert_eq!(values, &host, "input set {k} ({}), output `{name}`: firmware vs host", set[0].1.display());
        }
    }
}

#[test]
fn the_digit_classifier_on_a_cortex_m4_prints_what_the_host_engine_computes() {
    let dir = scratch("mcu-digits");
    let lpm = data("models/digits/model.lpm");
    assert_compiled_from(&lpm, &data("models/digits/model.int8.onnx"), &dir);
    // The shipped inputs are the runtime's own preprocessing and quantization of the sample pictures.
    let files = npy_files(&data("models/digits/mcu-inputs"));
    let pictures = lepton_runtime::image::load_dir(data("models/digits/samples")).unwrap();
    assert_eq!(files.len(), pictures.len());
    let mut stages = Model::load(&lpm).unwrap().into_vision_stages().unwrap();
    for (file, picture) in files.iter().zip(&pictures) {
        assert_eq!(file.file_stem().unwrap().to_str(), Path::new(&picture.name).file_stem().unwrap().to_str());
        let frame = Frame { image: picture.view().unwrap(), meta: FrameMeta { frame: 0, timestamp_ms: 0 }, name: None };
        stages.pre.preprocess(&frame, stages.engine.input_mut(0).unwrap()).unwrap();
        let mut input = stages.engine.input_mut(0).unwrap();
        let TensorDataMut::I8(expected) = input.data_mut() else { panic!("the digit model takes int8") };
        assert_eq!(
            read_i8(file),
            expected.to_vec(),
            "{} differs from the runtime's preprocessing: run python3 models/digits/make_mcu_inputs.py",
            file.display()
        );
    }
    // Defaults: the shipped model and inputs.
    let elf = build(&dir, &[], &[]).unwrap_or_else(|e| panic!("building the firmware:\n{e}"));
    let b = boot(&elf);
    eprintln!("digits: {} input sets on the emulated Cortex-M4 in {:.2} s", files.len(), b.took.as_secs_f64());
    let sets: Vec<Vec<(String, PathBuf)>> = files.iter().map(|f| vec![("image".to_string(), f.clone())]).collect();
    compare_with_host(&b, &lpm, &sets, &dir);
    // And the classifier is right on its samples (file names end with the digit).
    for ((_, _, logits), file) in outputs(&b).iter().zip(&files) {
        let best = (0..logits.len()).max_by_key(|&i| logits[i]).unwrap();
        let digit = file.file_stem().unwrap().to_str().unwrap().rsplit('-').next().unwrap();
        assert_eq!(best.to_string(), digit, "{}", file.display());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn every_micro_op_runs_bit_exact_on_a_cortex_m4() {
    let dir = scratch("mcu-ops");
    let fixture = data("runtime/tests/data/micro_ops");
    let lpm = fixture.join("model.lpm");
    assert_compiled_from(&lpm, &fixture.join("model.int8.onnx"), &dir);
    // The fixture covers every operator of the format (lepton_runtime::engine::micro::format::Op).
    let bytes = std::fs::read(&lpm).unwrap();
    let model: Interpreter<'_, 1024> = Interpreter::new(&bytes).unwrap();
    let mut kinds: Vec<&str> = model.ops().map(|op| op.unwrap().name()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let all = [
        "Add",
        "AvgPool",
        "Concat",
        "Conv",
        "Copy",
        "FullyConnected",
        "GlobalAvgPool",
        "Lut",
        "MaxPool",
        "Mul",
        "Softmax",
        "Transpose",
    ];
    assert_eq!(kinds, all);
    // Two inputs (one subfolder each), float32 files quantized at build time.
    let inputs = fixture.join("inputs");
    let elf = build(&dir, &[], &[("LEPTON_MCU_MODEL", lpm.clone()), ("LEPTON_MCU_INPUTS", inputs.clone())])
        .unwrap_or_else(|e| panic!("building the firmware:\n{e}"));
    let b = boot(&elf);
    let (images, sides) = (npy_files(&inputs.join("image")), npy_files(&inputs.join("side")));
    let sets: Vec<Vec<(String, PathBuf)>> = images
        .iter()
        .zip(&sides)
        .map(|(i, s)| vec![("image".to_string(), i.clone()), ("side".to_string(), s.clone())])
        .collect();
    compare_with_host(&b, &lpm, &sets, &dir);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Writes an int8 `.npy` file of `shape`.
fn write_i8_npy(path: &Path, shape: &[u64], values: &[i8]) {
    use npyz::WriterBuilder;
    let mut file = std::fs::File::create(path).unwrap();
    let mut w = npyz::WriteOptions::<i8>::new().default_dtype().shape(shape).writer(&mut file).begin_nd().unwrap();
    w.extend(values.iter().copied()).unwrap();
    w.finish().unwrap();
}

#[test]
fn the_dsp_kernel_set_is_bit_exact_with_the_reference_inside_the_firmware() {
    // Conformance build: randomized convolutions, depthwise and fully connected layers through
    // the Cortex-M DSP kernels and the reference kernels, then the keyword spotter (every op kind
    // the DSP set has) on random features with both, all on the emulated Cortex-M4.
    let dir = scratch("mcu-conformance");
    let inputs = dir.join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let mut seed = 0x2545_f491_u32;
    for k in 0..3 {
        let values: Vec<i8> = (0..98 * 40)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as i8
            })
            .collect();
        write_i8_npy(&inputs.join(format!("{k}.npy")), &[1, 1, 98, 40], &values);
    }
    let vars = [("LEPTON_MCU_MODEL", data("models/keywords/model.lpm")), ("LEPTON_MCU_INPUTS", inputs)];
    let elf = build(&dir, &["conformance"], &vars).unwrap_or_else(|e| panic!("building the firmware:\n{e}"));
    let b = boot(&elf);
    let console = b.lines.join("\n");
    assert_eq!(b.code, Some(0), "firmware console:\n{console}");
    for kernel in ["conv", "depthwise", "fully_connected"] {
        let line = format!("conformance {kernel} cases=1000 mismatches=0");
        assert!(b.lines.contains(&line), "no `{line}`:\n{console}");
    }
    assert!(b.lines.contains(&"conformance model runs=3 mismatches=0".to_string()), "{console}");
    assert!(b.lines.contains(&"kernel set cortexmdsp: bit-exact with the reference".to_string()), "{console}");
    // scripts/test lists the sets tested under emulation.
    let line = "kernel set cortexmdsp: conformance tested inside the firmware under qemu-system-arm -cpu cortex-m4";
    let emulated = root().join("target/tmp/emulated");
    let _ = std::fs::create_dir_all(&emulated);
    let _ = std::fs::write(emulated.join("cortexmdsp.txt"), format!("{line}\n"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Instructions of the Cortex-M DSP extension (armv7e-m's, optional on armv8-m mainline): SIMD
/// on halfwords and bytes, halfword multiplies, saturating arithmetic, packing.
const DSP_MNEMONICS: &[&str] = &[
    "smlad", "smladx", "smlsd", "smlsdx", "smuad", "smuadx", "smusd", "smusdx", "smlald", "smlaldx", "smlsld",
    "smlsldx", "smlabb", "smlabt", "smlatb", "smlatt", "smlawb", "smlawt", "smulbb", "smulbt", "smultb", "smultt",
    "smulwb", "smulwt", "smlalbb", "smlalbt", "smlaltb", "smlaltt", "smmla", "smmlar", "smmls", "smmlsr", "smmul",
    "smmulr", "sxtb16", "sxtab16", "sxtab", "sxtah", "uxtb16", "uxtab16", "uxtab", "uxtah", "qadd", "qsub", "qdadd",
    "qdsub", "qadd8", "qadd16", "qsub8", "qsub16", "qasx", "qsax", "sadd8", "sadd16", "ssub8", "ssub16", "sasx",
    "ssax", "shadd8", "shadd16", "shsub8", "shsub16", "uadd8", "uadd16", "usub8", "usub16", "uqadd8", "uqadd16",
    "uqsub8", "uqsub16", "uhadd8", "uhadd16", "ssat16", "usat16", "usad8", "usada8", "pkhbt", "pkhtb", "sel",
];

/// The DSP instructions in an ELF's code (llvm-objdump told that the core has DSP, so that it
/// decodes them whatever the ELF's attributes say), with their addresses.
fn dsp_instructions(elf: &Path) -> Vec<String> {
    let out = Command::new("llvm-objdump")
        .args(["-d", "--no-show-raw-insn", "--mattr=+dsp"])
        .arg(elf)
        .output()
        .expect("llvm-objdump (Debian package llvm; scripts/install-deps --test installs it)");
    assert!(out.status.success(), "llvm-objdump: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter(|l| {
            // `     96a:      \tsxtb16\tr3, r1, ror #8`
            let Some((address, insn)) = l.split_once(':') else { return false };
            let address = address.trim();
            if address.is_empty() || !address.chars().all(|c| c.is_ascii_hexdigit()) {
                return false;
            }
            let mnemonic = insn.split_whitespace().next().unwrap_or("");
            // Condition and width suffixes inside IT blocks (smladeq, sxtb16.w) are the same instruction.
            let base = mnemonic.split('.').next().unwrap_or("");
            DSP_MNEMONICS.iter().any(|m| {
                base == *m
                    || base.strip_prefix(m).is_some_and(|c| {
                        ["eq", "ne", "cs", "cc", "hs", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le"]
                            .contains(&c)
                    })
            })
        })
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn a_cortex_m33_without_dsp_gets_no_dsp_instructions_and_runs_the_digit_classifier() {
    const M33: &str = "thumbv8m.main-none-eabihf";
    let dir = scratch("mcu-m33-nodsp");
    // The board profile says its core has no DSP: the firmware builds without the DSP kernels.
    let vars = [("LEPTON_MCU_BOARD", PathBuf::from("mps2-an505-nodsp"))];
    let elf = build_for(M33, &dir, &[], &vars).unwrap_or_else(|e| {
        panic!("building the firmware for {M33} (rustup target add {M33}; scripts/install-deps --test):\n{e}")
    });
    let found = dsp_instructions(&elf);
    assert!(found.is_empty(), "DSP instructions in a build for a core without DSP:\n{}", found.join("\n"));
    // The scan finds them where they are: the Cortex-M4 build runs the DSP kernels.
    std::fs::create_dir_all(dir.join("m4")).unwrap();
    let m4 = build(&dir.join("m4"), &[], &[]).unwrap_or_else(|e| panic!("building the firmware:\n{e}"));
    let in_m4 = dsp_instructions(&m4);
    assert!(in_m4.iter().any(|l| l.contains("smlad")), "no smlad in the Cortex-M4 build: {in_m4:?}");
    // It runs on QEMU's Cortex-M33 with the DSP extension turned off (where a DSP instruction
    // faults), and computes what the host engine does.
    let words = runner_for(M33);
    assert!(words.iter().any(|w| w.contains("dsp=off")), "the runner turns DSP off: {words:?}");
    let b = boot_with(words, &elf);
    let lpm = data("models/digits/model.lpm");
    let files = npy_files(&data("models/digits/mcu-inputs"));
    eprintln!(
        "digits: {} input sets on the emulated Cortex-M33 without DSP in {:.2} s",
        files.len(),
        b.took.as_secs_f64()
    );
    let sets: Vec<Vec<(String, PathBuf)>> = files.iter().map(|f| vec![("image".to_string(), f.clone())]).collect();
    compare_with_host(&b, &lpm, &sets, &dir);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_models_and_inputs_fail_the_build_with_the_file_named() {
    let dir = scratch("mcu-bad");
    let png = data("models/digits/samples/frame-00-digit-6.png");
    let e = build(&dir, &[], &[("LEPTON_MCU_MODEL", png)]).unwrap_err();
    assert!(e.contains("frame-00-digit-6.png") && e.contains("not a Lepton micro model"), "{e}");
    // Inputs of another model: the shape is named.
    let wrong = data("runtime/tests/data/micro_ops/inputs/image");
    let e = build(&dir, &[], &[("LEPTON_MCU_INPUTS", wrong)]).unwrap_err();
    assert!(e.contains("00.npy") && e.contains("[1, 1, 16, 16]") && e.contains("[1, 3, 12, 12]"), "{e}");
    let e = build(&dir, &[], &[("LEPTON_MCU_BOARD", "esp32".into())]).unwrap_err();
    assert!(
        e.contains("LEPTON_MCU_BOARD=esp32") && e.contains("mps2-an386, mps2-an505-nodsp, nano33-ble-sense, stm32f746"),
        "{e}"
    );
    // A board for another target.
    let e = build(&dir, &[], &[("LEPTON_MCU_BOARD", "mps2-an505-nodsp".into())]).unwrap_err();
    assert!(e.contains("thumbv8m.main-none-eabihf") && e.contains("--target"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn with_trusted_keys_only_a_model_signed_by_one_of_them_builds() {
    let dir = scratch("mcu-signed");
    let convert = |args: &[&str]| {
        let out = Command::new(bin("lepton-convert")).args(args).output().expect("running lepton-convert");
        assert!(out.status.success(), "lepton-convert {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let owner = dir.join("owner");
    let stranger = dir.join("stranger");
    convert(&["keygen", "-o", owner.to_str().unwrap()]);
    convert(&["keygen", "-o", stranger.to_str().unwrap()]);
    let lpm = dir.join("digits.lpm");
    std::fs::copy(data("models/digits/model.lpm"), &lpm).unwrap();
    let keys = |k: &Path| ("LEPTON_MCU_TRUSTED_KEYS", k.with_extension("pub"));
    // Unsigned.
    let e = build(&dir, &[], &[("LEPTON_MCU_MODEL", lpm.clone()), keys(&owner)]).unwrap_err();
    assert!(e.contains("digits.lpm") && e.contains("not signed"), "{e}");
    // Signed by a key the build does not trust.
    convert(&["sign", lpm.to_str().unwrap(), "--key", stranger.with_extension("key").to_str().unwrap()]);
    let e = build(&dir, &[], &[("LEPTON_MCU_MODEL", lpm.clone()), keys(&owner)]).unwrap_err();
    assert!(e.contains("digits.lpm") && e.contains("not among the trusted keys"), "{e}");
    // Signed by the owner: builds and runs; then one byte changed after signing: refused.
    convert(&["sign", lpm.to_str().unwrap(), "--key", owner.with_extension("key").to_str().unwrap()]);
    let elf = build(&dir, &[], &[("LEPTON_MCU_MODEL", lpm.clone()), keys(&owner)])
        .unwrap_or_else(|e| panic!("building the firmware with a signed model:\n{e}"));
    assert_eq!(boot(&elf).code, Some(0));
    let mut bytes = std::fs::read(&lpm).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&lpm, bytes).unwrap();
    let e = build(&dir, &[], &[("LEPTON_MCU_MODEL", lpm.clone()), keys(&owner)]).unwrap_err();
    assert!(e.contains("digits.lpm") && e.contains("changed after signing"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The host's audio pipeline results, with times relative to its first model run.
#[derive(Debug, Clone, Default)]
struct Collect {
    first_ms: Option<u64>,
    runs: u64,
    /// (time, class, kind, score) of keyword detections (as starts) and VAD events.
    events: Vec<(u64, u16, EventKind, f32)>,
}

impl Sink for Collect {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        let first = *self.first_ms.get_or_insert(r.meta.timestamp_ms);
        self.runs += 1;
        for d in r.detections {
            self.events.push((r.meta.timestamp_ms - first, d.class, EventKind::Start, d.score));
        }
        for e in r.events {
            self.events.push((e.timestamp_ms - first, e.class, e.kind, e.score));
        }
        Ok(())
    }
}

fn host_audio(lpm: &Path, wav: &Path) -> (Collect, u64) {
    let model = Model::load(lpm).unwrap();
    let manifest = model.manifest().cloned().expect("an audio manifest");
    let source = WavSource::open(wav).unwrap();
    let mut p = AudioPipeline::new(source, model.into_engine().unwrap(), Collect::default(), &manifest, lpm).unwrap();
    let samples = p.run().unwrap().samples;
    (p.sink().clone(), samples)
}

/// Pin transitions an alert makes for activations `[start, end)`: high at each start, blinking
/// `BLINK_MS` on and off, low at the end (when on).
fn expected_pins(activations: &[(u64, u64)]) -> Vec<Pin> {
    let mut pins = vec![(false, 0)];
    for &(start, end) in activations {
        let mut t = start;
        while t < end {
            pins.push((true, t));
            let off = (t + BLINK_MS).min(end);
            pins.push((false, off));
            t += 2 * BLINK_MS;
        }
    }
    pins
}

/// A pin transition: (high, at ms).
type Pin = (bool, u64);

/// What the firmware printed in speaker mode.
struct SpeakerConsole {
    /// Events, with the firmware's (stream) times.
    events: Vec<Event>,
    /// Pin transitions.
    pins: Vec<Pin>,
    /// The summary line's `key=value` fields.
    summary: Vec<(String, u64)>,
}

fn speaker(b: &Boot) -> SpeakerConsole {
    assert_eq!(b.code, Some(0), "firmware console:\n{}", b.lines.join("\n"));
    let mut c = SpeakerConsole { events: vec![], pins: vec![], summary: vec![] };
    for line in &b.lines {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "event" => {
                let hex = f[1];
                let bytes: Vec<u8> =
                    (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
                c.events.push(decode::<Event>(&bytes).unwrap_or_else(|e| panic!("{line}: {e}")));
            }
            "pin" => {
                assert!(f.len() == 4 && f[2] == "at", "{line}");
                c.pins.push((f[1] == "high", f[3].parse().unwrap_or_else(|_| panic!("{line}"))));
            }
            "audio" => {
                c.summary = f[2..]
                    .iter()
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{line}"));
                        (k.to_string(), v.parse().unwrap_or_else(|_| panic!("{line}")))
                    })
                    .collect();
            }
            _ => panic!("unexpected console line `{line}`"),
        }
    }
    c
}

fn field(summary: &[(String, u64)], key: &str) -> u64 {
    summary.iter().find(|(k, _)| k == key).map(|(_, v)| *v).unwrap_or_else(|| panic!("no {key} in {summary:?}"))
}

/// Builds and boots speaker mode on `lpm` and `wav`; checks events against the host pipeline and
/// returns (firmware events, pin transitions).
fn speaker_matches_host(test: &str, lpm: &Path, wav: &Path) -> (Vec<Event>, Vec<Pin>) {
    let dir = scratch(test);
    let elf =
        build(&dir, &["speaker"], &[("LEPTON_MCU_MODEL", lpm.to_path_buf()), ("LEPTON_MCU_AUDIO", wav.to_path_buf())])
            .unwrap_or_else(|e| panic!("building the firmware:\n{e}"));
    let b = boot(&elf);
    let SpeakerConsole { events, pins, summary } = speaker(&b);
    let (host, samples) = host_audio(lpm, wav);
    assert_eq!(field(&summary, "samples"), samples);
    assert_eq!(field(&summary, "runs"), host.runs);
    assert_eq!(field(&summary, "events"), events.len() as u64);
    let first = field(&summary, "first_run_ms");
    let ours: Vec<(u64, u16, EventKind, f32)> =
        events.iter().map(|e| (e.timestamp_ms - first, e.class, e.kind, e.score)).collect();
    assert_eq!(ours, host.events, "firmware vs host pipeline (times from the first model run)");
    eprintln!("{test}: {} model runs on the emulated Cortex-M4 in {:.2} s", host.runs, b.took.as_secs_f64());
    std::fs::remove_dir_all(dir).unwrap();
    (events, pins)
}

/// The instruction-counting TCG plugin (`../shared/tools/insn`), built once into target/; `None`
/// (and listed as skipped) where its source or a C compiler is missing.
fn insn_plugin() -> Option<PathBuf> {
    static PLUGIN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PLUGIN
        .get_or_init(|| {
            let src = root().join("../shared/tools/insn/insn.c");
            let out = root().join("target/tmp/libinsn.so");
            let _ = std::fs::create_dir_all(root().join("target/tmp"));
            let built = src.exists()
                && Command::new("cc")
                    .args(["-shared", "-fPIC", "-O2", "-o"])
                    .arg(&out)
                    .arg(&src)
                    .status()
                    .is_ok_and(|s| s.success());
            if !built {
                lepton_e2e::skipped(
                    "instructions per second of audio (live firmware)",
                    &format!("{} or cc is missing: the TCG plugin counts them", src.display()),
                );
            }
            built.then_some(out)
        })
        .clone()
}

/// What `lepton-mcu-listen --json` reported of a live run.
struct Live {
    events: Vec<Event>,
    pins: Vec<Pin>,
    json: serde_json::Value,
}

/// Builds the live firmware (with `features` besides `live`, and a ring of `ring` samples) for
/// `lpm` and streams `wav` into it with `lepton-mcu-listen`.
fn listen(test: &str, features: &[&str], ring: Option<usize>, lpm: &Path, wav: &Path) -> Live {
    let dir = scratch(test);
    let features: Vec<&str> = ["live"].iter().chain(features).copied().collect();
    let mut vars = vec![("LEPTON_MCU_MODEL", lpm.to_path_buf())];
    vars.extend(ring.map(|r| ("LEPTON_MCU_RING", PathBuf::from(r.to_string()))));
    let elf = build(&dir, &features, &vars).unwrap_or_else(|e| panic!("building the live firmware:\n{e}"));
    let mut args = vec![elf.display().to_string(), lpm.display().to_string(), wav.display().to_string()];
    args.push("--json".into());
    if let Some(p) = insn_plugin() {
        args.extend(["--insn-plugin".into(), p.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("lepton-mcu-listen", &args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "lepton-mcu-listen {args:?}:\n{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
    parse_live(&stdout)
}

/// `scripts/mcu-listen --json MODEL RECORDING`: builds the firmware and the tool itself.
fn listen_with_script(lpm: &Path, wav: &Path) -> Live {
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    // The tools this test build made: cargo run by the script for `-p` alone would resolve other
    // features and build their dependencies a second time.
    let tools = bin("lepton-mcu-listen").parent().expect("the binaries' folder").to_path_buf();
    let out = lepton_e2e::without_cargo_test_env(Command::new(root().join("scripts/mcu-listen")))
        .args(["--json".as_ref(), lpm.as_os_str(), wav.as_os_str()])
        .env("LEPTON_BIN_DIR", tools)
        .output()
        .expect("running scripts/mcu-listen");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "scripts/mcu-listen --json {} {}:\n{stderr}", lpm.display(), wav.display());
    parse_live(&stdout)
}

/// Reads what `lepton-mcu-listen --json` printed.
fn parse_live(stdout: &str) -> Live {
    let json: serde_json::Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let events = json["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| Event {
            class: e["class"].as_u64().unwrap() as u16,
            kind: if e["kind"] == "end" { EventKind::End } else { EventKind::Start },
            timestamp_ms: e["t_ms"].as_u64().unwrap(),
            score: e["score"].as_f64().unwrap() as f32,
        })
        .collect();
    let pins = json["pins"]
        .as_array()
        .expect("pins")
        .iter()
        .map(|p| (p[0].as_bool().unwrap(), p[1].as_u64().unwrap()))
        .collect();
    Live { events, pins, json }
}

/// Streams `wav` into the live firmware built for `lpm` (by `scripts/mcu-listen` when `script`);
/// checks its events against the host pipeline, and that nothing was lost; returns (events, pin
/// transitions).
fn live_matches_host(test: &str, lpm: &Path, wav: &Path, script: bool) -> (Vec<Event>, Vec<Pin>) {
    let Live { events, pins, json } =
        if script { listen_with_script(lpm, wav) } else { listen(test, &[], None, lpm, wav) };
    let (host, samples) = host_audio(lpm, wav);
    let count = |k: &str| json[k].as_u64().unwrap_or_else(|| panic!("{k} in {json}"));
    assert_eq!((count("samples"), count("overruns"), count("bad_frames")), (samples, 0, 0), "{json}");
    assert_eq!((count("runs"), count("events_sent")), (host.runs, events.len() as u64), "{json}");
    let first = count("first_run_ms");
    let ours: Vec<(u64, u16, EventKind, f32)> =
        events.iter().map(|e| (e.timestamp_ms - first, e.class, e.kind, e.score)).collect();
    assert_eq!(ours, host.events, "live firmware vs host pipeline (times from the first model run)");
    eprintln!(
        "{test}: {:.2} s of audio streamed in {:.2} s; {} instructions and {} busy SysTick cycles per second of audio",
        json["audio_seconds"].as_f64().unwrap_or(0.0),
        json["stream_seconds"].as_f64().unwrap_or(0.0),
        json["instructions_per_second"],
        json["cycles_per_second"]
    );
    (events, pins)
}

#[test]
fn speaker_mode_sends_keyword_events_and_blinks_the_alert() {
    // Live, by scripts/mcu-listen: the recording streams in through UART0, the events come back
    // framed on UART1.
    let lpm = data("runtime/tests/data/energy_micro/keyword.lpm");
    let wav = data("runtime/tests/data/speech_gap.wav");
    let (events, pins) = live_matches_host("mcu-keyword", &lpm, &wav, true);
    // The tool's refusals: an emulator that ends before connecting, a speed out of range.
    let (lpm_s, wav_s) = (lpm.to_str().unwrap(), wav.to_str().unwrap());
    for (args, says) in [
        (vec![lpm_s, lpm_s, wav_s, "--qemu", "false"], "QEMU ended"),
        (vec![lpm_s, lpm_s, wav_s, "--speed", "0"], "--speed 0"),
    ] {
        let out = run("lepton-mcu-listen", &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out).1.contains(says), "{args:?}: {}", text(&out).1);
    }
    // The script's refusals: a board without a live source, a missing file.
    for (args, says) in [
        (
            vec!["--board", "stm32f746", lpm.to_str().unwrap(), wav.to_str().unwrap()],
            "live audio source only on mps2-an386",
        ),
        (vec![lpm.to_str().unwrap(), "no-such.wav"], "recording no-such.wav: no such file"),
    ] {
        let out = Command::new(root().join("scripts/mcu-listen")).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out).1.contains(says), "{args:?}: {}", text(&out).1);
    }
    // Two loud stretches (1 s and 3 s into the recording): one "loud" keyword each.
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e.class == 1 && e.kind == EventKind::Start && e.score >= 0.7));
    assert!((1000..1400).contains(&events[0].timestamp_ms) && (3000..3400).contains(&events[1].timestamp_ms));
    // The alert: on for HOLD_MS after each keyword (merged when they overlap), blinking.
    let mut activations: Vec<(u64, u64)> = vec![];
    for e in &events {
        match activations.last_mut() {
            Some(a) if e.timestamp_ms < a.1 => a.1 = a.1.max(e.timestamp_ms + HOLD_MS),
            _ => activations.push((e.timestamp_ms, e.timestamp_ms + HOLD_MS)),
        }
    }
    assert_eq!(pins, expected_pins(&activations));
}

#[test]
fn the_shipped_keyword_spotter_hears_the_demo_words_on_a_cortex_m4() {
    // The firmware's default speaker build: models/keywords/model.lpm on models/keywords/demo.wav
    // (~450 runs of the 7.6 M-MAC DS-CNN under QEMU, about a minute).
    let lpm = data("models/keywords/model.lpm");
    let dir = scratch("mcu-shipped-kws");
    assert_compiled_from(&lpm, &data("models/keywords/model.int8.onnx"), &dir);
    let (events, _) = speaker_matches_host("mcu-shipped-kws", &lpm, &data("models/keywords/demo.wav"));
    let labels = Model::load(&lpm).unwrap().manifest().unwrap().labels.clone();
    let heard: Vec<&str> = events.iter().map(|e| labels[e.class as usize].as_str()).collect();
    let spoken = std::fs::read_to_string(data("models/keywords/demo.txt")).unwrap();
    assert_eq!(heard, spoken.split_whitespace().collect::<Vec<_>>());
}

#[test]
fn the_keyword_spotter_banded_into_a_30_kb_arena_hears_the_demo_words_on_a_cortex_m4() {
    // `compile --max-arena`: the first convolution and the depthwise one after it run in bands,
    // so the firmware's static arena shrinks from 69,440 bytes to under 30,000.
    let dir = scratch("mcu-banded-kws");
    let lpm = dir.join("banded.lpm");
    let int8 = data("models/keywords/model.int8.onnx");
    let out = run(
        "lepton-convert",
        &["compile", &int8.display().to_string(), "-o", &lpm.display().to_string(), "--max-arena", "30000"],
    );
    assert!(out.status.success(), "{}", text(&out).1);
    let bytes = std::fs::read(&lpm).unwrap();
    let model: Interpreter<'_, 1024> = Interpreter::new(&bytes).unwrap();
    assert!(model.arena_bytes() <= 30000, "{}", model.arena_bytes());
    let (events, _) = speaker_matches_host("mcu-banded-kws-run", &lpm, &data("models/keywords/demo.wav"));
    let labels = Model::load(&lpm).unwrap().manifest().unwrap().labels.clone();
    let heard: Vec<&str> = events.iter().map(|e| labels[e.class as usize].as_str()).collect();
    let spoken = std::fs::read_to_string(data("models/keywords/demo.txt")).unwrap();
    assert_eq!(heard, spoken.split_whitespace().collect::<Vec<_>>());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn speaker_mode_with_a_vad_model_follows_speech_start_and_end() {
    // Live, as the keyword test.
    let lpm = data("runtime/tests/data/energy_micro/vad.lpm");
    let wav = data("runtime/tests/data/speech_gap.wav");
    let (events, pins) = live_matches_host("mcu-vad", &lpm, &wav, false);
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Start, EventKind::End, EventKind::Start, EventKind::End], "{events:?}");
    // The alert is on from each start to its end (released), blinking.
    let activations: Vec<(u64, u64)> = events.chunks(2).map(|p| (p[0].timestamp_ms, p[1].timestamp_ms)).collect();
    assert_eq!(pins, expected_pins(&activations));
}

#[test]
fn the_energy_fixtures_are_what_compile_makes_of_their_int8_models() {
    let dir = scratch("mcu-fixtures");
    let d = data("runtime/tests/data/energy_micro");
    for m in ["keyword", "vad"] {
        assert_compiled_from(&d.join(format!("{m}.lpm")), &d.join(format!("{m}.int8.onnx")), &dir);
    }
    // Their frontend is the one the firmware embeds: the manifest carried in the .lpm.
    let model = Model::load(d.join("keyword.lpm")).unwrap();
    let cfg: FrontendConfig = model.manifest().unwrap().frontend_config(&d).unwrap();
    assert_eq!((cfg.sample_rate, cfg.window, cfg.hop, cfg.mels), (16000, 400, 160, 20));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_microwakeword_model_compiled_from_its_json_hears_its_wake_word_on_a_cortex_m4_as_the_host_does() {
    // okay_nabu.json → .lpm (wake word, decision and six state variables inside); spoken phrases;
    // the firmware's TFLite Micro frontend and decision against the host pipeline, event for event.
    let dir = scratch("mcu-wake-word");
    let json = data("target/test-models/okay_nabu.json");
    assert!(json.exists(), "{}: run scripts/fetch-test-models (scripts/test does)", json.display());
    let lpm = dir.join("okay_nabu.lpm");
    let out = run("lepton-convert", &["compile", &json.display().to_string(), "-o", &lpm.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let wav = dir.join("phrases.wav");
    lepton_e2e::python(&[
        "tests/fixtures/speak.py",
        &wav.display().to_string(),
        "en-us",
        "1.0",
        "okay nabu",
        "alexa",
        "okay nabu",
    ]);
    // Embedded in flash and streamed live through the UART: the same events as the host's.
    let (events, pins) = speaker_matches_host("mcu-wake-word-run", &lpm, &wav);
    let (live, live_pins) = live_matches_host("mcu-wake-word-live", &lpm, &wav, false);
    assert_eq!((&live, &live_pins), (&events, &pins));
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e.class == 0 && e.kind == EventKind::Start && e.score > 0.85), "{events:?}");
    assert_eq!(pins.first(), Some(&(false, 0)));
    assert_eq!(pins[1], (true, events[0].timestamp_ms), "{pins:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_live_firmware_that_falls_behind_counts_the_samples_it_loses() {
    // The shipped DS-CNN (7.6 M MACs a run) on the portable reference kernels: one run is about
    // 290 M instructions, while QEMU's UART brings the 1,024 samples of a small ring in about
    // 2,000 turns of its main loop, many times less time on any host. So the ring overflows
    // during runs and samples are dropped. Each is counted; the firmware still ends when the
    // announced samples are all taken or lost, and its clock counts the lost ones.
    let wav = data("runtime/tests/data/speech_gap.wav");
    let lpm = data("models/keywords/model.lpm");
    let Live { json, .. } = listen("mcu-live-overrun", &["reference-kernels"], Some(1024), &lpm, &wav);
    let count = |k: &str| json[k].as_u64().unwrap_or_else(|| panic!("{k} in {json}"));
    let total = lepton_runtime::source::read_all(&mut WavSource::open(&wav).unwrap()).unwrap().len() as u64;
    assert!(count("overruns") > 0, "{json}");
    assert_eq!(count("samples") + count("overruns"), total, "{json}");
    assert_eq!(count("bad_frames"), 0);
    eprintln!("DS-CNN live under QEMU: {} of {total} samples lost to overruns", count("overruns"));
}

/// (flash, RAM) bytes an ELF takes: code, read-only data and initial values; initial values,
/// zeroed and uninitialized data (the stack has the rest of the RAM).
fn footprint(elf: &Path) -> (u64, u64) {
    let out = Command::new("llvm-size")
        .arg("-A")
        .arg(elf)
        .output()
        .expect("llvm-size (Debian package llvm; scripts/install-deps --test installs it)");
    assert!(out.status.success(), "llvm-size: {}", String::from_utf8_lossy(&out.stderr));
    let (mut flash, mut ram) = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, size, _] = f[..] else { continue };
        let Ok(size) = size.parse::<u64>() else { continue };
        match name {
            ".vector_table" | ".text" | ".rodata" => flash += size,
            ".data" => {
                flash += size;
                ram += size;
            }
            ".bss" | ".uninit" => ram += size,
            _ => {}
        }
    }
    (flash, ram)
}

#[test]
fn the_nano33_ble_sense_firmware_links_within_the_boards_flash_and_ram() {
    // Built only: the nRF52840 is not emulated here. Its profile gives the memory the firmware may
    // use (the Arduino bootloader keeps the first 64 KB of flash).
    let profile = std::fs::read_to_string(data("boards/nano33-ble-sense/board.toml")).unwrap();
    let kb = |k: &str| -> u64 {
        let line = profile.lines().find(|l| l.starts_with(&format!("{k} ="))).unwrap_or_else(|| panic!("{k}"));
        line.split('=').nth(1).unwrap().trim().parse::<u64>().unwrap() * 1024
    };
    let dir = scratch("mcu-nano33");
    let json = data("target/test-models/okay_nabu.json");
    assert!(json.exists(), "{}: run scripts/fetch-test-models (scripts/test does)", json.display());
    let okay_nabu = dir.join("okay_nabu.lpm");
    let out = run("lepton-convert", &["compile", &json.display().to_string(), "-o", &okay_nabu.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out).1);
    for lpm in [okay_nabu, data("models/keywords/model.lpm")] {
        let vars = [("LEPTON_MCU_BOARD", PathBuf::from("nano33-ble-sense")), ("LEPTON_MCU_MODEL", lpm.clone())];
        let elf = build(&dir, &["nano33-ble-sense"], &vars).unwrap_or_else(|e| panic!("building for the Nano:\n{e}"));
        let (flash, ram) = footprint(&elf);
        eprintln!(
            "Nano 33 BLE Sense, {}: flash {flash} of {} bytes, static RAM {ram} of {} bytes",
            lpm.file_name().unwrap().to_string_lossy(),
            kb("flash_kb"),
            kb("ram_kb")
        );
        assert!(
            flash <= kb("flash_kb") && ram + 32 * 1024 <= kb("ram_kb"),
            "flash {flash}, RAM {ram} (32 KB kept for the stack)"
        );
        // The DSP kernels are in (a Cortex-M4F), and the image starts where the bootloader jumps.
        assert!(!dsp_instructions(&elf).is_empty());
        let headers = Command::new("llvm-objdump").arg("-h").arg(&elf).output().unwrap();
        let headers = String::from_utf8_lossy(&headers.stdout).into_owned();
        assert!(
            headers.lines().any(|l| l.contains(".vector_table") && l.contains(" 00010000 ")),
            "the vector table is not at 0x10000:\n{headers}"
        );
    }
    // The feature and the board go together.
    let e = build(&dir, &["nano33-ble-sense"], &[("LEPTON_MCU_MODEL", data("models/keywords/model.lpm"))]).unwrap_err();
    assert!(e.contains("LEPTON_MCU_BOARD=nano33-ble-sense"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}
