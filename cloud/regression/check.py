"""The release check: replay every inherited regression case through candidate and current.

A candidate is BLOCKED when

* a *sensitive* case regresses (the current detector got it right, the candidate does not), or,
  when there is no current release to compare with, a sensitive case fails, or
* its overall score (the fraction of cases it gets right) is below the current one's, or
* ``strict=True`` and it gets any case wrong.

Every verdict is stored in ``release_checks`` with its reasons and each case's outcome.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cloud.regression.cases import RegressionCase, list_cases
from cloud.regression.replay import Replayer, as_replayer
from cloud.store.db import CloudStore
from cloud.store.regression import RegressionRepository
from shared.bundles import canonical_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReleaseRef:
    """Which release a detector belongs to (bundle manifest name, version, sha256)."""

    name: str
    version: str
    sha256: str = ""


@dataclass(frozen=True)
class CaseOutcome:
    case_id: int
    kind: str
    expected: str
    sensitive: bool
    current_alerted: bool | None
    candidate_alerted: bool
    status: str  # pass | fixed | regression | still_failing | fail
    reason: str

    @property
    def candidate_ok(self) -> bool:
        return self.candidate_alerted == (self.expected == "alert")


@dataclass(frozen=True)
class ReleaseCheck:
    id: int
    passed: bool
    reasons: tuple[str, ...]
    outcomes: tuple[CaseOutcome, ...]
    score_candidate: float
    score_current: float | None
    candidate: ReleaseRef | None
    current: ReleaseRef | None

    def table(self) -> str:
        """A plain-text table: one line per case, then the verdict and its reasons."""
        head = f"{'case':>5}  {'kind':<11} {'expect':<8} {'sens':<4} {'current':<8} {'candidate':<9} {'status':<13} reason"
        lines = [head, "-" * len(head)]
        for o in self.outcomes:
            cur = "-" if o.current_alerted is None else ("alert" if o.current_alerted else "quiet")
            cand = "alert" if o.candidate_alerted else "quiet"
            lines.append(f"{o.case_id:>5}  {o.kind:<11} {o.expected:<8} {'yes' if o.sensitive else 'no':<4} "
                         f"{cur:<8} {cand:<9} {o.status:<13} {o.reason}")
        cur_score = "-" if self.score_current is None else f"{self.score_current:.3f}"
        lines.append(f"score: candidate {self.score_candidate:.3f}, current {cur_score}; "
                     f"{len(self.outcomes)} cases")
        lines.append(("PASSED" if self.passed else "BLOCKED") + f" (check {self.id})")
        lines += [f"  - {r}" for r in self.reasons]
        return "\n".join(lines)


def detector_sha256(config: Mapping[str, Any]) -> str:
    """sha256 of a detector config's canonical JSON (equals a bundle manifest's detector_sha256)."""
    return hashlib.sha256(canonical_json(config)).hexdigest()


def _ok(alerted: bool, case: RegressionCase) -> bool:
    return alerted == case.expects_alert


def _outcome(case: RegressionCase, cand: bool, cur: bool | None) -> CaseOutcome:
    want = "alert" if case.expects_alert else "no alert"
    got = "an alert" if cand else "no alert"
    c_ok = _ok(cand, case)
    if cur is None:
        status = "pass" if c_ok else "fail"
        reason = f"expected {want}; candidate gives {got}"
    else:
        k_ok = _ok(cur, case)
        status = {(True, True): "pass", (False, True): "fixed", (True, False): "regression",
                  (False, False): "still_failing"}[(k_ok, c_ok)]
        reason = {"pass": f"both give {want}", "fixed": f"candidate now gives {want}",
                  "regression": f"current gives {want}, candidate gives {got}",
                  "still_failing": f"expected {want}; neither gives it"}[status]
    if case.sensitive:
        reason += f" [sensitive: {case.sensitive_reason or 'marked'}]"
    return CaseOutcome(case.id, case.kind, case.expected, case.sensitive, cur, cand, status, reason)


def check_release(store: CloudStore, candidate: Replayer | Mapping[str, Any],
                  current: Replayer | Mapping[str, Any] | None, *,
                  candidate_ref: ReleaseRef | None = None, current_ref: ReleaseRef | None = None,
                  strict: bool = False, now: float | None = None) -> ReleaseCheck:
    """Replay all regression cases through ``candidate`` and ``current`` and decide.

    ``candidate``/``current`` are Replayers or detector configs (see ``cloud.regression.replay``);
    ``current=None`` means there is no release yet: then every sensitive case must pass (register
    the factory bundle with ``cloud.releases.register_release`` to compare with it instead).
    The verdict is stored.
    """
    now = time.time() if now is None else now
    cand_r = as_replayer(candidate)
    cur_r = as_replayer(current) if current is not None else None
    cases = list_cases(store)
    outcomes = tuple(_outcome(c, bool(cand_r.replay(c)), None if cur_r is None else bool(cur_r.replay(c)))
                     for c in cases)
    n = len(outcomes)
    good_cand = sum(1 for o in outcomes if o.candidate_ok)
    good_cur = sum(1 for o in outcomes if o.current_alerted is not None
                   and o.current_alerted == (o.expected == "alert"))
    s_cand = good_cand / n if n else 1.0
    s_cur = None if cur_r is None else (good_cur / n if n else 1.0)
    blocks: list[str] = []
    for o in outcomes:
        if o.sensitive and o.status == "regression":
            blocks.append(f"sensitive case {o.case_id} ({o.kind}) regresses: {o.reason}")
        elif o.sensitive and o.status == "fail":  # no current release: sensitive cases must pass
            blocks.append(f"sensitive case {o.case_id} ({o.kind}) fails and there is no current "
                          f"release to compare with: {o.reason}")
    if s_cur is not None and s_cand < s_cur:
        blocks.append(f"candidate gets {good_cand}/{n} cases right ({s_cand:.3f}), below current "
                      f"{good_cur}/{n} ({s_cur:.3f})")
    if strict:
        blocks += [f"strict: case {o.case_id} ({o.kind}) fails: {o.reason}"
                   for o in outcomes if not o.candidate_ok]
    passed = not blocks
    if passed:
        reasons = [f"no sensitive case regresses; candidate {good_cand}/{n}" +
                   ("" if s_cur is None else f" >= current {good_cur}/{n}") +
                   ("" if n else " (no regression cases yet)") +
                   ("" if cur_r is not None else "; no current release to compare with")]
        regressed = [o.case_id for o in outcomes if o.status == "regression"]
        if regressed:
            reasons.append(f"non-sensitive regressions allowed by the overall score: cases {regressed}")
    else:
        reasons = blocks
    n_engine = getattr(cand_r, "replayed", None)
    if n_engine:
        reasons.append(f"{n_engine} of {n} cases replayed through the real engine (device traces), "
                       f"{n - n_engine} by the alert gate on recorded numbers")
    for msg in getattr(cand_r, "unusable", ()):
        reasons.append(f"trace unusable, judged by the alert gate: {msg}")
    row = {"created": now, "candidate_name": candidate_ref.name if candidate_ref else None,
           "candidate_version": str(candidate_ref.version) if candidate_ref else None,
           "candidate_sha256": candidate_ref.sha256 if candidate_ref else None,
           "candidate_detector_sha256": detector_sha256(candidate) if isinstance(candidate, Mapping) else "",
           "current_name": current_ref.name if current_ref else None,
           "current_version": str(current_ref.version) if current_ref else None,
           "passed": int(passed), "score_candidate": s_cand, "score_current": s_cur,
           "n_cases": n, "reasons": json.dumps(reasons),
           "outcomes": json.dumps([asdict(o) for o in outcomes])}
    check_id = RegressionRepository(store.backend).insert_check(row)
    logger.info("release.check_passed" if passed else "release.check_blocked", extra={
        "check_id": check_id, "candidate": candidate_ref and asdict(candidate_ref),
        "cases": n, "score_candidate": s_cand, "score_current": s_cur, "reasons": reasons})
    return ReleaseCheck(check_id, passed, tuple(reasons), outcomes, s_cand, s_cur,
                        candidate_ref, current_ref)


def passed_check_id(store: CloudStore, ref: ReleaseRef,
                    detector_config: Mapping[str, Any] | None = None) -> int | None:
    """The latest passed release check for exactly this release (name, version, model sha256
    and, when ``detector_config`` is given, the same detector config), if any. A check made with
    a custom Replayer (no config to hash) matches any detector config."""
    return RegressionRepository(store.backend).passed_check_id(
        ref.name, str(ref.version), ref.sha256 or "",
        None if detector_config is None else detector_sha256(detector_config))
