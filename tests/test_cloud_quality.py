"""Quality per model version: numbers on a hand-made set of decisions and feedback (on both store
back ends; the property test on SQLite)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recs import record_of

from cloud.feedback import implicit_sweep, record_feedback
from cloud.quality import format_quality_table, quality_by_model_version
from cloud.rules.notify import NotificationPolicy, handle_event
from cloud.store.db import CloudStore
from shared.schemas import Feedback

DAY = 86400.0
POLICY = NotificationPolicy.from_toml()


def at(day: float) -> float:
    return day * DAY + 12 * 3600  # noon: no quiet hours


class World:
    def __init__(self, url: str | None = None) -> None:
        self.s = CloudStore(url)
        self.seq = 0

    def event(self, ind, t, model="m1", delay=600.0, score=0.8, metrics=("hr_rest", "activity")):
        self.seq += 1
        body = {"start_ts": t - delay, "ts": t, "metrics": list(metrics), "directions": [1] * len(metrics),
                "score": score, "severity": "warning", "kind": "sustained",
                "baseline": [1.0] * len(metrics), "observed": [2.0] * len(metrics),
                "model_version": model, "detector_version": "d"}
        return handle_event(self.s, POLICY, f"dev-{ind}", record_of(self.seq, "event", t, ind, body))

    def fb(self, d, action, t):
        record_feedback(self.s, Feedback(d.alert_id, d.individual_id, action, t))


@pytest.fixture
def world(store_url):
    w = World(store_url)
    a1 = w.event("a", at(1), delay=600)
    w.fb(a1, "confirm", at(1) + 100)
    w.fb(a1, "acted", at(1) + 300)
    b1 = w.event("b", at(2), delay=1800)
    w.fb(b1, "confirm", at(2) + 50)
    w.fb(b1, "acted", at(2) + 900)
    a2 = w.event("a", at(3), delay=1200)
    w.fb(a2, "confirm", at(3) + 10)
    w.fb(a2, "dismiss", at(3) + 20)  # changed their mind: counts as dismissed
    b2 = w.event("b", at(5))  # never answered -> ignored by the sweep
    b3 = w.event("b", at(6), score=0.2)  # held, not notified
    c1 = w.event("c", at(1), model="m2")
    w.fb(c1, "normal_for_her", at(1) + 60)
    w.event("c", at(20), model="m2")  # outside the window below
    assert [d.action for d in (a1, b1, a2, b2, b3, c1)] == ["notify"] * 4 + ["uncertain", "notify"]
    assert implicit_sweep(w.s, at(8)) == 1
    yield w
    w.s.close()


def test_quality_numbers_on_a_hand_made_set(world):
    rows = quality_by_model_version(world.s, 0.0, 14 * DAY)
    assert [r["model_version"] for r in rows] == ["m1", "m2"]
    m1, m2 = rows
    assert (m1["alerts"], m1["notified"], m1["individuals"]) == (5, 4, 2)
    assert m1["alerts_per_ind_week"] == pytest.approx(4 / (2 * 2))
    assert (m1["confirmed"], m1["dismissed"], m1["normal_for_her"]) == (2, 1, 0)
    assert m1["precision"] == pytest.approx(2 / 3)
    assert (m1["ignored"], m1["ignored_rate"]) == (1, pytest.approx(0.25))
    assert m1["median_time_to_act_s"] == pytest.approx(600.0)  # median(300, 900)
    assert m1["median_detection_delay_s"] == pytest.approx(1200.0)  # median(600, 1800)
    assert (m1["window_start"], m1["window_end"]) == (0.0, 14 * DAY)
    assert (m2["alerts"], m2["notified"], m2["normal_for_her"], m2["precision"]) == (1, 1, 1, None)
    assert m2["alerts_per_ind_week"] == pytest.approx(0.5)
    assert m2["ignored_rate"] == 0.0 and m2["median_time_to_act_s"] is None


def test_quality_in_time_windows(world):
    rows = quality_by_model_version(world.s, 0.0, 9 * DAY, window_s=3 * DAY)
    got = [(r["window_start"] / DAY, r["model_version"], r["alerts"], r["notified"], r["precision"])
           for r in rows]
    assert got == [(0, "m1", 2, 2, 1.0), (0, "m2", 1, 1, None), (3, "m1", 2, 2, 0.0),
                   (6, "m1", 1, 0, None)]
    assert rows[-1]["window_end"] == 9 * DAY
    assert rows[0]["alerts_per_ind_week"] == pytest.approx(2 / (2 * 3 / 7))


def test_open_ended_period_uses_the_alerts_span(world):
    rows = quality_by_model_version(world.s, None, None)
    m2 = next(r for r in rows if r["model_version"] == "m2")
    assert m2["alerts"] == 2 and (m2["window_start"], m2["window_end"]) == (at(1), at(20))
    assert quality_by_model_version(world.s, 100 * DAY, None) == []


def test_format_quality_table(world):
    text = format_quality_table(quality_by_model_version(world.s, 0.0, 14 * DAY))
    lines = text.splitlines()
    assert lines[0].split() == ["model", "from", "days", "alerts", "notified", "ind", "/ind-wk",
                                "conf", "dism", "nfh", "precision", "ignored", "act(med)",
                                "delay(med)"]
    assert lines[1].split() == ["m1", "1970-01-01", "00:00", "14.0", "5", "4", "2", "1.00", "2",
                                "1", "0", "67%", "25%", "10m", "20m"]
    assert lines[2].split()[-4:] == ["-", "0%", "-", "-"]
    assert format_quality_table([]) == "no alerts in this period"


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 30),
                          st.sampled_from(["m1", "m2"]), st.floats(0, 1),
                          st.sampled_from([None, "confirm", "dismiss", "normal_for_her", "acted"])),
                max_size=15),
       st.sampled_from([None, 5 * DAY]))
def test_quality_invariants(events, window_s):
    w = World()
    for ind, day, model, score, action in events:
        d = w.event(ind, at(day), model=model, score=score)
        if action:
            w.fb(d, action, at(day) + 60)
    rows = quality_by_model_version(w.s, None, None, window_s=window_s)
    assert sum(r["alerts"] for r in rows) == len(events)
    for r in rows:
        assert r["notified"] <= r["alerts"]
        assert r["confirmed"] + r["dismissed"] + r["normal_for_her"] <= r["alerts"]
        if r["precision"] is not None:
            assert 0 <= r["precision"] <= 1
        assert r["alerts_per_ind_week"] >= 0
    assert len(format_quality_table(rows).splitlines()) == (len(rows) + 1 if rows else 1)
    w.s.close()
