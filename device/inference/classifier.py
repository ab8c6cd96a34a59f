"""Activity classifier: a TFLite model behind ``predict(window, rate_hz) -> Prediction``.

The preprocessing here (resample to the model rate, orientation-invariant channels) is the one
used for training too (``scripts/train_activity`` imports it), so training and serving agree.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from device.inference.runtime import load_interpreter

log = logging.getLogger(__name__)

#: Output classes of the activity model. ``sleep`` is not here: the accelerometer cannot tell it
#: from rest; it is derived later from long rest at night.
CLASSES: tuple[str, ...] = ("rest", "walk", "run", "eat", "play")
MODEL_RATE_HZ = 20.0
WINDOW_SECONDS = 4.0
#: Name of the input representation; stored in the model manifest as ``input``.
FEATURE_SET = "invariant4"
N_CHANNELS = 4

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
FACTORY_MODEL = MODELS_DIR / "activity_v1.tflite"
FACTORY_MANIFEST = MODELS_DIR / "activity_v1.json"


class InvalidWindow(ValueError):
    """The window cannot be classified (wrong shape, NaN/inf, too short, bad rate)."""


class ModelIntegrityError(RuntimeError):
    """A model file does not match the sha256 pinned for it."""


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    confidence: float
    probs: np.ndarray


class ScoreModel(Protocol):
    """What the agent needs from any activity model (a TFLite one or a NumPy fake in tests)."""

    window_seconds: float
    rate_hz: float

    def predict(self, window: np.ndarray, rate_hz: float) -> Prediction: ...


def check_window(window: np.ndarray, rate_hz: float, seconds: float = WINDOW_SECONDS
                 ) -> np.ndarray:
    """The window as float64 (n, 3), or ``InvalidWindow`` saying what is wrong with it."""
    x = np.asarray(window, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise InvalidWindow(f"expected an (n, 3) window, got shape {x.shape}")
    if not np.isfinite(rate_hz) or rate_hz <= 0:
        raise InvalidWindow(f"rate_hz must be a positive number, got {rate_hz}")
    if x.shape[0] < max(2, int(0.5 * seconds * rate_hz)):
        raise InvalidWindow(
            f"window has {x.shape[0]} samples; need at least half of {seconds:g} s at {rate_hz:g} Hz"
        )
    if not np.isfinite(x).all():
        raise InvalidWindow("window contains NaN or inf samples")
    return x


def resample(window: np.ndarray, rate_hz: float, *, rate_out: float = MODEL_RATE_HZ,
             seconds: float = WINDOW_SECONDS) -> np.ndarray:
    """The last ``seconds`` of ``window`` (n, 3) at ``rate_hz``, linearly resampled to ``rate_out``.

    A window shorter than ``seconds`` is padded by holding its first sample (np.interp clamps).
    """
    x = check_window(window, rate_hz, seconds)
    n_out = int(round(seconds * rate_out))
    if x.shape[0] == n_out and abs(rate_hz - rate_out) < 1e-9:
        return x.astype(np.float32)
    t_in = np.arange(x.shape[0]) / rate_hz
    t_out = t_in[-1] - (n_out - 1 - np.arange(n_out)) / rate_out
    out = np.empty((n_out, 3), dtype=np.float32)
    for k in range(3):
        out[:, k] = np.interp(t_out, t_in, x[:, k])
    return out


def features(x: np.ndarray) -> np.ndarray:
    """Orientation-invariant channels of a model-rate window (n, 3) in g -> (n, 4) float32.

    With ``g`` the window's mean vector (gravity estimate) and ``d = a - g``: |a| - 1,
    the vertical part of d (along g), the horizontal magnitude of d, and the tilt change
    (1 - cos of the angle between a and g). A collar can sit at any angle; these do not care.
    """
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    g = a.mean(axis=1, keepdims=True)
    gn = np.linalg.norm(g, axis=2, keepdims=True)
    u = g / np.maximum(gn, 1e-3)
    d = a - g
    mag = np.linalg.norm(a, axis=2, keepdims=True)
    v = np.sum(d * u, axis=2, keepdims=True)
    h = np.linalg.norm(d - v * u, axis=2, keepdims=True)
    tilt = 1.0 - np.sum(a * u, axis=2, keepdims=True) / np.maximum(mag, 1e-3)
    out = np.concatenate([mag - 1.0, v, h, tilt], axis=2).astype(np.float32)
    return out[0] if x.ndim == 2 else out


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


class ActivityClassifier:
    """One TFLite interpreter (1 thread, tensors allocated once) and the preprocessing.

    ``expected_sha256``: refuse to load a model file whose hash differs (``ModelIntegrityError``).
    ``meta``: the manifest's model fields (classes, rate_hz, window_seconds, input); defaults to
    this module's constants.
    """

    def __init__(self, model_path: Path | str, *, expected_sha256: str | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        self.model_path = Path(model_path)
        data = self.model_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            raise ModelIntegrityError(
                f"{self.model_path}: sha256 {digest} does not match the pinned {expected_sha256}; "
                "the model file is corrupt or was replaced - reinstall a signed bundle"
            )
        self.sha256 = digest
        meta = meta or {}
        self.classes: tuple[str, ...] = tuple(meta.get("classes", CLASSES))
        self.rate_hz = float(meta.get("rate_hz", MODEL_RATE_HZ))
        self.window_seconds = float(meta.get("window_seconds", WINDOW_SECONDS))
        feature_set = meta.get("input", FEATURE_SET)
        if feature_set != FEATURE_SET:
            raise ModelIntegrityError(
                f"model input {feature_set!r} is not supported by this agent (knows {FEATURE_SET!r})"
            )
        from device.kernels.loader import kernels  # compiled kernels: not needed by training code

        self._prep = kernels().prep
        self._interp = load_interpreter(data, num_threads=1)
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype = inp["dtype"]
        self._in_quant = inp.get("quantization", (0.0, 0))
        self._out_quant = out.get("quantization", (0.0, 0))
        self._n = int(round(self.window_seconds * self.rate_hz))
        want = (1, self._n, N_CHANNELS)
        if tuple(inp["shape"]) != want or int(out["shape"][-1]) != len(self.classes):
            raise ModelIntegrityError(
                f"model tensors {tuple(inp['shape'])} -> {tuple(out['shape'])} do not match "
                f"input {want} -> {len(self.classes)} classes"
            )

    def predict(self, window: np.ndarray, rate_hz: float) -> Prediction:
        """Classify the last ``window_seconds`` of ``window`` ((n, 3) in g at ``rate_hz``).

        Same result as ``features(resample(window, rate_hz))`` through the model, computed by the
        fused kernel in ``prep``. Raises ``InvalidWindow`` for a window that cannot be classified.
        """
        x = check_window(window, rate_hz, self.window_seconds)
        probs = self.predict_features(self._prep(x, float(rate_hz), self.rate_hz, self._n)[None])[0]
        if not np.isfinite(probs).all():
            raise InvalidWindow(f"model {self.sha256[:12]} gave non-finite output for this window")
        i = int(np.argmax(probs))
        return Prediction(self.classes[i], i, float(probs[i]), probs)

    def predict_features(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for preprocessed windows (b, n, channels), one invoke each."""
        out = np.empty((batch.shape[0], len(self.classes)), dtype=np.float32)
        for i in range(batch.shape[0]):
            x = batch[i : i + 1]
            if self._in_dtype != np.float32:
                scale, zero = self._in_quant
                info = np.iinfo(self._in_dtype)
                x = np.clip(np.round(x / scale + zero), info.min, info.max)
            self._interp.set_tensor(self._in_index, x.astype(self._in_dtype, copy=False))
            self._interp.invoke()
            y = self._interp.get_tensor(self._out_index)[0]
            if y.dtype != np.float32:
                scale, zero = self._out_quant
                y = (y.astype(np.float32) - zero) * scale
            out[i] = y
        return out


def smoke_test(clf: ActivityClassifier) -> None:
    """Raise ``ModelIntegrityError`` unless the model gives probabilities for a still window."""
    n = int(round(clf.window_seconds * clf.rate_hz))
    still = np.zeros((n, 3), dtype=np.float32)
    still[:, 2] = 1.0
    still[::2, 0] += 0.01
    try:
        probs = clf.predict(still, clf.rate_hz).probs
    except InvalidWindow as exc:
        raise ModelIntegrityError(f"model fails its smoke test: {exc}") from None
    if abs(float(probs.sum()) - 1.0) > 0.05 or float(probs.min()) < -1e-3:
        raise ModelIntegrityError(f"model output is not a probability vector: {probs}")


def load_manifest(path: Path | str = FACTORY_MANIFEST) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def factory_classifier() -> ActivityClassifier:
    """The shipped model, trusted through the sha256 pinned in its manifest."""
    manifest = load_manifest(FACTORY_MANIFEST)
    return ActivityClassifier(FACTORY_MODEL, expected_sha256=manifest["sha256"],
                              meta=manifest.get("model", {}))
