"""Typed configuration: frozen dataclasses loaded from TOML plus overrides, unknown keys rejected.

Every field carries a default and a one-line description in ``field(metadata={"doc": ...})``.
Errors name the key path (``mqtt -> port``), the value and the reason. Secrets come from the
environment (``EDGELOOP_MQTT_PASSWORD``), never from files in the repo.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from dataclasses import MISSING, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """Configuration is invalid: the message names the key path, the value and the reason."""


def doc(text: str) -> dict[str, str]:
    """Metadata for a config field: ``field(default=..., metadata=doc("what it is"))``."""
    return {"doc": text}


def load(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Load ``cls`` from a TOML file (optional) with dotted-key overrides (``{"mqtt.port": 1884}``)."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {p} not found: pass an existing path or omit --config") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return from_dict(cls, data)


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a table, found {data!r:.60}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f"{path} -> " if path else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key (valid keys: {', '.join(sorted(known))})")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        key_path = f"{path} -> {name}" if path else name
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{key_path}: required key is missing")
            continue
        kwargs[name] = _coerce(hints[name], data[name], key_path)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"{path or 'config'}: {exc}") from None
    return obj


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        return from_dict(tp, value, path)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, found {value!r:.60}")
        (inner, *_) = typing.get_args(tp)
        return tuple(_coerce(inner, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not one of {list(allowed)}")
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    if tp is Path and isinstance(value, str):
        return Path(value)
    if tp is dict and isinstance(value, dict):
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, found {value!r:.60}")
        _, inner = typing.get_args(tp)
        return {str(k): _coerce(inner, v, f"{path} -> {k}") for k, v in value.items()}
    raise ConfigError(f"{path}: expected {getattr(tp, '__name__', tp)}, found {value!r:.60}")


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key path, default, description) for every field, for --help and docs."""
    out: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        if is_dataclass(hints[f.name]):
            out += describe(hints[f.name], key + ".")
        else:
            default = f.default if f.default is not MISSING else "(required)"
            out.append((key, repr(default), f.metadata.get("doc", "")))
    return out


def env_secret(name: str) -> str | None:
    """A secret from the environment (never stored in config files)."""
    return os.environ.get(name) or None


__all__ = ["ConfigError", "describe", "doc", "env_secret", "from_dict", "load", "replace"]
