"""The notification policy: settings, per-individual preferences and ordered rules, from TOML.

File format (see ``cloud/default_rules.toml`` for a commented, working example)::

    [settings]                 # all optional; defaults below in ``Settings``
    cooldown_s = 7200          # "recently_notified" window (same individual and metric set)
    quiet_start = "22:00"      # quiet hours in the individual's local time
    quiet_end = "07:00"

    [individuals.rex]          # optional owner preferences; the store's individual_prefs win
    tz_offset_h = 2.0
    silenced = false

    [[rules]]                  # evaluated by ascending priority, then file order; first match wins
    name = "low-score"         # unique; shown as Decision.rule and stored with every alert
    priority = 50              # optional, default 100
    action = "uncertain"       # notify | collect_more | uncertain | suppress
    reason = "score {score:.2f} below 0.35"   # stored with the decision; {placeholders} below
    when = { score_below = 0.35 }              # every condition given must hold; none = always

Conditions (``when`` keys; all optional; booleans may be ``true`` or ``false``):

- ``severity = ["warning", "critical"]``, ``severity_at_least = "warning"``
- ``score_below = 0.35``, ``score_at_least = 0.8`` (score in [0, 1])
- ``metrics_any = ["hr_rest"]``, ``metrics_all = [...]``, ``metric_count_below = 2``,
  ``metric_count_at_least = 2``, ``kind = ["sustained"]``
- ``quiet_hours`` (decision time inside the individual's quiet hours),
  ``local_time_between = ["22:00", "07:00"]`` (wraps midnight)
- ``warming_up`` (the event says ``warming_up`` or the device's first record is younger than
  ``settings.warmup_s``), ``stale`` (event older than ``settings.stale_after_s`` than the
  decision time or the device's newest stored record: a backlog after a network cut)
- ``silenced`` (owner silenced this individual), ``personalised`` (every metric of the event is
  inside a range the owner accepted: "normal for her" or repeated dismissals)
- ``duplicate`` (an alert for the same device, episode start and metrics was already decided
  at this severity or above)
- ``incident_open`` (an open incident for the individual), ``escalates`` (severity above the
  open incident's), ``recently_notified`` (same metric set notified within ``cooldown_s``),
  ``collecting`` (a collect_more for this device is still running)
- ``recent_alerts_at_least = 3`` with ``recent_window_s = 86400`` (counts earlier alerts of this
  individual in the window, plus this one)

Rule options: ``defer = true`` on a suppress rule keeps the alert as "deferred" in an incident
that ``due_renotifications`` delivers once quiet hours end. Reason placeholders: ``{score}``,
``{severity}``, ``{metrics}``, ``{n_metrics}``, ``{individual_id}``, ``{device_id}``,
``{local_time}``, ``{model_version}``.

A bad file raises ``shared.config.ConfigError`` naming the rule and key, e.g.
``rules[3] 'low-score' -> when -> score_belw: unknown key (valid keys: ...)``.
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from shared.config import ConfigError, doc, from_dict
from shared.records import Severity

ACTIONS = ("notify", "collect_more", "uncertain", "suppress")
SEVERITIES: tuple[str, ...] = tuple(s.value for s in Severity)  # lowest first
PLACEHOLDERS = frozenset({"score", "severity", "metrics", "n_metrics", "individual_id",
                          "device_id", "local_time", "model_version"})


def severity_rank(s: str | None) -> int:
    return SEVERITIES.index(s) if s in SEVERITIES else -1


def parse_hhmm(value: str) -> int:
    """'22:30' -> seconds after midnight; ValueError on anything else."""
    try:
        hh, mm = value.split(":")
        h, m = int(hh), int(mm)
    except (ValueError, AttributeError):
        raise ValueError(f"time {value!r} must be 'HH:MM'") from None
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError(f"time {value!r} must be 'HH:MM' between 00:00 and 23:59")
    return h * 3600 + m * 60


def in_window(sec_of_day: float, start: str, end: str) -> bool:
    """Is a local time of day inside [start, end)? Windows may wrap midnight."""
    a, b = parse_hhmm(start), parse_hhmm(end)
    if a == b:
        return False
    return a <= sec_of_day < b if a < b else (sec_of_day >= a or sec_of_day < b)


@dataclass(frozen=True)
class Settings:
    incident_idle_close_s: float = field(default=4 * 3600, metadata=doc(
        "an incident closes this long after its last alert"))
    renotify_after_s: float = field(default=2 * 3600, metadata=doc(
        "re-notify an unanswered serious incident after this long"))
    renotify_severities: tuple[str, ...] = field(default=("critical",), metadata=doc(
        "incident severities that are re-notified while unanswered"))
    max_notifications_per_incident: int = field(default=3, metadata=doc(
        "first notification plus reminders, at most"))
    quiet_hours_bypass: tuple[str, ...] = field(default=("critical",), metadata=doc(
        "severities whose reminders are sent even during quiet hours"))
    cooldown_s: float = field(default=2 * 3600, metadata=doc(
        "window of the recently_notified condition (same individual, same metric set)"))
    quiet_start: str = field(default="22:00", metadata=doc("quiet hours start, local HH:MM"))
    quiet_end: str = field(default="07:00", metadata=doc("quiet hours end, local HH:MM"))
    default_tz_offset_h: float = field(default=0.0, metadata=doc(
        "timezone offset (hours from UTC) when the individual's is unknown"))
    warmup_s: float = field(default=0.0, metadata=doc(
        "warming_up while the device's first record is younger than this (0 = use the event flag only)"))
    stale_after_s: float = field(default=24 * 3600, metadata=doc(
        "stale when an event is decided this long after it happened"))
    collect_duration_s: float = field(default=3600, metadata=doc(
        "how long a collect_more request runs on the device"))
    collect_sample_rate_factor: float = field(default=2.0, metadata=doc(
        "sampling speed-up asked for by collect_more"))
    collect_followup: bool = field(default=False, metadata=doc(
        "decide again once a collect_more has run: notify if the extra data still deviates "
        "(off by default: see cloud/rules/followup.py for what an hour of extra data could tell)"))
    collect_grace_s: float = field(default=900, metadata=doc(
        "wait this long after the collection for its last raw windows before deciding again"))
    collect_max_wait_s: float = field(default=6 * 3600, metadata=doc(
        "with no raw window this long after the decision, decide again without extra data"))
    collect_confirm_fraction: float = field(default=0.5, metadata=doc(
        "a metric still deviates if the median of the extra data keeps this share of the event's "
        "deviation, in its direction"))
    collect_min_points: int = field(default=10, metadata=doc(
        "raw windows with a value a metric needs before the extra data can judge it"))
    ignore_after_s: float = field(default=24 * 3600, metadata=doc(
        "a notified alert with no interaction after this long is 'ignored'"))
    dismissals_to_widen: int = field(default=2, metadata=doc(
        "dismissals of the same metric set that widen the individual's threshold"))
    dismissal_window_s: float = field(default=14 * 86400, metadata=doc(
        "window in which those dismissals are counted"))
    widen_factor: float = field(default=1.5, metadata=doc(
        "after repeated dismissals, deviations up to factor x the dismissed ones are personalised"))
    new_normal_factor: float = field(default=1.25, metadata=doc(
        "after 'normal for her', deviations up to factor x the accepted one are personalised"))

    def validate(self) -> None:
        parse_hhmm(self.quiet_start)
        parse_hhmm(self.quiet_end)
        for s in (*self.renotify_severities, *self.quiet_hours_bypass):
            if s not in SEVERITIES:
                raise ValueError(f"severity {s!r} is not one of {list(SEVERITIES)}")
        if self.max_notifications_per_incident < 1 or self.dismissals_to_widen < 1:
            raise ValueError("max_notifications_per_incident and dismissals_to_widen must be >= 1")
        if self.widen_factor < 1 or self.new_normal_factor < 1:
            raise ValueError("widen_factor and new_normal_factor must be >= 1")
        if not -14 <= self.default_tz_offset_h <= 14:
            raise ValueError(f"default_tz_offset_h {self.default_tz_offset_h} must be in [-14, 14]")
        if (not 0 < self.collect_confirm_fraction <= 1 or self.collect_min_points < 1 or self.collect_grace_s < 0
                or self.collect_max_wait_s < 0):
            raise ValueError("collect_confirm_fraction must be in (0, 1], collect_min_points >= 1, "
                             "collect_grace_s and collect_max_wait_s >= 0")


@dataclass(frozen=True)
class IndividualPrefs:
    tz_offset_h: float | None = field(default=None, metadata=doc("hours from UTC"))
    silenced: bool = field(default=False, metadata=doc("suppress every alert"))
    quiet_start: str | None = field(default=None, metadata=doc("overrides settings.quiet_start"))
    quiet_end: str | None = field(default=None, metadata=doc("overrides settings.quiet_end"))

    def validate(self) -> None:
        for t in (self.quiet_start, self.quiet_end):
            if t is not None:
                parse_hhmm(t)
        if self.tz_offset_h is not None and not -14 <= self.tz_offset_h <= 14:
            raise ValueError(f"tz_offset_h {self.tz_offset_h} must be in [-14, 14]")


@dataclass(frozen=True)
class When:
    severity: tuple[str, ...] | None = None
    severity_at_least: str | None = None
    score_below: float | None = None
    score_at_least: float | None = None
    metrics_any: tuple[str, ...] | None = None
    metrics_all: tuple[str, ...] | None = None
    metric_count_below: int | None = None
    metric_count_at_least: int | None = None
    kind: tuple[str, ...] | None = None
    quiet_hours: bool | None = None
    local_time_between: tuple[str, ...] | None = None
    warming_up: bool | None = None
    stale: bool | None = None
    silenced: bool | None = None
    personalised: bool | None = None
    duplicate: bool | None = None
    incident_open: bool | None = None
    escalates: bool | None = None
    recently_notified: bool | None = None
    collecting: bool | None = None
    recent_alerts_at_least: int | None = None
    recent_window_s: float = 86400.0

    def validate(self) -> None:
        for s in (*(self.severity or ()), *([self.severity_at_least] if self.severity_at_least else [])):
            if s not in SEVERITIES:
                raise ValueError(f"severity {s!r} is not one of {list(SEVERITIES)}")
        for k in ("score_below", "score_at_least"):
            v = getattr(self, k)
            if v is not None and not 0 <= v <= 1:
                raise ValueError(f"{k} = {v} must be within [0, 1]")
        if self.local_time_between is not None:
            if len(self.local_time_between) != 2:
                raise ValueError("local_time_between must be [\"HH:MM\", \"HH:MM\"]")
            for t in self.local_time_between:
                parse_hhmm(t)
        if self.recent_window_s <= 0:
            raise ValueError("recent_window_s must be > 0")


@dataclass(frozen=True)
class Rule:
    name: str = field(metadata=doc("unique rule name, stored with each decision"))
    action: Literal["notify", "collect_more", "uncertain", "suppress"] = field(
        metadata=doc("what a match decides"))
    reason: str = field(default="", metadata=doc("why, stored with the decision; {placeholders}"))
    priority: int = field(default=100, metadata=doc("lower runs first; ties keep file order"))
    when: When = field(default_factory=When, metadata=doc("conditions, all must hold"))
    defer: bool = field(default=False, metadata=doc(
        "suppress only: deliver later, once quiet hours end"))

    def validate(self) -> None:
        if not self.name.strip():
            raise ValueError("name must not be empty")
        if self.defer and self.action != "suppress":
            raise ValueError("defer = true only makes sense with action = \"suppress\"")
        for _, key, _, _ in string.Formatter().parse(self.reason):
            if key is not None and key not in PLACEHOLDERS:
                raise ValueError(f"reason placeholder {{{key}}} is unknown "
                                 f"(known: {', '.join(sorted(PLACEHOLDERS))})")

    @property
    def opens_incident(self) -> bool:
        """Whether an alert decided by this rule opens an incident when none is open."""
        return self.action == "notify" or self.defer

    @property
    def joins_incident(self) -> bool:
        """Whether an alert decided by this rule joins the individual's open incident."""
        return (self.opens_incident or self.action == "collect_more"
                or (self.action == "suppress" and self.when.incident_open is True))


_TOP_KEYS = ("individuals", "rules", "settings")


@dataclass(frozen=True)
class NotificationPolicy:
    """Settings, per-individual preferences and rules (sorted by priority, then file order)."""

    rules: tuple[Rule, ...]
    settings: Settings = field(default_factory=Settings)
    individuals: dict[str, IndividualPrefs] = field(default_factory=dict)
    source: str = "<dict>"

    @classmethod
    def from_toml(cls, path: str | Path | None = None) -> NotificationPolicy:
        """Load a rules file; ``None`` loads the packaged ``cloud/default_rules.toml``."""
        if path is None:
            text = resources.files("cloud").joinpath("default_rules.toml").read_text()
            src = "cloud/default_rules.toml"
        else:
            p = Path(path)
            try:
                text = p.read_text()
            except OSError as exc:
                raise ConfigError(f"rules file {p} cannot be read ({exc.strerror}): "
                                  "pass an existing path or omit it for the default rules") from None
            src = str(p)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{src}: not valid TOML: {exc}") from None
        try:
            return cls.from_dict(data, source=src)
        except ConfigError as exc:
            raise ConfigError(f"{src}: {exc}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> NotificationPolicy:
        unknown = sorted(set(data) - set(_TOP_KEYS))
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown top-level key (valid keys: {', '.join(_TOP_KEYS)})")
        settings = from_dict(Settings, data.get("settings", {}), "settings")
        inds_raw = data.get("individuals", {})
        if not isinstance(inds_raw, dict):
            raise ConfigError("individuals: expected a table of [individuals.<id>] tables")
        individuals = {str(k): from_dict(IndividualPrefs, v, f"individuals -> {k}")
                       for k, v in inds_raw.items()}
        raw_rules = data.get("rules")
        if not isinstance(raw_rules, list) or not raw_rules:
            raise ConfigError("rules: at least one [[rules]] table is required")
        rules: list[tuple[int, int, Rule]] = []
        seen: set[str] = set()
        for i, raw in enumerate(raw_rules):
            name = raw.get("name") if isinstance(raw, dict) else None
            where = f"rules[{i}] {name!r}" if name else f"rules[{i}]"
            rule = from_dict(Rule, raw, where)
            if rule.name in seen:
                raise ConfigError(f"{where} -> name: duplicate rule name {rule.name!r}")
            seen.add(rule.name)
            rules.append((rule.priority, i, rule))
        rules.sort(key=lambda r: (r[0], r[1]))
        return cls(tuple(r for _, _, r in rules), settings, individuals, source)

    def describe(self) -> str:
        """The rules in evaluation order, one line each (for ``--validate-config`` and the CLI)."""
        lines = [f"{self.source}: {len(self.rules)} rules, first match wins"]
        for r in self.rules:
            conds = [f"{k}={_show(v)}" for k, v in vars(r.when).items()
                     if v is not None and not (k == "recent_window_s" and r.when.recent_alerts_at_least is None)]
            action = r.action + (" (deferred)" if r.defer else "")
            lines.append(f"{r.priority:>5}  {r.name:<22} {action:<20} "
                         f"{' and '.join(conds) if conds else 'always'}")
        return "\n".join(lines)

    def rule(self, name: str) -> Rule:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "[" + ",".join(map(str, v)) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)
