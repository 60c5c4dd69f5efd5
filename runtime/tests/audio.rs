//! The audio pipeline on a real WAV through a real (hand-written) VAD model: frontend → feature
//! window → tract → VAD hysteresis → sink, with speech segments reported at the right times.

use lepton_runtime::event::EventKind;
use lepton_runtime::pipeline::{AudioPipeline, FrameReport, Sink};
use lepton_runtime::source::WavSource;
use lepton_runtime::{LeptonError, Model};
use std::path::Path;

#[derive(Default)]
struct Events(Vec<(EventKind, u64)>, u64);

impl Sink for Events {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        self.1 += 1;
        self.0.extend(r.events.iter().map(|e| (e.kind, e.timestamp_ms)));
        Ok(())
    }
}

#[test]
fn vad_reports_each_speech_segment_with_its_timing() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let model = Model::load(data.join("energy_vad.onnx")).unwrap();
    let manifest = model.manifest().unwrap().clone();
    let engine = model.into_engine().unwrap();
    let source = WavSource::open(&data.join("speech_gap.wav")).unwrap();
    let mut p =
        AudioPipeline::new(source, engine, Events::default(), &manifest, &data.join("energy_vad.onnx")).unwrap();
    let stats = p.run().unwrap().clone();
    // 4.6 s at 16 kHz; frames every 160 samples after the first 400; a run every 2 frames once 10 are in.
    assert_eq!(stats.samples, 73_600);
    assert_eq!(stats.samples_lost, 0);
    let frames = 1 + (73_600 - 400) / 160;
    assert_eq!(stats.runs.frames_processed, ((frames - 10) / 2 + 1) as u64);
    let ev = &p.sink().0;
    let kinds: Vec<EventKind> = ev.iter().map(|e| e.0).collect();
    assert_eq!(kinds, [EventKind::Start, EventKind::End, EventKind::Start, EventKind::End], "{ev:?}");
    let t = |i: usize| ev[i].1 as i64 - ev[0].1 as i64;
    // Loud from 1.0 s to 2.0 s and from 3.0 s to 3.6 s; ends are late by up to the window + hangover.
    assert!((950..=1250).contains(&t(1)), "first segment lasts {} ms", t(1));
    assert!((1950..=2050).contains(&t(2)), "second start {} ms after the first", t(2));
    assert!((550..=850).contains(&(t(3) - t(2))), "second segment lasts {} ms", t(3) - t(2));
}

#[test]
fn a_sample_rate_mismatch_is_an_error_that_says_what_to_do() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let model = Model::load(data.join("energy_vad.onnx")).unwrap();
    let mut manifest = model.manifest().unwrap().clone();
    manifest.audio.as_mut().unwrap().sample_rate = 8000;
    manifest.audio.as_mut().unwrap().fmax = Some(4000.0);
    let engine = model.into_engine().unwrap();
    let source = WavSource::open(&data.join("speech_gap.wav")).unwrap();
    let e = AudioPipeline::new(source, engine, Events::default(), &manifest, Path::new("m.onnx"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("audio.sample_rate") && e.contains("16000") && e.contains("sox"), "{e}");
}
