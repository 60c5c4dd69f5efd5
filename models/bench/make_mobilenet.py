"""Build a MobileNet-v1-class benchmark classifier (width 0.5, 224x224 RGB, 1000 classes;
about 150 M multiply-accumulates per frame) with seeded random weights, its float ONNX file and
calibration inputs, for the int8 figures in README.md ("Int8"). It measures speed on a model of
the size people deploy on a Raspberry Pi; it recognises nothing. Not committed (5 MB): run

    python3 models/bench/make_mobilenet.py target/mobilenet

then `lepton-convert quantize target/mobilenet/model.onnx --calibration target/mobilenet/calibration
-o target/mobilenet/model.int8.onnx` and `lepton-convert bench` each file. Needs numpy and onnx.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTH = 0.5
# (output channels at width 1, stride) of the depthwise-separable blocks of MobileNet v1.
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def main(out):
    rng = np.random.default_rng(5)
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(x, cin, cout, k, stride, groups, name):
        fan_in = cin // groups * k * k
        w = rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // groups, k, k))
        b = rng.normal(0, 0.05, cout)
        y = name + "_out"
        nodes.append(helper.make_node(
            "Conv", [x, const(name + "_w", w), const(name + "_b", b)], [y], name=name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=groups))
        r = name + "_relu6"
        nodes.append(helper.make_node("Clip", [y, const(name + "_lo", np.array(0.0)), const(name + "_hi", np.array(6.0))], [r], name=name + "_clip"))
        return r

    c = int(32 * WIDTH)
    x = conv("input", 3, c, 3, 2, 1, "conv0")
    for i, (cout, stride) in enumerate(BLOCKS):
        cout = int(cout * WIDTH)
        x = conv(x, c, c, 3, stride, c, f"dw{i}")
        x = conv(x, c, cout, 1, 1, 1, f"pw{i}")
        c = cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"))
    w = rng.normal(0, np.sqrt(1.0 / c), (c, 1000))
    nodes.append(helper.make_node("Gemm", ["flat", const("fc_w", w), const("fc_b", np.zeros(1000))], ["logits"], name="fc"))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1))
    graph = helper.make_graph(
        nodes, "mobilenet_v1_050",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    os.makedirs(os.path.join(out, "calibration"), exist_ok=True)
    onnx.save(model, os.path.join(out, "model.onnx"))
    for i in range(16):
        # Smooth random pictures (normalized): blurred noise, like natural images' low frequencies.
        small = rng.normal(0, 1, (1, 3, 14, 14))
        img = np.kron(small, np.ones((1, 1, 16, 16))) + rng.normal(0, 0.3, (1, 3, 224, 224))
        np.save(os.path.join(out, "calibration", f"{i:02d}.npy"), img.astype(np.float32))
    np.save(os.path.join(out, "input.npy"), img.astype(np.float32))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/mobilenet")
