"""Fixture: a small model exercising every operator of the micro engine, for the Cortex-M end-to-end
test (tests/tests/mcu.rs: the firmware under QEMU must print, value for value, what
`lepton-convert run` computes on the host).

model.onnx (float, random weights, fixed seed), two inputs and two outputs:
  image [1, 3, 12, 12] ─ Conv 3x3 (3→8) ─ Relu ─┬─ depthwise Conv 3x3 stride 2 ─ HardSwish ─┐
                                                └─ MaxPool 2x2 ────────────────────────────── Add ─ s
  s ─ grouped Conv 1x1 (groups 2) ─ Sub (s) ─ dilated Conv 3x3 (pad 2) ─ x
  x ─ GlobalAveragePool ─ Sigmoid ─ Mul (x, broadcast) ─ AveragePool 3x3 pad 1 ─ Concat (x) ─ y
  y ─ Conv 1x1 ─ "features" [1, 16, 6, 6] (output, NCHW)
  y ─ GlobalAveragePool ─ Flatten ─ Concat (side [1, 8]) ─ Gemm (24→10) ─ Softmax ─ "probs"
Lowered by `lepton-convert compile`, this covers Transpose, Conv (regular, depthwise, grouped,
dilated), Lut (Relu, HardSwish, Sigmoid chains, requantization), MaxPool, AvgPool, GlobalAvgPool,
Add, Mul (broadcast), Concat, Copy (Flatten), FullyConnected and Softmax.

calibration/<input>/*.npy: 32 random samples per input; inputs/<input>/*.npy: 3 float32 samples
the firmware quantizes at build time (as `lepton-convert run` does).

Usage: python3 make.py   (needs numpy, onnx; then the commands it prints)
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(3)


def weight(name, shape, scale=0.4):
    return numpy_helper.from_array((rng.normal(0, 1, shape) * scale).astype(np.float32), name)


def main():
    inits = [
        weight("w0", [8, 3, 3, 3]), weight("b0", [8], 0.1),
        weight("w_dw", [8, 1, 3, 3]), weight("b_dw", [8], 0.1),
        weight("w_g", [8, 4, 1, 1]), weight("b_g", [8], 0.1),
        weight("w_dil", [8, 8, 3, 3], 0.2), weight("b_dil", [8], 0.1),
        weight("w_head", [16, 16, 1, 1], 0.3), weight("b_head", [16], 0.1),
        weight("w_fc", [10, 24], 0.3), weight("b_fc", [10], 0.1),
        numpy_helper.from_array(np.array([3.0], np.float32), "three"),
        numpy_helper.from_array(np.array([6.0], np.float32), "six"),
        numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
    ]
    def n(op, inputs, outputs, **attrs):
        return helper.make_node(op, inputs, outputs, name=f"{op.lower()}_{outputs[0]}", **attrs)

    nodes = [
        n("Conv", ["image", "w0", "b0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Relu", ["c0"], ["r0"]),
        n("Conv", ["r0", "w_dw", "b_dw"], ["dw"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], group=8),
        # HardSwish written out as x * clip(x + 3, 0, 6) / 6.
        n("Add", ["dw", "three"], ["hs_a"]),
        n("Clip", ["hs_a", "zero", "six"], ["hs_c"]),
        n("Mul", ["dw", "hs_c"], ["hs_m"]),
        n("Div", ["hs_m", "six"], ["hs"]),
        n("MaxPool", ["r0"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Add", ["hs", "mp"], ["s"]),
        n("Conv", ["s", "w_g", "b_g"], ["g"], kernel_shape=[1, 1], group=2),
        n("Sub", ["g", "s"], ["d"]),
        n("Conv", ["d", "w_dil", "b_dil"], ["x"], kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2]),
        n("GlobalAveragePool", ["x"], ["gap"]),
        n("Sigmoid", ["gap"], ["gate"]),
        n("Mul", ["x", "gate"], ["se"]),
        n("AveragePool", ["se"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        n("Concat", ["ap", "x"], ["y"], axis=1),
        n("Conv", ["y", "w_head", "b_head"], ["features"], kernel_shape=[1, 1]),
        # (Pooling `y` rather than the output `features`: `lepton-convert quantize` leaves a graph
        # output float when an integer op also reads it.)
        n("GlobalAveragePool", ["y"], ["gap2"]),
        n("Flatten", ["gap2"], ["flat"], axis=1),
        n("Concat", ["flat", "side"], ["joined"], axis=1),
        n("Gemm", ["joined", "w_fc", "b_fc"], ["logits"], transB=1),
        n("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "micro_ops",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 12, 12]),
            helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 8]),
        ],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 16, 6, 6]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="lepton-tests")
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(HERE, "model.onnx"))
    for folder, count in (("calibration", 32), ("inputs", 3)):
        for name, shape in (("image", [1, 3, 12, 12]), ("side", [1, 8])):
            d = os.path.join(HERE, folder, name)
            os.makedirs(d, exist_ok=True)
            for i in range(count):
                np.save(os.path.join(d, f"{i:02}.npy"), rng.normal(0, 1, shape).astype(np.float32))
    print("wrote model.onnx, calibration/ and inputs/; now, from the workspace root:")
    print("  lepton-convert quantize runtime/tests/data/micro_ops/model.onnx"
          " --calibration runtime/tests/data/micro_ops/calibration -o runtime/tests/data/micro_ops/model.int8.onnx")
    print("  lepton-convert compile runtime/tests/data/micro_ops/model.int8.onnx -o runtime/tests/data/micro_ops/model.lpm --report")


if __name__ == "__main__":
    main()
