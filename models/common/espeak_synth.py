"""Speech for training audio models, synthesized offline with espeak-ng (no data download).

A speaker is an espeak-ng accent (`-v en-us`) combined with a voice variant (`+m3`, `+f2`, `+klatt`,
...); speed, pitch and amplitude vary per utterance. espeak-ng writes 22,050 Hz mono int16; `synth`
resamples it to 16 kHz with a polyphase filter (scipy.signal.resample_poly, 320/441) and returns
floats in [-1, 1), the scale the Lepton frontend uses (int16 / 32768).

Also here: coloured noise generators and WAV writing shared by the keyword and VAD trainers.

Needs: espeak-ng (`apt-get install espeak-ng`), numpy, scipy.
"""
import io
import os
import shutil
import subprocess
import wave

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050

# English accents of espeak-ng's own (formant) voices; the mbrola ones need extra packages.
ACCENTS = [
    "en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029",
    "en-us-nyc",
]

# Voice variants (espeak-ng-data/voices/!v), without those whose file name has a space.
VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "croak", "klatt",
    "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "whisper", "whisperf", "Alex", "Alicia",
    "Andrea", "Andy", "Annie", "AnxiousAndy", "Denis", "Diogo", "Gene", "Gene2", "Henrique", "Hugo",
    "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "RicishayMax", "RicishayMax2",
    "RicishayMax3", "Storm", "Tweaky", "UniRobot", "adam", "anika", "anikaRobot", "announcer",
    "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "david", "ed", "edward", "edward2",
    "grandma", "grandpa", "gustave", "iven", "iven2", "iven3", "iven4", "john", "kaukovalta", "linda",
    "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro", "quincy", "rob",
    "robert", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6",
    "robosoft7", "robosoft8", "sandro", "shelby", "steph", "steph2", "steph3", "travis", "victor",
    "zac",
]


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synth(text, accent, variant, speed=160, pitch=50, amplitude=100, word_gap=0):
    """Speaks `text`; returns float32 samples at 16 kHz in [-1, 1)."""
    cmd = ["espeak-ng", "-v", f"{accent}+{variant}", "-s", str(int(speed)), "-p", str(int(pitch)),
           "-a", str(int(amplitude)), "-g", str(int(word_gap)), "--stdout", text]
    out = subprocess.run(cmd, check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(out)) as w:
        assert w.getframerate() == ESPEAK_RATE and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    x = resample_poly(pcm.astype(np.float64) / 32768.0, 320, 441)
    return np.clip(x, -1.0, 32767 / 32768).astype(np.float32)


def trim(x, rel_db=-40.0, pad=160):
    """Cuts leading and trailing silence: keeps samples from the first to the last 10 ms block
    whose RMS is within `rel_db` of the loudest block, plus `pad` samples either side."""
    blk = 160
    n = len(x) // blk
    if n == 0:
        return x
    rms = np.sqrt(np.mean(x[:n * blk].reshape(n, blk).astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(20 * np.log10(rms / rms.max()) > rel_db)[0]
    a = max(0, loud[0] * blk - pad)
    b = min(len(x), (loud[-1] + 1) * blk + pad)
    return x[a:b]


def activity(x, rel_db=-35.0, blk=160):
    """Per 10 ms block: True where the clean signal's RMS is within `rel_db` of its loudest block."""
    n = len(x) // blk
    rms = np.sqrt(np.mean(x[:n * blk].reshape(n, blk).astype(np.float64) ** 2, axis=1) + 1e-12)
    return 20 * np.log10(rms / max(rms.max(), 1e-9)) > rel_db


def coloured_noise(n, kind, rng):
    """Unit-RMS noise: white, pink (1/f) or brown (1/f^2) power spectrum."""
    if kind == "white":
        x = rng.standard_normal(n)
    else:
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        spec /= np.sqrt(f) if kind == "pink" else f
        spec[0] = 0.0
        x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def rms(x):
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2) + 1e-20))


def to_int16(x):
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def write_wav(path, x, sample_rate=SAMPLE_RATE):
    """Writes float samples in [-1, 1) as 16-bit mono PCM."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(to_int16(x).tobytes())


def read_wav(path):
    with wave.open(path) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def synthesize_cached(items, make, cache_dir, name):
    """`make(item)` for every item, cached on disk as `<cache_dir>/<name>-<hash of items>.npz` (the
    cache only saves time: results are identical). No cache when `cache_dir` is empty."""
    import hashlib
    import json
    import os
    import time

    key = hashlib.sha1(json.dumps(items).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"{name}-{key}.npz") if cache_dir else None
    if path and os.path.exists(path):
        z = np.load(path)
        return np.split(z["samples"], z["ends"][:-1])
    t = time.time()
    utts = [make(it) for it in items]
    print(f"  synthesized {len(utts)} {name} utterances in {time.time() - t:.0f} s", flush=True)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        np.savez(path, samples=np.concatenate(utts), ends=np.cumsum([len(u) for u in utts]))
    return utts
