"""Train the voice activity detector shipped as models/vad/model.onnx.

Usage:
  apt-get install espeak-ng                      # the only speech source; nothing is downloaded
  pip install torch==2.15.0 numpy scipy onnx onnxruntime
  python3 train.py [--cache DIR]                 # seeded; a few minutes on one core

Data: speech is synthesized with espeak-ng (../common/espeak_synth.py): sentences and random word
strings spoken by an espeak accent with a voice variant, at random speed, pitch and word gap.
Speakers are split three ways, so no test speaker is heard in training or model selection:
  test:        accents en-gb-x-rp and en-029 with the TEST_VARIANTS (and test-only sentences);
  validation:  the other six accents with the VAL_VARIANTS;
  training:    the other six accents with every remaining variant.
Noise is generated: white, pink, brown, mains hum, clicks, beeps (tone bursts), near-digital
silence, and mixtures, at random levels; speech is mixed over it at random SNR (-5 to 30 dB).

The model sees the runtime's own features (../common/audio_features.py): the last 32 frames of
32 log-mel bands (25 ms window, 10 ms hop: 0.335 s of audio), laid out [1, 1, 32, 32] (frames x
features, oldest first). A training window is `speech` when at least a quarter of its 10 ms blocks
carry speech in the clean signal (RMS within 35 dB of the utterance's loudest block), `noise` when
none does; windows in between are not used.

Outputs (next to this script):
  model.raw.onnx          float model, no manifest (pack it: see README.md)
  test/{noise,speech}/*.wav  0.5 s held-out clips (16 kHz int16); eval reads their last 32 frames
  calibration/*.wav       40 clips from training speakers for `lepton-convert quantize`
  demo.wav                noise, a sentence, noise, a sentence, noise (held-out speakers)
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

SEED = 515
SR = 16000
AUDIO = dict(sample_rate=SR, window=400, hop=160, fft=512, mels=32, mfcc=0, fmin=20.0, fmax=8000.0)
FRAMES = 32
WIN = AUDIO["window"] + (FRAMES - 1) * AUDIO["hop"]   # 5360 samples feed one model input
TEST_CLIP = SR // 2                                   # 0.5 s test clips
LABELS = ["noise", "speech"]

TEST_ACCENTS = ["en-gb-x-rp", "en-029"]
TEST_VARIANTS = ["m3", "f4", "klatt2", "croak", "Andy", "belinda"]
VAL_VARIANTS = ["m6", "f2", "klatt4", "Storm", "linda"]
TRAIN_ACCENTS = [a for a in es.ACCENTS if a not in TEST_ACCENTS]
TRAIN_VARIANTS = [v for v in es.VARIANTS if v not in TEST_VARIANTS + VAL_VARIANTS]

TRAIN_SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "please turn on the kitchen lights",
    "what time does the train leave tomorrow morning",
    "i left my keys on the table by the door",
    "the weather will be cold and windy this weekend",
    "can you hear me now",
    "we should plant the tomatoes before it rains",
    "my sister lives in a small town near the coast",
    "open the garage and check the back yard",
    "this coffee is far too hot to drink",
    "the meeting has been moved to half past three",
    "remind me to call the doctor on monday",
    "a large dog was barking at the mailman",
    "there is a package waiting at the front desk",
    "she reads a book every night before bed",
    "the children played football in the park all afternoon",
    "set a timer for twenty minutes",
    "how far is it to the nearest petrol station",
    "he painted the fence a bright shade of green",
    "turn the music down a little please",
    "our flight was delayed by two hours",
    "the soup needs more salt and pepper",
    "somebody left the window open again",
    "let me know when you arrive at the station",
    "the river flooded after the storm last night",
    "add milk eggs and bread to the shopping list",
    "i think the battery is almost empty",
    "the museum opens at nine and closes at five",
    "be careful the floor is still wet",
    "thank you very much for your help yesterday",
]
TEST_SENTENCES = [
    "the baby is finally asleep upstairs",
    "could you lock the front door on your way out",
    "the bus stops right outside the library",
    "we are having pasta for dinner tonight",
    "the printer is out of paper again",
    "is anyone at home right now",
]
VOCAB = ("time person year way day thing man world life hand part child eye woman place work week case "
         "point number group problem fact water room mother area money story month lot right study book "
         "job word business issue side kind head house service friend father power hour game line end "
         "member law car city name team minute idea kid body back parent face level office door health "
         "art war history party result change morning reason research girl guy moment air teacher force "
         "education go make know take see come think look want give use find tell ask seem feel try leave "
         "call good new first last long great little own other old big high different small large next "
         "early young important few public bad same able").split()


def plan(n, accents, variants, sentences, rng):
    """(text, accent, variant, speed, pitch, amplitude, word gap) for n utterances."""
    items = []
    for _ in range(n):
        if rng.random() < 0.6:
            text = str(rng.choice(sentences))
        else:
            text = " ".join(rng.choice(VOCAB, size=rng.integers(3, 9)))
        items.append((text, str(rng.choice(accents)), str(rng.choice(variants)), int(rng.integers(110, 231)),
                      int(rng.integers(15, 86)), int(rng.integers(60, 181)), int(rng.integers(0, 8))))
    return items


def synthesize(items, cache_dir, name):
    """Utterances for `items`, cached on disk (../common/espeak_synth.py, synthesize_cached)."""
    return es.synthesize_cached(items, lambda it: es.trim(es.synth(*it)), cache_dir, f"vad-{name}")


class NoiseBank:
    """Long unit-RMS noises; `segment` cuts a random piece of one kind or a mixture of two."""

    def __init__(self, rng, seconds=30):
        n = seconds * SR
        t = np.arange(n) / SR
        b = {k: es.coloured_noise(n, k, rng) for k in ("white", "pink", "brown")}
        hum = np.zeros(n)
        for f0 in (50.0, 60.0):
            hum += sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3))
                       for k in range(1, 10))
        b["hum"] = hum / es.rms(hum)
        clicks = np.zeros(n)
        for p in rng.integers(0, n - 200, size=seconds * 12):
            m = rng.integers(20, 200)
            clicks[p:p + m] += rng.standard_normal(m) * np.exp(-np.arange(m) / (m / 5)) * rng.uniform(0.2, 1)
        b["clicks"] = clicks / es.rms(clicks)
        beeps = np.zeros(n)
        pos = 0
        while pos < n:
            m = int(rng.uniform(0.05, 0.6) * SR)
            f = rng.uniform(300, 4000)
            seg = np.sin(2 * np.pi * f * np.arange(min(m, n - pos)) / SR)
            beeps[pos:pos + len(seg)] = seg if rng.random() < 0.6 else 0
            pos += m
        b["beeps"] = beeps / es.rms(beeps)
        self.banks = b
        self.kinds = list(b)

    def segment(self, rng, n):
        k = self.kinds[rng.integers(len(self.kinds))]
        s = rng.integers(0, SR * 30 - n)
        x = self.banks[k][s:s + n].copy()
        if rng.random() < 0.4:
            k2 = self.kinds[rng.integers(len(self.kinds))]
            s2 = rng.integers(0, SR * 30 - n)
            x += self.banks[k2][s2:s2 + n] * rng.uniform(0.1, 1.0)
            x /= es.rms(x)
        return x


def speech_level(x):
    act = es.activity(x)
    blk = x[:len(act) * 160].reshape(-1, 160)[act]
    return es.rms(blk) if len(blk) else es.rms(x)


def noise_only(n, rng, noise):
    if rng.random() < 0.1:
        level = 10 ** (rng.uniform(-96, -80) / 20)
    else:
        level = 10 ** (rng.uniform(-75, -15) / 20)
    return noise.segment(rng, n) * level


def with_speech(utt, n, rng, noise, min_active, tail):
    """n samples containing part of `utt` (or None when the activity condition fails).

    The window's active fraction is measured over its last `tail` samples (what the model sees)."""
    pad = np.zeros(int(0.3 * SR))
    u = np.concatenate([pad, utt, pad])
    act = np.repeat(es.activity(u), 160)
    act = np.concatenate([act, np.zeros(len(u) - len(act), dtype=bool)])
    if len(u) < n:
        return None, 0.0
    s = rng.integers(0, len(u) - n + 1)
    # The last `tail` samples the frames cover (a clip may end in a partial hop the frontend ignores).
    end = s + AUDIO["window"] + (n - AUDIO["window"]) // AUDIO["hop"] * AUDIO["hop"]
    frac = act[end - tail:end].mean()
    if frac < min_active and frac > 0:
        return None, frac
    level = 10 ** (rng.uniform(-45, -10) / 20)
    x = u[s:s + n] * (level / speech_level(utt))
    if rng.random() < 0.9:
        x = x + noise.segment(rng, n) * level * 10 ** (-rng.uniform(-5, 30) / 20)
    return x, frac


def quantize16(x):
    return np.clip(np.round(x * 32768), -32768, 32767) / 32768.0


def make_window(utts, rng, noise, n=WIN, min_active=0.25, tail=WIN):
    """(clip, label): half noise-only, half drawn from speech (noise when no speech falls in it)."""
    while True:
        if rng.random() < 0.5:
            return quantize16(noise_only(n, rng, noise)), 0
        x, frac = with_speech(utts[rng.integers(len(utts))], n, rng, noise, min_active, tail)
        if x is not None:
            return quantize16(x), int(frac >= min_active)


class TinyVad(nn.Module):
    """conv 3x3/2 (16) -> conv 3x3/2 (24) -> dw 3x3/2 + pw (32) -> global average -> linear(2).

    The first convolution has no padding, so the input normalization folds into it at export."""

    def __init__(self, mean=0.0, std=1.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.normalize = True
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
            nn.Conv2d(24, 24, 3, stride=2, padding=1, groups=24, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
            nn.Conv2d(24, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)  # GlobalAveragePool in ONNX (the micro engine has it)
        self.classifier = nn.Linear(32, 2)

    def forward(self, x):
        if self.normalize:
            x = (x - self.mean) / self.std
        return self.classifier(self.pool(self.features(x)).flatten(1))

    def fold_normalization(self):
        conv = self.features[0]
        w = conv.weight.data
        new = nn.Conv2d(1, w.shape[0], conv.kernel_size, stride=conv.stride, bias=True)
        new.weight.data = w / self.std
        new.bias.data = -(self.mean / self.std) * w.sum(dim=(1, 2, 3))
        self.features[0] = new
        self.normalize = False


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
    train_utts = synthesize(plan(700, TRAIN_ACCENTS, TRAIN_VARIANTS, TRAIN_SENTENCES, rng), args.cache, "train")
    val_utts = synthesize(plan(80, TRAIN_ACCENTS, VAL_VARIANTS, TRAIN_SENTENCES, rng), args.cache, "val")
    test_utts = synthesize(plan(120, TEST_ACCENTS, TEST_VARIANTS, TEST_SENTENCES, rng), args.cache, "test")
    noise_train, noise_test = NoiseBank(rng), NoiseBank(rng)
    fe.check([make_window(train_utts, rng, noise_train)[0] for _ in range(3)])

    val = [make_window(val_utts, rng, noise_train) for _ in range(2000)]
    val_x = fe(np.stack([c for c, _ in val]))[:, None]
    val_y = torch.tensor([y for _, y in val])
    mean, std = float(val_x.mean()), float(val_x.std())
    model = TinyVad(mean, std)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"model: {n_params} parameters; feature mean {mean:.3f} std {std:.3f}")

    epochs, steps_per_epoch, batch = 20, 60, 128
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=epochs * steps_per_epoch)
    best_acc, best_state = -1.0, None
    for epoch in range(epochs):
        t0 = time.time()
        model.train()
        total = 0.0
        for _ in range(steps_per_epoch):
            ws = [make_window(train_utts, rng, noise_train) for _ in range(batch)]
            x = torch.from_numpy(fe(np.stack([c for c, _ in ws]))[:, None])
            y = torch.tensor([lab for _, lab in ws])
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        model.eval()
        with torch.no_grad():
            acc = (model(torch.from_numpy(val_x)).argmax(1) == val_y).float().mean().item()
        if acc >= best_acc:
            best_acc, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
        print(f"epoch {epoch:2d} loss {total / steps_per_epoch:.4f} val {acc:.4f} ({time.time() - t0:.1f} s)",
              flush=True)
    model.load_state_dict(best_state)
    model.eval()

    # Held-out speakers: 0.5 s clips; speech clips have speech in at least half of the last 32
    # frames' span, noise clips none at all.
    tests = {0: [], 1: []}
    while len(tests[0]) < 100 or len(tests[1]) < 100:
        c, y = make_window(test_utts, rng, noise_test, n=TEST_CLIP, min_active=0.5, tail=WIN)
        if len(tests[y]) < 100:
            tests[y].append(c)
    with torch.no_grad():
        xs = np.stack(tests[0] + tests[1])
        ys = np.array([0] * 100 + [1] * 100)
        f = fe(xs)[:, -FRAMES:][:, None]
        pred = model(torch.from_numpy(f)).argmax(1).numpy()
        print(f"held-out test: {np.mean(pred == ys):.4f} (200 clips, torch float)")

    model.fold_normalization()
    torch.onnx.export(model, (torch.zeros(1, 1, FRAMES, AUDIO["mels"]),), os.path.join(HERE, "model.raw.onnx"),
                      input_names=["features"], output_names=["logits"], opset_version=13, dynamo=False)
    for folder in ("test", "calibration"):
        shutil.rmtree(os.path.join(HERE, folder), ignore_errors=True)
    for y, clips in tests.items():
        for k, c in enumerate(clips):
            es.write_wav(os.path.join(HERE, "test", LABELS[y], f"{LABELS[y]}-{k:03d}.wav"), c)
    for k in range(40):
        c, y = make_window(train_utts, rng, noise_train, n=TEST_CLIP, min_active=0.5, tail=WIN)
        es.write_wav(os.path.join(HERE, "calibration", f"{LABELS[y]}-{k:02d}.wav"), c)
    demo(rng, model)
    stream_eval(rng, model, test_utts, noise_test)
    print(f"total time {time.time() - t_start:.0f} s")


GAP = 1.2
DEMO = [("the baby is finally asleep upstairs", "en-029", "m3", 160, 50, 110, 1),
        ("could you lock the front door on your way out", "en-gb-x-rp", "f4", 150, 60, 110, 1)]


def demo(rng, model):
    """demo.wav: noise 1.2 s, sentence, noise 1.2 s, sentence, noise 1.2 s (held-out speakers)."""
    parts = [np.zeros(int(GAP * SR))]
    for item in DEMO:
        s = es.trim(es.synth(*item))
        parts += [s * (10 ** (-22 / 20) / speech_level(s)), np.zeros(int(GAP * SR))]
    sig = np.concatenate(parts)
    n = len(sig)
    sig += es.coloured_noise(n, "pink", rng) * 10 ** (-48 / 20)
    sig += np.sin(2 * np.pi * 50 * np.arange(n) / SR) * 10 ** (-50 / 20)
    sig = quantize16(sig)
    es.write_wav(os.path.join(HERE, "demo.wav"), sig)
    spans = []
    t = GAP
    for p in parts[1::2]:
        spans.append((round(t, 2), round(t + len(p) / SR, 2)))
        t += len(p) / SR + GAP
    print(f"demo.wav: {n / SR:.1f} s, sentences at {spans}")
    stream_report(sig, model)


def stream_eval(rng, model, utts, noise, seconds=180):
    """A long held-out-speaker stream: utterances separated by 1-4 s of noise (any kind, -70 to
    -30 dBFS; speech 5-30 dB above it). Counts utterances whose speech a start event opens (start
    between 0.2 s before the utterance and its end), missed ones, and false starts."""
    parts, spans, pos = [], [], 0
    while pos < seconds * SR:
        gap = int(rng.uniform(1.0, 4.0) * SR)
        u = utts[rng.integers(len(utts))]
        parts += [np.zeros(gap), u]
        spans.append((pos + gap, pos + gap + len(u)))
        pos += gap + len(u)
    clean = np.concatenate(parts)
    sig = np.zeros_like(clean)
    level = 10 ** (rng.uniform(-70, -30) / 20)
    for (a, b) in spans:
        snr = rng.uniform(5, 30)
        sig[a:b] = clean[a:b] * level * 10 ** (snr / 20) / speech_level(clean[a:b])
    for s in range(0, len(sig), 5 * SR):
        n = min(5 * SR, len(sig) - s)
        sig[s:s + n] += noise.segment(rng, n) * level
    events = stream_report(quantize16(sig), model, quiet=True)
    found, false = set(), 0
    for kind, t_ms in events:
        if kind != "start":
            continue
        t = t_ms * SR // 1000
        m = [i for i, (a, b) in enumerate(spans) if a - 0.2 * SR <= t <= b]
        if m:
            found.add(m[0])
        else:
            false += 1
    print(f"VAD stream {len(sig) / SR:.0f} s, {len(spans)} utterances: opened {len(found)}, missed "
          f"{len(spans) - len(found)}, false starts {false}")


def stream_report(sig, model, stride=2, on=0.6, off=0.4, min_speech=3, hangover=15, quiet=False):
    """Start/end events the runtime's VAD hysteresis (vad.rs) reports on a stream."""
    f = ref_features(sig, **AUDIO).astype(np.float32)
    starts = list(range(0, len(f) - FRAMES + 1, stride))
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(np.stack([f[s:s + FRAMES] for s in starts])[:, None])), 1)[:, 1]
    speaking, run, events = False, 0, []
    for s, pr in zip(starts, p.numpy()):
        t_ms = ((s + FRAMES - 1) * AUDIO["hop"] + AUDIO["window"]) * 1000 // SR
        if speaking:
            run = run + 1 if pr < off else 0
            if run >= hangover:
                speaking, run = False, 0
                events.append(("end", t_ms))
        elif pr >= on:
            run += 1
            if run >= min_speech:
                speaking, run = True, 0
                events.append(("start", t_ms))
        else:
            run = 0
    if not quiet:
        print(f"stream simulation (stride {stride}, on {on}, off {off}, min_speech {min_speech}, "
              f"hangover {hangover}): {events}")
    return events


if __name__ == "__main__":
    main()
