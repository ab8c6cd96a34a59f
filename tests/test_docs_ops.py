"""The operator docs name things that exist: every ``event=`` in docs/troubleshooting.md and
docs/quickstart.md is logged somewhere in the code, every metric in docs/metrics.md is exported."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = "\n".join(p.read_text() for d in ("device", "cloud", "shared", "firmware_sim", "edgeloop")
                 for p in (ROOT / d).rglob("*.py"))


def test_every_event_in_the_docs_is_logged_by_the_code() -> None:
    for doc in ("troubleshooting.md", "quickstart.md"):
        names = set(re.findall(r"event=([a-z_]+\.[a-z_]+)", (ROOT / "docs" / doc).read_text()))
        assert names, doc
        for name in names:
            assert f'"{name}"' in CODE, f"docs/{doc} names event {name}, which nothing logs"


def test_every_metric_in_the_docs_is_exported() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    for name in set(re.findall(r"`(edgeloop_(?:cloud|agent)_[a-z_]+)`", text)):
        base = name.removesuffix("_total").removesuffix("_info")  # Info families add _info
        assert f'"{base}"' in CODE or f'"{name}"' in CODE, f"docs/metrics.md lists {name}, which is not exported"
