"""Camera-like scenes with digits in them, for the meter-digit detector.

A scene is a 320x240 RGB frame: a crop of a real photograph (scikit-image's bundled photos), often
with a plate or display window on it, and real handwritten digits (scikit-learn's 8x8 digits set)
pasted at random positions, scales, contrasts and ink polarities, in rows like a meter or scattered;
then blur, a lighting gradient and sensor noise. Boxes are the tight box of each digit's ink, in
frame pixels; labels are the digit values.

Backgrounds are split: training scenes never use the held-out photos (TEST_PHOTOS), test and demo
scenes only use them, so the detector is measured on backgrounds it has not seen.
"""
import numpy as np
import skimage.data
from skimage.transform import resize

WIDTH, HEIGHT = 320, 240
TRAIN_PHOTOS = [
    "astronaut", "brick", "camera", "chelsea", "coins", "grass", "gravel", "hubble_deep_field",
    "immunohistochemistry", "moon", "retina", "cell",
]
TEST_PHOTOS = ["coffee", "rocket"]


def load_photo(name: str) -> np.ndarray:
    """A bundled photograph as float RGB in 0..255 (no download)."""
    im = getattr(skimage.data, name)()
    if im.ndim == 2:
        im = np.stack([im] * 3, axis=-1)
    im = im[..., :3].astype(np.float64)
    if im.max() <= 1.0:
        im *= 255.0
    return im


def background(photos: list, rng: np.random.Generator) -> np.ndarray:
    """A random crop of a random photo (or a plain / gradient surface), scaled to the frame."""
    kind = rng.uniform()
    if kind < 0.12:
        # Plain painted surface or paper with a gradient.
        base = rng.uniform(40, 240, size=3)
        gx = np.linspace(-1, 1, WIDTH)[None, :, None] * rng.uniform(-30, 30)
        gy = np.linspace(-1, 1, HEIGHT)[:, None, None] * rng.uniform(-30, 30)
        return np.clip(base[None, None, :] + gx + gy + np.zeros((HEIGHT, WIDTH, 3)), 0, 255)
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    scale = rng.uniform(0.35, 1.0)
    ch = max(32, int(min(h, w * HEIGHT / WIDTH) * scale))
    cw = int(ch * WIDTH / HEIGHT)
    if cw > w:
        cw, ch = w, int(w * HEIGHT / WIDTH)
    y = rng.integers(0, h - ch + 1)
    x = rng.integers(0, w - cw + 1)
    crop = photo[y:y + ch, x:x + cw]
    if rng.uniform() < 0.5:
        crop = crop[:, ::-1]
    if rng.uniform() < 0.3:
        crop = crop[::-1]
    out = resize(crop, (HEIGHT, WIDTH, 3), order=1, anti_aliasing=True, preserve_range=True)
    if rng.uniform() < 0.3:
        gray = out.mean(axis=-1, keepdims=True)
        out = np.repeat(gray, 3, axis=-1)
    return out


def glyph(digit8x8: np.ndarray, height: int, rng: np.random.Generator) -> np.ndarray:
    """The digit's ink (0..1) scaled to `height` pixels, with a random aspect, cropped to its ink."""
    ink = digit8x8 / 16.0
    rows = np.where(ink.max(axis=1) > 0.15)[0]
    cols = np.where(ink.max(axis=0) > 0.15)[0]
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    ih, iw = ink.shape
    aspect = (iw / ih) * rng.uniform(0.8, 1.2)
    width = max(3, int(round(height * aspect)))
    # Pad by one source pixel so the bilinear upscale fades out instead of clipping.
    padded = np.pad(ink, 1)
    g = resize(padded, (height + 2 * max(1, height // ih), width + 2 * max(1, width // iw)), order=1,
               anti_aliasing=False, preserve_range=True)
    return np.clip(g, 0, 1)


def ink_box(alpha: np.ndarray, x: int, y: int):
    """Tight box (x0, y0, x1, y1) of the visible ink of a pasted glyph, in frame pixels."""
    rows = np.where(alpha.max(axis=1) > 0.25)[0]
    cols = np.where(alpha.max(axis=0) > 0.25)[0]
    return (x + cols[0], y + rows[0], x + cols[-1] + 1, y + rows[-1] + 1)


def overlaps(box, boxes, margin=2):
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + margin and b[0] - margin < x1 and y0 < b[3] + margin and b[1] - margin < y1 for b in boxes)


def paste(frame, alpha, x, y, color):
    h, w = alpha.shape
    region = frame[y:y + h, x:x + w]
    frame[y:y + h, x:x + w] = region * (1 - alpha[..., None]) + color[None, None, :] * alpha[..., None]


def scene(digits: np.ndarray, labels: np.ndarray, photos: list, rng: np.random.Generator,
          layout: str = "random", heights=(20, 60)):
    """One frame and its annotations [(label, x0, y0, x1, y1)]. `layout`: random | row | none."""
    frame = background(photos, rng)
    if layout == "random":
        layout = rng.choice(["row", "scatter", "none"], p=[0.55, 0.4, 0.05])
    annotations = []
    boxes = []
    if layout != "none":
        height = int(rng.uniform(*heights))
        light_ink = rng.uniform() < 0.25
        if layout == "row":
            count = int(rng.integers(3, 8))
            width_guess = int(height * 0.8) + int(height * rng.uniform(0.1, 0.45))
            total = count * width_guess
            while total > WIDTH - 16 and height > heights[0]:
                height -= 2
                width_guess = int(height * 0.8) + int(height * 0.2)
                total = count * width_guess
            x = int(rng.integers(4, max(5, WIDTH - total - 4)))
            y = int(rng.integers(4, max(5, HEIGHT - height - 8)))
            if rng.uniform() < 0.7:
                # The meter's display window: a plate behind the digits.
                plate = rng.uniform(170, 250) if not light_ink else rng.uniform(10, 70)
                tint = plate + rng.uniform(-15, 15, size=3)
                x0, y0 = max(0, x - 6), max(0, y - 6)
                x1, y1 = min(WIDTH, x + total + 6), min(HEIGHT, y + height + 10)
                frame[y0:y1, x0:x1] = frame[y0:y1, x0:x1] * rng.uniform(0.0, 0.25) + tint * 1.0
                frame = np.clip(frame, 0, 255)
            for _ in range(count):
                k = rng.integers(len(digits))
                h = int(height * rng.uniform(0.92, 1.08))
                g = glyph(digits[k], h, rng)
                gy = y + int(rng.integers(-2, 3))
                if x + g.shape[1] >= WIDTH or gy + g.shape[0] >= HEIGHT or gy < 0:
                    break
                contrast = rng.uniform(0.55, 1.0)
                color = ink_color(frame[gy:gy + g.shape[0], x:x + g.shape[1]], rng)
                paste(frame, g * contrast, x, gy, color)
                box = ink_box(g * contrast, x, gy)
                annotations.append((int(labels[k]), *box))
                boxes.append(box)
                x += g.shape[1] + int(height * rng.uniform(0.05, 0.3))
        else:
            for _ in range(int(rng.integers(1, 7))):
                k = rng.integers(len(digits))
                h = int(rng.uniform(*heights))
                g = glyph(digits[k], h, rng)
                for _attempt in range(20):
                    x = int(rng.integers(0, WIDTH - g.shape[1]))
                    y = int(rng.integers(0, HEIGHT - g.shape[0]))
                    contrast = rng.uniform(0.55, 1.0)
                    box = ink_box(g * contrast, x, y)
                    if not overlaps(box, boxes):
                        paste(frame, g * contrast, x, y, ink_color(frame[y:y + g.shape[0], x:x + g.shape[1]], rng))
                        annotations.append((int(labels[k]), *box))
                        boxes.append(box)
                        break
    distractors(frame, boxes, rng)
    frame = camera_effects(frame, rng)
    return np.clip(np.round(frame), 0, 255).astype(np.uint8), annotations


def distractors(frame, boxes, rng):
    """Strokes and shapes that are not digits (lines, arcs, rings, bars, dots, crosses) at digit
    sizes, away from the digits: the detector must learn digit shapes, not "a dark blob"."""
    from PIL import Image, ImageDraw

    count = int(rng.integers(0, 5))
    if count == 0:
        return
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(mask)
    placed = 0
    for _ in range(count * 5):
        if placed == count:
            break
        h = int(rng.uniform(12, 60))
        w = int(h * rng.uniform(0.2, 1.4))
        x = int(rng.integers(0, WIDTH - w))
        y = int(rng.integers(0, HEIGHT - h))
        box = (x, y, x + w, y + h)
        if overlaps(box, boxes, margin=4):
            continue
        width = max(1, int(h * rng.uniform(0.06, 0.16)))
        kind = rng.integers(6)
        if kind == 0:
            draw.line([(x, y + rng.integers(h)), (x + w, y + rng.integers(h))], fill=255, width=width)
        elif kind == 1:
            draw.arc(box, start=int(rng.integers(360)), end=int(rng.integers(360)), fill=255, width=width)
        elif kind == 2:
            draw.ellipse(box, outline=255, width=width)
        elif kind == 3:
            draw.rectangle(box, outline=255, width=width)
        elif kind == 4:
            r = max(2, w // 3)
            draw.ellipse((x, y, x + r, y + r), fill=255)
        else:
            draw.line([(x, y), (x + w, y + h)], fill=255, width=width)
            draw.line([(x + w, y), (x, y + h)], fill=255, width=width)
        boxes.append(box)
        placed += 1
    alpha = np.asarray(mask, np.float64) / 255.0 * rng.uniform(0.5, 1.0)
    region_mean = frame.mean()
    color = rng.uniform(0, 50, size=3) if region_mean > 110 else rng.uniform(200, 255, size=3)
    frame[:] = frame * (1 - alpha[..., None]) + color[None, None, :] * alpha[..., None]


def ink_color(region, rng):
    """Ink that stands out from the region it is written on: dark on light, light on dark."""
    if region.mean() > 110:
        return rng.uniform(0, 50, size=3)
    return rng.uniform(200, 255, size=3)


def camera_effects(frame, rng):
    """Blur, a lighting gradient, brightness/contrast and sensor noise."""
    from scipy.ndimage import gaussian_filter

    sigma = rng.uniform(0, 1.4)
    if sigma > 0.3:
        frame = gaussian_filter(frame, sigma=(sigma, sigma, 0))
    gx = np.linspace(-1, 1, WIDTH)[None, :, None] * rng.uniform(-0.25, 0.25)
    gy = np.linspace(-1, 1, HEIGHT)[:, None, None] * rng.uniform(-0.25, 0.25)
    frame = frame * (1 + gx + gy) * rng.uniform(0.7, 1.15) + rng.uniform(-20, 20)
    frame = frame + rng.normal(0, rng.uniform(0, 7), size=frame.shape)
    return frame


def yolo_lines(annotations):
    """Annotations as YOLO label lines: `class cx cy w h`, normalized to the frame."""
    out = []
    for c, x0, y0, x1, y1 in annotations:
        out.append(f"{c} {(x0 + x1) / 2 / WIDTH:.6f} {(y0 + y1) / 2 / HEIGHT:.6f} {(x1 - x0) / WIDTH:.6f} {(y1 - y0) / HEIGHT:.6f}")
    return "\n".join(out) + ("\n" if out else "")
