//! Wake words as ESPHome hears them: TFLite Micro's audio frontend in Rust against its C original
//! (pymicro-features), and microWakeWord models against pymicro-wakeword's verdicts.

use lepton_e2e::{python, read_npy, root, scratch};
use lepton_runtime::audio::{MicroFrontend, MicroFrontendConfig};
use lepton_runtime::source::WavSource;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The real speech recordings (Debian's pocketsphinx-testdata) and the bundled demo.
fn recordings() -> Vec<PathBuf> {
    let dir = root().join("target/test-models/speech");
    let mut all: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}: run scripts/fetch-test-models (scripts/test does)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    all.sort();
    assert!(all.len() >= 10, "{}: the ten pocketsphinx-testdata recordings", dir.display());
    all.push(root().join("models/keywords/demo.wav"));
    all
}

fn samples(wav: &Path) -> Vec<i16> {
    let mut src = WavSource::open(wav).unwrap();
    src.read_all().unwrap().into_iter().map(|v| (v * 32768.0) as i16).collect()
}

/// Writes 16 kHz mono 16-bit samples as a WAV file.
fn write_wav(path: &Path, samples: &[i16]) {
    let mut b = Vec::with_capacity(44 + 2 * samples.len());
    let data = (2 * samples.len()) as u32;
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    for v in [16u32, 0x0001_0001, 16000, 32000, 0x0010_0002] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for v in samples {
        b.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// Features of `samples`, fed in blocks of `block` samples.
fn rust_features(samples: &[i16], block: usize) -> Vec<u16> {
    let mut fe = MicroFrontend::new(MicroFrontendConfig::MICRO_WAKE_WORD).unwrap();
    let mut out = Vec::new();
    for chunk in samples.chunks(block) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let (took, features) = fe.process(rest);
            if let Some(f) = features {
                out.extend_from_slice(f);
            }
            rest = &rest[took..];
        }
    }
    out
}

#[test]
fn micro_frontend_matches_pymicro_features_bit_for_bit() {
    let dir = scratch("micro-frontend");
    let mut cases = recordings();
    // The same speech 16 times louder, clipped: the frontend's overflow and saturation paths.
    let loud = dir.join("loud.wav");
    let demo = samples(&root().join("models/keywords/demo.wav"));
    write_wav(&loud, &demo.iter().map(|&v| (v as i32 * 16).clamp(-32768, 32767) as i16).collect::<Vec<_>>());
    cases.push(loud);
    let mut windows = 0;
    for wav in &cases {
        let npy = dir.join("want.npy");
        python(&["tests/fixtures/micro_features.py", &s(wav), &s(&npy)]);
        let (shape, want) = read_npy(&npy);
        let x = samples(wav);
        for block in [160, 37, 4096] {
            let got = rust_features(&x, block);
            assert_eq!(got.len(), want.len(), "{}: {shape:?}", wav.display());
            let off: Vec<usize> = (0..got.len()).filter(|&i| got[i] as f32 != want[i]).collect();
            assert!(
                off.is_empty(),
                "{} (blocks of {block}): {} of {} values differ, first at window {} channel {}: {} vs {}",
                wav.display(),
                off.len(),
                got.len(),
                off[0] / 40,
                off[0] % 40,
                got[off[0]],
                want[off[0]]
            );
        }
        windows += shape[0];
    }
    eprintln!("micro frontend: {windows} windows of {} recordings equal pymicro-features'", cases.len());
}

const MODELS: [&str; 4] = ["okay_nabu", "hey_jarvis", "hey_mycroft", "alexa"];
const PHRASES: [&str; 4] = ["okay nabu", "hey jarvis", "hey mycroft", "alexa"];
const VOICES: [&str; 6] = ["en-us", "en-gb-x-rp", "en-us+f2", "en+m3", "en-gb-scotland", "en+klatt"];

/// Each wake phrase in each espeak-ng voice, half a second of silence around it.
fn phrases(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for phrase in PHRASES {
        for voice in VOICES {
            let wav = dir.join(format!("{}-{voice}.wav", phrase.replace(' ', "_")));
            python(&["tests/fixtures/speak.py", &s(&wav), voice, "0.5", phrase]);
            out.push(wav);
        }
    }
    out
}

/// Lepton's detections (ms into the recording) of `model` over `wav`, with kernel set `kernels`.
fn lepton_detections(model: &Path, wav: &Path, kernels: Option<&str>) -> Vec<u64> {
    let mut cmd = std::process::Command::new(lepton_e2e::bin("lepton-convert"));
    cmd.args(["run", &s(model), "--input", &s(wav), "--json"]).current_dir(root());
    if let Some(k) = kernels {
        cmd.env("LEPTON_KERNELS", k);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}: {}", wav.display(), String::from_utf8_lossy(&out.stderr));
    let j = lepton_e2e::json(&out);
    j["events"].as_array().unwrap().iter().map(|e| e["t_ms"].as_u64().unwrap()).collect()
}

#[test]
fn wake_words_are_heard_as_pymicro_wakeword_hears_them() {
    let dir = scratch("wake-verdicts");
    let synthesized = phrases(&dir);
    // Real read speech (no wake word in it) and the demo's synthesized words.
    let real = recordings();
    let speech = root().join("target/test-models/speech");
    let real_s: f64 = real.iter().filter(|w| w.starts_with(&speech)).map(|w| samples(w).len() as f64 / 16000.0).sum();
    let mut agree = 0;
    let mut detected = 0;
    for name in MODELS {
        let model = root().join("target/test-models").join(format!("{name}.json"));
        let all: Vec<PathBuf> = synthesized.iter().chain(&real).cloned().collect();
        let mut args = vec!["tests/fixtures/wake_verdicts.py".to_string(), s(&model)];
        args.extend(all.iter().map(|p| s(p)));
        let out = python(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let want: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut false_accepts = 0;
        for wav in &all {
            let theirs = want[s(wav)].as_u64();
            for kernels in [None, Some("reference")] {
                let ours = lepton_detections(&model, wav, kernels);
                assert_eq!(
                    ours.first().copied(),
                    theirs,
                    "{name} on {} (kernels {kernels:?}): Lepton {ours:?}, pymicro-wakeword {theirs:?}",
                    wav.display()
                );
                if kernels.is_none() && wav.starts_with(&speech) {
                    false_accepts += ours.len();
                }
            }
            agree += 1;
            detected += usize::from(theirs.is_some());
        }
        let said: Vec<String> = synthesized
            .iter()
            .filter(|w| want[s(w)].as_u64().is_some())
            .map(|w| w.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        eprintln!(
            "{name}: detected in {said:?}; {false_accepts} false accepts in {real_s:.1} s of real speech ({:.1} per hour)",
            false_accepts as f64 * 3600.0 / real_s
        );
    }
    // Both verdicts occur, so agreement says something.
    assert!(detected > 0 && detected < agree, "{detected} detections of {agree}");
    eprintln!("wake words: {agree} verdicts (and detection times) equal pymicro-wakeword's");
}

#[test]
fn a_compiled_wake_word_is_the_same_model_and_hostile_descriptions_are_refused_by_field() {
    let dir = scratch("wake-compile");
    let models = root().join("target/test-models");
    let json = models.join("okay_nabu.json");
    let lpm = dir.join("okay_nabu.lpm");
    let out = lepton_e2e::run("lepton-convert", &["compile", &s(&json), "-o", &s(&lpm)]);
    let (stdout, stderr) = lepton_e2e::text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("wake word \"Okay Nabu\"") && stdout.contains("Variable×6"), "{stdout}");
    // The .lpm alone carries the wake word and its decision: the same detections.
    let wav = dir.join("okay.wav");
    python(&["tests/fixtures/speak.py", &s(&wav), "en-us", "0.5", "okay nabu", "okay nabu"]);
    let from_json = lepton_detections(&json, &wav, None);
    assert_eq!(from_json.len(), 2, "{from_json:?}");
    assert_eq!(lepton_detections(&lpm, &wav, None), from_json);
    let inspect = lepton_e2e::run("lepton-convert", &["inspect", &s(&json)]);
    assert!(lepton_e2e::text(&inspect).0.contains("probability_cutoff = 0.85"), "{}", lepton_e2e::text(&inspect).0);

    // Hostile descriptions: each error names the file and the field at fault, exit 2, no panic.
    let tflite = std::fs::read(models.join("okay_nabu.tflite")).unwrap();
    std::fs::write(dir.join("okay_nabu.tflite"), &tflite).unwrap();
    std::fs::write(dir.join("float.tflite"), std::fs::read(models.join("face_detection_short_range.tflite")).unwrap())
        .unwrap();
    let good = r#"{"type": "micro", "wake_word": "Okay Nabu", "model": "okay_nabu.tflite",
                   "micro": {"probability_cutoff": 0.85, "sliding_window_size": 5, "feature_step_size": 10}}"#;
    let cases = [
        (good.replace("\"micro\",", "\"openWakeWord\","), "only microWakeWord"),
        (good.replace("okay_nabu.tflite", "../okay_nabu.tflite"), "`model`"),
        (good.replace("okay_nabu.tflite", "/etc/passwd"), "`model`"),
        (good.replace("okay_nabu.tflite", "missing.tflite"), "missing.tflite"),
        (good.replace("okay_nabu.tflite", "float.tflite"), "float"),
        (good.replace("0.85", "1.5"), "micro.probability_cutoff"),
        (good.replace("\"sliding_window_size\": 5", "\"sliding_window_size\": 0"), "micro.sliding_window_size"),
        (good.replace("\"feature_step_size\": 10", "\"feature_step_size\": 0"), "micro.feature_step_size"),
        (good.replace("Okay Nabu", "a/b#"), "wake_word"),
        (good.replace("\"wake_word\": \"Okay Nabu\",", ""), "wake_word"),
        ("{\"type\": \"micro\"".into(), "not a microWakeWord description"),
        (format!("{{\"pad\": \"{}\"}}", "x".repeat(70_000)), "at most"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let file = dir.join(format!("case{i}.json"));
        std::fs::write(&file, text).unwrap();
        for args in
            [vec!["run", &s(&file), "--input", &s(&wav)], vec!["compile", &s(&file), "-o", &s(&dir.join("x.lpm"))]]
        {
            let out = lepton_e2e::run("lepton-convert", &args);
            let err = lepton_e2e::text(&out).1;
            assert_eq!(out.status.code(), Some(2), "case {i} {args:?}: {err}");
            // The file at fault is named: the JSON, or the .tflite it names.
            let named = err.contains(&format!("case{i}.json")) || err.contains("float.tflite");
            assert!(err.contains(needle) && named && !err.contains("panicked"), "case {i}: {err}");
        }
    }
}
