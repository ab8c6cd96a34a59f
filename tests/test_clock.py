"""The sensor clock (device/clock.py): glitches dropped, real jumps followed once frames agree."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from device.clock import Clock

T0 = 1_767_614_400.0


def feed(clock: Clock[int], times: list[float]) -> list[tuple[float, int]]:
    out: list[tuple[float, int]] = []
    for i, t in enumerate(times):
        out += clock.admit(t, i)
    return out


def test_one_frame_far_off_is_dropped_and_counted() -> None:
    for off in (365 * 86400.0, 3600.0, -86400.0):
        c: Clock[int] = Clock()
        times = [T0 + 10 * i for i in range(10)]
        times.insert(5, T0 + 45 + off)  # one bad reading
        got = feed(c, times)
        assert [i for _, i in got] == [i for i in range(11) if i != 5], off
        assert [t for t, _ in got] == [T0 + 10 * i for i in range(10)], "nothing shifted"
        assert c.counts["clock_glitch"] == 1 and c.offset == 0.0


def test_a_clock_set_back_is_absorbed_once_three_frames_agree() -> None:
    c: Clock[int] = Clock()
    before = [T0 + 10 * i for i in range(10)]
    after = [T0 - 86400 + 100 + 10 * i for i in range(10)]  # a day back, for good
    got = feed(c, before + after)
    ts = [t for t, _ in got]
    assert len(got) == 20 and ts == sorted(ts), "every frame kept, the timeline never goes back"
    assert c.counts["clock_jump_back"] == 1 and c.offset == before[-1] - after[0]
    assert [t - ts[10] for t in ts[10:]] == [10.0 * i for i in range(10)], "spacing kept"


def test_a_gap_ahead_is_followed_and_two_agreeing_frames_are_not_enough_at_the_end() -> None:
    c: Clock[int] = Clock()
    got = feed(c, [T0, T0 + 10, T0 + 7200, T0 + 7210, T0 + 7220, T0 + 7230])
    assert [t for t, _ in got] == [T0, T0 + 10, T0 + 7200, T0 + 7210, T0 + 7220, T0 + 7230]
    assert c.counts["gap_or_clock_jump_forward"] == 1
    d: Clock[int] = Clock()
    assert len(feed(d, [T0, T0 + 10, T0 + 7200, T0 + 7210])) == 2
    d.flush()
    assert d.counts["clock_unconfirmed"] == 2


def test_the_timeline_survives_a_restart() -> None:
    c: Clock[int] = Clock()
    feed(c, [T0 + 10 * i for i in range(5)] + [T0 - 86400 + 60 + 10 * i for i in range(5)])
    again: Clock[int] = Clock()
    again.restore(c.state())
    assert (again.offset, again.last) == (c.offset, c.last)
    nxt = T0 - 86400 + 120
    assert again.admit(nxt, 0) == [(nxt + c.offset, 0)], "carries on, no second jump"
    broken: Clock[int] = Clock()
    broken.restore(b"{not json")
    assert broken.counts["clock_state_unreadable"] == 1 and broken.last is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60))
def test_the_timeline_never_goes_back_and_only_glitches_are_lost(steps: list[float]) -> None:
    c: Clock[int] = Clock()
    times, t = [], T0
    for s in steps:
        t += s
        times.append(t)
    got = feed(c, times) + c.flush()
    out = [x for x, _ in got]
    assert all(b >= a - c.back_s for a, b in zip(out, out[1:], strict=False)), "never back beyond jitter"
    lost = c.counts["clock_glitch"] + c.counts["clock_unconfirmed"]
    assert len(got) + lost == len(times), "every frame is admitted or counted"
