"""Detector parameter candidates tuned on a retraining dataset.

``train_detector_candidate(dataset_dir, base_config)`` returns a copy of ``base_config`` whose
alert gate (``min_score`` and per-metric ``metric_thresholds``, see ``cloud.regression.replay``)
maximises F1 on the labelled samples: alerts with outcome tp / miss should alert, fp should not;
regression cases count with their expected outcome and replace the alert they came from.

Search: coordinate ascent over ``min_score`` and each metric's threshold; each coordinate tries
every value that changes a decision (midpoints between the samples' values, and the values
themselves, since the gate compares with ``>=``). The objective is lexicographic: first no
*sensitive* case that the base config got right may turn wrong, then the highest weighted F1
(sensitive cases weigh SENSITIVE_WEIGHT), then the value closest to the current one. Without a
strict improvement the base config is returned unchanged. Other keys of the config are kept.

Support: a step must change the decision on at least ``MIN_SUPPORT`` (3) samples. Owners answer
wrongly at times (a real fever dismissed); one such label must not set a metric's threshold
right at that fever's level, silencing the next real one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cloud.regression.replay import AlertGate, EventNumbers, case_numbers
from cloud.retrain.dataset import read_dataset

logger = logging.getLogger(__name__)
SENSITIVE_WEIGHT = 5.0
MAX_PASSES = 5
MIN_SUPPORT = 3  # a tuning step must flip the decision on at least this many samples
_SCORE = "\0min_score"


@dataclass(frozen=True)
class Sample:
    numbers: EventNumbers
    should_alert: bool
    weight: float = 1.0
    sensitive: bool = False


@dataclass(frozen=True)
class DetectorTuning:
    config: dict[str, Any]
    samples: int
    f1_base: float
    f1_candidate: float
    changed: dict[str, tuple[float, float]]  # parameter -> (old, new)


def samples_from_dataset(dataset_dir: str | Path) -> list[Sample]:
    """Labelled samples of an exported dataset (cases override the alerts they came from)."""
    _, alerts, cases = read_dataset(dataset_dir)
    out: list[Sample] = []
    case_alerts = {c.get("alert_id") for c in cases if c.get("alert_id")}
    for c in cases:
        n = case_numbers(c)
        if not n.empty:
            sens = bool(c.get("sensitive"))
            out.append(Sample(n, c["expected"] == "alert", SENSITIVE_WEIGHT if sens else 1.0, sens))
    for a in alerts:
        if a.get("alert") is None or a.get("alert_id") in case_alerts:
            continue
        n = EventNumbers.from_json(a.get("numbers"))
        if not n.empty:
            out.append(Sample(n, bool(a["alert"])))
    return out


def _score(gate: AlertGate, samples: list[Sample], base_ok: list[bool]) -> tuple[int, float]:
    tp = fp = fn = 0.0
    broken = 0
    for s, ok in zip(samples, base_ok, strict=True):
        alerted = gate.alerts(s.numbers)
        if s.sensitive and ok and alerted != s.should_alert:
            broken += 1
        if alerted and s.should_alert:
            tp += s.weight
        elif alerted:
            fp += s.weight
        elif s.should_alert:
            fn += s.weight
    return broken, (2 * tp / (2 * tp + fp + fn) if tp else 0.0)


def _values(samples: list[Sample], param: str) -> list[float]:
    if param == _SCORE:
        pts = sorted({s.numbers.score for s in samples if s.numbers.score is not None})
    else:
        pts = sorted({d for s in samples if (d := s.numbers.devs.get(param)) is not None})
    cands = {0.0, *pts, *((a + b) / 2 for a, b in zip(pts, pts[1:], strict=False))}
    if pts:
        cands.add(pts[-1] * 1.01 + 1e-9)  # above every sample: this coordinate never passes
    return sorted(c for c in cands if param != _SCORE or c <= 1.0)


def _with(gate: AlertGate, param: str, value: float) -> AlertGate:
    if param == _SCORE:
        return replace(gate, min_score=value)
    return replace(gate, metric_thresholds={**gate.metric_thresholds, param: value})


def _get(gate: AlertGate, param: str) -> float:
    return gate.min_score if param == _SCORE else gate.threshold(param)


def tune_detector(samples: list[Sample], base_config: Mapping[str, Any]) -> DetectorTuning:
    """Tune the alert gate on ``samples`` (see the module doc)."""
    base = AlertGate.from_config(base_config)
    base_ok = [base.alerts(s.numbers) == s.should_alert for s in samples]
    _, f1_base = _score(base, samples, base_ok)
    params = [_SCORE, *sorted({m for s in samples for m, d in s.numbers.devs.items() if d is not None})]
    gate, best = base, (0, f1_base)
    for _ in range(MAX_PASSES):
        improved = False
        for p in params:
            cur = _get(gate, p)
            ranked = []
            before = [gate.alerts(s.numbers) for s in samples]
            for v in sorted({cur, *_values(samples, p)}):
                cand = _with(gate, p, v)
                flips = sum(cand.alerts(s.numbers) != b for s, b in zip(samples, before, strict=True))
                if 0 < flips < MIN_SUPPORT:
                    continue
                broken, f1 = _score(cand, samples, base_ok)
                ranked.append((broken, -f1, abs(v - cur), v))
            broken, neg_f1, _, v = min(ranked)
            if broken < best[0] or (broken == best[0] and -neg_f1 > best[1] + 1e-12):
                gate, best, improved = _with(gate, p, v), (broken, -neg_f1), True
        if not improved:
            break
    if best[1] <= f1_base + 1e-12:
        gate, best = base, (0, f1_base)
    config = dict(base_config)
    changed: dict[str, tuple[float, float]] = {}
    if gate != base:
        config["min_score"] = round(gate.min_score, 6)
        config["metric_thresholds"] = {k: round(v, 6) for k, v in sorted(gate.metric_thresholds.items())}
        for p in params:
            if _get(gate, p) != _get(base, p):
                changed["min_score" if p == _SCORE else p] = (_get(base, p), _get(gate, p))
    logger.info("retrain.detector_tuned", extra={"samples": len(samples), "f1_base": f1_base,
                                                 "f1_candidate": best[1], "changed": changed})
    return DetectorTuning(config, len(samples), f1_base, best[1], changed)


def train_detector_candidate(dataset_dir: str | Path, base_config: dict[str, Any]) -> dict[str, Any]:
    """A detector config tuned on the dataset at ``dataset_dir`` (for a candidate bundle)."""
    return tune_detector(samples_from_dataset(dataset_dir), base_config).config
