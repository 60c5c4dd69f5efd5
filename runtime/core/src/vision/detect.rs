//! Detection postprocessing: decodes YOLO- and SSD-style outputs, keeps boxes above the score
//! threshold, applies class-aware non-maximum suppression and maps boxes back to source pixels.
//!
//! Supported layouts (batch dimension of 1 removed):
//! - YOLOv5: `[N, 5 + C]` rows of `box(4), objectness, class scores`; score = objectness × class score.
//! - YOLOv8: `[4 + C, N]` channel-major; score = class score.
//! - SSD: boxes `[N, 4]` and scores `[N, C]`, optionally with a background class.
//!
//! Candidates live in a fixed-capacity vector; when more boxes pass the threshold than it holds, the
//! lowest-scoring ones are dropped and counted in [`DecodeStats`].

use crate::error::Error;
use crate::event::{BBox, Detection};
use crate::vision::preprocess::Transform;
use serde::{Deserialize, Serialize};

/// Output layout family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectFormat {
    /// `[N, 5 + C]` with objectness.
    Yolov5,
    /// `[4 + C, N]` without objectness.
    Yolov8,
    /// Separate boxes `[N, 4]` and scores `[N, C]`.
    Ssd,
}

/// How the four box numbers are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxEncoding {
    /// Centre x, centre y, width, height.
    Cxcywh,
    /// Left, top, right, bottom.
    Xyxy,
    /// Top, left, bottom, right (TensorFlow SSD).
    Yxyx,
}

/// Decoder settings (from the manifest's `[detect]` table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectConfig {
    /// Box encoding.
    pub boxes: BoxEncoding,
    /// Coordinates are fractions of the input size (0..1) rather than input pixels.
    pub normalized: bool,
    /// Model input width in pixels (scales normalized boxes).
    pub input_width: f32,
    /// Model input height in pixels.
    pub input_height: f32,
    /// Boxes scoring below are discarded before NMS, in 0..=1.
    pub score_threshold: f32,
    /// Two boxes of the same class overlapping more than this are merged, in 0..=1.
    pub iou_threshold: f32,
    /// Suppress overlapping boxes whatever their classes (one object per place, e.g. meter digits).
    pub class_agnostic: bool,
    /// SSD background class, never reported.
    pub background_class: Option<u16>,
}

/// A model's raw detection output, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum RawDetections<'a> {
    /// YOLOv5 rows `[N, 5 + classes]`.
    Yolov5 {
        /// Row-major data.
        data: &'a [f32],
        /// Number of classes.
        classes: usize,
    },
    /// YOLOv8 channels `[4 + classes, N]`.
    Yolov8 {
        /// Channel-major data.
        data: &'a [f32],
        /// Number of classes.
        classes: usize,
    },
    /// SSD boxes and scores.
    Ssd {
        /// Boxes `[N, 4]`.
        boxes: &'a [f32],
        /// Scores `[N, classes]`.
        scores: &'a [f32],
        /// Number of classes (including background, if any).
        classes: usize,
    },
}

/// What decoding saw, so nothing is lost silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Boxes that passed the score threshold.
    pub candidates: usize,
    /// Candidates dropped because the candidate buffer was full (lowest scores go first).
    pub overflowed: usize,
    /// Detections dropped after NMS because the output vector was full.
    pub truncated: usize,
}

/// Decodes, thresholds and suppresses; `CAND` bounds the boxes considered for NMS.
#[derive(Debug)]
pub struct Decoder<const CAND: usize> {
    cfg: DetectConfig,
    candidates: heapless::Vec<Detection, CAND>,
}

impl<const CAND: usize> Decoder<CAND> {
    /// Changes the score threshold (evaluation lowers it to trace a precision–recall curve).
    pub fn set_score_threshold(&mut self, threshold: f32) -> Result<(), Error> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(Error::InvalidConfig("detect.score_threshold"));
        }
        self.cfg.score_threshold = threshold;
        Ok(())
    }

    /// A decoder for `cfg`; thresholds must lie in 0..=1.
    pub fn new(cfg: DetectConfig) -> Result<Self, Error> {
        if !(0.0..=1.0).contains(&cfg.score_threshold) {
            return Err(Error::InvalidConfig("detect.score_threshold"));
        }
        if !(0.0..=1.0).contains(&cfg.iou_threshold) {
            return Err(Error::InvalidConfig("detect.iou_threshold"));
        }
        if !(cfg.input_width > 0.0 && cfg.input_height > 0.0) {
            return Err(Error::InvalidConfig("input.size"));
        }
        Ok(Decoder { cfg, candidates: heapless::Vec::new() })
    }

    /// The settings.
    pub fn config(&self) -> &DetectConfig {
        &self.cfg
    }

    /// Decodes `raw` into `out` (best first), boxes mapped to the source frame by `transform`.
    pub fn decode<const N: usize>(
        &mut self,
        raw: RawDetections<'_>,
        transform: &Transform,
        out: &mut heapless::Vec<Detection, N>,
    ) -> Result<DecodeStats, Error> {
        self.candidates.clear();
        out.clear();
        let mut stats = DecodeStats::default();
        let mut min_index = 0usize;
        match raw {
            RawDetections::Yolov5 { data, classes } => {
                let width = 5 + classes;
                if classes == 0 || data.len() % width != 0 {
                    return Err(Error::BadShape);
                }
                for row in data.chunks_exact(width) {
                    let (class, best) = argmax(&row[5..]);
                    let score = row[4] * best;
                    self.offer(class, score, [row[0], row[1], row[2], row[3]], &mut stats, &mut min_index);
                }
            }
            RawDetections::Yolov8 { data, classes } => {
                let channels = 4 + classes;
                if classes == 0 || data.len() % channels != 0 {
                    return Err(Error::BadShape);
                }
                let n = data.len() / channels;
                for i in 0..n {
                    let (mut class, mut best) = (0usize, f32::NEG_INFINITY);
                    for c in 0..classes {
                        let s = data[(4 + c) * n + i];
                        if s > best {
                            (class, best) = (c, s);
                        }
                    }
                    let b = [data[i], data[n + i], data[2 * n + i], data[3 * n + i]];
                    self.offer(class, best, b, &mut stats, &mut min_index);
                }
            }
            RawDetections::Ssd { boxes, scores, classes } => {
                if classes == 0 || boxes.len() % 4 != 0 || scores.len() != boxes.len() / 4 * classes {
                    return Err(Error::BadShape);
                }
                let background = self.cfg.background_class.map(usize::from);
                for (b, s) in boxes.chunks_exact(4).zip(scores.chunks_exact(classes)) {
                    let (mut class, mut best) = (0usize, f32::NEG_INFINITY);
                    for (c, &v) in s.iter().enumerate() {
                        if Some(c) != background && v > best {
                            (class, best) = (c, v);
                        }
                    }
                    self.offer(class, best, [b[0], b[1], b[2], b[3]], &mut stats, &mut min_index);
                }
            }
        }
        self.candidates.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
        for cand in self.candidates.iter() {
            let (Some(cb), class) = (cand.bbox, cand.class) else {
                continue;
            };
            let suppressed = out.iter().any(|kept| {
                (self.cfg.class_agnostic || kept.class == class)
                    && kept.bbox.is_some_and(|kb| kb.iou(&cb) > self.cfg.iou_threshold)
            });
            if suppressed {
                continue;
            }
            // Suppression compares boxes in model pixels; they are mapped to the source once kept.
            if out.push(*cand).is_err() {
                stats.truncated += 1;
            }
        }
        for d in out.iter_mut() {
            d.bbox = d.bbox.map(|b| transform.to_source(b));
        }
        Ok(stats)
    }

    /// Considers one box: threshold, convert to model pixels, keep the best `CAND`.
    fn offer(&mut self, class: usize, score: f32, raw: [f32; 4], stats: &mut DecodeStats, min_index: &mut usize) {
        if score.is_nan() || score < self.cfg.score_threshold {
            return;
        }
        stats.candidates += 1;
        let det = Detection { class: class as u16, score, bbox: Some(self.to_model_pixels(raw)) };
        if !self.candidates.is_full() {
            // Cannot fail: not full.
            let _ = self.candidates.push(det);
            if self.candidates.len() == CAND {
                *min_index = lowest(&self.candidates);
            }
            return;
        }
        stats.overflowed += 1;
        if CAND > 0 && score > self.candidates[*min_index].score {
            self.candidates[*min_index] = det;
            *min_index = lowest(&self.candidates);
        }
    }

    fn to_model_pixels(&self, r: [f32; 4]) -> BBox {
        let b = match self.cfg.boxes {
            BoxEncoding::Cxcywh => {
                BBox { x0: r[0] - r[2] / 2.0, y0: r[1] - r[3] / 2.0, x1: r[0] + r[2] / 2.0, y1: r[1] + r[3] / 2.0 }
            }
            BoxEncoding::Xyxy => BBox { x0: r[0], y0: r[1], x1: r[2], y1: r[3] },
            BoxEncoding::Yxyx => BBox { x0: r[1], y0: r[0], x1: r[3], y1: r[2] },
        };
        if self.cfg.normalized {
            let (w, h) = (self.cfg.input_width, self.cfg.input_height);
            BBox { x0: b.x0 * w, y0: b.y0 * h, x1: b.x1 * w, y1: b.y1 * h }
        } else {
            b
        }
    }
}

fn argmax(s: &[f32]) -> (usize, f32) {
    s.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) })
}

fn lowest(c: &[Detection]) -> usize {
    c.iter().enumerate().min_by(|a, b| a.1.score.total_cmp(&b.1.score)).map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(boxes: BoxEncoding) -> DetectConfig {
        DetectConfig {
            boxes,
            normalized: false,
            input_width: 100.0,
            input_height: 100.0,
            score_threshold: 0.3,
            iou_threshold: 0.5,
            class_agnostic: false,
            background_class: None,
        }
    }

    #[test]
    fn yolov5_scores_by_objectness_and_suppresses_same_class_overlaps() {
        // Two overlapping boxes of class 1, one of class 0 at the same place, one below threshold.
        #[rustfmt::skip]
        let data = [
            50.0, 50.0, 20.0, 20.0, 0.9, 0.1, 0.9,
            51.0, 50.0, 20.0, 20.0, 0.8, 0.1, 0.9,
            50.0, 50.0, 20.0, 20.0, 0.9, 0.8, 0.2,
            10.0, 10.0, 4.0, 4.0, 0.2, 0.9, 0.1,
        ];
        let mut d: Decoder<16> = Decoder::new(cfg(BoxEncoding::Cxcywh)).unwrap();
        let mut out: heapless::Vec<Detection, 8> = heapless::Vec::new();
        let t = Transform::identity(100.0, 100.0);
        let stats = d.decode(RawDetections::Yolov5 { data: &data, classes: 2 }, &t, &mut out).unwrap();
        assert_eq!(stats.candidates, 3);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].class, 1);
        assert!((out[0].score - 0.81).abs() < 1e-6);
        assert_eq!(out[0].bbox.unwrap(), BBox { x0: 40.0, y0: 40.0, x1: 60.0, y1: 60.0 });
        assert_eq!(out[1].class, 0, "NMS is class-aware");

        // Class-agnostic: the class-0 box at the same place is suppressed by the better class-1 box.
        let mut d: Decoder<16> =
            Decoder::new(DetectConfig { class_agnostic: true, ..cfg(BoxEncoding::Cxcywh) }).unwrap();
        d.decode(RawDetections::Yolov5 { data: &data, classes: 2 }, &t, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class, 1);
    }

    #[test]
    fn suppression_happens_in_model_pixels_whatever_the_source_scale() {
        // Two overlapping boxes of one class on a frame twice the model's size: one survives, mapped.
        #[rustfmt::skip]
        let data = [
            50.0, 50.0, 20.0, 20.0, 0.9, 0.9,
            53.0, 50.0, 20.0, 20.0, 0.8, 0.9,
        ];
        let mut d: Decoder<16> = Decoder::new(cfg(BoxEncoding::Cxcywh)).unwrap();
        let mut out: heapless::Vec<Detection, 8> = heapless::Vec::new();
        let t =
            Transform { scale_x: 0.5, scale_y: 0.5, pad_x: 0.0, pad_y: 0.0, source_width: 200.0, source_height: 200.0 };
        d.decode(RawDetections::Yolov5 { data: &data, classes: 1 }, &t, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bbox.unwrap(), BBox { x0: 80.0, y0: 80.0, x1: 120.0, y1: 120.0 });
    }

    #[test]
    fn yolov8_reads_channel_major_output() {
        // N = 2 anchors, C = 2 classes: rows are cx, cy, w, h, class0, class1.
        #[rustfmt::skip]
        let data = [
            10.0, 70.0,
            10.0, 70.0,
            4.0, 10.0,
            4.0, 10.0,
            0.1, 0.95,
            0.6, 0.0,
        ];
        let mut d: Decoder<4> = Decoder::new(cfg(BoxEncoding::Cxcywh)).unwrap();
        let mut out: heapless::Vec<Detection, 4> = heapless::Vec::new();
        let t = Transform::identity(100.0, 100.0);
        d.decode(RawDetections::Yolov8 { data: &data, classes: 2 }, &t, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].class, out[0].bbox.unwrap().x0), (0, 65.0));
        assert_eq!((out[1].class, out[1].bbox.unwrap().x1), (1, 12.0));
    }

    #[test]
    fn ssd_skips_background_and_maps_normalized_yxyx_boxes_through_the_letterbox() {
        let boxes = [0.1, 0.2, 0.5, 0.6];
        let scores = [0.9, 0.7, 0.2];
        let mut c = cfg(BoxEncoding::Yxyx);
        c.normalized = true;
        c.background_class = Some(0);
        let mut d: Decoder<4> = Decoder::new(c).unwrap();
        let mut out: heapless::Vec<Detection, 4> = heapless::Vec::new();
        // A 200x100 frame letterboxed into 100x100: scale 0.5, pad_y 25.
        let t = Transform {
            scale_x: 0.5,
            scale_y: 0.5,
            pad_x: 0.0,
            pad_y: 25.0,
            source_width: 200.0,
            source_height: 100.0,
        };
        d.decode(RawDetections::Ssd { boxes: &boxes, scores: &scores, classes: 3 }, &t, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class, 1);
        let b = out[0].bbox.unwrap();
        assert!((b.x0 - 40.0).abs() < 1e-4 && (b.y0 - 0.0).abs() < 1e-4, "{b:?}");
        assert!((b.x1 - 120.0).abs() < 1e-4 && (b.y1 - 50.0).abs() < 1e-4, "{b:?}");
    }

    #[test]
    fn candidate_overflow_keeps_the_best_and_counts_the_rest() {
        let mut data = [0.0f32; 7 * 10];
        for i in 0..10 {
            let row = &mut data[i * 7..i * 7 + 7];
            row.copy_from_slice(&[i as f32 * 10.0, 5.0, 2.0, 2.0, 0.4 + i as f32 * 0.05, 1.0, 0.0]);
        }
        let mut d: Decoder<3> = Decoder::new(cfg(BoxEncoding::Cxcywh)).unwrap();
        let mut out: heapless::Vec<Detection, 2> = heapless::Vec::new();
        let t = Transform::identity(100.0, 100.0);
        let stats = d.decode(RawDetections::Yolov5 { data: &data, classes: 2 }, &t, &mut out).unwrap();
        assert_eq!(stats, DecodeStats { candidates: 10, overflowed: 7, truncated: 1 });
        assert!((out[0].score - 0.85).abs() < 1e-6 && (out[1].score - 0.8).abs() < 1e-6);
    }

    #[test]
    fn malformed_outputs_are_errors() {
        let mut d: Decoder<4> = Decoder::new(cfg(BoxEncoding::Xyxy)).unwrap();
        let mut out: heapless::Vec<Detection, 4> = heapless::Vec::new();
        let t = Transform::identity(1.0, 1.0);
        let raw = RawDetections::Yolov5 { data: &[0.0; 8], classes: 2 };
        assert_eq!(d.decode(raw, &t, &mut out).unwrap_err(), Error::BadShape);
        let mut bad = cfg(BoxEncoding::Xyxy);
        bad.iou_threshold = 1.5;
        assert_eq!(Decoder::<4>::new(bad).unwrap_err(), Error::InvalidConfig("detect.iou_threshold"));
    }
}
