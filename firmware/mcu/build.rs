//! Build script of the Cortex-M firmware: picks the board's `memory.x`, embeds the model with its
//! inputs (classifier mode) or its audio (speaker mode), and sizes the arena from the model header.
//!
//! Environment (paths relative to the workspace root):
//! - `LEPTON_MCU_BOARD`: a microcontroller profile of `boards/` (one with `memory_x`): `mps2-an386`
//!   (default, QEMU), `stm32f746`, `mps2-an505-nodsp` (QEMU, a Cortex-M33 without DSP); selects
//!   `boards/<board>/memory.x`. Its `target` must be the build's, and its `dsp` says whether the
//!   core has the DSP extension (the runtime's build script reads it too: the DSP kernels are
//!   built in only when it is true).
//! - `LEPTON_MCU_MODEL`: the `.lpm` model (default `models/digits/model.lpm`, or
//!   `models/keywords/model.lpm` with feature `speaker`).
//! - `LEPTON_MCU_INPUTS`: classifier mode, a folder of `.npy` inputs taken in file-name order (one
//!   subfolder per input, named after it, for a model with several inputs); int8 tensors are used
//!   as stored, float and other numeric tensors are quantized with the input's scale and zero point,
//!   as `lepton-convert run` does (default `models/digits/mcu-inputs`).
//! - `LEPTON_MCU_TRUSTED_KEYS`: public keys (`lepton-convert keygen`'s NAME.pub), separated by
//!   `:`. When set, the model must carry a valid signature (`MODEL.sig`, `lepton-convert sign`) by
//!   one of them, or the build fails naming the file and the reason (unsigned, untrusted key,
//!   changed after signing).
//! - `LEPTON_MCU_AUDIO`: speaker mode, a mono 16-bit PCM WAV at the model's sample rate (default
//!   `models/keywords/demo.wav`). With feature `live` nothing is embedded: the audio streams in
//!   through UART0 (mps2-an386 only; see `src/uart.rs`).
//! - `LEPTON_MCU_RING`: live builds, the samples the ring between the microphone and the audio
//!   loop holds (default 16384: a second at 16 kHz; 1024 to 1048576).
//!
//! Everything is checked here with the runtime's own code (model validation, quantization, audio
//! settings), so a bad model or input fails the build with a message instead of the device.

use lepton_core::audio::{
    FrontendConfig, InputQuant, KeywordConfig, KeywordSpotter, MicroFrontend, MicroFrontendConfig, Vad, VadConfig,
    WakeWord, WakeWordConfig,
};
use lepton_core::engine::micro::format::TensorDesc;
use lepton_core::engine::micro::Interpreter;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The board built for when `LEPTON_MCU_BOARD` is unset.
const DEFAULT_BOARD: &str = "mps2-an386";
/// Most tensors a model may have here (the firmware's interpreter is sized to the model exactly).
const MAX_TENSORS: usize = 4096;

/// Stops the build with a message (cargo prints the build script's stderr).
fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}

fn env(name: &str) -> Option<String> {
    println!("cargo::rerun-if-env-changed={name}");
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn out_dir() -> PathBuf {
    PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| fail("OUT_DIR is not set (run through cargo)")))
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| fail("run through cargo")));
    let root = manifest_dir.join("../..");
    let resolve = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            root.join(p)
        }
    };
    println!("cargo::rerun-if-changed=build.rs");
    let out = out_dir();
    board(&root, &out, env("LEPTON_MCU_BOARD"));
    if env("DEFMT_LOG").is_none() {
        println!("cargo::rustc-env=DEFMT_LOG=info");
    }

    let speaker = std::env::var_os("CARGO_FEATURE_SPEAKER").is_some();
    let default_model = if speaker { "models/keywords/model.lpm" } else { "models/digits/model.lpm" };
    let model_path = resolve(env("LEPTON_MCU_MODEL").unwrap_or_else(|| default_model.into()));
    println!("cargo::rerun-if-changed={}", model_path.display());
    let bytes = std::fs::read(&model_path).unwrap_or_else(|e| {
        fail(format!(
            "LEPTON_MCU_MODEL: {}: {e} (compile one with `lepton-convert compile MODEL.int8.onnx -o MODEL.lpm`)",
            model_path.display()
        ))
    });
    if let Some(keys) = env("LEPTON_MCU_TRUSTED_KEYS") {
        let paths: Vec<PathBuf> = keys.split(':').filter(|k| !k.is_empty()).map(|k| resolve(k.into())).collect();
        for p in &paths {
            println!("cargo::rerun-if-changed={}", p.display());
        }
        let sig = lepton_signature::sig_path(&model_path);
        println!("cargo::rerun-if-changed={}", sig.display());
        let trusted =
            lepton_signature::read_keys(&paths).unwrap_or_else(|e| fail(format!("LEPTON_MCU_TRUSTED_KEYS: {e}")));
        lepton_signature::verify(&bytes, &model_path, &trusted)
            .unwrap_or_else(|e| fail(format!("LEPTON_MCU_MODEL refused: {e}")));
    }
    let model: Interpreter<'_, MAX_TENSORS> =
        Interpreter::new(&bytes).unwrap_or_else(|e| fail(format!("{}: {e}", model_path.display())));
    std::fs::copy(&model_path, out.join("model.lpm")).unwrap_or_else(|e| fail(format!("copying the model: {e}")));

    let mut code = String::new();
    let _ = writeln!(code, "/// The model (`.lpm`), used in place from flash.");
    let _ =
        writeln!(code, "pub static MODEL: &[u8] = include_bytes!({:?});", out.join("model.lpm").display().to_string());
    let _ = writeln!(code, "/// The file the model was built from.");
    let _ = writeln!(code, "pub const MODEL_NAME: &str = {:?};", file_name(&model_path));
    let _ = writeln!(code, "/// Arena bytes the model needs (from its header).");
    let _ = writeln!(code, "pub const ARENA_BYTES: usize = {};", model.arena_bytes());
    let _ = writeln!(code, "/// Tensors of the model: the interpreter's capacity.");
    let _ = writeln!(code, "pub const TENSORS: usize = {};", model.tensors().len());

    if std::env::var_os("CARGO_FEATURE_LIVE").is_some() {
        let board = env("LEPTON_MCU_BOARD").unwrap_or_else(|| DEFAULT_BOARD.into());
        if board != "mps2-an386" {
            fail(format!(
                "LEPTON_MCU_BOARD={board}: feature `live` streams audio through the CMSDK UARTs of mps2-an386 \
                 (QEMU); this board has no live audio source in the firmware yet"
            ));
        }
    }
    let live = std::env::var_os("CARGO_FEATURE_LIVE").is_some()
        || std::env::var_os("CARGO_FEATURE_NANO33_BLE_SENSE").is_some();
    if live && env("LEPTON_MCU_AUDIO").is_some() {
        fail("LEPTON_MCU_AUDIO: a live build takes its audio from the board (UART0, microphone), not from a file (drop one or the other)");
    }
    if speaker {
        let audio_path = resolve(env("LEPTON_MCU_AUDIO").unwrap_or_else(|| "models/keywords/demo.wav".into()));
        speaker_mode(&model, &model_path, &audio_path, &out, &mut code);
    } else {
        let inputs = resolve(env("LEPTON_MCU_INPUTS").unwrap_or_else(|| "models/digits/mcu-inputs".into()));
        classifier_mode(&model, &inputs, &out, &mut code);
    }
    std::fs::write(out.join("embedded.rs"), code).unwrap_or_else(|e| fail(format!("writing embedded.rs: {e}")));
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// The microcontroller profiles of `boards/`: the folders whose `board.toml` names a `memory_x`,
/// sorted, with their profile.
fn mcu_boards(root: &Path) -> Vec<(String, toml::Table)> {
    let dir = root.join("boards");
    println!("cargo::rerun-if-changed={}", dir.display());
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| fail(format!("{}: {e}", dir.display())));
    let mut boards: Vec<(String, toml::Table)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let profile = e.path().join("board.toml");
            let text = std::fs::read_to_string(&profile).ok()?;
            println!("cargo::rerun-if-changed={}", profile.display());
            let table: toml::Table =
                toml::from_str(&text).unwrap_or_else(|e| fail(format!("{}: {}", profile.display(), e.message())));
            table.contains_key("memory_x").then(|| (e.file_name().to_string_lossy().into_owned(), table))
        })
        .collect();
    boards.sort_by(|a, b| a.0.cmp(&b.0));
    boards
}

/// `boards/<board>/memory.x` into OUT_DIR (cortex-m-rt's `link.x` includes it), the linker
/// scripts for the target, and `cfg(lepton_board = "...")` for the code. The board's profile
/// must be for the build's target and say whether its core has DSP (`dsp = true|false`).
fn board(root: &Path, out: &Path, choice: Option<String>) {
    let boards = mcu_boards(root);
    let names: Vec<&str> = boards.iter().map(|(n, _)| n.as_str()).collect();
    let board = choice.unwrap_or_else(|| DEFAULT_BOARD.into());
    let Some((_, profile)) = boards.iter().find(|(n, _)| *n == board) else {
        fail(format!("LEPTON_MCU_BOARD={board}: unknown board; one of {}", names.join(", ")))
    };
    let at = format!("boards/{board}/board.toml");
    let memory_x = profile.get("memory_x").and_then(|v| v.as_str()).unwrap_or("memory.x");
    let target = profile.get("target").and_then(|v| v.as_str()).unwrap_or_default();
    if profile.get("dsp").and_then(|v| v.as_bool()).is_none() {
        fail(format!("{at}: `dsp = true` or `dsp = false` is required (does the core have the DSP extension?)"));
    }
    let building = std::env::var("TARGET").unwrap_or_default();
    if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "none") && building != target {
        fail(format!("{at}: the board's target is {target}; this build is for {building} (use --target {target})"));
    }
    let nano = std::env::var_os("CARGO_FEATURE_NANO33_BLE_SENSE").is_some();
    if nano != (board == "nano33-ble-sense") {
        fail(format!(
            "LEPTON_MCU_BOARD={board}: the Nano 33 BLE Sense build is LEPTON_MCU_BOARD=nano33-ble-sense with \
             `--no-default-features --features nano33-ble-sense`, both or neither"
        ));
    }
    let bare = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "none");
    if bare && !nano && std::env::var_os("CARGO_FEATURE_SEMIHOSTING").is_none() {
        fail(format!(
            "LEPTON_MCU_BOARD={board}: this board's firmware writes its console through semihosting: keep the \
             default features (only nano33-ble-sense builds with --no-default-features)"
        ));
    }
    if nano && std::env::var_os("CARGO_FEATURE_SEMIHOSTING").is_some() {
        fail("feature nano33-ble-sense: build with --no-default-features (a board without a debugger cannot answer semihosting)");
    }
    let memory = root.join("boards").join(&board).join(memory_x);
    println!("cargo::rerun-if-changed={}", memory.display());
    std::fs::copy(&memory, out.join("memory.x")).unwrap_or_else(|e| fail(format!("{}: {e}", memory.display())));
    println!("cargo::rustc-link-search={}", out.display());
    let values: Vec<String> = names.iter().map(|b| format!("{b:?}")).collect();
    println!("cargo::rustc-check-cfg=cfg(lepton_board, values({}))", values.join(", "));
    println!("cargo::rustc-cfg=lepton_board={board:?}");
    println!("cargo::rustc-check-cfg=cfg(lepton_wake_word)");
    if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "none") {
        println!("cargo::rustc-link-arg-bins=-Tlink.x");
        println!("cargo::rustc-link-arg-bins=-Tdefmt.x");
    }
}

/// Shape in ONNX order of a tensor the `.lpm` stores as N, H, W, C (as `lepton-convert run` shows it).
fn onnx_shape(t: &TensorDesc<'_>) -> Vec<usize> {
    let (dims, rank) = t.onnx_dims();
    dims[..rank].to_vec()
}

fn npy_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| fail(format!("LEPTON_MCU_INPUTS: {}: {e}", dir.display())));
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")))
        .collect();
    files.sort();
    files
}

/// Reads a `.npy` tensor for `input`: int8 as stored; any other numeric type (f32, f64, integers,
/// bool) converted to f32 and quantized with the input's scale and zero point.
fn read_input(path: &Path, input: &TensorDesc<'_>) -> Vec<u8> {
    let bad = |why: String| -> ! { fail(format!("{}: {why}", path.display())) };
    let bytes = std::fs::read(path).unwrap_or_else(|e| bad(e.to_string()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap_or_else(|e| bad(format!("not a .npy file ({e})")));
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let expected = onnx_shape(input);
    if shape != expected {
        bad(format!("input `{}` has shape {expected:?} but the file holds {shape:?}", input.name));
    }
    let fortran = npy.order() == npyz::Order::Fortran;
    let npyz::DType::Plain(ty) = npy.dtype() else { bad("structured dtypes are not supported".into()) };
    let read_err = |e: std::io::Error| -> ! { bad(format!("reading data: {e}")) };
    macro_rules! floats {
        ($t:ty) => {
            npy.into_vec::<$t>().unwrap_or_else(|e| read_err(e)).into_iter().map(|v| v as f32).collect::<Vec<f32>>()
        };
    }
    let quantized: Vec<i8> = match (ty.type_char(), ty.num_bytes()) {
        (npyz::TypeChar::Int, Some(1)) => npy.into_vec::<i8>().unwrap_or_else(|e| read_err(e)),
        (c, n) => {
            let values = match (c, n) {
                (npyz::TypeChar::Float, Some(4)) => floats!(f32),
                (npyz::TypeChar::Float, Some(8)) => floats!(f64),
                (npyz::TypeChar::Int, Some(2)) => floats!(i16),
                (npyz::TypeChar::Int, Some(4)) => floats!(i32),
                (npyz::TypeChar::Int, Some(8)) => floats!(i64),
                (npyz::TypeChar::Uint, Some(1)) => floats!(u8),
                (npyz::TypeChar::Uint, Some(2)) => floats!(u16),
                (npyz::TypeChar::Uint, Some(4)) => floats!(u32),
                (npyz::TypeChar::Uint, Some(8)) => floats!(u64),
                (npyz::TypeChar::Bool, _) => {
                    npy.into_vec::<bool>().unwrap_or_else(|e| read_err(e)).into_iter().map(f32::from).collect()
                }
                (c, n) => bad(format!("element type {c:?} of {n:?} bytes is not supported")),
            };
            values.iter().map(|&v| lepton_core::tensor::quantize_i8(v, input.scale, input.zero_point)).collect()
        }
    };
    let quantized = if fortran { fortran_to_c(&quantized, &shape) } else { quantized };
    quantized.into_iter().map(|v| v as u8).collect()
}

/// Reorders column-major data into row-major order.
fn fortran_to_c(data: &[i8], shape: &[usize]) -> Vec<i8> {
    let mut out = Vec::with_capacity(data.len());
    let mut index = vec![0usize; shape.len()];
    for _ in 0..data.len() {
        // Column-major offset of the row-major position `index`.
        let (mut offset, mut stride) = (0, 1);
        for (i, &d) in index.iter().zip(shape) {
            offset += i * stride;
            stride *= d;
        }
        out.push(data[offset]);
        for k in (0..shape.len()).rev() {
            index[k] += 1;
            if index[k] < shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
    out
}

/// Classifier mode: every input set, quantized, in one blob.
fn classifier_mode(model: &Interpreter<'_, MAX_TENSORS>, dir: &Path, out: &Path, code: &mut String) {
    println!("cargo::rerun-if-changed={}", dir.display());
    let inputs: Vec<&TensorDesc<'_>> = (0..model.header().inputs.len()).filter_map(|i| model.input(i).ok()).collect();
    // Files per input, in file-name order: the folder itself, or one subfolder per input.
    let per_input: Vec<Vec<PathBuf>> = if inputs.len() == 1 {
        vec![npy_files(dir)]
    } else {
        inputs.iter().map(|t| npy_files(&dir.join(t.name))).collect()
    };
    let runs = per_input[0].len();
    if runs == 0 {
        fail(format!("LEPTON_MCU_INPUTS: {}: no .npy file", dir.display()));
    }
    if let Some((t, f)) = inputs.iter().zip(&per_input).find(|(_, f)| f.len() != runs) {
        fail(format!(
            "LEPTON_MCU_INPUTS: {}: {} files for input `{}`, {runs} for the first",
            dir.display(),
            f.len(),
            t.name
        ));
    }
    let mut blob = vec![];
    let mut names = vec![];
    for run in 0..runs {
        for (t, files) in inputs.iter().zip(&per_input) {
            blob.extend(read_input(&files[run], t));
            names.push(file_name(&files[run]));
        }
    }
    std::fs::write(out.join("inputs.bin"), &blob).unwrap_or_else(|e| fail(format!("writing inputs.bin: {e}")));
    let _ = writeln!(code, "/// Input sets, int8 as the model stores them: run after run, inputs in model order.");
    let _ = writeln!(
        code,
        "pub static INPUT_DATA: &[u8] = include_bytes!({:?});",
        out.join("inputs.bin").display().to_string()
    );
    let _ = writeln!(code, "/// Input sets in `INPUT_DATA`.");
    let _ = writeln!(code, "pub const INPUT_RUNS: usize = {runs};");
    let _ = writeln!(code, "/// The files of each input set (run after run, inputs in model order).");
    let _ = writeln!(code, "pub const INPUT_FILES: &[&str] = &{names:?};");
}

/// Reads a number (integer or float) from a TOML table.
fn number(t: &toml::Table, key: &str) -> Option<f64> {
    match t.get(key)? {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => fail(format!("manifest: `{key}` must be a number")),
    }
}

fn integer(t: &toml::Table, key: &str) -> Option<usize> {
    match t.get(key)? {
        toml::Value::Integer(i) if *i >= 0 => Some(*i as usize),
        _ => fail(format!("manifest: `{key}` must be a non-negative integer")),
    }
}

fn table<'t>(m: &'t toml::Table, key: &str) -> Option<&'t toml::Table> {
    match m.get(key)? {
        toml::Value::Table(t) => Some(t),
        _ => fail(format!("manifest: `{key}` must be a table")),
    }
}

/// Speaker mode: the audio as raw little-endian i16 and the frontend, window and decision settings
/// from the model's manifest (the defaults of `lepton_core::manifest`).
fn speaker_mode(
    model: &Interpreter<'_, MAX_TENSORS>,
    model_path: &Path,
    audio_path: &Path,
    out: &Path,
    code: &mut String,
) {
    let at = model_path.display();
    let text = model.header().manifest;
    if text.is_empty() {
        fail(format!("{at}: speaker mode needs a model with a manifest (task keyword or vad, [audio] table); pack one before compiling"));
    }
    let m: toml::Table = toml::from_str(text).unwrap_or_else(|e| fail(format!("{at}: manifest: {e}")));
    let task = m.get("task").and_then(|t| t.as_str()).unwrap_or("");
    let labels: Vec<String> = m
        .get("labels")
        .and_then(|l| l.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if let Some(w) = table(&m, "wake_word") {
        wake_word_mode(model, model_path, w, &labels, audio_path, out, code);
        return;
    }
    let a = table(&m, "audio").unwrap_or_else(|| fail(format!("{at}: manifest: an [audio] table is required")));
    let need = |k: &str| integer(a, k).unwrap_or_else(|| fail(format!("{at}: manifest: audio.{k} is required")));
    let sample_rate = need("sample_rate") as u32;
    let cfg = FrontendConfig {
        sample_rate,
        window: need("window"),
        hop: need("hop"),
        fft: need("fft"),
        mels: need("mels"),
        mfcc: integer(a, "mfcc").unwrap_or(0),
        fmin: number(a, "fmin").unwrap_or(20.0) as f32,
        fmax: number(a, "fmax").map_or(sample_rate as f32 / 2.0, |f| f as f32),
    };
    cfg.validate(2048, 128).unwrap_or_else(|e| fail(format!("{at}: manifest: {e}")));
    let frames = need("frames");
    let stride = integer(a, "stride").unwrap_or(1);
    if frames == 0 || stride == 0 {
        fail(format!("{at}: manifest: audio.frames and audio.stride must be > 0"));
    }
    let input = model.input(0).unwrap_or_else(|e| fail(format!("{at}: {e}")));
    if input.len() != frames * cfg.features() {
        fail(format!(
            "{at}: {frames} frames × {} features = {} values, but input `{}` holds {}",
            cfg.features(),
            frames * cfg.features(),
            input.name,
            input.len()
        ));
    }
    let classes = model.output_desc(0).unwrap_or_else(|e| fail(format!("{at}: {e}"))).len();
    let scores = match table(&m, "output").and_then(|o| o.get("scores")).and_then(|s| s.as_str()).unwrap_or("logits") {
        "logits" => "Logits",
        "probabilities" => "Probabilities",
        "sigmoid" => "Sigmoid",
        other => fail(format!("{at}: manifest: output.scores `{other}` is not logits, probabilities or sigmoid")),
    };
    let (decision, smoothing) = match task {
        "keyword" => {
            let k = table(&m, "keyword").cloned().unwrap_or_default();
            let smoothing = integer(&k, "smoothing").unwrap_or(3);
            if labels.len() > 64 {
                fail(format!("{at}: manifest: a keyword model has at most 64 labels"));
            }
            let cfg = KeywordConfig {
                threshold: number(&k, "threshold").unwrap_or(0.7) as f32,
                smoothing,
                refractory_ms: integer(&k, "refractory_ms").unwrap_or(1000) as u64,
                background: labels
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.starts_with('_'))
                    .fold(0, |m, (i, _)| m | 1 << i),
            };
            KeywordSpotter::<64, 32>::new(cfg, classes)
                .unwrap_or_else(|e| fail(format!("{at}: keyword settings: {e}")));
            let text = format!(
                "Decision::Keyword(lepton_core::audio::KeywordConfig {{ threshold: {:?}f32, smoothing: {}, refractory_ms: {}, background: {:#x} }})",
                cfg.threshold, cfg.smoothing, cfg.refractory_ms, cfg.background
            );
            (text, smoothing)
        }
        "vad" => {
            let v = table(&m, "vad").cloned().unwrap_or_default();
            let class = labels.iter().position(|l| l == "speech").unwrap_or(labels.len().saturating_sub(1));
            let cfg = VadConfig {
                on_threshold: number(&v, "on_threshold").unwrap_or(0.6) as f32,
                off_threshold: number(&v, "off_threshold").unwrap_or(0.4) as f32,
                min_speech: integer(&v, "min_speech").unwrap_or(2) as u32,
                hangover: integer(&v, "hangover").unwrap_or(5) as u32,
                class: class as u16,
            };
            Vad::new(cfg).unwrap_or_else(|e| fail(format!("{at}: vad settings: {e}")));
            if class >= classes.max(1) {
                fail(format!("{at}: speech class {class} but the output has {classes} values"));
            }
            let text = format!(
                "Decision::Vad(lepton_core::audio::VadConfig {{ on_threshold: {:?}f32, off_threshold: {:?}f32, min_speech: {}, hangover: {}, class: {} }})",
                cfg.on_threshold, cfg.off_threshold, cfg.min_speech, cfg.hangover, cfg.class
            );
            (text, 1)
        }
        other => fail(format!("{at}: speaker mode runs keyword or vad models; this one's task is `{other}`")),
    };

    embed_audio(audio_path, sample_rate, out, code);
    let _ = writeln!(code, "/// The model's audio frontend.");
    let _ = writeln!(
        code,
        "pub const FRONTEND: FrontendConfig = FrontendConfig {{ sample_rate: {}, window: {}, hop: {}, fft: {}, mels: {}, mfcc: {}, fmin: {:?}f32, fmax: {:?}f32 }};",
        cfg.sample_rate, cfg.window, cfg.hop, cfg.fft, cfg.mels, cfg.mfcc, cfg.fmin, cfg.fmax
    );
    let _ = writeln!(code, "/// FFT capacity of the frontend (= `FRONTEND.fft`).");
    let _ = writeln!(code, "pub const MAX_FFT: usize = {};", cfg.fft);
    let _ = writeln!(code, "/// Mel band capacity of the frontend (= `FRONTEND.mels`).");
    let _ = writeln!(code, "pub const MAX_MELS: usize = {};", cfg.mels);
    let _ = writeln!(code, "/// Feature frames per model input.");
    let _ = writeln!(code, "pub const FRAMES: usize = {frames};");
    let _ = writeln!(code, "/// Values per feature frame.");
    let _ = writeln!(code, "pub const FEATURES: usize = {};", cfg.features());
    let _ = writeln!(code, "/// Hops between model runs.");
    let _ = writeln!(code, "pub const STRIDE: usize = {stride};");
    let _ = writeln!(code, "/// Values of the model's first output (classes).");
    let _ = writeln!(code, "pub const CLASSES: usize = {classes};");
    let _ = writeln!(code, "/// Posteriors the keyword decision averages (1 for VAD).");
    let _ = writeln!(code, "pub const SMOOTHING: usize = {smoothing};");
    let _ = writeln!(code, "/// What the output holds.");
    let _ = writeln!(code, "pub const SCORES: Scores = Scores::{scores};");
    let _ = writeln!(code, "/// Keyword spotting or voice activity, with the manifest's settings.");
    let _ = writeln!(code, "pub const DECISION: Decision = {decision};");
    let _ = writeln!(code, "/// Class names.");
    let _ = writeln!(code, "pub const LABELS: &[&str] = &{labels:?};");
}

/// The recording as raw little-endian i16 in OUT_DIR, and `AUDIO`, `AUDIO_NAME`, `SAMPLE_RATE`
/// for the code; with feature `live`, only the name of the stream and the rate.
fn embed_audio(audio_path: &Path, sample_rate: u32, out: &Path, code: &mut String) {
    let _ = writeln!(code, "/// Samples per second the model takes.");
    let _ = writeln!(code, "pub const SAMPLE_RATE: u32 = {sample_rate};");
    let ring = env("LEPTON_MCU_RING").map_or(16384, |r| {
        r.parse::<usize>().ok().filter(|n| (1024..=1 << 20).contains(n)).unwrap_or_else(|| {
            fail(format!("LEPTON_MCU_RING={r}: give the sample ring's size, 1024 to 1048576 samples"))
        })
    });
    let _ = writeln!(code, "/// Samples the live ring holds (`LEPTON_MCU_RING`).");
    let _ = writeln!(code, "#[allow(dead_code)]");
    let _ = writeln!(code, "pub const RING: usize = {ring};");
    let live = if std::env::var_os("CARGO_FEATURE_NANO33_BLE_SENSE").is_some() {
        Some("pdm")
    } else {
        std::env::var_os("CARGO_FEATURE_LIVE").map(|_| "uart0")
    };
    if let Some(name) = live {
        let _ = writeln!(code, "/// Where the audio comes from: a live source.");
        let _ = writeln!(code, "pub const AUDIO_NAME: &str = {name:?};");
        return;
    }
    println!("cargo::rerun-if-changed={}", audio_path.display());
    let mut wav = hound::WavReader::open(audio_path)
        .unwrap_or_else(|e| fail(format!("LEPTON_MCU_AUDIO: {}: {e}", audio_path.display())));
    let spec = wav.spec();
    if spec.channels != 1 || spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int {
        fail(format!(
            "LEPTON_MCU_AUDIO: {}: {} channel(s) of {}-bit {:?}; the firmware takes mono 16-bit PCM (`sox in.wav -c 1 -b 16 out.wav`)",
            audio_path.display(),
            spec.channels,
            spec.bits_per_sample,
            spec.sample_format
        ));
    }
    if spec.sample_rate != sample_rate {
        fail(format!(
            "LEPTON_MCU_AUDIO: {}: {} Hz but the model expects {sample_rate} Hz; resample it first (`sox in.wav -r {sample_rate} out.wav`)",
            audio_path.display(),
            spec.sample_rate
        ));
    }
    let mut raw = vec![];
    for s in wav.samples::<i16>() {
        let s = s.unwrap_or_else(|e| fail(format!("LEPTON_MCU_AUDIO: {}: {e}", audio_path.display())));
        raw.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(out.join("audio.raw"), &raw).unwrap_or_else(|e| fail(format!("writing audio.raw: {e}")));

    let _ = writeln!(code, "/// The audio: 16-bit PCM, little-endian, mono, at the model's sample rate.");
    let _ =
        writeln!(code, "pub static AUDIO: &[u8] = include_bytes!({:?});", out.join("audio.raw").display().to_string());
    let _ = writeln!(code, "/// The file the audio came from.");
    let _ = writeln!(code, "pub const AUDIO_NAME: &str = {:?};", file_name(audio_path));
}

/// Speaker mode for a microWakeWord model (a `[wake_word]` manifest, `lepton-convert compile
/// MODEL.json`): TFLite Micro's frontend, the wake-word decision, `cfg(lepton_wake_word)`.
fn wake_word_mode(
    model: &Interpreter<'_, MAX_TENSORS>,
    model_path: &Path,
    w: &toml::Table,
    labels: &[String],
    audio_path: &Path,
    out: &Path,
    code: &mut String,
) {
    let at = model_path.display();
    let step_ms = integer(w, "feature_step_ms").unwrap_or(10) as u32;
    let frontend = MicroFrontendConfig { step_ms, ..MicroFrontendConfig::MICRO_WAKE_WORD };
    let fe = MicroFrontend::new(frontend).unwrap_or_else(|e| fail(format!("{at}: wake_word: {e}")));
    let input = model.input(0).unwrap_or_else(|e| fail(format!("{at}: {e}")));
    let channels = fe.channels();
    if input.is_empty() || !input.len().is_multiple_of(channels) {
        fail(format!("{at}: input `{}` holds {} values, not rows of {channels} features", input.name, input.len()));
    }
    let output = model.output_desc(0).unwrap_or_else(|e| fail(format!("{at}: {e}")));
    if output.len() != 1 {
        fail(format!("{at}: a wake-word model gives one probability; this one gives {}", output.len()));
    }
    let cfg = WakeWordConfig {
        cutoff: number(w, "probability_cutoff")
            .unwrap_or_else(|| fail(format!("{at}: wake_word.probability_cutoff is required"))),
        window: integer(w, "sliding_window_size")
            .unwrap_or_else(|| fail(format!("{at}: wake_word.sliding_window_size is required"))),
        stride: input.len() / channels,
        channels,
        refractory_ms: integer(w, "refractory_ms").unwrap_or(1000) as u64,
    };
    let quant = InputQuant { scale: input.scale, zero: input.zero_point };
    WakeWord::<64>::new(cfg, quant).unwrap_or_else(|e| fail(format!("{at}: wake_word: {e}")));
    if labels.len() != 1 {
        fail(format!("{at}: a wake-word model has one label, its wake word"));
    }
    embed_audio(audio_path, frontend.sample_rate, out, code);
    println!("cargo::rustc-cfg=lepton_wake_word");
    let _ = writeln!(code, "/// TFLite Micro's frontend, as the model was trained with.");
    let _ = writeln!(
        code,
        "pub const MICRO_FRONTEND: lepton_core::audio::MicroFrontendConfig = lepton_core::audio::MicroFrontendConfig {{ step_ms: {step_ms}, ..lepton_core::audio::MicroFrontendConfig::MICRO_WAKE_WORD }};"
    );
    let _ = writeln!(code, "/// Samples per frontend step.");
    let _ = writeln!(code, "pub const STEP: usize = {};", fe.step());
    let _ = writeln!(code, "/// Probabilities the decision averages.");
    let _ = writeln!(code, "pub const WAKE_WINDOW: usize = {};", cfg.window);
    let _ = writeln!(code, "/// The decision (from the model's manifest).");
    let _ = writeln!(
        code,
        "pub const WAKE: lepton_core::audio::WakeWordConfig = lepton_core::audio::WakeWordConfig {{ cutoff: {:?}f64, window: {}, stride: {}, channels: {}, refractory_ms: {} }};",
        cfg.cutoff, cfg.window, cfg.stride, cfg.channels, cfg.refractory_ms
    );
    let _ = writeln!(code, "/// The model input's quantization.");
    let _ = writeln!(
        code,
        "pub const INPUT_QUANT: lepton_core::audio::InputQuant = lepton_core::audio::InputQuant {{ scale: {:?}f32, zero: {} }};",
        quant.scale, quant.zero
    );
    let _ = writeln!(code, "/// Class names (the wake word).");
    let _ = writeln!(code, "pub const LABELS: &[&str] = &{labels:?};");
}
