//! The live view: the newest frame a vision pipeline processed, with its zones and masks, its
//! boxes, labels and track ids drawn, pictured only when the page asks (JPEG, cached until a newer frame arrives), and the last
//! detections of every pipeline for the page's list.

use crate::snapshot::{self, Style};
use lepton_runtime::draw::Outline;
use lepton_runtime::source::retain::FrameRing;
use lepton_runtime::Detection;
use std::sync::{Arc, Mutex};

/// The newest frame a pipeline processed and what it found.
#[derive(Debug, Default)]
pub struct LastFrame {
    /// Index and time (ms since the Unix epoch) of the newest frame processed.
    pub frame: Option<(u64, u64)>,
    /// Its detections at or above the threshold.
    pub detections: heapless::Vec<Detection, 32>,
    /// Each detection's track id (detectors with tracking, once confirmed).
    pub tracks: heapless::Vec<Option<u32>, 32>,
    /// Time of the newest frame that had detections, and those detections.
    pub seen: Option<(u64, heapless::Vec<Detection, 32>)>,
}

impl LastFrame {
    /// Records a processed frame and each detection's track id (no allocation: the vectors are
    /// fixed-size).
    pub fn update(&mut self, index: u64, ts_ms: u64, kept: &[Detection], tracks: &[Option<u32>]) {
        self.frame = Some((index, ts_ms));
        self.detections.clear();
        self.tracks.clear();
        for (k, d) in kept.iter().take(self.detections.capacity()).enumerate() {
            let _ = self.detections.push(*d);
            let _ = self.tracks.push(tracks.get(k).copied().flatten());
        }
        if !kept.is_empty() {
            self.seen = Some((ts_ms, self.detections.clone()));
        }
    }
}

/// A pipeline's shared [`LastFrame`], written by its sink.
pub type SharedLast = Arc<Mutex<LastFrame>>;

/// How the live view is pictured: boxes drawn, at most 960 pixels wide.
const STYLE: Style = Style { annotate: true, quality: 80, max_width: 960 };

/// A vision pipeline's live view: its frame ring (kept by the source side) and newest frame.
pub struct Live {
    ring: FrameRing,
    last: SharedLast,
    labels: Vec<String>,
    overlay: Vec<Outline>,
    /// The picture of the last frame pictured, by frame index.
    cache: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
    rgb: Mutex<Vec<u8>>,
}

impl Live {
    /// A live view over `ring` and `last`, with the model's labels; `overlay` (zones, masks) is
    /// drawn under the boxes.
    pub fn new(ring: FrameRing, last: SharedLast, labels: Vec<String>, overlay: Vec<Outline>) -> Self {
        Live { ring, last, labels, overlay, cache: Mutex::new(None), rgb: Mutex::new(vec![]) }
    }

    /// The newest processed frame with its detections drawn, as JPEG; `None` before the first.
    pub fn jpeg(&self) -> Option<Arc<Vec<u8>>> {
        // The ring keeps a few frames; a frame replaced between reading its index and picturing
        // it is retried with the newer one.
        for _ in 0..3 {
            let (index, dets, tracks) = {
                let l = self.last.lock().unwrap_or_else(|p| p.into_inner());
                (l.frame?.0, l.detections.clone(), l.tracks.clone())
            };
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((i, jpeg)) = cache.as_ref() {
                if *i == index {
                    return Some(Arc::clone(jpeg));
                }
            }
            let labels = &self.labels;
            // `label #track` for a tracked object.
            let label = |k: usize, c: u16| {
                let name = labels.get(c as usize).cloned().unwrap_or_else(|| c.to_string());
                match tracks.get(k).copied().flatten() {
                    Some(id) => format!("{name} #{id}"),
                    None => name,
                }
            };
            let mut rgb = self.rgb.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(pic) = snapshot::render(&self.ring, index, &dets, label, &self.overlay, STYLE, &mut rgb) {
                let jpeg = Arc::new(pic.jpeg);
                *cache = Some((index, Arc::clone(&jpeg)));
                return Some(jpeg);
            }
        }
        None
    }
}
