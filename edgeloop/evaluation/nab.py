"""NAB v1.1 scoring (Lavin & Ahmad 2015), written from the published rules.

Rules reproduced (as in NAB v1.1's sweeper, which both optimises and scores):

* Probationary period: the first ``min(floor(0.15 * n), 0.15 * 5000)`` rows of each file are not
  scored (neither detections nor the window points inside it).
* A detection is a row whose anomaly score is ``>= threshold``.
* Each row gets a weight. Inside window ``[L, R]`` (width ``W = R - L + 1``) the relative position
  is ``-(R - i + 1) / W`` and the weight is ``A_TP * sigma(pos) / sigma(-1)``, with the scaled
  sigmoid ``sigma(x) = 2 / (1 + exp(5x)) - 1`` (``-1`` when ``x >= 3``). The first row of a window
  is worth exactly ``A_TP``; the weight falls towards the right edge. Only the earliest detection
  in a window counts. A window with no detection costs ``-A_FN``.
* Every detection outside windows costs ``A_FP * sigma(|i - R_prev| / (W_prev - 1))``, where
  ``R_prev, W_prev`` belong to the closest preceding window: a detection just after a window costs
  almost nothing, one far after it (3+ window widths) costs the full ``A_FP``; a detection before
  any window costs ``A_FP``.
* Rows are scored in file order: a file whose timestamps go backwards is scored as NAB's sweeper
  scores it (a window spans the rows from the one equal to its start to the one equal to its end).
* One threshold per profile is chosen over the whole corpus: every distinct score is a candidate
  (plus "never fire"); the highest total wins, ties going to the higher threshold.
* Normalised score: ``100 * (S - S_null) / (S_perfect - S_null)``, with ``S_perfect = A_TP x
  (number of windows)`` and ``S_null`` the optimised score of NAB's null detector (constant 0.5).

Checked against published scores on the 35 files in shared/data/nab (scripts/bench_quality):
NAB's windowedGaussian, re-implemented in ``edgeloop.evaluation.peers`` with its scores rounded to
12 significant digits as in NAB's published results files, scores 37.09 / 18.84 / 45.39
(published 37.09 / 18.84 / 45.39); River HalfSpaceTrees scores 2.62 / 0.00 / 6.41 (published
2.62 / 0.00 / 6.41). Without the rounding windowedGaussian gives 37.38 / 22.50 / 45.47: many of
its scores saturate near 1.0, so the threshold search is sensitive to the last digits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "PROFILES",
    "CorpusScore",
    "FileScore",
    "Profile",
    "probation_length",
    "scaled_sigmoid",
    "score_all_profiles",
    "score_at_threshold",
    "score_corpus",
]

PROBATION_PERCENT = 0.15


@dataclass(frozen=True)
class Profile:
    """NAB cost matrix (A_TN is 1.0 in NAB's profiles.json but never enters the score)."""

    name: str
    tp: float
    fn: float
    fp: float
    tn: float = 1.0


PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", tp=1.0, fn=1.0, fp=0.11),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", tp=1.0, fn=1.0, fp=0.22),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", tp=1.0, fn=2.0, fp=0.11),
}


@dataclass(frozen=True)
class FileScore:
    """One file at the chosen threshold; tp/fn count windows, fp counts detection rows."""

    raw: float
    tp: int
    fn: int
    fp: int
    n_windows: int


@dataclass(frozen=True)
class CorpusScore:
    """Result of scoring a corpus under one profile."""

    profile: str
    score: float  # normalised, 100 = perfect, 0 = null detector
    raw: float  # S at the chosen threshold
    threshold: float  # inf = never fire
    null_raw: float
    perfect_raw: float
    tp: int  # windows detected
    fn: int  # windows missed
    fp: int  # detection rows outside windows (after probation)
    per_file: dict[str, FileScore] = field(default_factory=dict)


def scaled_sigmoid(x: np.ndarray | float) -> np.ndarray:
    """NAB's ``2 / (1 + exp(5x)) - 1``, forced to -1 for ``x >= 3``."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        y = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x >= 3.0, -1.0, y)


_MAX_TP = float(scaled_sigmoid(-1.0))


def probation_length(n: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows at the start of a file that are not scored: ``min(floor(p*n), p*5000)``."""
    return int(math.ceil(min(math.floor(percent * n), percent * 5000)))


def _as_ns(values: object, what: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype="datetime64[ns]")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what}: expected datetime64 or ISO timestamp strings ({exc})") from exc


@dataclass
class _Prepared:
    """Per-file arrays for the scorable rows (after probation)."""

    key: str
    scores: np.ndarray  # anomaly scores of scorable rows
    weight: np.ndarray  # TP weight inside windows, (negative) FP weight outside
    window: np.ndarray  # global window id, -1 outside windows
    n_windows: int  # windows in the labels (for S_perfect)
    scored_windows: np.ndarray  # global ids of windows with at least one scorable row


def _prepare_file(
    key: str,
    ts: object,
    scores: object,
    limits: Sequence[tuple[object, ...]],
    profile: Profile,
    window_offset: int,
) -> _Prepared:
    t = _as_ns(ts, f"{key} timestamps")
    s = np.asarray(scores, dtype=np.float64)
    if t.ndim != 1 or s.shape != t.shape:
        raise ValueError(f"{key}: timestamps {t.shape} and scores {s.shape} must be equal 1-D")
    if np.any(~np.isfinite(s)):
        raise ValueError(f"{key}: anomaly scores must be finite; found NaN/inf")
    if len(t) > 1 and np.any(t[1:] < t[:-1]):
        return _prepare_file_in_row_order(key, t, s, limits, profile, window_offset)
    n = len(t)
    idx = np.arange(n)
    window = np.full(n, -1, dtype=np.int64)
    weight = np.empty(n, dtype=np.float64)
    lefts: list[int] = []
    rights: list[int] = []
    for j, lim in enumerate(limits):
        start, end = _as_ns(lim[0], f"{key} window"), _as_ns(lim[1], f"{key} window")
        left = int(np.searchsorted(t, start, "left"))
        r_exact = int(np.searchsorted(t, end, "left"))
        right = (
            r_exact
            if r_exact < n and t[r_exact] == end
            else int(np.searchsorted(t, end, "right")) - 1
        )
        if right < left:
            raise ValueError(f"{key}: window {j} ({lim[0]} .. {lim[1]}) contains no rows")
        if lefts and left <= rights[-1]:
            raise ValueError(f"{key}: windows must be sorted and disjoint (window {j} overlaps)")
        lefts.append(left)
        rights.append(right)
        window[left : right + 1] = window_offset + j
        width = right - left + 1
        pos = -(right - idx[left : right + 1] + 1) / width
        weight[left : right + 1] = profile.tp * scaled_sigmoid(pos) / _MAX_TP
    outside = window < 0
    # closest preceding window for every row outside windows
    if rights:
        r_arr = np.asarray(rights)
        w_arr = np.asarray(rights) - np.asarray(lefts) + 1
        k = np.searchsorted(r_arr, idx, "left") - 1  # last window with right < i
        has_prev = k >= 0
        r_prev = r_arr[np.maximum(k, 0)]
        denom = (w_arr[np.maximum(k, 0)] - 1).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            pos = np.where(denom > 0, np.abs(r_prev - idx) / np.where(denom > 0, denom, 1.0), 3.0)
        pos = np.where(has_prev, pos, 3.0)
    else:
        pos = np.full(n, 3.0)
    weight[outside] = profile.fp * scaled_sigmoid(pos[outside])
    p = probation_length(n)
    scored = np.unique(window[p:][window[p:] >= 0])
    return _Prepared(key, s[p:], weight[p:], window[p:], len(limits), scored)


def _prepare_file_in_row_order(
    key: str,
    t: np.ndarray,
    s: np.ndarray,
    limits: Sequence[tuple[object, ...]],
    profile: Profile,
    window_offset: int,
) -> _Prepared:
    """A file whose timestamps go backwards somewhere, scored as NAB's sweeper scores any file:
    walking the rows in file order, a window opens at the first row (after the previous window)
    whose timestamp equals its start and closes at the row equal to its end; its width and its
    right edge are the row indices of the first rows equal to its start and end. Rows are never
    reordered. (For non-decreasing timestamps this gives the same weights as the vectorised
    :func:`_prepare_file`.)"""
    n = len(t)
    bounds = [(_as_ns(a, f"{key} window"), _as_ns(b, f"{key} window")) for a, b, *_ in limits]
    first_row: dict[np.datetime64, int] = {}
    for i, ti in enumerate(t.tolist()):
        first_row.setdefault(ti, i)
    window = np.full(n, -1, dtype=np.int64)
    weight = np.empty(n, dtype=np.float64)
    nxt = 0  # next window to open
    cur = -1  # open window, -1 when none
    right = width = 0
    prev_right = prev_width = -1
    for i in range(n):
        ti = t[i]
        if cur < 0 and nxt < len(bounds) and ti == bounds[nxt][0]:
            start, end = bounds[nxt]
            if end.item() not in first_row:
                raise ValueError(f"{key}: window {nxt} ends at {end}, a timestamp not in the file")
            cur, nxt = nxt, nxt + 1
            right = first_row[end.item()]
            width = right - first_row[start.item()] + 1
        if cur >= 0:
            window[i] = window_offset + cur
            weight[i] = profile.tp * float(scaled_sigmoid(-(right - i + 1) / width)) / _MAX_TP
            if ti == bounds[cur][1]:
                prev_right, prev_width, cur = i, width, -1
        else:
            pos = 3.0 if prev_right < 0 or prev_width <= 1 else abs(prev_right - i) / (prev_width - 1)
            weight[i] = profile.fp * float(scaled_sigmoid(pos))
    p = probation_length(n)
    scored = np.unique(window[p:][window[p:] >= 0])
    return _Prepared(key, s[p:], weight[p:], window[p:], len(limits), scored)


def _prepare(
    results: Mapping[str, tuple[object, object]],
    windows: Mapping[str, Sequence[tuple[object, ...]]],
    profile: Profile,
) -> list[_Prepared]:
    missing = [k for k in results if k not in windows]
    if missing:
        raise KeyError(f"no windows given for result files {missing[:5]}; pass [] for none")
    out: list[_Prepared] = []
    offset = 0
    for key in sorted(results):
        ts, scores = results[key]
        out.append(_prepare_file(key, ts, scores, windows[key], profile, offset))
        offset += len(windows[key])
    return out


def _sweep(prepared: list[_Prepared], profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Total score for every candidate threshold: returns (thresholds desc, totals).

    The first candidate is ``inf`` (no detections).
    """
    n_scored = sum(len(p.scored_windows) for p in prepared)
    base = -profile.fn * n_scored
    if not prepared:
        return np.array([np.inf]), np.array([base])
    s = np.concatenate([p.scores for p in prepared])
    w = np.concatenate([p.weight for p in prepared])
    win = np.concatenate([p.window for p in prepared])
    order = np.argsort(-s, kind="stable")
    s, w, win = s[order], w[order], win[order]
    delta = np.where(win < 0, w, 0.0)
    in_win = np.nonzero(win >= 0)[0]
    if len(in_win):
        # running max of the TP weight per window, following the descending-score order
        ids = win[in_win]
        grp = np.lexsort((in_win, ids))  # by window, then by rank
        g_ids, g_pos, g_w = ids[grp], in_win[grp], w[in_win][grp]
        span = 2.0 * float(np.max(np.abs(g_w))) + 1.0  # offset per window: groups never mix
        shift = g_ids.astype(np.float64) * span
        run = np.maximum.accumulate(g_w + shift) - shift
        first = np.ones(len(g_ids), dtype=bool)
        first[1:] = g_ids[1:] != g_ids[:-1]
        prev = np.empty_like(run)
        prev[1:] = run[:-1]
        d = np.where(first, profile.fn + run, run - prev)
        delta[g_pos] = d
    totals = base + np.cumsum(delta)
    # a threshold admits every row with score >= it: evaluate at the end of each tie run
    ends = np.ones(len(s), dtype=bool)
    ends[:-1] = s[:-1] != s[1:]
    return np.concatenate([[np.inf], s[ends]]), np.concatenate([[base], totals[ends]])


def _file_score(p: _Prepared, threshold: float, profile: Profile) -> FileScore:
    det = p.scores >= threshold
    fp_mask = det & (p.window < 0)
    raw = float(p.weight[fp_mask].sum())
    tp = 0
    for wid in p.scored_windows:
        hit = np.nonzero(det & (p.window == wid))[0]
        if len(hit):
            tp += 1
            raw += float(p.weight[hit[0]])
        else:
            raw -= profile.fn
    return FileScore(raw, tp, len(p.scored_windows) - tp, int(fp_mask.sum()), p.n_windows)


def _null_raw(
    results: Mapping[str, tuple[object, object]],
    windows: Mapping[str, Sequence[tuple[object, ...]]],
    profile: Profile,
) -> float:
    null = {k: (ts, np.full(len(np.asarray(sc)), 0.5)) for k, (ts, sc) in results.items()}
    _, totals = _sweep(_prepare(null, windows, profile), profile)
    return float(np.max(totals))


def _profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown NAB profile {name!r}; expected one of {sorted(PROFILES)}"
        ) from None


def _assemble(
    name: str,
    prepared: list[_Prepared],
    threshold: float,
    results: Mapping[str, tuple[object, object]],
    windows: Mapping[str, Sequence[tuple[object, ...]]],
    profile: Profile,
) -> CorpusScore:
    per_file = {p.key: _file_score(p, threshold, profile) for p in prepared}
    raw = sum(f.raw for f in per_file.values())
    null = _null_raw(results, windows, profile)
    perfect = profile.tp * sum(p.n_windows for p in prepared)
    denom = perfect - null
    score = 100.0 * (raw - null) / denom if denom != 0 else 0.0
    return CorpusScore(
        profile=name,
        score=score,
        raw=raw,
        threshold=threshold,
        null_raw=null,
        perfect_raw=perfect,
        tp=sum(f.tp for f in per_file.values()),
        fn=sum(f.fn for f in per_file.values()),
        fp=sum(f.fp for f in per_file.values()),
        per_file=per_file,
    )


def score_at_threshold(
    results: Mapping[str, tuple[object, object]],
    windows: Mapping[str, Sequence[tuple[object, ...]]],
    threshold: float,
    profile: str = "standard",
) -> CorpusScore:
    """Score a corpus at a fixed threshold (no optimisation)."""
    prof = _profile(profile)
    prepared = _prepare(results, windows, prof)
    return _assemble(profile, prepared, float(threshold), results, windows, prof)


def score_corpus(
    results: Mapping[str, tuple[object, object]],
    windows: Mapping[str, Sequence[tuple[object, ...]]],
    profile: str = "standard",
) -> CorpusScore:
    """Score a detector over a corpus with the one corpus-wide threshold maximising the total.

    results: file key -> (timestamps as datetime64 or ISO strings, anomaly scores in [0, 1]).
    windows: file key -> list of (start, end) timestamps (``[]`` for files without anomalies).
    """
    prof = _profile(profile)
    prepared = _prepare(results, windows, prof)
    thresholds, totals = _sweep(prepared, prof)
    best = int(np.argmax(totals))  # first maximum = highest threshold among ties
    return _assemble(profile, prepared, float(thresholds[best]), results, windows, prof)


def score_all_profiles(
    results: Mapping[str, tuple[object, object]],
    windows: Mapping[str, Sequence[tuple[object, ...]]],
) -> dict[str, CorpusScore]:
    """``score_corpus`` under standard, reward_low_FP_rate and reward_low_FN_rate."""
    return {name: score_corpus(results, windows, name) for name in PROFILES}
