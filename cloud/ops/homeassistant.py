"""Home Assistant MQTT discovery: each individual appears in Home Assistant as a device with its
status, its last alert and its collar's battery, without another app.

The convention (Home Assistant's MQTT integration, "discovery"): a retained JSON config on
``<prefix>/<component>/<object_id>/config`` per entity, ``<object_id>`` from ``[a-zA-Z0-9_-]``
and equal to the entity's ``unique_id`` (their best practice, no ``node_id``); entities of one
animal share a ``device`` block (``identifiers``) so they group under one device; an ``origin``
block names the software that published them. State goes to one retained JSON topic per
individual (``edgeloop/v1/ha/<individual>/state``) that every entity reads with a
``value_template``. Configs are published again whenever Home Assistant announces itself on
``<prefix>/status`` (``online``, its birth message), as its documentation recommends.

Entities per individual: ``binary_sensor`` alert (device_class problem: an owner has been
notified and has not answered), ``sensor`` status (enum: ok / alert / offline / unknown),
``sensor`` last alert (timestamp, with reason, rule and alert id as attributes), ``sensor``
battery (%), ``binary_sensor`` collar (connectivity).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from cloud.store.read_model import ReadModel
from cloud.timestamps import readable
from shared import topics

logger = logging.getLogger(__name__)
ORIGIN = {"name": "edgeloop", "sw_version": "0.1.0"}
STATUS_OPTIONS = ["ok", "alert", "offline", "unknown"]
_SLUG = re.compile(r"[^a-zA-Z0-9_-]")


def slug(individual_id: str) -> str:
    """An id in Home Assistant's ``[a-zA-Z0-9_-]`` (ours may hold dots)."""
    return _SLUG.sub("_", individual_id)


def state_topic(individual_id: str) -> str:
    return f"{topics.ROOT}/ha/{topics.check_id(individual_id, 'individual id')}/state"


def discovery_messages(individual_id: str, device_ids: list[str], prefix: str = "homeassistant") -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) for every entity of one individual (publish retained)."""
    s = slug(individual_id)
    device = {"identifiers": [f"edgeloop_{s}"], "name": individual_id, "manufacturer": "edgeloop",
              "model": "pet-health collar", "sw_version": ORIGIN["sw_version"]}
    if device_ids:
        device["serial_number"] = ", ".join(sorted(device_ids))
    st = state_topic(individual_id)
    entities: list[tuple[str, str, dict[str, Any]]] = [
        ("binary_sensor", "alert", {"name": "Alert", "device_class": "problem", "payload_on": "ON",
                                    "payload_off": "OFF", "value_template": "{{ value_json.alert }}",
                                    "icon": "mdi:paw"}),
        ("sensor", "status", {"name": "Status", "device_class": "enum", "options": STATUS_OPTIONS,
                              "value_template": "{{ value_json.status }}"}),
        ("sensor", "last_alert", {"name": "Last alert", "device_class": "timestamp",
                                  "value_template": "{{ value_json.last_alert_at }}",
                                  "json_attributes_topic": st,
                                  "json_attributes_template": "{{ value_json.last_alert | tojson }}"}),
        ("sensor", "battery", {"name": "Collar battery", "device_class": "battery", "unit_of_measurement": "%",
                               "state_class": "measurement", "entity_category": "diagnostic",
                               "value_template": "{{ value_json.battery }}"}),
        ("binary_sensor", "collar", {"name": "Collar", "device_class": "connectivity", "payload_on": "ON",
                                     "payload_off": "OFF", "entity_category": "diagnostic",
                                     "value_template": "{{ value_json.collar }}"}),
    ]
    out = []
    for component, key, cfg in entities:
        uid = f"edgeloop_{s}_{key}"
        out.append((f"{prefix}/{component}/{uid}/config",
                    {"unique_id": uid, "object_id": uid, "state_topic": st, "device": device, "origin": ORIGIN,
                     "qos": 1, **cfg}))
    return out


def _iso(ts: float | None) -> str | None:
    if ts is None or not readable(ts):  # an impossible time stored by an older cloud: none shown
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts))


def individual_states(rm: ReadModel) -> dict[str, dict[str, Any]]:
    """Every individual's state for Home Assistant, from the store (the aggregator's back end)."""
    out: dict[str, dict[str, Any]] = {}
    devices = rm.device_states()
    for ind, dev in rm.device_individuals():
        st = out.setdefault(ind, {"devices": [], "battery": None, "collar": "OFF", "alert": "OFF",
                                  "last_alert_at": None, "last_alert": {}, "status": "unknown"})
        st["devices"].append(dev)
        if devices.get(dev) == "online":
            st["collar"] = "ON"
    for ind, body in rm.latest_summaries().items():
        if ind in out:
            out[ind]["battery"] = body.get("battery")
    for ind, a in rm.latest_notified().items():
        if ind in out:
            out[ind]["last_alert_at"] = _iso(a["ts"])
            out[ind]["last_alert"] = {"alert_id": a["alert_id"], "reason": a["reason"], "rule": a["rule"],
                                      "severity": a["severity"]}
    for ind in rm.individuals_alerting():
        if ind in out:
            out[ind]["alert"] = "ON"
    for st in out.values():
        st["status"] = "offline" if st["collar"] == "OFF" else "alert" if st["alert"] == "ON" else "ok"
    return out


class HomeAssistantBridge:
    """Publishes discovery configs and states; the aggregator calls ``send`` on every notified alert
    and ``tick`` every second (it refreshes every ``every`` seconds)."""

    def __init__(self, reads: ReadModel, publish: Callable[..., Any], prefix: str = "homeassistant",
                 every: float = 30.0) -> None:
        self.reads = reads
        self.publish = publish
        self.prefix = prefix
        self.every = every
        self._announced: dict[str, tuple[str, ...]] = {}
        self._states: dict[str, str] = {}
        self._last = 0.0
        self.channels: dict[str, Any] = {}  # not a delivery channel (metrics)
        self.sent = self.failures = 0

    def send(self, decision: Any, event_body: dict[str, Any]) -> None:
        self._last = 0.0  # refresh at the next tick

    def rediscover(self) -> None:
        """Home Assistant (re)started: publish every config again."""
        self._announced.clear()
        self._last = 0.0

    def tick(self) -> None:
        if time.monotonic() - self._last < self.every:
            return
        self._last = time.monotonic()
        for ind, st in individual_states(self.reads).items():
            try:
                topics.check_id(ind, "individual id")
            except topics.TopicError:
                continue
            devices = tuple(sorted(st["devices"]))
            if self._announced.get(ind) != devices:
                for topic, cfg in discovery_messages(ind, list(devices), self.prefix):
                    self.publish(topic, json.dumps(cfg, separators=(",", ":")).encode(), retain=True)
                self._announced[ind] = devices
                logger.info("ha.discovered", extra={"individual_id": ind, "entities": 5})
            state = json.dumps({k: v for k, v in st.items() if k != "devices"}, separators=(",", ":"))
            if self._states.get(ind) != state:
                self.publish(state_topic(ind), state.encode(), retain=True)
                self._states[ind] = state
