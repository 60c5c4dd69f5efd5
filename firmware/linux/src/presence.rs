//! Presence events: a label starts when it is detected and ends after `hold` without it.
//!
//! Durations (the hold, an event's length) are measured on the pipeline's clock
//! ([`FrameReport::clock`](lepton_runtime::pipeline::FrameReport::clock)): monotonic for live
//! sources, a recording's own timeline for recordings. The wall clock only stamps events: on a
//! board without a real-time clock it steps by hours at NTP sync, and a hold measured on it would
//! end an event at once (a jump forwards) or never (a jump backwards).

use lepton_runtime::event::EventKind;
use lepton_runtime::Detection;
use std::collections::BTreeMap;
use std::time::Duration;

/// A start or an end of a label's presence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    /// The label's class index.
    pub class: u16,
    /// Start or end.
    pub kind: EventKind,
    /// When, in ms since the Unix epoch (the frame's timestamp): for the message, not for durations.
    pub timestamp_ms: u64,
    /// The detection's score at a start; the best score of the presence at an end.
    pub score: f32,
    /// At an end: how long the label was present, on the pipeline's clock.
    pub duration: Option<Duration>,
}

/// One label present now.
#[derive(Debug, Clone, Copy)]
struct Open {
    started: Duration,
    last: Duration,
    last_ms: u64,
    peak: f32,
}

/// Debounces detections into start and end events per label.
#[derive(Debug, Clone)]
pub struct Presence {
    hold: Duration,
    open: BTreeMap<u16, Open>,
}

impl Presence {
    /// A tracker whose events end after `hold` without a detection of their label.
    pub fn new(hold: Duration) -> Self {
        Presence { hold, open: BTreeMap::new() }
    }

    /// Whether `class` is present (a detection of it now would not start an event).
    pub fn is_present(&self, class: u16) -> bool {
        self.open.contains_key(&class)
    }

    /// One frame: `clock` on the pipeline's clock, `timestamp_ms` its wall-clock (or recording)
    /// time, `seen` its detections at or above the threshold. Appends the starts of labels not
    /// present before, then the ends of labels unseen for longer than the hold.
    pub fn update(&mut self, clock: Duration, timestamp_ms: u64, seen: &[Detection], out: &mut Vec<Change>) {
        for d in seen {
            match self.open.get_mut(&d.class) {
                Some(p) => {
                    p.last = p.last.max(clock);
                    p.last_ms = timestamp_ms;
                    p.peak = p.peak.max(d.score);
                }
                None => {
                    self.open
                        .insert(d.class, Open { started: clock, last: clock, last_ms: timestamp_ms, peak: d.score });
                    out.push(Change {
                        class: d.class,
                        kind: EventKind::Start,
                        timestamp_ms,
                        score: d.score,
                        duration: None,
                    });
                }
            }
        }
        let expired: Vec<u16> =
            self.open.iter().filter(|(_, p)| clock.saturating_sub(p.last) > self.hold).map(|(c, _)| *c).collect();
        for c in expired {
            self.end(c, clock, timestamp_ms, out);
        }
    }

    /// Ends every label still present (the run ended) at `clock`, stamped `timestamp_ms`.
    pub fn finish(&mut self, clock: Duration, timestamp_ms: u64, out: &mut Vec<Change>) {
        for c in self.open.keys().copied().collect::<Vec<_>>() {
            self.end(c, clock, timestamp_ms, out);
        }
    }

    fn end(&mut self, class: u16, clock: Duration, timestamp_ms: u64, out: &mut Vec<Change>) {
        if let Some(p) = self.open.remove(&class) {
            out.push(Change {
                class,
                kind: EventKind::End,
                // Never stamped before the detection that kept the label present (a clock set
                // backwards in between).
                timestamp_ms: timestamp_ms.max(p.last_ms),
                score: p.peak,
                duration: Some(clock.saturating_sub(p.started)),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(class: u16) -> [Detection; 1] {
        [Detection { class, score: 0.9, bbox: None }]
    }

    /// Frames 100 ms apart on the monotonic clock whose wall timestamps step by hours.
    #[test]
    fn holds_run_on_the_pipeline_clock_not_the_wall_clock() {
        let hold = Duration::from_secs(2);
        let mut p = Presence::new(hold);
        let mut out = vec![];
        let wall0: u64 = 1_800_000_000_000;
        let hour: u64 = 3_600_000;
        let at = |ms: u64| Duration::from_millis(ms);
        // A person present for 1 s while the wall clock jumps forwards by 5 hours (NTP sync).
        p.update(at(0), wall0, &seen(1), &mut out);
        p.update(at(500), wall0 + 500 + 5 * hour, &seen(1), &mut out);
        p.update(at(1000), wall0 + 1000 + 5 * hour, &seen(1), &mut out);
        assert_eq!(out.len(), 1, "one start, no end after a jump forwards: {out:?}");
        assert_eq!(out[0].kind, EventKind::Start);
        // Then gone; the wall clock steps back by 7 hours. 1.9 s of monotonic time later: held.
        p.update(at(2900), wall0 - 2 * hour, &[], &mut out);
        assert_eq!(out.len(), 1, "ended before hold_s of monotonic time: {out:?}");
        // Past the hold (2.1 s after the last detection): it ends, although the wall clock says
        // the last detection is 7 hours in the future.
        p.update(at(3100), wall0 - 2 * hour + 200, &[], &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        let end = out[1];
        assert_eq!((end.class, end.kind), (1, EventKind::End));
        assert_eq!(end.duration, Some(at(3100)), "measured on the monotonic clock");
        assert!(end.timestamp_ms >= out[0].timestamp_ms, "an end is never stamped before its start");
        // The old wall-clock hold would have ended it at the first jump (5 h > 2 s); check the
        // converse too: a jump backwards does not keep a label present forever.
        p.update(at(4000), wall0 + 10 * hour, &seen(2), &mut out);
        p.update(at(6100), wall0 + 9 * hour, &[], &mut out);
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!((out[3].class, out[3].kind, out[3].duration), (2, EventKind::End, Some(at(2100))));
    }

    #[test]
    fn a_long_presence_is_one_event_and_the_end_of_a_run_ends_the_rest() {
        let mut p = Presence::new(Duration::from_secs(1));
        let mut out = vec![];
        for k in 0..300u64 {
            p.update(Duration::from_millis(k * 100), 1_000 + k * 100, &seen(3), &mut out);
        }
        assert_eq!(out.len(), 1, "30 s of presence is one start");
        assert!(p.is_present(3));
        p.finish(Duration::from_secs(30), 31_000, &mut out);
        assert_eq!((out[1].kind, out[1].duration), (EventKind::End, Some(Duration::from_secs(30))));
        assert!(!p.is_present(3));
    }
}
