"""docs/protocol.md is checked against the code: every record body's table lists exactly the
dataclass's fields, in order, with their JSON types (and whether they are optional), and every
JSON example decodes."""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import pytest

from shared import records, schemas
from shared.codec import _fields

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
DOCUMENTED: list[tuple[str, type]] = [
    ("`UplinkBatch`", schemas.UplinkBatch),
    ("`Record`", records.Record),
    ("`Ack`", schemas.Ack),
    ("`Rejection`", schemas.Rejection),
    ("`event`: `Event`", records.Event),
    ("`EventTrace`", records.EventTrace),
    ("`summary`: `DailySummary`", records.DailySummary),
    ("`HourlySeries`", records.HourlySeries),
    ("`RestDay`", records.RestDay),
    ("`NightVerdict`", records.NightVerdict),
    ("`SleepPeriod`", records.SleepPeriod),
    ("`Latency`", records.Latency),
    ("`ShadowSummary`", records.ShadowSummary),
    ("`Disagreement`", records.Disagreement),
    ("`Backlog`", records.Backlog),
    ("`raw`: `RawWindow`", records.RawWindow),
    ("`report`: `CommandReport`", records.CommandReport),
]
_NAMES = {float: "number", int: "integer", str: "string", bool: "boolean", type(None): "null"}


def doc_type(tp: Any, inner: bool = False) -> str:
    """A type hint as docs/protocol.md writes it (``inner``: inside a list or object)."""
    if tp is Any:
        return "any JSON"
    if tp in _NAMES:
        return _NAMES[tp]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(f"`{json.dumps(e.value)}`" for e in tp)
    if dataclasses.is_dataclass(tp):
        return f"`{tp.__name__}`"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (Union, types.UnionType):
        text = " or ".join(doc_type(a, inner) for a in args)
        return f"({text})" if inner else text
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {doc_type(args[0], True)}"
        return "[" + ", ".join(doc_type(a, True) for a in args) + "]"
    if origin is dict:
        return f"object of {doc_type(args[1], True)}"
    raise AssertionError(f"no doc rendering for {tp!r}")


def _tables(text: str) -> dict[str, list[tuple[str, str]]]:
    """'#### title' -> [(field, type)] from the table under it."""
    out: dict[str, list[tuple[str, str]]] = {}
    title = None
    for line in text.splitlines():
        if line.startswith("#### "):
            title = line[5:].strip()
            out[title] = []
        elif title and line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            out[title].append((cells[0].strip("`"), cells[1]))
        elif title and out[title] and not line.startswith("|"):
            title = None
    return out


@pytest.mark.parametrize(("title", "cls"), DOCUMENTED, ids=[c.__name__ for _, c in DOCUMENTED])
def test_every_record_field_is_documented_with_its_type(title: str, cls: type) -> None:
    tables = _tables(DOC.read_text(encoding="utf-8"))
    assert title in tables, f"docs/protocol.md has no '#### {title}' table"
    want = [(name, doc_type(tp) + ("" if required else " (optional)")) for name, tp, required in _fields(cls)]
    assert tables[title] == want


def test_every_record_kind_has_its_table() -> None:
    documented = {cls for _, cls in DOCUMENTED}
    assert set(records.BODY_TYPES.values()) <= documented


def test_the_json_examples_decode() -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    examples = [json.loads(x) for b in blocks for x in re.split(r"\n(?=\{)", b.strip())]
    assert len(examples) >= 6
    seen = set()
    for ex in examples:
        msg = schemas.decode(json.dumps(ex).encode())  # valid, or SchemaError names the field
        seen.add(msg.type)
    assert seen >= {"batch", "ack", "status", "command", "feedback"}
