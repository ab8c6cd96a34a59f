"""Hypothesis strategies for the typed records (shared/records.py) and their round trips."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from shared.records import (
    TRACE_VERSION,
    CommandReport,
    DailySummary,
    Disagreement,
    Event,
    EventTrace,
    HourlySeries,
    Latency,
    RawWindow,
    Record,
    RecordBody,
    RestDay,
    Severity,
    ShadowSummary,
    SleepPeriod,
)

ids = st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
maybe = st.none() | finite
names = st.text(min_size=1, max_size=10)
counts = st.integers(0, 2**31)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), finite, st.text(max_size=10))
json_value = st.recursive(json_leaf, lambda c: st.one_of(
    st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=3)), max_leaves=8)
json_objects = st.dictionaries(st.text(max_size=8), json_value, max_size=4)


@st.composite
def traces(draw: st.DrawFn, metrics: tuple[str, ...]) -> EventTrace:
    k = draw(st.integers(0, 4))
    return EventTrace(TRACE_VERSION, metrics, draw(finite), draw(st.text(max_size=20)),
                      tuple(draw(st.lists(finite, min_size=k, max_size=k))),
                      tuple(tuple(draw(st.lists(maybe, min_size=len(metrics), max_size=len(metrics))))
                            for _ in range(k)))


@st.composite
def events(draw: st.DrawFn) -> Event:
    n = draw(st.integers(1, 4))
    metrics = tuple(draw(st.lists(names, min_size=n, max_size=n, unique=True)))

    def per_metric() -> tuple[float | None, ...]:
        return tuple(draw(st.just([]) | st.lists(maybe, min_size=n, max_size=n)))

    return Event(start_ts=draw(finite), ts=draw(finite), metrics=metrics,
                 directions=tuple(draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=n, max_size=n))),
                 score=draw(st.floats(0, 1)), severity=draw(st.sampled_from(list(Severity))),
                 baseline=per_metric(), observed=per_metric(), model_version=draw(st.text(max_size=12)),
                 detector_version=draw(st.text(max_size=12)), warming_up=draw(st.booleans()),
                 tz_offset_h=draw(st.none() | st.floats(-14, 14)), trace=draw(st.none() | traces(metrics)))


hours = st.lists(maybe, min_size=24, max_size=24).map(tuple)
rest_days = st.builds(RestDay, minutes=counts, hourly_minutes=st.lists(counts, min_size=24, max_size=24).map(tuple),
                      periods=counts, longest_minutes=counts, sleep_minutes=counts, sleep_periods=counts,
                      main_sleep=st.none() | st.builds(SleepPeriod, finite, finite, counts))
shadows = st.builds(ShadowSummary, windows=counts, agree=counts, agreement=st.none() | st.floats(0, 1),
                    confusion=st.dictionaries(names, st.dictionaries(names, counts, max_size=3), max_size=3),
                    disagreements=st.lists(st.builds(Disagreement, finite, names, names, finite, finite),
                                           max_size=3).map(tuple))
summaries = st.builds(
    DailySummary, day=st.text(max_size=10), minutes=counts, steps=counts,
    metrics_mean=st.dictionaries(names, finite, max_size=4), classes=st.dictionaries(names, counts, max_size=4),
    temp_max=maybe, battery=st.none() | st.integers(0, 100),
    hourly=st.dictionaries(names, st.builds(HourlySeries, hours, hours, hours), max_size=2),
    rest=st.none() | rest_days,
    latency=st.none() | st.builds(Latency, counts, finite, finite, finite, counts, counts, counts, counts),
    ingest=st.dictionaries(names, counts, max_size=4), warming_up=st.booleans(),
    model_version=st.text(max_size=8), detector_version=st.text(max_size=8), agent_version=st.text(max_size=8),
    shadow=st.none() | shadows, models=st.none() | json_objects, outbox=st.dictionaries(names, counts, max_size=4))


@st.composite
def raw_windows(draw: st.DrawFn) -> RawWindow:
    n = draw(st.integers(0, 5))
    metrics = tuple(draw(st.lists(maybe, min_size=n, max_size=n)))
    return RawWindow(draw(finite), metrics, tuple(draw(st.just([]) | st.lists(names, min_size=n, max_size=n))),
                     draw(st.none() | st.text(max_size=8)),
                     draw(st.none() | st.lists(st.tuples(finite, finite, finite), max_size=5).map(tuple)))


reports = st.builds(CommandReport, command_id=st.text(max_size=12), ok=st.booleans(), detail=st.text(max_size=20),
                    data=json_objects)
bodies: st.SearchStrategy[RecordBody] = st.one_of(events(), summaries, raw_windows(), reports)
records = st.builds(Record.of, seq=st.integers(1, 2**63 - 1), ts=finite, individual_id=ids, body=bodies)


def any_json() -> st.SearchStrategy[Any]:
    return json_value
