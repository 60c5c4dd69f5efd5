"""Test fixture for the audio pipeline: energy_vad.onnx and speech_gap.wav.

energy_vad.onnx is a real (tiny) VAD model written by hand: speech probability =
sigmoid(2 * (mean log-mel energy of the last 10 frames - THRESHOLD)), with its manifest embedded.
speech_gap.wav: 1 s of faint noise, 1 s of loud modulated noise ("speech"), 1 s of faint noise,
0.6 s loud, 1 s faint: the pipeline must report two speech segments at those times.

Usage: python3 make_energy_vad.py   (needs numpy, onnx)
"""
import os
import sys
import wave

import numpy as np
import onnx
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "models", "common"))
from audio_features import features  # noqa: E402

SR, FRAMES, MELS = 16000, 10, 20
CFG = dict(sample_rate=SR, window=400, hop=160, fft=512, mels=MELS)

rng = np.random.default_rng(5)


def segment(seconds, loud):
    n = int(seconds * SR)
    if not loud:
        return rng.normal(0, 0.001, n)
    t = np.arange(n) / SR
    return rng.normal(0, 0.1, n) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))


signal = np.concatenate([segment(1, False), segment(1, True), segment(1, False), segment(0.6, True), segment(1, False)])
pcm = np.clip(np.round(signal * 32768), -32768, 32767).astype(np.int16)
with wave.open(os.path.join(HERE, "speech_gap.wav"), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(SR)
    w.writeframes(pcm.tobytes())

quiet = features(pcm[:SR].astype(np.float64) / 32768, **CFG).mean()
loud = features(pcm[SR:2 * SR].astype(np.float64) / 32768, **CFG).mean()
threshold = float((quiet + loud) / 2)
print(f"mean log-mel: quiet {quiet:.2f}, loud {loud:.2f}, threshold {threshold:.2f}")

x = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, FRAMES, MELS])
y = helper.make_tensor_value_info("speech", TensorProto.FLOAT, [1])
nodes = [
    helper.make_node("ReduceMean", ["features"], ["mean"], axes=[1, 2], keepdims=0),
    helper.make_node("Sub", ["mean", "threshold"], ["centred"]),
    helper.make_node("Mul", ["centred", "gain"], ["speech"]),
]
inits = [
    helper.make_tensor("threshold", TensorProto.FLOAT, [], [threshold]),
    helper.make_tensor("gain", TensorProto.FLOAT, [], [2.0]),
]
graph = helper.make_graph(nodes, "energy_vad", [x], [y], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="lepton-tests")
manifest = f"""task = "vad"
labels = ["speech"]
[output]
scores = "sigmoid"
[audio]
sample_rate = {SR}
window = 400
hop = 160
fft = 512
mels = {MELS}
frames = {FRAMES}
stride = 2
[vad]
on_threshold = 0.8
off_threshold = 0.2
min_speech = 2
hangover = 5
"""
helper.set_model_props(model, {"lepton.manifest": manifest})
onnx.checker.check_model(model)
onnx.save(model, os.path.join(HERE, "energy_vad.onnx"))
