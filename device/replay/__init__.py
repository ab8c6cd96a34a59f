"""Replay recorded data through the device's engine with the default config (labels never read).

* :mod:`device.replay.nab`: NAB ``timestamp,value`` -> ``timestamp,value,anomaly_score``, with a
  summary of what the file held (rows, alerts, rows out of order, garbage) and an optional PNG;
* :mod:`device.replay.wearable`: Stanford Fitbit heart rate + steps -> hourly metrics through the
  engine (deviation events) and nights through :class:`device.detect.nightwatch.NightWatch`
  (illness alerts), ``events.csv``, ``nights.csv`` and a PNG.
"""

from device.replay.common import ReplayInputError
from device.replay.nab import NabReplaySummary, replay_nab_csv
from device.replay.wearable import (
    WEARABLE_DIRECTIONS,
    WEARABLE_METRICS,
    hourly_metrics,
    read_stanford,
    replay_wearable,
    run_nights,
    run_wearable,
)

__all__ = [
    "WEARABLE_DIRECTIONS",
    "WEARABLE_METRICS",
    "NabReplaySummary",
    "ReplayInputError",
    "hourly_metrics",
    "read_stanford",
    "replay_nab_csv",
    "replay_wearable",
    "run_nights",
    "run_wearable",
]
