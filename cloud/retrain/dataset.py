"""Export the dataset of a retraining request: labelled alerts and regression cases with provenance.

A dataset directory holds

* ``alerts.jsonl``: one labelled alert (or owner-reported miss) per line: ids (alert, device,
  individual, seq), time, model and detector version, whether it was notified, severity, score,
  metrics, ``numbers`` (score and per-metric relative deviations that the alert gate of
  ``cloud.regression.replay`` compares), ``outcome`` (tp / fp / miss), ``alert``
  (true when a correct detector should alert) and the deciding ``feedback``;
* ``cases.jsonl``: every inherited regression case (window, expected outcome, sensitive, source);
* ``manifest.json``: format, the request (rule, reason, measured values), counts and the sha256 of
  each file. It is written last, so a directory without a manifest is incomplete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any

from cloud.regression.cases import list_cases
from cloud.regression.evidence import Labelled, labelled
from cloud.regression.replay import window_numbers
from cloud.retrain.errors import DatasetError
from cloud.store.db import CloudStore
from cloud.store.retrain import RetrainRepository

logger = logging.getLogger(__name__)
FORMAT = "edgeloop.retrain.dataset/1"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    data = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows).encode()
    path.write_bytes(data)
    return {"rows": len(rows), "sha256": hashlib.sha256(data).hexdigest()}


def export_dataset(store: CloudStore, out_dir: str | Path, now: float,
                   request: dict[str, Any] | None = None, *, items: list[Labelled] | None = None) -> Path:
    """Write alerts.jsonl, cases.jsonl and manifest.json (last) into ``out_dir``; returns it.
    ``items``: ``labelled(store, now)`` if already computed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=False)
    events = {}
    for r in RetrainRepository(store.backend).events():
        events[(r["device_id"], r["incarnation"], r["seq"])] = json.loads(r["body"])
    alerts = []
    for item in labelled(store, now) if items is None else items:
        event = events.get((item.device_id, item.alert.get("incarnation") or "", item.seq))
        alerts.append({
            "alert_id": item.alert_id, "device_id": item.device_id,
            "individual_id": item.individual_id, "seq": item.seq, "ts": item.ts,
            "model_version": item.model_version, "detector_version": item.detector_version,
            "notified": item.notified, "severity": item.severity, "score": item.score,
            "metrics": list(item.metrics),
            "observed": item.alert.get("observed"), "baseline": item.alert.get("baseline"),
            "numbers": window_numbers(item.alert or None, event).to_json(),
            "outcome": item.outcome,
            "alert": None if item.outcome is None else item.outcome in ("tp", "miss"),
            "feedback": {"id": item.feedback_id, "action": item.feedback_action,
                         "label": item.feedback_label, "ts": item.feedback_ts},
            "event": event,
        })
    cases = [{f.name: getattr(c, f.name) for f in fields(c)} for c in list_cases(store)]  # shallow
    files = {"alerts.jsonl": _write_jsonl(out / "alerts.jsonl", alerts),
             "cases.jsonl": _write_jsonl(out / "cases.jsonl", cases)}
    manifest = {
        "format": FORMAT, "created": now, "request": request or {}, "files": files,
        "counts": {"alerts": len(alerts), "cases": len(cases),
                   "outcomes": dict(Counter(str(a["outcome"]) for a in alerts)),
                   "case_kinds": dict(Counter(c["kind"] for c in cases))},
        "provenance": "each row carries device_id, individual_id, seq, model_version and the "
                      "feedback (id, action, label, ts) that labelled it",
    }
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    os.replace(tmp, out / "manifest.json")
    logger.info("retrain.dataset_exported", extra={"path": str(out), "alerts": len(alerts),
                                                   "cases": len(cases)})
    return out


def read_dataset(dataset_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(manifest, alerts, cases) of an exported dataset, verifying each file's sha256."""
    d = Path(dataset_dir)
    mpath = d / "manifest.json"
    if not mpath.is_file():
        raise DatasetError(f"{d}: no manifest.json: expected a directory written by export_dataset "
                           "(an export without a manifest did not finish; export again)")
    manifest = json.loads(mpath.read_text())
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{mpath}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    parts = []
    for name in ("alerts.jsonl", "cases.jsonl"):
        data = (d / name).read_bytes() if (d / name).is_file() else None
        want = manifest.get("files", {}).get(name, {}).get("sha256")
        if data is None or hashlib.sha256(data).hexdigest() != want:
            raise DatasetError(f"{d / name}: missing or its sha256 does not match the manifest: "
                               "the dataset was modified; export it again")
        parts.append([json.loads(line) for line in data.decode().splitlines() if line.strip()])
    return manifest, parts[0], parts[1]
