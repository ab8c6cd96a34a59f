"""Retraining rules as TOML (see ``cloud/default_retrain.toml``).

Layout::

    model_name = "collar"                # the bundle name rules apply to by default
    [export]     dir = "var/retrain"     # where datasets of retraining requests go
    [regression] sensitive_kinds = ["miss"] ...
    [[rules]]    name = "..." kind = "precision" | "new_cases" | "drift" (+ that kind's keys)

Each ``[[rules]]`` table is checked against its kind's dataclass, so a key that belongs to another
kind (or a typo) is rejected with its key path.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cloud.regression.cases import RegressionConfig
from shared.config import ConfigError, doc, from_dict

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "default_retrain.toml"


@dataclass(frozen=True)
class _Common:
    name: str = field(default="", metadata=doc("unique rule name, recorded with every request"))
    model_name: str = field(default="", metadata=doc("bundle name; empty = the file's model_name"))
    cooldown_days: float = field(
        default=0.0, metadata=doc("minimum days between two requests of this rule and model version"))

    def _check_common(self) -> None:
        if not self.name:
            raise ValueError("name: every rule needs a non-empty name")
        if self.cooldown_days < 0:
            raise ValueError(f"cooldown_days must be >= 0, found {self.cooldown_days}")


@dataclass(frozen=True)
class PrecisionRule(_Common):
    """Fires when precision over the last ``window_days`` is below ``min_precision``."""

    kind: Literal["precision"] = "precision"
    window_days: float = field(default=14.0, metadata=doc("look back this many days (alert time)"))
    min_precision: float = field(default=0.6, metadata=doc("fire when precision is below this"))
    min_labelled: int = field(default=20, metadata=doc("need at least this many labelled alerts"))
    min_new_evidence: int = field(
        default=10, metadata=doc("labelled alerts needed after the previous request to fire again"))

    def validate(self) -> None:
        self._check_common()
        if not 0.0 <= self.min_precision <= 1.0:
            raise ValueError(f"min_precision must be in [0, 1], found {self.min_precision}")
        if self.window_days <= 0 or self.min_labelled < 1 or self.min_new_evidence < 1:
            raise ValueError("window_days must be > 0, min_labelled and min_new_evidence >= 1")


@dataclass(frozen=True)
class NewCasesRule(_Common):
    """Fires when ``count`` confirmed misses / false alarms exist on the current model version."""

    kind: Literal["new_cases"] = "new_cases"
    count: int = field(default=5, metadata=doc("fire at this many new confirmed cases"))
    case_kinds: tuple[str, ...] = field(
        default=("miss", "false_alarm"), metadata=doc("which cases count: miss, false_alarm"))

    def validate(self) -> None:
        self._check_common()
        if self.count < 1:
            raise ValueError(f"count must be >= 1, found {self.count}")
        bad = set(self.case_kinds) - {"miss", "false_alarm"}
        if bad or not self.case_kinds:
            raise ValueError(f"case_kinds: expected a non-empty subset of [miss, false_alarm], found "
                             f"{list(self.case_kinds)}")


@dataclass(frozen=True)
class DriftRule(_Common):
    """Fires when daily summary metrics drift from the reference period (PSI and/or KS)."""

    kind: Literal["drift"] = "drift"
    metrics: tuple[str, ...] = field(default=(), metadata=doc("summary metrics to test; empty = all numeric"))
    window_days: float = field(default=7.0, metadata=doc("recent period: the last this many days"))
    reference_days: float = field(default=28.0, metadata=doc("reference: this many days before the recent period"))
    method: Literal["psi", "ks", "either", "both"] = field(
        default="either", metadata=doc("psi, ks, either (any test) or both (all tests) must flag"))
    psi_threshold: float = field(default=0.25, metadata=doc("PSI at or above this is drift"))
    ks_alpha: float = field(default=0.01, metadata=doc("KS p-value below this is drift"))
    bins: int = field(default=10, metadata=doc("PSI bins (reference quantiles)"))
    min_samples: int = field(default=30, metadata=doc("summaries needed in each period (and new ones to refire)"))
    min_reference_days: float = field(default=7.0, metadata=doc(
        "the reference must hold summaries of at least this many distinct days (a fleet's first "
        "day or two is no reference, however many devices sent one)"))
    min_day_minutes: int = field(default=1200, metadata=doc(
        "summaries of devices that ran fewer minutes that day (a first or interrupted day) are skipped"))

    def validate(self) -> None:
        self._check_common()
        if self.window_days <= 0 or self.reference_days <= 0:
            raise ValueError("window_days and reference_days must be > 0")
        if not 0 <= self.min_reference_days <= self.reference_days or not 0 <= self.min_day_minutes <= 1440:
            raise ValueError("min_reference_days must be in [0, reference_days] and min_day_minutes in [0, 1440]")
        if self.psi_threshold <= 0 or not 0 < self.ks_alpha < 1 or self.bins < 2 or self.min_samples < 2:
            raise ValueError("psi_threshold > 0, 0 < ks_alpha < 1, bins >= 2, min_samples >= 2 required")


Rule = PrecisionRule | NewCasesRule | DriftRule
_KINDS: dict[str, type] = {"precision": PrecisionRule, "new_cases": NewCasesRule, "drift": DriftRule}


@dataclass(frozen=True)
class ExportConfig:
    dir: Path = field(default=Path("var/retrain"), metadata=doc("datasets of requests are written here"))


@dataclass(frozen=True)
class RetrainConfig:
    model_name: str = "edgeloop"
    export: ExportConfig = field(default_factory=ExportConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    rules: tuple[Rule, ...] = ()


def parse_config(data: dict[str, Any]) -> RetrainConfig:
    """Build a RetrainConfig from a parsed TOML table; ConfigError names the key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"retrain config: expected a table, found {data!r:.60}")
    known = {"model_name", "export", "regression", "rules"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key (valid keys: {', '.join(sorted(known))})")
    model_name = data.get("model_name", "edgeloop")
    if not isinstance(model_name, str) or not model_name:
        raise ConfigError(f"model_name: expected a non-empty string, found {model_name!r}")
    export = from_dict(ExportConfig, data.get("export", {}), "export")
    regression = from_dict(RegressionConfig, data.get("regression", {}), "regression")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise ConfigError("rules: expected an array of tables ([[rules]])")
    rules: list[Rule] = []
    for i, r in enumerate(raw_rules):
        path = f"rules[{i}]"
        if not isinstance(r, dict):
            raise ConfigError(f"{path}: expected a table, found {r!r:.60}")
        kind = r.get("kind")
        if kind not in _KINDS:
            raise ConfigError(f"{path} -> kind: {kind!r} is not one of {sorted(_KINDS)}")
        rule: Rule = from_dict(_KINDS[kind], r, path)
        if not rule.model_name:
            rule = replace(rule, model_name=model_name)
        rules.append(rule)
    names = [r.name for r in rules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"rules: rule names must be unique, found duplicates {dup}")
    return RetrainConfig(model_name, export, regression, tuple(rules))


def load_retrain_config(path: str | Path | None = None) -> RetrainConfig:
    """Load retraining rules from TOML (default: ``cloud/default_retrain.toml``)."""
    p = Path(path) if path is not None else DEFAULT_PATH
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"retrain config {p} not found: pass an existing path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_config(data)
