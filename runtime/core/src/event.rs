//! What the runtime tells the world: detections, debounced events and frame metadata. All types are
//! plain data with serde derives; [`encode`] writes them with postcard into a caller's buffer, with
//! no heap, so a microcontroller sends the same bytes a Linux board does.

use crate::error::Error;
use serde::{Deserialize, Serialize};

/// Most detections one frame can report (fixed capacity of [`Detections`]).
pub const MAX_DETECTIONS: usize = 32;

/// Detections of one frame, in a fixed-capacity vector.
pub type Detections = heapless::Vec<Detection, MAX_DETECTIONS>;

/// An axis-aligned box in pixels: `(x0, y0)` top-left, `(x1, y1)` bottom-right.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    /// Left edge.
    pub x0: f32,
    /// Top edge.
    pub y0: f32,
    /// Right edge.
    pub x1: f32,
    /// Bottom edge.
    pub y1: f32,
}

impl BBox {
    /// Area (0 for an empty or inverted box).
    pub fn area(&self) -> f32 {
        (self.x1 - self.x0).max(0.0) * (self.y1 - self.y0).max(0.0)
    }

    /// Intersection over union with `other`, in 0..=1.
    pub fn iou(&self, other: &BBox) -> f32 {
        let inter = BBox {
            x0: self.x0.max(other.x0),
            y0: self.y0.max(other.y0),
            x1: self.x1.min(other.x1),
            y1: self.y1.min(other.y1),
        }
        .area();
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }
}

/// One result of a model on one frame or audio window: a class with its score, and a box for detectors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Index into the model's labels.
    pub class: u16,
    /// Confidence in 0..=1.
    pub score: f32,
    /// Box in source-frame pixels (detectors only).
    pub bbox: Option<BBox>,
}

/// Where a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameMeta {
    /// Index of the frame (or audio window) in its source, from 0.
    pub frame: u64,
    /// Capture time in milliseconds (Unix time on Linux, uptime on a microcontroller).
    pub timestamp_ms: u64,
}

/// Whether a debounced event begins or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The class became present (a keyword was heard, speech started, an object appeared).
    Start,
    /// The class is no longer present.
    End,
}

impl EventKind {
    /// `start` or `end`, as messages spell it.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::End => "end",
        }
    }
}

/// A debounced change of presence of a class: what alerts and automations act on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Index into the model's labels.
    pub class: u16,
    /// Start or end.
    pub kind: EventKind,
    /// When it happened, in the same clock as [`FrameMeta::timestamp_ms`].
    pub timestamp_ms: u64,
    /// Score that triggered the change (peak score for an end).
    pub score: f32,
}

/// The detections of one processed frame, as sent over a constrained link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionMessage {
    /// Message counter per pipeline, from 0, without gaps.
    pub seq: u32,
    /// The frame the detections belong to.
    pub meta: FrameMeta,
    /// Inference latency in microseconds.
    pub latency_us: u32,
    /// The detections.
    pub detections: Detections,
    /// The sender's run: a number fixed when it started (random on Linux), so that `seq`, which
    /// starts at 0 again after a restart, and `run` together name one message. 0: not known
    /// (a sender from before runs). Last, so a decoder of the older layout reads the rest.
    pub run: u32,
}

/// A debounced event as sent, with the sender's run (see [`DetectionMessage::run`]). Its postcard
/// bytes are an [`Event`]'s followed by the run, so a decoder of a bare `Event` reads it too.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    /// The event.
    pub event: Event,
    /// The sender's run; 0: not known.
    pub run: u32,
}

/// A [`DetectionMessage`] as senders from before runs encoded it (no `run`).
#[derive(Deserialize)]
struct DetectionMessageWithoutRun {
    seq: u32,
    meta: FrameMeta,
    latency_us: u32,
    detections: Detections,
}

/// Decodes a postcard [`DetectionMessage`], or one of the older layout without `run` (then 0):
/// every byte must belong to the message.
pub fn decode_detection_message(bytes: &[u8]) -> Result<DetectionMessage, Error> {
    if let Ok((m, [])) = postcard::take_from_bytes::<DetectionMessage>(bytes) {
        return Ok(m);
    }
    match postcard::take_from_bytes::<DetectionMessageWithoutRun>(bytes) {
        Ok((m, [])) => Ok(DetectionMessage {
            seq: m.seq,
            meta: m.meta,
            latency_us: m.latency_us,
            detections: m.detections,
            run: 0,
        }),
        _ => Err(Error::Encoding),
    }
}

/// Decodes a postcard [`EventMessage`], or a bare [`Event`] (the older layout; run 0): every
/// byte must belong to the message.
pub fn decode_event_message(bytes: &[u8]) -> Result<EventMessage, Error> {
    if let Ok((m, [])) = postcard::take_from_bytes::<EventMessage>(bytes) {
        return Ok(m);
    }
    match postcard::take_from_bytes::<Event>(bytes) {
        Ok((event, [])) => Ok(EventMessage { event, run: 0 }),
        _ => Err(Error::Encoding),
    }
}

/// Encodes `value` with postcard into `buf`, returning the used prefix.
pub fn encode<'b, T: Serialize>(value: &T, buf: &'b mut [u8]) -> Result<&'b mut [u8], Error> {
    postcard::to_slice(value, buf).map_err(|_| Error::Encoding)
}

/// Encodes `value` as one frame for a byte stream (a serial line): postcard, COBS-encoded, ending
/// in a zero byte, so a reader that joins mid-stream finds the next frame at the next zero.
pub fn encode_frame<'b, T: Serialize>(value: &T, buf: &'b mut [u8]) -> Result<&'b mut [u8], Error> {
    postcard::to_slice_cobs(value, buf).map_err(|_| Error::Encoding)
}

/// Decodes one frame of [`encode_frame`] (with or without its closing zero), in place.
pub fn decode_frame<'a, T: Deserialize<'a>>(frame: &'a mut [u8]) -> Result<T, Error> {
    postcard::from_bytes_cobs(frame).map_err(|_| Error::Encoding)
}

/// Decodes a postcard-encoded value.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|_| Error::Encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_no_zero_inside_end_in_one_and_reject_garbage() {
        let e = Event { class: 3, kind: EventKind::End, timestamp_ms: 0x0100_0000_0000, score: 0.0 };
        let mut buf = [0u8; 32];
        let frame = encode_frame(&e, &mut buf).unwrap();
        let n = frame.len();
        assert_eq!(frame[n - 1], 0);
        assert!(frame[..n - 1].iter().all(|&b| b != 0), "{frame:?}");
        assert_eq!(decode_frame::<Event>(&mut frame[..n - 1]).unwrap(), e);
        // Too small a buffer, a cut frame, bytes that are not a frame: errors, no panic.
        assert!(encode_frame(&e, &mut [0u8; 4]).is_err());
        let mut buf = [0u8; 32];
        let frame = encode_frame(&e, &mut buf).unwrap();
        assert!(decode_frame::<Event>(&mut frame[..3]).is_err());
        for len in 0..12 {
            let mut junk: [u8; 12] = core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(len as u8) | 1);
            let _ = decode_frame::<Event>(&mut junk[..len]);
        }
    }

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = BBox { x0: 0.0, y0: 0.0, x1: 2.0, y1: 2.0 };
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&BBox { x0: 5.0, y0: 5.0, x1: 6.0, y1: 6.0 }), 0.0);
        let b = BBox { x0: 1.0, y0: 0.0, x1: 3.0, y1: 2.0 };
        assert!((a.iou(&b) - 2.0 / 6.0).abs() < 1e-6);
    }

    #[test]
    fn detection_message_round_trips_through_a_fixed_buffer() {
        let mut dets = Detections::new();
        dets.push(Detection { class: 3, score: 0.9, bbox: Some(BBox { x0: 1.0, y0: 2.0, x1: 3.0, y1: 4.0 }) }).unwrap();
        dets.push(Detection { class: 7, score: 0.6, bbox: None }).unwrap();
        let msg = DetectionMessage {
            seq: 41,
            meta: FrameMeta { frame: 12, timestamp_ms: 1_700_000_000_000 },
            latency_us: 1234,
            detections: dets,
            run: 0xDEAD_BEEF,
        };
        let mut buf = [0u8; 128];
        let bytes = encode(&msg, &mut buf).unwrap();
        assert!(bytes.len() < 64, "postcard keeps it compact: {} bytes", bytes.len());
        let back: DetectionMessage = decode(bytes).unwrap();
        assert_eq!(back, msg);
        let mut tiny = [0u8; 8];
        assert_eq!(encode(&msg, &mut tiny).unwrap_err(), Error::Encoding);
    }

    #[test]
    fn events_encode() {
        let e = Event { class: 2, kind: EventKind::Start, timestamp_ms: 5, score: 0.75 };
        let mut buf = [0u8; 32];
        let bytes = encode(&e, &mut buf).unwrap();
        assert_eq!(decode::<Event>(bytes).unwrap(), e);
    }

    #[test]
    fn messages_with_a_run_and_without_one_decode_and_older_decoders_read_the_new_layout() {
        let mut detections = Detections::new();
        detections.push(Detection { class: 3, score: 0.5, bbox: None }).unwrap();
        let meta = FrameMeta { frame: 9, timestamp_ms: 1_700_000_000_000 };
        let m = DetectionMessage { seq: 4, meta, latency_us: 10, detections: detections.clone(), run: 77 };
        let new = postcard::to_stdvec(&m).unwrap();
        assert_eq!(decode_detection_message(&new).unwrap(), m);
        // Before runs: the same fields without `run`.
        let old = postcard::to_stdvec(&(4u32, meta, 10u32, detections.clone())).unwrap();
        assert_eq!(&new[..old.len()], &old[..], "run comes last");
        assert_eq!(decode_detection_message(&old).unwrap(), DetectionMessage { run: 0, ..m.clone() });
        let mut longer = new.clone();
        longer.push(0);
        assert_eq!(decode_detection_message(&longer), Err(Error::Encoding), "no stray bytes");
        assert_eq!(decode_detection_message(&new[..old.len() - 1]), Err(Error::Encoding));

        let e = Event { class: 2, kind: EventKind::End, timestamp_ms: 5, score: 0.75 };
        let sent = postcard::to_stdvec(&EventMessage { event: e, run: 300 }).unwrap();
        assert_eq!(decode_event_message(&sent).unwrap(), EventMessage { event: e, run: 300 });
        assert_eq!(decode::<Event>(&sent).unwrap(), e, "a decoder of a bare Event reads it");
        let bare = postcard::to_stdvec(&e).unwrap();
        assert_eq!(decode_event_message(&bare).unwrap(), EventMessage { event: e, run: 0 });
    }
}
