//! Drawing on RGB pictures: detection boxes with their label and score (snapshots), polygons
//! (zones and masks on the live view), and text in an 8×8 bitmap font (public-domain glyphs from
//! `font8x8`) for labels and plots.

use crate::event::Detection;
use image::RgbImage;

/// Box colours by class (class `k` uses `PALETTE[k % 8]`): saturated, distinct, and far from the
/// greys and browns of typical scenes, so a box stays visible after JPEG compression.
pub const PALETTE: [[u8; 3]; 8] = [
    [255, 0, 255],
    [0, 255, 0],
    [255, 255, 0],
    [0, 255, 255],
    [255, 128, 0],
    [255, 0, 0],
    [128, 128, 255],
    [0, 0, 255],
];

/// The colour of class `class`'s boxes.
pub fn class_color(class: u16) -> [u8; 3] {
    PALETTE[class as usize % PALETTE.len()]
}

/// Width of a box outline, in pixels.
pub const LINE: u32 = 3;

/// Draws `text` with the 8×8 bitmap font, `scale` pixels per dot, from (x, y) to the right, or
/// upwards (rotated a quarter turn) when `vertical`. Pixels outside the picture are skipped.
pub fn text(img: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32, vertical: bool, color: [u8; 3]) {
    use font8x8::UnicodeFonts;
    for (k, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                let (gx, gy) = (k as u32 * 8 + col, row as u32);
                // Vertical text reads bottom to top: glyph x runs up from y, glyph y runs right.
                let block = if vertical {
                    y.checked_sub((gx + 1) * scale).map(|by| (x + gy * scale, by))
                } else {
                    Some((x + gx * scale, y + gy * scale))
                };
                let Some((bx, by)) = block else { continue };
                fill(img, bx, by, bx + scale, by + scale, color);
            }
        }
    }
}

/// Fills the rectangle [x0, x1) × [y0, y1), clipped to the picture.
pub fn fill(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, color: [u8; 3]) {
    for y in y0..y1.min(img.height()) {
        for x in x0..x1.min(img.width()) {
            img.put_pixel(x, y, image::Rgb(color));
        }
    }
}

/// Draws a rectangle outline `LINE` pixels wide, inside the box [x0, x1] × [y0, y1].
pub fn outline(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, color: [u8; 3]) {
    let (x1, y1) = (x1.max(x0 + 1), y1.max(y0 + 1));
    fill(img, x0, y0, x1 + 1, y0 + LINE, color);
    fill(img, x0, (y1 + 1).saturating_sub(LINE), x1 + 1, y1 + 1, color);
    fill(img, x0, y0, x0 + LINE, y1 + 1, color);
    fill(img, (x1 + 1).saturating_sub(LINE), y0, x1 + 1, y1 + 1, color);
}

/// Height of a label (its coloured background), in pixels.
pub const LABEL_H: u32 = 20;

/// A rectangle of pixels, [x0, x1) × [y0, y1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left edge (included).
    pub x0: u32,
    /// Top edge (included).
    pub y0: u32,
    /// Right edge (excluded).
    pub x1: u32,
    /// Bottom edge (excluded).
    pub y1: u32,
}

impl Rect {
    /// Whether the two share a pixel.
    pub fn intersects(&self, other: &Rect) -> bool {
        self.x0 < other.x1 && other.x0 < self.x1 && self.y0 < other.y1 && other.y0 < self.y1
    }
}

/// Where a label `width` pixels wide goes for the box [x0, x1] × [y0, y1] in a `w`×`h` picture,
/// clear of the labels already `placed`: above the box, else inside it at its top, else below it,
/// else the nearest free place up or down the picture at the box's left edge, else beside a label
/// in the way. When no place is free (a picture full of labels), above the box (or inside it).
fn place(placed: &[Rect], (x0, y0, y1): (u32, u32, u32), width: u32, (w, h): (u32, u32)) -> Rect {
    let width = width.min(w);
    let at = |x: u32, y: u32| {
        let x = x.min(w - width);
        Rect { x0: x, y0: y, x1: x + width, y1: y + LABEL_H }
    };
    let free = |r: &Rect| r.y1 <= h && !placed.iter().any(|p| p.intersects(r));
    let above = y0.checked_sub(LABEL_H);
    let preferred = at(x0, above.unwrap_or(y0 + LINE));
    if h < LABEL_H {
        return preferred;
    }
    let first = [above, Some(y0 + LINE), Some(y1 + 1)];
    if let Some(r) = first.into_iter().flatten().map(|y| at(x0, y)).find(|r| free(r)) {
        return r;
    }
    // Shifted up or down from the box, nearest first.
    let top = above.unwrap_or(0);
    for d in 1..h {
        let up = top.checked_sub(d).map(|y| at(x0, y));
        let down = Some(at(x0, y1 + 1 + d)).filter(|r| r.y1 <= h);
        if up.is_none() && down.is_none() {
            break;
        }
        if let Some(r) = up.into_iter().chain(down).find(|r| free(r)) {
            return r;
        }
    }
    // Beside a label in the way, at the preferred height.
    let beside = placed.iter().flat_map(|p| [Some(p.x1), p.x0.checked_sub(width)]).flatten();
    beside.map(|x| at(x, preferred.y0)).find(|r| r.x0 + width <= w && free(r)).unwrap_or(preferred)
}

/// Draws each detection's box (in the picture's pixels after multiplying by `scale`) with
/// `label score` next to it: above the box, else inside it at the top, else where it overlaps
/// no label placed before it (see `place`); boxes are drawn first, so no outline crosses a
/// label. Detections without a box (classifiers) are listed in the top-left corner. Returns
/// where the labels went, in the order of `dets`. `label(k, class)` names the `k`th detection.
pub fn detections(
    img: &mut RgbImage,
    dets: &[Detection],
    label: impl Fn(usize, u16) -> String,
    scale: f32,
) -> Vec<Rect> {
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return vec![];
    }
    let px = |v: f32, max: u32| ((v * scale).round().max(0.0) as u32).min(max - 1);
    let boxes: Vec<Option<(u32, u32, u32, u32)>> =
        dets.iter().map(|d| d.bbox.map(|b| (px(b.x0, w), px(b.y0, h), px(b.x1, w), px(b.y1, h)))).collect();
    for (d, b) in dets.iter().zip(&boxes) {
        if let Some((x0, y0, x1, y1)) = *b {
            outline(img, x0, y0, x1, y1, class_color(d.class));
        }
    }
    // Listed labels first: they hold the corner whatever the boxes do.
    let mut rects: Vec<Option<Rect>> = vec![None; dets.len()];
    let mut placed = Vec::with_capacity(dets.len());
    let captions: Vec<String> =
        dets.iter().enumerate().map(|(k, d)| format!("{} {:.2}", label(k, d.class), d.score)).collect();
    let text_w = |c: &str| (c.chars().count() as u32).saturating_mul(16).saturating_add(4);
    let mut listed = 0;
    for (k, b) in boxes.iter().enumerate() {
        if b.is_none() {
            let y = 4 + listed * (LABEL_H + 2);
            let r = Rect { x0: 4, y0: y, x1: 4 + text_w(&captions[k]), y1: y + LABEL_H };
            rects[k] = Some(r);
            placed.push(r);
            listed += 1;
        }
    }
    for (k, b) in boxes.iter().enumerate() {
        if let Some((x0, y0, _, y1)) = *b {
            let r = place(&placed, (x0, y0, y1), text_w(&captions[k]), (w, h));
            rects[k] = Some(r);
            placed.push(r);
        }
    }
    let rects: Vec<Rect> = rects.into_iter().flatten().collect();
    for ((d, r), caption) in dets.iter().zip(&rects).zip(&captions) {
        fill(img, r.x0, r.y0, r.x1, r.y1, class_color(d.class));
        text(img, caption, r.x0 + 2, r.y0 + 2, 2, false, [0, 0, 0]);
    }
    rects
}

/// The colour of zones on the live view: azure, far from every class colour of [`PALETTE`].
pub const ZONE_COLOR: [u8; 3] = [0, 128, 255];

/// A polygon to outline on a picture (a zone, a motion mask).
#[derive(Debug, Clone, PartialEq)]
pub struct Outline {
    /// Written inside its first corner (empty: nothing written).
    pub name: String,
    /// Corners in fractions of the picture's width and height.
    pub points: Vec<(f32, f32)>,
    /// Line and text colour.
    pub color: [u8; 3],
}

/// Draws each outline's edges, `LINE` pixels wide, and its name.
pub fn outlines(img: &mut RgbImage, outlines: &[Outline]) {
    let (w, h) = (img.width() as f32, img.height() as f32);
    for o in outlines {
        let n = o.points.len();
        for i in 0..n {
            let (a, b) = (o.points[i], o.points[(i + 1) % n]);
            line(img, (a.0 * w, a.1 * h), (b.0 * w, b.1 * h), o.color);
        }
        if let Some(&(x, y)) = o.points.first() {
            let (x, y) = ((x * w) as u32, (y * h) as u32);
            // Inside the frame: a corner on the right or bottom edge writes up and left of it.
            let tw = o.name.chars().count() as u32 * 16;
            let x = if x + 6 + tw > img.width() { x.saturating_sub(6 + tw) } else { x + 6 };
            let y = if y + 22 > img.height() { y.saturating_sub(22) } else { y + 6 };
            text(img, &o.name, x, y, 2, false, o.color);
        }
    }
}

/// A straight line `LINE` pixels wide from `a` to `b` (pixels), clipped to the picture.
fn line(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), color: [u8; 3]) {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    // One square a pixel along the longer axis: bounded by the picture's size for corners in it.
    let steps = dx.abs().max(dy.abs()).ceil().clamp(1.0, 65_536.0) as u32;
    let half = LINE as f32 / 2.0;
    for s in 0..=steps {
        let t = s as f32 / steps as f32;
        let (x, y) = ((a.0 + dx * t - half).max(0.0) as u32, (a.1 + dy * t - half).max(0.0) as u32);
        fill(img, x, y, x + LINE, y + LINE, color);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::BBox;

    /// Where `needle` appears, pixel for pixel, in `hay`.
    fn find(hay: &RgbImage, needle: &RgbImage) -> Option<(u32, u32)> {
        let (nw, nh) = needle.dimensions();
        for y in 0..=hay.height().checked_sub(nh)? {
            'x: for x in 0..=hay.width().checked_sub(nw)? {
                for (dx, dy, p) in needle.enumerate_pixels() {
                    if hay.get_pixel(x + dx, y + dy) != p {
                        continue 'x;
                    }
                }
                return Some((x, y));
            }
        }
        None
    }

    /// A label as drawn on its own: background and text.
    fn label_picture(caption: &str, color: [u8; 3]) -> RgbImage {
        let width = caption.chars().count() as u32 * 16 + 4;
        let mut img = RgbImage::new(width, LABEL_H);
        fill(&mut img, 0, 0, width, LABEL_H, color);
        text(&mut img, caption, 2, 2, 2, false, [0, 0, 0]);
        img
    }

    fn det(class: u16, score: f32, (x0, y0, x1, y1): (f32, f32, f32, f32)) -> Detection {
        Detection { class, score, bbox: Some(BBox { x0, y0, x1, y1 }) }
    }

    /// Meter digits sit side by side: each box's label is wider than the box, so labels above
    /// adjacent boxes would cover each other. On a real demo frame, every label must be drawn
    /// whole, and no two label rectangles share a pixel.
    #[test]
    fn labels_of_adjacent_boxes_do_not_overlap() {
        let frame = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/detector/demo/images/frame000.jpg");
        let photo = image::open(frame).expect("the demo frame").to_rgb8();
        let names = ["zero", "one", "two", "three"];
        let label = |c: u16| names[c as usize].to_string();
        let cases: [&[Detection]; 3] = [
            // Two adjacent boxes mid-picture.
            &[det(0, 0.91, (40.0, 80.0, 90.0, 150.0)), det(1, 0.88, (92.0, 80.0, 142.0, 150.0))],
            // Four adjacent boxes at the top edge (no room above) and a box at the right edge.
            &[
                det(0, 0.9, (0.0, 0.0, 30.0, 60.0)),
                det(1, 0.9, (31.0, 0.0, 61.0, 60.0)),
                det(2, 0.9, (62.0, 0.0, 92.0, 60.0)),
                det(3, 0.9, (93.0, 0.0, 123.0, 60.0)),
                det(0, 0.5, (300.0, 100.0, 319.0, 140.0)),
            ],
            // A box inside another, same top-left corner.
            &[det(2, 0.7, (50.0, 50.0, 250.0, 200.0)), det(3, 0.6, (50.0, 50.0, 120.0, 120.0))],
        ];
        for dets in cases {
            let mut img = photo.clone();
            let rects = detections(&mut img, dets, |_, c| label(c), 1.0);
            assert_eq!(rects.len(), dets.len());
            for (i, a) in rects.iter().enumerate() {
                assert!(a.x1 <= img.width() && a.y1 <= img.height(), "{a:?} inside the picture");
                for b in &rects[i + 1..] {
                    assert!(!a.intersects(b), "labels {a:?} and {b:?} overlap");
                }
            }
            for d in dets {
                let caption = format!("{} {:.2}", label(d.class), d.score);
                let want = label_picture(&caption, class_color(d.class));
                assert!(find(&img, &want).is_some(), "label `{caption}` is drawn whole in {dets:?}");
            }
        }
    }

    #[test]
    fn an_outline_draws_its_edges_and_its_name_inside_the_picture() {
        let mut img = RgbImage::new(200, 100);
        let azure = [0, 128, 255];
        let zone =
            Outline { name: "door".into(), points: vec![(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)], color: azure };
        outlines(&mut img, &[zone]);
        // The left edge at x = 100 from top to bottom; the inside untouched; the name written.
        for y in 0..100 {
            assert_eq!(img.get_pixel(100, y).0, azure, "edge at y {y}");
        }
        assert_eq!(img.get_pixel(150, 50).0, [0, 0, 0]);
        let lit =
            img.enumerate_pixels().filter(|(x, y, p)| (104..170).contains(x) && (4..24).contains(y) && p.0 == azure);
        assert!(lit.count() > 50, "the name `door` next to the first corner");
    }

    #[test]
    fn listed_labels_and_boxes_share_the_corner() {
        let mut img = RgbImage::new(320, 240);
        let dets = [Detection { class: 1, score: 0.8, bbox: None }, det(0, 0.9, (0.0, 0.0, 100.0, 100.0))];
        let rects = detections(&mut img, &dets, |_, c| c.to_string(), 1.0);
        assert_eq!(rects[0], Rect { x0: 4, y0: 4, x1: 4 + 6 * 16 + 4, y1: 4 + LABEL_H });
        assert!(!rects[0].intersects(&rects[1]), "{rects:?}");
    }
}
