"""docs/config.md is generated from the config definitions: it fails when a key is undocumented
(no description on the field, or the file is stale and misses it)."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

import pytest

from cloud.config import CloudConfig
from device.config import AgentConfig
from edgeloop.config_docs import UndocumentedKey, render, rows
from shared.config import doc

ROOT = Path(__file__).resolve().parents[1]


def _keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):  # type: ignore[arg-type]
        tp = hints[f.name]
        out.append(prefix + f.name)
        if is_dataclass(tp):
            out += _keys(tp, prefix + f.name + ".")  # type: ignore[arg-type]
        elif typing.get_origin(tp) is tuple and is_dataclass(typing.get_args(tp)[0]):
            out += _keys(typing.get_args(tp)[0], prefix + f.name + "[].")
    return out


def test_docs_config_md_is_current() -> None:
    current = (ROOT / "docs" / "config.md").read_text()
    assert current == render(), "docs/config.md is stale: python -m edgeloop.config_docs > docs/config.md"


@pytest.mark.parametrize("cls", [AgentConfig, CloudConfig])
def test_every_key_is_in_the_reference(cls: type) -> None:
    text = (ROOT / "docs" / "config.md").read_text()
    for key in _keys(cls):
        assert f"`{key}`" in text or f"`[{key}]`" in text, f"{key} is not documented in docs/config.md"


@dataclass(frozen=True)
class Inner:
    ok: int = field(default=1, metadata=doc("documented"))
    silent: int = 2


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner, metadata=doc("a table"))


def test_a_key_without_a_description_fails() -> None:
    with pytest.raises(UndocumentedKey, match=r"Inner.silent \(inner.silent\) has no description"):
        rows(Outer)
