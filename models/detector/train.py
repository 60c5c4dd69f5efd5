"""Train the meter-digit detector shipped as models/detector/model.onnx.

Data: scenes composed by scenes.py — real handwritten digits (scikit-learn's 8x8 digits, 1,797
images from 43 writers) pasted onto real photographs (scikit-image's bundled photos) in meter-like
rows or scattered, with blur, lighting and noise. No download. The digits are split like the digit
classifier's (same seed and sizes): test-split digits and the held-out photos (scenes.TEST_PHOTOS)
appear only in the test split and the demo frames.

The model sees every frame through the runtime's own preprocessing: luma (0.299 R + 0.587 G +
0.114 B), half-pixel bilinear resize of the 320x240 frame to 160x120, pixel / 255
(../common/imageops.py mirrors it). Its output is YOLOv5-style, decoded inside the model:
[1, 300, 15] rows of (cx, cy, w, h in input pixels, objectness, 10 class probabilities) for a
20x15 grid of 8-pixel cells.

Outputs (next to this script):
  model.raw.onnx                 float model without manifest (pack it, see README.md)
  test/images/*.jpg, test/labels/*.txt   the held-out test split (YOLO label format)
  demo/images/*.jpg, demo/labels/*.txt  the demo sequence: a meter reading changing over frames, and a
                                 real photo without digits
  calibration/*.jpg              training-distribution frames for lepton-convert quantize

Usage: python3 train.py   (seeded; needs numpy, scipy, scikit-learn, scikit-image, torch, onnx,
pillow; about 40 minutes on one core)
"""
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
sys.path.insert(0, HERE)
import scenes  # noqa: E402
from imageops import bilinear_resize  # noqa: E402

SEED = 7
IN_W, IN_H = 160, 120
STRIDE = 8
GRID_W, GRID_H = IN_W // STRIDE, IN_H // STRIDE
ANCHOR = 16.0
CLASSES = 10
TRAIN_SCENES, VAL_SCENES, TEST_SCENES, CALIB_SCENES = 9000, 400, 200, 40
EPOCHS = 40
if os.environ.get("QUICK"):  # a smoke run of the whole script: QUICK=1 python3 train.py
    TRAIN_SCENES, VAL_SCENES, TEST_SCENES, EPOCHS = 320, 40, 20, 1


def to_input(frame: np.ndarray) -> np.ndarray:
    """A uint8 RGB frame -> the model input, as the runtime computes it."""
    f = frame.astype(np.float64)
    luma = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    return (bilinear_resize(luma, IN_W, IN_H) / 255.0).astype(np.float32)


class Detector(nn.Module):
    """Six 3x3 convolutions (three with stride 2) and a 1x1 head on a 20x15 grid; decode built in."""

    def __init__(self):
        super().__init__()

        def block(i, o, s, d=1):
            return nn.Sequential(nn.Conv2d(i, o, 3, s, padding=d, dilation=d, bias=False), nn.BatchNorm2d(o), nn.ReLU())

        self.body = nn.Sequential(
            block(1, 16, 2), block(16, 32, 2), block(32, 32, 1), block(32, 64, 2), block(64, 64, 1), block(64, 64, 1, 2),
        )
        self.head = nn.Conv2d(64, 5 + CLASSES, 1)
        gy, gx = torch.meshgrid(torch.arange(GRID_H), torch.arange(GRID_W), indexing="ij")
        self.register_buffer("grid", torch.stack([gx, gy], -1).reshape(1, GRID_H * GRID_W, 2).float())

    def raw(self, x):
        """[B, cells, 15] raw head outputs."""
        p = self.head(self.body(x))
        return p.flatten(2).transpose(1, 2)

    @staticmethod
    def boxes(raw, grid):
        """Decoded centre, size in input pixels."""
        xy = (torch.sigmoid(raw[..., 0:2]) * 2 - 0.5 + grid) * STRIDE
        wh = ANCHOR * torch.exp(raw[..., 2:4].clamp(-4, 4))
        return xy, wh

    def forward(self, x):
        raw = self.raw(x)
        xy, wh = self.boxes(raw, self.grid)
        obj = torch.sigmoid(raw[..., 4:5])
        cls = torch.softmax(raw[..., 5:], dim=-1)
        return torch.cat([xy, wh, obj, cls], dim=-1)


def make_split(digits, labels, photos, count, rng, store_frames=False):
    xs = np.zeros((count, 1, IN_H, IN_W), np.float16)
    annotations, frames = [], []
    for i in range(count):
        frame, ann = scenes.scene(digits, labels, photos, rng)
        xs[i, 0] = to_input(frame)
        # Boxes in model-input pixels.
        annotations.append(np.array([[c, x0 / 2, y0 / 2, x1 / 2, y1 / 2] for c, x0, y0, x1, y1 in ann], np.float32).reshape(-1, 5))
        if store_frames:
            frames.append((frame, ann))
    return xs, annotations, frames


def targets(batch_ann, device="cpu"):
    """Per cell: objectness target, class, box (x0, y0, x1, y1), with YOLOv5-style neighbour cells."""
    b = len(batch_ann)
    n = GRID_H * GRID_W
    obj = torch.zeros(b, n)
    cls = torch.full((b, n), -1, dtype=torch.long)
    box = torch.zeros(b, n, 4)
    for i, ann in enumerate(batch_ann):
        for c, x0, y0, x1, y1 in ann:
            cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
            gx, gy = int(cx), int(cy)
            cells = [(gx, gy)]
            fx, fy = cx - gx, cy - gy
            cells.append((gx - 1, gy) if fx < 0.5 else (gx + 1, gy))
            cells.append((gx, gy - 1) if fy < 0.5 else (gx, gy + 1))
            for x, y in cells:
                if 0 <= x < GRID_W and 0 <= y < GRID_H:
                    k = y * GRID_W + x
                    obj[i, k] = 1
                    cls[i, k] = int(c)
                    box[i, k] = torch.tensor([x0, y0, x1, y1])
    return obj, cls, box


def translate(x, anns, rng, max_shift=16):
    """Shifts each input by a random whole number of pixels (edges replicated), boxes with it;
    digits pushed mostly out of the frame are dropped."""
    out = torch.empty_like(x)
    moved = []
    for i in range(len(x)):
        dx, dy = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
        img = torch.roll(x[i], shifts=(dy, dx), dims=(1, 2))
        if dy > 0:
            img[:, :dy] = img[:, dy:dy + 1]
        elif dy < 0:
            img[:, dy:] = img[:, dy - 1:dy]
        if dx > 0:
            img[:, :, :dx] = img[:, :, dx:dx + 1]
        elif dx < 0:
            img[:, :, dx:] = img[:, :, dx - 1:dx]
        out[i] = img
        a = anns[i].copy()
        if len(a):
            a[:, [1, 3]] += dx
            a[:, [2, 4]] += dy
            w0 = a[:, 3] - a[:, 1]
            a[:, [1, 3]] = a[:, [1, 3]].clip(0, IN_W)
            a[:, [2, 4]] = a[:, [2, 4]].clip(0, IN_H)
            keep = (a[:, 3] - a[:, 1]) > 0.6 * w0
            keep &= (a[:, 4] - a[:, 2]) > 4
            a = a[keep]
        moved.append(a)
    return out, moved


def giou(a, b):
    """Generalized IoU of boxes (x0, y0, x1, y1)."""
    ix0, iy0 = torch.max(a[:, 0], b[:, 0]), torch.max(a[:, 1], b[:, 1])
    ix1, iy1 = torch.min(a[:, 2], b[:, 2]), torch.min(a[:, 3], b[:, 3])
    inter = (ix1 - ix0).clamp(min=0) * (iy1 - iy0).clamp(min=0)
    area = lambda t: (t[:, 2] - t[:, 0]).clamp(min=0) * (t[:, 3] - t[:, 1]).clamp(min=0)
    union = area(a) + area(b) - inter + 1e-7
    iou = inter / union
    cx0, cy0 = torch.min(a[:, 0], b[:, 0]), torch.min(a[:, 1], b[:, 1])
    cx1, cy1 = torch.max(a[:, 2], b[:, 2]), torch.max(a[:, 3], b[:, 3])
    hull = (cx1 - cx0) * (cy1 - cy0) + 1e-7
    return iou - (hull - union) / hull


def loss_fn(model, x, batch_ann):
    raw = model.raw(x)
    obj_t, cls_t, box_t = targets(batch_ann)
    pos = obj_t > 0
    xy, wh = Detector.boxes(raw, model.grid)
    pred = torch.cat([xy - wh / 2, xy + wh / 2], -1)
    l_box = (1 - giou(pred[pos], box_t[pos])).mean() if pos.any() else raw.sum() * 0
    l_obj = F.binary_cross_entropy_with_logits(raw[..., 4], obj_t, pos_weight=torch.tensor(4.0))
    l_cls = F.cross_entropy(raw[..., 5:][pos], cls_t[pos]) if pos.any() else raw.sum() * 0
    return 5 * l_box + 10 * l_obj + l_cls


def nms_decode(out, score_threshold=0.25, iou_threshold=0.45):
    """Numpy copy of the runtime's YOLOv5 decode + class-aware NMS, for validation."""
    dets = []
    scores = out[:, 4:5] * out[:, 5:]
    cls = scores.argmax(1)
    best = scores.max(1)
    keep = best >= score_threshold
    for k in np.argsort(-best):
        if not keep[k]:
            continue
        cx, cy, w, h = out[k, :4]
        box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        if any(d[0] == cls[k] and iou(box, d[2]) > iou_threshold for d in dets):
            continue
        dets.append((cls[k], best[k], box))
    return dets


def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def mean_ap(all_dets, all_ann, threshold=0.5):
    """VOC-style mAP@0.5 (all-point interpolation), averaged over classes present."""
    aps = []
    for c in range(CLASSES):
        gts = {i: [a[1:] for a in ann if int(a[0]) == c] for i, ann in enumerate(all_ann)}
        npos = sum(len(g) for g in gts.values())
        if npos == 0:
            continue
        used = {i: [False] * len(g) for i, g in gts.items()}
        preds = sorted([(s, i, b) for i, dets in enumerate(all_dets) for (k, s, b) in dets if k == c], key=lambda t: -t[0])
        tp = []
        for s, i, b in preds:
            ious = [iou(b, g) for g in gts[i]]
            j = int(np.argmax(ious)) if ious else -1
            if j >= 0 and ious[j] >= threshold and not used[i][j]:
                used[i][j] = True
                tp.append(1)
            else:
                tp.append(0)
        tp = np.array(tp, np.float64)
        ctp = np.cumsum(tp)
        recall = ctp / npos
        precision = ctp / np.arange(1, len(tp) + 1)
        mrec = np.concatenate([[0], recall, [1]])
        mpre = np.concatenate([[0], precision, [0]])
        for k in range(len(mpre) - 2, -1, -1):
            mpre[k] = max(mpre[k], mpre[k + 1])
        idx = np.where(mrec[1:] != mrec[:-1])[0]
        aps.append(float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1])))
    return float(np.mean(aps))


def evaluate(model, xs, anns):
    was_training = model.training
    model.eval()
    dets = []
    with torch.no_grad():
        for i in range(0, len(xs), 100):
            out = model(torch.from_numpy(xs[i:i + 100].astype(np.float32))).numpy()
            dets += [nms_decode(o) for o in out]
    model.train(was_training)
    return mean_ap(dets, anns)


def fuse(model):
    """Folds each BatchNorm into its convolution (the exported graph has no BatchNormalization)."""
    for blk in model.body:
        conv, bn = blk[0], blk[1]
        fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
        blk[0], blk[1] = fused, nn.Identity()
    return model


def save_frames(folder, frames, prefix):
    """Frames as folder/images/*.jpg and (YOLO layout) folder/labels/*.txt."""
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    os.makedirs(os.path.join(folder, "labels"), exist_ok=True)
    for i, (frame, ann) in enumerate(frames):
        name = f"{prefix}{i:03d}"
        Image.fromarray(frame).save(os.path.join(folder, "images", name + ".jpg"), quality=92)
        with open(os.path.join(folder, "labels", name + ".txt"), "w") as f:
            f.write(scenes.yolo_lines(ann))


def demo_frames(digits, labels, photos, rng):
    """A meter whose reading advances: one photo background, a plate with five digits, small camera
    shake and lighting changes; then a real photo without digits."""
    by_label = {d: np.where(labels == d)[0] for d in range(10)}
    base = scenes.background(photos[:1], rng)
    reading = 4719
    frames = []
    glyphs = {}
    for t in range(7):
        value = f"{reading + t * 3:05d}"
        frame = base.copy()
        dx, dy = rng.integers(-3, 4, size=2)
        x, y, h = 80 + dx, 90 + dy, 40
        frame[y - 8:y + h + 10, x - 8:x + 5 * 32 + 2] = 232.0
        ann = []
        for pos, ch in enumerate(value):
            d = int(ch)
            if (pos, d) not in glyphs:
                k = by_label[d][rng.integers(len(by_label[d]))]
                glyphs[(pos, d)] = scenes.glyph(digits[k], h, rng)
            g = glyphs[(pos, d)]
            gx = x + pos * 32 + (28 - g.shape[1]) // 2
            scenes.paste(frame, g, gx, y, np.array([20.0, 20.0, 30.0]))
            box = scenes.ink_box(g, gx, y)
            ann.append((d, *box))
        frame = frame * rng.uniform(0.85, 1.1) + rng.normal(0, 3, size=frame.shape)
        frames.append((np.clip(np.round(frame), 0, 255).astype(np.uint8), ann))
    photo = scenes.background(photos[1:], np.random.default_rng(SEED + 1))
    frames.append((np.clip(np.round(photo), 0, 255).astype(np.uint8), []))
    return frames


def main():
    rng = np.random.default_rng(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    digits = load_digits()
    # The digit classifier's split (same seed and sizes): test digits never appear in training scenes.
    idx = np.arange(len(digits.target))
    rest, test_idx = train_test_split(idx, test_size=300, stratify=digits.target, random_state=SEED)
    train_idx, val_idx = train_test_split(rest, test_size=200, stratify=digits.target[rest], random_state=SEED)
    train_photos = [scenes.load_photo(n) for n in scenes.TRAIN_PHOTOS]
    test_photos = [scenes.load_photo(n) for n in scenes.TEST_PHOTOS]
    t0 = time.time()
    # One generator per split: changing how training scenes are made leaves the test split as it is.
    split_rng = {k: np.random.default_rng([SEED, i]) for i, k in enumerate(["train", "val", "calib", "test"])}
    x_tr, a_tr, _ = make_split(digits.images[train_idx], digits.target[train_idx], train_photos, TRAIN_SCENES, split_rng["train"])
    x_va, a_va, _ = make_split(digits.images[val_idx], digits.target[val_idx], train_photos, VAL_SCENES, split_rng["val"])
    _, _, calib = make_split(digits.images[train_idx], digits.target[train_idx], train_photos, CALIB_SCENES, split_rng["calib"], True)
    x_te, a_te, test = make_split(digits.images[test_idx], digits.target[test_idx], test_photos, TEST_SCENES, split_rng["test"], True)
    print(f"scenes made in {time.time() - t0:.0f} s", flush=True)

    model = Detector()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = EPOCHS * (TRAIN_SCENES // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    best, best_state = -1.0, None
    for epoch in range(EPOCHS):
        order = rng.permutation(TRAIN_SCENES)
        total = 0.0
        for i in range(0, TRAIN_SCENES - 63, 64):
            b = order[i:i + 64]
            x = torch.from_numpy(x_tr[b].astype(np.float32))
            # Photometric augmentation in input space: the scenes are fixed, so vary them per epoch.
            x = (x * torch.empty(len(b), 1, 1, 1).uniform_(0.8, 1.2) + torch.empty(len(b), 1, 1, 1).uniform_(-0.08, 0.08)).clamp(0, 1)
            anns = [a_tr[k] for k in b]
            x, anns = translate(x, anns, rng)
            loss = loss_fn(model, x, anns)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        m = evaluate(model, x_va, a_va)
        print(f"epoch {epoch:2d} loss {total / (TRAIN_SCENES // 64):.3f} val mAP@0.5 {m:.4f} ({time.time() - t0:.0f} s)", flush=True)
        if m > best:
            best, best_state = m, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    print(f"best val mAP@0.5 {best:.4f}; test mAP@0.5 (python) {evaluate(model, x_te, a_te):.4f}")

    fuse(model)
    torch.onnx.export(
        model, torch.zeros(1, 1, IN_H, IN_W), os.path.join(HERE, "model.raw.onnx"),
        input_names=["image"], output_names=["detections"], opset_version=13, dynamo=False,
    )
    for sub in ["test", "demo", "calibration"]:
        shutil.rmtree(os.path.join(HERE, sub), ignore_errors=True)
    save_frames(os.path.join(HERE, "test"), test, "scene")
    os.makedirs(os.path.join(HERE, "calibration"))
    for i, (frame, _) in enumerate(calib):
        Image.fromarray(frame).save(os.path.join(HERE, "calibration", f"calib{i:03d}.jpg"), quality=92)
    demo = demo_frames(digits.images[test_idx], digits.target[test_idx], test_photos, np.random.default_rng(SEED + 2))
    save_frames(os.path.join(HERE, "demo"), demo, "frame")
    print("wrote model.raw.onnx, test/, demo/, calibration/")


if __name__ == "__main__":
    main()
