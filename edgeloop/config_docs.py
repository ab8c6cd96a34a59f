"""The configuration reference, generated from the config dataclasses (their defaults and the
``doc`` metadata of every field). ``python -m edgeloop.config_docs > docs/config.md`` rewrites it;
``tests/test_config_docs.py`` fails when the file is stale or a key has no description."""

from __future__ import annotations

import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from cloud.config import CloudConfig
from device.config import AgentConfig

FILES: tuple[tuple[str, type, str], ...] = (
    ("agent.toml", AgentConfig, "`edgeloop agent --config agent.toml` (example: deploy/agent.toml)"),
    ("cloud.toml", CloudConfig, "`edgeloop cloud --config cloud.toml`"),
)


class UndocumentedKey(ValueError):
    pass


def _default(f: Any) -> str:
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if is_dataclass(value):
        return ""
    if isinstance(value, tuple) and value and is_dataclass(value[0]):
        return ", ".join(type(v).__name__ for v in value) and _tables(value)
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value!r}`"


def _tables(values: tuple[Any, ...]) -> str:
    """The default list of tables, each by the keys that differ from the table's own defaults."""
    parts = []
    for v in values:
        plain = type(v)()
        keys = [f'{f.name} = "{getattr(v, f.name)}"' for f in fields(v)
                if f.name == "kind" or getattr(v, f.name) != getattr(plain, f.name)]
        parts.append("{" + ", ".join(keys) + "}")
    return "one table: " + "; ".join(parts) if len(parts) == 1 else "tables: " + "; ".join(parts)


def _type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " \\| ".join(f'"{a}"' for a in typing.get_args(tp))
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        return f"list of {inner.__name__ if is_dataclass(inner) else _type(inner)}"
    return getattr(tp, "__name__", str(tp))


def rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str, type | None]]:
    """(key, type, default, description, nested table class) for every field, depth first."""
    out: list[tuple[str, str, str, str, type | None]] = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):  # type: ignore[arg-type]
        text = f.metadata.get("doc", "")
        key = f"{prefix}{f.name}"
        if not text:
            raise UndocumentedKey(f"{cls.__name__}.{f.name} ({key}) has no description: add "
                                  f"metadata=doc('...') to the field")
        tp = hints[f.name]
        if is_dataclass(tp):
            out.append((key, "table", "", text, tp))  # type: ignore[arg-type]
            out += rows(tp, key + ".")  # type: ignore[arg-type]
        elif typing.get_origin(tp) is tuple and is_dataclass(typing.get_args(tp)[0]):
            inner = typing.get_args(tp)[0]
            out.append((key, f"list of tables ([[{key}]])", _default(f), text, inner))
            out += rows(inner, f"{key}[].")
        else:
            out.append((key, _type(tp), _default(f), text, None))
    return out


def render() -> str:
    lines = ["# Configuration reference", "",
             "Generated from the config definitions (`shared/mqtt.py`, `device/config.py`, `cloud/config.py`) by",
             "`python -m edgeloop.config_docs > docs/config.md`; `tests/test_config_docs.py` fails when this file",
             "is stale or a key has no description. Every key is optional; unknown keys are refused with their",
             "path (`config error: mqtt -> prot: unknown key (valid keys: ...)`). Check a file with",
             "`--validate-config`; list the keys with `--show-config`. Secrets never go in these files: the MQTT",
             "password comes from `EDGELOOP_MQTT_PASSWORD`, webhook tokens from the variables named by",
             "`token_env` / `hmac_secret_env`, the dashboard's operator token from `operator_token_env`.", ""]
    for name, cls, how in FILES:
        lines += [f"## {name}", "", f"Read by {how}.", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, tp, default, text, nested in rows(cls):
            if nested is not None and tp == "table":
                lines.append(f"| **`[{key}]`** | table | | {text} |")
            else:
                lines.append(f"| `{key}` | {tp} | {default} | {text.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")  # noqa: T201 - a generator script
