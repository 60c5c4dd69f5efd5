//! Raspberry Pi class boards under emulation: `lepton` and `lepton-convert` cross-built for aarch64
//! (Pi 5/4) and armv7 (Pi Zero 2 W / Pi 3), run under qemu-user on this machine. The build is the
//! `cross` profile: release settings at -O1 but for the kernels (Cargo.toml says why).
//!
//! One build per target (both binaries, every selected target in one cargo call) serves every test
//! here. Both targets by default; `LEPTON_CROSS=aarch64` (or `armv7`) keeps one, and the test
//! command names the other as skipped. The test command starts the same build in the background
//! once the test binaries are built and runs these tests last, so the build fills the cores the
//! other tests leave idle; the first test here then finds it done. Every test's name ends in
//! `like_the_native_build`, which is how the test command leaves them out of its first pass. The
//! emulated daemon publishes to a real mosquitto, and its detections, float and int8, are
//! compared with the native build's on the same frames and the same recording.

use lepton_e2e::{bin, python, read_npy, root, scratch, text, Mosquitto, Subscriber};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

/// An ARM Linux target and how to run its binaries here.
struct Arm {
    triple: &'static str,
    /// qemu-user binary (Debian package qemu-user-static).
    qemu: &'static str,
    /// The cross C library's root (libc6-dev-*-cross), for qemu's `-L`.
    sysroot: &'static str,
    /// Multiarch folder of the board's other shared libraries (libasound).
    multiarch: &'static str,
}

const AARCH64: Arm = Arm {
    triple: "aarch64-unknown-linux-gnu",
    qemu: "qemu-aarch64-static",
    sysroot: "/usr/aarch64-linux-gnu",
    multiarch: "/usr/lib/aarch64-linux-gnu",
};
const ARMV7: Arm = Arm {
    triple: "armv7-unknown-linux-gnueabihf",
    qemu: "qemu-arm-static",
    sysroot: "/usr/arm-linux-gnueabihf",
    multiarch: "/usr/lib/arm-linux-gnueabihf",
};

/// Whether `arm` is built and tested in this run (`LEPTON_CROSS`: unset or `all` → both; or a
/// comma list of `aarch64`, `armv7`); a target left out is recorded as skipped.
fn selected(arm: &Arm) -> bool {
    let on = wanted(arm);
    if !on {
        let short = arm.triple.split('-').next().unwrap_or(arm.triple);
        lepton_e2e::skipped(
            &format!("{short} board build (lepton and lepton-convert under qemu)"),
            "left out by LEPTON_CROSS (unset or `all`: both targets); its kernels are tested under qemu by kernels_arm either way",
        );
    }
    on
}

/// Whether `LEPTON_CROSS` selects `arm` (see [`selected`]).
fn wanted(arm: &Arm) -> bool {
    let short = arm.triple.split('-').next().unwrap_or(arm.triple);
    let list = std::env::var("LEPTON_CROSS").unwrap_or_else(|_| "all".into());
    list == "all" || list.split(',').any(|w| w.trim() == short)
}

/// The `cross` profile build of `name` for `arm`. The first call builds `lepton` and `lepton-convert` for
/// every selected target in one cargo call (host build scripts and proc macros compiled once, both
/// targets' crates scheduled together); later calls reuse it.
fn cross_bin(arm: &Arm, name: &str) -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    // target/<profile>/deps/<test binary> → target/
    let exe = std::env::current_exe().expect("test binary path");
    let target_dir = exe.ancestors().nth(3).expect("test binary under target/<profile>/deps").to_path_buf();
    if !*built {
        let mut cmd = lepton_e2e::cargo();
        cmd.args(["build", "--quiet", "--profile", "cross", "-p", "lepton-firmware", "-p", "lepton-convert"]);
        let targets: Vec<&str> =
            [&AARCH64, &ARMV7].into_iter().filter(|a| wanted(a) || a.triple == arm.triple).map(|a| a.triple).collect();
        for t in &targets {
            cmd.args(["--target", t]);
        }
        let out = cmd.current_dir(root()).output().expect("running cargo build");
        assert!(
            out.status.success(),
            "cross build for {} failed (scripts/install-deps --test installs the linkers and libraries):\n{}",
            targets.join(" and "),
            String::from_utf8_lossy(&out.stderr)
        );
        *built = true;
    }
    target_dir.join(arm.triple).join("cross").join(name)
}

/// `name` of the cross build, under qemu-user.
fn emulated(arm: &Arm, name: &str) -> Command {
    let exe = cross_bin(arm, name);
    let mut c = Command::new(arm.qemu);
    // The cross C library first: the multiarch libc6 that libasound2 brings may be a newer build,
    // and pairing its libc.so with the cross ld.so hangs the first pthread_create.
    let libs = format!("LD_LIBRARY_PATH={}/lib:{}", arm.sysroot, arm.multiarch);
    c.args(["-L", arm.sysroot, "-E", &libs]).arg(exe).current_dir(root());
    c
}

fn native(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.current_dir(root());
    c
}

fn output(mut c: Command) -> Output {
    c.output().expect("starting the binary")
}

/// A config running `model` on the detector's demo frames and `kws` on the keyword demo recording,
/// publishing JSON to the broker on `port` as device `device`.
fn config(dir: &Path, device: &str, port: u16, detector: &str, keywords: &str) -> PathBuf {
    let m = root().join("models");
    let text = format!(
        r#"
[device]
id = "{device}"
[mqtt]
host = "127.0.0.1"
port = {port}
[[pipeline]]
name = "meter"
model = "{det}"
threshold = 0.4
[pipeline.source]
kind = "images"
path = "{frames}"
[[pipeline]]
name = "keywords"
model = "{kws}"
threshold = 0.7
engine = "{kws_engine}"
[pipeline.source]
kind = "wav"
path = "{wav}"
"#,
        det = m.join("detector").join(detector).display(),
        kws = m.join("keywords").join(keywords).display(),
        // The int8 file on the micro engine on every target: the same integer arithmetic.
        kws_engine = if keywords.contains("int8") { "micro" } else { "auto" },
        frames = m.join("detector/demo/images").display(),
        wav = m.join("keywords/demo.wav").display(),
    );
    let p = dir.join(format!("{device}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// One printed detection: label, score, box.
#[derive(Debug, Clone, PartialEq)]
struct Found {
    label: String,
    score: f32,
    bbox: Vec<f32>,
}

/// The printed result lines of pipeline `name` ("meter #0  frame 0  frame000.jpg  0 0.999 [78,88,109,144] ... (1.2 ms)"
/// and "keywords #0  ...  yes 0.93 ..."): per line, the frame or time field and what was found.
fn results(stdout: &str, name: &str) -> Vec<(String, Vec<Found>)> {
    stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{name} #")))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let found = f[5..]
                .chunks(3)
                .filter(|c| c.len() == 3 && c[2].starts_with('['))
                .map(|c| Found {
                    label: c[0].to_string(),
                    score: c[1].parse().unwrap_or(f32::NAN),
                    bbox: c[2].trim_matches(['[', ']']).split(',').map(|v| v.parse().unwrap_or(f32::NAN)).collect(),
                })
                .collect();
            (f[4].to_string(), found)
        })
        .collect()
}

/// Keyword events printed ("keywords event start yes 0.912 at ...").
fn keyword_events(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("keywords event start "))
        .map(|l| l.split_whitespace().nth(3).unwrap_or("").to_string())
        .collect()
}

fn same_detections(native: &[(String, Vec<Found>)], arm: &[(String, Vec<Found>)], what: &str) {
    assert_eq!(native.len(), arm.len(), "{what}: frames with detections differ\nnative {native:?}\narm {arm:?}");
    for ((nf, nd), (af, ad)) in native.iter().zip(arm) {
        assert_eq!(nf, af, "{what}");
        let labels = |d: &[Found]| d.iter().map(|x| x.label.clone()).collect::<Vec<_>>();
        assert_eq!(labels(nd), labels(ad), "{what}: frame {nf}");
        for (n, a) in nd.iter().zip(ad) {
            // Float kernels differ by architecture in the last bits; the printout rounds to 3 digits and whole pixels.
            assert!((n.score - a.score).abs() <= 0.002, "{what}: frame {nf}: {n:?} vs {a:?}");
            assert!(
                n.bbox.iter().zip(&a.bbox).all(|(x, y)| (x - y).abs() <= 1.0),
                "{what}: frame {nf}: {n:?} vs {a:?}"
            );
        }
    }
}

/// The emulated daemon against the native one, on the demo media with the `kind` (float or int8)
/// models (one test each, so the two emulations run side by side); the emulated one publishes to
/// a real mosquitto.
fn daemon_matches_native(arm: &Arm, kind: &str) {
    if !selected(arm) {
        return;
    }
    let dir = scratch(&format!("cross-daemon-{}-{kind}", arm.triple));
    let broker = Mosquitto::start(&format!("cross-{}-{kind}", arm.triple));
    let (det, kws) =
        if kind == "float" { ("model.onnx", "model.onnx") } else { ("model.int8.onnx", "model.int8.onnx") };
    let device = format!("board-{kind}");
    let sub = Subscriber::start(broker.port, &format!("lepton/{device}/#"), &format!("cross-{}-{kind}", arm.triple));
    let native_cfg = config(&dir, &format!("host-{kind}"), broker.port, det, kws);
    let board_cfg = config(&dir, &device, broker.port, det, kws);
    let mut n = native("lepton");
    n.args(["run", "--config"]).arg(&native_cfg);
    let n = output(n);
    let (n_out, n_err) = text(&n);
    assert!(n.status.success(), "native {kind}: {n_out}\n{n_err}");
    let mut a = emulated(arm, "lepton");
    a.args(["run", "--board", if arm.triple.starts_with("aarch64") { "rpi4" } else { "rpizero2w" }, "--config"])
        .arg(&board_cfg);
    let a = output(a);
    let (a_out, a_err) = text(&a);
    assert!(a.status.success(), "{} {kind}: {a_out}\n{a_err}", arm.triple);

    let what = format!("{} {kind}", arm.triple);
    let (nm, am) = (results(&n_out, "meter"), results(&a_out, "meter"));
    assert!(!nm.is_empty(), "{what}: the native build found nothing: {n_out}");
    same_detections(&nm, &am, &format!("{what} detector"));
    let (nk, ak) = (keyword_events(&n_out), keyword_events(&a_out));
    assert!(!nk.is_empty(), "{what}: no keyword heard natively: {n_out}");
    assert_eq!(nk, ak, "{what}: keyword events");
    assert!(a_out.contains("0 undelivered at exit"), "{what}: {a_out}");

    // What the emulated daemon published reached the subscriber: one detections message per
    // frame with detections, one event per keyword.
    let topic = |t: &str| format!("lepton/{device}/{t}");
    let msgs = sub.wait_for(Duration::from_secs(20), |m| {
        m.iter().filter(|(t, _)| *t == topic("meter/detections")).count() >= am.len()
    });
    let published: Vec<Value> = msgs
        .iter()
        .filter(|(t, _)| *t == topic("meter/detections"))
        .map(|(_, p)| serde_json::from_slice(p).expect("JSON detections"))
        .collect();
    assert_eq!(published.len(), am.len(), "{what}: detections messages on the broker");
    let labels: Vec<String> = published[0]["detections"]
        .as_array()
        .expect("detections array")
        .iter()
        .map(|d| d["label"].as_str().unwrap_or("").to_string())
        .collect();
    let mut printed: Vec<String> = am[0].1.iter().map(|f| f.label.clone()).collect();
    let mut sorted = labels.clone();
    sorted.sort();
    printed.sort();
    assert_eq!(sorted, printed, "{what}: first message {:?}", published[0]);
    let heard = msgs.iter().filter(|(t, _)| *t == topic("keywords/events")).count();
    assert!(heard >= ak.len(), "{what}: {heard} keyword events on the broker, {} printed", ak.len());
}

/// `lepton-convert eval` of the emulated build gives the native figures: exactly for the digit
/// classifier (float, tract; a clear margin per picture) and the keyword spotter (int8 on the micro
/// engine, whose integer arithmetic is the same on every target: the whole confusion matrix); within
/// 0.001 for the detector's mAP (int8 convolutions with a float decode tail on tract, whose float
/// kernels differ by architecture in the last bits, which can reorder near-equal scores). And a
/// quantized TFLite wake word gives LiteRT's reference outputs bit for bit.
fn convert_matches_native(arm: &Arm) {
    if !selected(arm) {
        return;
    }
    let runs: [(&[&str], &str, f64); 3] = [
        (&["eval", "models/digits/model.onnx", "--dataset", "models/digits/test", "--json"], "/correct", 0.0),
        (
            &[
                "eval",
                "models/keywords/model.int8.onnx",
                "--dataset",
                "models/keywords/test",
                "--engine",
                "micro",
                "--json",
            ],
            "/confusion",
            0.0,
        ),
        (
            &["eval", "models/detector/model.int8.onnx", "--dataset", "models/detector/test", "--json"],
            "/0/metrics/map50",
            0.001,
        ),
    ];
    for (args, figure, tolerance) in runs {
        let mut n = native("lepton-convert");
        n.args(args);
        let n = output(n);
        let mut a = emulated(arm, "lepton-convert");
        a.args(args);
        let a = output(a);
        let ((n_out, n_err), (a_out, a_err)) = (text(&n), text(&a));
        assert!(n.status.success(), "{n_out}\n{n_err}");
        assert!(a.status.success(), "{} {a_out}\n{a_err}", arm.triple);
        let (nj, aj): (Value, Value) = (serde_json::from_str(&n_out).unwrap(), serde_json::from_str(&a_out).unwrap());
        let (nv, av) = (nj.pointer(figure), aj.pointer(figure));
        assert!(nv.is_some(), "{figure} in {n_out}");
        if tolerance == 0.0 {
            assert_eq!(nv, av, "{} {}: {figure}", arm.triple, args[1]);
        } else {
            let (x, y) = (nv.and_then(Value::as_f64).unwrap(), av.and_then(Value::as_f64).unwrap_or(f64::NAN));
            assert!((x - y).abs() <= tolerance, "{} {}: {figure} native {x} emulated {y}", arm.triple, args[1]);
        }
    }
    // A quantized TFLite wake word streamed over real speech (the model whose probabilities move
    // most on the demo recording): the board computes LiteRT's reference kernels' outputs, bit
    // for bit, on its own kernel set (NEON; the reference kernels where TFLite rounds).
    let dir = scratch(&format!("cross-wake-word-{}", arm.triple));
    let model = root().join("target/test-models/hey_mycroft.tflite");
    assert!(model.exists(), "{} is missing: run scripts/fetch-test-models", model.display());
    let features = dir.join("features.npy");
    let path = |p: &Path| p.display().to_string();
    python(&["tests/fixtures/wake_features.py", "models/keywords/demo.wav", &path(&model), &path(&features)]);
    let feed = format!("serving_default_input_audio:0={}", path(&features));
    python(&["tests/fixtures/litert_run.py", &path(&model), &path(&dir.join("litert")), &feed, "--stream"]);
    let mut a = emulated(arm, "lepton-convert");
    a.args(["run", &path(&model), "--input", &feed, "--output-dir", &path(&dir.join("board"))]);
    let a = output(a);
    assert!(a.status.success(), "{} wake word: {}", arm.triple, text(&a).1);
    let (want, got) = (
        read_npy(&dir.join("litert/StatefulPartitionedCall:0.npy")),
        read_npy(&dir.join("board/StatefulPartitionedCall_0.npy")),
    );
    assert_eq!(want.0, got.0, "{}: one probability per window", arm.triple);
    let off = want.1.iter().zip(&got.1).filter(|(w, g)| w != g).count();
    assert_eq!(off, 0, "{}: {off} of {} windows differ from LiteRT's reference", arm.triple, want.1.len());
    assert!(want.1.iter().any(|&v| v > 100.0), "the wake word's probability rises on the demo speech");
    // The wake word as the daemon hears it (its JSON: TFLite Micro's frontend in fixed point,
    // microWakeWord's decision): the same detections at the same times as the native build.
    let wav = dir.join("phrases.wav");
    python(&["tests/fixtures/speak.py", &path(&wav), "en-us", "1.0", "okay nabu", "alexa", "okay nabu"]);
    let json_model = root().join("target/test-models/okay_nabu.json");
    let args = ["run", &path(&json_model), "--input", &path(&wav), "--json"];
    let mut n = native("lepton-convert");
    n.args(args);
    let n = output(n);
    let mut a = emulated(arm, "lepton-convert");
    a.args(args);
    let a = output(a);
    assert!(n.status.success() && a.status.success(), "{} wake word: {}\n{}", arm.triple, text(&n).1, text(&a).1);
    let (nj, aj): (Value, Value) =
        (serde_json::from_str(&text(&n).0).unwrap(), serde_json::from_str(&text(&a).0).unwrap());
    assert_eq!(nj["events"].as_array().map(Vec::len), Some(2), "two wake words: {nj}");
    assert_eq!(nj["events"], aj["events"], "{}: wake-word detections", arm.triple);
}

#[test]
fn aarch64_float_daemon_detects_and_publishes_like_the_native_build() {
    daemon_matches_native(&AARCH64, "float");
}

#[test]
fn aarch64_int8_daemon_detects_and_publishes_like_the_native_build() {
    daemon_matches_native(&AARCH64, "int8");
}

#[test]
fn armv7_float_daemon_detects_and_publishes_like_the_native_build() {
    daemon_matches_native(&ARMV7, "float");
}

#[test]
fn armv7_int8_daemon_detects_and_publishes_like_the_native_build() {
    daemon_matches_native(&ARMV7, "int8");
}

#[test]
fn aarch64_convert_evaluates_like_the_native_build() {
    convert_matches_native(&AARCH64);
}

#[test]
fn armv7_convert_evaluates_like_the_native_build() {
    convert_matches_native(&ARMV7);
}

/// The detector's demo frames as an H.264 MP4 (GStreamer's x264enc), made once per test.
fn demo_clip(dir: &Path) -> PathBuf {
    let clip = dir.join("demo.mp4");
    let status = Command::new("gst-launch-1.0")
        .args(["-q", "multifilesrc"])
        .arg(format!("location={}/frame%03d.jpg", root().join("models/detector/demo/images").display()))
        .args(["index=0", "stop-index=7", "caps=image/jpeg,framerate=10/1", "!", "jpegdec", "!", "videoconvert"])
        .args(["!", "video/x-raw,format=I420", "!", "x264enc", "bframes=2", "key-int-max=4", "!", "h264parse"])
        .args(["!", "mp4mux", "!", "filesink"])
        .arg(format!("location={}", clip.display()))
        .status()
        .expect("gst-launch-1.0 (scripts/install-deps --test installs it)");
    assert!(status.success());
    clip
}

/// The board build decodes an H.264 file (OpenH264 cross-compiled, its NEON code under
/// emulation) to the same pictures as the native build: the same detections, line for line.
fn video_matches_native(arm: &Arm) {
    if !selected(arm) {
        return;
    }
    let dir = scratch(&format!("cross-video-{}", arm.triple));
    let clip = demo_clip(&dir);
    let config = dir.join("video.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"v\"\n[[pipeline]]\nname = \"clip\"\nmodel = \"{}\"\nengine = \"micro\"\n[pipeline.source]\nkind = \"video\"\npath = \"{}\"\nrealtime = false\n",
            root().join("models/detector/model.int8.onnx").display(),
            clip.display()
        ),
    )
    .unwrap();
    // Detection lines without their timing.
    let lines = |out: &Output| -> Vec<String> {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .filter(|l| l.starts_with("clip #"))
            .map(|l| l.rsplit_once("  (").map_or(l, |(a, _)| a).to_string())
            .collect()
    };
    let mut n = native("lepton");
    n.args(["run", "--config"]).arg(&config);
    let mut e = emulated(arm, "lepton");
    e.args(["run", "--config"]).arg(&config);
    let (n, e) = (output(n), output(e));
    assert!(n.status.success() && e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let (nl, el) = (lines(&n), lines(&e));
    assert!(nl.len() >= 6, "{nl:?}");
    assert_eq!(nl, el, "{}: the same pictures, the same detections", arm.triple);
    eprintln!("{}: {} detection lines equal to the native build's", arm.triple, el.len());
}

#[test]
fn aarch64_decodes_video_like_the_native_build() {
    video_matches_native(&AARCH64);
}

#[test]
fn armv7_decodes_video_like_the_native_build() {
    video_matches_native(&ARMV7);
}
