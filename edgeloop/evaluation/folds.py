"""Out-of-sample estimates: leave one NAB category out, leave one Stanford person out.

NAB (:func:`leave_one_category_out`): the corpus is split by category (the folder of a file key,
e.g. ``realTraffic``); for each category the detection threshold is optimised on the other
categories (NAB's own corpus optimisation) and the held-out category is scored at it. A fold's
normalised score uses that category's own null and perfect scores; a category without labelled
windows (``artificialNoAnomaly``) has no normalised score (0 / 0): it is reported by its false
positives and raw cost, and it still counts in the pooled score, which normalises the sum of all
held-out raw scores over the whole corpus. Mean and worst are over the folds that have windows.

Stanford (:func:`leave_one_person_out`): a detector exposes one alert threshold; for each person
the threshold is chosen on the others (most people caught at or before onset within the false
alert budget, then fewest false alert days, then the highest threshold) and the held-out person
is scored at it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgeloop.evaluation import nab

__all__ = [
    "CategoryFold",
    "FoldSummary",
    "PersonFold",
    "category_of",
    "leave_one_category_out",
    "leave_one_person_out",
]


def category_of(key: str) -> str:
    """The NAB category of a file key (``"realTraffic/speed_6005.csv"`` -> ``"realTraffic"``)."""
    return key.split("/", 1)[0]


@dataclass(frozen=True)
class CategoryFold:
    """One held-out NAB category scored at the threshold optimised on the others."""

    category: str
    threshold: float
    score: float | None  # normalised on the category (None: no windows to normalise by)
    raw: float
    tp: int
    fn: int
    fp: int
    n_files: int
    n_windows: int


@dataclass(frozen=True)
class FoldSummary:
    """All folds, the pooled out-of-fold score, and mean / worst over the scored folds."""

    profile: str
    folds: tuple[CategoryFold, ...]
    pooled: float  # sum of held-out raw scores, normalised over the whole corpus

    @property
    def scored(self) -> tuple[CategoryFold, ...]:
        """Folds with a normalised score (categories with labelled windows)."""
        return tuple(f for f in self.folds if f.score is not None)

    @property
    def mean(self) -> float:
        """Mean normalised score over the scored folds."""
        return float(np.mean([f.score for f in self.scored])) if self.scored else float("nan")

    @property
    def worst(self) -> CategoryFold | None:
        """The scored fold with the lowest normalised score."""
        return min(self.scored, key=lambda f: f.score or 0.0) if self.scored else None


def leave_one_category_out(
    results: Mapping[str, tuple[object, object]],
    windows: Mapping[str, Sequence[tuple[object, ...]]],
    profile: str = "standard",
) -> FoldSummary:
    """Score every NAB category at the threshold optimised on the other categories.

    ``results`` and ``windows`` as for :func:`edgeloop.evaluation.nab.score_corpus`; at least two
    categories are needed.
    """
    cats = sorted({category_of(k) for k in results})
    if len(cats) < 2:
        raise ValueError(
            f"leave-one-category-out needs files of at least two categories, found {cats}"
        )
    folds = []
    for cat in cats:
        inside = {k: v for k, v in results.items() if category_of(k) == cat}
        outside = {k: v for k, v in results.items() if category_of(k) != cat}
        thr = nab.score_corpus(outside, {k: windows[k] for k in outside}, profile).threshold
        sc = nab.score_at_threshold(inside, {k: windows[k] for k in inside}, thr, profile)
        n_windows = sum(len(windows[k]) for k in inside)
        folds.append(CategoryFold(
            category=cat, threshold=thr, score=sc.score if n_windows else None, raw=sc.raw,
            tp=sc.tp, fn=sc.fn, fp=sc.fp, n_files=len(inside), n_windows=n_windows,
        ))  # fmt: skip
    whole = nab.score_corpus(results, windows, profile)
    denom = whole.perfect_raw - whole.null_raw
    raw = sum(f.raw for f in folds)
    pooled = 100.0 * (raw - whole.null_raw) / denom if denom else 0.0
    return FoldSummary(profile, tuple(folds), pooled)


@dataclass(frozen=True)
class PersonFold:
    """One held-out person scored at the threshold chosen on the others."""

    person_id: str
    threshold: float
    caught_early: bool | None  # None: no onset date
    first_alert_rel_days: float | None
    false_alert_days: int
    months: float  # monitored months outside the illness window


# evaluate(person_id, threshold) -> (caught_early or None, first alert rel. days or None,
#                                   false alert days, monitored months outside the window)
PersonEval = Callable[[str, float], tuple[bool | None, float | None, int, float]]


def _choose(
    people: Sequence[str], candidates: Sequence[float], evaluate: PersonEval, budget: float
) -> float:
    best: tuple[int, float, float] | None = None
    best_thr = max(candidates)
    for thr in candidates:
        res = [evaluate(p, thr) for p in people]
        caught = sum(1 for r in res if r[0])
        fa = sum(r[2] for r in res)
        months = sum(r[3] for r in res)
        rate = fa / months if months > 0 else 0.0
        if rate > budget:
            continue
        key = (caught, -rate, thr)
        if best is None or key > best:
            best, best_thr = key, thr
    return best_thr


def leave_one_person_out(
    people: Sequence[str], candidates: Sequence[float], evaluate: PersonEval, budget: float = 1.0
) -> list[PersonFold]:
    """For each person: the threshold among ``candidates`` that catches the most of the other
    people at or before onset with at most ``budget`` false alert days per person-month (then
    the fewest, then the highest threshold), and that person's outcome at it."""
    if len(people) < 2 or not candidates:
        raise ValueError("leave-one-person-out needs at least two people and one threshold")
    out = []
    for p in people:
        thr = _choose([q for q in people if q != p], candidates, evaluate, budget)
        caught, first, fa, months = evaluate(p, thr)
        out.append(PersonFold(p, thr, caught, first, fa, months))
    return out
