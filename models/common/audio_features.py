"""The Lepton audio frontend in numpy, identical to runtime/core/src/audio/frontend.rs.

Training code computes features with `features()`, so a model sees on the device exactly what it
saw in training. `make_frontend_vectors.py` writes test vectors that a Rust test checks.

Definition (see the Rust module for the same text):
- frame k covers samples [k*hop, k*hop + window); samples are floats in [-1, 1) (int16 / 32768);
- periodic Hann window of length `window`, zero-padded to `fft`; power |X[b]|^2 for b = 0..fft/2;
- `mels` triangular filters, edges evenly spaced on the HTK mel scale from fmin to fmax, unnormalized;
- ln(energy + 1e-6); if mfcc > 0, the first `mfcc` orthonormal DCT-II coefficients.
"""
import numpy as np

LOG_FLOOR = 1e-6


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_matrix(sample_rate, fft, mels, fmin, fmax):
    """[mels, fft/2 + 1] filter weights."""
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), mels + 2))
    bin_hz = sample_rate / fft
    freqs = np.arange(fft // 2 + 1) * bin_hz
    w = np.zeros((mels, fft // 2 + 1))
    for m in range(mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        first = int(np.ceil(lo / bin_hz))
        last = min(int(np.floor(hi / bin_hz)), fft // 2)
        for b in range(first, last + 1):
            f = freqs[b]
            weight = (f - lo) / (c - lo) if f <= c else (hi - f) / (hi - c)
            if weight > 0:
                w[m, b] = weight
    return w


def dct_matrix(mels, mfcc):
    """[mfcc, mels] orthonormal DCT-II."""
    k = np.arange(mfcc)[:, None]
    m = np.arange(mels)[None, :]
    d = np.cos(np.pi / mels * (m + 0.5) * k)
    d *= np.sqrt(2.0 / mels)
    d[0] *= np.sqrt(0.5)
    return d


def features(samples, sample_rate, window, hop, fft, mels, mfcc=0, fmin=20.0, fmax=None):
    """[frames, features] for float samples in [-1, 1)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    x = np.asarray(samples, dtype=np.float64)
    n_frames = 0 if len(x) < window else 1 + (len(x) - window) // hop
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
    frames = np.stack([x[k * hop:k * hop + window] * hann for k in range(n_frames)]) if n_frames else np.zeros((0, window))
    power = np.abs(np.fft.rfft(frames, n=fft, axis=1)) ** 2
    logmel = np.log(power @ mel_matrix(sample_rate, fft, mels, fmin, fmax).T + LOG_FLOOR)
    if mfcc:
        return logmel @ dct_matrix(mels, mfcc).T
    return logmel
