"""The one place that imports a TFLite interpreter.

LiteRT (``ai_edge_litert``) first: it is the maintained successor and works with NumPy 2.
``tflite_runtime`` is the fallback for older Raspberry Pi images. Neither present ->
``ModelRuntimeMissing`` naming both pip packages, instead of import errors all over the agent.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: (module to import, pip package that provides it), in order of preference.
RUNTIMES: tuple[tuple[str, str], ...] = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
)


class ModelRuntimeMissing(RuntimeError):
    """No TFLite interpreter can be imported."""


def _import_module(name: str) -> Any:
    """Indirection so tests can monkeypatch the import."""
    return importlib.import_module(name)


def interpreter_class() -> tuple[type, str]:
    """Return ``(Interpreter class, module name)`` of the first runtime that imports."""
    errors: list[str] = []
    for module, _pip in RUNTIMES:
        try:
            mod = _import_module(module)
        except ImportError as exc:
            errors.append(f"{module}: {exc}")
            continue
        return mod.Interpreter, module
    wanted = " or ".join(f"`pip install {pip}`" for _m, pip in RUNTIMES)
    raise ModelRuntimeMissing(
        "no TFLite runtime found: install one of the pip packages "
        f"{', '.join(pip for _m, pip in RUNTIMES)} ({wanted}; ai-edge-litert preferred). "
        f"Import errors: {'; '.join(errors)}"
    )


def load_interpreter(model: Path | str | bytes, num_threads: int = 1) -> Any:
    """An interpreter for a model file path or model bytes, tensors allocated."""
    cls, module = interpreter_class()
    if isinstance(model, bytes):
        interp = cls(model_content=model, num_threads=num_threads)
    else:
        interp = cls(model_path=str(model), num_threads=num_threads)
    interp.allocate_tensors()
    log.debug("loaded model with %s (num_threads=%d)", module, num_threads)
    return interp
