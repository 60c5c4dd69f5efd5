"""Build the benchmark model models/bench/model.raw.onnx (pack it with manifest.toml, see README.md).

A MobileNet-style classifier on 96x96 RGB: a strided 3x3 conv, then three depthwise-separable
blocks, global average pooling and a linear layer; about 5.1 M multiply-accumulates (10 MFLOP)
per frame. Its weights are seeded random: it exists to measure speed and overhead on a
camera-sized input, not to recognise anything.

Usage: python3 make.py   (needs torch, onnx)
"""
import os

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))


def separable(cin, cout, stride):
    return [
        nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin), nn.BatchNorm2d(cin), nn.ReLU6(),
        nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU6(),
    ]


def main():
    torch.manual_seed(11)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU6(),
        *separable(16, 32, 1), *separable(32, 64, 2), *separable(64, 128, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    ).eval()
    torch.onnx.export(
        model, (torch.zeros(1, 3, 96, 96),), os.path.join(HERE, "model.raw.onnx"),
        input_names=["image"], output_names=["logits"], opset_version=13, dynamo=False,
    )
    macs = 0
    x = torch.zeros(1, 3, 96, 96)
    for layer in model:
        y = layer(x)
        if isinstance(layer, nn.Conv2d):
            macs += y.numel() * (layer.in_channels // layer.groups) * layer.kernel_size[0] * layer.kernel_size[1]
        if isinstance(layer, nn.Linear):
            macs += layer.in_features * layer.out_features
        x = y
    print(f"wrote model.raw.onnx: {macs / 1e6:.2f} M MACs per frame")


if __name__ == "__main__":
    main()
