"""Model slots on the device: install as shadow, promote, rollback, crash safety, shadow stats."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from device.inference import bundle as bundle_mod
from device.inference.classifier import CLASSES, FACTORY_MODEL, Prediction
from device.inference.slots import FACTORY, ModelSlots, ShadowStats, SlotError
from firmware_sim.motion import accel_window
from shared.bundles import (
    BundleDowngrade,
    BundleIncompatible,
    BundleSignatureError,
    BundleTampered,
    BundleWrongDeviceClass,
    build_bundle,
)
from shared.codec import to_json
from shared.records import Disagreement
from shared.signing import generate_keypair, sign_message, verify_message

PRIV, PUB = generate_keypair()
FOREIGN_PRIV, _ = generate_keypair()
MODEL = FACTORY_MODEL.read_bytes()
META = {"classes": list(CLASSES), "rate_hz": 20.0, "window_seconds": 4.0, "input": "invariant4"}


def make(version: int, *, priv=PRIV, device_class: str = "collar",  # noqa: ANN001
         model: bytes = MODEL) -> bytes:
    return build_bundle(model, {"v": version}, name="activity", version=version,
                        private_key=priv, device_class=device_class, model_meta=META)


@pytest.fixture()
def slots(tmp_path: Path) -> ModelSlots:
    return ModelSlots(tmp_path, PUB, device_class="collar", agent_version="0.1.0")


def versions(s: ModelSlots) -> tuple[int | None, ...]:
    out = []
    for role in ("active", "shadow", "previous"):
        m = s.manifest(role)
        out.append(None if m is None else m.version)
    return tuple(out)


def walk_window(seed: int = 0) -> np.ndarray:
    return accel_window("walk", 100, 25.0, np.random.default_rng(seed))


def test_fresh_device_runs_factory(slots: ModelSlots) -> None:
    assert slots.slot("active") == FACTORY and versions(slots) == (1, None, None)
    assert slots.shadow_classifier() is None
    assert slots.classify(walk_window(), 25.0).label in CLASSES
    st = slots.status()
    assert st["active"]["version"] == 1 and st["shadow"] is None and st["shadow_stats"] is None


def test_install_shadow_promote_rollback(slots: ModelSlots, tmp_path: Path) -> None:
    m = slots.install_shadow(make(2))
    assert m.version == 2 and versions(slots) == (1, 2, None)
    for i in range(5):
        slots.classify(walk_window(i), 25.0, ts=1000.0 + i)
    stats = slots.status()["shadow_stats"]
    assert stats["windows"] == 5 and stats["agreement"] == 1.0  # same weights: full agreement

    assert slots.promote().version == 2
    assert versions(slots) == (2, None, 1)
    assert slots.active_classifier().sha256 == m.sha256

    slots.install_shadow(make(3))
    slots.promote()
    assert versions(slots) == (3, None, 2)
    # v1 (factory) is no longer referenced; v2 stays on disk as previous; nothing else left over
    assert len([p for p in (tmp_path / "models" / "slots").iterdir()]) == 2

    assert slots.rollback().version == 2 and versions(slots) == (2, None, None)
    assert slots.rollback().version == 1 and slots.slot("active") == FACTORY
    with pytest.raises(SlotError, match="nothing to roll back to"):
        slots.rollback()


def test_state_survives_restart(slots: ModelSlots, tmp_path: Path) -> None:
    slots.install_shadow(make(2))
    slots.promote()
    slots.install_shadow(make(3))
    again = ModelSlots(tmp_path, PUB, device_class="collar")
    assert versions(again) == (2, 3, 1)
    assert again.classify(walk_window(), 25.0).label in CLASSES
    assert json.loads((tmp_path / "models" / "index.json").read_text())["active"].startswith(
        "activity-v2-")


def test_promote_without_shadow(slots: ModelSlots) -> None:
    with pytest.raises(SlotError, match="no shadow"):
        slots.promote()


def test_discard_shadow(slots: ModelSlots) -> None:
    slots.install_shadow(make(2))
    slots.discard_shadow()
    assert versions(slots) == (1, None, None)


def test_redelivered_bundle_is_idempotent(slots: ModelSlots) -> None:
    data = make(2)
    slots.install_shadow(data)
    slots.install_shadow(data)
    assert versions(slots) == (1, 2, None)


@pytest.mark.parametrize("data,error", [
    (lambda: make(4, priv=FOREIGN_PRIV), BundleSignatureError),
    (lambda: make(4, device_class="tracker"), BundleWrongDeviceClass),
    (lambda: make(4)[:-100], BundleTampered),
    (lambda: make(4, model=b"TFL3 definitely not a flatbuffer"), BundleIncompatible),
])
def test_refused_bundles_change_nothing(slots: ModelSlots, tmp_path: Path, data, error) -> None:  # noqa: ANN001
    slots.install_shadow(make(3))
    slots.promote()
    before = (tmp_path / "models" / "index.json").read_bytes()
    listing = sorted(p.name for p in (tmp_path / "models" / "slots").iterdir())
    with pytest.raises(error):
        slots.install_shadow(data())
    assert (tmp_path / "models" / "index.json").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "models" / "slots").iterdir()) == listing
    assert versions(slots) == (3, None, 1)


def test_downgrade_needs_explicit_rollback(slots: ModelSlots) -> None:
    slots.install_shadow(make(3))
    slots.promote()
    with pytest.raises(BundleDowngrade):
        slots.install_shadow(make(2))
    # the cloud's signed rollback command names the version; the agent verifies it, then:
    command = b'{"cmd":"rollback","model":"activity","version":2}'
    verify_message(PUB, command, sign_message(PRIV, command))
    assert slots.install_shadow(make(2), allow_rollback_to=2).version == 2
    assert slots.promote().version == 2


@pytest.mark.parametrize("cut", [0, 10, 1000, 5000, -22, -1])
def test_truncated_download_leaves_previous_active(slots: ModelSlots, cut: int) -> None:
    slots.install_shadow(make(2))
    slots.promote()
    data = make(3)
    with pytest.raises(BundleTampered):
        slots.install_shadow(data[:cut])
    assert versions(slots) == (2, None, 1)
    assert slots.classify(walk_window(), 25.0).label in CLASSES


def test_crash_during_install_leaves_previous_loadable(slots: ModelSlots, tmp_path: Path,
                                                       monkeypatch) -> None:  # noqa: ANN001
    slots.install_shadow(make(2))
    slots.promote()
    real_replace = os.replace

    def power_cut(src, dst):  # noqa: ANN001, ANN202
        raise OSError("power cut")

    monkeypatch.setattr(bundle_mod.os, "replace", power_cut)
    with pytest.raises(OSError, match="power cut"):
        slots.install_shadow(make(3))
    monkeypatch.setattr(bundle_mod.os, "replace", real_replace)
    assert versions(slots) == (2, None, 1)
    # a real power cut leaves the temp dir behind: simulate it; the next start cleans it up
    leftover = tmp_path / "models" / "slots" / ".install-dead"
    leftover.mkdir()
    (leftover / "model.tflite").write_bytes(MODEL[:100])
    restarted = ModelSlots(tmp_path, PUB, device_class="collar")
    assert versions(restarted) == (2, None, 1) and not leftover.exists()
    assert restarted.classify(walk_window(), 25.0).label in CLASSES
    assert restarted.install_shadow(make(3)).version == 3


def test_corrupt_active_on_disk_falls_back(slots: ModelSlots, tmp_path: Path) -> None:
    slots.install_shadow(make(2))
    slots.promote()
    slots.install_shadow(make(3))
    slots.promote()
    model_file = tmp_path / "models" / "slots" / slots.slot("active") / "model.tflite"
    data = bytearray(model_file.read_bytes())
    data[100] ^= 0xFF
    model_file.write_bytes(bytes(data))
    restarted = ModelSlots(tmp_path, PUB, device_class="collar")
    assert versions(restarted) == (2, None, None)
    assert any("unusable" in e for e in restarted.load_errors)
    # corruption while running: the next classify rolls back by itself
    model_file2 = tmp_path / "models" / "slots" / restarted.slot("active") / "model.tflite"
    model_file2.write_bytes(b"garbage")
    restarted._cache.clear()
    assert restarted.classify(walk_window(), 25.0).label in CLASSES
    assert restarted.slot("active") == FACTORY


def test_garbage_index_means_factory(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "index.json").write_text("{not json")
    s = ModelSlots(tmp_path, PUB, device_class="collar")
    assert s.slot("active") == FACTORY and s.load_errors


def _pred(i: int) -> Prediction:
    probs = np.zeros(len(CLASSES), np.float32)
    probs[i] = 0.9
    return Prediction(CLASSES[i], i, 0.9, probs)


def test_shadow_stats_bounded_and_summarised() -> None:
    s = ShadowStats(max_disagreements=20)
    for t in range(100):
        s.record(float(t), _pred(0), _pred(0 if t % 2 else 1))
    d = s.summary()
    assert d.windows == 100 and d.agree == 50 and d.agreement == 0.5
    assert d.confusion == {"rest": {"rest": 50, "walk": 50}}
    assert len(d.disagreements) == 20
    assert d.disagreements[-1] == Disagreement(98.0, "rest", "walk", 0.9, 0.9)
    saved = json.loads(json.dumps(to_json(d)))
    assert ShadowStats.from_summary(d).summary() == d
    assert ShadowStats.from_summary(saved).summary() == d, "restored from the saved JSON"


def test_shadow_stats_reset_on_new_shadow(slots: ModelSlots) -> None:
    slots.install_shadow(make(2))
    slots.classify(walk_window(), 25.0)
    assert slots.shadow_stats.total == 1
    slots.install_shadow(make(3))
    assert slots.shadow_stats.total == 0


def test_redelivered_active_bundle_is_a_no_op(slots: ModelSlots) -> None:
    data = make(2)
    slots.install_shadow(data)
    slots.promote()
    assert slots.install_shadow(data).version == 2
    assert versions(slots) == (2, None, 1)


@pytest.mark.parametrize("entry", ["../../etc", "/abs/path", 42, "activity-v2-zz"])
def test_index_entries_are_validated(tmp_path: Path, entry: object) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "index.json").write_text(json.dumps({"active": entry}))
    s = ModelSlots(tmp_path, PUB, device_class="collar")
    assert s.slot("active") == FACTORY and s.load_errors
    assert json.loads((tmp_path / "models" / "index.json").read_text())["active"] == FACTORY


def test_repaired_index_is_saved(slots: ModelSlots, tmp_path: Path) -> None:
    slots.install_shadow(make(2))
    slots.promote()
    (tmp_path / "models" / "slots" / slots.slot("active") / "manifest.sig").write_bytes(b"x" * 64)
    first = ModelSlots(tmp_path, PUB, device_class="collar")
    assert first.slot("active") == FACTORY and first.load_errors
    second = ModelSlots(tmp_path, PUB, device_class="collar")
    assert second.slot("active") == FACTORY and not second.load_errors


CHILD = """
import sys
from pathlib import Path
from device.inference.slots import ModelSlots
state, pub, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
bundles = [Path(state).parent.joinpath(f"b{v}.bundle").read_bytes() for v in range(2, 2 + n)]
slots = ModelSlots(state, Path(pub), device_class="collar")
print("ready", flush=True)
while True:
    for data in bundles:
        while slots.slot("active") != "factory":  # undo whatever a kill left half-way
            slots.rollback()
        slots.install_shadow(data)
        slots.promote()
        print("cycle", flush=True)
"""


def test_sigkill_during_installs_leaves_a_loadable_model(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from shared.signing import save_public_key

    state = tmp_path / "state"
    pub = save_public_key(tmp_path / "cloud.pub", PUB)
    n = 4
    for v in range(2, 2 + n):
        (tmp_path / f"b{v}.bundle").write_bytes(make(v))
    rng = np.random.default_rng(0)
    root = Path(__file__).resolve().parent.parent
    for k in range(2):
        err = tmp_path / f"child{k}.err"
        with open(err, "w") as err_f:
            proc = subprocess.Popen([sys.executable, "-c", CHILD, str(state), str(pub), str(n)],
                                    cwd=root, stdout=subprocess.PIPE, stderr=err_f, text=True)
            try:
                assert proc.stdout is not None
                lines = [proc.stdout.readline().strip(), proc.stdout.readline().strip()]
                assert lines == ["ready", "cycle"], err.read_text()  # installs are under way
                time.sleep(float(rng.uniform(0.0, 0.3)))
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
        s = ModelSlots(state, PUB, device_class="collar")
        assert not s.load_errors, s.load_errors
        assert s.classify(walk_window(), 25.0).label in CLASSES
        assert not [p for p in (state / "models" / "slots").iterdir() if p.name.startswith(".")]


def test_shadow_stats_survive_restart_for_the_same_shadow(slots: ModelSlots, tmp_path: Path) -> None:
    slots.install_shadow(make(2))
    for i in range(3):
        slots.classify(walk_window(i), 25.0, ts=float(i))
    slots.save_shadow_stats()
    again = ModelSlots(tmp_path, PUB, device_class="collar")
    assert again.shadow_stats.total == 3
    again.install_shadow(make(3))  # a new shadow starts from zero, also after a restart
    again.save_shadow_stats()
    assert ModelSlots(tmp_path, PUB, device_class="collar").shadow_stats.total == 0


def test_detector_config_travels_with_the_model(slots: ModelSlots) -> None:
    assert slots.detector_config() == {}
    slots.install_shadow(make(2))
    assert slots.detector_config("shadow") == {"v": 2}
    slots.promote()
    assert slots.detector_config() == {"v": 2} and slots.detector_config("previous") == {}


def test_signed_model_with_mismatched_shape_is_refused(slots: ModelSlots) -> None:
    bad_meta = dict(META, window_seconds=2.0)  # says 40 samples; the model takes 80
    data = build_bundle(MODEL, {}, name="activity", version=2, private_key=PRIV,
                        device_class="collar", model_meta=bad_meta)
    with pytest.raises(BundleIncompatible, match="do not match"):
        slots.install_shadow(data)
    assert versions(slots) == (1, None, None)


def test_signed_model_with_nan_output_is_refused(slots: ModelSlots, monkeypatch) -> None:  # noqa: ANN001
    from device.inference.classifier import ActivityClassifier

    monkeypatch.setattr(ActivityClassifier, "predict_features",
                        lambda self, batch: np.full((len(batch), len(CLASSES)), np.nan, np.float32))
    with pytest.raises(BundleIncompatible, match="smoke test"):
        slots.install_shadow(make(2))
    assert versions(slots) == (1, None, None)
