"""``edgeloop train``: a retraining dataset + the current bundle -> a signed candidate bundle.

The detector config of the base bundle is tuned on the dataset (``train_detector_candidate``:
the alert gate, on the labelled alerts and the inherited regression cases); the model is the base
bundle's, or ``model_path`` (a TFLite file retrained by ``scripts/train_activity``). The candidate
gets the next version, the base's name, device class and minimum agent version, and is signed
with the cloud's key. It is not released: ``edgeloop release check`` and ``release rollout`` do that.

Exit codes of :func:`train_cli`: 0 candidate written, 1 nothing to improve (no bundle written),
2 the dataset, bundle, model or key could not be read.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any, TextIO

from cloud.retrain.dataset import read_dataset
from cloud.retrain.detector import samples_from_dataset, tune_detector
from cloud.retrain.errors import DatasetError
from shared.bundles import BundleError, build_bundle, read_bundle
from shared.signing import load_private_key


class TrainInputError(ValueError):
    """An input of ``edgeloop train`` is unusable (the message says which and what to pass)."""


def _base_bundle(path: Path, private_key: Any) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """(manifest, model bytes, detector config) of the base bundle, verified with the cloud's key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrainInputError(f"cannot read base bundle {path}: {exc.strerror}; pass the fleet's "
                              ".bundle file") from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            device_class = str(json.loads(zf.read("manifest.json")).get("device_class", ""))
        b = read_bundle(data, private_key.public_key(), running_version=0, device_class=device_class)
    except (zipfile.BadZipFile, KeyError, ValueError, BundleError) as exc:
        raise TrainInputError(f"base bundle {path} unusable: {exc}") from None
    return b.manifest.to_dict(), b.model_bytes, dict(b.detector_config)


def train_candidate(dataset_dir: str | Path, base_bundle: str | Path, key_path: str | Path,
                    out_path: str | Path, *, model_path: str | Path | None = None,
                    version: int | None = None, created: str | None = None) -> dict[str, Any] | None:
    """Write the candidate bundle; returns what was done, or None when tuning found nothing
    better and no new model was given (then nothing is written)."""
    try:
        key = load_private_key(Path(key_path))
    except (OSError, ValueError, TypeError) as exc:
        raise TrainInputError(f"cannot load the cloud's signing key {key_path}: {exc}") from None
    manifest, model, base_cfg = _base_bundle(Path(base_bundle), key)
    try:
        ds_manifest, _, _ = read_dataset(dataset_dir)
    except DatasetError as exc:
        raise TrainInputError(str(exc)) from None
    tuning = tune_detector(samples_from_dataset(dataset_dir), base_cfg)
    if model_path is not None:
        try:
            model = Path(model_path).read_bytes()
        except OSError as exc:
            raise TrainInputError(f"cannot read model {model_path}: {exc.strerror}") from None
    elif not tuning.changed:
        return None
    new_version = int(manifest["version"]) + 1 if version is None else version
    if new_version <= int(manifest["version"]):
        raise TrainInputError(f"version {new_version} must be above the base's {manifest['version']} "
                              "(devices refuse downgrades)")
    meta = dict(manifest.get("model") or {})
    meta["trained_from"] = {"dataset": str(dataset_dir), "request": ds_manifest.get("request"),
                            "base_version": manifest["version"], "base_sha256": manifest["sha256"]}
    bundle = build_bundle(model, tuning.config, name=str(manifest["name"]), version=new_version,
                          private_key=key, device_class=str(manifest["device_class"]),
                          min_agent_version=str(manifest.get("min_agent_version", "0.1.0")),
                          model_meta=meta, created=created)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bundle)
    return {"out": str(out), "version": new_version, "samples": tuning.samples,
            "f1_base": tuning.f1_base, "f1_candidate": tuning.f1_candidate,
            "changed": tuning.changed, "model_sha256": hashlib.sha256(model).hexdigest(),
            "new_model": model_path is not None, "detector": tuning.config}


def train_cli(dataset_dir: str, base_bundle: str, key_path: str, out_path: str, *,
              model_path: str | None = None, version: int | None = None,
              out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        res = train_candidate(dataset_dir, base_bundle, key_path, out_path, model_path=model_path,
                              version=version)
    except TrainInputError as exc:
        err.write(f"error: {exc}\n")
        return 2
    if res is None:
        out.write(f"no candidate: tuning the detector on {dataset_dir} found nothing better than the "
                  "base bundle's config (pass --model to package a retrained model anyway)\n")
        return 1
    out.write(f"candidate v{res['version']} written to {res['out']}\n")
    out.write(f"  samples {res['samples']}; weighted F1 {res['f1_base']:.3f} -> {res['f1_candidate']:.3f}\n")
    for k, (a, b) in sorted(res["changed"].items()):
        out.write(f"  {k}: {a:g} -> {b:g}\n")
    out.write(f"  model {res['model_sha256'][:12]} ({'new' if res['new_model'] else 'the base bundle'}'s)\n")
    out.write(f"next: edgeloop release check {res['out']}\n")
    return 0
