"""Deviation detection: :class:`Engine` turns metric streams into scores, flags and events."""

from device.detect.engine import (
    DeviationEvent,
    Engine,
    EngineConfig,
    EngineInputError,
    EngineOutput,
    EngineStateError,
)

__all__ = [
    "DeviationEvent",
    "Engine",
    "EngineConfig",
    "EngineInputError",
    "EngineOutput",
    "EngineStateError",
]
