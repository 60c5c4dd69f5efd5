//! The pipeline's clock for durations (`FrameReport::clock`, `Stats::end_clock`): monotonic for
//! sources stamped with the wall clock, whatever their timestamps do (a board without a real-time
//! clock steps its wall clock by hours at NTP sync), and the source's own timeline for recordings.

use lepton_runtime::event::FrameMeta;
use lepton_runtime::image::{load_dir, Image};
use lepton_runtime::pipeline::{FrameReport, Pipeline, Sink, Stats};
use lepton_runtime::source::{Frame, FrameSource};
use lepton_runtime::{LeptonError, Model};
use std::path::Path;
use std::time::{Duration, Instant};

const HOUR_MS: u64 = 3_600_000;

/// A picture served `timestamps.len()` times, `gap` apart in real time, stamped with the given
/// times (a wall clock that jumps, or a recording's own timeline).
struct Stamped {
    image: Image,
    timestamps: Vec<u64>,
    next: usize,
    gap: Duration,
    own_timeline: bool,
}

impl FrameSource for Stamped {
    fn next_frame(&mut self) -> lepton_runtime::error::Result<Option<Frame<'_>>> {
        let Some(&ts) = self.timestamps.get(self.next) else { return Ok(None) };
        if self.next > 0 {
            std::thread::sleep(self.gap);
        }
        self.next += 1;
        let meta = FrameMeta { frame: self.next as u64 - 1, timestamp_ms: ts };
        Ok(Some(Frame { image: self.image.view()?, meta, name: None }))
    }

    fn own_timeline(&self) -> bool {
        self.own_timeline
    }
}

#[derive(Default)]
struct Clocks {
    seen: Vec<(u64, Duration)>,
    end: Option<Duration>,
}

impl Sink for Clocks {
    fn frame(&mut self, r: &FrameReport<'_>) -> Result<(), LeptonError> {
        self.seen.push((r.meta.timestamp_ms, r.clock));
        Ok(())
    }
    fn finish(&mut self, stats: &Stats) -> Result<(), LeptonError> {
        self.end = Some(stats.end_clock);
        Ok(())
    }
}

fn run(timestamps: Vec<u64>, gap: Duration, own_timeline: bool) -> (Vec<(u64, Duration)>, Duration, Duration) {
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/digits");
    let image = load_dir(digits.join("samples")).unwrap().remove(0);
    let stages = Model::load(digits.join("model.onnx")).unwrap().into_vision_stages().unwrap();
    let source = Stamped { image, timestamps, next: 0, gap, own_timeline };
    // The pipeline's monotonic clock starts inside `Pipeline::new`: time from before it, so the
    // run's real duration bounds every clock reading.
    let t0 = Instant::now();
    let mut p = Pipeline::new(source, stages.pre, stages.engine, stages.post, Clocks::default());
    // `run` takes its first frames sequentially, then may overlap: both paths stamp the clock.
    p.run().unwrap();
    let took = t0.elapsed();
    (p.sink().seen.clone(), p.sink().end.unwrap(), took)
}

#[test]
fn wall_clock_jumps_do_not_move_the_pipeline_clock() {
    let wall = 1_800_000_000_000u64;
    // Twelve frames 40 ms apart; the wall clock jumps 5 hours forwards, then 9 hours back.
    let stamps: Vec<u64> = (0..12u64)
        .map(|k| match k {
            0..=3 => wall + k * 40,
            4..=7 => wall + 5 * HOUR_MS + k * 40,
            _ => wall - 4 * HOUR_MS + k * 40,
        })
        .collect();
    let (seen, end, took) = run(stamps, Duration::from_millis(40), false);
    assert_eq!(seen.len(), 12);
    for w in seen.windows(2) {
        let step = w[1].1.saturating_sub(w[0].1);
        assert!(w[1].1 >= w[0].1, "the clock went backwards: {seen:?}");
        assert!(step < Duration::from_secs(2), "the clock followed a wall-clock jump: {seen:?}");
    }
    let span = seen[11].1 - seen[0].1;
    assert!(span >= Duration::from_millis(11 * 40) && span <= took, "{span:?} over {took:?}: {seen:?}");
    assert!(end >= seen[11].1 && end <= took, "end {end:?} over {took:?}");
}

#[test]
fn a_recording_s_clock_is_its_own_timeline() {
    // Frames served without waiting, stamped 100 ms apart on the recording's timeline.
    let start = 1_800_000_000_000u64;
    let stamps: Vec<u64> = (0..10u64).map(|k| start + k * 100).collect();
    let (seen, end, _) = run(stamps, Duration::ZERO, true);
    let clocks: Vec<u64> = seen.iter().map(|(_, c)| c.as_millis() as u64).collect();
    assert_eq!(clocks, (0..10u64).map(|k| k * 100).collect::<Vec<_>>());
    assert_eq!(end, Duration::from_millis(900), "the end of the recording's timeline");
}
