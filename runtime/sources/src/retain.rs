//! Keeps copies of the last few frames a source delivered, by frame index, so a sink can picture
//! the very frame a result came from (a snapshot with its boxes) even though the source has moved
//! on: with preprocessing overlapping inference, the frame being inferred is not the newest. The
//! copies go into buffers allocated once; frames of one size reuse them without allocating.

use super::{Frame, FrameSource};
use lepton_core::error::Result;
use lepton_core::vision::{ImageView, PixelFormat};
use std::sync::{Arc, Mutex};

/// Frames kept: one being preprocessed, one waiting, one in the engine, and one spare.
pub const KEPT: usize = 4;

struct Copy {
    index: Option<u64>,
    data: Vec<u8>,
    width: usize,
    height: usize,
    stride: usize,
    format: PixelFormat,
}

/// The last [`KEPT`] frames, shared between the source side and a sink.
#[derive(Clone)]
pub struct FrameRing(Arc<Mutex<Ring>>);

/// The copies, written round-robin (frame indices of live sources have gaps where frames were
/// dropped, so they do not pick the slot).
struct Ring {
    copies: Vec<Copy>,
    next: usize,
}

impl Default for FrameRing {
    fn default() -> Self {
        let copies = (0..KEPT)
            .map(|_| Copy { index: None, data: vec![], width: 0, height: 0, stride: 0, format: PixelFormat::Rgb8 })
            .collect();
        FrameRing(Arc::new(Mutex::new(Ring { copies, next: 0 })))
    }
}

impl FrameRing {
    fn keep(&self, frame: &Frame<'_>) {
        let mut ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let slot = ring.next;
        ring.next = (slot + 1) % KEPT;
        let c = &mut ring.copies[slot];
        let img = &frame.image;
        c.data.clear();
        c.data.extend_from_slice(img.data());
        (c.index, c.width, c.height, c.stride, c.format) =
            (Some(frame.meta.frame), img.width(), img.height(), img.stride(), img.format());
    }

    /// Runs `f` on frame `index` if it is still kept.
    pub fn with<T>(&self, index: u64, f: impl FnOnce(&ImageView<'_>) -> T) -> Option<T> {
        let ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let c = ring.copies.iter().find(|c| c.index == Some(index))?;
        let view = ImageView::new(&c.data, c.width, c.height, c.stride, c.format).ok()?;
        Some(f(&view))
    }
}

/// A source whose frames are also kept in a [`FrameRing`] (when there is one: without, frames
/// pass through untouched).
pub struct Retained<S> {
    inner: S,
    ring: Option<FrameRing>,
}

impl<S: FrameSource> Retained<S> {
    /// Wraps `inner`; the ring is shared with whoever reads it.
    pub fn new(inner: S, ring: Option<FrameRing>) -> Self {
        Retained { inner, ring }
    }
}

impl<S: FrameSource> FrameSource for Retained<S> {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>> {
        let frame = self.inner.next_frame()?;
        if let (Some(f), Some(ring)) = (&frame, &self.ring) {
            ring.keep(f);
        }
        Ok(frame)
    }
    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }
    fn outages(&self) -> u64 {
        self.inner.outages()
    }
    fn own_timeline(&self) -> bool {
        self.inner.own_timeline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lepton_core::event::FrameMeta;

    #[test]
    fn the_last_frames_are_kept_by_index() {
        let ring = FrameRing::default();
        for k in [0u8, 1, 2, 5, 9, 13] {
            let data = [k; 4];
            let image = ImageView::packed(&data, 2, 2, PixelFormat::Gray8).unwrap();
            ring.keep(&Frame { image, meta: FrameMeta { frame: u64::from(k), timestamp_ms: 0 }, name: None });
        }
        assert_eq!(ring.with(13, |v| v.data()[0]), Some(13));
        assert_eq!(ring.with(2, |v| v.data()[0]), Some(2), "the last four, gaps or not");
        assert_eq!(ring.with(1, |v| v.data()[0]), None, "replaced");
    }
}
