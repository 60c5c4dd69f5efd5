"""Batched form of audio_features.features() for training loops.

Same arithmetic as `audio_features.features` (float64 periodic Hann window, rfft power, the same
mel and DCT matrices, ln(energy + 1e-6)), applied to a batch of equal-length clips at once.
`check()` compares it with `features()` clip by clip; trainers call it once at start-up.
"""
import numpy as np

from audio_features import LOG_FLOOR, dct_matrix, features, mel_matrix


class BatchFrontend:
    def __init__(self, sample_rate, window, hop, fft, mels, mfcc=0, fmin=20.0, fmax=None):
        self.cfg = dict(sample_rate=sample_rate, window=window, hop=hop, fft=fft, mels=mels, mfcc=mfcc,
                        fmin=fmin, fmax=fmax)
        fmax = sample_rate / 2 if fmax is None else fmax
        self.window, self.hop, self.fft, self.mfcc = window, hop, fft, mfcc
        self.hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
        self.mel_t = mel_matrix(sample_rate, fft, mels, fmin, fmax).T
        self.dct_t = dct_matrix(mels, mfcc).T if mfcc else None

    def frames_of(self, n_samples):
        return 0 if n_samples < self.window else 1 + (n_samples - self.window) // self.hop

    def __call__(self, clips):
        """[batch, samples] floats in [-1, 1) -> [batch, frames, features] float32."""
        x = np.asarray(clips, dtype=np.float64)
        n = self.frames_of(x.shape[1])
        view = np.lib.stride_tricks.sliding_window_view(x, self.window, axis=1)[:, ::self.hop][:, :n]
        frames = view * self.hann
        spec = np.fft.rfft(frames, n=self.fft, axis=2)
        power = (spec.real ** 2 + spec.imag ** 2).reshape(-1, spec.shape[2])
        out = np.log(power @ self.mel_t + LOG_FLOOR)
        if self.dct_t is not None:
            out = out @ self.dct_t
        return out.reshape(x.shape[0], n, -1).astype(np.float32)

    def check(self, clips, tol=1e-4):
        """Asserts the batch result equals features() for every clip (float32 rounding aside)."""
        got = self(clips)
        for i, c in enumerate(clips):
            ref = features(c, **self.cfg)
            err = np.max(np.abs(ref - got[i]))
            assert err <= tol, f"batched frontend differs from features() by {err}"
        return True
