"""Training/evaluation data: WISDM windows split by subject, simulated collar windows, baseline."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from device.inference.classifier import CLASSES
from edgeloop.evaluation.activity import (
    TEST_SUBJECTS,
    WINDOW_N,
    WISDM_ACTIVITIES,
    MagnitudeBaseline,
    collar_windows,
    load_wisdm_segments,
    per_class_report,
    wisdm_dir,
    wisdm_windows,
)
from edgeloop.evaluation.datasets import DataNotFoundError


@pytest.fixture(scope="module")
def two_subjects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        src = wisdm_dir() / "raw_watch_accel"
    except DataNotFoundError as exc:
        pytest.skip(f"WISDM data not available: {exc}")
    root = tmp_path_factory.mktemp("wisdm")
    (root / "raw_watch_accel").mkdir()
    for sid in (1600, TEST_SUBJECTS[0]):
        name = f"data_{sid}_accel_watch.txt.xz"
        shutil.copy(src / name, root / "raw_watch_accel" / name)
    return root


@pytest.fixture(scope="module")
def segments(two_subjects: Path) -> list:
    return load_wisdm_segments(two_subjects)


def test_mapping_covers_all_18_activities_and_only_product_classes() -> None:
    assert len(WISDM_ACTIVITIES) == 18
    assert {cls for _name, cls in WISDM_ACTIVITIES.values()} == set(CLASSES)


def test_windows_are_split_by_subject(segments: list) -> None:
    train = wisdm_windows(segments, exclude=TEST_SUBJECTS)
    test = wisdm_windows(segments, TEST_SUBJECTS)
    assert set(train.subject.tolist()) == {1600}
    assert set(test.subject.tolist()) == {TEST_SUBJECTS[0]}
    assert train.x.shape[1:] == (WINDOW_N, 3) and train.x.dtype == np.float32
    # in g: the mean magnitude of a still subject is about 1
    still = train.x[train.source == "D"]
    assert 0.8 < float(np.linalg.norm(still, axis=2).mean()) < 1.2
    assert set(train.source.tolist()) == set(WISDM_ACTIVITIES)


def test_segments_hold_a_window_and_a_known_label(segments: list) -> None:
    for seg in segments:
        assert seg.xyz.shape[0] >= WINDOW_N and seg.code in WISDM_ACTIVITIES


def test_collar_windows_and_baseline() -> None:
    tr, te = collar_windows(30, seed=1), collar_windows(30, seed=2)
    assert tr.x.shape == (180, WINDOW_N, 3)
    assert not np.array_equal(tr.x, te.x)
    rep = per_class_report(te.y, MagnitudeBaseline().fit(tr.x, tr.y).predict(te.x))
    assert 0.4 < rep["accuracy"] <= 1.0
    assert set(rep["per_class"]) == set(CLASSES)
    with pytest.raises(RuntimeError):
        MagnitudeBaseline().predict(te.x)


def test_knn_peer_learns_collar_windows() -> None:
    from edgeloop.evaluation.activity import HandFeatureKNN, hand_features

    tr, te = collar_windows(30, seed=1), collar_windows(20, seed=2)
    assert hand_features(te.x).shape == (len(te.y), 8)
    acc = float(np.mean(HandFeatureKNN(k=5).fit(tr.x, tr.y).predict(te.x, chunk=7) == te.y))
    assert acc > 0.7
    with pytest.raises(RuntimeError):
        HandFeatureKNN().predict(te.x)
