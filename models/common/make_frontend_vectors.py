"""Writes runtime/tests/data/frontend.wav and frontend.json: a test signal and the features this
module computes for it, with two configurations (log-mel and MFCC). runtime/tests/frontend.rs
feeds the WAV through the Rust frontend and compares.

Usage: python3 make_frontend_vectors.py   (needs numpy)
"""
import json
import os
import wave

import numpy as np

from audio_features import features

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "runtime", "tests", "data")

rng = np.random.default_rng(3)
sr = 16000
t = np.arange(int(0.5 * sr)) / sr
# A chirp from 200 Hz to 6 kHz, a 1 kHz burst and low noise: energy in every band over time.
signal = 0.4 * np.sin(2 * np.pi * (200 * t + (5800 / (2 * 0.5)) * t * t))
signal[2000:3000] += 0.3 * np.sin(2 * np.pi * 1000 * t[2000:3000])
signal += rng.normal(0, 0.01, len(t))
pcm = np.clip(np.round(signal * 32768), -32768, 32767).astype(np.int16)

os.makedirs(OUT, exist_ok=True)
with wave.open(os.path.join(OUT, "frontend.wav"), "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(sr)
    w.writeframes(pcm.tobytes())

x = pcm.astype(np.float64) / 32768.0
configs = [
    dict(sample_rate=sr, window=400, hop=160, fft=512, mels=40, mfcc=0, fmin=20.0, fmax=8000.0),
    dict(sample_rate=sr, window=480, hop=320, fft=512, mels=40, mfcc=10, fmin=60.0, fmax=7600.0),
]
out = []
for c in configs:
    f = features(x, **c)
    out.append({"config": c, "features": np.round(f, 6).tolist()})
    print(f"{c}: {f.shape}")
with open(os.path.join(OUT, "frontend.json"), "w") as fh:
    json.dump(out, fh)
