"""Pure-NumPy stand-ins with the ``ScoreModel`` interface, for tests that should not need TFLite."""

from __future__ import annotations

import numpy as np

from device.inference.classifier import (
    CLASSES,
    MODEL_RATE_HZ,
    WINDOW_SECONDS,
    Prediction,
    features,
    resample,
)


def _one_hot(label: str, confidence: float) -> Prediction:
    i = CLASSES.index(label)
    probs = np.full(len(CLASSES), (1.0 - confidence) / (len(CLASSES) - 1), dtype=np.float32)
    probs[i] = confidence
    return Prediction(label, i, float(confidence), probs)


class FixedModel:
    """Always answers ``label`` (e.g. to force disagreement in shadow tests)."""

    window_seconds = WINDOW_SECONDS
    rate_hz = MODEL_RATE_HZ

    def __init__(self, label: str = "rest", confidence: float = 0.9) -> None:
        if label not in CLASSES:
            raise ValueError(f"unknown class {label!r}; expected one of {CLASSES}")
        self.label, self.confidence = label, confidence

    def predict(self, window: np.ndarray, rate_hz: float) -> Prediction:
        resample(window, rate_hz)  # same input validation as the real model
        return _one_hot(self.label, self.confidence)


class RuleModel:
    """Hand rules on the motion energy and cadence of |a|; rough but deterministic.

    rest: almost still; walk/run: a clear cadence (below/above 2.3 Hz); eat: small motion with
    a lowered head or weak rhythm; play: strong irregular motion.
    """

    window_seconds = WINDOW_SECONDS
    rate_hz = MODEL_RATE_HZ

    def predict(self, window: np.ndarray, rate_hz: float) -> Prediction:
        x = resample(window, rate_hz)
        f = features(x)
        mag = f[:, 0]
        std = float(mag.std())
        spec = np.abs(np.fft.rfft(mag - mag.mean()))
        freqs = np.fft.rfftfreq(mag.size, 1.0 / self.rate_hz)
        band = freqs >= 1.0
        peak = float(freqs[band][np.argmax(spec[band])])
        rhythm = float(spec[band].max() / (spec[band].sum() + 1e-9))
        if std < 0.03:
            return _one_hot("rest", 0.8)
        if std < 0.12 and rhythm < 0.2:
            return _one_hot("eat", 0.5)
        if rhythm >= 0.12 and 1.2 <= peak < 2.3 and std < 0.45:
            return _one_hot("walk", 0.7)
        if rhythm >= 0.12 and 2.3 <= peak <= 4.0 and std >= 0.3:
            return _one_hot("run", 0.7)
        return _one_hot("play" if std >= 0.12 else "eat", 0.5)
