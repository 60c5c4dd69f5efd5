"""Build MLPerf Tiny's keyword-spotting network (DS-CNN, "Hello Edge" DS-CNN-S: 49x10 MFCC input,
Conv 10x4 /2 to 64 channels, 4 x [depthwise 3x3 + pointwise 1x1, 64 channels], average pool,
Linear(12); about 2.66 M multiply-accumulates) with seeded random weights, its float ONNX file and
calibration inputs. It measures the firmware's speed on the model MLPerf Tiny times on
Cortex-M4 boards (README.md, "Microcontrollers"); it recognises nothing. Not committed: run

    python3 models/bench/make_dscnn.py target/dscnn

then `lepton-convert quantize target/dscnn/model.onnx --calibration target/dscnn/calibration
-o target/dscnn/model.int8.onnx` and `scripts/arm-instructions target/dscnn/model.int8.onnx
cortex-m4`. Needs numpy and onnx.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHANNELS = 64
BLOCKS = 4


def main(out):
    rng = np.random.default_rng(11)
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(x, cin, cout, kernel, stride, pads, groups, name):
        fan_in = cin // groups * kernel[0] * kernel[1]
        w = rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // groups, *kernel))
        b = rng.normal(0, 0.05, cout)
        y = name + "_out"
        nodes.append(helper.make_node(
            "Conv", [x, const(name + "_w", w), const(name + "_b", b)], [y], name=name,
            kernel_shape=list(kernel), strides=list(stride), pads=pads, group=groups))
        r = name + "_relu"
        nodes.append(helper.make_node("Relu", [y], [r], name=name + "_relu"))
        return r

    # "same" padding of the 10x4 /2 convolution on 49x10: 25x5 outputs.
    x = conv("input", 1, CHANNELS, (10, 4), (2, 2), [4, 1, 5, 1], 1, "conv0")
    for i in range(BLOCKS):
        x = conv(x, CHANNELS, CHANNELS, (3, 3), (1, 1), [1, 1, 1, 1], CHANNELS, f"dw{i}")
        x = conv(x, CHANNELS, CHANNELS, (1, 1), (1, 1), [0, 0, 0, 0], 1, f"pw{i}")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"))
    w = rng.normal(0, np.sqrt(1.0 / CHANNELS), (CHANNELS, 12))
    nodes.append(helper.make_node("Gemm", ["flat", const("fc_w", w), const("fc_b", np.zeros(12))], ["logits"], name="fc"))
    graph = helper.make_graph(
        nodes, "mlperf_tiny_ds_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 49, 10])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 12])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    os.makedirs(os.path.join(out, "calibration"), exist_ok=True)
    onnx.save(model, os.path.join(out, "model.onnx"))
    for i in range(16):
        np.save(os.path.join(out, "calibration", f"{i:02d}.npy"), rng.normal(0, 1, (1, 1, 49, 10)).astype(np.float32))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/dscnn")
