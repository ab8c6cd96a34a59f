"""Shipped activity model, preprocessing and the runtime import fallback."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.inference import runtime
from device.inference.classifier import (
    CLASSES,
    FACTORY_MANIFEST,
    FACTORY_MODEL,
    ActivityClassifier,
    InvalidWindow,
    ModelIntegrityError,
    factory_classifier,
    features,
    resample,
    sha256_file,
)
from firmware_sim.motion import accel_window


@pytest.fixture(scope="module")
def clf() -> ActivityClassifier:
    return factory_classifier()


def test_shipped_model_is_small_pinned_and_described() -> None:
    manifest = json.loads(FACTORY_MANIFEST.read_text())
    assert FACTORY_MODEL.stat().st_size < 100 * 1024
    assert manifest["sha256"] == sha256_file(FACTORY_MODEL)
    assert manifest["model"]["classes"] == list(CLASSES)
    assert manifest["version"] == 1


def test_classifier_attributes(clf: ActivityClassifier) -> None:
    assert clf.window_seconds == 4.0 and clf.rate_hz == 20.0
    assert clf.classes == CLASSES


@pytest.mark.parametrize("activity,expected", [("walk", "walk"), ("run", "run"),
                                               ("rest", "rest"), ("sleep", "rest")])
def test_synthetic_collar_windows_mostly_right(clf: ActivityClassifier, activity: str,
                                               expected: str) -> None:
    rng = np.random.default_rng(1234)
    labels = [clf.predict(accel_window(activity, 100, 25.0, rng), 25.0).label for _ in range(40)]
    assert labels.count(expected) / len(labels) >= 0.8, labels


def test_prediction_fields(clf: ActivityClassifier) -> None:
    p = clf.predict(accel_window("run", 100, 25.0, np.random.default_rng(2)), 25.0)
    assert p.label == CLASSES[p.index]
    assert p.probs.shape == (len(CLASSES),)
    assert abs(float(p.probs.sum()) - 1.0) < 1e-3
    assert p.confidence == pytest.approx(float(p.probs.max()))


@pytest.mark.parametrize("rate", [20.0, 25.0, 50.0, 12.5])
def test_any_sensor_rate(clf: ActivityClassifier, rate: float) -> None:
    rng = np.random.default_rng(5)
    w = accel_window("run", int(6 * rate), rate, rng)  # longer than 4 s: the last 4 s are used
    assert clf.predict(w, rate).label == "run"


@pytest.mark.parametrize("window,rate,match", [
    (np.zeros((100, 2), np.float32), 25.0, "shape"),
    (np.zeros((5, 3), np.float32), 25.0, "samples"),
    (np.full((100, 3), np.nan, np.float32), 25.0, "NaN"),
    (np.zeros((100, 3), np.float32), 0.0, "rate_hz"),
    (np.zeros((100, 3), np.float32), float("nan"), "rate_hz"),
])
def test_bad_windows_rejected(clf: ActivityClassifier, window: np.ndarray, rate: float,
                              match: str) -> None:
    with pytest.raises(InvalidWindow, match=match):
        clf.predict(window, rate)


def test_resample_identity_and_linear() -> None:
    x = np.random.default_rng(0).normal(size=(80, 3)).astype(np.float32)
    assert np.array_equal(resample(x, 20.0), x)
    t = np.arange(100) / 25.0
    ramp = np.stack([t, 2 * t, -t], axis=1)
    out = resample(ramp, 25.0)
    t_out = t[-1] - (79 - np.arange(80)) / 20.0
    assert np.allclose(out, np.stack([t_out, 2 * t_out, -t_out], axis=1), atol=1e-5)


def _rotation(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@settings(max_examples=30, deadline=None)
@given(q=st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(
    lambda v: np.linalg.norm(v) > 0.1), seed=st.integers(0, 1000))
def test_features_do_not_depend_on_collar_orientation(q: list[float], seed: int) -> None:
    x = accel_window("walk", 80, 20.0, np.random.default_rng(seed))
    rotated = (x @ _rotation(np.array(q)).T).astype(np.float32)
    assert np.allclose(features(x), features(rotated), atol=2e-4)


@settings(max_examples=60, deadline=None)
@given(activity=st.sampled_from(["rest", "walk", "run", "eat", "play", "sleep"]),
       rate=st.floats(8.0, 100.0), seconds=st.floats(2.0, 8.0), seed=st.integers(0, 10_000))
def test_fused_kernel_matches_reference(activity: str, rate: float, seconds: float,
                                        seed: int) -> None:
    from device.inference.prep import prep_kernel

    n = max(2, int(seconds * rate))
    w = accel_window(activity, n, rate, np.random.default_rng(seed))
    ref = features(resample(w, rate))
    got = prep_kernel(w.astype(np.float64), rate, 20.0, 80)
    assert np.allclose(ref, got, atol=2e-5), float(np.abs(ref - got).max())


def test_predict_equals_reference_path(clf: ActivityClassifier) -> None:
    rng = np.random.default_rng(3)
    for act in ("walk", "eat", "play"):
        w = accel_window(act, 100, 25.0, rng)
        ref = clf.predict_features(features(resample(w, 25.0))[None])[0]
        assert np.allclose(clf.predict(w, 25.0).probs, ref, atol=1e-4)


def test_wrong_pinned_hash_refused() -> None:
    with pytest.raises(ModelIntegrityError, match="does not match the pinned"):
        ActivityClassifier(FACTORY_MODEL, expected_sha256="0" * 64)


def test_replaced_factory_file_refused(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from device.inference import classifier

    bad = tmp_path / "activity_v1.tflite"
    data = bytearray(FACTORY_MODEL.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(classifier, "FACTORY_MODEL", bad)
    with pytest.raises(ModelIntegrityError):
        classifier.factory_classifier()


def test_missing_runtime_gives_one_clear_error(monkeypatch) -> None:  # noqa: ANN001
    def no_runtime(name: str) -> object:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(runtime, "_import_module", no_runtime)
    with pytest.raises(runtime.ModelRuntimeMissing) as exc:
        ActivityClassifier(FACTORY_MODEL)
    msg = str(exc.value)
    assert "ai-edge-litert" in msg and "tflite-runtime" in msg


def test_falls_back_to_tflite_runtime(monkeypatch) -> None:  # noqa: ANN001
    import importlib

    real = importlib.import_module("ai_edge_litert.interpreter")
    seen: list[str] = []

    def only_tflite_runtime(name: str) -> object:
        seen.append(name)
        if name.startswith("ai_edge_litert"):
            raise ImportError("not installed")
        return types.SimpleNamespace(Interpreter=real.Interpreter)

    monkeypatch.setattr(runtime, "_import_module", only_tflite_runtime)
    cls, module = runtime.interpreter_class()
    assert module == "tflite_runtime.interpreter" and cls is real.Interpreter
    assert seen == ["ai_edge_litert.interpreter", "tflite_runtime.interpreter"]
    p = ActivityClassifier(FACTORY_MODEL).predict(np.zeros((80, 3), np.float32) + [0, 0, 1], 20.0)
    assert p.label in CLASSES


def test_prefers_ai_edge_litert() -> None:
    _cls, module = runtime.interpreter_class()
    assert module == "ai_edge_litert.interpreter"


@pytest.mark.parametrize("activity,expected", [("walk", "walk"), ("run", "run"),
                                               ("sleep", "rest")])
def test_numpy_rule_model_stands_in(activity: str, expected: str) -> None:
    from device.inference.classifier import ScoreModel
    from device.inference.fake import FixedModel, RuleModel

    model: ScoreModel = RuleModel()
    rng = np.random.default_rng(77)
    labels = [model.predict(accel_window(activity, 100, 25.0, rng), 25.0).label
              for _ in range(30)]
    assert labels.count(expected) >= 24, labels
    fixed: ScoreModel = FixedModel("play")
    assert fixed.predict(accel_window("rest", 100, 25.0, rng), 25.0).label == "play"
    with pytest.raises(InvalidWindow):
        fixed.predict(np.zeros((3, 3)), 25.0)
