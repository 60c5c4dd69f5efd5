//! Drawing on RGB pictures: detection boxes with their label and score (snapshots), and text in
//! an 8×8 bitmap font (public-domain glyphs from `font8x8`) for labels and plots.

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

/// Draws each detection's box (in the picture's pixels after multiplying by `scale`) with
/// `label score` above it, or inside it at the top edge of the picture. Detections without a
/// box (classifiers) are listed in the top-left corner.
pub fn detections(img: &mut RgbImage, dets: &[Detection], label: impl Fn(u16) -> String, scale: f32) {
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return;
    }
    let mut listed = 0;
    for d in dets {
        let color = class_color(d.class);
        let caption = format!("{} {:.2}", label(d.class), d.score);
        let text_w = caption.chars().count() as u32 * 8 * 2 + 4;
        match d.bbox {
            Some(b) => {
                let px = |v: f32, max: u32| ((v * scale).round().max(0.0) as u32).min(max - 1);
                let (x0, y0, x1, y1) = (px(b.x0, w), px(b.y0, h), px(b.x1, w), px(b.y1, h));
                outline(img, x0, y0, x1, y1, color);
                let ty = if y0 >= 20 { y0 - 20 } else { y0 + LINE };
                fill(img, x0, ty, x0 + text_w, ty + 20, color);
                text(img, &caption, x0 + 2, ty + 2, 2, false, [0, 0, 0]);
            }
            None => {
                let ty = 4 + listed * 22;
                fill(img, 4, ty, 4 + text_w, ty + 20, color);
                text(img, &caption, 6, ty + 2, 2, false, [0, 0, 0]);
                listed += 1;
            }
        }
    }
}
