//! The motion gate in the pipeline: a still camera's frames skip the model and keep its last
//! detections; the first frame with motion goes through, on the one-thread loop and on the
//! two-thread one alike.

use lepton_runtime::image::{load_dir, Image};
use lepton_runtime::pipeline::{FrameReport, Pipeline, Preprocess, Sink};
use lepton_runtime::source::{Frame, ImageSource, ImageSourceOptions};
use lepton_runtime::tensor::TensorViewMut;
use lepton_runtime::vision::motion::{MotionConfig, MotionGate};
use lepton_runtime::vision::Transform;
use lepton_runtime::{LeptonError, Model};
use std::path::Path;
use std::time::Duration;

/// Each sample picture shown `repeat` times, as a still camera would deliver it.
fn still_camera(repeat: usize) -> (Vec<Image>, usize) {
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits");
    let pictures = load_dir(digits.join("samples")).unwrap();
    let n = pictures.len();
    (pictures.iter().flat_map(|p| std::iter::repeat_n(p.clone(), repeat)).collect(), n)
}

/// What the sink saw: whether the model ran, and the best class.
#[derive(Default)]
struct Seen(Vec<(bool, Option<u16>)>);

impl Sink for Seen {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        self.0.push((r.inferred, r.detections.first().map(|d| d.class)));
        Ok(())
    }
}

/// Preprocessing slowed down, so that [`Pipeline::run`] moves it to its own thread.
struct Slow<P>(P);

impl<P: Preprocess> Preprocess for Slow<P> {
    fn preprocess(&mut self, frame: &Frame<'_>, input: TensorViewMut<'_>) -> lepton_runtime::error::Result<Transform> {
        std::thread::sleep(Duration::from_millis(5));
        self.0.preprocess(frame, input)
    }
}

fn check(seen: &[(bool, Option<u16>)], repeat: usize, pictures: usize) {
    assert_eq!(seen.len(), repeat * pictures);
    for (k, chunk) in seen.chunks(repeat).enumerate() {
        assert!(chunk[0].0, "picture {k}: its first frame changed the scene and went to the model: {seen:?}");
        assert!(chunk[0].1.is_some(), "picture {k} classified");
        for (i, s) in chunk.iter().enumerate().skip(1) {
            assert!(!s.0, "picture {k}, frame {i}: still, held back from the model: {seen:?}");
            assert_eq!(s.1, chunk[0].1, "picture {k}, frame {i}: a still frame keeps the last detections");
        }
    }
}

#[test]
fn still_frames_skip_the_model_and_keep_its_detections_and_motion_wakes_it_at_once() {
    const REPEAT: usize = 4;
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits/model.onnx");
    // One thread (`step`).
    let (frames, pictures) = still_camera(REPEAT);
    let stages = Model::load(&digits).unwrap().into_vision_stages().unwrap();
    let source = ImageSource::from_images(frames, ImageSourceOptions::default());
    let mut p = Pipeline::new(source, stages.pre, stages.engine, stages.post, Seen::default())
        .with_motion(MotionGate::new(MotionConfig::default(), 60_000));
    while p.step().unwrap() {}
    check(&p.sink().0, REPEAT, pictures);
    let stats = p.stats();
    assert_eq!((stats.frames_processed, stats.frames_inferred), ((REPEAT * pictures) as u64, pictures as u64));
    assert_eq!(stats.inference.count(), pictures as u64, "still frames are not inference samples");

    // Two threads (`run`, preprocessing slower than a handoff).
    let (frames, _) = still_camera(REPEAT);
    let stages = Model::load(&digits).unwrap().into_vision_stages().unwrap();
    let source = ImageSource::from_images(frames, ImageSourceOptions::default());
    let mut p = Pipeline::new(source, Slow(stages.pre), stages.engine, stages.post, Seen::default())
        .with_motion(MotionGate::new(MotionConfig::default(), 60_000));
    let stats = p.run().unwrap().clone();
    assert!(stats.overlapped, "preprocessing 5 ms a frame moves it to its own thread");
    check(&p.sink().0, REPEAT, pictures);
    assert_eq!(stats.frames_inferred, pictures as u64);
}

#[test]
fn without_motion_the_refresh_runs_the_model_on_its_period() {
    // One picture, 30 frames at 10 fps on a recording's timeline (3 s): refresh every second.
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits");
    let picture = load_dir(digits.join("samples")).unwrap().remove(0);
    let stages = Model::load(digits.join("model.onnx")).unwrap().into_vision_stages().unwrap();
    let source = Timeline { image: picture, next: 0, frames: 30, step_ms: 100 };
    let mut p = Pipeline::new(source, stages.pre, stages.engine, stages.post, Seen::default())
        .with_motion(MotionGate::new(MotionConfig::default(), 1000));
    while p.step().unwrap() {}
    let ran: Vec<usize> = p.sink().0.iter().enumerate().filter(|(_, s)| s.0).map(|(k, _)| k).collect();
    assert_eq!(ran, [0, 10, 20], "the first frame, then one a second");
}

/// A picture served `frames` times, `step_ms` apart on its own timeline.
struct Timeline {
    image: Image,
    next: u64,
    frames: u64,
    step_ms: u64,
}

impl lepton_runtime::source::FrameSource for Timeline {
    fn next_frame(&mut self) -> lepton_runtime::error::Result<Option<Frame<'_>>> {
        if self.next == self.frames {
            return Ok(None);
        }
        let meta = lepton_runtime::event::FrameMeta { frame: self.next, timestamp_ms: self.next * self.step_ms };
        self.next += 1;
        Ok(Some(Frame { image: self.image.view()?, meta, name: None }))
    }

    fn own_timeline(&self) -> bool {
        true
    }
}

/// A sink that fails on its sixth frame and records what the end of the run told it.
#[derive(Default)]
struct FailsOnSixth {
    frames: usize,
    confirmed: usize,
    lost: usize,
    finished: bool,
}

impl Sink for FailsOnSixth {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        use lepton_runtime::vision::track::TrackEventKind;
        self.frames += 1;
        self.confirmed += r.track_events.iter().filter(|e| e.kind == TrackEventKind::Confirmed).count();
        if self.frames == 6 {
            return Err(LeptonError::Source { name: "sink".into(), reason: "the broker link is gone".into() });
        }
        Ok(())
    }
    fn tracks_ended(
        &mut self,
        _stats: &lepton_runtime::pipeline::Stats,
        events: &[lepton_runtime::vision::track::TrackEvent],
        _zones: &[lepton_runtime::vision::zone::ZoneEvent],
    ) -> Result<(), LeptonError> {
        use lepton_runtime::vision::track::TrackEventKind;
        self.lost += events.iter().filter(|e| e.kind == TrackEventKind::Lost).count();
        Ok(())
    }
    fn finish(&mut self, _stats: &lepton_runtime::pipeline::Stats) -> Result<(), LeptonError> {
        self.finished = true;
        Ok(())
    }
}

#[test]
fn a_run_that_fails_still_ends_its_objects_and_finishes_its_sink() {
    let detector = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/detector");
    let scene = load_dir(detector.join("demo/images")).unwrap().remove(0);
    let stages = Model::load(detector.join("model.onnx")).unwrap().into_vision_stages().unwrap();
    let source = ImageSource::from_images(vec![scene; 10], ImageSourceOptions::default());
    let mut p = Pipeline::new(source, stages.pre, stages.engine, stages.post, FailsOnSixth::default())
        .with_tracking(lepton_runtime::vision::track::TrackConfig::default(), 0.5);
    let e = p.run().unwrap_err().to_string();
    assert!(e.contains("the broker link is gone"), "{e}");
    let s = p.sink();
    assert!(s.confirmed > 0, "the scene's digits were tracked");
    assert_eq!((s.lost, s.finished), (s.confirmed, true), "every object ended, the sink finished");
}
