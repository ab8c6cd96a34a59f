"""Model slots on the device: active, shadow and previous; install, promote, rollback, shadow stats.

Layout under ``state_dir/models/``: ``index.json`` (written atomically) names the slot in each
role; ``slots/<name>-v<version>-<sha12>/`` holds one installed bundle. ``factory`` is the model
shipped in the package (``device/models/activity_v1.tflite``), trusted by its pinned sha256.

API for the agent and the MQTT wiring::

    slots = ModelSlots(state_dir, cloud_public_key, device_class="collar", agent_version="0.1.0")
    m = slots.install_shadow(bundle_bytes)   # verify + install; raises BundleError subclasses
    pred = slots.classify(window, rate_hz, ts)  # active model; shadow too, into slots.shadow_stats
    slots.promote(); slots.rollback(); slots.discard_shadow(); slots.status()
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from device.inference.bundle import (
    atomic_write_json,
    install_bundle,
    load_installed,
)
from device.inference.bundle import (
    read_bundle as _read_bundle,
)
from device.inference.classifier import (
    CLASSES,
    FACTORY_MANIFEST,
    FACTORY_MODEL,
    ActivityClassifier,
    ModelIntegrityError,
    Prediction,
    smoke_test,
)
from shared.bundles import BundleError, BundleIncompatible, Manifest
from shared.codec import from_json, to_json
from shared.records import Disagreement, ShadowSummary
from shared.signing import PublicKeyLike, load_public_key

log = logging.getLogger(__name__)

FACTORY = "factory"
DEFAULT_DEVICE_CLASS = "collar"
ROLES = ("active", "shadow", "previous")
_SLOT_NAME = re.compile(r"^(factory|[A-Za-z0-9_-]{1,40}-v\d+-[0-9a-f]{12})$")


class SlotError(RuntimeError):
    """A slot operation is not possible now (no shadow to promote, nothing to roll back to)."""


class ShadowStats:
    """Agreement between the active and the shadow model on the same windows.

    Keeps counts, an active x shadow confusion matrix and the most recent ``max_disagreements``
    disagreeing windows (timestamp, both labels and confidences), not every prediction.
    """

    def __init__(self, classes: tuple[str, ...] = CLASSES, max_disagreements: int = 20) -> None:
        self.classes = tuple(classes)
        self._idx = {c: i for i, c in enumerate(self.classes)}
        self.max_disagreements = max_disagreements
        self.reset()

    def reset(self) -> None:
        k = len(self.classes)
        self.total = 0
        self.agree = 0
        self.confusion = np.zeros((k, k), dtype=np.int64)
        self.disagreements: deque[Disagreement] = deque(maxlen=self.max_disagreements)

    def record(self, ts: float, active: Prediction, shadow: Prediction) -> bool:
        """Count one window; return True when the models agree."""
        self.total += 1
        i, j = self._idx.get(active.label), self._idx.get(shadow.label)
        if i is not None and j is not None:
            self.confusion[i, j] += 1
        if active.label == shadow.label:
            self.agree += 1
            return True
        self.disagreements.append(Disagreement(float(ts), active.label, shadow.label,
                                               round(active.confidence, 4), round(shadow.confidence, 4)))
        return False

    @property
    def agreement(self) -> float | None:
        return self.agree / self.total if self.total else None

    def summary(self) -> ShadowSummary:
        """The counts as the daily summary carries them."""
        conf = {a: {s: int(self.confusion[i, j]) for j, s in enumerate(self.classes)
                    if self.confusion[i, j]}
                for i, a in enumerate(self.classes) if self.confusion[i].any()}
        return ShadowSummary(windows=self.total, agree=self.agree,
                             agreement=None if self.agreement is None else round(self.agreement, 4),
                             confusion=conf, disagreements=tuple(self.disagreements))

    @classmethod
    def from_summary(cls, d: ShadowSummary | Mapping[str, Any], classes: tuple[str, ...] = CLASSES,
                     max_disagreements: int = 20) -> ShadowStats:
        """Restore counts saved with ``summary()`` (e.g. across an agent restart; a mapping is
        the saved JSON). Raises SchemaError (a ValueError) when the saved counts are unreadable."""
        if not isinstance(d, ShadowSummary):
            d = from_json(ShadowSummary, {k: v for k, v in d.items() if k != "shadow"}, "shadow_stats")
        s = cls(classes, max_disagreements)
        s.total, s.agree = d.windows, d.agree
        idx = {c: i for i, c in enumerate(classes)}
        for a, row in d.confusion.items():
            for b, n in row.items():
                if a in idx and b in idx:
                    s.confusion[idx[a], idx[b]] = n
        s.disagreements.extend(d.disagreements[-max_disagreements:])
        return s


def _factory_manifest(path: Path) -> tuple[Manifest, dict[str, Any]]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return Manifest.from_dict(raw), raw


class ModelSlots:
    """Active / shadow / previous models under ``state_dir``, verified with the cloud's key."""

    def __init__(self, state_dir: Path | str, public_key: PublicKeyLike, device_class: str =
                 DEFAULT_DEVICE_CLASS, agent_version: str = "0.1.0", *,
                 factory_model: Path = FACTORY_MODEL, factory_manifest: Path = FACTORY_MANIFEST,
                 max_disagreements: int = 20) -> None:
        self.root = Path(state_dir) / "models"
        self.slots_dir = self.root / "slots"
        self.index_path = self.root / "index.json"
        self.public_key = load_public_key(public_key)
        self.device_class = device_class
        self.agent_version = agent_version
        self.factory_model = Path(factory_model)
        self.factory_manifest, self._factory_raw = _factory_manifest(Path(factory_manifest))
        self.shadow_stats = ShadowStats(max_disagreements=max_disagreements)
        self.load_errors: list[str] = []
        self._lock = threading.RLock()
        self._cache: dict[str, ActivityClassifier] = {}
        self.slots_dir.mkdir(parents=True, exist_ok=True)
        self._index = self._load_index()
        self._gc()
        self._load_shadow_stats()

    # ---- index -------------------------------------------------------------------------------
    def _load_index(self) -> dict[str, str | None]:
        index: dict[str, str | None] = {"active": FACTORY, "shadow": None, "previous": None}
        try:
            raw = json.loads(self.index_path.read_text(encoding="utf-8"))
            for role in ROLES:
                value = raw.get(role)
                if value is None or (isinstance(value, str) and _SLOT_NAME.match(value)):
                    index[role] = value
                else:
                    raise ValueError(f"bad {role} entry {value!r}")
        except FileNotFoundError:
            return index
        except (ValueError, AttributeError, OSError) as exc:
            self._error(f"model index unreadable ({exc}); starting from the factory model")
            self._index = {"active": FACTORY, "shadow": None, "previous": None}
            self._save_index()
            return dict(self._index)
        for role in ROLES:  # drop roles whose slot fails verification
            name = index[role]
            if name and name != FACTORY:
                try:
                    self._manifest_of(name)
                except (BundleError, OSError, ValueError) as exc:
                    self._error(f"{role} slot {name} unusable: {exc}")
                    index[role] = None
        if index["active"] is None:
            index["active"] = index["previous"] or FACTORY
            index["previous"] = None
            self._error(f"active model fell back to {index['active']}")
        if self.load_errors:
            self._index = index
            self._save_index()
        return index

    def _error(self, msg: str) -> None:
        log.error(msg)
        self.load_errors.append(msg)

    def _save_index(self) -> None:
        atomic_write_json(self.index_path, dict(self._index))

    def _gc(self) -> None:
        """Remove slot directories no role refers to (incl. leftovers of interrupted installs)."""
        keep = {v for v in self._index.values() if v}
        for p in self.slots_dir.iterdir():
            if p.name in keep:
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            self._cache.pop(p.name, None)

    def _manifest_of(self, name: str) -> Manifest:
        if name == FACTORY:
            return self.factory_manifest
        return load_installed(self.slots_dir / name, self.public_key)

    def _classifier(self, name: str) -> ActivityClassifier:
        if name not in self._cache:
            m = self._manifest_of(name)
            path = self.factory_model if name == FACTORY else self.slots_dir / name / "model.tflite"
            self._cache[name] = ActivityClassifier(path, expected_sha256=m.sha256, meta=m.model)
        return self._cache[name]

    def save_shadow_stats(self) -> None:
        """Persist the shadow statistics (call with the agent's periodic state save)."""
        with self._lock:
            atomic_write_json(self.root / "shadow_stats.json",
                              {"shadow": self._index["shadow"], **to_json(self.shadow_stats.summary())})

    def _load_shadow_stats(self) -> None:
        try:
            raw = json.loads((self.root / "shadow_stats.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(raw, dict) and raw.get("shadow") and raw.get("shadow") == self._index["shadow"]:
            try:
                self.shadow_stats = ShadowStats.from_summary(
                    raw, max_disagreements=self.shadow_stats.max_disagreements)
            except (TypeError, ValueError, AttributeError) as exc:
                self._error(f"shadow stats unreadable, starting again: {exc}")

    # ---- queries -----------------------------------------------------------------------------
    def slot(self, role: str) -> str | None:
        return self._index[role]

    def manifest(self, role: str) -> Manifest | None:
        name = self._index[role]
        return None if name is None else self._manifest_of(name)

    def detector_config(self, role: str = "active") -> dict[str, Any]:
        """The detector config shipped with the model in ``role`` ({} for the factory model)."""
        with self._lock:
            name = self._index[role]
            if name is None or name == FACTORY:
                return {}
            self._manifest_of(name)  # re-verified: the file matches its signed sha256
            cfg = json.loads((self.slots_dir / name / "detector.json").read_text(encoding="utf-8"))
            return cfg if isinstance(cfg, dict) else {}

    def active_classifier(self) -> ActivityClassifier:
        """The active model; a corrupt active slot falls back to previous, then factory."""
        with self._lock:
            name = self._index["active"] or FACTORY
            try:
                return self._classifier(name)
            except (BundleError, ModelIntegrityError, OSError, ValueError) as exc:
                if name == FACTORY:
                    raise
                self._error(f"active slot {name} failed to load ({exc}); rolling back")
                self.rollback()
                return self.active_classifier()

    def shadow_classifier(self) -> ActivityClassifier | None:
        with self._lock:
            name = self._index["shadow"]
            return None if name is None else self._classifier(name)

    def classify(self, window: np.ndarray, rate_hz: float, ts: float = 0.0) -> Prediction:
        """Classify with the active model; run the shadow on the same window if there is one."""
        with self._lock:
            pred = self.active_classifier().predict(window, rate_hz)
            shadow = self.shadow_classifier()
            if shadow is not None:
                self.shadow_stats.record(ts, pred, shadow.predict(window, rate_hz))
            return pred

    def status(self) -> dict[str, Any]:
        """Roles with name/version/sha256, shadow agreement, and load errors since start."""
        with self._lock:
            out: dict[str, Any] = {}
            for role in ROLES:
                name = self._index[role]
                m = None if name is None else self._manifest_of(name)
                out[role] = None if m is None else {
                    "slot": name, "name": m.name, "version": m.version, "sha256": m.sha256}
            out["shadow_stats"] = to_json(self.shadow_stats.summary()) if self._index["shadow"] else None
            out["load_errors"] = list(self.load_errors)
            return out

    # ---- changes -----------------------------------------------------------------------------
    def install_shadow(self, bundle_bytes: bytes, *, allow_rollback_to: int | None = None
                       ) -> Manifest:
        """Verify a signed bundle, install it atomically and make it the shadow model.

        Raises a ``BundleError`` subclass (nothing changes on disk) when the bundle is refused,
        including a signed model this agent cannot load (``BundleIncompatible``).
        """
        with self._lock:
            active = self._manifest_of(self._index["active"] or FACTORY)
            bundle = _read_bundle(bundle_bytes, self.public_key, running_version=active.version,
                                  device_class=self.device_class,
                                  agent_version=self.agent_version,
                                  allow_rollback_to=allow_rollback_to)
            path = install_bundle(bundle, self.slots_dir)
            name = path.name
            if name == self._index["active"]:
                log.info("bundle %s is already the active model", name)
                return bundle.manifest
            if name not in self._index.values():
                try:
                    smoke_test(ActivityClassifier(path / "model.tflite",
                                                  expected_sha256=bundle.manifest.sha256,
                                                  meta=bundle.manifest.model))
                except (ModelIntegrityError, ValueError, RuntimeError) as exc:
                    shutil.rmtree(path, ignore_errors=True)
                    raise BundleIncompatible(
                        f"bundle {bundle.manifest.name} v{bundle.manifest.version} is signed but "
                        f"its model does not load on this agent: {exc}"
                    ) from None
            if self._index["shadow"] != name:
                self._index["shadow"] = name
                self.shadow_stats.reset()
                self._save_index()
                self._gc()
            log.info("shadow model: %s", name)
            return bundle.manifest

    def discard_shadow(self) -> None:
        with self._lock:
            if self._index["shadow"] is not None:
                self._index["shadow"] = None
                self.shadow_stats.reset()
                self._save_index()
                self._gc()

    def promote(self) -> Manifest:
        """Shadow becomes active; the old active becomes previous. Returns the new active."""
        with self._lock:
            shadow = self._index["shadow"]
            if shadow is None:
                raise SlotError("no shadow model to promote; install a bundle first")
            self._classifier(shadow)  # must load before it may become active
            if shadow != self._index["active"]:
                self._index["previous"] = self._index["active"]
            self._index["active"], self._index["shadow"] = shadow, None
            self.shadow_stats.reset()
            self._save_index()
            self._gc()
            log.info("promoted %s (previous %s)", shadow, self._index["previous"])
            return self._manifest_of(shadow)

    def rollback(self) -> Manifest:
        """Previous (or, without one, the factory model) becomes active. Returns it."""
        with self._lock:
            current = self._index["active"]
            target = self._index["previous"] or (FACTORY if current != FACTORY else None)
            if target is None:
                raise SlotError("nothing to roll back to: the factory model is active and there "
                                "is no previous model")
            self._index["active"], self._index["previous"] = target, None
            self._save_index()
            self._gc()
            log.warning("rolled back from %s to %s", current, target)
            return self._manifest_of(target)
