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
from collections.abc import Hashable, Mapping
from typing import Any, Literal, TypeVar, Union, cast

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
    decode: Decoder = _class_decoder(cast(Hashable, cls))
    return decode(value, path)  # type: ignore[no-any-return]


Decoder = typing.Callable[[Any, str], Any]


@functools.cache
def _class_decoder(cls: Any) -> Decoder:
    """The decoder of one dataclass, built once: each field's decoder resolved from its type hint
    (a record type's hints are read once per process, not once per record)."""
    known = _fields(cls)
    names = frozenset(name for name, _, _ in known)
    plan: list[tuple[str, Decoder | None, bool]] = []  # None: a union of dataclasses (discriminated)
    for name, tp, required in known:
        plan.append((name, None if _dataclass_union(tp) else _decoder(tp), required))
    disc: tuple[str | None, Mapping[str, type]] = getattr(cls, "discriminator", (None, {}))
    has_validate = getattr(cls, "validate", None) is not None

    def decode(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            bad(path, "object", value)
        if not names.issuperset(value):
            raise SchemaError(f"{path}: unknown field(s) {sorted(set(value) - names)}")
        kwargs: dict[str, Any] = {}
        for name, dec, required in plan:
            if name not in value:
                if required:
                    raise SchemaError(f"{path}.{name}: missing required field")
                continue
            if dec is None:
                key, variants = disc
                variant = variants.get(str(kwargs.get(key, ""))) if key else None
                if variant is None:
                    raise SchemaError(f"{path}.{name}: cannot tell its layout (field {key!r} names none)")
                kwargs[name] = _class_decoder(variant)(value[name], f"{path}.{name}")
            else:
                kwargs[name] = dec(value[name], f"{path}.{name}")
        try:
            obj = cls(**kwargs)
        except TypeError as exc:  # pragma: no cover - the checks above make this unreachable
            raise SchemaError(f"{path}: {exc}") from None
        if has_validate:
            check(obj, path)
        return obj

    return decode


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
    """Is ``tp`` a union of dataclasses (resolved by a discriminator)?"""
    if typing.get_origin(tp) not in (Union, types.UnionType):
        return False
    args = [a for a in typing.get_args(tp) if a is not _NONE]
    return len(args) > 1 and all(dataclasses.is_dataclass(a) for a in args)


def _any(x: Any, path: str) -> Any:
    return x


def _null(x: Any, path: str) -> Any:
    return x if x is None else bad(path, "null", x)


def _bool(x: Any, path: str) -> Any:
    return x if isinstance(x, bool) else bad(path, "bool", x)


def _int(x: Any, path: str) -> Any:
    return x if type(x) is int else bad(path, "int", x)


def _float(x: Any, path: str) -> Any:
    if type(x) is float:
        return x if math.isfinite(x) else bad(path, "finite number", x)
    if isinstance(x, bool) or not isinstance(x, int | float):
        bad(path, "float", x)
    x = float(x)
    return x if math.isfinite(x) else bad(path, "finite number", x)


def _str(x: Any, path: str) -> Any:
    return x if isinstance(x, str) else bad(path, "str", x)


_SCALARS: dict[Any, Decoder] = {Any: _any, _NONE: _null, bool: _bool, int: _int, float: _float, str: _str}


@functools.cache
def _decoder(tp: Any) -> Decoder:
    """The decoder of a type hint, built once per hint (see the module doc for the forms)."""
    scalar = _SCALARS.get(tp)
    if scalar is not None:
        return scalar
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_decoder(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _class_decoder(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return _literal_decoder(args)
    if origin in (Union, types.UnionType):
        return _union_decoder(tp, args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _list_decoder(args[0])
        return _fixed_tuple_decoder(args)
    if origin is dict:
        return _dict_decoder(*args)
    raise TypeError(f"codec: unsupported type {tp!r}")  # a programming error, not input


def _enum_decoder(tp: type[enum.Enum]) -> Decoder:
    def decode(x: Any, path: str) -> Any:
        try:
            return tp(x)
        except ValueError:
            raise SchemaError(f"{path}: expected one of {[e.value for e in tp]}, found {x!r:.60}") from None
    return decode


def _literal_decoder(args: tuple[Any, ...]) -> Decoder:
    kinds = {type(a) for a in args}

    def decode(x: Any, path: str) -> Any:
        if x in args and type(x) in kinds:
            return x
        raise SchemaError(f"{path}: expected one of {list(args)}, found {x!r:.60}")
    return decode


def _union_decoder(tp: Any, args: tuple[Any, ...]) -> Decoder:
    optional = _NONE in args
    rest = [_decoder(a) for a in args if a is not _NONE]
    if len(rest) == 1:
        one = rest[0]

        def decode_one(x: Any, path: str) -> Any:
            return None if x is None and optional else one(x, path)
        return decode_one

    def decode(x: Any, path: str) -> Any:
        if x is None and optional:
            return None
        for dec in rest:  # unions of scalars: the first that fits
            try:
                return dec(x, path)
            except SchemaError:
                continue
        raise SchemaError(f"{path}: expected {describe(tp)}, found {type(x).__name__} {x!r:.60}")
    return decode


def _list_decoder(item: Any) -> Decoder:
    dec = _decoder(item)
    plural = _PLURAL.get(item)

    def decode(x: Any, path: str) -> Any:
        if not isinstance(x, list):
            raise SchemaError(f"{path}: expected a list, found {type(x).__name__} {x!r:.60}")
        if plural is not None:
            try:
                return tuple(dec(v, path) for v in x)
            except SchemaError:
                raise SchemaError(f"{path}: expected a list of {plural}, found {x!r:.60}") from None
        return tuple(dec(v, f"{path}[{i}]") for i, v in enumerate(x))
    return decode


def _fixed_tuple_decoder(args: tuple[Any, ...]) -> Decoder:
    decs = tuple(_decoder(a) for a in args)

    def decode(x: Any, path: str) -> Any:
        if not isinstance(x, list):
            raise SchemaError(f"{path}: expected a list, found {type(x).__name__} {x!r:.60}")
        if len(x) != len(decs):
            raise SchemaError(f"{path}: expected a list of {len(decs)} values, found {len(x)}")
        return tuple(d(v, f"{path}[{i}]") for i, (d, v) in enumerate(zip(decs, x, strict=True)))
    return decode


def _dict_decoder(kt: Any, vt: Any) -> Decoder:
    kd, vd = _decoder(kt), _decoder(vt)

    def decode(x: Any, path: str) -> Any:
        if not isinstance(x, dict):
            bad(path, "object", x)
        return {kd(k, f"{path} key"): vd(v, f"{path}.{k}") for k, v in x.items()}
    return decode


def describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    return "null" if tp is _NONE else getattr(tp, "__name__", str(tp))


def bad(path: str, want: str, x: Any) -> Any:
    raise SchemaError(f"{path}: expected {want}, found {type(x).__name__} {x!r:.60}")


Encoder = typing.Callable[[Any], Any]


def to_json(obj: Any) -> Any:
    """A dataclass (or value) as JSON-ready data: dicts, lists, str, numbers, bool, None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _class_encoder(type(obj))(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    return obj


def _same(x: Any) -> Any:
    return x


@functools.cache
def _class_encoder(cls: Any) -> Encoder:
    """The encoder of one dataclass, built once: a field whose hint is a plain scalar (or a
    tuple of them) is copied as is, the rest go through :func:`to_json`."""
    hints = typing.get_type_hints(cls)
    plan = tuple((f.name, _field_encoder(hints.get(f.name, Any))) for f in dataclasses.fields(cls))

    def encode(obj: Any) -> Any:
        return {name: enc(getattr(obj, name)) for name, enc in plan}
    return encode


_PLAIN = (str, int, float, bool, _NONE)


def _is_plain(tp: Any) -> bool:
    """A hint whose values are JSON as they are (scalars, literals of scalars, unions of them)."""
    if tp in _PLAIN:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return all(isinstance(a, str | int | float | bool) and not isinstance(a, enum.Enum) for a in args)
    return origin in (Union, types.UnionType) and all(_is_plain(a) for a in args)


def _enum_value(v: Any) -> Any:
    return v.value if isinstance(v, enum.Enum) else v


@functools.cache
def _field_encoder(tp: Any) -> Encoder:
    """The encoder of one field's hint: plain values as they are, tuples of them as lists, enums
    by value, dicts of plain values copied, nested dataclasses by their own encoder; anything
    else through :func:`to_json`."""
    if _is_plain(tp):
        return _same
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        enc = _class_encoder(tp)
        return lambda v: enc(v) if type(v) is tp else to_json(v)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and _is_plain(args[0]):
        return list
    if origin is dict and len(args) == 2 and args[0] is str and _is_plain(args[1]):
        return dict
    if origin in (Union, types.UnionType) and _NONE in args and len(args) == 2:
        inner = _field_encoder(next(a for a in args if a is not _NONE))
        return lambda v: None if v is None else inner(v)
    return to_json
