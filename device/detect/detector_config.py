"""A release's detector config (``detector.json`` in a signed bundle) -> the engine's settings.

The keys that name :class:`EngineConfig` fields set the engine; the alert-gate keys
(``shared.alert_gate.GATE_KEYS``) are the gate's; anything else is ignored here. The device
(``device.agent``) and the cloud's release check (``cloud.regression.engine_replay``) both read a
config through :func:`engine_config`, so a candidate is replayed exactly as a device would run it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from device.detect.engine import EngineConfig

ENGINE_KEYS = frozenset(f.name for f in dataclasses.fields(EngineConfig))


def engine_config(detector: Mapping[str, Any], base: EngineConfig | None = None) -> EngineConfig:
    """``base`` (default: the factory EngineConfig) with the engine keys of ``detector`` applied.

    Raises ValueError (naming the key) when a value is not a number.
    """
    changes: dict[str, float] = {}
    for k, v in detector.items():
        if k in ENGINE_KEYS:
            try:
                changes[k] = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"detector config {k}={v!r}: expected a number") from None
    return dataclasses.replace(base if base is not None else EngineConfig(), **changes)
