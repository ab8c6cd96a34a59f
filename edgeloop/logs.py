"""Logging set-up for the entry points: one line per event with every ``extra=`` field.

Library modules log events with stable names and their fields in ``extra``
(``logger.info("sync.connected", extra={"device_id": ..., "session_present": ...})``) and never
configure logging. Only entry points call :func:`configure`, which picks one of three formats:

- ``logfmt`` (default): ``ts=2026-11-26T10:00:00.123Z level=info logger=device.sync
  event=sync.connected device_id=collar-000 session_present=false``; strings with spaces,
  quotes or ``=`` are quoted, dicts and lists are compact JSON.
- ``json``: one JSON object per line with the same keys (for Loki, Elasticsearch, jq).
- ``text``: the classic ``asctime level logger message`` line, fields appended as logfmt.

An exception's traceback is one field (``exc``), so a line is always one event; under systemd
each line lands in the journal as one entry.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from typing import Any, Literal, TextIO

LogFormat = Literal["logfmt", "json", "text"]
FORMATS: tuple[str, ...] = ("logfmt", "json", "text")
LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
_HANDLER_NAME = "edgeloop.stderr"

# Attributes every LogRecord has: anything else on a record came in through ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record, in the order they were given."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _plain(value: Any) -> Any:
    """A JSON-able version of a field value (tuples to lists, sets sorted, bytes decoded)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def logfmt_value(value: Any) -> str:
    """One logfmt value: bare when safe, else a double-quoted string with escapes."""
    value = _plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), allow_nan=False)
    if text and not any(c in text for c in ' ="\\\n\r\t') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


def _key(name: str) -> str:
    """logfmt keys may not hold spaces or '=': replace them (``decision.notify`` stays)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "_"


class _EventFormatter(logging.Formatter):
    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": _iso(record.created), "level": record.levelname.lower(),
                               "logger": record.name, "event": record.getMessage()}
        for k, v in record_fields(record).items():
            out[k if k not in out else f"field.{k}"] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return out


class LogfmtFormatter(_EventFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{_key(k)}={logfmt_value(v)}" for k, v in self.fields(record).items())


class JsonFormatter(_EventFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_plain(self.fields(record)), separators=(",", ":"), ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The human line, with the fields appended as logfmt (nothing is dropped)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{_key(k)}={logfmt_value(v)}" for k, v in record_fields(record).items())
        if not extra:
            return line
        head, sep, tail = line.partition("\n")  # a traceback stays below the event line
        return f"{head} {extra}{sep}{tail}"


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "logfmt":
        return LogfmtFormatter()
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"log format {fmt!r} unknown: use one of {', '.join(FORMATS)}")


def level_for(verbose: int = 0, level: str | None = None, default: str = "warning") -> int:
    """``--log-level`` wins; else ``-v`` raises ``default`` one step (info), ``-vv`` to debug."""
    if level:
        return int(getattr(logging, level.upper()))
    base = LEVELS.index(default)
    return int(getattr(logging, LEVELS[max(0, base - verbose)].upper()))


def configure(fmt: str = "logfmt", level: int = logging.WARNING, stream: TextIO | None = None) -> None:
    """Entry points only: route every logger to one stderr handler in ``fmt`` at ``level``.

    A second call replaces the handler the first one installed (no doubled lines); handlers
    installed by others (a test runner's capture) are left alone."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == _HANDLER_NAME:
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
