"""What the active model release decides on the device: the activity model (and a shadow model
beside it), the versions stamped on every record, the alert gate and the engine's settings, and
the commands that change them (``install_shadow``, ``promote``, ``rollback``).

A release's detector config (``detector.json`` in the signed bundle; default: the active slot's)
takes effect in :meth:`ReleaseHandler.configure`: engine keys (EngineConfig fields) rebuild the
engine from its own state, so nothing is relearnt; alert-gate keys (``min_score``,
``metric_thresholds``, ...) filter events before they are queued, with the same semantics the
cloud's release check replays.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from device.budget import SHED_SHADOW, LatencyBudget
from device.detect.detector_config import engine_config
from device.detect.engine import Engine
from device.inference.classifier import Prediction
from device.inference.slots import ModelSlots, ShadowStats
from device.metrics_sink import NULL_SINK, MetricsSink
from device.profiles import DeviceProfile
from shared.alert_gate import GATE_KEYS, AlertGate
from shared.signing import PublicKeyLike

logger = logging.getLogger(__name__)
AGENT_VERSION = "0.1.0"
DEFAULT_WINDOW_S = 4.0  # the classifier's window when a model does not say


class ActivityModel(Protocol):
    """What the agent needs of an activity model (TFLite, or a NumPy fake in tests); models may
    also carry ``window_seconds`` and ``sha256``."""

    def predict(self, window: np.ndarray, rate_hz: float) -> Prediction: ...


class ReleaseHandler:
    """Owns the models and the detector config of the active release (see the module doc).

    ``reconfigure`` is the agent's hook: called after a release changed, so the agent rebuilds
    its engine through :meth:`configure`."""

    def __init__(self, profile: DeviceProfile, state_dir: Path, public_key: PublicKeyLike | None,
                 model: ActivityModel | str | None, counts: Counter[str],
                 reconfigure: Callable[[], None]) -> None:
        self.counts = counts
        self._reconfigure = reconfigure
        # signed model releases need the cloud's key; without it the shipped model runs alone
        self.slots = (ModelSlots(state_dir, public_key, device_class=profile.kind, agent_version=AGENT_VERSION)
                      if public_key is not None and profile.classifies and model == "factory" else None)
        if self.slots is not None:
            self.classifier: ActivityModel | None = self.slots.active_classifier()
        else:
            self.classifier = _load_model(model) if profile.classifies else None
        self.shadow: ActivityModel | None = None  # a shadow model outside slots (tests); slots keep their own
        self.shadow_stats = ShadowStats()
        self.gate: AlertGate | None = None
        self.model_version = _version_of(self.classifier)  # stamped on events and summaries
        self.detector_version = ""

    @property
    def window_seconds(self) -> float:
        return float(getattr(self.classifier, "window_seconds", DEFAULT_WINDOW_S))

    # ---- per window ------------------------------------------------------------------------------
    def classify(self, accel: np.ndarray | None, rate_hz: float, ts: float, budget: LatencyBudget,
                 sink: MetricsSink = NULL_SINK) -> str | None:
        """The activity class of a minute's accelerometer window (the shadow model beside it while
        the budget allows), or None without a model or a usable window."""
        if self.classifier is None or accel is None or len(accel) < 8:
            return None
        try:
            t0 = time.perf_counter()
            pred = self.classifier.predict(accel, rate_hz)
            sink.inference(time.perf_counter() - t0)
            shadow = self.shadow or (self.slots.shadow_classifier() if self.slots else None)
            if shadow is not None and budget.allows(SHED_SHADOW):
                self.shadow_stats.record(ts, pred, shadow.predict(accel, rate_hz))
        except ValueError as exc:
            self.counts["window_unclassifiable"] += 1
            logger.debug("features.unclassifiable", extra={"reason": str(exc)})
            return None
        return pred.label

    # ---- detector config -------------------------------------------------------------------------
    def configure(self, engine: Engine, profile: DeviceProfile, cfg: Mapping[str, Any] | None = None) -> Engine:
        """Apply a detector config (default: the active slot's): returns the engine to run (the
        same one, or one rebuilt from its state with the release's engine settings) and sets the
        alert gate and the detector version. A signed but unusable config keeps what runs."""
        if cfg is None:
            cfg = self.slots.detector_config("active") if self.slots is not None else {}
        try:
            new = engine_config(cfg)
            gate = AlertGate.from_config(cfg) if any(k in cfg for k in GATE_KEYS) else None
        except (ValueError, TypeError) as exc:
            self.counts["detector_config_rejected"] += 1
            logger.error("agent.detector_config_rejected", extra={"reason": str(exc)})
            cfg, new, gate = {}, engine.config, None
        if new != engine.config:
            engine = Engine.from_state(engine.state(), profile.metrics, config=new, directions=profile.directions)
        self.gate = gate
        self.detector_version = hashlib.sha256(
            json.dumps(cfg, sort_keys=True).encode() + repr(engine.config).encode()).hexdigest()[:12]
        return engine

    # ---- commands --------------------------------------------------------------------------------
    def commands(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {"install_shadow": self.install_shadow, "promote": self.promote, "rollback": self.rollback}

    def _need_slots(self) -> ModelSlots:
        if self.slots is None:
            raise ValueError("model releases need cloud_public_key (and a collar agent with its factory model)")
        return self.slots

    def _use_active(self) -> dict[str, Any]:
        slots = self._need_slots()
        self.classifier = slots.active_classifier()
        self.model_version = _version_of(self.classifier)
        self.shadow_stats.reset()
        self._reconfigure()
        return {"model_version": self.model_version, "detector_version": self.detector_version,
                "models": slots.status()}

    def install_shadow(self, args: dict[str, Any]) -> dict[str, Any]:
        slots = self._need_slots()
        data = base64.b64decode(str(args.get("bundle_b64", "")), validate=True)
        if not data:
            raise ValueError("install_shadow needs bundle_b64 (the signed bundle)")
        m = slots.install_shadow(data)
        if args.get("sha256") and args["sha256"] != m.sha256:
            slots.discard_shadow()
            raise ValueError(f"bundle model sha256 {m.sha256[:12]} is not the announced {str(args['sha256'])[:12]}")
        self.shadow_stats.reset()
        return {"installed": m.name, "version": m.version, "models": slots.status()}

    def promote(self, args: dict[str, Any]) -> dict[str, Any]:
        self._need_slots().promote()
        return self._use_active()

    def rollback(self, args: dict[str, Any]) -> dict[str, Any]:
        """Undo a release. With ``name``/``version`` only the slot holding that release is touched
        (active: restore the previous model; shadow: discard it; neither: nothing to undo), so a
        rollback sent to a device whose install never happened cannot downgrade it."""
        slots = self._need_slots()
        if "version" in args:
            want = (str(args.get("name", "")), str(args["version"]))

            def holds(role: str) -> bool:
                m = slots.manifest(role)
                return m is not None and (m.name, str(m.version)) == want

            if holds("active"):
                slots.rollback()
            elif holds("shadow"):
                slots.discard_shadow()
            else:
                return {**self._use_active(), "undone": None}
        elif args.get("promoted", True):
            slots.rollback()
        else:
            slots.discard_shadow()
        return self._use_active()

    def status(self) -> dict[str, Any] | None:
        return self.slots.status() if self.slots else None


def _version_of(model: ActivityModel | None) -> str:
    return str(getattr(model, "sha256", "none"))[:12]


def _load_model(spec: ActivityModel | str | None) -> ActivityModel | None:
    if not isinstance(spec, str):
        return spec
    try:
        from device.inference.classifier import factory_classifier

        return factory_classifier()
    except (OSError, ImportError, RuntimeError, KeyError, json.JSONDecodeError) as exc:
        logger.warning("agent.no_model", extra={"reason": str(exc)})
        return None
