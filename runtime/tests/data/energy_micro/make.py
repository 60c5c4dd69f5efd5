"""Fixture: the energy detector of ../make_energy_vad.py rebuilt from operators the micro engine
lowers (GlobalAveragePool, Flatten, Gemm), as a keyword model and as a VAD model, for the speaker
mode of the Cortex-M firmware (tests/tests/mcu.rs). ../energy_vad.onnx itself cannot go to the
micro engine: its ReduceMean has no integer lowering.

keyword.onnx: features [1, 1, 10, 20] (10 frames x 20 log-mel bands) -> mean log-mel energy m ->
  logits [2 (THRESHOLD - m), 2 (m - THRESHOLD)] for labels ["_silence_", "loud"]: "loud" fires as a
  keyword on loud audio (threshold 0.7 on 3 smoothed runs, 1 s refractory).
vad.onnx: the same mean -> one logit 2 (m - THRESHOLD), "speech" with a sigmoid; VAD hysteresis.
THRESHOLD is the one make_energy_vad.py computes for ../speech_gap.wav (quiet and loud halfway).

calibration/*.npy: feature windows of quiet and loud audio (the runtime's frontend definition,
../../../../models/common/audio_features.py). Then `lepton-convert quantize` and `compile` make
the .int8.onnx and .lpm files (commands printed at the end).

Usage: python3 make.py   (needs numpy, onnx)
"""
import os
import sys
import wave

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "..", "models", "common"))
from audio_features import features  # noqa: E402

SR, FRAMES, MELS, GAIN = 16000, 10, 20, 2.0
CFG = dict(sample_rate=SR, window=400, hop=160, fft=512, mels=MELS)
AUDIO = f"""sample_rate = {SR}
window = 400
hop = 160
fft = 512
mels = {MELS}
frames = {FRAMES}
stride = 2
"""


def read_wav(path):
    with wave.open(path) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64) / 32768


def model(labels, weights, biases, manifest):
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 1, FRAMES, MELS])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, len(labels)])
    nodes = [
        helper.make_node("GlobalAveragePool", ["features"], ["mean"], name="mean"),
        helper.make_node("Flatten", ["mean"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "w", "b"], ["scores"], name="decide", transB=1),
    ]
    inits = [
        numpy_helper.from_array(np.array(weights, np.float32).reshape(len(labels), 1), "w"),
        numpy_helper.from_array(np.array(biases, np.float32), "b"),
    ]
    m = helper.make_model(helper.make_graph(nodes, "energy", [x], [y], inits),
                          opset_imports=[helper.make_opsetid("", 13)], producer_name="lepton-tests")
    helper.set_model_props(m, {"lepton.manifest": manifest})
    onnx.checker.check_model(m)
    return m


def main():
    pcm = read_wav(os.path.join(HERE, "..", "speech_gap.wav"))
    quiet, loud = features(pcm[:SR], **CFG), features(pcm[SR:2 * SR], **CFG)
    threshold = float((quiet.mean() + loud.mean()) / 2)
    keyword = model(["_silence_", "loud"], [-GAIN, GAIN], [GAIN * threshold, -GAIN * threshold],
                    'task = "keyword"\nlabels = ["_silence_", "loud"]\n[output]\nscores = "logits"\n'
                    f'[audio]\n{AUDIO}[keyword]\nthreshold = 0.7\nsmoothing = 3\nrefractory_ms = 1000\n')
    vad = model(["speech"], [GAIN], [-GAIN * threshold],
                'task = "vad"\nlabels = ["speech"]\n[output]\nscores = "sigmoid"\n'
                f'[audio]\n{AUDIO}[vad]\non_threshold = 0.8\noff_threshold = 0.2\nmin_speech = 2\nhangover = 5\n')
    onnx.save(keyword, os.path.join(HERE, "keyword.onnx"))
    onnx.save(vad, os.path.join(HERE, "vad.onnx"))
    calib = os.path.join(HERE, "calibration")
    os.makedirs(calib, exist_ok=True)
    for k, start in enumerate(range(0, SR - FRAMES * 160 - 400, SR // 8)):
        for name, part in (("quiet", quiet), ("loud", loud)):
            window = part[start // 160:start // 160 + FRAMES].astype(np.float32)
            np.save(os.path.join(calib, f"{name}-{k}.npy"), window[None, None])
    print(f"threshold {threshold:.3f}; wrote keyword.onnx, vad.onnx, calibration/. Then, from the workspace root:")
    for m in ("keyword", "vad"):
        d = "runtime/tests/data/energy_micro"
        print(f"  lepton-convert quantize {d}/{m}.onnx --calibration {d}/calibration -o {d}/{m}.int8.onnx")
        print(f"  lepton-convert compile {d}/{m}.int8.onnx -o {d}/{m}.lpm")


if __name__ == "__main__":
    main()
