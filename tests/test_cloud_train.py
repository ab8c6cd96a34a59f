"""``edgeloop train``: dataset + base bundle -> signed candidate bundle (tuned detector, next version)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cloud.regression.fixtures import add_alert, add_feedback
from cloud.retrain import export_dataset
from cloud.retrain.train import train_cli
from cloud.store.db import CloudStore
from edgeloop.cli import main
from shared.bundles import build_bundle, read_bundle
from shared.signing import generate_keypair, save_private_key

NOW = 1_800_000_000.0
D = 86400.0


@pytest.fixture()
def setup(tmp_path: Path) -> dict[str, Path]:
    store = CloudStore()
    for i in range(10):  # true positives: resting HR +15..+24 %; false alarms: +2..+8 %
        add_alert(store, f"t{i}", NOW - D + i, score=0.6, metrics={"resting_hr": (115 + i, 100)})
        add_feedback(store, f"t{i}", "confirm", NOW - 100 + i)
    for i in range(7):
        add_alert(store, f"f{i}", NOW - D + 100 + i, score=0.6, metrics={"resting_hr": (102 + i, 100)})
        add_feedback(store, f"f{i}", "dismiss", NOW - 50 + i)
    ds = export_dataset(store, tmp_path / "ds", NOW)
    priv, pub = generate_keypair()
    save_private_key(tmp_path / "cloud.key", priv)
    base = tmp_path / "v3.bundle"
    base.write_bytes(build_bundle(b"tflite-bytes", {"min_score": 0.0, "cusum_h": 12.0}, name="collar-activity",
                                  version=3, private_key=priv, device_class="collar"))
    return {"ds": Path(ds), "key": tmp_path / "cloud.key", "base": base, "tmp": tmp_path, "pub": pub}  # type: ignore[dict-item]


def test_train_writes_a_signed_tuned_candidate(setup: dict) -> None:  # type: ignore[type-arg]
    out = io.StringIO()
    cand = setup["tmp"] / "cand.bundle"
    assert train_cli(str(setup["ds"]), str(setup["base"]), str(setup["key"]), str(cand), out=out) == 0
    b = read_bundle(cand.read_bytes(), setup["pub"], running_version=3, device_class="collar")
    assert b.manifest.version == 4 and b.manifest.name == "collar-activity"
    assert b.model_bytes == b"tflite-bytes" and b.detector_config["cusum_h"] == 12.0
    assert 0.08 < b.detector_config["metric_thresholds"]["resting_hr"] <= 0.15
    assert b.manifest.model["trained_from"]["base_version"] == 3
    text = out.getvalue()
    assert "candidate v4" in text and "resting_hr" in text and "edgeloop release check" in text


def test_train_packages_a_retrained_model_and_refuses_bad_input(setup: dict, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[type-arg]
    model = tmp_path / "new.tflite"
    model.write_bytes(b"retrained")
    cand = tmp_path / "c.bundle"
    assert main(["train", str(setup["ds"]), "--base", str(setup["base"]), "--key", str(setup["key"]),
                 "--out", str(cand), "--model", str(model), "--version", "7"]) == 0
    b = read_bundle(cand.read_bytes(), setup["pub"], running_version=3, device_class="collar")
    assert b.model_bytes == b"retrained" and b.manifest.version == 7
    for args, msg in (
        (["--version", "3"], "must be above"),
        (["--key", str(tmp_path / "missing.key")], "signing key"),
        (["--base", str(model)], "base bundle"),
    ):
        argv = ["train", str(setup["ds"]), "--base", str(setup["base"]), "--key", str(setup["key"]),
                "--out", str(tmp_path / "x.bundle"), *args]
        assert main(argv) == 2, args
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "x.bundle").exists()
    other, _ = generate_keypair()
    save_private_key(tmp_path / "other.key", other)
    assert main(["train", str(setup["ds"]), "--base", str(setup["base"]), "--key", str(tmp_path / "other.key"),
                 "--out", str(tmp_path / "x.bundle")]) == 2, "a base bundle not signed by this cloud"


def test_nothing_better_writes_nothing(setup: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    store = CloudStore()
    add_alert(store, "t", NOW - D, score=0.6, metrics={"resting_hr": (120, 100)})
    add_feedback(store, "t", "confirm", NOW - 100)
    ds = export_dataset(store, tmp_path / "ds1", NOW)
    out = io.StringIO()
    cand = tmp_path / "none.bundle"
    assert train_cli(str(ds), str(setup["base"]), str(setup["key"]), str(cand), out=out) == 1
    assert not cand.exists() and "no candidate" in out.getvalue()
