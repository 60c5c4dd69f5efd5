"""Train the keyword spotter shipped as models/keywords/model.onnx.

Usage:
  apt-get install espeak-ng                      # the only speech source; nothing is downloaded
  pip install torch==2.15.0 numpy scipy onnx onnxruntime
  python3 train.py [--cache DIR]                 # seeded; about 12 min on one core

Data: every utterance is synthesized with espeak-ng (../common/espeak_synth.py): a speaker is an
espeak accent (en, en-us, en-gb-scotland, ...) with a voice variant (m1..m8, f1..f5, klatt*,
whisper, croak and ~80 more), at random speed, pitch and amplitude. Speakers are split three ways,
so no test speaker is ever heard in training or model selection:
  test:        accents en-gb-x-rp and en-029, each with one of the TEST_VARIANTS (12 speakers);
  validation:  the other six accents with the VAL_VARIANTS (model selection only);
  training:    the other six accents with every remaining variant.
Each 1 s clip (16 kHz) places one word at a random offset over white, pink, brown or mains-hum
noise at a random SNR, sometimes with faint babble of other (non-keyword) words; `_unknown_` is one
of ~45 other words (including near-misses such as "yet", "town", "lift", "top", "goal");
`_silence_` is noise alone. Training clips are mixed afresh every epoch.

The model sees the runtime's own features (../common/audio_features.py, batched in
../common/audio_batch.py): 98 frames x 40 log-mel bands of a 1 s clip, laid out [1, 1, 98, 40]
(frames x features, oldest frame first, as runtime/core/src/audio/frontend.rs FeatureWindow copies them).

Outputs (next to this script):
  model.raw.onnx          float model, no manifest (pack it: see README.md)
  test/<label>/*.wav      held-out-speaker test split (1 s, 16 kHz, int16)
  calibration/*.wav       36 clips from training speakers for `lepton-convert quantize`
  demo.wav                keywords by a held-out speaker with quiet noise between them
Printed: validation accuracy per epoch, accuracy on the committed test split and on a larger
held-out-speaker set (not written), and a streaming simulation of the [keyword] decision.
"""
import argparse
import os
import shutil
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
import espeak_synth as es  # noqa: E402
from audio_batch import BatchFrontend  # noqa: E402
from audio_features import features as ref_features  # noqa: E402

SEED = 20240611
SR = 16000
CLIP = SR  # 1 s
AUDIO = dict(sample_rate=SR, window=480, hop=160, fft=512, mels=40, mfcc=0, fmin=20.0, fmax=8000.0)
FRAMES = 98  # 1 + (16000 - 480) // 160

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
LABELS = ["_silence_", "_unknown_"] + KEYWORDS
NEAR_MISSES = ["yet", "upper", "town", "lift", "bright", "own", "of", "top", "goal", "nope", "light", "dawn",
               "not", "gone", "done", "nose", "bet"]
UNKNOWN_WORDS = [
    "cat", "house", "seven", "bird", "tree", "wow", "happy", "bed", "dog", "learn", "follow",
    "forward", "visual", "marvin", "sheila", "backward", "zero", "one", "two", "three", "four",
    "five", "six", "eight", "nine", "hello", "water", "table", "music", "window",
] + NEAR_MISSES  # espeak homophones of keywords ("know", "write") are left out: same phonemes

TEST_ACCENTS = ["en-gb-x-rp", "en-029"]
TEST_VARIANTS = ["m3", "f4", "klatt2", "croak", "Andy", "belinda"]
VAL_VARIANTS = ["m6", "f2", "klatt4", "Storm", "linda"]
TRAIN_ACCENTS = [a for a in es.ACCENTS if a not in TEST_ACCENTS]
TRAIN_VARIANTS = [v for v in es.VARIANTS if v not in TEST_VARIANTS + VAL_VARIANTS]

N_TRAIN_KW, N_TRAIN_UNK = 600, 90      # utterances per keyword / per unknown word
N_VAL_KW, N_VAL_UNK = 60, 8
N_TEST_KW, N_TEST_UNK = 118, 16        # test speakers: 18 per label committed, the rest in-memory
COMMITTED_TEST_PER_LABEL = 18
EPOCHS = 24
CUT_SHARE = 0.4                        # of _unknown_ training clips: words cut at the clip's edge
BATCH = 128
MAX_WORD = int(0.95 * SR)


# ----------------------------------------------------------------------------------------------
# Speech synthesis

def plan(words, n_each, accents, variants, rng):
    """(word, accent, variant, speed, pitch, amplitude) for n_each utterances of every word."""
    out = []
    for w in words:
        for _ in range(n_each):
            out.append((w, str(rng.choice(accents)), str(rng.choice(variants)), int(rng.integers(110, 231)),
                        int(rng.integers(15, 86)), int(rng.integers(60, 181))))
    return out


def speak(item):
    word, accent, variant, speed, pitch, amp = item
    x = es.trim(es.synth(word, accent, variant, speed, pitch, amp))
    while len(x) > MAX_WORD:  # too slow for a 1 s clip: speak faster
        speed += 30
        x = es.trim(es.synth(word, accent, variant, speed, pitch, amp))
    return x


def synthesize(items, cache_dir, name):
    """Utterances for `items`, cached on disk (../common/espeak_synth.py, synthesize_cached)."""
    return es.synthesize_cached(items, speak, cache_dir, f"kws-{name}")


# ----------------------------------------------------------------------------------------------
# Mixing 1 s clips

class NoiseBank:
    """Long unit-RMS noise recordings to cut random segments from."""

    def __init__(self, rng, seconds=30):
        n = seconds * SR
        t = np.arange(n) / SR
        self.banks = {k: es.coloured_noise(n, k, rng) for k in ("white", "pink", "brown")}
        hum = np.zeros(n)
        for f0 in (50.0, 60.0):
            h = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3))
                    for k in range(1, 8))
            hum = hum + h
        hum += 0.3 * self.banks["pink"]
        self.banks["hum"] = hum / es.rms(hum)
        self.kinds = list(self.banks)

    def segment(self, rng, n, kind=None):
        kind = kind or self.kinds[rng.integers(len(self.kinds))]
        b = self.banks[kind]
        s = rng.integers(0, len(b) - n)
        return b[s:s + n] * rng.choice([-1.0, 1.0])


def speech_level(x):
    act = es.activity(x)
    blk = x[:len(act) * 160].reshape(-1, 160)[act]
    return es.rms(blk) if len(blk) else es.rms(x)


def mix(word, rng, noise, babble, cut=False):
    """One 1 s clip over noise: `word` (or nothing, for silence) whole at a random offset, ending
    at least 0.1 s before the clip does; or with `cut`, only 20-70 % of it, at either edge (the
    view of a stream as a word enters or leaves the window)."""
    clip = np.zeros(CLIP)
    if word is not None:
        level = 10 ** (rng.uniform(-38, -10) / 20)
        w = word * (level / speech_level(word))
        if cut:
            vis = max(1, int(rng.uniform(0.2, 0.7) * len(w)))
            if rng.random() < 0.5:
                clip[CLIP - vis:] += w[:vis]
            else:
                clip[:vis] += w[len(w) - vis:]
        else:
            margin = min(int(0.1 * SR), CLIP - len(w))
            off = rng.integers(0, CLIP - len(w) - margin + 1)
            clip[off:off + len(w)] += w
        if rng.random() < 0.3 and babble:
            for _ in range(rng.integers(1, 3)):
                b = babble[rng.integers(len(babble))]
                b = b[:CLIP] * (level * 10 ** (rng.uniform(-28, -14) / 20) / speech_level(b))
                o = rng.integers(0, CLIP - len(b) + 1)
                clip[o:o + len(b)] += b
        if rng.random() < 0.9:
            clip += noise.segment(rng, CLIP) * level * 10 ** (-rng.uniform(3, 40) / 20)
    else:
        r = rng.random()
        if r < 0.1:
            level = 10 ** (rng.uniform(-96, -80) / 20)  # near-digital silence
        else:
            level = 10 ** (rng.uniform(-75, -22) / 20)
        clip += noise.segment(rng, CLIP) * level
        if rng.random() < 0.3:
            clip += noise.segment(rng, CLIP) * level * rng.uniform(0.1, 1.0)
    # As written to a 16-bit WAV and read back by the runtime.
    return np.clip(np.round(clip * 32768), -32768, 32767) / 32768.0


def sample_labels(n_kw_each, n_unk, n_sil, rng):
    labels = [LABELS.index(k) for k in KEYWORDS for _ in range(n_kw_each)] + [1] * n_unk + [0] * n_sil
    return rng.permutation(labels)


class Source:
    """Utterances grouped by label index (and the unknown ones into near-misses and others)."""

    def __init__(self, items, utts):
        self.by_label = {i: [] for i in range(len(LABELS))}
        self.near, self.other = [], []
        for it, u in zip(items, utts):
            self.by_label[LABELS.index(it[0]) if it[0] in KEYWORDS else 1].append(u)
            if it[0] not in KEYWORDS:
                (self.near if it[0] in NEAR_MISSES else self.other).append(u)
        self.all = utts

    def clip(self, label, rng, noise, babble, cut_share=0.0):
        """A clip of `label`. For `_unknown_`: with probability `cut_share` any word (keywords too)
        cut at an edge, else a whole other word, a near-miss half of the time."""
        if label == 0:
            return mix(None, rng, noise, babble)
        if label == 1:
            if rng.random() < cut_share:
                return mix(self.all[rng.integers(len(self.all))], rng, noise, babble, cut=True)
            pool = self.near if rng.random() < 0.5 else self.other
        else:
            pool = self.by_label[label]
        return mix(pool[rng.integers(len(pool))], rng, noise, babble)


# ----------------------------------------------------------------------------------------------
# Model

class DSCNN(nn.Module):
    """Depthwise-separable CNN over [1, 1, 98, 40] log-mel features, ~28 k parameters.

    conv 10x4 /2 (64) -> 5 x [depthwise 3x3 + pointwise 1x1] (first one /2) -> global average
    -> linear. The first convolution has no padding so the input normalization folds into it
    exactly at export.
    """

    def __init__(self, n_classes, channels=64, blocks=5, mean=0.0, std=1.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.normalize = True
        c = channels
        layers = [nn.Conv2d(1, c, (10, 4), stride=(2, 2), bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        for b in range(blocks):
            s = 2 if b == 0 else 1
            layers += [nn.Conv2d(c, c, 3, stride=s, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # GlobalAveragePool in ONNX (the micro engine has it)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(c, n_classes)

    def forward(self, x):
        if self.normalize:
            x = (x - self.mean) / self.std
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))

    def fold_normalization(self):
        """conv((x - m) / s) == conv'(x): w' = w / s, b' = -m/s * sum(w) (valid padding only)."""
        conv = self.features[0]
        w = conv.weight.data
        bias = -(self.mean / self.std) * w.sum(dim=(1, 2, 3))
        new = nn.Conv2d(1, w.shape[0], conv.kernel_size, stride=conv.stride, bias=True)
        new.weight.data = w / self.std
        new.bias.data = bias
        self.features[0] = new
        self.normalize = False


def spec_augment(x, rng):
    """Mild frequency and time masking (with the input's floor value) on a batch [B, 1, T, F]."""
    x = x.copy()
    floor = x.min()
    for i in range(len(x)):
        if rng.random() < 0.5:
            f = rng.integers(1, 6)
            f0 = rng.integers(0, x.shape[3] - f)
            x[i, :, :, f0:f0 + f] = x[i].mean()
        if rng.random() < 0.3:
            t = rng.integers(1, 8)
            t0 = rng.integers(0, x.shape[2] - t)
            x[i, :, t0:t0 + t, :] = floor
    return x


# ----------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "lepton-synth-cache"),
                    help="where synthesized utterances are cached ('' for no cache)")
    args = ap.parse_args()
    if not es.espeak_available():
        sys.exit("espeak-ng is missing: apt-get install espeak-ng")
    t_start = time.time()
    rng = np.random.default_rng(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    fe = BatchFrontend(**AUDIO)

    print("synthesizing speech with espeak-ng", flush=True)
    train_items = plan(KEYWORDS, N_TRAIN_KW, TRAIN_ACCENTS, TRAIN_VARIANTS, rng) + \
        plan(UNKNOWN_WORDS, N_TRAIN_UNK, TRAIN_ACCENTS, TRAIN_VARIANTS, rng)
    val_items = plan(KEYWORDS, N_VAL_KW, TRAIN_ACCENTS, VAL_VARIANTS, rng) + \
        plan(UNKNOWN_WORDS, N_VAL_UNK, TRAIN_ACCENTS, VAL_VARIANTS, rng)
    test_items = plan(KEYWORDS, N_TEST_KW, TEST_ACCENTS, TEST_VARIANTS, rng) + \
        plan(UNKNOWN_WORDS, N_TEST_UNK, TEST_ACCENTS, TEST_VARIANTS, rng)
    train_utts = synthesize(train_items, args.cache, "train")
    val_utts = synthesize(val_items, args.cache, "val")
    test_utts = synthesize(test_items, args.cache, "test")
    train, val, test = Source(train_items, train_utts), Source(val_items, val_utts), Source(test_items, test_utts)
    babble_train = train.by_label[1]
    babble_test = test.by_label[1]
    noise_train, noise_test = NoiseBank(rng), NoiseBank(rng)

    # The batched frontend must equal the reference definition.
    fe.check([mix(train_utts[0], rng, noise_train, babble_train) for _ in range(3)])

    def featurize(clips):
        out = []
        for s in range(0, len(clips), 256):
            out.append(fe(np.stack(clips[s:s + 256])))
        return np.concatenate(out)[:, None]

    # Fixed validation set (validation speakers, training noise bank).
    val_labels = sample_labels(60, 120, 60, rng)
    val_x = featurize([val.clip(y, rng, noise_train, babble_train) for y in val_labels])
    val_y = torch.from_numpy(val_labels)
    mean, std = float(val_x.mean()), float(val_x.std())
    print(f"feature mean {mean:.3f} std {std:.3f}")

    model = DSCNN(len(LABELS), mean=mean, std=std)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    per_epoch = sample_labels(600, 1500, 600, rng)
    steps = EPOCHS * ((len(per_epoch) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    best_acc, best_state = -1.0, None
    for epoch in range(EPOCHS):
        t0 = time.time()
        model.train()
        order = rng.permutation(per_epoch)
        total = 0.0
        for s in range(0, len(order), BATCH):
            ys = order[s:s + BATCH]
            x = fe(np.stack([train.clip(y, rng, noise_train, babble_train, CUT_SHARE) for y in ys]))[:, None]
            x = spec_augment(x, rng)
            loss = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(ys), label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(ys)
        model.eval()
        with torch.no_grad():
            acc = (model(torch.from_numpy(val_x)).argmax(1) == val_y).float().mean().item()
        if acc >= best_acc:
            best_acc, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
        print(f"epoch {epoch:2d} loss {total / len(order):.4f} val {acc:.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.load_state_dict(best_state)
    model.eval()

    # Held-out speakers: the committed split plus a larger in-memory set from the same speakers.
    # _unknown_ takes N_TEST_KW of its utterances at random (they are grouped by word).
    per_label = {i: [] for i in range(len(LABELS))}
    for y in range(len(LABELS)):
        if y == 0:
            per_label[y] = [mix(None, rng, noise_test, babble_test) for _ in range(N_TEST_KW)]
        else:
            pool = test.by_label[y]
            pick = rng.permutation(len(pool))[:N_TEST_KW]
            per_label[y] = [mix(pool[k], rng, noise_test, babble_test) for k in pick]
    with torch.no_grad():
        for name, sl in (("committed test split", slice(0, COMMITTED_TEST_PER_LABEL)),
                         ("all held-out clips", slice(0, None))):
            xs, ys = [], []
            for y, clips in per_label.items():
                xs += clips[sl]
                ys += [y] * len(clips[sl])
            pred = model(torch.from_numpy(featurize(xs))).argmax(1).numpy()
            print(f"{name}: {np.mean(pred == np.array(ys)):.4f} ({len(ys)} clips, torch float)")

    model.fold_normalization()
    raw = os.path.join(HERE, "model.raw.onnx")
    torch.onnx.export(model, (torch.zeros(1, 1, FRAMES, AUDIO["mels"]),), raw, input_names=["features"],
                      output_names=["logits"], opset_version=13, dynamo=False)

    for folder in ("test", "calibration"):
        shutil.rmtree(os.path.join(HERE, folder), ignore_errors=True)
    for y, clips in per_label.items():
        for k, c in enumerate(clips[:COMMITTED_TEST_PER_LABEL]):
            es.write_wav(os.path.join(HERE, "test", LABELS[y], f"{LABELS[y].strip('_')}-{k:03d}.wav"), c)
    for y in range(len(LABELS)):
        for k in range(3):
            es.write_wav(os.path.join(HERE, "calibration", f"{LABELS[y].strip('_')}-{k}.wav"),
                         train.clip(y, rng, noise_train, babble_train, CUT_SHARE))
    np.savez(os.path.join(os.environ.get("TMPDIR", "/tmp"), "kws-heldout.npz"),
             **{LABELS[y]: np.stack(c) for y, c in per_label.items()})

    demo(rng, model)
    stream_eval(rng, model, test)
    print(f"total time {time.time() - t_start:.0f} s")


DEMO_WORDS = ["yes", "stop", "left", "go", "down", "off", "right", "no"]
DEMO_SPEAKER = ("en-029", "m3", 150, 45, 120)


def demo(rng, model):
    """demo.wav: DEMO_WORDS by a held-out speaker, 1-1.5 s of quiet pink noise between them."""
    accent, variant, speed, pitch, amp = DEMO_SPEAKER
    parts = [np.zeros(int(0.8 * SR))]
    for w in DEMO_WORDS:
        x = es.trim(es.synth(w, accent, variant, speed, pitch, amp))
        parts += [x * (10 ** (-20 / 20) / speech_level(x)), np.zeros(int(rng.uniform(1.0, 1.5) * SR))]
    sig = np.concatenate(parts)
    sig += es.coloured_noise(len(sig), "pink", rng) * 10 ** (-50 / 20)
    sig = np.clip(np.round(sig * 32768), -32768, 32767) / 32768.0
    es.write_wav(os.path.join(HERE, "demo.wav"), sig)
    print(f"demo.wav: {len(sig) / SR:.1f} s, words {DEMO_WORDS}")
    stream_report(sig, model)


def stream_report(sig, model, stride=3, smoothing=3, threshold=0.7, refractory_ms=1000, quiet=False):
    """What the runtime's keyword decision reports on a stream (Python model of keyword.rs)."""
    f = ref_features(sig, **AUDIO).astype(np.float32)
    starts = list(range(0, len(f) - FRAMES + 1, stride))
    with torch.no_grad():
        logits = model(torch.from_numpy(np.stack([f[s:s + FRAMES] for s in starts])[:, None]))
        post = torch.softmax(logits, 1).numpy()
    hist, last, hits = [], None, []
    for s, p in zip(starts, post):
        hist = (hist + [p])[-smoothing:]
        avg = np.sum(hist, axis=0) / smoothing
        avg[[0, 1]] = -1
        c = int(avg.argmax())
        t_ms = ((s + FRAMES - 1) * AUDIO["hop"] + AUDIO["window"]) * 1000 // SR
        if avg[c] >= threshold and (last is None or t_ms - last >= refractory_ms):
            last = t_ms
            hits.append((t_ms, LABELS[c], round(float(avg[c]), 3)))
    if not quiet:
        print(f"stream simulation (stride {stride}, smoothing {smoothing}, threshold {threshold}): {hits}")
    return hits


def stream_eval(rng, model, test, seconds=240):
    """A long held-out-speaker stream: keywords and unknown words (half each) with 0.8-1.8 s of
    noise between them. Reports, per threshold, keywords found (right label, fired between the
    word's start and 1 s after its end), missed, and false alarms (any other fire)."""
    parts, words, pos = [], [], 0
    while pos < seconds * SR:
        gap = np.zeros(int(rng.uniform(0.8, 1.8) * SR))
        y = int(rng.integers(2, len(LABELS))) if rng.random() < 0.5 else 1
        pool = test.by_label[y]
        w = pool[rng.integers(len(pool))]
        w = w * (10 ** (rng.uniform(-32, -14) / 20) / speech_level(w))
        parts += [gap, w]
        words.append((pos + len(gap), pos + len(gap) + len(w), y))
        pos += len(gap) + len(w)
    sig = np.concatenate(parts)
    sig += es.coloured_noise(len(sig), "pink", rng) * 10 ** (rng.uniform(-60, -45) / 20)
    sig = np.clip(np.round(sig * 32768), -32768, 32767) / 32768.0
    n_kw = sum(1 for w in words if w[2] > 1)
    for th in (0.5, 0.6, 0.7, 0.8, 0.9):
        hits = stream_report(sig, model, threshold=th, quiet=True)
        found, false = set(), 0
        for t_ms, label, _ in hits:
            t = t_ms * SR // 1000
            match = [i for i, (a, b, y) in enumerate(words) if a <= t <= b + SR and y > 1 and LABELS[y] == label]
            if match:
                found.add(match[0])
            else:
                false += 1
        print(f"stream {len(sig) / SR:.0f} s, {n_kw} keywords, {len(words) - n_kw} unknown words: threshold {th}: "
              f"found {len(found)}, missed {n_kw - len(found)}, false alarms {false}")


if __name__ == "__main__":
    main()
