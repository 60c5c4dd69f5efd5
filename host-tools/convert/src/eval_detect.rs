//! `eval` for detectors: mean average precision at IoU 0.5 on a YOLO-labelled folder
//! (`DIR/images/*.{png,jpg}` with `DIR/labels/<stem>.txt` lines `class cx cy w h`, normalized to the
//! picture), plus precision and recall at the manifest's score threshold.

use anyhow::{bail, Context, Result};
use lepton_runtime::event::BBox;
use lepton_runtime::image::Image;
use lepton_runtime::Model;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// IoU a detection needs with an unmatched ground-truth box of its class to count as correct.
pub const IOU_MATCH: f32 = 0.5;
/// Score threshold while collecting candidates for the precision–recall curves.
const COLLECT_THRESHOLD: f32 = 0.001;

/// One labelled picture: its file and ground-truth objects (class, box in pixels).
#[derive(Debug, Clone)]
pub struct LabelledImage {
    /// The picture.
    pub path: PathBuf,
    /// Ground truth.
    pub objects: Vec<(u16, BBox)>,
}

/// Whether `dir` is laid out for detection (`images/` and `labels/`).
pub fn is_detection_dataset(dir: &Path) -> bool {
    dir.join("images").is_dir() && dir.join("labels").is_dir()
}

/// Reads `DIR/images` and `DIR/labels`. A picture without a label file has no objects.
pub fn dataset(dir: &Path, classes: usize) -> Result<Vec<LabelledImage>> {
    let images = dir.join("images");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&images)
        .with_context(|| images.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no pictures (.png, .jpg)", images.display());
    }
    let mut out = vec![];
    for path in files {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let label_file = dir.join("labels").join(format!("{stem}.txt"));
        let (w, h) = image::image_dimensions(&path).with_context(|| path.display().to_string())?;
        let text = match std::fs::read_to_string(&label_file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| label_file.display().to_string()),
        };
        let mut objects = vec![];
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad = |why: &str| {
                anyhow::anyhow!("{} line {}: {why} (expected `class cx cy w h`)", label_file.display(), n + 1)
            };
            let v: Vec<&str> = line.split_whitespace().collect();
            if v.len() != 5 {
                return Err(bad("needs 5 numbers"));
            }
            let class: u16 = v[0].parse().map_err(|_| bad("the class is not an integer"))?;
            if usize::from(class) >= classes {
                return Err(bad(&format!("class {class} but the model has {classes} labels")));
            }
            let f: Vec<f32> =
                v[1..].iter().map(|x| x.parse::<f32>()).collect::<Result<_, _>>().map_err(|_| bad("not a number"))?;
            let (cx, cy, bw, bh) = (f[0] * w as f32, f[1] * h as f32, f[2] * w as f32, f[3] * h as f32);
            objects.push((class, BBox { x0: cx - bw / 2.0, y0: cy - bh / 2.0, x1: cx + bw / 2.0, y1: cy + bh / 2.0 }));
        }
        out.push(LabelledImage { path, objects });
    }
    Ok(out)
}

/// The results of a detection evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionMetrics {
    /// Class names.
    pub labels: Vec<String>,
    /// Pictures evaluated.
    pub images: usize,
    /// Ground-truth objects.
    pub objects: usize,
    /// Mean over classes with objects of the average precision at IoU 0.5 (VOC all-point).
    pub map50: f64,
    /// Per class: (label, AP@0.5 or none without objects, objects).
    pub per_class: Vec<(String, Option<f64>, usize)>,
    /// The manifest's score threshold.
    pub threshold: f32,
    /// Precision at that threshold.
    pub precision: f64,
    /// Recall at that threshold.
    pub recall: f64,
    /// Pictures whose detections at the threshold, read left to right, spell their labels exactly.
    pub exact_readings: usize,
    /// Pictures that could not be evaluated: (file, error).
    pub failed: Vec<(String, String)>,
}

/// Runs `model` on every picture and scores its detections against the labels.
pub fn evaluate(model: &Model, data: &[LabelledImage], mut progress: impl FnMut()) -> Result<DetectionMetrics> {
    let manifest = model.manifest().context("a detector needs a manifest")?;
    let labels = manifest.labels.clone();
    let threshold = manifest.detect.as_ref().map_or(0.25, |d| d.score_threshold);
    model.set_score_threshold(COLLECT_THRESHOLD)?;
    // Per class: (score, true positive) of every detection; objects per class.
    let mut scored: Vec<Vec<(f32, bool)>> = vec![vec![]; labels.len()];
    let mut counts = vec![0usize; labels.len()];
    let (mut tp_at, mut det_at, mut exact, mut images) = (0usize, 0usize, 0usize, 0usize);
    let mut failed = vec![];
    for item in data {
        let result = Image::open(&item.path).and_then(|img| model.predict(std::slice::from_ref(&img)));
        let mut prediction = match result {
            Ok(mut p) => p.remove(0),
            Err(e) => {
                failed.push((item.path.display().to_string(), e.to_string()));
                progress();
                continue;
            }
        };
        images += 1;
        prediction.results.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut used = vec![false; item.objects.len()];
        for (c, _) in &item.objects {
            counts[usize::from(*c)] += 1;
        }
        let mut kept = vec![];
        for d in &prediction.results {
            let Some(b) = d.bbox else { continue };
            let hit = match_detection(d.class, &b, &item.objects, &mut used);
            if let Some(s) = scored.get_mut(usize::from(d.class)) {
                s.push((d.score, hit));
            }
            if d.score >= threshold {
                det_at += 1;
                tp_at += usize::from(hit);
                kept.push((b.x0 + b.x1, d.class));
            }
        }
        kept.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut truth: Vec<(f32, u16)> = item.objects.iter().map(|(c, g)| (g.x0 + g.x1, *c)).collect();
        truth.sort_by(|a, b| a.0.total_cmp(&b.0));
        exact += usize::from(kept.iter().map(|k| k.1).eq(truth.iter().map(|t| t.1)));
        progress();
    }
    model.set_score_threshold(threshold)?;
    let per_class: Vec<(String, Option<f64>, usize)> = labels
        .iter()
        .enumerate()
        .map(|(c, l)| (l.clone(), (counts[c] > 0).then(|| average_precision(&mut scored[c], counts[c])), counts[c]))
        .collect();
    let aps: Vec<f64> = per_class.iter().filter_map(|p| p.1).collect();
    let objects: usize = counts.iter().sum();
    Ok(DetectionMetrics {
        labels,
        images,
        objects,
        map50: if aps.is_empty() { 0.0 } else { aps.iter().sum::<f64>() / aps.len() as f64 },
        per_class,
        threshold,
        precision: if det_at > 0 { tp_at as f64 / det_at as f64 } else { 0.0 },
        recall: if objects > 0 { tp_at as f64 / objects as f64 } else { 0.0 },
        exact_readings: exact,
        failed,
    })
}

/// Matches one detection (taken best score first) against reference boxes, as `evaluate` scores
/// detections: the reference box of the same class it overlaps most counts when the IoU reaches
/// [`IOU_MATCH`] and no earlier detection took it (`used` marks taken boxes; greedy, one-to-one).
pub fn match_detection(class: u16, b: &BBox, reference: &[(u16, BBox)], used: &mut [bool]) -> bool {
    let best = reference
        .iter()
        .enumerate()
        .filter(|(_, (c, _))| *c == class)
        .map(|(k, (_, g))| (k, b.iou(g)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match best {
        Some((k, iou)) if iou >= IOU_MATCH => match used.get_mut(k) {
            Some(taken) if !*taken => {
                *taken = true;
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// VOC all-point interpolated average precision of scored detections against `positives` objects.
pub fn average_precision(dets: &mut [(f32, bool)], positives: usize) -> f64 {
    dets.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut points = Vec::with_capacity(dets.len());
    let mut tp = 0usize;
    for (k, (_, hit)) in dets.iter().enumerate() {
        tp += usize::from(*hit);
        points.push((tp as f64 / positives as f64, tp as f64 / (k + 1) as f64));
    }
    // Precision envelope from the right, then area under the recall steps.
    let mut ap = 0.0;
    let mut best = 0.0f64;
    let mut envelope = vec![0.0; points.len()];
    for k in (0..points.len()).rev() {
        best = best.max(points[k].1);
        envelope[k] = best;
    }
    let mut prev_recall = 0.0;
    for (k, (recall, _)) in points.iter().enumerate() {
        if *recall > prev_recall {
            ap += (recall - prev_recall) * envelope[k];
            prev_recall = *recall;
        }
    }
    ap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_detections_have_ap_one_and_misses_lower_it() {
        assert_eq!(average_precision(&mut [(0.9, true), (0.8, true)], 2), 1.0);
        // One of two objects found, first: recall 0.5 at precision 1.
        assert_eq!(average_precision(&mut [(0.9, true), (0.5, false)], 2), 0.5);
        // A false positive ranked first: precision 0.5 at recall 1 → 0.5 + interpolation.
        let ap = average_precision(&mut [(0.9, false), (0.8, true)], 1);
        assert!((ap - 0.5).abs() < 1e-12, "{ap}");
        assert_eq!(average_precision(&mut [], 3), 0.0);
    }
}
