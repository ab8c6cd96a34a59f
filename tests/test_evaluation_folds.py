"""Leave-one-category-out NAB folds, leave-one-person-out, and the ledger of scored variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeloop.evaluation import folds, nab
from edgeloop.evaluation.ledger import Ledger, fingerprint

N = 1000
TS = (np.datetime64("2020-01-01T00:00", "m") + np.arange(N)).astype("datetime64[ns]")


def _corpus() -> tuple[dict, dict]:
    """Three categories: 'a' and 'b' have a window at rows 500..549, 'quiet' has none."""
    rng = np.random.default_rng(0)
    res, win = {}, {}
    for cat, peak in (("a", 0.9), ("b", 0.7), ("quiet", 0.0)):
        for k in range(2):
            s = rng.random(N) * 0.6
            if peak:
                s[520] = peak
            s[800] = 0.65  # a false positive row in every file
            res[f"{cat}/f{k}.csv"] = (TS, s)
            win[f"{cat}/f{k}.csv"] = [(TS[500], TS[549])] if peak else []
    return res, win


def test_each_category_is_scored_at_the_threshold_of_the_others() -> None:
    res, win = _corpus()
    sm = folds.leave_one_category_out(res, win)
    assert [f.category for f in sm.folds] == ["a", "b", "quiet"]
    for f in sm.folds:
        out = {k: v for k, v in res.items() if folds.category_of(k) != f.category}
        thr = nab.score_corpus(out, {k: win[k] for k in out}).threshold
        assert f.threshold == thr
        inside = {k: v for k, v in res.items() if folds.category_of(k) == f.category}
        want = nab.score_at_threshold(inside, {k: win[k] for k in inside}, thr)
        assert f.raw == pytest.approx(want.raw)
    quiet = sm.folds[2]
    assert quiet.score is None and quiet.n_windows == 0  # nothing to normalise by
    assert sm.scored == sm.folds[:2]
    assert sm.mean == pytest.approx(np.mean([sm.folds[0].score, sm.folds[1].score]))
    assert sm.worst is min(sm.folds[:2], key=lambda f: f.score)
    whole = nab.score_corpus(res, win)
    raw = sum(f.raw for f in sm.folds)
    assert sm.pooled == pytest.approx(100 * (raw - whole.null_raw) / (whole.perfect_raw - whole.null_raw))


def test_a_threshold_fitted_elsewhere_can_miss() -> None:
    """The held-out fold is not scored at its own best threshold: 'b' peaks at 0.7, 'a' at 0.9
    with an FP row at 0.65 everywhere, so the threshold fitted without 'b' misses b's windows."""
    res, win = _corpus()
    sm = folds.leave_one_category_out(res, win)
    b = sm.folds[1]
    own = nab.score_corpus({k: v for k, v in res.items() if k.startswith("b/")},
                           {k: w for k, w in win.items() if k.startswith("b/")})  # fmt: skip
    assert b.score is not None and b.score < own.score


def test_one_category_is_refused() -> None:
    res, win = _corpus()
    only = {k: v for k, v in res.items() if k.startswith("a/")}
    with pytest.raises(ValueError, match="at least two categories"):
        folds.leave_one_category_out(only, {k: win[k] for k in only})


def test_leave_one_person_out_chooses_on_the_others() -> None:
    # person -> threshold at which they are caught; false alert days grow as the threshold drops
    caught_at = {"p1": 3.0, "p2": 2.0, "p3": 1.0, "p4": 5.0}

    def evaluate(p: str, thr: float) -> tuple[bool | None, float | None, int, float]:
        fa = {5.0: 0, 3.0: 0, 2.0: 1, 1.0: 6}[thr]
        return thr <= caught_at[p], -1.0, fa, 1.0

    out = folds.leave_one_person_out(list(caught_at), [5.0, 3.0, 2.0, 1.0], evaluate, budget=1.0)
    by = {f.person_id: f for f in out}
    # without p3 the best within budget is 2.0 (p1, p2, p4 caught); 1.0 breaks the budget
    assert by["p3"].threshold == 2.0 and by["p3"].caught_early is False
    # without p2, 3.0 and 2.0 both catch p1 and p4; 3.0 has fewer false alerts, and misses p2
    assert by["p2"].threshold == 3.0 and by["p2"].caught_early is False
    assert by["p4"].threshold == 2.0 and by["p4"].caught_early is True
    assert by["p1"].threshold == 2.0 and by["p1"].caught_early is True
    with pytest.raises(ValueError, match="at least two people"):
        folds.leave_one_person_out(["p1"], [1.0], evaluate)


def test_ledger_counts_distinct_variants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELOOP_LEDGER", str(tmp_path / "v.tsv"))
    led = Ledger.default()
    assert led.path == tmp_path / "v.tsv" and led.count("nab") == 0
    a = fingerprint([np.arange(3.0), [1.0]])
    b = fingerprint([np.arange(3.0), [1.5]])
    assert a != b and a == fingerprint([[0.0, 1.0, 2.0], np.ones(1)])
    assert led.record(a, "nab", "default", "std 70")
    assert not led.record(a, "nab", "again", "std 70")  # the same outputs: not a new variant
    assert led.record(b, "nab", "x=1\twith a tab", "std 71")
    assert led.record(a, "stanford", "default", "2 of 5")
    assert (led.count("nab"), led.count("stanford")) == (2, 1)
    assert led.rows()[1]["label"] == "x=1 with a tab"
