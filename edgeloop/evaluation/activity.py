"""Training/evaluation windows: WISDM 2019 watch accelerometer (real) and simulated collar data.

Shared by ``scripts/train_activity`` (TensorFlow, dev only) and ``scripts/bench_model`` (runtime
only), so the subject-held-out test windows are rebuilt identically by both. Also holds the
non-neural baseline the model is compared against.
"""

from __future__ import annotations

import logging
import lzma
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.inference.classifier import CLASSES, MODEL_RATE_HZ, WINDOW_SECONDS, resample
from edgeloop.evaluation.datasets import ENV_VAR, WISDM_DIR, dataset_dir
from firmware_sim.motion import accel_window

log = logging.getLogger(__name__)

G = 9.80665
#: WISDM activity code -> (activity name, product class). Why: see docs/model_card_activity.md.
WISDM_ACTIVITIES: dict[str, tuple[str, str]] = {
    "A": ("walking", "walk"),
    "B": ("jogging", "run"),
    "C": ("stairs", "walk"),
    "D": ("sitting", "rest"),
    "E": ("standing", "rest"),
    "F": ("typing", "rest"),
    "G": ("teeth", "play"),
    "H": ("soup", "eat"),
    "I": ("chips", "eat"),
    "J": ("pasta", "eat"),
    "K": ("drinking", "eat"),
    "L": ("sandwich", "eat"),
    "M": ("kicking", "play"),
    "O": ("catch", "play"),
    "P": ("dribbling", "play"),
    "Q": ("writing", "rest"),
    "R": ("clapping", "play"),
    "S": ("folding", "play"),
}
#: Subject ids held out for testing (the raw set has 1600-1611), fixed before any training.
TEST_SUBJECTS: tuple[int, ...] = (1609, 1610, 1611)
#: Collar activity (firmware_sim.motion) -> product class.
COLLAR_CLASS = {"sleep": "rest", "rest": "rest", "walk": "walk", "run": "run", "eat": "eat",
                "play": "play"}
WINDOW_N = int(round(WINDOW_SECONDS * MODEL_RATE_HZ))
MAX_GAP_S = 0.2


def wisdm_dir() -> Path:
    """The WISDM folder under the evaluation data root (``$EDGELOOP_DATA``, see
    :func:`edgeloop.evaluation.datasets.data_root`); DataNotFoundError when it is missing."""
    return dataset_dir(WISDM_DIR)


@dataclass(frozen=True)
class Segment:
    """A gap-free run of one subject doing one activity, in g at 20 Hz."""

    subject: int
    code: str
    xyz: np.ndarray


@dataclass(frozen=True)
class Windows:
    x: np.ndarray  # (N, WINDOW_N, 3) float32, g, model rate
    y: np.ndarray  # (N,) int class index into CLASSES
    subject: np.ndarray  # (N,) int (0 for simulated)
    source: np.ndarray  # (N,) str: WISDM activity code or collar activity name


def load_wisdm_segments(root: Path | None = None) -> list[Segment]:
    """Parse every raw watch-accel file; split at gaps > 0.2 s, time going back or label changes."""
    root = root or wisdm_dir()
    files = sorted((root / "raw_watch_accel").glob("data_*_accel_watch.txt*"))
    if not files:
        raise FileNotFoundError(f"no WISDM raw files under {root}/raw_watch_accel "
                                f"(set {ENV_VAR} to the folder holding {WISDM_DIR}/)")
    segments: list[Segment] = []
    for path in files:
        opener = lzma.open if path.suffix == ".xz" else open
        with opener(path, "rt") as f:
            rows = [line.strip().rstrip(";").split(",") for line in f if line.strip()]
        subj = np.array([int(r[0]) for r in rows])
        code = np.array([r[1] for r in rows])
        ts = np.array([int(r[2]) for r in rows], dtype=np.int64)
        xyz = np.array([[float(v) for v in r[3:6]] for r in rows], dtype=np.float64) / G
        dt = np.diff(ts) / 1e9
        cut = np.flatnonzero((dt <= 0) | (dt > MAX_GAP_S) | (code[1:] != code[:-1])) + 1
        for a, b in zip(np.r_[0, cut], np.r_[cut, len(rows)], strict=True):
            if b - a >= WINDOW_N:
                segments.append(Segment(int(subj[a]), str(code[a]), xyz[a:b].astype(np.float32)))
    log.info("WISDM: %d segments from %d files", len(segments), len(files))
    return segments


def wisdm_windows(segments: list[Segment], subjects: tuple[int, ...] | None = None, *,
                  exclude: tuple[int, ...] = (), hop: int = WINDOW_N // 2) -> Windows:
    """Sliding windows (WINDOW_N samples, ``hop`` step) of the selected subjects' segments."""
    xs, ys, ss, cs = [], [], [], []
    cls = {c: i for i, c in enumerate(CLASSES)}
    for seg in segments:
        if (subjects is not None and seg.subject not in subjects) or seg.subject in exclude:
            continue
        label = cls[WISDM_ACTIVITIES[seg.code][1]]
        for start in range(0, seg.xyz.shape[0] - WINDOW_N + 1, hop):
            xs.append(seg.xyz[start : start + WINDOW_N])
            ys.append(label)
            ss.append(seg.subject)
            cs.append(seg.code)
    if not xs:
        return Windows(np.zeros((0, WINDOW_N, 3), np.float32), np.zeros(0, int),
                       np.zeros(0, int), np.zeros(0, "<U8"))
    return Windows(np.stack(xs), np.array(ys), np.array(ss), np.array(cs))


def collar_windows(n_per_activity: int, seed: int, rate_hz: float = 25.0) -> Windows:
    """Simulated collar windows (firmware_sim.motion) at ``rate_hz``, resampled to the model rate."""
    rng = np.random.default_rng(seed)
    n_in = int(round(WINDOW_SECONDS * rate_hz))
    cls = {c: i for i, c in enumerate(CLASSES)}
    xs, ys, cs = [], [], []
    for act, target in COLLAR_CLASS.items():
        for _ in range(n_per_activity):
            w = accel_window(act, n_in, rate_hz, rng, intensity=float(rng.uniform(0.6, 1.4)))
            xs.append(resample(w, rate_hz))
            ys.append(cls[target])
            cs.append(act)
    n = len(xs)
    return Windows(np.stack(xs), np.array(ys), np.zeros(n, int), np.array(cs))


class MagnitudeBaseline:
    """Non-neural baseline: nearest class centroid on (mean, log std) of the signal magnitude.

    The kind of thresholding a firmware engineer writes by hand; fitted on the training split.
    """

    def __init__(self) -> None:
        self.centroids: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    @staticmethod
    def features(x: np.ndarray) -> np.ndarray:
        mag = np.linalg.norm(x, axis=2)
        return np.stack([mag.mean(axis=1), np.log(mag.std(axis=1) + 1e-3)], axis=1)

    def fit(self, x: np.ndarray, y: np.ndarray) -> MagnitudeBaseline:
        f = self.features(x)
        self.scale = f.std(axis=0) + 1e-9
        self.centroids = np.stack([f[y == k].mean(axis=0) for k in range(len(CLASSES))])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.centroids is None or self.scale is None:
            raise RuntimeError("fit() first")
        f = self.features(x) / self.scale
        d = np.linalg.norm(f[:, None, :] - (self.centroids / self.scale)[None], axis=2)
        return np.argmin(d, axis=1)


def hand_features(x: np.ndarray) -> np.ndarray:
    """Eight classic per-window features on the orientation-invariant channels: magnitude mean
    and log std, log std of the vertical and log mean of the horizontal dynamic part, dominant
    cadence (0.5-5 Hz) and its peak share, log std of the tilt change, log mean |jerk|."""
    from device.inference.classifier import features

    f = features(x)
    mag, v, h, tilt = f[..., 0], f[..., 1], f[..., 2], f[..., 3]
    spec = np.abs(np.fft.rfft(mag - mag.mean(axis=1, keepdims=True), axis=1))
    freqs = np.fft.rfftfreq(mag.shape[1], 1.0 / MODEL_RATE_HZ)
    band = (freqs >= 0.5) & (freqs <= 5.0)
    peak = freqs[band][np.argmax(spec[:, band], axis=1)]
    share = spec[:, band].max(axis=1) / (spec[:, band].sum(axis=1) + 1e-9)
    return np.stack([mag.mean(axis=1), np.log(mag.std(axis=1) + 1e-3),
                     np.log(v.std(axis=1) + 1e-3), np.log(h.mean(axis=1) + 1e-3), peak, share,
                     np.log(tilt.std(axis=1) + 1e-4),
                     np.log(np.abs(np.diff(mag, axis=1)).mean(axis=1) + 1e-4)], axis=1)


class HandFeatureKNN:
    """A stronger non-neural peer: k-nearest neighbours (k=15, fixed, not tuned) on the eight
    standardised ``hand_features``. It keeps every training window, so it is a reference for
    the benchmark, not something to ship on a collar."""

    def __init__(self, k: int = 15) -> None:
        self.k = k
        self._z: np.ndarray | None = None
        self._y: np.ndarray | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> HandFeatureKNN:
        f = hand_features(x)
        self._mu, self._sd = f.mean(axis=0), f.std(axis=0) + 1e-9
        self._z, self._y = (f - self._mu) / self._sd, np.asarray(y)
        return self

    def predict(self, x: np.ndarray, chunk: int = 512) -> np.ndarray:
        if self._z is None or self._y is None:
            raise RuntimeError("fit() first")
        zt = (hand_features(x) - self._mu) / self._sd
        out = np.empty(len(zt), dtype=int)
        sq = (self._z**2).sum(axis=1)
        for s in range(0, len(zt), chunk):
            q = zt[s : s + chunk]
            d = sq[None, :] - 2.0 * q @ self._z.T
            idx = np.argpartition(d, self.k, axis=1)[:, : self.k]
            out[s : s + chunk] = [np.bincount(self._y[i], minlength=len(CLASSES)).argmax()
                                  for i in idx]
        return out


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, object]:
    """Accuracy, balanced accuracy, per-class precision/recall/support and the confusion matrix."""
    k = len(CLASSES)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (y_true, y_pred), 1)
    per: dict[str, dict[str, float]] = {}
    for i, c in enumerate(CLASSES):
        tp, col, row = cm[i, i], cm[:, i].sum(), cm[i].sum()
        per[c] = {"precision": float(tp / col) if col else 0.0,
                  "recall": float(tp / row) if row else 0.0, "support": int(row)}
    recalls = [per[c]["recall"] for c in CLASSES if per[c]["support"]]
    return {"accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
            "balanced_accuracy": float(np.mean(recalls)) if recalls else 0.0,
            "per_class": per, "confusion": cm.tolist()}
