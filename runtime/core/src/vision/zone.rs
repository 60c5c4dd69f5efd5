//! Zones: polygons of the frame that tracked objects enter and leave.
//!
//! An object is in a zone when the bottom centre of its box (where it stands) is inside the
//! zone's polygon, whose corners are fractions of the frame's width and height (so a zone
//! survives a change of resolution). Against flicker at the border, the position must disagree
//! with the object's state for `min_frames` frames the model saw in a row before the object
//! enters or leaves; an object whose track is lost leaves at once. A zone may take only some
//! classes. Counts per class are the objects inside now.
//!
//! Zones follow the tracker's confirmed ids ([`super::track`]): an untracked detection never
//! enters a zone. Fixed capacity ([`MAX_ZONES`], one occupant slot per track), no allocation.

use super::region::Region;
use super::track::{TrackEvent, TrackEventKind, TrackTag, MAX_TRACKS};
use crate::error::Error;
use crate::event::Detection;
use heapless::Vec;

/// Most zones of one pipeline.
pub const MAX_ZONES: usize = 16;
/// Most classes one zone may be restricted to.
pub const MAX_ZONE_CLASSES: usize = 16;
/// How far inside the frame's right and bottom edges a foot point on them is moved (fraction).
const EDGE: f32 = 1e-4;
/// Most zone events of one frame (every tracked object entering or leaving every zone at once).
pub const MAX_ZONE_EVENTS: usize = MAX_ZONES * MAX_TRACKS;

/// One zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// Where it is, in fractions of the frame.
    pub region: Region,
    /// The classes it counts; empty: every class.
    pub classes: Vec<u16, MAX_ZONE_CLASSES>,
    /// Frames in a row (that the model saw) an object must be inside to enter, or outside to
    /// leave; at least 1.
    pub min_frames: u16,
}

impl Zone {
    fn takes(&self, class: u16) -> bool {
        self.classes.is_empty() || self.classes.contains(&class)
    }
}

/// An object entering or leaving a zone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZoneEvent {
    /// The zone's index, in the order they were added.
    pub zone: u8,
    /// The object's track id.
    pub track: u32,
    /// Its class.
    pub class: u16,
    /// Enter or leave.
    pub kind: ZoneEventKind,
    /// The detection's score on this frame (the last one seen, for a lost object).
    pub score: f32,
}

/// Whether an object entered or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneEventKind {
    /// Inside for `min_frames` frames.
    Enter,
    /// Outside for `min_frames` frames, or its track was lost.
    Leave,
}

impl ZoneEventKind {
    /// The name messages use (`enter`, `leave`).
    pub const fn name(self) -> &'static str {
        match self {
            ZoneEventKind::Enter => "enter",
            ZoneEventKind::Leave => "leave",
        }
    }
}

/// An object a zone follows: inside, or on its way in (a streak of frames inside).
#[derive(Debug, Clone, Copy)]
struct Occupant {
    track: u32,
    class: u16,
    inside: bool,
    /// Frames in a row whose position disagrees with `inside`.
    streak: u16,
    score: f32,
}

/// The zones of one pipeline and who is in them.
#[derive(Debug, Default)]
pub struct Zones {
    zones: Vec<Zone, MAX_ZONES>,
    occupants: Vec<Vec<Occupant, MAX_TRACKS>, MAX_ZONES>,
}

impl Zones {
    /// No zones.
    pub fn new() -> Self {
        Zones::default()
    }

    /// Adds a zone (its index is the number of zones before it); an error when [`MAX_ZONES`] are
    /// there.
    pub fn add(&mut self, mut zone: Zone) -> Result<(), Error> {
        let full = Error::CapacityExceeded { needed: self.zones.len() + 1, capacity: MAX_ZONES };
        zone.min_frames = zone.min_frames.max(1);
        self.zones.push(zone).map_err(|_| full)?;
        // Cannot fail: both vectors have the same capacity and length.
        let _ = self.occupants.push(Vec::new());
        Ok(())
    }

    /// The zones, in index order.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// Objects of `class` in zone `zone` now.
    pub fn count(&self, zone: usize, class: u16) -> usize {
        self.occupants.get(zone).map_or(0, |o| o.iter().filter(|o| o.inside && o.class == class).count())
    }

    /// One frame the model saw, `width` × `height` pixels (the boxes' frame): `detections` with
    /// their `tags` (same order) and the tracker's `track_events` of this frame. Appends who
    /// entered and left (leaves of lost tracks first).
    pub fn update(
        &mut self,
        width: f32,
        height: f32,
        detections: &[Detection],
        tags: &[TrackTag],
        track_events: &[TrackEvent],
        out: &mut Vec<ZoneEvent, MAX_ZONE_EVENTS>,
    ) {
        out.clear();
        for (z, occupants) in self.occupants.iter_mut().enumerate() {
            for e in track_events.iter().filter(|e| e.kind == TrackEventKind::Lost) {
                if let Some(k) = occupants.iter().position(|o| o.track == e.id) {
                    let o = occupants.swap_remove(k);
                    if o.inside {
                        let _ = out.push(ZoneEvent {
                            zone: z as u8,
                            track: o.track,
                            class: o.class,
                            kind: ZoneEventKind::Leave,
                            score: o.score,
                        });
                    }
                }
            }
        }
        if !(width > 0.0 && height > 0.0) {
            return;
        }
        for (d, tag) in detections.iter().zip(tags) {
            let (Some(track), Some(b)) = (tag.id, d.bbox) else { continue };
            // Where the object stands: the bottom centre of its box. Boxes are clamped to the
            // frame, so an object cut by its bottom edge stands at 1.0, on the edge of every
            // polygon reaching it: a hair inside counts it in.
            let x = ((b.x0 + b.x1) / 2.0 / width).clamp(0.0, 1.0 - EDGE);
            let y = (b.y1 / height).clamp(0.0, 1.0 - EDGE);
            for (z, (zone, occupants)) in self.zones.iter().zip(self.occupants.iter_mut()).enumerate() {
                if !zone.takes(d.class) {
                    continue;
                }
                let now = zone.region.contains(x, y);
                let k = match occupants.iter().position(|o| o.track == track) {
                    Some(k) => k,
                    None if now => {
                        let o = Occupant { track, class: d.class, inside: false, streak: 0, score: d.score };
                        // Cannot fail: one slot per track, and tracks are at most MAX_TRACKS.
                        if occupants.push(o).is_err() {
                            continue;
                        }
                        occupants.len() - 1
                    }
                    None => continue,
                };
                let o = &mut occupants[k];
                o.score = d.score;
                if now == o.inside {
                    o.streak = 0;
                    continue;
                }
                o.streak += 1;
                if o.streak < zone.min_frames {
                    continue;
                }
                o.inside = now;
                o.streak = 0;
                let kind = if now { ZoneEventKind::Enter } else { ZoneEventKind::Leave };
                let _ = out.push(ZoneEvent { zone: z as u8, track, class: o.class, kind, score: d.score });
                if !now {
                    occupants.swap_remove(k);
                }
            }
        }
        // Objects on their way in that went out again before entering are forgotten.
        for occupants in self.occupants.iter_mut() {
            occupants.retain(|o| o.inside || o.streak > 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::BBox;

    /// A tracked box of class `class` standing at (x, y) in a 100 × 100 frame.
    fn at(class: u16, x: f32, y: f32) -> Detection {
        Detection { class, score: 0.8, bbox: Some(BBox { x0: x - 5.0, y0: y - 20.0, x1: x + 5.0, y1: y }) }
    }

    fn tag(id: u32) -> TrackTag {
        TrackTag { id: Some(id), stationary: false }
    }

    /// The left half of the frame.
    fn left_half(min_frames: u16, classes: &[u16]) -> Zone {
        Zone {
            region: Region::new(&[(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]).unwrap(),
            classes: Vec::from_slice(classes).unwrap(),
            min_frames,
        }
    }

    fn kinds(out: &Vec<ZoneEvent, MAX_ZONE_EVENTS>) -> heapless::Vec<(u8, u32, ZoneEventKind), 8> {
        out.iter().map(|e| (e.zone, e.track, e.kind)).collect()
    }

    #[test]
    fn an_object_enters_after_min_frames_inside_and_leaves_after_min_frames_outside() {
        let mut zones = Zones::new();
        zones.add(left_half(2, &[])).unwrap();
        let mut out = Vec::new();
        let mut step = |x: f32| {
            zones.update(100.0, 100.0, &[at(0, x, 90.0)], &[tag(7)], &[], &mut out);
            (kinds(&out), zones.count(0, 0))
        };
        assert_eq!(step(80.0), (Vec::new(), 0));
        assert_eq!(step(40.0), (Vec::new(), 0), "one frame inside is not enough");
        assert_eq!(step(60.0), (Vec::new(), 0), "and the streak restarts when it steps out");
        assert_eq!(step(40.0), (Vec::new(), 0));
        let entered = step(30.0);
        assert_eq!(entered.0, [(0, 7, ZoneEventKind::Enter)]);
        assert_eq!(entered.1, 1);
        assert_eq!(step(55.0), (Vec::new(), 1), "one frame over the border: still inside");
        assert_eq!(step(45.0), (Vec::new(), 1));
        assert_eq!(step(55.0), (Vec::new(), 1));
        assert_eq!(step(70.0), ([(0, 7, ZoneEventKind::Leave)].into_iter().collect(), 0));
        assert_eq!(zones.count(0, 1), 0, "counts are per class");
    }

    #[test]
    fn where_an_object_stands_counts_not_its_box_and_only_the_zone_s_classes() {
        let mut zones = Zones::new();
        zones.add(left_half(1, &[2])).unwrap();
        let mut out = Vec::new();
        // A wide box whose bottom centre is in the right half: outside, though it covers the zone.
        let wide = Detection { class: 2, score: 0.9, bbox: Some(BBox { x0: 10.0, y0: 10.0, x1: 95.0, y1: 50.0 }) };
        zones.update(100.0, 100.0, &[wide], &[tag(1)], &[], &mut out);
        assert!(out.is_empty());
        // A class the zone does not take, standing inside; an untracked box inside.
        let untracked = TrackTag { id: None, stationary: false };
        zones.update(100.0, 100.0, &[at(1, 20.0, 50.0), at(2, 20.0, 50.0)], &[tag(2), untracked], &[], &mut out);
        assert!(out.is_empty());
        zones.update(100.0, 100.0, &[at(2, 20.0, 50.0)], &[tag(3)], &[], &mut out);
        assert_eq!(kinds(&out), [(0, 3, ZoneEventKind::Enter)]);
    }

    #[test]
    fn a_lost_object_leaves_at_once_and_zones_are_independent() {
        let mut zones = Zones::new();
        zones.add(left_half(1, &[])).unwrap();
        zones
            .add(Zone {
                region: Region::new(&[(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]).unwrap(),
                classes: Vec::new(),
                min_frames: 1,
            })
            .unwrap();
        let mut out = Vec::new();
        // Standing in both (bottom left), and another in the bottom half only.
        zones.update(100.0, 100.0, &[at(0, 20.0, 90.0), at(0, 80.0, 90.0)], &[tag(1), tag(2)], &[], &mut out);
        assert_eq!(
            kinds(&out),
            [(0, 1, ZoneEventKind::Enter), (1, 1, ZoneEventKind::Enter), (1, 2, ZoneEventKind::Enter)]
        );
        assert_eq!((zones.count(0, 0), zones.count(1, 0)), (1, 2));
        // Track 1 unseen (coasting): nothing changes; then lost.
        zones.update(100.0, 100.0, &[at(0, 80.0, 90.0)], &[tag(2)], &[], &mut out);
        assert!(out.is_empty());
        let lost = TrackEvent {
            id: 1,
            class: 0,
            kind: TrackEventKind::Lost,
            score: 0.8,
            bbox: BBox { x0: 0.0, y0: 0.0, x1: 1.0, y1: 1.0 },
        };
        zones.update(100.0, 100.0, &[], &[], &[lost], &mut out);
        assert_eq!(kinds(&out), [(0, 1, ZoneEventKind::Leave), (1, 1, ZoneEventKind::Leave)]);
        assert_eq!((zones.count(0, 0), zones.count(1, 0)), (0, 1));
    }

    #[test]
    fn an_object_cut_by_the_bottom_of_the_frame_stands_in_a_zone_reaching_it() {
        let mut zones = Zones::new();
        zones.add(left_half(1, &[])).unwrap();
        let mut out = Vec::new();
        // The box clamped to the frame: its bottom is the frame's.
        zones.update(100.0, 100.0, &[at(0, 20.0, 100.0)], &[tag(5)], &[], &mut out);
        assert_eq!(kinds(&out), [(0, 5, ZoneEventKind::Enter)]);
    }

    #[test]
    fn zones_past_capacity_are_refused() {
        let mut zones = Zones::new();
        for _ in 0..MAX_ZONES {
            zones.add(left_half(1, &[])).unwrap();
        }
        assert!(zones.add(left_half(1, &[])).is_err());
        assert_eq!(zones.zones().len(), MAX_ZONES);
    }
}
