"""Message schemas round-trip and reject with named reasons; topic builders and filters."""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from record_strategies import records

from shared import schemas, topics
from shared.codec import to_json
from shared.records import Record
from shared.schemas import (
    Ack,
    Command,
    Feedback,
    Rejection,
    Reply,
    SchemaError,
    Status,
    UplinkBatch,
)

ids = st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
json_values = st.recursive(st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=8)
bodies = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
incarnations = st.just("") | st.uuids(version=4).map(lambda u: u.hex)
seq_values = st.integers(1, 2**63 - 1)
messages = st.one_of(
    st.builds(UplinkBatch, device_id=ids, records=st.lists(records, max_size=4).map(tuple),
              incarnation=incarnations),
    st.builds(UplinkBatch, device_id=ids, records=st.lists(records, max_size=4).map(tuple), v=st.just(1)),
    st.builds(Ack, device_id=ids, seqs=st.lists(seq_values, max_size=5).map(tuple), incarnation=incarnations,
              rejected=st.lists(st.builds(Rejection, seq=seq_values, reason=st.text(max_size=20)),
                                max_size=3).map(tuple)),
    st.builds(Ack, device_id=ids, seqs=st.lists(seq_values, max_size=5).map(tuple), v=st.just(1)),
    st.builds(Status, device_id=ids, state=st.sampled_from(schemas.STATES), ts=finite),
    st.builds(Command, device_id=ids, command_id=st.text(max_size=10), name=st.text(max_size=10),
              counter=st.integers(0, 2**62), args=bodies, sig=st.text(max_size=10)),
    st.builds(Reply, device_id=ids, command_id=st.text(max_size=8), ok=st.booleans(), detail=st.text(max_size=8),
              data=bodies),
    st.builds(Feedback, alert_id=st.text(max_size=10), individual_id=ids,
              action=st.sampled_from(schemas.FEEDBACK_ACTIONS), ts=finite, label=st.text(max_size=8)),
)


@given(messages)
def test_round_trip(m: schemas.Message) -> None:
    assert schemas.decode(schemas.encode(m)) == m


BASE = {"v": 1, "type": "ack", "device_id": "d1", "seqs": [1, 2]}


@pytest.mark.parametrize("change,match", [
    ({"v": 3}, r"schema version v=3 is not supported"),
    ({"incarnation": "a" * 32}, r"field\(s\) \['incarnation'\] need a newer version than v=1"),
    ({"v": 2, "incarnation": "A" * 32}, r"ack.incarnation 'A+' is invalid: expected 32 lowercase hex"),
    ({"v": 2, "incarnation": "a" * 31}, "incarnation .* is invalid"),
    ({"v": 2, "rejected": [{"seq": 0, "reason": ""}]}, r"ack.rejected\[0\].seq: must be 1"),
    ({"v": 2, "rejected": [{"seq": 1}]}, r"ack.rejected\[0\].reason: missing"),
    ({"seqs": [0]}, r"ack.seqs: each must be 1"),
    ({"v": None}, "schema version"),
    ({"type": "nope"}, "type 'nope' is unknown"),
    ({"seqs": [1, "2"]}, r"ack.seqs: expected a list of integers"),
    ({"device_id": "a/b"}, "device id 'a/b' is invalid"),
    ({"device_id": "+"}, "invalid"),
    ({"extra": 1}, r"unknown field\(s\) \['extra'\]"),
])
def test_bad_messages_name_the_problem(change: dict, match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        schemas.decode(json.dumps({**BASE, **change}).encode())


@pytest.mark.parametrize("payload,match", [
    (b"\xff\x00", "not UTF-8 JSON"),
    (b"[1,2]", "must be a JSON object"),
    (b'{"v":1,"type":"status","device_id":"d","state":"online","ts":NaN}', "not UTF-8 JSON"),
    (b'{"v":1,"type":"status","device_id":"d","state":"zombie","ts":1}', "status.state"),
    (b'{"v":1,"type":"batch","device_id":"d","records":[{"seq":0,"kind":"summary","ts":1,'
     b'"individual_id":"x","body":{"day":"d"}}]}', r"batch.records\[0\].seq: must be 1"),
    (b'{"v":1,"type":"batch","device_id":"d","records":[{"seq":1,"kind":"event","ts":1,'
     b'"individual_id":"x","body":{}}]}', r"batch.records\[0\].body.start_ts: missing"),
    (b'{"v":1,"type":"batch","device_id":"d","records":[{"seq":1,"kind":"log","ts":1,'
     b'"individual_id":"x","body":{}}]}', r"batch.records\[0\].kind: expected one of \['event'"),
    (b'{"v":1,"type":"status","device_id":"d","state":"online"}', "status.ts: missing required field"),
    (b'{"v":1,"type":"status","device_id":"d","state":"online","ts":true}', "expected float"),
    (b'{"v":2,"type":"reply","device_id":"d","command_id":"c","ok":true}', r"v=2 is not supported for a 'reply'"),
    (b'{"v":1,"type":"status","device_id":"d","state":"online","ts":1,"incarnation":""}', r"need a newer version"),
    (b" " * (schemas.MAX_MESSAGE_BYTES + 1), "max"),
])
def test_malformed_payloads(payload: bytes, match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        schemas.decode(payload)


# Paired tables, as paho's matcher tests do: each subscription filter we rely on.
MATCHING = [
    (topics.cloud_uplink_filter(shared=False), topics.uplink("collar-001")),
    (topics.STATUS_FILTER, topics.status("pi-9")),
    (topics.FEEDBACK_FILTER, topics.owner_feedback("bella")),
    ("edgeloop/v1/dev/collar-001/#", topics.commands("collar-001")),
    ("#", topics.uplink("x")),
]
NOT_MATCHING = [
    (topics.cloud_uplink_filter(shared=False), topics.status("collar-001")),
    (topics.cloud_uplink_filter(shared=False), "edgeloop/v1/dev/a/b/up"),
    (topics.STATUS_FILTER, topics.owner_alerts("bella")),
    ("edgeloop/v1/dev/collar-001/#", topics.uplink("collar-0011")),
    ("#", "$SYS/broker/uptime"),
    ("+/v1/dev/+/up", "$SYS/v1/dev/x/up"),
]


@pytest.mark.parametrize("sub,topic", MATCHING)
def test_filters_match(sub: str, topic: str) -> None:
    assert mqtt.topic_matches_sub(sub, topic)


@pytest.mark.parametrize("sub,topic", NOT_MATCHING)
def test_filters_do_not_match(sub: str, topic: str) -> None:
    assert not mqtt.topic_matches_sub(sub, topic)


def test_shared_subscription_filter_and_parsing() -> None:
    assert topics.cloud_uplink_filter() == "$share/edgeloop-cloud/edgeloop/v1/dev/+/up"
    assert topics.device_id_from_topic(topics.uplink("collar-7")) == "collar-7"
    with pytest.raises(topics.TopicError, match="not a per-device topic"):
        topics.device_id_from_topic("edgeloop/v1/owner/bella/feedback")
    for bad in ("", "a/b", "x+", "#", "$SYS", "a" * 65):
        with pytest.raises(topics.TopicError):
            topics.uplink(bad)


def _to_json_reference(obj: Any) -> Any:
    """The codec's encoder as first written: every value walked by its runtime type."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_json_reference(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [_to_json_reference(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _to_json_reference(v) for k, v in obj.items()}
    return obj


@settings(max_examples=300, deadline=None)
@given(rec=records)
def test_the_per_type_encoder_writes_what_walking_every_value_writes(rec: Record) -> None:
    """``to_json`` builds an encoder per record type from its hints; for any record it must give
    the same JSON, to the byte, as walking every value by its runtime type."""
    got, want = to_json(rec), _to_json_reference(rec)
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
    assert got == want
