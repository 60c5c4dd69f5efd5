"""Image operations that mirror the Lepton runtime's preprocessing bit for bit (up to float rounding).

The runtime (runtime/core/src/vision/preprocess.rs) resizes with half-pixel-centred bilinear sampling and
clamps at the borders; training code must see exactly what the device will compute, so models are
trained on images passed through these same functions.
"""
import numpy as np


def bilinear_resize(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Resize an HxW or HxWxC float image like the runtime's `ResizeMode::Stretch`."""
    in_h, in_w = img.shape[:2]
    sy = in_h / out_h
    sx = in_w / out_w
    ys = np.clip((np.arange(out_h) + 0.5) * sy - 0.5, 0, in_h - 1)
    xs = np.clip((np.arange(out_w) + 0.5) * sx - 0.5, 0, in_w - 1)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, in_h - 1)
    x1 = np.minimum(x0 + 1, in_w - 1)
    wy = (ys - y0)[:, None]
    wx = (xs - x0)[None, :]
    if img.ndim == 3:
        wy = wy[..., None]
        wx = wx[..., None]
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bot = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy) + bot * wy
