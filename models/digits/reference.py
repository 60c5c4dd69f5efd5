"""Reference outputs for the Rust parity test (runtime/tests/model.rs).

For every sample picture, computes the model input with the training code's preprocessing
(../common/imageops.py) and the logits with onnxruntime, and writes them to reference.json. The
Rust test feeds the same pictures through the runtime's own preprocessing and tract and must get
the same logits: proof that devices compute what the model was trained on.

Usage: python3 reference.py   (needs numpy, pillow, onnxruntime)
"""
import json
import os

import numpy as np
import onnxruntime as ort
from PIL import Image

from train import HERE, to_input

session = ort.InferenceSession(os.path.join(HERE, "model.onnx"))
reference = {}
for name in sorted(os.listdir(os.path.join(HERE, "samples"))):
    picture = np.array(Image.open(os.path.join(HERE, "samples", name)))
    x = to_input(picture)[None, None]
    (logits,) = session.run(None, {"image": x})
    reference[name] = [round(float(v), 6) for v in logits[0]]
with open(os.path.join(HERE, "reference.json"), "w") as f:
    json.dump(reference, f, indent=1)
print(f"wrote reference logits for {len(reference)} pictures")
