"""One codec for every message and record: frozen dataclasses <-> JSON values, validated.

``from_json(cls, value, path)`` builds a dataclass from parsed JSON, checking every field against
its type hint (str, int, float (finite), bool, None, Literal, str enums, ``X | None``,
``tuple[T, ...]``, fixed tuples, ``dict[str, T]``, nested dataclasses, ``Any`` for free-form JSON)
and then the class's own ``validate()``; a problem raises SchemaError naming the field path, what
was expected and what was found. ``to_json(obj)`` is its inverse. A field whose type is a union
of dataclasses is resolved by the class's ``discriminator`` (the field naming the variant).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")
_NONE = type(None)
_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


class SchemaError(ValueError):
    """A message or record does not match its schema."""


_FIELDS: dict[type, tuple[tuple[str, Any, bool], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, resolved type, required) of a dataclass's init fields (resolved once per class)."""
    if cls not in _FIELDS:
        hints = typing.get_type_hints(cls)
        _FIELDS[cls] = tuple((f.name, hints[f.name],
                              f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
                             for f in dataclasses.fields(cls) if f.init)
    return _FIELDS[cls]


def field_names(cls: type) -> tuple[str, ...]:
    return tuple(name for name, _, _ in _fields(cls))


def from_json(cls: type[T], value: Any, path: str) -> T:  # noqa: UP047 - 3.11
    """Build ``cls`` (a dataclass) from a parsed JSON object; SchemaError on any mismatch."""
    if not isinstance(value, dict):
        bad(path, "object", value)
    known = _fields(cls)
    extra = set(value) - {name for name, _, _ in known}
    if extra:
        raise SchemaError(f"{path}: unknown field(s) {sorted(extra)}")
    kwargs: dict[str, Any] = {}
    for name, tp, required in known:
        if name not in value:
            if required:
                raise SchemaError(f"{path}.{name}: missing required field")
            continue
        union = _dataclass_union(tp)
        if union:
            disc: tuple[str | None, Mapping[str, type]] = getattr(cls, "discriminator", (None, {}))
            key, variants = disc
            variant = variants.get(str(kwargs.get(key, ""))) if key else None
            if variant is None:
                raise SchemaError(f"{path}.{name}: cannot tell its layout (field {key!r} names none)")
            kwargs[name] = from_json(variant, value[name], f"{path}.{name}")
        else:
            kwargs[name] = _value(tp, value[name], f"{path}.{name}")
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - the checks above make this unreachable
        raise SchemaError(f"{path}: {exc}") from None
    check(obj, path)
    return obj


def check(obj: Any, path: str) -> None:
    """Run ``obj.validate()`` if it has one. Its SchemaError names the field first
    (``"seq: must be ..."``, or ``": ..."`` for the whole object); ``path`` is put in front."""
    validate = getattr(obj, "validate", None)
    if validate is None:
        return
    try:
        validate()
    except SchemaError as exc:
        msg = str(exc)
        raise SchemaError(f"{path}{msg}" if msg.startswith(":") else f"{path}.{msg}") from None
    except ValueError as exc:  # e.g. shared.topics.TopicError
        raise SchemaError(f"{path}: {exc}") from None


@functools.cache
def _dataclass_union(tp: Any) -> bool:
    """Is ``tp`` a union of dataclasses (resolved by a discriminator)? Cached per type: it is
    asked for every field of every record decoded."""
    if typing.get_origin(tp) not in (Union, types.UnionType):
        return False
    args = [a for a in typing.get_args(tp) if a is not _NONE]
    return len(args) > 1 and all(dataclasses.is_dataclass(a) for a in args)


def _value(tp: Any, x: Any, path: str) -> Any:
    if tp is Any:
        return x
    if tp is _NONE:
        return x if x is None else bad(path, "null", x)
    if tp is bool:
        return x if isinstance(x, bool) else bad(path, "bool", x)
    if tp is int:
        return x if type(x) is int else bad(path, "int", x)
    if tp is float:
        if isinstance(x, bool) or not isinstance(x, int | float):
            bad(path, "float", x)
        x = float(x)
        return x if math.isfinite(x) else bad(path, "finite number", x)
    if tp is str:
        return x if isinstance(x, str) else bad(path, "str", x)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(x)
        except ValueError:
            raise SchemaError(f"{path}: expected one of {[e.value for e in tp]}, found {x!r:.60}") from None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_json(tp, x, path)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if x in args and type(x) in {type(a) for a in args}:
            return x
        raise SchemaError(f"{path}: expected one of {list(args)}, found {x!r:.60}")
    if origin in (Union, types.UnionType):
        if x is None and _NONE in args:
            return None
        rest = [a for a in args if a is not _NONE]
        if len(rest) == 1:
            return _value(rest[0], x, path)
        for a in rest:  # unions of scalars: the first that fits
            try:
                return _value(a, x, path)
            except SchemaError:
                continue
        raise SchemaError(f"{path}: expected {describe(tp)}, found {type(x).__name__} {x!r:.60}")
    if origin is tuple:
        if not isinstance(x, list):
            raise SchemaError(f"{path}: expected a list, found {type(x).__name__} {x!r:.60}")
        if len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
            if item in _PLURAL:
                try:
                    return tuple(_value(item, v, path) for v in x)
                except SchemaError:
                    raise SchemaError(f"{path}: expected a list of {_PLURAL[item]}, found {x!r:.60}") from None
            return tuple(_value(item, v, f"{path}[{i}]") for i, v in enumerate(x))
        if len(x) != len(args):
            raise SchemaError(f"{path}: expected a list of {len(args)} values, found {len(x)}")
        return tuple(_value(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, x, strict=True)))
    if origin is dict:
        if not isinstance(x, dict):
            bad(path, "object", x)
        kt, vt = args
        return {_value(kt, k, f"{path} key"): _value(vt, v, f"{path}.{k}") for k, v in x.items()}
    raise TypeError(f"codec: unsupported type {tp!r} at {path}")  # a programming error, not input


def describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    return "null" if tp is _NONE else getattr(tp, "__name__", str(tp))


def bad(path: str, want: str, x: Any) -> Any:
    raise SchemaError(f"{path}: expected {want}, found {type(x).__name__} {x!r:.60}")


_NAMES: dict[type, tuple[str, ...]] = {}  # a dataclass's field names, once per class


def to_json(obj: Any) -> Any:
    """A dataclass (or value) as JSON-ready data: dicts, lists, str, numbers, bool, None."""
    names = _NAMES.get(type(obj))
    if names is None and dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        names = _NAMES[type(obj)] = tuple(f.name for f in dataclasses.fields(obj))
    if names is not None:
        return {name: to_json(getattr(obj, name)) for name in names}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    return obj
