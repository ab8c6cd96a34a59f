"""Entry points the CLI (``edgeloop release ...``) calls; they print and return exit codes.

Exit codes of ``release_check_cli``: 0 passed, 1 blocked, 2 the bundle or store could not be read.
``start_rollout_cli``: 0 started, 1 refused (no passed release check, another rollout active, no
devices), 2 the bundle or config could not be read.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from cloud.regression.check import ReleaseRef, check_release
from cloud.regression.errors import RegressionError
from cloud.releases.config import load_rollout_config
from cloud.releases.errors import BundleReadError, ReleaseError
from cloud.releases.rollout import RolloutManager, cohort_of, current_release, rollout_ids
from cloud.releases.status import format_rollout_table, rollout_status
from cloud.store.db import CloudStore, StoreOpenError
from cloud.store.rollouts import RolloutRepository
from shared.config import ConfigError

logger = logging.getLogger(__name__)


def load_bundle_for_check(bundle_path: str | Path, public_key: Any = None
                          ) -> tuple[ReleaseRef, dict[str, Any], bool]:
    """(release ref, detector config, signature verified) of a bundle file.

    With ``public_key`` the bundle is fully verified by ``shared.bundles.read_bundle``; without,
    its manifest and detector config are only parsed (the output says "signature not verified").
    """
    p = Path(bundle_path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BundleReadError(f"cannot read bundle {p}: {exc.strerror}; pass the path of a .bundle file") from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            manifest = json.loads(zf.read("manifest.json"))
            detector = json.loads(zf.read("detector.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise BundleReadError(f"{p} is not a model bundle ({exc}): expected a ZIP with manifest.json "
                              "and detector.json made by shared.bundles.build_bundle") from None
    verified = False
    if public_key is not None:
        from shared.bundles import BundleError, read_bundle
        try:
            b = read_bundle(data, public_key, running_version=0,
                            device_class=str(manifest.get("device_class", "")))
        except BundleError as exc:
            raise BundleReadError(f"{p}: {exc}") from None
        manifest, detector, verified = b.manifest.to_dict(), b.detector_config, True
    if not isinstance(detector, dict) or not isinstance(manifest, dict):
        raise BundleReadError(f"{p}: manifest and detector config must be JSON objects")
    ref = ReleaseRef(str(manifest.get("name", "")), str(manifest.get("version", "")),
                     str(manifest.get("sha256", "")))
    return ref, detector, verified


def release_check_cli(store_path: str | Path, bundle_path: str | Path, *, public_key: Any = None,
                      strict: bool = False, out: TextIO | None = None) -> int:
    """``edgeloop release check BUNDLE``: replay every regression case through the bundle's
    detector config and the current fleet release's, print the table, return the exit code."""
    out = out or sys.stdout
    try:
        ref, detector, verified = load_bundle_for_check(bundle_path, public_key)
        store = CloudStore(store_path, create=False)  # an empty new store would pass any candidate
    except (ReleaseError, StoreOpenError, OSError) as exc:
        out.write(f"error: {exc}\n")
        return 2
    try:
        cur = current_release(store, ref.name)
        current_ref = ReleaseRef(cur["name"], cur["version"], cur["sha256"]) if cur else None
        res = check_release(store, detector, cur["detector_config"] if cur else None,
                            candidate_ref=ref, current_ref=current_ref, strict=strict)
    except RegressionError as exc:
        out.write(f"error: {exc}\n")
        return 2
    finally:
        store.close()
    out.write(f"release check: {ref.name} v{ref.version} against "
              f"{'v' + current_ref.version if current_ref else 'no current release'}"
              f"{'' if verified else ' (signature not verified)'}\n")
    out.write(res.table() + "\n")
    return 0 if res.passed else 1


def rollout_status_cli(store_path: str | Path, rollout_id: int | None = None, *,
                       out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``edgeloop release status [ID]``: the table of all rollouts, or one rollout's events
    (errors on ``err``, default stderr: no store at ``store_path``, no such rollout)."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        store = CloudStore(store_path, create=False)
    except StoreOpenError as exc:
        err.write(f"error: {exc}\n")
        return 2
    try:
        if rollout_id is None:
            out.write(format_rollout_table([rollout_status(store, i, events=0)
                                            for i in rollout_ids(store)]) + "\n")
            return 0
        st = rollout_status(store, rollout_id)
        out.write(format_rollout_table(st) + "\n")
        for e in st["events"]:
            if e["kind"] in ("transition", "timeout") or (e["kind"] == "reply" and "FAILED" in e["reason"]):
                out.write(f"  {e['ts']:.0f} {e['kind']:<10} {e['device_id'] or '':<16} {e['reason']}\n")
        return 0
    except ReleaseError as exc:
        err.write(f"error: {exc}\n")
        return 2
    finally:
        store.close()


def start_rollout_cli(store_path: str | Path, bundle_path: str | Path, *,
                      devices: Iterable[str] | None = None, config_path: str | Path | None = None,
                      public_key: Any = None, now: float | None = None, out: TextIO | None = None) -> int:
    """``edgeloop release rollout BUNDLE``: start the staged rollout of a checked bundle to
    ``devices`` (default: every device the cloud has seen); prints the rollout id and cohorts."""
    out = out or sys.stdout
    try:
        config = load_rollout_config(config_path)
        ref, detector, _ = load_bundle_for_check(bundle_path, public_key)
        store = CloudStore(store_path, create=False)
    except (ConfigError, ReleaseError, StoreOpenError) as exc:
        out.write(f"error: {exc}\n")
        return 2
    try:
        devs = list(devices) if devices is not None else RolloutRepository(store.backend).device_ids()
        rid = RolloutManager(store, config).start(ref, devs, time.time() if now is None else now,
                                                  detector_config=detector,
                                                  bundle_path=str(Path(bundle_path).resolve()))
    except ReleaseError as exc:
        out.write(f"refused: {exc}\n")
        return 1
    finally:
        store.close()
    cohorts = Counter(cohort_of(d, config) for d in devs)
    out.write(f"rollout {rid}: {ref.name} v{ref.version} to {len(devs)} devices "
              f"(canary {cohorts['canary']}, shadow {cohorts['shadow']}, fleet {cohorts['fleet']})\n")
    return 0
