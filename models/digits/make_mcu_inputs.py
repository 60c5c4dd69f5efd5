"""Sample inputs of the Cortex-M firmware (firmware/mcu): mcu-inputs/*.npy, one int8 tensor per
sample picture, exactly what the device feeds the micro engine.

Each picture in samples/ goes through the runtime's preprocessing for this model's manifest
(gray, 16x16 stretch with half-pixel-centred bilinear sampling, (p / 255 - mean) / std) in float32
and in the runtime's order of operations (runtime/core/src/vision/preprocess.rs), then is quantized with
the scale and zero point of the model's input QuantizeLinear (the .lpm input tensor keeps them),
rounding half away from zero and saturating, as `lepton_runtime::tensor::quantize_i8`. Shape
[1, 1, 16, 16] (NCHW, as the model's input `image`). tests/tests/mcu.rs checks these files equal
the runtime's own preprocessing of the same pictures.

Usage: python3 make_mcu_inputs.py   (needs numpy, pillow, onnx)
"""
import math
import os
import tomllib

import numpy as np
import onnx
from onnx import numpy_helper
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
f32 = np.float32


def input_quantization(model_path):
    """Scale and zero point of the QuantizeLinear that reads the graph input."""
    model = onnx.load(model_path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    inputs = {i.name for i in model.graph.input} - set(inits)
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in inputs:
            return f32(inits[n.input[1]]), int(inits[n.input[2]])
    raise SystemExit(f"{model_path}: no QuantizeLinear on the input")


def preprocess(picture, out_w, out_h, mean, std):
    """Gray uint8 picture -> float32 model input, as the runtime's `preprocess` (stretch, gray)."""
    in_h, in_w = picture.shape
    inv_sx, inv_sy = f32(1) / (f32(out_w) / f32(in_w)), f32(1) / (f32(out_h) / f32(in_h))
    a, b = f32(1) / (f32(255) * f32(std)), -f32(mean) / f32(std)
    px = picture.astype(f32)
    out = np.empty((out_h, out_w), f32)
    for y in range(out_h):
        sy = min(max((f32(y) + f32(0.5)) * inv_sy - f32(0.5), f32(0)), f32(in_h - 1))
        y0 = int(sy)
        y1, wy = min(y0 + 1, in_h - 1), sy - f32(y0)
        for x in range(out_w):
            sx = min(max((f32(x) + f32(0.5)) * inv_sx - f32(0.5), f32(0)), f32(in_w - 1))
            x0 = int(sx)
            x1, wx = min(x0 + 1, in_w - 1), sx - f32(x0)
            top = px[y0, x0] + (px[y0, x1] - px[y0, x0]) * wx
            bottom = px[y1, x0] + (px[y1, x1] - px[y1, x0]) * wx
            out[y, x] = (top + (bottom - top) * wy) * a + b
    return out


def quantize(values, scale, zero_point):
    """round(v / scale) + zero_point, half away from zero, saturated to int8 (float32 division)."""
    def one(v):
        q = f32(v) / scale
        r = math.floor(abs(float(q)))
        r += 1 if abs(float(q)) - r >= 0.5 else 0
        return max(-128, min(127, int(math.copysign(r, float(q))) + zero_point))
    return np.array([one(v) for v in values.ravel()], np.int8).reshape(values.shape)


def main():
    with open(os.path.join(HERE, "manifest.toml"), "rb") as f:
        manifest = tomllib.load(f)
    size, mean, std = manifest["input"]["size"], manifest["input"]["mean"][0], manifest["input"]["std"][0]
    assert manifest["input"]["color"] == "gray" and manifest["input"]["layout"] == "nchw"
    scale, zero_point = input_quantization(os.path.join(HERE, "model.int8.onnx"))
    out_dir = os.path.join(HERE, "mcu-inputs")
    os.makedirs(out_dir, exist_ok=True)
    for name in sorted(os.listdir(os.path.join(HERE, "samples"))):
        picture = np.array(Image.open(os.path.join(HERE, "samples", name)).convert("L"))
        x = quantize(preprocess(picture, size[0], size[1], mean, std), scale, zero_point)
        np.save(os.path.join(out_dir, os.path.splitext(name)[0] + ".npy"), x[None, None])
    print(f"wrote {len(os.listdir(out_dir))} inputs to {out_dir} (scale {scale}, zero point {zero_point})")


if __name__ == "__main__":
    main()
