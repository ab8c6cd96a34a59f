"""Loaders for the real evaluation data return the documented shapes.

Skipped with a reason when the data folder is absent, except under CI (env CI set): then a
missing folder fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgeloop.evaluation import datasets


def _root_or_skip() -> Path:
    try:
        return datasets.data_root()
    except datasets.DataNotFoundError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"evaluation data not available (set {datasets.ENV_VAR}): {exc}")


def test_missing_root_names_the_path_and_the_env_var(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(datasets.ENV_VAR, str(missing))
    with pytest.raises(datasets.DataNotFoundError) as info:
        datasets.data_root()
    assert str(missing) in str(info.value)
    assert datasets.ENV_VAR in str(info.value)


def test_env_var_overrides_the_default_root(monkeypatch: pytest.MonkeyPatch) -> None:
    root = _root_or_skip()
    monkeypatch.setenv(datasets.ENV_VAR, str(root))
    assert datasets.data_root() == root.resolve()


def test_load_nab_returns_35_files_with_windows() -> None:
    _root_or_skip()
    corpus = datasets.load_nab()
    assert len(corpus.series) == 35
    assert set(corpus.windows) == set(corpus.series)
    assert sum(len(w) for w in corpus.windows.values()) == 50
    ts, values = corpus.series["realTraffic/speed_6005.csv"]
    assert ts.dtype == np.dtype("datetime64[ns]") and values.dtype == np.float64
    assert ts.shape == values.shape and len(ts) > 1000
    assert ts[0] == np.datetime64("2015-08-31T18:22:00")
    assert values[0] == 90.0
    for key, (t, _) in corpus.series.items():
        assert np.all(t[1:] >= t[:-1]), key
        for start, end in corpus.windows[key]:
            assert start in t and end in t and start < end
    assert corpus.windows["artificialNoAnomaly/art_flatline.csv"] == []


def test_load_nab_subset_and_unknown_key() -> None:
    _root_or_skip()
    sub = datasets.load_nab(keys=["realTraffic/speed_6005.csv"])
    assert list(sub.series) == ["realTraffic/speed_6005.csv"]
    with pytest.raises(KeyError, match="no entry"):
        datasets.load_nab(keys=["nope/missing.csv"])


def test_load_stanford_person() -> None:
    _root_or_skip()
    assert datasets.stanford_ids() == [
        "A0NVTRV",
        "A36HR6Y",
        "A4G0044",
        "AJ7TSV9",
        "AQC0L71",
        "AS2MVDL",
        "AURCTAK",
    ]
    rec = datasets.load_stanford("A4G0044")
    hr_ts, bpm = rec.hr
    st_ts, steps = rec.steps_series
    assert hr_ts.dtype == np.dtype("datetime64[s]") and bpm.dtype == np.float64
    assert len(hr_ts) == len(bpm) == 124190  # labels.csv hr_rows
    assert len(st_ts) == len(steps) == 130729  # labels.csv steps_rows
    assert hr_ts[0] == np.datetime64("2020-12-08T00:00:00")
    assert np.all(hr_ts[1:] >= hr_ts[:-1])
    assert bpm.min() >= 30 and bpm.max() <= 250
    assert steps.min() >= 0
    assert rec.hr_path.name == "A4G0044_hr.csv.xz"
    with pytest.raises(datasets.DataNotFoundError, match="NOBODY"):
        datasets.load_stanford("NOBODY")


def test_stanford_labels_and_laad_published() -> None:
    _root_or_skip()
    labels = datasets.stanford_labels()
    assert len(labels) == 7
    assert labels["A4G0044"].symptom_date == np.datetime64("2021-02-10")
    assert labels["A4G0044"].onset_source == "symptom"
    assert labels["AURCTAK"].symptom_date is None
    assert labels["AURCTAK"].onset == np.datetime64("2020-05-09")  # diagnosis date fallback
    assert labels["A36HR6Y"].onset is None
    with_onset = sorted(p for p, lab in labels.items() if lab.onset is not None)
    assert with_onset == ["A0NVTRV", "A4G0044", "AQC0L71", "AS2MVDL", "AURCTAK"]
    laad = datasets.laad_published()
    assert laad["A0NVTRV"].first_anomaly_day_rel_onset == pytest.approx(-6.04)
    assert laad["AS2MVDL"].timing == "Late"
    assert laad["A36HR6Y"].timing is None and laad["A36HR6Y"].precision is None
    assert sum(r.timing == "Early" for r in laad.values()) == 4


def _label(symptom: str | None, diagnosis: str | None = None) -> datasets.StanfordLabel:
    def day(s: str | None) -> np.datetime64 | None:
        return np.datetime64(s, "D") if s else None

    return datasets.StanfordLabel("P", day(symptom), None, day(diagnosis), None, "exact", {})


def test_stanford_evaluation_splits_alerts_around_onset() -> None:
    from edgeloop.evaluation.stanford import evaluate_person, summarise

    data = np.arange("2020-01-01", "2020-04-01", dtype="datetime64[D]").astype("datetime64[s]")
    alerts = [
        "2020-01-10T21:00:00",  # healthy period: false
        "2020-01-20T21:00:00",  # healthy period: false, another day
        "2020-02-15T21:00:00",  # 14.1 days before onset: grey, neither false nor a detection
        "2020-02-25T12:00:00",  # first in window: onset - 5.5 days
        "2020-03-02T09:00:00",
    ]
    out = evaluate_person("P", alerts, _label("2020-03-01"), data)
    assert out.first_alert_rel_days == pytest.approx(-4.5)
    assert out.caught_early is True
    assert (out.false_alerts, out.false_alert_days, out.grey_alerts, out.n_alerts) == (2, 2, 1, 5)
    # healthy days: 2020-01-01 .. 2020-02-08 (onset - 21 d, exclusive) = 39 days
    assert out.healthy_months == pytest.approx(39 / 30.4375)
    assert out.false_alerts_per_month == pytest.approx(2 / (39 / 30.4375))

    epoch = np.array(alerts[4:], dtype="datetime64[s]").astype(np.int64).astype(float)
    late = evaluate_person("P", epoch, _label("2020-03-01"), data)
    assert late.first_alert_rel_days == pytest.approx(1 + 9 / 24)
    assert late.caught_early is False
    on_day = evaluate_person("P", ["2020-03-01T20:00:00"], _label(None, "2020-03-01"), data)
    assert on_day.caught_early is True and on_day.onset_source == "diagnosis"
    none = evaluate_person("P", [], _label(None), data)
    assert none.caught_early is None and none.false_alerts_per_month is None
    total = summarise([out, late, on_day, none])
    assert (total.n_with_onset, total.caught_early, total.false_alerts) == (3, 2, 2)
