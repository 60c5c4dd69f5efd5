//! Object tracking: each detected box keeps an identity across frames.
//!
//! The design is SORT's (predict, associate by overlap, update) with ByteTrack's second pass:
//! - Prediction: each track's box centre moves with a constant velocity, filtered by an alpha-beta
//!   filter (the steady state of SORT's constant-velocity Kalman filter, without its matrices: a
//!   few multiplications a track, the same on a microcontroller). The box size is smoothed. A
//!   prediction off by half the box's size (the object stopped or turned) restarts the filter
//!   from the box seen.
//!   Time is the pipeline's clock, so dropped or gated frames predict over the real gap.
//! - Association, per class: detections at or above `high` first, against every track, greedily
//!   by intersection over union with the predicted box or the last box seen, whichever overlaps
//!   more (an object that stops or turns back), at least `min_iou`; then the detections
//!   below `high` only extend confirmed tracks that are still unmatched (an object whose score
//!   dips while half hidden keeps its identity instead of ending and starting again).
//! - Life: a track starts tentative from an unmatched detection at or above `high`, is confirmed
//!   after `confirm` matched frames in a row (a one-frame false positive never gets an id), and
//!   is lost after `max_missed_ms` without a match and at least [`MIN_MISSES`] frames the model saw
//!   without it (it coasts on its prediction meanwhile, which carries it across a short
//!   occlusion; behind a motion gate, a still scene's rare frames do not end a parked car). Ids are given at confirmation, from 1, never reused
//!   within a run.
//! - Stationary: a confirmed track whose centre stays within a tenth of its size for
//!   `stationary_ms` is marked stationary (a parked car), until it moves again.
//!
//! Fixed capacity ([`MAX_TRACKS`]), no allocation; detections without a box (classifiers) are not
//! tracked.

use crate::event::{BBox, Detection, MAX_DETECTIONS};
use heapless::Vec;

/// Most tracks followed at once (tentative ones included).
pub const MAX_TRACKS: usize = 64;
/// Most track events of one frame: a track makes at most two (confirmed and stationary at once).
pub const MAX_TRACK_EVENTS: usize = 2 * MAX_TRACKS;
/// A track is lost only after this many frames the model saw without it, as well as
/// `max_missed_ms`: behind a motion gate, the model may see a still scene once in `refresh_s`, and
/// one missed detection of a parked car must not end it.
pub const MIN_MISSES: u16 = 3;

/// How tracks are made, kept and ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackConfig {
    /// Smallest overlap (intersection over union, 0-1) of a detection with a track's predicted box.
    pub min_iou: f32,
    /// Matched frames in a row that confirm a new track.
    pub confirm: u16,
    /// A track unmatched this long (ms on the pipeline's clock) is lost.
    pub max_missed_ms: u64,
    /// Time a confirmed track must stay in place to be stationary (ms).
    pub stationary_ms: u64,
}

impl Default for TrackConfig {
    fn default() -> Self {
        TrackConfig { min_iou: 0.2, confirm: 3, max_missed_ms: 2000, stationary_ms: 10_000 }
    }
}

/// A detection's track, as reported beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrackTag {
    /// The confirmed track's id (from 1); `None`: not tracked (no box, tentative, or over capacity).
    pub id: Option<u32>,
    /// The object has stayed in place for the stationary time.
    pub stationary: bool,
}

/// A track's life event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackEvent {
    /// The track's id.
    pub id: u32,
    /// The class it was detected as.
    pub class: u16,
    /// What happened.
    pub kind: TrackEventKind,
    /// Best score seen on the track.
    pub score: f32,
    /// The track's last box (the predicted one for a lost track's last match).
    pub bbox: BBox,
}

/// What happened to a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackEventKind {
    /// Confirmed: a new object.
    Confirmed,
    /// Stopped moving.
    Stationary,
    /// Moves again after being stationary.
    Moving,
    /// Not seen for `max_missed_ms`: gone.
    Lost,
}

#[derive(Debug, Clone, Copy)]
struct Track {
    /// 0 while tentative.
    id: u32,
    class: u16,
    cx: f32,
    cy: f32,
    w: f32,
    h: f32,
    /// Centre velocity, pixels per second.
    vx: f32,
    vy: f32,
    hits: u16,
    /// Frames the model saw since the last match.
    misses: u16,
    last_ms: u64,
    matched: bool,
    /// The detection matched on this frame.
    det: u8,
    best: f32,
    anchor: (f32, f32, u64),
    stationary: bool,
}

impl Track {
    fn predicted(&self, now_ms: u64) -> BBox {
        let dt = now_ms.saturating_sub(self.last_ms) as f32 / 1000.0;
        let (cx, cy) = (self.cx + self.vx * dt, self.cy + self.vy * dt);
        BBox { x0: cx - self.w / 2.0, y0: cy - self.h / 2.0, x1: cx + self.w / 2.0, y1: cy + self.h / 2.0 }
    }

    fn bbox(&self) -> BBox {
        self.predicted(self.last_ms)
    }

    /// This track's `kind` event, with its best score and last box.
    fn event(&self, kind: TrackEventKind) -> TrackEvent {
        TrackEvent { id: self.id, class: self.class, kind, score: self.best, bbox: self.bbox() }
    }
}

/// Position gain of the alpha-beta filter.
const ALPHA: f32 = 0.6;
/// Velocity gain.
const BETA: f32 = 0.2;
/// Size smoothing.
const SIZE_GAIN: f32 = 0.5;
/// A prediction off by more than this fraction of the box's size is a manoeuvre: the filter
/// restarts from the box seen instead of averaging.
const MANOEUVRE: f32 = 0.5;

/// The tracker of one pipeline.
pub struct Tracker {
    config: TrackConfig,
    tracks: Vec<Track, MAX_TRACKS>,
    next_id: u32,
    /// Detections that could not start a track because [`MAX_TRACKS`] were followed.
    pub over_capacity: u64,
    pairs: Vec<(f32, u8, u8), { MAX_TRACKS * 4 }>,
}

impl Tracker {
    /// A tracker with no tracks.
    pub fn new(config: TrackConfig) -> Self {
        Tracker { config, tracks: Vec::new(), next_id: 1, over_capacity: 0, pairs: Vec::new() }
    }

    /// Confirmed tracks followed now.
    pub fn confirmed(&self) -> usize {
        self.tracks.iter().filter(|t| t.id != 0).count()
    }

    /// One frame's detections at `now_ms` (the pipeline's clock): writes each detection's tag
    /// into `tags` (same order) and appends what happened to tracks to `events`. `high`: the
    /// score that may start a track (the pipeline's threshold).
    pub fn update(
        &mut self,
        now_ms: u64,
        detections: &[Detection],
        high: f32,
        tags: &mut Vec<TrackTag, MAX_DETECTIONS>,
        events: &mut Vec<TrackEvent, MAX_TRACK_EVENTS>,
    ) {
        tags.clear();
        for _ in detections.iter().take(MAX_DETECTIONS) {
            let _ = tags.push(TrackTag::default());
        }
        let detections = &detections[..tags.len()];
        for t in self.tracks.iter_mut() {
            t.matched = false;
        }
        let mut taken = [false; MAX_DETECTIONS];
        // First pass: confident detections against every track; second: the others against
        // confirmed tracks left unmatched.
        self.associate(now_ms, detections, &mut taken, |d| d.score >= high, false);
        self.associate(now_ms, detections, &mut taken, |d| d.score < high, true);
        for (i, d) in detections.iter().enumerate() {
            let Some(b) = d.bbox else { continue };
            if taken[i] || d.score < high {
                continue;
            }
            let (w, h) = (b.x1 - b.x0, b.y1 - b.y0);
            let (cx, cy) = (b.x0 + w / 2.0, b.y0 + h / 2.0);
            let t = Track {
                id: 0,
                class: d.class,
                cx,
                cy,
                w,
                h,
                vx: 0.0,
                vy: 0.0,
                hits: 1,
                misses: 0,
                last_ms: now_ms,
                matched: true,
                det: i as u8,
                best: d.score,
                anchor: (cx, cy, now_ms),
                stationary: false,
            };
            if self.tracks.push(t).is_err() {
                self.over_capacity += 1;
            }
        }
        // Confirmation, stationarity, tags of matched detections, and losses.
        let config = self.config;
        let mut k = 0;
        while k < self.tracks.len() {
            let t = &mut self.tracks[k];
            if !t.matched {
                t.misses = t.misses.saturating_add(1);
                let gone = if t.id == 0 {
                    true // a tentative track must match every frame
                } else {
                    now_ms.saturating_sub(t.last_ms) > config.max_missed_ms && t.misses >= MIN_MISSES
                };
                if gone {
                    if t.id != 0 {
                        let _ = events.push(t.event(TrackEventKind::Lost));
                    }
                    self.tracks.swap_remove(k);
                    continue;
                }
                k += 1;
                continue;
            }
            if t.id == 0 && t.hits >= config.confirm {
                t.id = self.next_id;
                self.next_id += 1;
                let _ = events.push(t.event(TrackEventKind::Confirmed));
            }
            if t.id != 0 {
                if let Some(tag) = tags.get_mut(t.det as usize) {
                    *tag = TrackTag { id: Some(t.id), stationary: false };
                }
                let (dx, dy) = (t.cx - t.anchor.0, t.cy - t.anchor.1);
                let still = dx * dx + dy * dy <= 0.01 * t.w * t.h;
                if !still {
                    t.anchor = (t.cx, t.cy, now_ms);
                }
                let stationary = still && now_ms.saturating_sub(t.anchor.2) >= config.stationary_ms;
                if let Some(tag) = tags.get_mut(t.det as usize) {
                    tag.stationary = stationary;
                }
                if stationary != t.stationary {
                    t.stationary = stationary;
                    let kind = if stationary { TrackEventKind::Stationary } else { TrackEventKind::Moving };
                    let _ = events.push(t.event(kind));
                }
            }
            k += 1;
        }
    }

    /// Ends every confirmed track (the run ended): appends their `Lost` events.
    pub fn finish(&mut self, events: &mut Vec<TrackEvent, MAX_TRACK_EVENTS>) {
        for t in self.tracks.iter().filter(|t| t.id != 0) {
            let _ = events.push(t.event(TrackEventKind::Lost));
        }
        self.tracks.clear();
    }

    /// Greedy association of the detections `pick` selects with the unmatched tracks (confirmed
    /// ones only when `confirmed_only`), best overlap first; updates matched tracks.
    fn associate(
        &mut self,
        now_ms: u64,
        detections: &[Detection],
        taken: &mut [bool; MAX_DETECTIONS],
        pick: impl Fn(&Detection) -> bool,
        confirmed_only: bool,
    ) {
        self.pairs.clear();
        for (ti, t) in self.tracks.iter().enumerate() {
            if t.matched || (confirmed_only && t.id == 0) {
                continue;
            }
            let p = t.predicted(now_ms);
            for (di, d) in detections.iter().enumerate() {
                let Some(b) = d.bbox else { continue };
                if taken[di] || d.class != t.class || !pick(d) {
                    continue;
                }
                // Overlap with the predicted box, or with the last one seen: an object that
                // stops or turns back is where it was, not where its velocity said.
                let iou = p.iou(&b).max(t.bbox().iou(&b));
                if iou >= self.config.min_iou && self.pairs.push((iou, ti as u8, di as u8)).is_err() {
                    // More candidate pairs than room: keep the best ones found so far.
                    if let Some(worst) = self.pairs.iter_mut().min_by(|a, b| a.0.total_cmp(&b.0)) {
                        if worst.0 < iou {
                            *worst = (iou, ti as u8, di as u8);
                        }
                    }
                }
            }
        }
        self.pairs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        for k in 0..self.pairs.len() {
            let (_, ti, di) = self.pairs[k];
            let (ti, di) = (ti as usize, di as usize);
            if taken[di] || self.tracks[ti].matched {
                continue;
            }
            taken[di] = true;
            let Some(b) = detections[di].bbox else { continue };
            let t = &mut self.tracks[ti];
            let dt = now_ms.saturating_sub(t.last_ms) as f32 / 1000.0;
            let p = t.predicted(now_ms);
            let (pcx, pcy) = ((p.x0 + p.x1) / 2.0, (p.y0 + p.y1) / 2.0);
            let (w, h) = (b.x1 - b.x0, b.y1 - b.y0);
            let (zx, zy) = (b.x0 + w / 2.0, b.y0 + h / 2.0);
            let (rx, ry) = (zx - pcx, zy - pcy);
            if rx.abs() > MANOEUVRE * t.w || ry.abs() > MANOEUVRE * t.h {
                // The prediction missed by half the object's size: it stopped, turned or
                // started. Its place is the box seen, its velocity the move since the last one.
                let (ox, oy) = (t.cx, t.cy);
                t.cx = zx;
                t.cy = zy;
                if dt > 0.0 {
                    t.vx = (zx - ox) / dt;
                    t.vy = (zy - oy) / dt;
                }
            } else {
                t.cx = pcx + ALPHA * rx;
                t.cy = pcy + ALPHA * ry;
                if dt > 0.0 {
                    t.vx += BETA * rx / dt;
                    t.vy += BETA * ry / dt;
                }
            }
            t.w += SIZE_GAIN * (w - t.w);
            t.h += SIZE_GAIN * (h - t.h);
            t.hits = t.hits.saturating_add(1);
            t.misses = 0;
            t.last_ms = now_ms;
            t.matched = true;
            t.det = di as u8;
            t.best = t.best.max(detections[di].score);
        }
    }
}

// The tests print figures and collect results on the heap: host builds (`--features host`).
#[cfg(all(test, feature = "host"))]
mod tests {
    use super::*;

    fn det(class: u16, score: f32, cx: f32, cy: f32, size: f32) -> Detection {
        let h = size / 2.0;
        Detection { class, score, bbox: Some(BBox { x0: cx - h, y0: cy - h, x1: cx + h, y1: cy + h }) }
    }

    struct Run {
        tracker: Tracker,
        tags: Vec<TrackTag, MAX_DETECTIONS>,
        events: Vec<TrackEvent, MAX_TRACK_EVENTS>,
    }

    impl Run {
        fn new(config: TrackConfig) -> Self {
            Run { tracker: Tracker::new(config), tags: Vec::new(), events: Vec::new() }
        }
        fn frame(&mut self, ms: u64, dets: &[Detection]) -> std::vec::Vec<Option<u32>> {
            self.tracker.update(ms, dets, 0.5, &mut self.tags, &mut self.events);
            self.tags.iter().map(|t| t.id).collect()
        }
    }

    /// A deterministic xorshift: uniform in [0, 1).
    struct Rng(u32);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            (self.0 >> 8) as f32 / (1u32 << 24) as f32
        }
    }

    #[test]
    fn a_track_is_confirmed_after_three_frames_and_keeps_its_id_while_it_moves() {
        let mut r = Run::new(TrackConfig::default());
        assert_eq!(r.frame(0, &[det(0, 0.9, 100.0, 100.0, 40.0)]), [None]);
        assert_eq!(r.frame(100, &[det(0, 0.9, 105.0, 100.0, 40.0)]), [None]);
        assert_eq!(r.frame(200, &[det(0, 0.9, 110.0, 100.0, 40.0)]), [Some(1)]);
        for k in 3..50u64 {
            assert_eq!(r.frame(k * 100, &[det(0, 0.9, 100.0 + 5.0 * k as f32, 100.0, 40.0)]), [Some(1)], "frame {k}");
        }
        assert_eq!(r.events.iter().filter(|e| e.kind == TrackEventKind::Confirmed).count(), 1);
    }

    #[test]
    fn a_one_frame_false_positive_never_gets_an_id_and_ids_are_not_reused() {
        let mut r = Run::new(TrackConfig::default());
        r.frame(0, &[det(0, 0.9, 300.0, 300.0, 30.0)]);
        for k in 1..5u64 {
            r.frame(k * 100, &[]);
        }
        assert!(r.events.is_empty(), "{:?}", r.events);
        // An object comes, goes (lost after 2 s), and another comes: ids 1 then 2.
        for k in 5..10u64 {
            r.frame(k * 100, &[det(0, 0.9, 100.0, 100.0, 30.0)]);
        }
        for k in 10..40u64 {
            r.frame(k * 100, &[]);
        }
        let mut last = std::vec::Vec::new();
        for k in 40..45u64 {
            last = r.frame(k * 100, &[det(0, 0.9, 100.0, 100.0, 30.0)]);
        }
        assert_eq!(last, [Some(2)]);
        let kinds: std::vec::Vec<_> = r.events.iter().map(|e| (e.id, e.kind)).collect();
        assert_eq!(kinds, [(1, TrackEventKind::Confirmed), (1, TrackEventKind::Lost), (2, TrackEventKind::Confirmed)]);
    }

    #[test]
    fn a_short_occlusion_keeps_the_id_and_a_weak_detection_extends_a_track() {
        let mut r = Run::new(TrackConfig::default());
        let x = |k: u64| 50.0 + 8.0 * k as f32;
        for k in 0..10u64 {
            r.frame(k * 100, &[det(0, 0.9, x(k), 200.0, 40.0)]);
        }
        // Hidden for 0.8 s, then seen where its motion said; then half hidden, score 0.3.
        for k in 10..18u64 {
            r.frame(k * 100, &[]);
        }
        assert_eq!(r.frame(1800, &[det(0, 0.9, x(18), 200.0, 40.0)]), [Some(1)]);
        assert_eq!(r.frame(1900, &[det(0, 0.3, x(19), 200.0, 40.0)]), [Some(1)]);
        // A weak detection never starts a track.
        let mut r = Run::new(TrackConfig::default());
        for k in 0..10u64 {
            assert_eq!(r.frame(k * 100, &[det(0, 0.3, 100.0, 100.0, 40.0)]), [None]);
        }
    }

    #[test]
    fn an_object_that_stops_is_marked_stationary_and_moving_again_when_it_leaves() {
        let config = TrackConfig { stationary_ms: 1000, ..TrackConfig::default() };
        let mut r = Run::new(config);
        for k in 0..50u64 {
            let x = if k < 10 {
                100.0 + 10.0 * k as f32
            } else if k < 40 {
                190.0
            } else {
                190.0 + 10.0 * (k - 39) as f32
            };
            r.frame(k * 100, &[det(2, 0.9, x, 100.0, 40.0)]);
        }
        let kinds: std::vec::Vec<_> = r.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [TrackEventKind::Confirmed, TrackEventKind::Stationary, TrackEventKind::Moving]);
    }

    #[test]
    fn an_object_that_turns_back_at_once_keeps_its_id() {
        // 20 px a frame right, then 20 px a frame left: the prediction is 40 px off (no overlap
        // with a 40 px box), the last box seen 20 px.
        let mut r = Run::new(TrackConfig::default());
        for k in 0..30u64 {
            let x = if k < 15 { 100.0 + 20.0 * k as f32 } else { 100.0 + 20.0 * (28 - k as i64) as f32 };
            let tags = r.frame(k * 100, &[det(0, 0.9, x, 100.0, 40.0)]);
            if k >= 2 {
                assert_eq!(tags, [Some(1)], "frame {k}");
            }
        }
        assert_eq!(r.tracker.next_id, 2, "one track only");
    }

    #[test]
    fn behind_a_motion_gate_one_missed_refresh_does_not_end_a_parked_car() {
        // The model sees the still scene once every 10 s; the detector misses the car once.
        let mut r = Run::new(TrackConfig::default());
        for k in 0..3u64 {
            r.frame(k * 100, &[det(0, 0.9, 200.0, 200.0, 60.0)]);
        }
        r.frame(10_200, &[]);
        assert_eq!(r.frame(20_200, &[det(0, 0.9, 200.0, 200.0, 60.0)]), [Some(1)]);
        // Three refreshes in a row without it: gone.
        for k in 3..6u64 {
            r.frame(k * 10_000 + 200, &[]);
        }
        let kinds: std::vec::Vec<_> = r.events.iter().map(|e| (e.id, e.kind)).collect();
        assert_eq!(kinds, [(1, TrackEventKind::Confirmed), (1, TrackEventKind::Stationary), (1, TrackEventKind::Lost)]);
    }

    #[test]
    fn classes_never_share_a_track() {
        let mut r = Run::new(TrackConfig::default());
        for k in 0..5u64 {
            let tags = r.frame(k * 100, &[det(0, 0.9, 100.0, 100.0, 40.0), det(1, 0.9, 102.0, 100.0, 40.0)]);
            if k >= 2 {
                assert_eq!(tags, [Some(1), Some(2)]);
            }
        }
    }

    /// Tracker quality on a synthetic sequence with ground truth: objects crossing the frame on
    /// straight lines at different speeds, detections jittered by ±3 px, 10 % of them missed,
    /// and one false positive every other frame. CLEAR-MOT counts: misses, false positives, id
    /// switches; MOTA = 1 - (misses + false positives + switches) / ground-truth boxes.
    #[test]
    fn tracking_quality_on_a_synthetic_sequence_with_ground_truth() {
        let mut rng = Rng(0x1234_5678);
        // (start x, start y, vx, vy) in px per frame at 10 fps; boxes 48 px.
        let objects =
            [(0.0, 100.0, 6.0, 0.0), (600.0, 300.0, -5.0, 0.0), (300.0, 0.0, 0.0, 4.0), (0.0, 450.0, 4.0, -1.0)];
        let mut r = Run::new(TrackConfig::default());
        let (mut gt, mut tracked, mut false_pos, mut switches) = (0u32, 0u32, 0u32, 0u32);
        let mut assigned: [Option<u32>; 4] = [None; 4];
        for k in 0..120u32 {
            let mut dets: std::vec::Vec<Detection> = std::vec::Vec::new();
            let mut truth: std::vec::Vec<Option<usize>> = std::vec::Vec::new();
            for (o, &(x, y, vx, vy)) in objects.iter().enumerate() {
                let (cx, cy) = (x + vx * k as f32, y + vy * k as f32);
                if !(0.0..=640.0).contains(&cx) || !(0.0..=480.0).contains(&cy) {
                    continue;
                }
                gt += 1;
                if rng.next() < 0.1 {
                    continue; // missed by the detector
                }
                let j = |rng: &mut Rng| (rng.next() - 0.5) * 6.0;
                dets.push(det(0, 0.6 + 0.4 * rng.next(), cx + j(&mut rng), cy + j(&mut rng), 48.0));
                truth.push(Some(o));
            }
            if k % 2 == 0 {
                // Somewhere no object is (a false positive on top of a missed object is the
                // object, for a tracker as for a person).
                let (fx, fy) = loop {
                    let (fx, fy) = (640.0 * rng.next(), 480.0 * rng.next());
                    let near = objects.iter().any(|&(x, y, vx, vy)| {
                        (x + vx * k as f32 - fx).abs() < 60.0 && (y + vy * k as f32 - fy).abs() < 60.0
                    });
                    if !near {
                        break (fx, fy);
                    }
                };
                dets.push(det(0, 0.7, fx, fy, 40.0));
                truth.push(None);
            }
            let tags = r.frame(k as u64 * 100, &dets);
            for (tag, t) in tags.iter().zip(&truth) {
                match (t, tag) {
                    (Some(o), Some(id)) => {
                        tracked += 1;
                        if assigned[*o].is_some_and(|a| a != *id) {
                            switches += 1;
                        }
                        assigned[*o] = Some(*id);
                    }
                    (None, Some(_)) => false_pos += 1,
                    _ => {}
                }
            }
        }
        // Misses: boxes without their object's id (the detector's own 10 % and the frames before
        // confirmation).
        let misses = gt - tracked;
        let mota = 1.0 - (misses + false_pos + switches) as f32 / gt as f32;
        std::eprintln!(
            "tracking: {gt} ground-truth boxes, {misses} missed, {false_pos} false positives, {switches} id switches, MOTA {mota:.3}, ids given {}",
            r.tracker.next_id - 1
        );
        assert_eq!(switches, 0);
        assert_eq!(false_pos, 0, "a one-frame false positive never gets an id");
        assert_eq!(r.tracker.next_id - 1, 4, "one id an object");
        assert!(mota > 0.8, "{mota}");
    }
}
