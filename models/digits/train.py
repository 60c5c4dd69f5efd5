"""Train the digit classifier shipped as models/digits/model.onnx.

Data: scikit-learn's 8x8 handwritten digits (1,797 images from 43 writers, bundled with scikit-learn,
no download). Each digit is rendered as a 32x32 grayscale picture, dark ink on white paper, the way a
camera would see a written digit; the model sees it through the runtime's own preprocessing (bilinear
resize to 16x16, mean/std normalization), reproduced in ../common/imageops.py.

Outputs (all written next to this script):
  model.raw.onnx    float model without manifest (pack it with lepton-convert, see README.md)
  test/<label>/*.png the held-out test split (never seen in training or model selection)
  samples/*.png      a few test pictures
  calibration/*.png  40 training pictures (4 per digit) for `lepton-convert quantize`

Usage: python3 train.py   (seeded; needs numpy, scikit-learn, torch, onnx, pillow)
       python3 train.py --calibration-only   (rewrites calibration/ alone)
"""
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
from imageops import bilinear_resize  # noqa: E402

SEED = 7
MODEL_SIZE = 16
PICTURE_SIZE = 32
MEAN, STD = 0.5, 0.5


def render(digit8x8: np.ndarray) -> np.ndarray:
    """8x8 ink intensities (0..16) -> 32x32 uint8 picture, dark ink on white."""
    ink = np.kron(digit8x8, np.ones((4, 4)))
    return np.round(255.0 - ink * (255.0 / 16.0)).astype(np.uint8)


def to_input(picture: np.ndarray) -> np.ndarray:
    """A uint8 picture -> the model input, exactly as the runtime computes it."""
    x = bilinear_resize(picture.astype(np.float64), MODEL_SIZE, MODEL_SIZE) / 255.0
    return ((x - MEAN) / STD).astype(np.float32)


def augment(picture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small shifts, contrast and brightness changes and sensor noise, in picture space."""
    dy, dx = rng.integers(-3, 4, size=2)
    shifted = np.full_like(picture, 255)
    src = picture[max(0, -dy):PICTURE_SIZE - max(0, dy), max(0, -dx):PICTURE_SIZE - max(0, dx)]
    shifted[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    p = shifted.astype(np.float64)
    contrast = rng.uniform(0.6, 1.0)
    paper = rng.uniform(170, 255)
    p = paper - (255.0 - p) * contrast * paper / 255.0
    p += rng.normal(0, rng.uniform(0, 8), size=p.shape)
    return np.clip(np.round(p), 0, 255).astype(np.uint8)


class DigitNet(nn.Module):
    """Conv(8) -> pool -> Conv(16) -> pool -> Linear(10): ~95k MACs, fits a Cortex-M4."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def split():
    """Pictures, labels and the seeded train / validation / test indices."""
    digits = load_digits()
    pictures = np.stack([render(d) for d in digits.images])
    labels = digits.target
    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(idx, test_size=300, stratify=labels, random_state=SEED)
    train_idx, val_idx = train_test_split(train_idx, test_size=200, stratify=labels[train_idx], random_state=SEED)
    return pictures, labels, train_idx, val_idx, test_idx


def write_calibration():
    """The first 4 training pictures of each digit, for lepton-convert quantize."""
    pictures, labels, train_idx, _, _ = split()
    folder = os.path.join(HERE, "calibration")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for d in range(10):
        for i in [i for i in train_idx if labels[i] == d][:4]:
            Image.fromarray(pictures[i], mode="L").save(os.path.join(folder, f"digit{d}-{i:04d}.png"), optimize=True)


def main():
    rng = np.random.default_rng(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    pictures, labels, train_idx, val_idx, test_idx = split()

    val_x = torch.from_numpy(np.stack([to_input(pictures[i]) for i in val_idx]))[:, None]
    val_y = torch.from_numpy(labels[val_idx])
    model = DigitNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40)
    best_acc, best_state = -1.0, None
    for epoch in range(40):
        model.train()
        order = rng.permutation(train_idx)
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            x = np.stack([to_input(augment(pictures[i], rng)) for i in batch])[:, None]
            loss = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(labels[batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(val_x).argmax(1) == val_y).float().mean().item()
        if acc >= best_acc:
            best_acc, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
        print(f"epoch {epoch:2d} loss {loss.item():.4f} val {acc:.4f}")
    model.load_state_dict(best_state)
    model.eval()

    test_x = torch.from_numpy(np.stack([to_input(pictures[i]) for i in test_idx]))[:, None]
    with torch.no_grad():
        test_acc = (model(test_x).argmax(1) == torch.from_numpy(labels[test_idx])).float().mean().item()
    print(f"best val {best_acc:.4f}  held-out test {test_acc:.4f} ({len(test_idx)} pictures)")

    torch.onnx.export(
        model, (torch.zeros(1, 1, MODEL_SIZE, MODEL_SIZE),), os.path.join(HERE, "model.raw.onnx"),
        input_names=["image"], output_names=["logits"], opset_version=13, dynamo=False,
    )

    for folder in ("test", "samples"):
        shutil.rmtree(os.path.join(HERE, folder), ignore_errors=True)
    for i in test_idx:
        d = os.path.join(HERE, "test", str(labels[i]))
        os.makedirs(d, exist_ok=True)
        Image.fromarray(pictures[i], mode="L").save(os.path.join(d, f"digit-{i:04d}.png"), optimize=True)
    os.makedirs(os.path.join(HERE, "samples"))
    shown = {}
    for i in test_idx:
        if labels[i] not in shown and len(shown) < 10:
            shown[labels[i]] = i
    for n, (label, i) in enumerate(sorted(shown.items(), key=lambda kv: kv[1])):
        Image.fromarray(pictures[i], mode="L").save(
            os.path.join(HERE, "samples", f"frame-{n:02d}-digit-{label}.png"), optimize=True)


if __name__ == "__main__":
    if "--calibration-only" in sys.argv:
        write_calibration()
    else:
        main()
        write_calibration()
