//! The Rust audio frontend computes the features the Python training code computes
//! (models/common/audio_features.py), on a real WAV, for log-mel and MFCC configurations.

use lepton_runtime::audio::{Frontend, FrontendConfig};
use lepton_runtime::source::{AudioSource, WavSource};
use std::path::Path;

#[test]
fn rust_frontend_matches_the_python_training_frontend() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let vectors: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("frontend.json")).unwrap()).unwrap();
    let mut wav = WavSource::open(&data.join("frontend.wav")).unwrap();
    assert_eq!(wav.sample_rate(), 16000);
    let samples = wav.read_all().unwrap();
    for case in vectors.as_array().unwrap() {
        let c = &case["config"];
        let get = |k: &str| c[k].as_f64().unwrap();
        let cfg = FrontendConfig {
            sample_rate: get("sample_rate") as u32,
            window: get("window") as usize,
            hop: get("hop") as usize,
            fft: get("fft") as usize,
            mels: get("mels") as usize,
            mfcc: get("mfcc") as usize,
            fmin: get("fmin") as f32,
            fmax: get("fmax") as f32,
        };
        let expected: Vec<Vec<f64>> = serde_json::from_value(case["features"].clone()).unwrap();
        let mut frontend: Frontend<2048, 128> = Frontend::new(cfg).unwrap();
        let mut got: Vec<Vec<f32>> = Vec::new();
        // Odd block sizes: the incremental path must not depend on how samples arrive.
        for block in samples.chunks(123) {
            frontend.push(block.iter().copied(), |f| got.push(f.to_vec()));
        }
        assert_eq!(got.len(), expected.len(), "{cfg:?}");
        let mut worst = 0.0f64;
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.len(), e.len());
            for (a, b) in g.iter().zip(e) {
                worst = worst.max((*a as f64 - b).abs());
            }
        }
        eprintln!("{cfg:?}: {} frames, worst difference {worst:.2e}", got.len());
        assert!(worst < 2e-3, "features differ by up to {worst}");
    }
}
