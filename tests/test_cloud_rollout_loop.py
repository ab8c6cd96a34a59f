"""The whole learning loop on the cloud side, without a broker: owner feedback -> retraining
request with its dataset -> tuned detector candidate in a signed bundle -> release check ->
staged rollout -> fleet; a candidate that breaks past failures never starts."""

from __future__ import annotations

import io
from pathlib import Path

from cloud.regression import ReleaseRef, list_cases
from cloud.regression.fixtures import add_alert, add_feedback
from cloud.releases import (
    RolloutManager,
    current_release,
    load_rollout_config,
    register_release,
    release_check_cli,
    rollout_status,
    start_rollout_cli,
)
from cloud.retrain import (
    evaluate_retrain_rules,
    evaluations,
    load_retrain_config,
    train_detector_candidate,
)
from cloud.store.db import CloudStore
from shared import bundles, signing

H, D = 3600.0, 86400.0
T0 = 1_800_000_000.0
DEVICES = [f"col-{i:03d}" for i in range(40)]


def _alerts(store: CloudStore, t0: float, devices: list[str], version: str, tag: str,
            gate: float | None = None) -> None:
    """Per device: one real problem (hr +20%) and two harmless blips (hr +3%, +5%); owners answer.
    ``gate`` (a resting_hr threshold) drops the alerts a candidate would not raise."""
    with store.backend.transaction():
        _alerts_tx(store, t0, devices, version, tag, gate)


def _alerts_tx(store: CloudStore, t0: float, devices: list[str], version: str, tag: str,
               gate: float | None) -> None:
    for i, d in enumerate(devices):
        for j, (obs, real) in enumerate(((120.0, True), (103.0, False), (105.0, False))):
            if gate is not None and (obs - 100) / 100 < gate:
                continue
            aid = f"{tag}-{d}-{j}"
            ts = t0 + i * 60 + j * 3 * H
            add_alert(store, aid, ts, device_id=d, individual_id=f"pet-{d}", model_version=version,
                      metrics={"resting_hr": (obs, 100.0)})
            add_feedback(store, aid, "confirm" if real else "dismiss", ts + 600, device_id=d,
                         individual_id=f"pet-{d}")


def _open(db: Path) -> CloudStore:
    """The file store the CLI uses, without fsync per commit (this test makes thousands)."""
    store = CloudStore(db)
    store.backend.execute("PRAGMA synchronous=OFF")
    return store


def _bundle(tmp: Path, priv: object, version: int, detector: dict) -> tuple[Path, str]:
    data = bundles.build_bundle(f"tflite-{version}".encode(), detector, name="collar", version=version,
                                private_key=priv, device_class="collar-v1")
    p = tmp / f"collar-{version}.bundle"
    p.write_bytes(data)
    manifest = bundles.read_bundle(data, signing.load_public_key(signing.public_key_bytes(
        signing.load_private_key(priv).public_key())), running_version=0, device_class="collar-v1").manifest
    return p, manifest.sha256


def test_feedback_to_fleet(tmp_path: Path) -> None:
    priv, pub = signing.generate_keypair()
    db = tmp_path / "cloud.db"
    store = _open(db)
    v1_detector = {"min_score": 0.0, "cusum_h": 12.0}
    v1_path, v1_sha = _bundle(tmp_path, priv, 1, v1_detector)
    register_release(store, ReleaseRef("collar", "1", v1_sha), status="fleet", now=T0 - 30 * D,
                     detector_config=v1_detector, bundle_path=str(v1_path))
    for d in DEVICES:
        store.set_device_state(d, "online", T0)

    # 1. owners answer a week of alerts from v1 (the device reports the sha prefix)
    _alerts(store, T0 - 7 * D, DEVICES, v1_sha[:12], "w1")
    cfg = load_retrain_config()
    reqs = evaluate_retrain_rules(store, cfg, T0, export_dir=tmp_path / "datasets")
    assert {r.rule for r in reqs} == {"precision-below-60pct", "confirmed-cases"}
    assert all(r.model_version == "1" for r in reqs)
    assert evaluate_retrain_rules(store, cfg, T0 + H, export_dir=tmp_path / "datasets") == []  # cooldown
    cases = list_cases(store)  # every dismissal is a case, and so is every confirmed catch
    assert sum(c.kind == "false_alarm" for c in cases) == 80
    assert sum(c.kind == "confirmed" for c in cases) == len(cases) - 80 > 0

    # 2. a candidate tuned on the request's dataset, in a signed bundle, passes the release check
    cand = train_detector_candidate(reqs[0].dataset_path, v1_detector)
    assert cand["cusum_h"] == 12.0 and 0.05 < cand["metric_thresholds"]["resting_hr"] <= 0.2
    v2_path, _ = _bundle(tmp_path, priv, 2, cand)
    store.close()
    out = io.StringIO()
    assert release_check_cli(db, v2_path, public_key=pub, out=out) == 0, out.getvalue()
    assert "candidate 120/120 >= current 40/120" in out.getvalue()

    # 3. a candidate that would silence real problems is blocked and cannot be rolled out
    v3_path, _ = _bundle(tmp_path, priv, 3, {"min_score": 0.0, "metric_thresholds": {"resting_hr": 0.5}})
    store = _open(db)
    _alerts(store, T0 - 6 * D, DEVICES[:2], v1_sha[:12], "miss")  # nothing; then a confirmed miss:
    add_alert(store, "held-1", T0 - 2 * D, action="suppress", severity="critical",
              metrics={"resting_hr": (130.0, 100.0)}, model_version=v1_sha[:12])
    add_feedback(store, "held-1", "confirm", T0 - D)
    evaluate_retrain_rules(store, cfg, T0 + 2 * H, export_dir=tmp_path / "datasets")
    store.close()
    out = io.StringIO()
    assert release_check_cli(db, v3_path, public_key=pub, out=out) == 1
    assert "sensitive case" in out.getvalue()
    assert start_rollout_cli(db, v3_path, public_key=pub, now=T0, out=io.StringIO()) == 1

    # 4. v2 goes shadow -> canary -> fleet; canary devices' alerts are better than control's
    assert release_check_cli(db, v2_path, public_key=pub, out=io.StringIO()) == 0
    out = io.StringIO()
    assert start_rollout_cli(db, v2_path, public_key=pub, now=T0 + 3 * H, out=out) == 0
    store = _open(db)
    mgr = RolloutManager(store, load_rollout_config())
    rid = 1
    t = T0 + 3 * H
    fed = 0
    for _ in range(40):
        t += 6 * H
        for a in mgr.tick(t):
            assert a.args["bundle_path"].endswith("collar-2.bundle") if a.command_name == "install_shadow" else True
            assert mgr.on_reply(a.device_id, a.command_name, True, "ok", t + 60)
        st = rollout_status(store, rid, events=0)
        if st["state"] == "canary":  # a day of alerts per tick on both sides
            promoted = [r[0] for r in store.backend.execute(
                "SELECT device_id FROM rollout_devices WHERE state = 'promoted'").fetchall()]
            control = [d for d in DEVICES if d not in promoted]
            fed += 1
            _alerts(store, t + H, promoted, "2", f"can{fed}", gate=cand["metric_thresholds"]["resting_hr"])
            _alerts(store, t + H, control, v1_sha[:12], f"ctl{fed}")
        if st["state"] in ("completed", "rolled_back"):
            break
    st = rollout_status(store, rid)
    assert st["state"] == "completed", st["reason"]
    assert current_release(store, "collar")["version"] == "2"
    m = [e for e in st["transitions"] if e["to_state"] == "fleet"][0]["data"]["metrics"]
    assert m["candidate"]["precision"] == 1.0 and m["control"]["precision"] < 0.5

    # 5. the new fleet version starts with a clean slate: no retraining without new evidence on v2
    assert evaluate_retrain_rules(store, cfg, t + D, export_dir=tmp_path / "datasets") == []
    assert {e["model_version"] for e in evaluations(store)[-3:]} == {"2"}
