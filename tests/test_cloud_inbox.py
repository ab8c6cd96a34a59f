"""The aggregator's inbox (cloud/aggregator/inbox.py): bounded, and fair between senders."""

from __future__ import annotations

import queue
import threading
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.aggregator.inbox import FairInbox
from cloud.aggregator.service import sender_of
from shared import topics

SENDERS = st.sampled_from(["a", "b", "c", "d", "flood"])
OPS = st.lists(st.one_of(st.tuples(st.just("put"), SENDERS, st.integers(0, 300)), st.just(("get", "", 0))),
               max_size=300)


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(1, 40), st.integers(1, 40), st.integers(4, 4000))
def test_never_exceeds_its_bounds_and_loses_nothing_uncounted(ops: list[tuple[str, str, int]], max_items: int,
                                                              per_client: int, max_bytes: int) -> None:
    per_client = min(per_client, max_items)
    box: FairInbox[tuple[str, int]] = FairInbox(max_items, per_client, max_bytes)
    accepted = got = evicted = 0
    waiting: Counter[str] = Counter()  # what the model says each sender has queued
    for i, (op, who, size) in enumerate(ops):
        if op == "put":
            drop = box.put(who, (who, i), size)
            if drop is None or drop[0] != who:
                accepted += 1
                waiting[who] += 1
            if drop is not None and drop[0] != who:
                evicted += 1
                waiting[drop[0]] -= 1
        else:
            try:
                sender, _ = box.get_nowait()
            except queue.Empty:
                assert box.qsize() == 0
                continue
            got += 1
            waiting[sender] -= 1
        assert box.qsize() <= max_items and box.nbytes() <= max_bytes
        assert all(0 <= n <= per_client for n in waiting.values())
        assert box.qsize() == accepted - got - evicted == sum(waiting.values())
    assert sum(box.dropped.values()) == sum(1 for op in ops if op[0] == "put") - accepted + evicted


@settings(max_examples=200, deadline=None)
@given(st.lists(SENDERS, max_size=200))
def test_senders_are_served_round_robin(puts: list[str]) -> None:
    box: FairInbox[tuple[str, int]] = FairInbox(10_000, 1_000)
    for i, who in enumerate(puts):
        box.put(who, (who, i))
    out = []
    while box.qsize():
        out.append(box.get_nowait())
    # the reference: rounds over the senders in order of first arrival, each sender's items in order
    per: dict[str, list[tuple[str, int]]] = {}
    for i, who in enumerate(puts):
        per.setdefault(who, []).append((who, i))
    want = [items[r] for r in range(max(map(len, per.values()), default=0)) for items in per.values() if r < len(items)]
    assert out == want


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 500), st.integers(0, 3), st.integers(0, 50))
def test_a_quiet_sender_waits_for_one_turn_of_each_not_for_the_flood(flood: int, others: int, served: int) -> None:
    box: FairInbox[str] = FairInbox(10_000, 1_000)
    for k in range(flood):
        box.put("flood", f"junk{k}")
    for j in range(others):
        box.put(f"dev{j}", "other")
    for _ in range(min(served, box.qsize())):
        box.get_nowait()
    senders = box.senders()
    box.put("good", "good")
    n = 1
    while box.get_nowait() != "good":
        n += 1
    assert n <= senders + 1, f"the good message came out after {n} gets, with {senders} other senders waiting"


def test_a_full_sender_drops_its_own_newest_and_a_full_inbox_the_busiest_senders() -> None:
    box: FairInbox[int] = FairInbox(max_items=10, per_client=6)
    assert [box.put("flood", k) for k in range(8)][-2:] == [("flood", "sender_full")] * 2
    assert [box.put(f"dev{k}", 100 + k) for k in range(4)] == [None] * 4
    assert box.qsize() == 10
    assert box.put("late", 200) == ("flood", "inbox_full"), "the busiest sender gives way"
    assert box.dropped == Counter(sender_full=2, inbox_full=1)
    got = [box.get_nowait() for _ in range(box.qsize())]
    assert got[:6] == [0, 100, 101, 102, 103, 200] and got[6:] == [1, 2, 3, 4]


def test_bytes_are_bounded_too() -> None:
    box: FairInbox[int] = FairInbox(max_items=1000, per_client=1000, max_bytes=4000)
    assert box.put("a", 1, 1001) == ("a", "too_big"), "more than a sender's share (a quarter) never fits"
    assert [box.put("a", k, 500) for k in range(3)][-1] == ("a", "sender_full")
    assert box.nbytes() == 1000


def test_get_waits_for_a_put_from_another_thread() -> None:
    box: FairInbox[str] = FairInbox()
    with pytest.raises(queue.Empty):
        box.get(timeout=0.01)
    threading.Timer(0.05, lambda: box.put("a", "x", 1)).start()
    assert box.get(timeout=5) == "x"


def test_sender_of_a_topic() -> None:
    assert sender_of(topics.uplink("collar-1")) == "dev:collar-1"
    assert sender_of(topics.status("collar-1")) == "dev:collar-1"
    assert sender_of(topics.owner_feedback("bella")) == "owner:bella"
    assert sender_of("some/other/topic") == sender_of("") == "other"
